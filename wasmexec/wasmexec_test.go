package wasmexec

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/internal/testutil"
)

var bg = context.Background()

func TestCompileOncePerKey(t *testing.T) {
	r := newRuntime(t, Config{})
	wasm, _ := testagents.Bytes(t, "counter")
	const n = 8
	mods := make([]*Module, n)
	var wg sync.WaitGroup
	for k := range n {
		wg.Go(func() {
			m, err := r.Compile(bg, "bafy-counter", wasm)
			if err != nil {
				t.Error(err)
			}
			mods[k] = m
		})
	}
	wg.Wait()
	for k := 1; k < n; k++ {
		if mods[k] != mods[0] || mods[k] == nil {
			t.Fatalf("caller %d got module %p, caller 0 got %p: want one shared module", k, mods[k], mods[0])
		}
	}
	other, err := r.Compile(bg, "bafy-counter-2", wasm)
	if err != nil {
		t.Fatal(err)
	}
	if other == mods[0] {
		t.Fatal("a different key returned the same module")
	}
	want := []string{"igor.args_get", "igor.log_emit"}
	var got []string
	for _, imp := range mods[0].Imports() {
		if strings.HasPrefix(imp, "igor.") {
			got = append(got, imp)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("igor imports %v, want %v", got, want)
	}
}

// Compiled finds a module only once its compilation succeeded, under its
// own key; a failed compilation is not cached.
func TestCompiledLookup(t *testing.T) {
	r := newRuntime(t, Config{})
	wasm, _ := testagents.Bytes(t, "counter")
	if _, ok := r.Compiled("bafy-lookup"); ok {
		t.Fatal("Compiled found a module nobody compiled")
	}
	m, err := r.Compile(bg, "bafy-lookup", wasm)
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := r.Compiled("bafy-lookup"); !ok || got != m {
		t.Fatalf("Compiled after Compile: %p %v, want %p", got, ok, m)
	}
	if _, ok := r.Compiled("bafy-other"); ok {
		t.Fatal("Compiled found a module under another key")
	}
	if _, err := r.Compile(bg, "bafy-bad", []byte("not wasm")); err == nil {
		t.Fatal("compiled garbage")
	}
	if _, ok := r.Compiled("bafy-bad"); ok {
		t.Fatal("a failed compilation is cached")
	}
}

func TestCompileRejects(t *testing.T) {
	r := newRuntime(t, Config{})
	noexport, _ := testagents.Bytes(t, "noexport")
	good := abiFuncs(nil, 1024, 0)
	withTick := func(tick wfunc) []wfunc {
		fns := append([]wfunc(nil), good...)
		fns[1] = tick
		return fns
	}
	for _, tc := range []struct {
		name string
		wasm []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrBadModule, "not a WebAssembly binary"},
		{"text", []byte("hello, this is not wasm"), ErrBadModule, "not a WebAssembly binary"},
		{"version", []byte{0, 'a', 's', 'm', 2, 0, 0, 0}, ErrBadModule, "version"},
		{"truncated", noexport[:len(noexport)/2], ErrBadModule, ""},
		{"noexport example", noexport, ErrMissingExport, "missing required export: agent_tick"},
		{"no memory", assemble(nil, good, -1), ErrMissingExport, "missing required export: memory"},
		{"tick signature", assemble(nil, withTick(wfunc{export: "agent_tick", params: []byte{tI64}}), 1),
			ErrBadModule, "export agent_tick has signature (i64) -> (), want () -> (i32)"},
		{"foreign import", assemble([]wimport{{mod: "env", name: "f"}}, good, 1), ErrBadModule, `imports env.f: only modules "igor" and "wasi_snapshot_preview1"`},
		{"unknown igor import", assemble([]wimport{{mod: "igor", name: "kv_get"}}, good, 1), ErrBadModule, "igor.kv_get, which this node does not provide"},
		{"igor signature", assemble([]wimport{{mod: "igor", name: "clock_now", results: []byte{tI32}}}, good, 1), ErrBadModule, "igor.clock_now with signature () -> (i32), want () -> (i64)"},
		{"unknown wasi import", assemble([]wimport{{mod: "wasi_snapshot_preview1", name: "sock_open"}}, good, 1), ErrBadModule, "not a WASI preview 1 function"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := r.Compile(bg, "key-"+tc.name, tc.wasm)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.msg)
			}
		})
	}
	// A failed compilation is not cached: the same key compiles once fixed.
	if _, err := r.Compile(bg, "key-noexport example", assemble(nil, good, 1)); err != nil {
		t.Fatalf("recompile under a failed key: %v", err)
	}
	// agent_tick may return nothing.
	m, err := r.Compile(bg, "void-tick", assemble(nil, withTick(wfunc{export: "agent_tick"}), 1))
	if err != nil {
		t.Fatal(err)
	}
	inst := start(t, r, m, InstanceConfig{Manifest: &agents.Manifest{}}, nil)
	if res, err := inst.Tick(bg); err != nil || res.More {
		t.Fatalf("void tick: %+v, %v", res, err)
	}
}

