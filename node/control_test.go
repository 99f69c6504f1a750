package node

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// TestControlAPIBadInput: every malformed control request gets a 4xx that
// says what was wrong, before anything is signed or sent.
func TestControlAPIBadInput(t *testing.T) {
	ms := startMeshes(t, 1, 1)
	srv, err := ms[0].ServeAPI("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	base := "http://" + srv.Addr()
	did := "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	pub, owner, _ := agents.GenerateKey(rand.Reader)
	other := agents.DID(pub)
	rec := func(agent string) string {
		ctl := &agents.Control{Kind: agents.ControlStop, Agent: agent, Seq: 1, Issued: 1}
		if err := ctl.Sign(owner); err != nil {
			t.Fatal(err)
		}
		data, _ := ctl.Encode()
		return base64.StdEncoding.EncodeToString(data)
	}
	cases := []struct {
		did, body string
		code      int
		want      string
	}{
		{did, "{not json", 400, "control request"},
		{did, `{"kind":"stop","extra":1}`, 400, "extra"},
		{did, `{"kind":"pause"}`, 400, "not stop, start, topup, delete or upgrade"},
		{did, `{"kind":"stop","amount":"1"}`, 400, "only a top-up"},
		{did, `{"kind":"topup","amount":"-1"}`, 400, "amount"},
		{did, `{"kind":"topup","amount":"0"}`, 400, "positive"},
		{did, `{"kind":"topup"}`, 400, "amount"},
		{did, `{"kind":"stop","record":"` + rec(did) + `"}`, 400, "not both"},
		{did, `{"record":"AAEC"}`, 400, "record"},
		{did, `{"record":"` + rec(other) + `"}`, 400, "is for " + other},
		{"did:key:nope", `{"kind":"stop"}`, 400, "did"},
		{did, `{"kind":"stop"}`, 404, "no head record"},
	}
	for _, c := range cases {
		resp, err := http.Post(base+"/v1/agents/"+c.did+"/control", "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(strings.ToLower(e.Error), strings.ToLower(c.want)) {
			t.Errorf("%s %q: HTTP %d %q, want %d mentioning %q", c.did, c.body, resp.StatusCode, e.Error, c.code, c.want)
		}
	}
}

// TestListAgentsFromANodeThatHostsNothing: ps from a node with no slot, in
// no custody group, lists every agent of the mesh with its holder, and an
// agent its owner stopped shows as stopped by its owner.
func TestListAgentsFromANodeThatHostsNothing(t *testing.T) {
	ms := startMeshes(t, 4, 2)
	waitHosts(t, ms, 4)
	obs := startMeshesJoining(t, ms[0], 1, 0)[0]
	wasm, man := testagents.Bytes(t, "heartbeat")
	ctx := context.Background()
	var dids []string
	for range 3 {
		res, err := ms[0].Publish(ctx, wasm, man, 1_000_000, nil)
		if err != nil {
			t.Fatal(err)
		}
		dids = append(dids, res.DID)
	}
	slices.Sort(dids)
	var list *MeshAgents
	eventually(t, "ps to list every agent running with a holder", 60*time.Second, func() error {
		var err error
		if list, err = obs.ListAgents(ctx); err != nil {
			return err
		}
		var got []string
		for _, a := range list.Agents {
			if a.Status != "running" || a.Holder == "" || a.Tick == 0 || len(a.Members) != 3 {
				return fmt.Errorf("%+v", a)
			}
			got = append(got, a.DID)
		}
		if !slices.Equal(got, dids) {
			return fmt.Errorf("listed %v, want %v", got, dids)
		}
		return nil
	})
	if len(list.Unanswered) != 0 || list.Asked < 5 {
		t.Fatalf("asked %d nodes, unanswered %v", list.Asked, list.Unanswered)
	}
	if _, err := ms[0].ControlAgent(ctx, dids[1], agents.ControlStop, 0, nil); err != nil {
		t.Fatal(err)
	}
	list, err := obs.ListAgents(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if a := list.Agents[1]; a.DID != dids[1] || a.Status != "stopped" || a.StopReason != "owner" {
		t.Fatalf("after stop: %+v", a)
	}
	// The holder of a running agent has its series in /metrics.
	i := slices.IndexFunc(ms, func(m *Mesh) bool { return m.PeerID() == list.Agents[0].Holder })
	srv, err := ms[i].ServeAPI("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	resp, err := http.Get("http://" + srv.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `igor_agent_tick{agent="` + dids[0] + `"}`; !strings.Contains(string(body), want) {
		t.Fatalf("metrics of the holder lack %s:\n%s", want, body)
	}
}

func TestBudgetLeft(t *testing.T) {
	prev := &agents.Checkpoint{Budget: 10_000, Time: 0}
	cases := []struct {
		cp   agents.Checkpoint
		want float64
	}{
		{agents.Checkpoint{Budget: 9_000, Time: int64(2 * time.Second)}, 18}, // 1,000 µc per 2 s: 9,000 last 18 s
		{agents.Checkpoint{Budget: 10_000, Time: int64(time.Second)}, 0},     // nothing spent: unknown
		{agents.Checkpoint{Budget: 9_000, Time: 0}, 0},                       // no time between them
		{agents.Checkpoint{Budget: 9_000, Time: int64(time.Second), Control: &agents.Control{Kind: agents.ControlTopUp}}, 0},
	}
	for _, c := range cases {
		if got := budgetLeft(prev, &c.cp); got != c.want {
			t.Errorf("budgetLeft(%+v) = %v, want %v", c.cp, got, c.want)
		}
	}
}

// TestAnnounceAddresses: a node started with announce addresses tells them
// (its own peer addresses and host record name them, not its listen
// addresses); a malformed one, or one naming a peer, is refused.
func TestAnnounceAddresses(t *testing.T) {
	m, err := StartMesh(context.Background(), MeshConfig{Home: t.TempDir(), Slots: 1, Logger: quietLogger(),
		Announce: []string{"/ip4/203.0.113.7/tcp/4001", "/ip4/203.0.113.7/udp/4001/quic-v1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := []string{"/ip4/203.0.113.7/tcp/4001/p2p/" + m.PeerID(), "/ip4/203.0.113.7/udp/4001/quic-v1/p2p/" + m.PeerID()}
	if got := m.PeerAddrs(); !slices.Equal(got, want) {
		t.Fatalf("peer addresses %v, want %v", got, want)
	}
	rec, err := m.HostRecord()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range rec.Addrs {
		if !strings.Contains(a, "203.0.113.7") {
			t.Fatalf("host record names %v", rec.Addrs)
		}
	}
	for _, bad := range []string{"203.0.113.7:4001", "/ip4/203.0.113.7/tcp/4001/p2p/" + m.PeerID()} {
		_, err := StartMesh(context.Background(), MeshConfig{Home: t.TempDir(), Slots: 1, Logger: quietLogger(), Announce: []string{bad}})
		if !errors.Is(err, ErrListen) || !strings.Contains(err.Error(), "announce") {
			t.Errorf("announce %q: %v, want ErrListen about the announce address", bad, err)
		}
	}
}

// TestLogHubBounds: a ring keeps the newest lines, at most logRing of them
// and logRingBytes of text, and a follower that falls behind misses lines
// (counted) without holding up the writer.
func TestLogHubBounds(t *testing.T) {
	h := newLogHub()
	did := "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	for i := range 1000 {
		h.add("n", did, fmt.Sprintf("tick=%d", i))
	}
	back, sub := h.subscribe(did, 0)
	if len(back) != logRing || back[len(back)-1].Msg != "tick=999" {
		t.Fatalf("kept %d lines, last %q", len(back), back[len(back)-1].Msg)
	}
	big := strings.Repeat("x", 3000)
	for range 20 {
		h.add("n", did, big)
	}
	back2, sub2 := h.subscribe(did, 0)
	total := 0
	for _, l := range back2 {
		total += len(l.Msg)
	}
	if total > logRingBytes || back2[len(back2)-1].Msg != big {
		t.Fatalf("kept %d bytes in %d lines", total, len(back2))
	}
	for range logSubBuffer + 10 {
		h.add("n", did, "more")
	}
	if got := h.takeMissed(sub); got != 20+10 {
		t.Fatalf("the follower missed %d lines, want 30 (its buffer of %d holds the rest)", got, logSubBuffer)
	}
	h.unsubscribe(did, sub)
	h.unsubscribe(did, sub2)
}

// TestControlOfAnAgentInsideEffects: an owner's records reach a journaled
// agent that is nearly always inside a tick — its head a partial
// checkpoint (an HTTP request's intent) while a slow server answers — and
// every one is applied: the stop waits for the tick in flight, whose end
// is journaled before the record. The server sees each idempotency key
// applied once. (A stop that cuts an intent's commit wait is rarer than
// this test can provoke; custody's TestRetryInsideTick and the
// control-inside transcript cover it.)
func TestControlOfAnAgentInsideEffects(t *testing.T) {
	var mu sync.Mutex
	keys := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(150 * time.Millisecond)
		mu.Lock()
		keys[r.Header.Get("Idempotency-Key")]++
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	ms := startMeshes(t, 3, 2)
	waitHosts(t, ms, 3)
	wasm, raw := testagents.Bytes(t, "poster")
	var man map[string]any
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	man["args"] = "url=" + srv.URL + "/count"
	raw, _ = json.Marshal(man)
	ctx := context.Background()
	res, err := ms[0].Publish(ctx, wasm, raw, 1_000_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	ticked := func(after uint64) uint64 {
		var tick uint64
		eventually(t, "the poster to tick", 60*time.Second, func() error {
			st, err := ms[0].QueryAgent(ctx, res.DID)
			if err != nil {
				return err
			}
			if st.Status != "running" || st.Tick <= after {
				return fmt.Errorf("%s at tick %d", st.Status, st.Tick)
			}
			tick = st.Tick
			return nil
		})
		return tick
	}
	tick := ticked(0)
	for i := range 4 {
		if _, err := ms[0].ControlAgent(ctx, res.DID, agents.ControlStop, 0, nil); err != nil {
			t.Fatalf("stop %d (tick %d): %v", i, tick, err)
		}
		st, err := ms[0].QueryAgent(ctx, res.DID)
		if err != nil || st.Status != "stopped" {
			t.Fatalf("after stop %d: %+v %v", i, st, err)
		}
		if _, err := ms[0].ControlAgent(ctx, res.DID, agents.ControlStart, 0, nil); err != nil {
			t.Fatalf("start %d: %v", i, err)
		}
		tick = ticked(st.Tick)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, n := range keys {
		if k == "" || n != 1 {
			t.Errorf("key %q applied %d times", k, n)
		}
	}
	if len(keys) < 4 {
		t.Errorf("only %d posts", len(keys))
	}
}

// TestPublishRefusesATickLongerThanTheLease: an agent without a tick
// journal whose tick timeout exceeds what the custody lease lets a tick
// run would be placed and never tick (its holder waits for a lease long
// enough, which never comes); publish and upgrade refuse it, saying what
// to change, and nothing is created. The same timeout with "journal": true
// is accepted (a journaled tick is fenced by its commits, not the lease).
func TestPublishRefusesATickLongerThanTheLease(t *testing.T) {
	ms := startMeshes(t, 1, 1)
	wasm, raw := testagents.Bytes(t, "heartbeat")
	var man map[string]any
	if err := json.Unmarshal(raw, &man); err != nil {
		t.Fatal(err)
	}
	man["resource_limits"] = map[string]any{"tick_timeout_ms": 5000}
	long, _ := json.Marshal(man)
	ctx := context.Background()
	_, err := ms[0].Publish(ctx, wasm, long, 1_000_000, nil)
	if !errors.Is(err, ErrBadRequest) || !errors.Is(err, custody.ErrTickTooLong) ||
		!strings.Contains(err.Error(), "at most 1000 here") || !strings.Contains(err.Error(), `"journal": true`) {
		t.Fatalf("publish: %v", err)
	}
	if list, _ := ms[0].localAgents("", 100); len(list) != 0 {
		t.Fatalf("publish refused, but the node is in custody of %v", list)
	}
	_, _, err = ms[0].storeUpgrade(ctx, &Upgrade{Wasm: wasm, Manifest: long})
	if !errors.Is(err, custody.ErrTickTooLong) {
		t.Fatalf("upgrade: %v", err)
	}
	man["journal"] = true
	journaled, _ := json.Marshal(man)
	if err := ms[0].Custody.CheckManifest(mustManifest(t, journaled)); err != nil {
		t.Fatalf("journaled: %v", err)
	}
}

func mustManifest(t *testing.T, raw []byte) *agents.Manifest {
	t.Helper()
	m, err := agents.ParseManifest(raw)
	if err != nil {
		t.Fatal(err)
	}
	return m
}
