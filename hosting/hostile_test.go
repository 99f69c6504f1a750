package hosting_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/wasmexec"
)

// The hostile-agent matrix (docs/CONTAINMENT.md): every culprit is published
// and hosted on one real node (content store, wazero runtime, hosting
// Service) next to a well-behaved counter agent that ticks throughout. Each
// case asserts the recorded reason, what happened to the culprit, that the
// counter kept ticking with bounded gaps, and that no goroutine leaked.

// hostileRun is the tick loop of the matrix node: fast ticks, a checkpoint
// after every tick, three failures without a commit before giving up.
var hostileRun = hosting.RunOptions{TickInterval: 5 * time.Millisecond, FastInterval: 5 * time.Millisecond,
	CheckpointEvery: 1, MaxFailures: 3, Price: -1}

// culpritTimeout is the tick_timeout_ms of most culprits: short, so the
// matrix stays fast; the deadline is what it tests, not its value.
const culpritTimeout = 100

// logRecord is one record of the node's log (Env.Logger).
type logRecord struct {
	time  time.Time
	msg   string
	attrs map[string]string
}

// recHandler keeps the node's log records so the matrix can assert what was
// recorded about a culprit.
type recHandler struct {
	mu   *sync.Mutex
	recs *[]logRecord
}

func (h recHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h recHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h recHandler) WithGroup(string) slog.Handler            { return h }
func (h recHandler) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{time: r.Time, msg: r.Message, attrs: map[string]string{}}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	h.mu.Lock()
	*h.recs = append(*h.recs, rec)
	h.mu.Unlock()
	return nil
}

type exitRec struct {
	res hosting.Result
	err error
}

// hnode is the node every case of the matrix runs on.
type hnode struct {
	env   hosting.Env
	st    *contentstore.Store
	heads *memHeads
	svc   *hosting.Service

	mu      sync.Mutex
	recs    []logRecord
	lines   map[string][]string    // agent log lines shown, by short DID
	lineAt  map[string][]time.Time // when each line was shown
	ticks   map[string][]time.Time // OnTick times, by DID
	top     map[string]uint64      // highest tick number reported, by DID
	exits   map[string]chan exitRec
	goodDID string
	// droppedAtStart: Runtime.LogLinesDropped when the current case began.
	droppedAtStart uint64
}

func newHNode(t testing.TB, run hosting.RunOptions, slots int) *hnode {
	t.Helper()
	ctx := context.Background()
	n := &hnode{heads: &memHeads{m: map[string]cid.Cid{}}, lines: map[string][]string{}, lineAt: map[string][]time.Time{},
		ticks: map[string][]time.Time{}, top: map[string]uint64{}, exits: map[string]chan exitRec{}}
	st, err := contentstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	n.st = st
	// A compilation cache beside the built modules (bin/ is not in git), so
	// a rerun of the matrix does not recompile two dozen modules.
	root, err := testagents.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(recHandler{mu: &n.mu, recs: &n.recs})
	rt, err := wasmexec.NewRuntime(ctx, wasmexec.Config{CacheDir: filepath.Join(root, "bin", "wazero-cache"), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close(ctx) })
	_, nodeKey, _ := ed25519.GenerateKey(rand.Reader)
	n.env = hosting.Env{Runtime: rt, Blocks: st, Heads: n.heads, NodeKey: nodeKey, Logger: logger,
		AgentLog: func(short, msg string) {
			now := time.Now()
			n.mu.Lock()
			n.lines[short] = append(n.lines[short], msg)
			n.lineAt[short] = append(n.lineAt[short], now)
			n.mu.Unlock()
		}}
	n.svc, err = hosting.NewService(n.env, hosting.ServiceConfig{Slots: slots, Run: run,
		OnTick: func(did string, tick uint64) {
			now := time.Now()
			n.mu.Lock()
			n.ticks[did] = append(n.ticks[did], now)
			n.top[did] = max(n.top[did], tick)
			n.mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.svc.Close(ctx) })
	return n
}

// publish stores and creates an agent (Create: module, manifest, genesis,
// agent_init, checkpoint 0), as `igor-node publish` does.
func (n *hnode) publish(wasm []byte, man *agents.Manifest) (hosting.Head, ed25519.PrivateKey, error) {
	_, key, _ := agents.GenerateKey(rand.Reader)
	head, err := hosting.Create(context.Background(), n.env, hosting.CreateParams{Wasm: wasm, Manifest: man,
		Budget: 1_000_000_000, Price: 1_000_000, AgentKey: key})
	return head, key, err
}

// host leases the agent to the node's service at epoch 1.
func (n *hnode) host(t testing.TB, head hosting.Head, key ed25519.PrivateKey) string {
	t.Helper()
	did := head.Checkpoint.Agent
	ch := make(chan exitRec, 1)
	n.mu.Lock()
	n.exits[did] = ch
	n.mu.Unlock()
	_, err := n.svc.Accept(context.Background(), hosting.Lease{Head: head.CID, Key: key, Epoch: head.Checkpoint.Epoch + 1,
		OnExit: func(res hosting.Result, err error) { ch <- exitRec{res, err} }})
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	return did
}

func (n *hnode) tickTimes(did string) []time.Time {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.ticks[did])
}