func TestImportNotGranted(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "ungranted")
	_, err := r.Instantiate(bg, m, InstanceConfig{Manifest: man})
	want := `import igor.rand_bytes needs capability "rand", which the manifest does not grant`
	if !errors.Is(err, ErrImportNotGranted) || !strings.Contains(err.Error(), want) {
		t.Fatalf("err = %v, want ErrImportNotGranted: %s", err, want)
	}
	// Granting it makes the same module loadable.
	man.Capabilities["rand"] = agents.CapabilitySpec{Version: 1}
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	if _, err := inst.Tick(bg); err != nil {
		t.Fatal(err)
	}
}

func TestRunawayStoppedAtDeadline(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "runaway")
	deadline := time.Duration(man.ResourceLimits.TickTimeoutMs) * time.Millisecond
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	t0 := time.Now()
	res, err := inst.Tick(bg)
	took := time.Since(t0)
	if !errors.Is(err, ErrDeadline) || !strings.Contains(err.Error(), "agent_tick") || !strings.Contains(err.Error(), deadline.String()) {
		t.Fatalf("err = %v, want ErrDeadline naming agent_tick and %v", err, deadline)
	}
	if took < deadline || took > deadline+500*time.Millisecond {
		t.Fatalf("tick took %v, want within [%v, %v]", took, deadline, deadline+500*time.Millisecond)
	}
	if res.Elapsed < deadline {
		t.Fatalf("Elapsed %v < deadline %v", res.Elapsed, deadline)
	}
	t.Logf("runaway stopped after %v (deadline %v)", took, deadline)
	if !errors.Is(inst.Err(), ErrDeadline) {
		t.Fatalf("Err() = %v, want ErrDeadline", inst.Err())
	}
	if _, err := inst.Checkpoint(bg); !errors.Is(err, ErrInstanceDead) || !errors.Is(err, ErrDeadline) {
		t.Fatalf("checkpoint after death: %v, want ErrInstanceDead wrapping ErrDeadline", err)
	}
	// The runtime is still usable.
	hm, hman := example(t, r, "heartbeat")
	hb := start(t, r, hm, InstanceConfig{Manifest: hman}, nil)
	if _, err := hb.Tick(bg); err != nil {
		t.Fatalf("heartbeat after runaway: %v", err)
	}
}

func TestCloseStopsRunningCall(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "runaway")
	man = withLimits(man, func(l *agents.ResourceLimits) { l.TickTimeoutMs = 10000 })
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	time.AfterFunc(50*time.Millisecond, func() { inst.Close(bg) })
	t0 := time.Now()
	_, err := inst.Tick(bg)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if took := time.Since(t0); took > 2*time.Second {
		t.Fatalf("Close took %v to stop the tick", took)
	}
}

func TestCallerContextCancel(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "runaway")
	man = withLimits(man, func(l *agents.ResourceLimits) { l.TickTimeoutMs = 10000 })
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	ctx, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	_, err := inst.Tick(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDeadline) {
		t.Fatalf("err = %v, want the caller's context.DeadlineExceeded (not ErrDeadline)", err)
	}
	if inst.Err() == nil {
		t.Fatal("instance alive after an interrupted call")
	}
}

