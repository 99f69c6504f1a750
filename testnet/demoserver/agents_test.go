package main

// The example agents that act, built to WASM and run by the real sandbox
// (wasmexec) against this server over real HTTP on 127.0.0.1, with a
// wallet, an agent key and a journal standing for what the runner gives an
// instance. These tests check the agents, the server and the host
// together: receipts signed by the host verify at the paywall, the host's
// Idempotency-Key makes a re-run tick harmless at the counter, and a
// replayed tick reaches the recorded state without touching the server.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"log"
	"log/slog"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/wasmexec"
)

var bg = context.Background()

var cacheDir string

func TestMain(m *testing.M) {
	var err error
	if cacheDir, err = os.MkdirTemp("", "demoserver-test-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(cacheDir)
	os.Exit(code)
}

// purse is the agent's wallet as a runner keeps it.
type purse struct {
	mu       sync.Mutex
	balance  int64
	receipts [][]byte
}

func (p *purse) Balance() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.balance
}

func (p *purse) Debit(amount int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.balance < amount {
		return false
	}
	p.balance -= amount
	return true
}

func (p *purse) Receipts() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.receipts)
}

func (p *purse) AddReceipt(r []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.receipts = append(p.receipts, r)
}

// journal keeps the effects a runner is asked to journal.
type journal struct {
	mu      sync.Mutex
	effects []wasmexec.Effect
}

func (j *journal) before(_ context.Context, e wasmexec.Effect) (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.effects = append(j.effects, e)
	return e.Key, nil
}

func (j *journal) count() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return len(j.effects)
}

var testAgentKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))

// host is one agent in a wasmexec Runtime.
type host struct {
	r   *wasmexec.Runtime
	m   *wasmexec.Module
	man *agents.Manifest

	mu   sync.Mutex
	logs []string
}

// newHost compiles the example agent and gives it args instead of its
// manifest's (the server's port is chosen at run time).
func newHost(t *testing.T, name, args string) *host {
	t.Helper()
	wasm, mj := testagents.Bytes(t, name)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(mj, &raw); err != nil {
		t.Fatal(err)
	}
	raw["args"], _ = json.Marshal(args)
	mj, _ = json.Marshal(raw)
	man, err := agents.ParseManifest(mj)
	if err != nil {
		t.Fatal(err)
	}
	r, err := wasmexec.NewRuntime(bg, wasmexec.Config{CacheDir: cacheDir, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(bg) })
	m, err := r.Compile(bg, "example:"+name, wasm)
	if err != nil {
		t.Fatal(err)
	}
	return &host{r: r, m: m, man: man}
}

// config is what a runner gives an instance: the wallet, the agent's key
// and a journal.
func (h *host) config(p *purse, j *journal) wasmexec.InstanceConfig {
	cfg := wasmexec.InstanceConfig{Manifest: h.man, AgentDID: "did:key:demo", Price: 5,
		AgentPub: testAgentKey.Public().(ed25519.PublicKey),
		Sign:     func(msg []byte) []byte { return ed25519.Sign(testAgentKey, msg) },
		Log: func(msg string) {
			h.mu.Lock()
			h.logs = append(h.logs, msg)
			h.mu.Unlock()
		}}
	if p != nil {
		cfg.Wallet = p
	}
	if j != nil {
		cfg.BeforeEffect = j.before
	}
	return cfg
}

func (h *host) start(t *testing.T, cfg wasmexec.InstanceConfig, state []byte) *wasmexec.Instance {
	t.Helper()
	inst, err := h.r.Instantiate(bg, h.m, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { inst.Close(bg) })
	if err := inst.Resume(bg, state); err != nil {
		t.Fatal(err)
	}
	return inst
}

func (h *host) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.logs)
}

// ticks runs n ticks and returns each one's pre-state, log and post-state.
func ticks(t *testing.T, inst *wasmexec.Instance, n int) (pre [][]byte, logs []wasmexec.TickLog, post [][]byte) {
	t.Helper()
	for range n {
		p, err := inst.Checkpoint(bg)
		if err != nil {
			t.Fatal(err)
		}
		res, err := inst.Tick(bg)
		if err != nil {
			t.Fatal(err)
		}
		q, err := inst.Checkpoint(bg)
		if err != nil {
			t.Fatal(err)
		}
		pre, logs, post = append(pre, p), append(logs, res.Log), append(post, q)
	}
	return pre, logs, post
}

