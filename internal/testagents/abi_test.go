package testagents_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"

	"github.com/igor-mesh/igor-node/agents/sdk/mock"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// These tests run the real modules in real wazero behind a minimal host
// that answers igor hostcalls from a mock.Mock (so results can be predicted)
// and follows docs/ABI.md for the lifecycle. They check the SDK's wasm side
// and that each fixture misbehaves exactly as advertised; the production
// sandbox (wasmexec) has its own tests.

var (
	cacheOnce sync.Once
	cache     wazero.CompilationCache
)

func compilationCache() wazero.CompilationCache {
	cacheOnce.Do(func() { cache = wazero.NewCompilationCache() })
	return cache
}

type instance struct {
	t      *testing.T
	r      wazero.Runtime
	mod    api.Module
	stderr *bytes.Buffer
}

// load instantiates the agent, runs _initialize (via start functions) and,
// unless noInit, agent_init followed by agent_resume with state (nil = empty).
func load(t *testing.T, name string, m *mock.Mock, state []byte) *instance {
	t.Helper()
	in, err := tryLoad(t, name, m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.call("agent_init"); err != nil {
		t.Fatalf("agent_init: %v\nstderr: %s", err, in.stderr)
	}
	in.resume(state)
	return in
}

func tryLoad(t *testing.T, name string, m *mock.Mock) (*instance, error) {
	t.Helper()
	ctx := context.Background()
	wasm, _ := testagents.Bytes(t, name)
	cfg := wazero.NewRuntimeConfig().WithCloseOnContextDone(true).
		WithMemoryLimitPages(1024).WithCompilationCache(compilationCache())
	r := wazero.NewRuntimeWithConfig(ctx, cfg)
	t.Cleanup(func() { r.Close(ctx) })
	wasi_snapshot_preview1.MustInstantiate(ctx, r)
	_, err := r.NewHostModuleBuilder("igor").
		NewFunctionBuilder().WithFunc(func(context.Context) int64 { return m.ClockNow() }).Export("clock_now").
		NewFunctionBuilder().WithFunc(func(_ context.Context, mod api.Module, ptr, n uint32) int32 {
		if n > 65536 {
			return -2
		}
		buf, ok := mod.Memory().Read(ptr, n)
		if !ok {
			return -4
		}
		return m.RandBytes(buf)
	}).Export("rand_bytes").
		NewFunctionBuilder().WithFunc(func(_ context.Context, mod api.Module, ptr, n uint32) {
		buf, ok := mod.Memory().Read(ptr, n)
		if !ok {
			panic("log_emit: memory out of range")
		}
		m.LogEmit(string(buf))
	}).Export("log_emit").
		NewFunctionBuilder().WithFunc(func(_ context.Context, mod api.Module, ptr, n uint32) int32 {
		args := m.Args()
		if k := min(int(n), len(args)); k > 0 && !mod.Memory().Write(ptr, []byte(args[:k])) {
			return -4
		}
		return int32(len(args))
	}).Export("args_get").
		Instantiate(ctx)
	if err != nil {
		return nil, err
	}
	stderr := &bytes.Buffer{}
	mod, err := r.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().
		WithName("").WithStartFunctions("_initialize").WithStderr(stderr).WithStdout(stderr))
	if err != nil {
		return nil, fmt.Errorf("instantiate %s: %w\nstderr: %s", name, err, stderr)
	}
	return &instance{t: t, r: r, mod: mod, stderr: stderr}, nil
}

func (in *instance) callCtx(ctx context.Context, name string, args ...uint64) ([]uint64, error) {
	f := in.mod.ExportedFunction(name)
	if f == nil {
		return nil, fmt.Errorf("no export %s", name)
	}
	return f.Call(ctx, args...)
}

func (in *instance) call(name string, args ...uint64) ([]uint64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return in.callCtx(ctx, name, args...)
}

func (in *instance) mustCall(name string, args ...uint64) []uint64 {
	in.t.Helper()
	res, err := in.call(name, args...)
	if err != nil {
		in.t.Fatalf("%s: %v\nstderr: %s", name, err, in.stderr)
	}
	return res
}

func (in *instance) tick() uint32 {
	in.t.Helper()
	return uint32(in.mustCall("agent_tick")[0])
}

// checkpoint copies the state out as a host does.
func (in *instance) checkpoint() []byte {
	in.t.Helper()
	n := uint32(in.mustCall("agent_checkpoint")[0])
	if n == 0 {
		return []byte{}
	}
	ptr := uint32(in.mustCall("agent_checkpoint_ptr")[0])
	b, ok := in.mod.Memory().Read(ptr, n)
	if !ok {
		in.t.Fatalf("checkpoint [%#x, +%d) outside memory of %d bytes", ptr, n, in.mod.Memory().Size())
	}
	return bytes.Clone(b) // Read is a view into guest memory
}