func TestMemhogStoppedAtCap(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "memhog")
	for _, capBytes := range []uint64{4 << 20, agents.MaxMemoryBytes} {
		t.Run(fmt.Sprintf("cap=%dMiB", capBytes>>20), func(t *testing.T) {
			mm := withLimits(man, func(l *agents.ResourceLimits) { l.MaxMemoryBytes = capBytes })
			inst := start(t, r, m, InstanceConfig{Manifest: mm}, nil)
			_, err := inst.Tick(bg)
			if !errors.Is(err, ErrOutOfMemory) && !(errors.Is(err, ErrTrap) && strings.Contains(err.Error(), "memory")) {
				t.Fatalf("err = %v, want ErrOutOfMemory", err)
			}
			if got := inst.MemoryBytes(); got > capBytes || got < capBytes/2 {
				t.Fatalf("memory %d bytes, want near and at most the cap %d", got, capBytes)
			}
			t.Logf("memhog: %v; memory %d bytes", err, inst.MemoryBytes())
			if _, err := inst.Tick(bg); !errors.Is(err, ErrInstanceDead) {
				t.Fatalf("tick after OOM: %v", err)
			}
		})
	}
	// An initial memory above the cap is refused before anything runs.
	mm := withLimits(man, func(l *agents.ResourceLimits) { l.MaxMemoryBytes = 1 << 20 })
	if _, err := r.Instantiate(bg, m, InstanceConfig{Manifest: mm}); !errors.Is(err, ErrOutOfMemory) || !strings.Contains(err.Error(), "initial memory") {
		t.Fatalf("1 MiB cap: %v, want ErrOutOfMemory about the initial memory", err)
	}
}

func TestTraptick(t *testing.T) {
	var logBuf syncBuffer
	r := newRuntime(t, Config{Logger: slog.New(slog.NewTextHandler(&logBuf, nil))})
	m, man := example(t, r, "traptick")
	inst := start(t, r, m, InstanceConfig{Manifest: man, AgentDID: "did:key:zTrap"}, nil)
	for tick := 1; tick <= 2; tick++ {
		if _, err := inst.Tick(bg); err != nil {
			t.Fatalf("tick %d: %v", tick, err)
		}
	}
	_, err := inst.Tick(bg)
	if !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), "agent_tick") ||
		!strings.Contains(err.Error(), "deliberate panic in tick 3") {
		t.Fatalf("tick 3: %v, want ErrTrap naming agent_tick and quoting the panic", err)
	}
	t.Logf("tick 3: %v", err)
	// The guest's stderr reached the node's log, attributed to the agent.
	if out := logBuf.String(); !strings.Contains(out, "agent=did:key:zTrap stream=stderr") || !strings.Contains(out, "deliberate panic in tick 3") {
		t.Fatalf("guest stderr not in the log:\n%s", out)
	}
	first := inst.Err()
	if !errors.Is(first, ErrTrap) {
		t.Fatalf("Err() = %v", first)
	}
	for range 2 {
		_, err := inst.Tick(bg)
		if !errors.Is(err, ErrInstanceDead) || !errors.Is(err, ErrTrap) {
			t.Fatalf("later tick: %v, want ErrInstanceDead wrapping ErrTrap", err)
		}
		if inst.Err() != first {
			t.Fatal("Err() changed after death")
		}
	}
	if err := inst.Resume(bg, nil); !errors.Is(err, ErrInstanceDead) {
		t.Fatalf("resume after death: %v", err)
	}
}

func TestProcExit(t *testing.T) {
	r := newRuntime(t, Config{})
	imps := []wimport{{mod: "wasi_snapshot_preview1", name: "proc_exit", params: []byte{tI32}}}
	m, err := r.Compile(bg, "exit7", assemble(imps, abiFuncs(cat(i32c(7), call(0), i32c(0)), 0, 0), 1))
	if err != nil {
		t.Fatal(err)
	}
	inst := start(t, r, m, InstanceConfig{Manifest: &agents.Manifest{}}, nil)
	if _, err := inst.Tick(bg); !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), "agent_tick exited with code 7") {
		t.Fatalf("err = %v, want ErrTrap: agent_tick exited with code 7", err)
	}
}

func TestTrapinit(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "trapinit")
	_, err := r.Instantiate(bg, m, InstanceConfig{Manifest: man})
	if !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), "agent_init") || !strings.Contains(err.Error(), "deliberate panic in Init") {
		t.Fatalf("err = %v, want ErrTrap naming agent_init and the panic", err)
	}
}

func TestBigstateAndBadptr(t *testing.T) {
	r := newRuntime(t, Config{})
	for _, tc := range []struct {
		agent, export string
		want          error
	}{
		{"bigstate", "agent_checkpoint", ErrStateTooLarge},
		{"badptr", "agent_checkpoint_ptr", ErrBadPointer},
	} {
		t.Run(tc.agent, func(t *testing.T) {
			m, man := example(t, r, tc.agent)
			inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
			if _, err := inst.Tick(bg); err != nil {
				t.Fatal(err)
			}
			_, err := inst.Checkpoint(bg)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.export) {
				t.Fatalf("err = %v, want %v naming %s", err, tc.want, tc.export)
			}
			if !errors.Is(inst.Err(), tc.want) {
				t.Fatalf("Err() = %v", inst.Err())
			}
		})
	}
}