// intents returns the indexes of a tick log's intent entries.
func intents(l wasmexec.TickLog) []int {
	var at []int
	for k, e := range l.Entries {
		if e.Kind == wasmexec.Intent {
			at = append(at, k)
		}
	}
	return at
}

func startServer(t *testing.T) (*server, *httptest.Server) {
	t.Helper()
	s := newServer("paywall", 1000, log.New(&syncBuffer{}, "", 0))
	ts := httptest.NewServer(s.handler())
	t.Cleanup(ts.Close)
	return s, ts
}

func TestPriceWatcherAgent(t *testing.T) {
	s, ts := startServer(t)
	h := newHost(t, "pricewatcher", "url="+ts.URL+"/price")
	inst := h.start(t, h.config(nil, &journal{}), nil)
	pre, logs, post := ticks(t, inst, 3)
	want := []string{
		"tick=1 price=109.25 min=109.25 max=109.25 count=1 failed=0",
		"tick=2 price=108.25 min=108.25 max=109.25 count=2 failed=0",
		"tick=3 price=107.25 min=107.25 max=109.25 count=3 failed=0",
	}
	if got := h.lines(); !slices.Equal(got, want) {
		t.Fatalf("logs %q, want %q", got, want)
	}
	// A replay answers from the log: the same state, no request.
	for k := range logs {
		st, err := h.r.Replay(bg, h.m, h.config(nil, nil), pre[k], logs[k])
		if err != nil || !bytes.Equal(st, post[k]) {
			t.Fatalf("replay of tick %d: %v", k+1, err)
		}
	}
	s.mu.Lock()
	n := s.priceReqs
	s.mu.Unlock()
	if n != 3 {
		t.Fatalf("the server saw %d price requests, want 3", n)
	}
	// The server goes away: a counted failure, the readings kept.
	ts.Close()
	ticks(t, inst, 1)
	if got := h.lines()[3:]; len(got) != 1 || !strings.HasPrefix(got[0], `tick=4 error="fetch failed: sdk: http_request: transport error`) || !strings.HasSuffix(got[0], "failed=1") {
		t.Fatalf("logs %q", got)
	}
}

func TestX402BuyerAgent(t *testing.T) {
	s, ts := startServer(t)
	h := newHost(t, "x402buyer", "url="+ts.URL+"/paid/report to=paywall max=5000")
	p := &purse{balance: 10_000}
	j := &journal{}
	inst := h.start(t, h.config(p, j), nil)
	pre, logs, post := ticks(t, inst, 3)
	for k, l := range h.lines() {
		if want := fmt.Sprintf("tick=%d status=200 bought paid=1000 spent=%d hash=", k+1, 1000*(k+1)); !strings.HasPrefix(l, want) {
			t.Fatalf("log %d %q, want prefix %q", k, l, want)
		}
	}
	rep := s.salesReport()
	if rep.Total != 3 || rep.Sales["report"] != 3 || rep.Revenue != 3000 || rep.Replays != 0 || rep.Rejected != 0 {
		t.Fatalf("sales %+v", rep)
	}
	if bal, rs := p.Balance(), p.Receipts(); bal != 7000 || len(rs) != 3 {
		t.Fatalf("wallet %d µc, %d receipts", bal, len(rs))
	}
	// Per tick: GET (402), the payment, GET with the receipt (200) — three
	// effects journaled, and the tick time in the receipts is the tick's.
	if j.count() != 9 {
		t.Fatalf("%d effects journaled, want 9", j.count())
	}
	for k, l := range logs {
		if in := intents(l); len(in) != 3 {
			t.Fatalf("tick %d: %d intents", k+1, len(in))
		}
	}
	// The new holder of a tick cut short re-runs the rest live: cut after
	// the payment's intent, it pays again with the same receipt (same tick
	// time, same bytes) and presents it, a receipt the paywall already
	// sold: the content again, no second sale; cut after the last GET's
	// intent, it only presents the receipt again.
	for _, cut := range []struct {
		name     string
		intent   int   // keep the log through this intent
		replays  int64 // the paywall's replays after the re-run
		balance  int64 // the new holder's wallet after the re-run
		replayed int64 // TickResult.PaidReplayed: payments answered from the log
	}{{"after the payment intent", 1, 1, 7000, 0}, {"after the last intent", 2, 2, 8000, 1000}} {
		t.Run(cut.name, func(t *testing.T) {
			full := logs[2]
			prefix := wasmexec.TickLog{Entries: slices.Clone(full.Entries[:intents(full)[cut.intent]+1])}
			before := &purse{balance: 8000, receipts: p.Receipts()[:2]}
			re := h.start(t, h.config(before, &journal{}), pre[2])
			res, err := re.ReplayTick(bg, prefix, true)
			if err != nil {
				t.Fatal(err)
			}
			st, err := re.Checkpoint(bg)
			if err != nil || !bytes.Equal(st, post[2]) || !bytes.Equal(res.Log.Encode(), full.Encode()) {
				t.Fatalf("the re-run tick differs from the original (%v)", err)
			}
			if rep := s.salesReport(); rep.Total != 3 || rep.Revenue != 3000 || rep.Replays != cut.replays || rep.Rejected != 0 {
				t.Fatalf("sales %+v", rep)
			}
			if res.Paid != 1000 || res.PaidReplayed != cut.replayed || before.Balance() != cut.balance {
				t.Fatalf("Paid %d, PaidReplayed %d, wallet %d µc", res.Paid, res.PaidReplayed, before.Balance())
			}
			if rs := before.Receipts(); cut.replayed == 0 && (len(rs) != 3 || !bytes.Equal(rs[2], p.Receipts()[2])) {
				t.Fatal("the payment made again is not the original receipt, byte for byte")
			}
		})
	}
}