func (n *hnode) shown(did string) []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return slices.Clone(n.lines[agents.ShortDID(did)])
}

// records returns the node's log records about did with message msg.
func (n *hnode) records(did, msg string) []logRecord {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []logRecord
	for _, r := range n.recs {
		if r.attrs["agent"] == did && r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

func pollUntil(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// goodGaps checks that the good agent ticked through [from, to): at least
// one tick per 250 ms of the window, and no gap between ticks (or between
// the window's edges and the ticks) above maxGap. It returns the largest gap.
func goodGaps(t *testing.T, times []time.Time, from, to time.Time, maxGap time.Duration) time.Duration {
	t.Helper()
	prev, worst, count := from, time.Duration(0), 0
	for _, tt := range times {
		if tt.Before(from) || !tt.Before(to) {
			continue
		}
		worst = max(worst, tt.Sub(prev))
		prev = tt
		count++
	}
	worst = max(worst, to.Sub(prev))
	if want := int(to.Sub(from) / (250 * time.Millisecond)); count < want {
		t.Errorf("good agent ticked %d times in %v, want ≥ %d", count, to.Sub(from), want)
	}
	if worst > maxGap {
		t.Errorf("good agent went %v without a tick while the culprit misbehaved (limit %v)", worst, maxGap)
	}
	return worst
}

// settleGoroutines waits until the goroutine count is back to base.
func settleGoroutines(t *testing.T, base int) {
	t.Helper()
	end := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(end) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutine leak: %d goroutines, %d before the case\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- culprits ----

type culprit func(t *testing.T) ([]byte, *agents.Manifest)

// variant is agents/examples/hostile built in mode, with limits adjusted.
func hVariant(mode string, tune func(*agents.Manifest)) culprit {
	return func(t *testing.T) ([]byte, *agents.Manifest) {
		return tuneAgent(t, tune)(testagents.VariantBytes(t, "hostile", mode))
	}
}

// example is a plain example agent, with limits adjusted.
func hExample(name string, tune func(*agents.Manifest)) culprit {
	return func(t *testing.T) ([]byte, *agents.Manifest) {
		return tuneAgent(t, tune)(testagents.Bytes(t, name))
	}
}

// raw is generated bytes with an empty manifest.
func hRaw(gen func(t *testing.T) []byte) culprit {
	return func(t *testing.T) ([]byte, *agents.Manifest) {
		m, _ := agents.ParseManifest(nil)
		m.ResourceLimits.TickTimeoutMs = culpritTimeout
		return gen(t), m
	}
}

// tuneAgent parses the manifest, sets the culprit timeout and applies tune.
func tuneAgent(t testing.TB, tune func(*agents.Manifest)) func(wasm, mj []byte) ([]byte, *agents.Manifest) {
	return func(wasm, mj []byte) ([]byte, *agents.Manifest) {
		t.Helper()
		m, err := agents.ParseManifest(mj)
		if err != nil {
			t.Fatal(err)
		}
		m.ResourceLimits.TickTimeoutMs = culpritTimeout
		if tune != nil {
			tune(m)
		}
		// Re-parse, so the tuned manifest is a valid, normalised one.
		if m, err = agents.ParseManifest(m.Canonical()); err != nil {
			t.Fatal(err)
		}
		return wasm, m
	}
}

func hTimeout(ms uint64) func(*agents.Manifest) {
	return func(m *agents.Manifest) { m.ResourceLimits.TickTimeoutMs = ms }
}

func hMemCap(bytes uint64, ms uint64) func(*agents.Manifest) {
	return func(m *agents.Manifest) {
		m.ResourceLimits.MaxMemoryBytes = bytes
		m.ResourceLimits.TickTimeoutMs = ms
	}
}

// hostileCase is one row of the matrix. A culprit is contained either at
// publish (createErr: Create fails, nothing is committed) or while hosted
// (stop and errs: the run ends with that reason and error, the committed
// head is at headTick and verifies). keepRunning culprits are harmless by
// construction; check says what must (not) have happened.
type hostileCase struct {
	name      string
	culprit   culprit
	createErr error
	errs      []error // all must match the run's error (errors.Is)
	msg       string  // in the create error or the recorded Status.Error
	headTick  uint64
	within    time.Duration // the run must end within this (after Accept)
	keepRun   bool
	check     func(t *testing.T, n *hnode, did string, elapsed time.Duration)
}

func TestHostileAgentMatrix(t *testing.T) {
	n := newHNode(t, hostileRun, 4)

	// The good agent: the default counter, hosted for the whole matrix.
	wasm, mj := testagents.Bytes(t, "counter")
	gm, err := agents.ParseManifest(mj)
	if err != nil {
		t.Fatal(err)
	}
	gh, gk, err := n.publish(wasm, gm)
	if err != nil {
		t.Fatal(err)
	}
	n.goodDID = n.host(t, gh, gk)
	pollUntil(t, "the good agent's first ticks", 10*time.Second, func() bool { return len(n.tickTimes(n.goodDID)) >= 3 })

	hostDir := t.TempDir() // the host directory the wasi-fs culprit aims at
	secret := filepath.Join(hostDir, "secret")
	if err := os.WriteFile(secret, []byte("host secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	secretInfo, _ := os.Stat(secret)
	ln, err := net.Listen("tcp", "127.0.0.1:0") // the host socket the wasi-sock culprit dials
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted sync.WaitGroup
	var conns int
	var connMu sync.Mutex
	accepted.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			connMu.Lock()
			conns++
			connMu.Unlock()
			c.Close()
		}
	})

	huge := func(t *testing.T) []byte { // above hosting.MaxModuleBytes, otherwise a valid prefix
		b := make([]byte, hosting.MaxModuleBytes+1)
		copy(b, []byte{0, 'a', 's', 'm', 1, 0, 0, 0})
		return b
	}
	randomBytes := func(t *testing.T) []byte {
		b := make([]byte, 4096)
		rand.Read(b)
		b[0] = 0xff // never the magic by chance
		return b
	}
	hostileWasm := func(t *testing.T) []byte {
		b, _ := testagents.Bytes(t, "hostile")
		return b
	}

	cases := []hostileCase{
		// ---- contained at publish: nothing is committed ----
		{name: "init loop", culprit: hVariant("loop-init", nil), createErr: wasmexec.ErrDeadline, msg: "agent_init ran longer than its 100ms deadline"},
		{name: "init panic", culprit: hVariant("panic-init", nil), createErr: wasmexec.ErrTrap, msg: "agent_init: wasm error: unreachable: guest stderr: panic: hostile: deliberate panic in agent_init"},
		{name: "init log flood", culprit: hVariant("log-init-flood", nil), createErr: wasmexec.ErrDeadline, msg: "agent_init",
			check: func(t *testing.T, n *hnode, did string, el time.Duration) {
				shown := len(n.shown(did))
				if max := wasmexec.DefaultAgentLogBurst + int(el.Seconds()*wasmexec.DefaultAgentLogRate) + 1; shown > max || shown == 0 {
					t.Errorf("init flood: %d lines reached the node log in %v, want 1..%d", shown, el, max)
				}
				if len(n.records(did, "agent log lines dropped by the rate limit")) == 0 {
					t.Error("the dropped lines were not reported")
				}
			}},
		{name: "ungranted import", culprit: hExample("ungranted", nil), createErr: wasmexec.ErrImportNotGranted,
			msg: `import igor.rand_bytes needs capability "rand", which the manifest does not grant`},
		{name: "missing export", culprit: hExample("noexport", nil), createErr: wasmexec.ErrMissingExport, msg: "agent_tick"},
		{name: "empty module", culprit: hRaw(func(*testing.T) []byte { return nil }), createErr: wasmexec.ErrBadModule, msg: "not a WebAssembly binary"},
		{name: "random bytes", culprit: hRaw(randomBytes), createErr: wasmexec.ErrBadModule, msg: "not a WebAssembly binary"},
		{name: "header then garbage", culprit: hRaw(func(t *testing.T) []byte {
			return append([]byte{0, 'a', 's', 'm', 1, 0, 0, 0}, randomBytes(t)...)
		}), createErr: wasmexec.ErrBadModule},
		{name: "wasm version 2", culprit: hRaw(func(*testing.T) []byte { return []byte{0, 'a', 's', 'm', 2, 0, 0, 0} }), createErr: wasmexec.ErrBadModule, msg: "only version 1"},
		{name: "truncated module", culprit: hRaw(func(t *testing.T) []byte { b := hostileWasm(t); return b[:len(b)/2] }), createErr: wasmexec.ErrBadModule},
		{name: "module over 64 MiB", culprit: hRaw(huge), createErr: hosting.ErrModuleTooLarge, msg: "the limit is 67108864"},
		{name: "memory declared 4 GiB", culprit: hRaw(func(*testing.T) []byte { return wmodule(nil, abiBodies(nil), 65536, -1) }), createErr: wasmexec.ErrBadModule},
		{name: "memory above the cap", culprit: func(t *testing.T) ([]byte, *agents.Manifest) {
			_, m := hRaw(randomBytes)(t)
			m.ResourceLimits.MaxMemoryBytes = 1 << 20
			return wmodule(nil, abiBodies(nil), 64, -1), m // 4 MiB initial memory, 1 MiB cap
		}, createErr: wasmexec.ErrOutOfMemory, msg: "initial memory is 4194304 bytes, above max_memory_bytes 1048576"},
		{name: "start function loop", culprit: hRaw(func(*testing.T) []byte {
			return wmodule(nil, append(abiBodies(nil), wfn{body: []byte{0x03, 0x40, 0x0c, 0x00, 0x0b}}), 1, 6)
		}), createErr: wasmexec.ErrDeadline, msg: "start function ran longer than its 100ms deadline"},
		{name: "foreign import", culprit: hRaw(func(*testing.T) []byte {
			return wmodule([]wimp{{"env", "system", []byte{0x7f}, nil}}, abiBodies(nil), 1, -1)
		}), createErr: wasmexec.ErrBadModule, msg: `imports env.system: only modules "igor" and "wasi_snapshot_preview1"`},
		{name: "unknown WASI socket import", culprit: hRaw(func(*testing.T) []byte {
			return wmodule([]wimp{{"wasi_snapshot_preview1", "sock_open", []byte{0x7f, 0x7f, 0x7f}, []byte{0x7f}}}, abiBodies(nil), 1, -1)
		}), createErr: wasmexec.ErrBadModule, msg: "sock_open, which is not a WASI preview 1 function"},

		// ---- contained while hosted: stopped after MaxFailures ----
		{name: "tick loop", culprit: hVariant("loop-tick", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrDeadline},
			msg: "agent_tick ran longer than its 100ms deadline", headTick: 2, within: 10 * time.Second},
		{name: "tick sleep", culprit: hVariant("sleep-tick", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrDeadline},
			msg: "agent_tick ran longer", headTick: 2, within: 10 * time.Second},
		{name: "tick deep recursion", culprit: hVariant("recurse-tick", hMemCap(32<<20, 5000)), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrOutOfMemory},
			msg: "agent_tick: the guest hit its 33554432-byte memory cap", headTick: 2, within: 20 * time.Second},
		{name: "tick proc_exit", culprit: hVariant("exit-tick", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrTrap},
			msg: "agent_tick exited with code 3", headTick: 2, within: 10 * time.Second},
		{name: "tick memory hog", culprit: hExample("memhog", hMemCap(16<<20, 5000)), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrOutOfMemory},
			msg: "agent_tick: the guest hit its 16777216-byte memory cap", headTick: 0, within: 20 * time.Second},
		{name: "tick log flood", culprit: hVariant("log-flood", hTimeout(10000)), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrTrap},
			msg: "tick log full", headTick: 2, within: 30 * time.Second,
			check: func(t *testing.T, n *hnode, did string, el time.Duration) {
				// Three instances, one bucket per agent: one burst in all.
				shown := len(n.shown(did))
				if max := 2 + wasmexec.DefaultAgentLogBurst + int(el.Seconds()*wasmexec.DefaultAgentLogRate) + 1; shown > max {
					t.Errorf("flood: %d lines reached the node log in %v, want ≤ %d", shown, el, max)
				}
				if d := n.env.Runtime.LogLinesDropped() - n.droppedAtStart; int(d)+shown < 3*wasmexec.MaxTickLogEntries {
					t.Errorf("%d lines dropped + %d shown, want ≥ %d (three floods)", d, shown, 3*wasmexec.MaxTickLogEntries)
				}
			}},
		{name: "resume loop", culprit: hVariant("loop-resume", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrDeadline},
			msg: "agent_resume ran longer than its 100ms deadline", headTick: 0, within: 10 * time.Second},
		{name: "resume panic", culprit: hVariant("panic-resume", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrTrap},
			msg: "agent_resume: wasm error: unreachable: guest stderr: panic: hostile: deliberate panic in agent_resume", headTick: 0, within: 10 * time.Second},
		{name: "resume memory growth", culprit: hVariant("grow-resume", hMemCap(32<<20, 5000)), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrOutOfMemory},
			msg: "agent_resume: the guest hit its 33554432-byte memory cap", headTick: 0, within: 20 * time.Second},
		{name: "resume alloc out of bounds", culprit: hVariant("bad-alloc", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrBadPointer},
			msg: "agent_alloc(8) returned 0x7fff0000, outside linear memory", headTick: 0, within: 10 * time.Second},

		// ---- checkpoint failures: rolled back to the last checkpoint ----
		{name: "checkpoint loop", culprit: hVariant("loop-checkpoint", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrDeadline},
			msg: "agent_checkpoint ran longer than its 100ms deadline", headTick: 2, within: 1500 * time.Millisecond},
		{name: "checkpoint panic", culprit: hVariant("panic-checkpoint", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrTrap},
			msg: "agent_checkpoint: wasm error: unreachable: guest stderr: panic: hostile: deliberate panic in agent_checkpoint at tick 3", headTick: 2, within: 1500 * time.Millisecond},
		// A journaled agent's ticks are each committed without state; they
		// are no progress while its agent_checkpoint fails, so it stops too.
		{name: "checkpoint panic, journaled", culprit: hVariant("panic-checkpoint", func(m *agents.Manifest) { m.Journal = true }),
			errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrTrap},
			msg:  "agent_checkpoint: wasm error: unreachable: guest stderr: panic: hostile: deliberate panic in agent_checkpoint", headTick: 5, within: 5 * time.Second},
		{name: "checkpoint out of bounds", culprit: hVariant("oob-checkpoint", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrBadPointer},
			msg: "agent_checkpoint_ptr returned 0xffffffe0", headTick: 2, within: 1500 * time.Millisecond},
		{name: "checkpoint oversize", culprit: hVariant("oversize-checkpoint", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrStateTooLarge},
			msg: "agent_checkpoint returned length 65536 (as i32: 65536), max_state_bytes is 4096", headTick: 2, within: 1500 * time.Millisecond},
		{name: "checkpoint negative length", culprit: hVariant("negative-checkpoint", nil), errs: []error{hosting.ErrTooManyFailures, wasmexec.ErrStateTooLarge},
			msg: "agent_checkpoint returned length 4294967295 (as i32: -1)", headTick: 2, within: 1500 * time.Millisecond},

		// ---- harmless by construction: keeps running ----
		{name: "huge log lines", culprit: hVariant("log-huge", nil), keepRun: true,
			check: func(t *testing.T, n *hnode, did string, _ time.Duration) {
				pollUntil(t, "the huge lines", 10*time.Second, func() bool { return len(n.shown(did)) >= 3 })
				for _, l := range n.shown(did) {
					if len(l) != wasmexec.MaxLogMessage || strings.Trim(l, "x") != "" {
						t.Fatalf("a line of %d bytes reached the node log, want %d", len(l), wasmexec.MaxLogMessage)
					}
				}
			}},
		{name: "WASI filesystem", culprit: hVariant("wasi-fs", func(m *agents.Manifest) { m.Args = hostDir }), keepRun: true,
			check: func(t *testing.T, n *hnode, did string, _ time.Duration) {
				ops := []string{"read /etc/passwd", "read secret", "overwrite secret", "create pwned", "readdir /", "readdir .", "remove secret", "open ../etc/passwd"}
				pollUntil(t, "the fs report", 10*time.Second, func() bool { return len(n.shown(did)) >= len(ops) })
				lines := n.shown(did)
				for k, op := range ops {
					want := "hostile: fs: " + op + ": "
					if !strings.HasPrefix(lines[k], want) || strings.HasSuffix(lines[k], ": ok") || !strings.Contains(lines[k], "errno") {
						t.Errorf("line %d %q: want %q and a WASI errno", k, lines[k], want+"errno …")
					}
				}
				t.Logf("inside the agent:\n%s", strings.Join(lines[:len(ops)], "\n"))
				got, err := os.ReadFile(secret)
				st, _ := os.Stat(secret)
				if err != nil || string(got) != "host secret" || !st.ModTime().Equal(secretInfo.ModTime()) {
					t.Errorf("the host file was touched: %q %v", got, err)
				}
				if entries, _ := os.ReadDir(hostDir); len(entries) != 1 {
					t.Errorf("the agent created files on the host: %v", entries)
				}
			}},
		{name: "WASI sockets", culprit: hVariant("wasi-sock", func(m *agents.Manifest) { m.Args = ln.Addr().String() }), keepRun: true,
			check: func(t *testing.T, n *hnode, did string, _ time.Duration) {
				const want = 1 + 5*3
				pollUntil(t, "the socket report", 10*time.Second, func() bool { return len(n.shown(did)) >= want })
				lines := n.shown(did)
				for _, l := range lines[:want] {
					if !strings.HasPrefix(l, "hostile: sock: ") || strings.HasSuffix(l, ": ok") {
						t.Errorf("%q: a socket call succeeded inside the agent", l)
					}
				}
				t.Logf("inside the agent:\n%s", strings.Join(lines[:want], "\n"))
				connMu.Lock()
				defer connMu.Unlock()
				if conns != 0 {
					t.Errorf("the agent reached the host's listener (%d connections)", conns)
				}
			}},
	}

	var worst time.Duration
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			base := runtime.NumGoroutine()
			wasm, man := c.culprit(t)
			n.droppedAtStart = n.env.Runtime.LogLinesDropped()
			start := time.Now()
			head, key, err := n.publish(wasm, man)
			did := ""
			if key != nil {
				did = agents.DID(key.Public().(ed25519.PublicKey))
			}
			if c.createErr != nil {
				el := time.Since(start)
				if !errors.Is(err, c.createErr) || !strings.Contains(err.Error(), c.msg) {
					t.Fatalf("publish: %v\nwant %v containing %q", err, c.createErr, c.msg)
				}
				t.Logf("contained at publish in %v: %v", el.Round(time.Millisecond), err)
				if n.heads.get(did).Defined() {
					t.Fatal("a head was committed for a module that cannot run")
				}
				if c.check != nil {
					c.check(t, n, did, el)
				}
				worst = max(worst, goodGaps(t, n.tickTimes(n.goodDID), start, time.Now(), time.Second))
				settleGoroutines(t, base)
				return
			}
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			n.host(t, head, key)
			n.mu.Lock()
			exitc := n.exits[did]
			n.mu.Unlock()
			if c.keepRun {
				if c.check != nil {
					c.check(t, n, did, time.Since(start))
				}
				// By tick number, not count: under -race a slow checkpoint may
				// hit its deadline and roll a tick back, to be redone. With a
				// checkpoint after every tick, tick 5 means tick 4 committed.
				pollUntil(t, "a few ticks", 10*time.Second, func() bool {
					n.mu.Lock()
					defer n.mu.Unlock()
					return n.top[did] >= 5
				})
				h, err := n.svc.Stop(context.Background(), did, true)
				if err != nil {
					t.Fatal(err)
				}
				if st, _ := n.svc.Status(did); st.StopReason != hosting.StopContext || st.Error != "" {
					t.Fatalf("harmless agent stopped with %+v", st)
				}
				if _, err := agents.VerifyLineage(h.CID, n.st, agents.VerifyOptions{ExpectDID: did}); err != nil || h.Checkpoint.Tick < 4 {
					t.Fatalf("lineage of a harmless agent: tick %d, %v", h.Checkpoint.Tick, err)
				}
			} else {
				var ex exitRec
				select {
				case ex = <-exitc:
				case <-time.After(c.within):
					st, _ := n.svc.Status(did)
					t.Fatalf("not contained within %v: %+v", c.within, st)
				}
				el := time.Since(start)
				for _, want := range c.errs {
					if !errors.Is(ex.err, want) {
						t.Fatalf("run error %v, want it to match %v", ex.err, want)
					}
				}
				st, _ := n.svc.Status(did)
				if st.Running || st.StopReason != hosting.StopFailed || !strings.Contains(st.Error, c.msg) || st.Error != ex.err.Error() {
					t.Fatalf("recorded status %+v\nwant stop reason %q and error containing %q", st, hosting.StopFailed, c.msg)
				}
				if ex.res.Reason != hosting.StopFailed || ex.res.Failures != hostileRun.MaxFailures {
					t.Fatalf("result %+v, want %d failures", ex.res, hostileRun.MaxFailures)
				}
				// The culprit was re-created from its last checkpoint after
				// each failure: the runner logged every replacement.
				lin, err := agents.VerifyLineage(n.heads.get(did), n.st, agents.VerifyOptions{ExpectDID: did})
				if err != nil {
					t.Fatal(err)
				}
				if cp := lin.Head().Checkpoint; cp.Tick != c.headTick || !ex.res.Head.CID.Equals(lin.Head().CID) {
					t.Fatalf("committed head at tick %d (result head %s), want tick %d", cp.Tick, ex.res.Head.CID, c.headTick)
				}
				t.Logf("contained in %v: %s", el.Round(time.Millisecond), st.Error)
				if c.check != nil {
					c.check(t, n, did, el)
				}
			}
			worst = max(worst, goodGaps(t, n.tickTimes(n.goodDID), start, time.Now(), time.Second))
			if err := n.svc.Forget(did); err != nil {
				t.Fatal(err)
			}
			settleGoroutines(t, base)
		})
	}
	// The good agent ran through the whole matrix, and its lineage verifies.
	if st, _ := n.svc.Status(n.goodDID); !st.Running {
		t.Fatalf("the good agent stopped: %+v", st)
	}
	h, err := n.svc.Stop(context.Background(), n.goodDID, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := agents.VerifyLineage(h.CID, n.st, agents.VerifyOptions{ExpectDID: n.goodDID}); err != nil {
		t.Fatal(err)
	}
	t.Logf("good agent: %d ticks through the matrix, longest gap %v", len(n.tickTimes(n.goodDID)), worst)
	ln.Close()
	accepted.Wait()
}

