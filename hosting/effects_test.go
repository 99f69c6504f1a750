package hosting_test

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// keyServer applies a POST once per Idempotency-Key and counts repeats.
type keyServer struct {
	mu      sync.Mutex
	seen    map[string]int // key → requests
	applied int
}

func newKeyServer(t *testing.T) (*keyServer, string) {
	ks := &keyServer{seen: map[string]int{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ks.mu.Lock()
		defer ks.mu.Unlock()
		k := r.Header.Get("Idempotency-Key")
		if ks.seen[k]++; ks.seen[k] == 1 {
			ks.applied++
		}
		fmt.Fprintf(w, "applied=%d", ks.applied)
	}))
	t.Cleanup(srv.Close)
	return ks, srv.URL
}

func (ks *keyServer) snapshot() (map[string]int, int) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	m := map[string]int{}
	for k, v := range ks.seen {
		m[k] = v
	}
	return m, ks.applied
}

// createFetcher creates the fetcher example posting to url and paying 100 µc
// per tick.
func (f *fixture) createFetcher(t *testing.T, url string) *hosting.Loaded {
	t.Helper()
	wasmPath, manPath := testagents.Path(t, "fetcher")
	wasm, _ := os.ReadFile(wasmPath)
	manJSON, _ := os.ReadFile(manPath)
	var raw map[string]any
	if err := json.Unmarshal(manJSON, &raw); err != nil {
		t.Fatal(err)
	}
	raw["args"] = "url=" + url + "/count post=1 pay=100 to=paywall memo=test"
	manJSON, _ = json.Marshal(raw)
	man, err := agents.ParseManifest(manJSON)
	if err != nil {
		t.Fatal(err)
	}
	if !man.Journal {
		t.Fatal("a manifest granting http is not journaled")
	}
	_, key, _ := agents.GenerateKey(rand.Reader)
	head, err := hosting.Create(context.Background(), f.env, hosting.CreateParams{Wasm: wasm, Manifest: man, Budget: 1_000_000_000, Price: 1000, AgentKey: key})
	if err != nil {
		t.Fatal(err)
	}
	a, err := hosting.Load(context.Background(), f.env, head.CID, key)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// An agent that acts: each effect's intent is a committed partial
// checkpoint before the effect, its end a journaled step with the payment;
// the server sees one key per POST; the whole life replays without
// touching the server. A new holder resuming at an intent issues the call
// again with the journaled key, so the server applies it once.
func TestEffectsJournaledAndResumedAtIntent(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	ks, url := newKeyServer(t)
	a := f.createFetcher(t, url)
	var mu sync.Mutex
	heads := map[uint64]hosting.Head{}
	f.env.OnCheckpoint = func(h hosting.Head) { mu.Lock(); heads[h.Checkpoint.Seq] = h; mu.Unlock() }
	var awaited []uint64
	opts := fast(3, 5)
	opts.AwaitCommit = func(_ context.Context, seq uint64) error { awaited = append(awaited, seq); return nil }
	res, err := hosting.Run(ctx, f.env, a, opts)
	if err != nil {
		t.Fatal(err)
	}
	lin, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Per tick: the POST's intent, the payment's intent, the tick's end.
	var partials, paid int
	for _, e := range lin.Entries[1:] {
		cp := e.Checkpoint
		if cp.Partial {
			partials++
			continue
		}
		if cp.Journal.Defined() {
			if cp.Paid != 100 {
				t.Fatalf("tick %d: paid %d", cp.Tick, cp.Paid)
			}
			paid++
		}
	}
	// The receipts snapshot goes with the state written at the end.
	if n := receiptCount(t, f, res.Head.Checkpoint); n != 3 {
		t.Fatalf("the final checkpoint keeps %d receipts, want 3", n)
	}
	if partials != 6 || paid != 3 || len(awaited) != 9 {
		t.Fatalf("%d intents, %d paying ticks, %d commits awaited; want 6, 3, 9", partials, paid, len(awaited))
	}
	seen, applied := ks.snapshot()
	if applied != 3 || len(seen) != 3 {
		t.Fatalf("server: %d applied, keys %v", applied, seen)
	}
	for k, n := range seen {
		if !strings.HasPrefix(k, "igor-") || n != 1 {
			t.Fatalf("server saw key %q %d times", k, n)
		}
	}
	rep, err := hosting.ReplayLineage(ctx, f.env.Runtime, f.st, lin)
	if err != nil || rep.Divergence != nil || rep.Ticks != 3 {
		t.Fatalf("replay: %+v %v", rep, err)
	}
	if _, after := ks.snapshot(); after != applied || len(seen) != 3 {
		t.Fatal("the replay contacted the server")
	}

	// The holder died inside tick 2, after the POST's intent was committed
	// (the POST may or may not have happened): a new holder from there.
	var intent hosting.Head
	for _, e := range lin.Entries {
		if e.Checkpoint.Partial && e.Checkpoint.Tick == 2 {
			intent = heads[e.Checkpoint.Seq]
			break
		}
	}
	b, err := hosting.Load(ctx, f.env, intent.CID, a.Key)
	if err != nil {
		t.Fatal(err)
	}
	res, err = hosting.Run(ctx, f.env, b, fast(1, 5))
	if err != nil {
		t.Fatal(err)
	}
	lin2, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// tick 2's end (then its state written down at the run's end).
	if end := lin2.Entries[len(lin2.Entries)-2].Checkpoint; end.Tick != 2 || end.Partial || !end.Journal.Defined() || end.Paid != 100 {
		t.Fatalf("the new holder's tick 2: %+v", end)
	}
	// Tick 1's receipt came back by replay, tick 2's by the re-issued payment.
	if n := receiptCount(t, f, res.Head.Checkpoint); n != 2 {
		t.Fatalf("the new holder keeps %d receipts after tick 2, want 2", n)
	}
	if rep, err := hosting.ReplayLineage(ctx, f.env.Runtime, f.st, lin2); err != nil || rep.Divergence != nil {
		t.Fatalf("replay of the new holder's lineage: %+v %v", rep, err)
	}
	seen2, applied2 := ks.snapshot()
	if applied2 != 3 || len(seen2) != 3 {
		t.Fatalf("after the re-issue: %d applied, %d keys; want 3 and 3 (one key sent again)", applied2, len(seen2))
	}
	twice := 0
	for _, n := range seen2 {
		if n == 2 {
			twice++
		}
	}
	if twice != 1 {
		t.Fatalf("keys seen twice: %d, want exactly tick 2's POST (%v)", twice, seen2)
	}
}

// receiptCount reads how many receipts cp's snapshot holds.
func receiptCount(t *testing.T, f *fixture, cp *agents.Checkpoint) int {
	t.Helper()
	if !cp.Receipts.Defined() {
		return 0
	}
	b, err := f.st.ReadObject(cp.Receipts, 1<<20)
	if err != nil || len(b) < 4 {
		t.Fatalf("receipts %s: %v", cp.Receipts, err)
	}
	return int(binary.LittleEndian.Uint32(b))
}
