// The status page of one igor-node daemon: it reads the daemon's own JSON
// API (docs/API.md) every two seconds; nothing is fetched from elsewhere.
"use strict";

const $ = (sel) => document.querySelector(sel);
const short = (id) => (id && id.length > 16 ? id.replace(/^did:key:/, "").slice(0, 10) + "…" + id.slice(-4) : id || "-");
const money = (uc) => (uc / 1e6).toFixed(6);

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) {
    let msg = "HTTP " + r.status;
    try { msg = (await r.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(path + ": " + msg);
  }
  return r.json();
}

function cell(tr, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  tr.appendChild(td);
  return td;
}

function fill(table, rows, build) {
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows.map((r) => { const tr = document.createElement("tr"); build(tr, r); return tr; }));
}

let selected = null;
let logSince = 0;

// logs reads the selected agent's lines logged since the last poll (the
// API's event stream without follow ends after them): a poll, not a held
// connection, so every refresh asks whichever node runs the agent now.
async function logs(did) {
  const r = await fetch("/v1/agents/" + encodeURIComponent(did) + "/logs?since=" + logSince, { cache: "no-store" });
  if (!r.ok) return;
  const text = await r.text();
  const pre = $("#logs");
  for (const line of text.split("\n")) {
    if (!line.startsWith("data: ")) continue;
    const l = JSON.parse(line.slice(6));
    logSince = Math.max(logSince, l.time_unix_ns);
    pre.textContent += new Date(l.time_unix_ns / 1e6).toLocaleTimeString() + "  " + short(l.node) + "  " + l.msg + "\n";
  }
  if (pre.textContent.length > 100000) pre.textContent = pre.textContent.slice(-50000);
  pre.scrollTop = pre.scrollHeight;
}

async function refresh() {
  const errors = [];
  const step = async (f) => { try { await f(); } catch (e) { errors.push(e.message); } };
  await step(async () => {
    const n = await get("/v1/node");
    $("#node-peer").textContent = n.peer;
    $("#node-version").textContent = n.version || "-";
    $("#node-slots").textContent = n.free_slots + " free of " + n.slots;
    $("#node-peers").textContent = n.connected_peers;
  });
  await step(async () => {
    const res = await get("/v1/mesh/agents");
    $("#agents-count").textContent = "(" + res.agents.length + ")";
    fill($("#agents"), res.agents, (tr, a) => {
      tr.dataset.did = a.did;
      cell(tr, a.did, "mono did");
      const st = cell(tr, a.status + (a.stop_reason && a.status !== "running" ? " (" + a.stop_reason + ")" : ""), "status " + a.status);
      st.dataset.status = a.status;
      cell(tr, a.tick || 0, "num tick");
      cell(tr, a.seq, "num seq");
      cell(tr, a.epoch, "num epoch");
      cell(tr, a.budget_microcents ? money(a.budget_microcents) : "-", "num budget");
      cell(tr, short(a.holder), "mono holder");
      tr.onclick = () => select(a.did);
    });
    $("#agents-note").textContent = res.nodes_asked + " node(s) asked" +
      (res.unanswered && res.unanswered.length ? "; no answer from " + res.unanswered.map(short).join(", ") : "");
  });
  await step(async () => {
    const hs = await get("/v1/hosts");
    fill($("#hosts"), hs, (tr, h) => {
      cell(tr, h.peer, "mono");
      cell(tr, h.free_slots + " / " + h.slots, "num");
      cell(tr, h.price_microcents_per_second, "num price");
      cell(tr, h.version || "-");
    });
  });
  await step(async () => {
    const cs = await get("/v1/custody");
    fill($("#custody"), cs, (tr, c) => {
      cell(tr, c.did, "mono");
      cell(tr, c.role);
      cell(tr, c.phase);
      cell(tr, c.epoch, "num");
      cell(tr, c.accepted_seq, "num");
      cell(tr, (c.members || []).map(short).join(" "), "mono");
    });
  });
  await step(async () => {
    const ps = await get("/v1/peers");
    $("#peers").replaceChildren(...ps.map((p) => { const li = document.createElement("li"); li.textContent = p.peer; return li; }));
  });
  if (selected) {
    await step(() => lineage(selected));
    await step(() => logs(selected));
  }
  $("#updated").textContent = (errors.length ? "errors: " + errors.join("; ") + " — " : "") + "updated " + new Date().toLocaleTimeString();
}

async function lineage(did) {
  const rep = await get("/v1/agents/" + encodeURIComponent(did) + "/lineage");
  $("#lineage-state").textContent = rep.valid ? "(valid, " + rep.entries.length + " checkpoints)" : "(INVALID: " + rep.error + ")";
  const items = rep.entries.slice(-200).reverse().map((e, i, all) => {
    const li = document.createElement("li");
    const next = all[i + 1];
    if (next && next.epoch !== e.epoch) li.classList.add("epoch");
    if (e.control) li.classList.add("control");
    const t = new Date(e.time_unix_ns / 1e6).toLocaleTimeString();
    li.textContent = "seq " + e.seq + "  tick " + e.tick + "  epoch " + e.epoch + "  " + short(e.holder) + "  " + t + (e.control ? "  [" + e.control + "]" : "");
    return li;
  });
  $("#lineage").replaceChildren(...items);
}

function select(did) {
  selected = did;
  logSince = 0;
  $("#detail").hidden = false;
  $("#detail-did").textContent = did;
  $("#logs").textContent = "";
  lineage(did).catch((e) => { $("#lineage-state").textContent = e.message; });
  logs(did).catch(() => {});
}

const hash = decodeURIComponent(location.hash.slice(1));
if (hash.startsWith("did:key:")) select(hash);
refresh();
setInterval(refresh, 2000);