// ---- a tiny WASM assembler for modules Go cannot produce ----

type wimp struct {
	mod, name       string
	params, results []byte
}

type wfn struct {
	export          string
	params, results []byte
	body            []byte // instructions, without the final end
}

func wuleb(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func wname(s string) []byte { return append(wuleb(uint64(len(s))), s...) }

func wvec(items [][]byte) []byte {
	b := wuleb(uint64(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func wsection(id byte, body []byte) []byte {
	return append(append([]byte{id}, wuleb(uint64(len(body)))...), body...)
}

func wtype(params, results []byte) []byte {
	b := append([]byte{0x60}, wuleb(uint64(len(params)))...)
	b = append(b, params...)
	b = append(b, wuleb(uint64(len(results)))...)
	return append(b, results...)
}

// abiBodies are minimal required exports (empty state) plus agent_alloc;
// extra functions follow at index 6.
func abiBodies(tick []byte) []wfn {
	if tick == nil {
		tick = []byte{0x41, 0x00} // i32.const 0
	}
	zero := []byte{0x41, 0x00}
	return []wfn{
		{export: "agent_init"},
		{export: "agent_tick", results: []byte{0x7f}, body: tick},
		{export: "agent_checkpoint", results: []byte{0x7f}, body: zero},
		{export: "agent_checkpoint_ptr", results: []byte{0x7f}, body: zero},
		{export: "agent_resume", params: []byte{0x7f, 0x7f}},
		{export: "agent_alloc", params: []byte{0x7f}, results: []byte{0x7f}, body: []byte{0x41, 0x80, 0x08}},
	}
}

// wmodule assembles a module: imports, functions (indices after the
// imports), one exported memory of memPages pages, and a start function
// (index; -1 for none).
func wmodule(imps []wimp, fns []wfn, memPages uint64, start int) []byte {
	var types, imports, funcs, exports, codes [][]byte
	for _, im := range imps {
		imports = append(imports, bytes.Join([][]byte{wname(im.mod), wname(im.name), {0x00}, wuleb(uint64(len(types)))}, nil))
		types = append(types, wtype(im.params, im.results))
	}
	for k, f := range fns {
		funcs = append(funcs, wuleb(uint64(len(types))))
		types = append(types, wtype(f.params, f.results))
		if f.export != "" {
			exports = append(exports, bytes.Join([][]byte{wname(f.export), {0x00}, wuleb(uint64(len(imps) + k))}, nil))
		}
		body := append(append([]byte{0x00}, f.body...), 0x0b)
		codes = append(codes, append(wuleb(uint64(len(body))), body...))
	}
	exports = append(exports, append(wname("memory"), 0x02, 0x00))
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	out = append(out, wsection(1, wvec(types))...)
	if len(imports) > 0 {
		out = append(out, wsection(2, wvec(imports))...)
	}
	out = append(out, wsection(3, wvec(funcs))...)
	out = append(out, wsection(5, wvec([][]byte{append([]byte{0x00}, wuleb(memPages)...)}))...)
	out = append(out, wsection(7, wvec(exports))...)
	if start >= 0 {
		out = append(out, wsection(8, wuleb(uint64(len(imps)+start)))...)
	}
	return append(out, wsection(10, wvec(codes))...)
}