func TestPosterAgent(t *testing.T) {
	s, ts := startServer(t)
	h := newHost(t, "poster", "url="+ts.URL+"/count name=did:key:demo")
	inst := h.start(t, h.config(nil, &journal{}), nil)
	pre, logs, post := ticks(t, inst, 5)
	for k, l := range h.lines() {
		if want := fmt.Sprintf("tick=%d posted status=200", k+1); l != want {
			t.Fatalf("log %q, want %q", l, want)
		}
	}
	if st := s.stats(); st != (countStats{Applied: 5, Keys: 5}) {
		t.Fatalf("stats %+v", st)
	}
	// The host's key on each request is the journaled intent's.
	keys := s.keyReports()
	for k, kr := range keys {
		in := logs[k].Entries[intents(logs[k])[0]]
		if kr.Key != string(in.Data[32:]) || len(kr.Bodies) != 1 || kr.Bodies[0] != fmt.Sprintf(`{"agent":"did:key:demo","tick":%d}`, k+1) {
			t.Fatalf("key %d: %+v", k, kr)
		}
	}
	// Tick 3 re-run by a new holder from its intent: the same request with
	// the same key, answered from the server's store, applied once.
	prefix := wasmexec.TickLog{Entries: slices.Clone(logs[2].Entries[:intents(logs[2])[0]+1])}
	re := h.start(t, h.config(nil, &journal{}), pre[2])
	if _, err := re.ReplayTick(bg, prefix, true); err != nil {
		t.Fatal(err)
	}
	if st, err := re.Checkpoint(bg); err != nil || !bytes.Equal(st, post[2]) {
		t.Fatalf("the re-run tick differs from the original (%v)", err)
	}
	if st := s.stats(); st != (countStats{Applied: 5, DuplicatesSeen: 1, Keys: 5}) {
		t.Fatalf("stats %+v", st)
	}
	if kr := s.keyReports()[2]; len(kr.Bodies) != 2 || kr.Bodies[0] != kr.Bodies[1] {
		t.Fatalf("key of tick 3: %+v", kr)
	}
	// A full replay does not post at all.
	if _, err := h.r.Replay(bg, h.m, h.config(nil, nil), pre[3], logs[3]); err != nil {
		t.Fatal(err)
	}
	if st := s.stats(); st.Applied+st.DuplicatesSeen != 6 {
		t.Fatalf("a replay reached the server: %+v", st)
	}
}
