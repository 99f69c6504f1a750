package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

func quietLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: testLogLevel}))
}

// startMeshes starts n real mesh nodes on loopback, all bootstrapped from
// node 0, hosting with a fast tick loop.
func startMeshes(tb testing.TB, n, slots int) []*Mesh {
	tb.Helper()
	return benchMeshes(tb, n, slots, hosting.RunOptions{TickInterval: 20 * time.Millisecond, CheckpointEvery: 3, Price: -1})
}

func eventually(tb testing.TB, what string, d time.Duration, cond func() error) {
	tb.Helper()
	pollUntil(tb, what, d, 20*time.Millisecond, cond)
}

func waitHosts(tb testing.TB, ms []*Mesh, want int) {
	tb.Helper()
	for _, m := range ms {
		waitSeesHosts(tb, m, want, 60*time.Second)
	}
}

func TestPublishRunQueryAcrossMesh(t *testing.T) {
	ms := startMeshes(t, 5, 2)
	waitHosts(t, ms, 5)
	wasm, man := testagents.Bytes(t, "heartbeat")
	ctx := context.Background()
	res, err := ms[0].Publish(ctx, wasm, man, 1_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res.DID, "did:key:z6Mk") || res.Holder == "" || res.Epoch != 1 {
		t.Fatalf("publish result %+v", res)
	}
	var holder *Mesh
	for _, m := range ms {
		if m.PeerID() == res.Holder {
			holder = m
		}
	}
	if holder == nil {
		t.Fatalf("holder %s is not a mesh node", res.Holder)
	}
	eventually(t, "the first holder runs the agent at epoch 1", 10*time.Second, func() error {
		if st, ok := holder.Svc.Status(res.DID); !ok || !st.Running || st.Epoch != 1 {
			return fmt.Errorf("holder status %+v %v", st, ok)
		}
		return nil
	})
	if len(res.Members) != 3 || !slices.Contains(res.Members, res.Holder) {
		t.Fatalf("custody group %v (holder %s), want 3 members", res.Members, res.Holder)
	}
	for _, m := range ms {
		_, err := m.Keys.Get(res.DID)
		if slices.Contains(res.Members, m.PeerID()) != (err == nil) && m != ms[0] {
			t.Fatalf("node %s: member %v, has key: %v", m.PeerID(), slices.Contains(res.Members, m.PeerID()), err)
		}
	}
	if _, err := holder.Keys.Get(res.DID); err != nil {
		t.Fatalf("the holder must keep the escrowed key: %v", err)
	}
	// Query from a node that neither published nor hosts the agent.
	var observer *Mesh
	for _, m := range ms[1:] {
		if m != holder {
			observer = m
			break
		}
	}
	var st *AgentStatus
	eventually(t, "the agent's head record to show tick ≥ 6 from another node", 60*time.Second, func() error {
		s, err := observer.QueryAgent(ctx, res.DID)
		if err != nil {
			return err
		}
		if s.Tick < 6 {
			return fmt.Errorf("tick %d", s.Tick)
		}
		st = s
		return nil
	})
	if st.Holder != res.Holder || st.Epoch != 1 || st.DID != res.DID || st.Budget >= 1_000_000 {
		t.Fatalf("query: %+v", st)
	}
	rep, err := observer.VerifyRemote(ctx, res.DID, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Valid || rep.Checkpoints < 3 || rep.MaxEpoch != 1 {
		t.Fatalf("remote verify: %+v", rep)
	}
	// The lineage names the publisher (checkpoint 0), then only members of
	// the custody group.
	if len(rep.Holders) == 0 || rep.Holders[0] != ms[0].PeerID() {
		t.Fatalf("holders %v, publisher %s", rep.Holders, ms[0].PeerID())
	}
	for _, h := range rep.Holders[1:] {
		if !slices.Contains(res.Members, h) {
			t.Fatalf("holder %s of the lineage is not in the custody group %v", h, res.Members)
		}
	}
	// Unknown DID: a clear not-found.
	other, _, _ := agents.GenerateKey(rand.Reader)
	if _, err := observer.QueryAgent(ctx, agents.DID(other)); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("unknown DID: %v", err)
	}
}