// fixedClock returns a Clock that advances by step on every read.
func fixedClock(start, step int64) func() int64 {
	var now atomic.Int64
	now.Store(start - step)
	return func() int64 { return now.Add(step) }
}

func TestHeartbeatObservations(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "heartbeat")
	var logs []string
	randSrc := rand.NewChaCha8([32]byte{1})
	inst := start(t, r, m, InstanceConfig{
		Manifest: man, AgentDID: "did:key:test",
		Clock: fixedClock(1_700_000_000_000_000_000, 1000),
		Rand:  randSrc,
		Log:   func(s string) { logs = append(logs, s) },
	}, nil)
	// Instantiate read the clock once (the load instant): ticks start after it.
	for tick := 1; tick <= 3; tick++ {
		res, err := inst.Tick(bg)
		if err != nil {
			t.Fatal(err)
		}
		e := res.Log.Entries
		if len(e) != 4 {
			t.Fatalf("tick %d: %d entries %+v, want tick_time, clock, rand, log", tick, len(e), e)
		}
		base := int64(1_700_000_000_000_000_000) + int64(2*tick-1)*1000
		if e[0].Kind != TickTime || e[0].Value != base {
			t.Fatalf("entry 0 = %+v, want tick_time %d", e[0], base)
		}
		if e[1].Kind != Clock || e[1].Value != base+1000 {
			t.Fatalf("entry 1 = %+v, want clock %d", e[1], base+1000)
		}
		if e[2].Kind != Rand || e[2].Value != 0 || len(e[2].Data) != 8 {
			t.Fatalf("entry 2 = %+v, want 8 random bytes", e[2])
		}
		wantLog := fmt.Sprintf("tick=%d age=0s", tick)
		if e[3].Kind != Log || string(e[3].Data) != wantLog || e[3].Value != int64(len(wantLog)) {
			t.Fatalf("entry 3 = %+v, want log %q", e[3], wantLog)
		}
		if logs[len(logs)-1] != wantLog {
			t.Fatalf("Log callback got %q, want %q", logs[len(logs)-1], wantLog)
		}
		if res.Elapsed <= 0 {
			t.Fatal("no elapsed time")
		}
		// The encoded log round-trips.
		dec, err := DecodeTickLog(res.Log.Encode())
		if err != nil || !bytes.Equal(dec.Encode(), res.Log.Encode()) {
			t.Fatalf("tick log round trip: %v", err)
		}
	}
}

// recordTicks runs n ticks and returns, per tick, the pre-state, log and
// post-state.
func recordTicks(t *testing.T, inst *Instance, n int) (pre [][]byte, logs []TickLog, post [][]byte) {
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

func TestReplayReproducesState(t *testing.T) {
	r := newRuntime(t, Config{})
	for _, tc := range []struct {
		agent string
		args  string
	}{
		{"heartbeat", ""},
		{"counter", ""},
		{"counter", "state_size=20000"},
	} {
		t.Run(tc.agent+tc.args, func(t *testing.T) {
			m, man := example(t, r, tc.agent)
			if tc.args != "" {
				c := *man
				c.Args = tc.args
				man = &c
			}
			inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
			pre, logs, post := recordTicks(t, inst, 5)
			for k := range pre {
				got, err := r.Replay(bg, m, InstanceConfig{Manifest: man}, pre[k], logs[k])
				if err != nil {
					t.Fatalf("replay tick %d: %v", k+1, err)
				}
				if !bytes.Equal(got, post[k]) {
					t.Fatalf("replay of tick %d: post-state differs (%d vs %d bytes)", k+1, len(got), len(post[k]))
				}
			}
			if bytes.Equal(pre[4], post[4]) {
				t.Fatal("the tick did not change state; the replay check proves nothing")
			}
		})
	}
}

func TestReplayDivergence(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "heartbeat")
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	pre, logs, post := recordTicks(t, inst, 2)
	log := logs[1]
	clone := func() TickLog {
		var l TickLog
		for _, e := range log.Entries {
			e.Data = bytes.Clone(e.Data)
			l.Entries = append(l.Entries, e)
		}
		return l
	}
	for _, tc := range []struct {
		name   string
		tamper func(*TickLog)
		msg    string
	}{
		{"missing entry", func(l *TickLog) { l.Entries = l.Entries[:3] }, "the guest called log_emit but the tick log has only 3 entries"},
		{"extra entry", func(l *TickLog) { l.Entries = append(l.Entries, Observation{Kind: Clock, Value: 1}) }, "1 of 5 log entries unused (next: clock_now"},
		{"swapped kinds", func(l *TickLog) { l.Entries[1], l.Entries[2] = l.Entries[2], l.Entries[1] }, "the guest called clock_now but the tick log has rand_bytes"},
		{"log text", func(l *TickLog) { l.Entries[3].Data[0] = 'X' }, "log_emit"},
		{"rand length", func(l *TickLog) { l.Entries[2].Data = l.Entries[2].Data[:4] }, "rand_bytes asked for 8 bytes, the tick log has 4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := clone()
			tc.tamper(&l)
			_, err := r.Replay(bg, m, InstanceConfig{Manifest: man}, pre[1], l)
			if !errors.Is(err, ErrDivergence) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err = %v, want ErrDivergence containing %q", err, tc.msg)
			}
		})
	}
	// Different observations of the right shape replay fine but yield a
	// different state: the caller's byte comparison catches that.
	l := clone()
	l.Entries[2].Data[0] ^= 0xff
	got, err := r.Replay(bg, m, InstanceConfig{Manifest: man}, pre[1], l)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(got, post[1]) {
		t.Fatal("tampered random bytes gave the recorded post-state")
	}
	// A malformed log is rejected up front.
	if _, err := r.Replay(bg, m, InstanceConfig{Manifest: man}, pre[1], TickLog{}); !errors.Is(err, ErrBadTickLog) {
		t.Fatalf("empty log: %v", err)
	}
}

