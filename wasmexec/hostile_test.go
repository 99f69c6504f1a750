package wasmexec

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// hostileVariant compiles agents/examples/hostile built in mode.
func hostileVariant(t testing.TB, r *Runtime, mode string) (*Module, *agents.Manifest) {
	t.Helper()
	wasm, mj := testagents.VariantBytes(t, "hostile", mode)
	m, err := r.Compile(bg, "hostile@"+mode, wasm)
	if err != nil {
		t.Fatalf("compile hostile@%s: %v", mode, err)
	}
	man, err := agents.ParseManifest(mj)
	if err != nil {
		t.Fatal(err)
	}
	return m, man
}

// lineCounter collects the log_emit lines the node would show.
type lineCounter struct {
	mu    sync.Mutex
	lines []string
}

func (c *lineCounter) log(msg string) {
	c.mu.Lock()
	c.lines = append(c.lines, msg)
	c.mu.Unlock()
}

func (c *lineCounter) n() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.lines)
}

// A tick that logs 20 000 lines: the node log shows at most the burst plus
// what the rate refills; every line up to the tick log's entry limit is
// still recorded (replay needs them); the tick traps at that limit; the
// drops are counted and reported once.
func TestLogFloodIsRateLimited(t *testing.T) {
	var node syncBuffer
	const rate, burst = 20, 50
	r := newRuntime(t, Config{AgentLogRate: rate, AgentLogBurst: burst, Logger: slog.New(slog.NewTextHandler(&node, nil))})
	m, man := hostileVariant(t, r, "log-flood")
	// Room for 16 384 hostcalls on a loaded machine: the entry limit, not
	// the deadline, must end this tick.
	man = withLimits(man, func(l *agents.ResourceLimits) { l.TickTimeoutMs = 10000 })
	var shown lineCounter
	inst := start(t, r, m, InstanceConfig{Manifest: man, AgentDID: "did:key:zFlood", Log: shown.log}, []byte{0, 0, 0, 0, 0, 0, 0, 0})
	for range 2 { // ticks 1 and 2 behave
		if _, err := inst.Tick(bg); err != nil {
			t.Fatal(err)
		}
	}
	t0 := time.Now()
	res, err := inst.Tick(bg)
	took := time.Since(t0)
	if !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), "tick log full") {
		t.Fatalf("err = %v, want ErrTrap: tick log full", err)
	}
	if len(res.Log.Entries) != MaxTickLogEntries {
		t.Fatalf("recorded %d entries, want %d", len(res.Log.Entries), MaxTickLogEntries)
	}
	attempted := MaxTickLogEntries // 16383 recorded lines + the one that trapped
	maxShown := burst + int(math.Ceil(took.Seconds()*rate)) + 1
	if got := shown.n(); got < burst || got > maxShown {
		t.Fatalf("shown %d lines in %v, want between %d and %d", got, took, burst, maxShown)
	}
	if d := inst.LogLinesDropped(); int(d)+shown.n() != attempted || r.LogLinesDropped() != d {
		t.Fatalf("dropped %d (runtime %d) + shown %d != %d lines logged", d, r.LogLinesDropped(), shown.n(), attempted)
	}
	if out := node.String(); strings.Count(out, "dropped by the rate limit") != 1 || !strings.Contains(out, "agent=did:key:zFlood") {
		t.Fatalf("want exactly one drop report naming the agent:\n%.2000s", out)
	}
	t.Logf("flood: %d lines shown, %d dropped in %v", shown.n(), inst.LogLinesDropped(), took)
}