// resume places state with agent_alloc and calls agent_resume, or calls
// agent_resume(0, 0) for empty state.
func (in *instance) resume(state []byte) {
	in.t.Helper()
	if len(state) == 0 {
		in.mustCall("agent_resume", 0, 0)
		return
	}
	ptr := uint32(in.mustCall("agent_alloc", uint64(len(state)))[0])
	if ptr == 0 || !in.mod.Memory().Write(ptr, state) {
		in.t.Fatalf("agent_alloc(%d) returned unusable pointer %#x", len(state), ptr)
	}
	in.mustCall("agent_resume", uint64(ptr), uint64(len(state)))
}

// heartbeatModel computes heartbeat's expected state from the same
// observation stream the host hands out (docs in agents/examples/heartbeat).
func heartbeatModel(seed int64, ticks int) (state []byte, logs []string) {
	m := mock.New(seed)
	var first, last int64
	var pulse uint64
	for i := 1; i <= ticks; i++ {
		now := m.ClockNow()
		var r [8]byte
		m.RandBytes(r[:])
		pulse = bits.RotateLeft64(pulse, 7) ^ binary.LittleEndian.Uint64(r[:])
		if i == 1 {
			first = now
		}
		last = now
		logs = append(logs, fmt.Sprintf("tick=%d age=%ds", i, (last-first)/1e9))
	}
	st := []byte{1}
	st = binary.LittleEndian.AppendUint64(st, uint64(ticks))
	st = binary.LittleEndian.AppendUint64(st, uint64(first))
	st = binary.LittleEndian.AppendUint64(st, uint64(last))
	st = binary.LittleEndian.AppendUint64(st, pulse)
	return st, logs
}

// Heartbeat in wasm, restarted from its checkpoint after every tick, must
// reach exactly the state and logs predicted from the observations.
func TestHeartbeatLifecycleInWazero(t *testing.T) {
	const seed, ticks = 5, 6
	m := mock.New(seed)
	in := load(t, "heartbeat", m, nil)
	for i := 1; i <= ticks; i++ {
		if more := in.tick(); more != 0 {
			t.Fatalf("tick %d returned %d, heartbeat never has more work", i, more)
		}
		s := in.checkpoint()
		fresh := load(t, "heartbeat", m, s)
		if again := fresh.checkpoint(); !bytes.Equal(again, s) {
			t.Fatalf("tick %d: resumed instance checkpoints %x, want %x", i, again, s)
		}
		in = fresh
	}
	wantState, wantLogs := heartbeatModel(seed, ticks)
	if got := in.checkpoint(); !bytes.Equal(got, wantState) {
		t.Fatalf("state\n got %x\nwant %x", got, wantState)
	}
	if got := m.Logs(); strings.Join(got, "|") != strings.Join(wantLogs, "|") {
		t.Fatalf("logs %q, want %q", got, wantLogs)
	}
	// agent_resume(0, 0) hands Unmarshal an empty slice: a reset.
	in.resume(nil)
	if got := in.checkpoint(); !bytes.Equal(got, append([]byte{1}, make([]byte, 32)...)) {
		t.Fatalf("after resume(0,0): %x, want the zero state", got)
	}
}

func TestCounterArgsAndLargeState(t *testing.T) {
	const size = 16 << 20 // the default max_state_bytes, under a 64 MiB memory cap
	m := mock.New(1).SetArgs("state_size=16777216")
	in := load(t, "counter", m, nil)
	for range 3 {
		in.tick()
	}
	s := in.checkpoint()
	if len(s) != size || binary.LittleEndian.Uint64(s) != 3 {
		t.Fatalf("checkpoint %d bytes, counter %d", len(s), binary.LittleEndian.Uint64(s))
	}
	// Resume in a fresh instance and keep going, twice: the state must
	// not be held twice over (agent_alloc buffer adopted by Unmarshal).
	for round := range 2 {
		in = load(t, "counter", m, s)
		in.tick()
		s = in.checkpoint()
		if len(s) != size || binary.LittleEndian.Uint64(s) != uint64(4+round) {
			t.Fatalf("round %d: %d bytes, counter %d", round, len(s), binary.LittleEndian.Uint64(s))
		}
	}
	if logs := m.Logs(); len(logs) != 1 || logs[0] != "counter: state_size=16777216" {
		t.Fatalf("logs %q", logs)
	}
	t.Logf("memory after resume + tick with a 16 MiB state: %d MiB", in.mod.Memory().Size()>>20)
}