func TestPublishWithoutCapacityCreatesNothing(t *testing.T) {
	ms := startMeshes(t, 3, 0)
	wasm, man := testagents.Bytes(t, "heartbeat")
	_, err := ms[1].Publish(context.Background(), wasm, man, 1_000_000, nil)
	if !errors.Is(err, ErrNoHost) {
		t.Fatalf("want ErrNoHost, got %v", err)
	}
	if ds, _ := ms[1].Home.Agents(); len(ds) != 0 {
		t.Fatalf("agents left behind: %v", ds)
	}
	if ks, _ := ms[1].Keys.List(); len(ks) != 0 {
		t.Fatalf("keys left behind: %v", ks)
	}
}

// A lease offer whose genesis signature does not verify is refused, and the
// host runs nothing.
func TestLeaseOfferWithForgedGenesisRefused(t *testing.T) {
	ms := startMeshes(t, 2, 2)
	waitHosts(t, ms, 2)
	ctx := context.Background()
	wasm, man := testagents.Bytes(t, "counter")
	did, head, err := ms[0].CreateAgent(ctx, wasm, man, 1_000_000, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ms[0].Keys.Get(did)
	// Re-sign checkpoint 0 over a genesis whose signature is garbage.
	gdata, _ := ms[0].Store.Get(head.Checkpoint.Genesis)
	g, err := agents.DecodeGenesis(gdata)
	if err != nil {
		t.Fatal(err)
	}
	g.Sig = bytes.Repeat([]byte{7}, len(g.Sig))
	gbad, gcid, err := g.Encode()
	if err != nil {
		t.Fatal(err)
	}
	ms[0].Store.Put(cid.DagCBOR, gbad)
	cp := *head.Checkpoint
	cp.Genesis, cp.AgentSig, cp.HolderSig = gcid, nil, nil
	if err := cp.Sign(key, ms[0].NodeKey); err != nil {
		t.Fatal(err)
	}
	cpData, cpCID, _ := cp.Encode()
	ms[0].Store.Put(cid.DagCBOR, cpData)
	hr, _ := ms[1].HostRecord()
	solo := []string{ms[1].PeerID()}
	err = ms[0].offer(ctx, hr, custodyOffer{Version: 2, DID: did, Head: cpCID.String(), Seed: key.Seed(), TermMs: 60_000, Members: solo, Campaign: true, From: ms[0].PeerAddrs()})
	if !errors.Is(err, ErrLeaseRefused) || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("want a refusal naming the signature, got %v", err)
	}
	if len(ms[1].Svc.Hosted()) != 0 || ms[1].Svc.FreeSlots() != 2 || len(ms[1].Custody.Status()) != 0 {
		t.Fatalf("host runs or holds something after a refused offer: %+v %+v", ms[1].Svc.Hosted(), ms[1].Custody.Status())
	}
	// A version-1 (single-holder) offer is refused with a reason.
	if err := ms[0].offer(ctx, hr, custodyOffer{Version: 1, Head: head.CID.String()}); !errors.Is(err, ErrLeaseRefused) || !strings.Contains(err.Error(), "version 1") {
		t.Fatalf("version-1 offer: %v", err)
	}
	// Garbage on the lease protocol: the stream is reset, the host keeps serving.
	s, err := ms[0].Host.NewStream(ctx, ms[1].Host.ID(), LeaseProtocol)
	if err != nil {
		t.Fatal(err)
	}
	s.Write([]byte{0xff, 0xff, 0xff, 0xff, 1, 2, 3})
	s.CloseWrite()
	io.ReadAll(s)
	s.Close()
	// ... and still takes a valid offer.
	if err := ms[0].offer(ctx, hr, custodyOffer{Version: 2, DID: did, Head: head.CID.String(), Seed: key.Seed(), TermMs: 60_000, Members: solo, Campaign: true, From: ms[0].PeerAddrs()}); err != nil {
		t.Fatalf("valid offer after garbage: %v", err)
	}
	eventually(t, "the sole member runs the agent", 10*time.Second, func() error {
		if st, ok := ms[1].Svc.Status(did); !ok || !st.Running {
			return fmt.Errorf("status %+v", st)
		}
		return nil
	})
}