func TestResumeRoundTrip(t *testing.T) {
	r := newRuntime(t, Config{})
	for _, agent := range []string{"heartbeat", "counter"} {
		t.Run(agent, func(t *testing.T) {
			m, man := example(t, r, agent)
			a := start(t, r, m, InstanceConfig{Manifest: man}, nil)
			for range 3 {
				if _, err := a.Tick(bg); err != nil {
					t.Fatal(err)
				}
			}
			ck, err := a.Checkpoint(bg)
			if err != nil || len(ck) == 0 {
				t.Fatalf("checkpoint: %d bytes, %v", len(ck), err)
			}
			b := start(t, r, m, InstanceConfig{Manifest: man}, ck)
			ck2, err := b.Checkpoint(bg)
			if err != nil || !bytes.Equal(ck, ck2) {
				t.Fatalf("resumed checkpoint differs: %v", err)
			}
			// Both continue identically where the agent is deterministic.
			if _, err := b.Tick(bg); err != nil {
				t.Fatal(err)
			}
		})
	}
	m, man := example(t, r, "heartbeat") // max_state_bytes 4096
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	big := make([]byte, man.ResourceLimits.MaxStateBytes+1)
	if err := inst.Resume(bg, big); !errors.Is(err, ErrStateTooLarge) {
		t.Fatalf("oversized resume: %v", err)
	}
	if inst.Err() != nil {
		t.Fatal("an oversized resume state must not kill the instance")
	}
	// Resume's functions are released after it: a second call is refused,
	// and the instance ticks on.
	if err := inst.Resume(bg, nil); !errors.Is(err, ErrResumed) {
		t.Fatalf("second resume: %v", err)
	}
	if _, err := inst.Tick(bg); err != nil || inst.Err() != nil {
		t.Fatalf("tick after a refused second resume: %v", err)
	}
}

func TestWASIClockIsTickTime(t *testing.T) {
	r := newRuntime(t, Config{})
	m, err := r.Compile(bg, "probe", probe(t))
	if err != nil {
		t.Fatal(err)
	}
	man := &agents.Manifest{Capabilities: map[string]agents.CapabilitySpec{agents.CapArgs: {Version: 1}}, Args: "wasiclock"}
	const load = int64(1_600_000_000_123_456_789)
	const step = int64(1_000_000_000)
	inst := start(t, r, m, InstanceConfig{Manifest: man, Clock: fixedClock(load, step)}, nil)
	var tickTimes []int64
	for range 3 {
		res, err := inst.Tick(bg)
		if err != nil {
			t.Fatal(err)
		}
		tickTimes = append(tickTimes, res.Log.Entries[0].Value)
	}
	st, err := inst.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	if got := int64(binary.LittleEndian.Uint64(st)); got != load {
		t.Fatalf("time.Now() in agent_init = %d, want the load instant %d", got, load)
	}
	for k, tt := range tickTimes {
		rec := st[8+24*k:]
		a, b := int64(binary.LittleEndian.Uint64(rec)), int64(binary.LittleEndian.Uint64(rec[8:]))
		mono := int64(binary.LittleEndian.Uint64(rec[16:]))
		if a != tt || b != tt {
			t.Fatalf("tick %d: time.Now() read %d and %d, want the tick time %d twice", k+1, a, b, tt)
		}
		if mono != tt-load {
			t.Fatalf("tick %d: monotonic time since init %d, want %d", k+1, mono, tt-load)
		}
	}
}

