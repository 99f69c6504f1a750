package hosting_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/internal/testutil"
	"github.com/igor-mesh/igor-node/wasmexec"
)

// memHeads is a plain map of head pointers (the node keeps them in files).
type memHeads struct {
	mu sync.Mutex
	m  map[string]cid.Cid
}

func (h *memHeads) SetHead(did string, c cid.Cid) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.m[did] = c
	return nil
}

func (h *memHeads) get(did string) cid.Cid {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.m[did]
}

type fixture struct {
	env   hosting.Env
	st    *contentstore.Store
	heads *memHeads
	logs  *logSink
}

type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (l *logSink) log(short, msg string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, "["+short+"] "+msg)
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	st, err := contentstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	rt, err := wasmexec.NewRuntime(ctx, wasmexec.Config{CacheDir: testutil.WasmCacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(ctx) })
	_, nodeKey, _ := ed25519.GenerateKey(rand.Reader)
	f := &fixture{st: st, heads: &memHeads{m: map[string]cid.Cid{}}, logs: &logSink{}}
	f.env = hosting.Env{
		Runtime: rt, Blocks: st, Heads: f.heads, NodeKey: nodeKey,
		Logger:   slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		AgentLog: f.logs.log,
	}
	return f
}

func (f *fixture) create(t testing.TB, name string, budget int64) (*hosting.Loaded, ed25519.PrivateKey) {
	t.Helper()
	wasmPath, manPath := testagents.Path(t, name)
	wasm, _ := os.ReadFile(wasmPath)
	manJSON, _ := os.ReadFile(manPath)
	man, err := agents.ParseManifest(manJSON)
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := agents.GenerateKey(rand.Reader)
	ctx := context.Background()
	head, err := hosting.Create(ctx, f.env, hosting.CreateParams{Wasm: wasm, Manifest: man, Budget: budget, Price: 1_000_000, AgentKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if head.Checkpoint.Seq != 0 || head.Checkpoint.Tick != 0 || !f.heads.get(head.Checkpoint.Agent).Equals(head.CID) {
		t.Fatalf("checkpoint 0 not committed: %+v", head.Checkpoint)
	}
	a, err := hosting.Load(ctx, f.env, head.CID, key)
	if err != nil {
		t.Fatal(err)
	}
	return a, key
}

func fast(maxTicks uint64, every uint64) hosting.RunOptions {
	return hosting.RunOptions{TickInterval: time.Millisecond, FastInterval: time.Millisecond, CheckpointEvery: every, MaxTicks: maxTicks, Price: -1}
}

func TestRunCheckpointsAndResumes(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, key := f.create(t, "heartbeat", 1_000_000)
	res, err := hosting.Run(ctx, f.env, a, fast(7, 3))
	if err != nil {
		t.Fatal(err)
	}
	if res.Reason != hosting.StopMaxTicks || res.Head.Checkpoint.Tick != 7 || res.Head.Checkpoint.Seq != 3 {
		t.Fatalf("result %+v / %+v", res, res.Head.Checkpoint)
	}
	if b := res.Head.Checkpoint.Budget; b >= 1_000_000 || b <= 0 {
		t.Fatalf("budget %d: 7 ticks must cost something and not everything", b)
	}
	// resume from the committed head in a new Load
	a2, err := hosting.Load(ctx, f.env, f.heads.get(a.DID), key)
	if err != nil {
		t.Fatal(err)
	}
	res, err = hosting.Run(ctx, f.env, a2, fast(2, 5))
	if err != nil {
		t.Fatal(err)
	}
	if res.Head.Checkpoint.Tick != 9 || res.Head.Checkpoint.Seq != 4 {
		t.Fatalf("after resume: %+v", res.Head.Checkpoint)
	}
	lin, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{ExpectDID: a.DID})
	if err != nil {
		t.Fatal(err)
	}
	if len(lin.Entries) != 5 {
		t.Fatalf("lineage has %d checkpoints, want 5", len(lin.Entries))
	}
	f.logs.mu.Lock()
	defer f.logs.mu.Unlock()
	if len(f.logs.lines) != 9 || !strings.HasPrefix(f.logs.lines[8], "["+agents.ShortDID(a.DID)+"] tick=9") {
		t.Fatalf("agent log lines: %q", f.logs.lines)
	}
}

func TestLoadRejectsWrongKey(t *testing.T) {
	f := newFixture(t)
	a, _ := f.create(t, "counter", 1_000_000)
	_, other, _ := agents.GenerateKey(rand.Reader)
	if _, err := hosting.Load(context.Background(), f.env, a.Head.CID, other); !errors.Is(err, hosting.ErrKeyMismatch) {
		t.Fatalf("want ErrKeyMismatch, got %v", err)
	}
}

// A trap in tick 3 discards the instance; it is re-created from the last
// checkpoint (tick 2), traps again, and the runner gives up after
// MaxFailures. The committed lineage stays valid and ends at tick 2.
func TestTrapReplacesInstanceFromCheckpoint(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, _ := f.create(t, "traptick", 1_000_000)
	opts := fast(0, 1)
	opts.MaxFailures = 3
	res, err := hosting.Run(ctx, f.env, a, opts)
	if !errors.Is(err, hosting.ErrTooManyFailures) || !errors.Is(err, wasmexec.ErrTrap) {
		t.Fatalf("want ErrTooManyFailures wrapping ErrTrap, got %v", err)
	}
	if res.Reason != hosting.StopFailed || res.Failures != 3 || res.Head.Checkpoint.Tick != 2 {
		t.Fatalf("failures %d, head tick %d; want 3 failures and head at tick 2", res.Failures, res.Head.Checkpoint.Tick)
	}
	if _, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{}); err != nil {
		t.Fatalf("lineage after failures: %v", err)
	}
	// The budget the failed ticks used stays spent.
	if res.Head.Checkpoint.Budget >= 1_000_000 {
		t.Fatalf("budget %d did not decrease", res.Head.Checkpoint.Budget)
	}
}