func TestAPIBadInput(t *testing.T) {
	ms := startMeshes(t, 1, 1)
	srv, err := ms[0].ServeAPI("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	if _, err := ms[0].ServeAPI("0.0.0.0:0", false); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("non-loopback API without opt-in: %v", err)
	}
	base := "http://" + srv.Addr()
	cases := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"POST", "/v1/agents", "{not json", 400, "not a publish request"},
		{"POST", "/v1/agents", `{"wasm":"AAEC","budget_microcents":0}`, 400, "budget"},
		{"POST", "/v1/agents", `{"wasm":"AGFzbQEAAAA=","manifest":{"capabilities":{"x":{"version":1}}},"budget_microcents":5}`, 400, "unknown capability"},
		{"POST", "/v1/agents", `{"wasm":"AAEC","bogus":1}`, 400, "bogus"},
		{"POST", "/v1/agents", `{"module":"nope","manifest":{},"budget_microcents":5}`, 400, "not a CID"},
		{"POST", "/v1/agents", `{"wasm":"AGFzbQEAAAA=","module":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","manifest":{},"budget_microcents":5}`, 400, "both"},
		{"POST", "/v1/agents", `{"module":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","manifest":{},"budget_microcents":5}`, 400, "not stored on this node"},
		{"POST", "/v1/agents", `{"wasm":"AGFzbQEAAAA=","manifest":{},"budget_microcents":5,"min_replicas":-1}`, 400, "min_replicas must be 0 or more"},
		{"POST", "/v1/agents", `{"wasm":"AGFzbQEAAAA=","manifest":{},"budget_microcents":5,"min_replicas":3}`, 400, "min_replicas 3 is outside 0..2"},
		// One host, and the manifest asks for two standbys: refused before
		// the (empty) module is even looked at.
		{"POST", "/v1/agents", `{"wasm":"AGFzbQEAAAA=","manifest":{},"budget_microcents":5}`, 503, "--min-replicas 0"},
		{"GET", "/v1/agents/did:key:nope", "", 400, "did"},
		{"GET", "/v1/agents/did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK", "", 404, "no head record"},
		{"GET", "/v1/nothing", "", 404, "no such endpoint"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if resp.StatusCode != c.code || !strings.Contains(strings.ToLower(e.Error), strings.ToLower(c.want)) {
			t.Errorf("%s %s %q: HTTP %d %q, want %d mentioning %q", c.method, c.path, c.body, resp.StatusCode, e.Error, c.code, c.want)
		}
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "igor_free_slots 1") || !strings.Contains(string(body), "igor_agent_log_lines_dropped_total 0") ||
		!strings.Contains(string(body), "go_goroutines ") || !strings.Contains(string(body), "go_sched_latencies_seconds_bucket") || !strings.Contains(string(body), "process_resident_memory_bytes ") ||
		!strings.Contains(string(body), "igor_agent_series_omitted 0") {
		t.Fatalf("metrics: %s", body)
	}
}