// TestWASIRandomDenied checks what docs/ABI.md promises: a Go guest starts
// although random_get fails, and crypto/rand in a guest fails loudly.
func TestWASIRandomDenied(t *testing.T) {
	r := newRuntime(t, Config{})
	m, err := r.Compile(bg, "probe", probe(t))
	if err != nil {
		t.Fatal(err)
	}
	man := &agents.Manifest{Capabilities: map[string]agents.CapabilitySpec{agents.CapArgs: {Version: 1}}, Args: "cryptorand"}
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil) // _initialize + agent_init ran
	_, err = inst.Tick(bg)
	if !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), "crypto/rand") {
		t.Fatalf("crypto/rand in a guest: %v, want ErrTrap quoting crypto/rand's failure", err)
	}
	t.Logf("observed: %v", err)
}

func TestHostcallEdges(t *testing.T) {
	r := newRuntime(t, Config{})
	imps := []wimport{
		{mod: "igor", name: "rand_bytes", params: []byte{tI32, tI32}, results: []byte{tI32}},
		{mod: "igor", name: "log_emit", params: []byte{tI32, tI32}},
		{mod: "igor", name: "args_get", params: []byte{tI32, tI32}, results: []byte{tI32}},
		{mod: "igor", name: "clock_now", results: []byte{tI64}},
	}
	const randF, logF, argsF, clockF = 0, 1, 2, 3
	tick := cat(
		i32c(1024), i32c(2048), i32c(MaxRandBytes+1), call(randF), opI32Store, // -2
		i32c(1028), i32c(-256), i32c(16), call(randF), opI32Store, // -4
		i32c(1032), i32c(2048), i32c(8), call(randF), opI32Store, // 0, bytes at 2048
		i32c(4096), i32c(5000), call(logF), // truncated to 4096
		i32c(-256), i32c(10), call(logF), // outside memory
		i32c(1036), i32c(3000), i32c(4), call(argsF), opI32Store, // copies 4 of 11 bytes
		i32c(1040), call(clockF), opI64Store,
		i32c(1),
	)
	msg := bytes.Repeat([]byte("0123456789"), 500)
	wasm := assemble(imps, abiFuncs(tick, 1024, 3000-1024+11), 1, wdata{4096, msg})
	m, err := r.Compile(bg, "edges", wasm)
	if err != nil {
		t.Fatal(err)
	}
	all := map[string]agents.CapabilitySpec{}
	for _, c := range agents.KnownCapabilities() {
		all[c] = agents.CapabilitySpec{Version: 1}
	}
	man := &agents.Manifest{Capabilities: all, Args: "hello world"}
	var logs []string
	inst := start(t, r, m, InstanceConfig{Manifest: man, Clock: fixedClock(100, 10), Log: func(s string) { logs = append(logs, s) }}, nil)
	pre, err := inst.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := inst.Tick(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.More {
		t.Fatal("agent_tick returned 1; More is false")
	}
	e := res.Log.Entries
	want := []struct {
		kind  ObsKind
		value int64
		data  int
	}{{TickTime, 110, 0}, {Rand, -2, 0}, {Rand, -4, 0}, {Rand, 0, 8}, {Log, 5000, 4096}, {Log, -4, 0}, {Clock, 120, 0}}
	if len(e) != len(want) {
		t.Fatalf("entries %+v", e)
	}
	for k, w := range want {
		if e[k].Kind != w.kind || e[k].Value != w.value || len(e[k].Data) != w.data {
			t.Fatalf("entry %d = {%s %d %d bytes}, want {%s %d %d bytes}", k, e[k].Kind, e[k].Value, len(e[k].Data), w.kind, w.value, w.data)
		}
	}
	if !bytes.Equal(e[4].Data, msg[:4096]) {
		t.Fatal("log_emit message not truncated to its first 4096 bytes")
	}
	if len(logs) != 1 || logs[0] != string(msg[:4096]) {
		t.Fatalf("Log callback got %d messages, want the one valid (truncated) message", len(logs))
	}
	post, err := inst.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	codes := post[:16]
	wantCodes := []int32{-2, -4, 0, 11}
	for k, c := range wantCodes {
		if got := int32(binary.LittleEndian.Uint32(codes[4*k:])); got != c {
			t.Fatalf("result %d = %d, want %d", k, got, c)
		}
	}
	if got := int64(binary.LittleEndian.Uint64(post[16:])); got != 120 {
		t.Fatalf("clock_now = %d, want 120", got)
	}
	if !bytes.Equal(post[2048-1024:2048-1024+8], e[3].Data) {
		t.Fatal("rand bytes in memory differ from the recorded ones")
	}
	if got := string(post[3000-1024:][:11]); got != "hell"+strings.Repeat("\x00", 7) {
		t.Fatalf("args_get wrote %q, want the first 4 bytes of the args", got)
	}
	// Replay reproduces all of it, error codes included.
	got, err := r.Replay(bg, m, InstanceConfig{Manifest: man}, pre, res.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, post) {
		t.Fatal("replay post-state differs")
	}
	// Replay does not emit the agent's logs again.
	if len(logs) != 1 {
		t.Fatalf("replay emitted logs: %d", len(logs))
	}
	// A recorded error where the replayed call succeeds is a divergence.
	bad := res.Log
	bad.Entries = append([]Observation(nil), res.Log.Entries...)
	bad.Entries[3] = Observation{Kind: Rand, Value: -2}
	if _, err := r.Replay(bg, m, InstanceConfig{Manifest: man}, pre, bad); !errors.Is(err, ErrDivergence) {
		t.Fatalf("rand code tampered: %v", err)
	}
}

func TestTickLogLimit(t *testing.T) {
	r := newRuntime(t, Config{})
	imps := []wimport{{mod: "igor", name: "clock_now", results: []byte{tI64}}}
	// loop { clock_now(); drop; br 0 }
	tick := cat([]byte{0x03, 0x40}, call(0), opDrop, []byte{0x0c, 0x00, 0x0b}, i32c(0))
	m, err := r.Compile(bg, "clockloop", assemble(imps, abiFuncs(tick, 0, 0), 1))
	if err != nil {
		t.Fatal(err)
	}
	man := &agents.Manifest{Capabilities: map[string]agents.CapabilitySpec{agents.CapClock: {Version: 1}}}
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	res, err := inst.Tick(bg)
	if !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), "tick log full") {
		t.Fatalf("err = %v, want ErrTrap: tick log full", err)
	}
	if len(res.Log.Entries) != MaxTickLogEntries {
		t.Fatalf("log has %d entries, want the limit %d", len(res.Log.Entries), MaxTickLogEntries)
	}
}