// Huge lines are truncated to MaxLogMessage, both shown and recorded, and
// the recorded value keeps the length the guest passed.
func TestHugeLogLinesTruncated(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := hostileVariant(t, r, "log-huge")
	var shown lineCounter
	inst := start(t, r, m, InstanceConfig{Manifest: man, Log: shown.log}, nil)
	var res TickResult
	var err error
	for range 3 {
		if res, err = inst.Tick(bg); err != nil {
			t.Fatal(err)
		}
	}
	logs := res.Log.Entries[1:]
	if len(logs) != 3 {
		t.Fatalf("recorded %d log entries, want 3", len(logs))
	}
	for _, o := range logs {
		if o.Kind != Log || o.Value != 1<<20 || len(o.Data) != MaxLogMessage {
			t.Fatalf("entry %v value %d, %d bytes; want log_emit of length 1 MiB truncated to %d", o.Kind, o.Value, len(o.Data), MaxLogMessage)
		}
	}
	for _, l := range shown.lines {
		if len(l) != MaxLogMessage {
			t.Fatalf("shown line of %d bytes, want %d", len(l), MaxLogMessage)
		}
	}
}

// Logging outside a tick is not recorded, so only the rate limit bounds it:
// an init that floods until its deadline shows at most burst + rate × deadline.
func TestInitLogFloodBounded(t *testing.T) {
	const rate, burst = 100, 10
	r := newRuntime(t, Config{AgentLogRate: rate, AgentLogBurst: burst})
	m, man := hostileVariant(t, r, "log-init-flood")
	var shown lineCounter
	_, err := r.Instantiate(bg, m, InstanceConfig{Manifest: man, Log: shown.log})
	if !errors.Is(err, ErrDeadline) || !strings.Contains(err.Error(), "agent_init") {
		t.Fatalf("err = %v, want ErrDeadline naming agent_init", err)
	}
	deadline := time.Duration(man.ResourceLimits.TickTimeoutMs) * time.Millisecond
	if max := burst + int(2*deadline.Seconds()*rate) + 1; shown.n() > max || r.LogLinesDropped() == 0 {
		t.Fatalf("shown %d lines (max %d), dropped %d", shown.n(), max, r.LogLinesDropped())
	}
}

func TestLogLimitConfig(t *testing.T) {
	for _, cfg := range []Config{{AgentLogRate: -1}, {AgentLogRate: math.NaN()}, {AgentLogRate: math.Inf(1)}, {AgentLogBurst: -5}} {
		if _, err := NewRuntime(context.Background(), cfg); !errors.Is(err, ErrBadConfig) {
			t.Errorf("%+v: err = %v, want ErrBadConfig", cfg, err)
		}
	}
	r := newRuntime(t, Config{})
	if r.logRate != DefaultAgentLogRate || r.logBurst != DefaultAgentLogBurst {
		t.Fatalf("defaults %v/%d", r.logRate, r.logBurst)
	}
}

// withStart inserts a start section (section 8) calling function fn before
// the code section of an assembled module.
func withStart(wasm []byte, fn int) []byte {
	pos := 8
	for pos < len(wasm) {
		id := wasm[pos]
		size, n := uvarint(wasm[pos+1:])
		if id == 10 {
			break
		}
		pos += 1 + n + int(size)
	}
	return cat(wasm[:pos], section(8, uleb(uint64(fn))), wasm[pos:])
}

func uvarint(b []byte) (uint64, int) {
	var v uint64
	for i, c := range b {
		v |= uint64(c&0x7f) << (7 * i)
		if c < 0x80 {
			return v, i + 1
		}
	}
	return 0, len(b)
}

// A module whose WASM start function never returns is stopped at the
// deadline during instantiation and reported as a deadline.
func TestStartFunctionLoop(t *testing.T) {
	r := newRuntime(t, Config{})
	loop := []byte{0x03, 0x40, 0x0c, 0x00, 0x0b} // loop br 0 end
	fns := append(abiFuncs(nil, 0, 0), wfunc{body: loop})
	wasm := withStart(assemble(nil, fns, 1), len(fns)-1)
	m, err := r.Compile(bg, "startloop", wasm)
	if err != nil {
		t.Fatal(err)
	}
	man := &agents.Manifest{ResourceLimits: agents.ResourceLimits{TickTimeoutMs: 50}}
	t0 := time.Now()
	_, err = r.Instantiate(bg, m, InstanceConfig{Manifest: man})
	t.Logf("start loop: %v after %v", err, time.Since(t0))
	if !errors.Is(err, ErrDeadline) || !strings.Contains(err.Error(), "start function") {
		t.Fatalf("err = %v, want ErrDeadline naming the start function", err)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Fatalf("took %v", took)
	}
}