// TestAPIPublishByModule: a bulk publisher sends a module once; later
// publications name it by the CID the first answer reported, and create
// new agents of the same module.
func TestAPIPublishByModule(t *testing.T) {
	ms := startMeshes(t, 3, 2)
	waitHosts(t, ms, 3)
	srv, err := ms[0].ServeAPI("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close(context.Background())
	wasm, man := testagents.Bytes(t, "counter")
	publish := func(req map[string]any) PublishResult {
		t.Helper()
		req["manifest"] = json.RawMessage(man)
		req["budget_microcents"] = 1_000_000
		body, _ := json.Marshal(req)
		resp, err := http.Post("http://"+srv.Addr()+"/v1/agents", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var res PublishResult
		data, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusCreated || json.Unmarshal(data, &res) != nil {
			t.Fatalf("publish: HTTP %d %s", resp.StatusCode, data)
		}
		return res
	}
	first := publish(map[string]any{"wasm": wasm})
	second := publish(map[string]any{"module": first.Module})
	if second.Module != first.Module || second.DID == first.DID || len(second.Members) != 3 {
		t.Fatalf("by module: %+v; first: %+v", second, first)
	}
	eventually(t, "the agent published by module runs", 30*time.Second, func() error {
		st, err := ms[0].QueryAgent(context.Background(), second.DID)
		if err != nil {
			return err
		}
		if st.Status != "running" || st.Seq < 1 {
			return fmt.Errorf("%s seq %d", st.Status, st.Seq)
		}
		return nil
	})
}

var testLogLevel = func() slog.Level {
	if os.Getenv("IGOR_TEST_DEBUG") != "" {
		return slog.LevelDebug
	}
	return slog.LevelError
}()

// storeBlocks counts the blocks in m's store.
func storeBlocks(t *testing.T, m *Mesh) int {
	t.Helper()
	n := 0
	if err := m.Store.ForEach(func(cid.Cid) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	return n
}

// With fewer eligible hosts than a holder and its lease.replicas standbys,
// publish fails with ErrGroupTooSmall before creating anything (no key, no
// head, no block); min_replicas allows the smaller group, and the result
// carries the price and the tick time the budget buys.
func TestPublishUndersizedGroup(t *testing.T) {
	ms := startMeshes(t, 2, 2)
	waitHosts(t, ms, 2)
	wasm, man := testagents.Bytes(t, "heartbeat") // lease.replicas: the default 2
	ctx := context.Background()
	before := storeBlocks(t, ms[0])
	_, err := ms[0].Publish(ctx, wasm, man, 1_000_000, nil)
	if !errors.Is(err, ErrGroupTooSmall) || !strings.Contains(err.Error(), "--min-replicas 1") {
		t.Fatalf("publish on 2 hosts with replicas 2 = %v, want ErrGroupTooSmall suggesting --min-replicas 1", err)
	}
	if got := statusOf(err); got != http.StatusServiceUnavailable {
		t.Fatalf("statusOf(ErrGroupTooSmall) = %d", got)
	}
	if ds, _ := ms[0].Home.Agents(); len(ds) != 0 {
		t.Fatalf("agents left behind: %v", ds)
	}
	if ks, _ := ms[0].Keys.List(); len(ks) != 0 {
		t.Fatalf("keys left behind: %v", ks)
	}
	if after := storeBlocks(t, ms[0]); after != before {
		t.Fatalf("%d blocks before the refused publish, %d after", before, after)
	}

	three := 3
	if _, err := ms[0].PublishAgent(ctx, PublishRequest{Wasm: wasm, Manifest: man, Budget: 1_000_000, MinReplicas: &three}, nil); !errors.Is(err, ErrBadRequest) {
		t.Fatalf("min_replicas above lease.replicas = %v, want ErrBadRequest", err)
	}

	one := 1
	res, err := ms[0].PublishAgent(ctx, PublishRequest{Wasm: wasm, Manifest: man, Budget: 1_000_000, MinReplicas: &one}, nil)
	if err != nil {
		t.Fatalf("publish with min_replicas 1: %v", err)
	}
	if len(res.Members) != 2 {
		t.Fatalf("members %v, want both hosts", res.Members)
	}
	// startMeshes' publisher charges 1000 µc/s: 1,000,000 µc buy 1000 s.
	if res.Price != 1000 || res.BudgetSeconds == nil || *res.BudgetSeconds != 1000 {
		t.Fatalf("price %d, budget seconds %v; want 1000 and 1000", res.Price, res.BudgetSeconds)
	}
}

// When refusals leave fewer hosts than the allowed minimum, place fails
// with ErrGroupTooSmall and the members that had joined leave: no
// half-formed group keeps the agent. With a lower minimum it forms the
// smaller group instead.
func TestPlaceHonoursMinimumAfterRefusals(t *testing.T) {
	ms := startMeshes(t, 2, 2)
	waitHosts(t, ms, 2)
	ctx := context.Background()
	wasm, man := testagents.Bytes(t, "counter")
	did, head, err := ms[0].CreateAgent(ctx, wasm, man, 1_000_000, 1000, nil)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ms[0].Keys.Get(did)
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := ms[0].Hosts(ctx)
	if err != nil || len(hosts) != 2 {
		t.Fatalf("hosts %v, %v", hosts, err)
	}
	// A third host that cannot be reached: nothing listens on port 1.
	pub, _, err := agents.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ghost := &agents.HostRecord{Peer: agents.PeerID(pub), Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, Slots: 2, FreeSlots: 2}
	ranked := append(slices.Clone(hosts), ghost)
	inCustody := func() []string {
		var in []string
		for _, m := range ms {
			if _, err := m.Custody.Agent(did); err == nil {
				in = append(in, m.PeerID())
			}
		}
		return in
	}

	res := &PublishResult{DID: did}
	err = ms[0].place(ctx, res, head, 0, false, ranked, 2, 3, 60_000, key, func(string) {})
	if !errors.Is(err, ErrGroupTooSmall) {
		t.Fatalf("place with one of 3 hosts unreachable and minimum 3 = %v, want ErrGroupTooSmall", err)
	}
	if len(res.Refused) != 1 || !strings.Contains(res.Refused[0], ghost.Peer) {
		t.Fatalf("refused %v, want the unreachable host", res.Refused)
	}
	if in := inCustody(); len(in) != 0 {
		t.Fatalf("after the failed placement, still members: %v", in)
	}

	res = &PublishResult{DID: did}
	if err := ms[0].place(ctx, res, head, 0, false, ranked, 2, 2, 60_000, key, func(string) {}); err != nil {
		t.Fatalf("place with minimum 2: %v", err)
	}
	if len(res.Members) != 2 || slices.Contains(res.Members, ghost.Peer) {
		t.Fatalf("members %v, want the two reachable hosts", res.Members)
	}
	eventually(t, "the agent running on the smaller group", 30*time.Second, func() error {
		if h := holderOf(ms, did); h == nil {
			return fmt.Errorf("nobody runs it")
		}
		return nil
	})
}

// A publish whose group falls below the minimum after a refusal fails
// with ErrGroupTooSmall and leaves nothing behind: no head, no key, no
// checkpoint or genesis block, no member keeping a membership. Here the
// third host is advertised (a signed, fresh record in the publisher's
// view) but cannot be reached.
func TestPublishRefusalBelowMinimumLeavesNothing(t *testing.T) {
	ms := startMeshes(t, 2, 2)
	waitHosts(t, ms, 2)
	eventually(t, "a warm host view", 30*time.Second, func() error {
		if !ms[0].view.warm() {
			return fmt.Errorf("cold")
		}
		return nil
	})
	pub, priv, err := agents.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	ghost := &agents.HostRecord{Peer: agents.PeerID(pub), Addrs: []string{"/ip4/127.0.0.1/tcp/1"}, Slots: 2, FreeSlots: 2,
		MemoryBytes: 1 << 30, FreeMemoryBytes: 1 << 30, Price: 1000, Capabilities: agents.KnownCapabilities(), Version: Version,
		Seq: 1, Issued: now.UnixNano(), Expires: now.Add(5 * time.Minute).UnixNano()}
	if err := ghost.Sign(priv); err != nil {
		t.Fatal(err)
	}
	ms[0].view.seed([]*agents.HostRecord{ghost})
	wasm, man := testagents.Bytes(t, "counter")
	res, err := ms[0].Publish(context.Background(), wasm, man, 1_000_000, nil)
	if !errors.Is(err, ErrGroupTooSmall) || res == nil || len(res.Refused) != 1 || !strings.Contains(res.Refused[0], ghost.Peer) {
		t.Fatalf("publish with one of 3 hosts unreachable = %+v, %v; want ErrGroupTooSmall naming the unreachable host", res, err)
	}
	if ds, _ := ms[0].Home.Agents(); len(ds) != 0 {
		t.Fatalf("agents left behind: %v", ds)
	}
	if ks, _ := ms[0].Keys.List(); len(ks) != 0 {
		t.Fatalf("keys left behind: %v", ks)
	}
	for _, s := range []string{res.Head, res.Genesis} {
		c, _ := cid.Decode(s)
		if has, err := ms[0].Store.Has(c); err != nil || has {
			t.Fatalf("block %s of the unplaced agent left in the publisher's store (%v)", s, err)
		}
	}
	for _, m := range ms {
		if st, err := m.Custody.Agent(res.DID); err == nil {
			t.Fatalf("%s still a member: %+v", m.PeerID(), st)
		}
	}
}

// TestAPIDebugFlight: with DebugFlight the API serves the execution
// tracer's recent window (a Go trace, read by go tool trace); without it
// the endpoint does not exist.
func TestAPIDebugFlight(t *testing.T) {
	ms := startMeshes(t, 1, 1)
	get := func(opts APIOptions) (int, []byte) {
		t.Helper()
		srv, err := ms[0].ServeAPIWithOptions("127.0.0.1:0", opts)
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close(context.Background())
		time.Sleep(200 * time.Millisecond) // something in the window
		resp, err := http.Get("http://" + srv.Addr() + "/debug/flight")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, body
	}
	code, body := get(APIOptions{DebugFlight: true})
	if code != http.StatusOK || !bytes.HasPrefix(body, []byte("go 1.")) || len(body) < 1024 {
		t.Fatalf("flight recorder: HTTP %d, %d bytes starting %q; want 200 and a Go execution trace", code, len(body), body[:min(len(body), 16)])
	}
	if code, _ := get(APIOptions{}); code != http.StatusNotFound {
		t.Fatalf("without DebugFlight: HTTP %d, want 404", code)
	}
}