func TestRuntimeClose(t *testing.T) {
	r, err := NewRuntime(bg, Config{Logger: nil})
	if err != nil {
		t.Fatal(err)
	}
	m, man := example(t, r, "counter")
	inst, err := r.Instantiate(bg, m, InstanceConfig{Manifest: man, Log: func(string) {}})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Close(bg); err != nil {
		t.Fatal(err)
	}
	if err := r.Close(bg); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := inst.Tick(bg); !errors.Is(err, ErrInstanceDead) || !errors.Is(err, ErrClosed) {
		t.Fatalf("tick after runtime close: %v", err)
	}
	if _, err := r.Compile(bg, "x", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("compile after close: %v", err)
	}
	if _, err := r.Instantiate(bg, m, InstanceConfig{Manifest: man}); !errors.Is(err, ErrClosed) {
		t.Fatalf("instantiate after close: %v", err)
	}
}

func TestManyInstancesConcurrently(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "counter")
	const n, ticks = 100, 5
	insts := make([]*Instance, n)
	for k := range insts {
		insts[k] = start(t, r, m, InstanceConfig{Manifest: man}, nil)
	}
	var wg sync.WaitGroup
	for _, inst := range insts {
		wg.Go(func() {
			for range ticks {
				if _, err := inst.Tick(bg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	for k, inst := range insts {
		st, err := inst.Checkpoint(bg)
		if err != nil {
			t.Fatal(err)
		}
		if got := binary.LittleEndian.Uint64(st); got != ticks {
			t.Fatalf("instance %d counted %d ticks, want %d (instances share state?)", k, got, ticks)
		}
	}
}

func TestInstanceConfigErrors(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "counter")
	if _, err := r.Instantiate(bg, m, InstanceConfig{}); err == nil || !strings.Contains(err.Error(), "Manifest is nil") {
		t.Fatalf("nil manifest: %v", err)
	}
	big := withLimits(man, func(l *agents.ResourceLimits) { l.MaxMemoryBytes = 128 << 20 })
	if _, err := r.Instantiate(bg, m, InstanceConfig{Manifest: big}); err == nil || !strings.Contains(err.Error(), "max_memory_bytes") {
		t.Fatalf("128 MiB cap: %v", err)
	}
	other := newRuntime(t, Config{})
	if _, err := other.Instantiate(bg, m, InstanceConfig{Manifest: man}); !errors.Is(err, ErrBadModule) {
		t.Fatalf("module from another runtime: %v", err)
	}
}

func TestOnDiskCache(t *testing.T) {
	dir := t.TempDir()
	wasm, _ := testagents.Bytes(t, "counter")
	var times []time.Duration
	for range 2 {
		r := newRuntime(t, Config{CacheDir: dir})
		t0 := time.Now()
		if _, err := r.Compile(bg, "counter", wasm); err != nil {
			t.Fatal(err)
		}
		times = append(times, time.Since(t0))
		r.Close(bg)
	}
	t.Logf("compile cold %v, from the on-disk cache %v", times[0], times[1])
	if times[1] >= times[0] {
		t.Fatalf("cache hit (%v) not faster than cold compile (%v)", times[1], times[0])
	}
}

var _ io.Reader = deniedRand{}

type syncBuffer = testutil.SyncBuffer

// A new holder brings a fresh instance to its predecessor's state by
// replaying the recorded ticks in it, then ticks on live.
func TestReplayTickInLiveInstance(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "heartbeat")
	orig := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	pre, logs, post := recordTicks(t, orig, 4)

	inst := start(t, r, m, InstanceConfig{Manifest: man}, pre[0])
	for k, l := range logs {
		res, err := inst.ReplayTick(bg, l, false)
		if err != nil {
			t.Fatalf("replay tick %d: %v", k+1, err)
		}
		if !bytes.Equal(res.Log.Encode(), l.Encode()) {
			t.Fatalf("tick %d: result log differs from the replayed one", k+1)
		}
	}
	got, err := inst.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, post[3]) {
		t.Fatal("state after replaying 4 ticks differs from the original's")
	}
	// Live again: the next tick records a fresh log of its own.
	res, err := inst.Tick(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Log.Entries) != len(logs[0].Entries) || res.Log.Entries[0].Value == logs[3].Entries[0].Value {
		t.Fatalf("live tick after replay: log %+v", res.Log.Entries)
	}

	// A partial log: the tick replays its prefix, then goes on live.
	inst2 := start(t, r, m, InstanceConfig{Manifest: man}, pre[1])
	prefix := TickLog{Entries: logs[1].Entries[:2]} // tick_time, clock_now
	res, err = inst2.ReplayTick(bg, prefix, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Log.Entries) != len(logs[1].Entries) {
		t.Fatalf("partial replay: %d entries, want %d", len(res.Log.Entries), len(logs[1].Entries))
	}
	for k := range prefix.Entries {
		if res.Log.Entries[k].Kind != prefix.Entries[k].Kind || res.Log.Entries[k].Value != prefix.Entries[k].Value {
			t.Fatalf("partial replay: entry %d is %+v, want the replayed %+v", k, res.Log.Entries[k], prefix.Entries[k])
		}
	}
	if bytes.Equal(res.Log.Entries[2].Data, logs[1].Entries[2].Data) {
		t.Fatal("partial replay: the live part repeated the recorded random bytes")
	}

	// A complete log the tick does not use up is a divergence, and kills
	// the instance (its state may be half a tick).
	inst3 := start(t, r, m, InstanceConfig{Manifest: man}, pre[2])
	long := TickLog{Entries: append(slices.Clone(logs[2].Entries), Observation{Kind: Clock, Value: 1})}
	if _, err := inst3.ReplayTick(bg, long, false); !errors.Is(err, ErrDivergence) {
		t.Fatalf("unused entry: err = %v, want ErrDivergence", err)
	}
	if _, err := inst3.Tick(bg); !errors.Is(err, ErrInstanceDead) {
		t.Fatalf("after divergence: err = %v, want ErrInstanceDead", err)
	}
	if _, err := inst3.ReplayTick(bg, TickLog{}, false); err == nil {
		t.Fatal("empty log accepted")
	}
}