// A buffer from agent_alloc must survive garbage collection until
// agent_resume: allocate it, write into it, then force many collections with
// further allocations, then resume from it.
func TestAllocSurvivesGC(t *testing.T) {
	const size = 1 << 20
	in := load(t, "counter", mock.New(1).SetArgs("state_size=1048576"), nil)
	state := make([]byte, size)
	for i := range state {
		state[i] = byte(i*7 + i>>8)
	}
	binary.LittleEndian.PutUint64(state, 41)
	ptr := uint32(in.mustCall("agent_alloc", size)[0])
	if !in.mod.Memory().Write(ptr, state) {
		t.Fatal("alloc pointer outside memory")
	}
	for range 30 {
		in.mustCall("agent_alloc", size) // each 1 MiB allocation can trigger a GC
	}
	in.mustCall("agent_resume", uint64(ptr), size)
	if got := in.checkpoint(); !bytes.Equal(got, state) {
		t.Fatalf("state placed by agent_alloc was clobbered before agent_resume (first bytes %x)", got[:16])
	}
	in.tick()
	if got := in.checkpoint(); binary.LittleEndian.Uint64(got) != 42 {
		t.Fatalf("counter %d after one tick, want 42", binary.LittleEndian.Uint64(got))
	}
}

func TestTrapFixtures(t *testing.T) {
	t.Run("traptick", func(t *testing.T) {
		m := mock.New(1)
		in := load(t, "traptick", m, nil)
		in.tick()
		in.tick()
		if s := in.checkpoint(); !bytes.Equal(s, binary.LittleEndian.AppendUint64(nil, 2)) {
			t.Fatalf("state after two ticks %x", s)
		}
		if _, err := in.call("agent_tick"); err == nil {
			t.Fatal("tick 3 did not trap")
		}
		if !strings.Contains(in.stderr.String(), "traptick: deliberate panic in tick 3") {
			t.Fatalf("stderr %q", in.stderr)
		}
		if logs := m.Logs(); strings.Join(logs, ",") != "tick=1,tick=2" {
			t.Fatalf("logs %q", logs)
		}
	})
	t.Run("trapinit", func(t *testing.T) {
		in, err := tryLoad(t, "trapinit", mock.New(1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.call("agent_init"); err == nil || !strings.Contains(in.stderr.String(), "trapinit: deliberate panic in Init") {
			t.Fatalf("agent_init err %v, stderr %q", err, in.stderr)
		}
	})
	t.Run("counter bad args", func(t *testing.T) {
		in, err := tryLoad(t, "counter", mock.New(1).SetArgs("state_size=1"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := in.call("agent_init"); err == nil || !strings.Contains(in.stderr.String(), "counter: bad args: state_size=\"1\"") {
			t.Fatalf("agent_init err %v, stderr %q", err, in.stderr)
		}
	})
	t.Run("runaway", func(t *testing.T) {
		in := load(t, "runaway", mock.New(1), nil)
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := in.callCtx(ctx, "agent_tick")
		var exit *sys.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != sys.ExitCodeDeadlineExceeded {
			t.Fatalf("err %v, want a deadline exit", err)
		}
		t.Logf("runaway stopped %v after the call started", time.Since(start))
	})
	t.Run("memhog", func(t *testing.T) {
		in := load(t, "memhog", mock.New(1), nil)
		if _, err := in.call("agent_tick"); err == nil {
			t.Fatal("memhog tick returned")
		}
		if !strings.Contains(in.stderr.String(), "out of memory") {
			t.Fatalf("stderr %q, want out of memory", in.stderr)
		}
		if got := in.mod.Memory().Size(); got > 1024*65536 {
			t.Fatalf("memory grew to %d bytes past the cap", got)
		}
	})
	t.Run("bigstate", func(t *testing.T) {
		in := load(t, "bigstate", mock.New(1), nil)
		if n := uint32(in.mustCall("agent_checkpoint")[0]); n != 1<<30 {
			t.Fatalf("agent_checkpoint = %d, want 1<<30", n)
		}
	})
	t.Run("badptr", func(t *testing.T) {
		in := load(t, "badptr", mock.New(1), nil)
		n := uint32(in.mustCall("agent_checkpoint")[0])
		ptr := uint32(in.mustCall("agent_checkpoint_ptr")[0])
		if n != 16 || ptr != 0x7fffff00 || uint64(ptr)+uint64(n) <= uint64(in.mod.Memory().Size()) {
			t.Fatalf("checkpoint (%#x, %d) with memory %d: not out of range", ptr, n, in.mod.Memory().Size())
		}
	})
}