// A start function that traps is ErrTrap, not a bad module.
func TestStartFunctionTrap(t *testing.T) {
	r := newRuntime(t, Config{})
	fns := append(abiFuncs(nil, 0, 0), wfunc{body: []byte{0x00}}) // unreachable
	m, err := r.Compile(bg, "starttrap", withStart(assemble(nil, fns, 1), len(fns)-1))
	if err != nil {
		t.Fatal(err)
	}
	_, err = r.Instantiate(bg, m, InstanceConfig{Manifest: &agents.Manifest{}})
	if !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), "start function trapped") || !strings.Contains(err.Error(), "unreachable") {
		t.Fatalf("err = %v, want ErrTrap: start function trapped (unreachable)", err)
	}
}

// Instances of one agent share its log bucket: a re-created instance gets
// no fresh burst. Idle buckets are dropped once refilled.
func TestLogBucketPerAgent(t *testing.T) {
	const burst = 20
	r := newRuntime(t, Config{AgentLogRate: 1000, AgentLogBurst: burst})
	m, man := hostileVariant(t, r, "log-init-flood")
	var shown lineCounter
	for range 3 {
		if _, err := r.Instantiate(bg, m, InstanceConfig{Manifest: man, AgentDID: "did:key:zSame", Log: shown.log}); !errors.Is(err, ErrDeadline) {
			t.Fatalf("err = %v", err)
		}
	}
	deadline := time.Duration(man.ResourceLimits.TickTimeoutMs) * time.Millisecond
	// Three instances, one bucket: one burst plus the refill over ~3 deadlines.
	if max := burst + int(1000*6*deadline.Seconds()); shown.n() > max {
		t.Fatalf("shown %d lines over 3 instances, want ≤ %d", shown.n(), max)
	}
	r.mu.Lock()
	idle := len(r.idleLimiters)
	r.mu.Unlock()
	if idle != 1 {
		t.Fatalf("%d idle buckets, want 1", idle)
	}
	r.mu.Lock()
	l := r.limiters["did:key:zSame"]
	r.mu.Unlock()
	for end := time.Now().Add(5 * time.Second); !l.full(time.Now()); { // poll until it refills
		if time.Now().After(end) {
			t.Fatal("bucket never refilled")
		}
		time.Sleep(time.Millisecond)
	}
	hb, hman := example(t, r, "counter")
	inst := start(t, r, hb, InstanceConfig{Manifest: hman, AgentDID: "did:key:zOther"}, nil)
	defer inst.Close(bg)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.limiters["did:key:zSame"]; ok || len(r.idleLimiters) != 0 {
		t.Fatalf("refilled idle bucket not dropped: %d idle", len(r.idleLimiters))
	}
}

// Without a mode the hostile fixture is a well-behaved counter: it ticks,
// checkpoints its tick count and resumes from it.
func TestHostileDefaultBehaves(t *testing.T) {
	r := newRuntime(t, Config{})
	wasm, mj := testagents.Bytes(t, "hostile")
	m, err := r.Compile(bg, "hostile", wasm)
	if err != nil {
		t.Fatal(err)
	}
	man, err := agents.ParseManifest(mj)
	if err != nil {
		t.Fatal(err)
	}
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	for range 5 {
		if _, err := inst.Tick(bg); err != nil {
			t.Fatal(err)
		}
	}
	st, err := inst.Checkpoint(bg)
	if err != nil || len(st) != 8 || st[0] != 5 {
		t.Fatalf("checkpoint %x, %v; want tick count 5", st, err)
	}
	again := start(t, r, m, InstanceConfig{Manifest: man}, st)
	if _, err := again.Tick(bg); err != nil {
		t.Fatal(err)
	}
	if st, err := again.Checkpoint(bg); err != nil || st[0] != 6 {
		t.Fatalf("after resume: %x, %v", st, err)
	}
}