func TestRunawayIsStoppedAndNodeKeepsRunning(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, _ := f.create(t, "runaway", 1_000_000)
	opts := fast(0, 1)
	opts.MaxFailures = 1
	start := time.Now()
	_, err := hosting.Run(ctx, f.env, a, opts)
	if !errors.Is(err, wasmexec.ErrDeadline) {
		t.Fatalf("want ErrDeadline, got %v", err)
	}
	limit := time.Duration(a.Manifest.ResourceLimits.TickTimeoutMs)*time.Millisecond + 2*time.Second
	if el := time.Since(start); el > limit {
		t.Fatalf("runaway took %v to stop (deadline %d ms)", el, a.Manifest.ResourceLimits.TickTimeoutMs)
	}
	// the same runtime still runs other agents
	b, _ := f.create(t, "counter", 1_000_000)
	if res, err := hosting.Run(ctx, f.env, b, fast(3, 3)); err != nil || res.Head.Checkpoint.Tick != 3 {
		t.Fatalf("counter after runaway: %v %+v", err, res.Head.Checkpoint)
	}
}

func TestBudgetRunsOutWithFinalCheckpoint(t *testing.T) {
	f := newFixture(t)
	a, _ := f.create(t, "counter", 40) // 40 µc at 1e6 µc/s: every tick costs ≥ 1 µc
	res, err := hosting.Run(context.Background(), f.env, a, fast(0, 1000))
	if !errors.Is(err, hosting.ErrBudgetExhausted) || res.Reason != hosting.StopBudget {
		t.Fatalf("want budget exhaustion, got %v %v", res.Reason, err)
	}
	cp := res.Head.Checkpoint
	if cp.Budget != 0 || cp.Tick == 0 || cp.Tick > 40 {
		t.Fatalf("final checkpoint %+v", cp)
	}
	if _, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func TestCancelCommitsFinalCheckpoint(t *testing.T) {
	f := newFixture(t)
	a, _ := f.create(t, "heartbeat", 1_000_000)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ticks := 0
	env := f.env
	env.AgentLog = func(short, msg string) { // heartbeat logs once per tick
		if ticks++; ticks == 3 {
			cancel()
		}
	}
	res, err := hosting.Run(ctx, env, a, fast(0, 1000))
	if err != nil || res.Reason != hosting.StopContext {
		t.Fatalf("%v %v", res.Reason, err)
	}
	// Every tick that completed before the cancel is in the final checkpoint.
	if res.Ticks < 3 || res.Head.Checkpoint.Tick != res.Ticks {
		t.Fatalf("ran %d ticks, final checkpoint at tick %d", res.Ticks, res.Head.Checkpoint.Tick)
	}
}

// Create from a stored module's CID: no bytes needed, the same module, and
// a runtime that never compiled it (a restarted node) reads it from the
// store; a CID that is not stored is refused with its name.
func TestCreateFromStoredModule(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, _ := f.create(t, "counter", 1_000_000_000)
	_, manPath := testagents.Path(t, "counter")
	manJSON, _ := os.ReadFile(manPath)
	man, err := agents.ParseManifest(manJSON)
	if err != nil {
		t.Fatal(err)
	}
	mod := a.Head.Checkpoint.Module
	_, key, _ := agents.GenerateKey(rand.Reader)
	head, err := hosting.Create(ctx, f.env, hosting.CreateParams{Module: mod, Manifest: man, Budget: 1_000_000, AgentKey: key})
	if err != nil {
		t.Fatal(err)
	}
	if !head.Checkpoint.Module.Equals(mod) || head.Checkpoint.Agent == a.DID {
		t.Fatalf("created %s with module %s; want a new agent of module %s", head.Checkpoint.Agent, head.Checkpoint.Module, mod)
	}
	if _, err := hosting.Load(ctx, f.env, head.CID, key); err != nil {
		t.Fatalf("load the agent created by module CID: %v", err)
	}
	// A fresh runtime has no compiled copy: the module comes from the store.
	rt, err := wasmexec.NewRuntime(ctx, wasmexec.Config{CacheDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	env := f.env
	env.Runtime = rt
	_, key2, _ := agents.GenerateKey(rand.Reader)
	if _, err := hosting.Create(ctx, env, hosting.CreateParams{Module: mod, Manifest: man, Budget: 1_000_000, AgentKey: key2}); err != nil {
		t.Fatalf("create by module CID on a runtime that never compiled it: %v", err)
	}
	missing, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: 0x12, MhLength: -1}.Sum([]byte("no such module"))
	_, key3, _ := agents.GenerateKey(rand.Reader)
	if _, err := hosting.Create(ctx, env, hosting.CreateParams{Module: missing, Manifest: man, Budget: 1_000_000, AgentKey: key3}); err == nil || !strings.Contains(err.Error(), missing.String()) {
		t.Fatalf("create from a module that is not stored: %v", err)
	}
}
