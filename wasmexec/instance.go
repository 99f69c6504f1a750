package wasmexec

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/experimental"
	"github.com/tetratelabs/wazero/sys"
)

// InstanceConfig configures one agent instance.
type InstanceConfig struct {
	// Manifest grants capabilities and sets limits. Required; normally the
	// result of agents.ParseManifest (zero limits mean the defaults).
	Manifest *agents.Manifest
	// AgentDID names the agent in logs.
	AgentDID string
	// Clock is the host wall clock (Unix ns) behind igor.clock_now and the
	// tick time. nil means time.Now().UnixNano.
	Clock func() int64
	// Rand is the host randomness behind igor.rand_bytes. nil means crypto/rand.
	Rand io.Reader
	// Log receives each log_emit message (the caller adds the agent's name).
	// nil means the Runtime's Logger at Info level with an "agent" attribute.
	Log func(msg string)
	// Fence, if set, is the instance's lease end: time a host pause took
	// from a call is granted back only up to it (pause.go).
	Fence func() time.Time

	// Wallet is the agent's purse behind wallet_balance, wallet_receipt*
	// and wallet_pay. nil: balance 0, no receipts, every payment -1.
	Wallet Wallet
	// Price answers node_price (µc per second).
	Price int64
	// AgentPub is the agent's Ed25519 public key (32 bytes) put in payment
	// receipts; nil means 32 zero bytes.
	AgentPub []byte
	// Sign signs a payment receipt with the agent's key (a 64-byte
	// Ed25519 signature); nil signs with 64 zero bytes.
	Sign func(msg []byte) []byte
	// HTTP carries http_request's requests. nil means the Runtime's
	// transport, which refuses private addresses at dial time (docs/ABI.md);
	// a RoundTripper given here must enforce that itself. Schemes, the
	// allowlist and redirects are checked by the host either way.
	HTTP http.RoundTripper
	// BeforeEffect, if set, is called in a live tick before each effectful
	// call (http_request, wallet_pay), after its arguments are checked and
	// before anything happens. The runner journals e.Log (ending with the
	// intent, which carries e.Key) at the agent's custody majority and
	// returns the idempotency key: e.Key, or "" for the same (the key is
	// the host's to derive, since the journaled intent holds it). An error
	// fails the call's instance (ErrTrap wrapping it, the message naming the
	// effect) and nothing is done. Not called when a partial replay
	// finishes an effect whose intent was journaled already.
	BeforeEffect func(ctx context.Context, e Effect) (key string, err error)
}

// Wallet is the agent's purse, kept by the runner (hosting) across instances.
type Wallet interface {
	Balance() int64          // µc the agent may spend now
	Debit(amount int64) bool // take amount if Balance() >= amount
	Receipts() [][]byte      // receipts of the agent's payments, oldest first (read-only)
	AddReceipt(r []byte)
}

// TickResult is the outcome of one tick.
type TickResult struct {
	// More is agent_tick's non-zero result: tick again soon.
	More bool
	// Elapsed is the wall time of the agent_tick call, hostcalls included,
	// less any time the host itself was paused meanwhile (pause.go).
	Elapsed time.Duration
	// Log holds the tick's observations, TickTime first.
	Log TickLog
	// Paid is what wallet_pay paid in this tick (µc), replayed payments
	// included; also set when the tick failed after paying.
	Paid int64
	// PaidReplayed is the part of Paid answered from a replayed log: for
	// those payments Wallet.Debit and AddReceipt were not called, so the
	// runner applies them (Log.PaidReceipts has their receipts, in order;
	// the replayed ones come first).
	PaidReplayed int64
}

// Instance is one running agent: a guest module instance with its limits,
// clocks and tick log. Its methods must not be called concurrently with each
// other, except Close, Err and MemoryBytes, which are safe at any time.
//
// Any failed guest call (trap, deadline, out of memory, proc_exit, a bad
// pointer or size from the guest) kills the instance: its module is closed,
// Err returns the first error, and every later call returns ErrInstanceDead
// wrapping it. The host then re-creates the agent from its last checkpoint.
type Instance struct {
	rt       *Runtime
	mod      *Module
	did      string
	granted  map[string]bool // capabilities, copied from the manifest
	args     string          // manifest args, for igor.args_get
	memCap   uint64          // bytes, a multiple of 64 KiB
	stateCap uint64
	timeout  time.Duration
	fence    func() time.Time // InstanceConfig.Fence
	// lastPause: how long the host was paused during the last call (not
	// the agent's time: not in TickResult.Elapsed, not billed).
	lastPause time.Duration
	// journalWait: time the running call spent waiting for the runner to
	// journal an effect's intent (BeforeEffect) — the host's commit at its
	// custody group, not the agent's time: granted on top of the deadline,
	// not in TickResult.Elapsed. Written by the call's goroutine, read by
	// the deadline's timer.
	journalWait atomic.Int64
	// journalSince: when the wait in progress began (Unix ns), 0 if none.
	journalSince atomic.Int64
	clock        func() int64
	rand         io.Reader
	logf         func(string)
	logLimit     *logLimiter // agent lines shown in the node's log

	// Effects (InstanceConfig).
	wallet       Wallet
	price        int64
	agentPub     [32]byte
	sign         func([]byte) []byte
	httpRT       http.RoundTripper
	httpPolicy   *httpPolicy // nil unless http is granted
	payPolicy    agents.X402Options
	beforeEffect func(context.Context, Effect) (string, error)

	gm                                          api.Module
	mem                                         *linearMemory
	fnInit, fnTick, fnCkpt, fnCkptPtr, fnResume api.Function
	fnAlloc, fnInitialize                       api.Function
	stack                                       [2]uint64
	stdout, stderr                              *guestOutput

	// Call state: written by the calling goroutine around a guest call and
	// read by the hostcalls and WASI clocks that run inside it.
	loadInstant int64 // WASI time outside ticks
	wasiNow     int64 // what WASI clock_time_get returns now
	inTick      bool
	tickTime    int64     // the tick's TickTime, for payment receipts
	callStart   time.Time // when the running guest call started
	tickLog     []Observation
	tickLogData int
	replay      *replayState
	hostErr     error // set by a hostcall that aborts the call

	mu     sync.Mutex // guards err and closed
	err    error
	closed bool
}

type replayState struct {
	log  TickLog
	pos  int
	data int // data bytes of the entries used so far
	// partial: log is a prefix of the tick; once it is used up the tick
	// goes on live (ReplayTick).
	partial bool
	// whole: the instance only replays (Replay): outside ticks too, its
	// logs are not shown.
	whole bool
}

// exitCodeClosed is the exit code with which Close (of an instance or the
// runtime) stops a guest; distinct from wazero's deadline/cancel codes.
const exitCodeClosed uint32 = 0xeffffff0

// Instantiate creates an instance of m, runs _initialize (if exported) and
// agent_init, each under the tick deadline. The instance's memory is capped
// at the manifest's max_memory_bytes.
//
// Errors: ErrImportNotGranted (names the import and the capability),
// ErrOutOfMemory (initial memory above the cap), ErrBadModule (instantiation
// failed), ErrDeadline or ErrTrap for a WASM start function that ran past
// the deadline or trapped, and for the _initialize/agent_init calls ErrTrap,
// ErrDeadline, ErrOutOfMemory (each naming the export); ErrClosed; ctx's
// error.
func (r *Runtime) Instantiate(ctx context.Context, m *Module, cfg InstanceConfig) (*Instance, error) {
	return r.instantiate(ctx, m, cfg, nil)
}

func (r *Runtime) instantiate(ctx context.Context, m *Module, cfg InstanceConfig, rep *replayState) (_ *Instance, err error) {
	if m == nil || m.rt != r {
		return nil, fmt.Errorf("%w: module is nil or was compiled by another Runtime", ErrBadModule)
	}
	if cfg.Manifest == nil {
		return nil, errors.New("wasmexec: InstanceConfig.Manifest is nil; pass the agent's parsed manifest")
	}
	i := &Instance{rt: r, mod: m, did: cfg.AgentDID, replay: rep, args: cfg.Manifest.Args,
		granted: make(map[string]bool, len(cfg.Manifest.Capabilities)),
		clock:   cfg.Clock, rand: cfg.Rand, logf: cfg.Log, fence: cfg.Fence}
	for c := range cfg.Manifest.Capabilities {
		i.granted[c] = true
	}
	if err := i.setLimits(cfg.Manifest.ResourceLimits); err != nil {
		return nil, err
	}
	if err := i.setEffects(cfg); err != nil {
		return nil, err
	}
	for _, name := range m.igorImports {
		if c := igorFuncs[name].capability; !cfg.Manifest.Grants(c) {
			return nil, fmt.Errorf("%w: import igor.%s needs capability %q, which the manifest does not grant", ErrImportNotGranted, name, c)
		}
	}
	if m.minMemory > i.memCap {
		return nil, fmt.Errorf("%w: the module's initial memory is %d bytes, above max_memory_bytes %d", ErrOutOfMemory, m.minMemory, i.memCap)
	}
	if i.clock == nil {
		i.clock = func() int64 { return time.Now().UnixNano() }
	}
	if i.rand == nil {
		i.rand = rand.Reader
	}
	if i.logf == nil {
		i.logf = func(msg string) { r.logger.Info("agent log", "agent", i.did, "msg", msg) }
	}
	i.logLimit = r.logLimiterFor(i.did)
	defer func() {
		if err != nil {
			i.mu.Lock()
			closed := i.closed // Close released it
			i.mu.Unlock()
			if !closed {
				r.releaseLogLimiter(i.logLimit)
			}
		}
	}()
	i.loadInstant = i.clock()
	i.wasiNow = i.loadInstant
	i.mem = newLinearMemory(i.memCap, m.image)
	i.stdout = &guestOutput{inst: i, stream: "stdout"}
	i.stderr = &guestOutput{inst: i, stream: "stderr"}

	mc := wazero.NewModuleConfig().
		WithName(fmt.Sprintf("agent-%d", r.seq.Add(1))).
		WithStartFunctions(). // a reactor: _initialize is called below, under a deadline
		WithStdout(i.stdout).
		WithStderr(i.stderr).
		// WASI clocks read the tick time; see docs/ABI.md.
		WithWalltime(func() (int64, int32) {
			return i.wasiNow / 1e9, int32(i.wasiNow % 1e9)
		}, 1).
		WithNanotime(func() int64 { return i.wasiNow }, 1).
		WithRandSource(deniedRand{}).
		WithNanosleep(func(int64) {}).
		WithOsyield(func() {})

	if err := r.enter(); err != nil {
		return nil, err
	}
	i.mem.enter()
	ictx := ctx
	if useMemoryAllocator {
		ictx = experimental.WithMemoryAllocator(ctx, i.mem)
	}
	ictx, cancel := context.WithTimeout(ictx, i.timeout)
	i.gm, err = r.wz.InstantiateModule(ictx, m.cm, mc)
	cancel()
	i.mem.exit()
	r.exit()
	if err != nil {
		i.mem.Free() // wazero does not release resources of a failed instantiation
		if ctx.Err() != nil {
			return nil, fmt.Errorf("wasmexec: instantiate %s: %w", m.key, ctx.Err())
		}
		// Only a WASM start function runs guest code during instantiation,
		// and wazero returns its exit errors unwrapped.
		var exit *sys.ExitError
		if errors.As(err, &exit) {
			switch exit.ExitCode() {
			case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
				return nil, fmt.Errorf("%w: %s: the module's start function ran longer than its %v deadline (tick_timeout_ms) and was stopped", ErrDeadline, m.key, i.timeout)
			case exitCodeClosed:
				return nil, fmt.Errorf("%w: %s: closed during instantiation", ErrClosed, m.key)
			}
			return nil, fmt.Errorf("%w: %s: the module's start function exited with code %d", ErrTrap, m.key, exit.ExitCode())
		}
		if strings.HasPrefix(err.Error(), "start ") {
			first, _, _ := strings.Cut(err.Error(), "\n")
			return nil, fmt.Errorf("%w: %s: the module's start function trapped: %s", ErrTrap, m.key, first)
		}
		return nil, fmt.Errorf("%w: instantiate %s: %v", ErrBadModule, m.key, err)
	}
	i.fnInit = i.gm.ExportedFunction("agent_init")
	i.fnTick = i.gm.ExportedFunction("agent_tick")
	i.fnCkpt = i.gm.ExportedFunction("agent_checkpoint")
	i.fnCkptPtr = i.gm.ExportedFunction("agent_checkpoint_ptr")
	i.fnResume = i.gm.ExportedFunction("agent_resume")
	if m.alloc != "" {
		i.fnAlloc = i.gm.ExportedFunction(m.alloc)
	}
	if m.initialize {
		i.fnInitialize = i.gm.ExportedFunction("_initialize")
	}

	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		_ = i.gm.CloseWithExitCode(ctx, exitCodeClosed)
		return nil, fmt.Errorf("%w: runtime closed", ErrClosed)
	}
	r.instances[i] = struct{}{}
	r.mu.Unlock()
	defer func() {
		if err != nil {
			_ = i.Close(ctx)
		}
	}()

	if err := i.begin(); err != nil {
		return nil, err
	}
	defer i.end()
	if i.fnInitialize != nil {
		if _, err := i.call(ctx, "_initialize", i.fnInitialize); err != nil {
			return nil, err
		}
	}
	if _, err := i.call(ctx, "agent_init", i.fnInit); err != nil {
		return nil, err
	}
	// Each api.Function holds a call engine with its own ~10 KiB stack
	// for the instance's life: keep only those called again.
	i.fnInitialize, i.fnInit = nil, nil
	return i, nil
}

// setLimits derives the instance's limits from its manifest, applying the
// defaults for zero values and rejecting values above the ABI caps.
func (i *Instance) setLimits(rl agents.ResourceLimits) error {
	mem := rl.MaxMemoryBytes
	if mem == 0 {
		mem = agents.MaxMemoryBytes
	}
	if mem > agents.MaxMemoryBytes {
		return fmt.Errorf("wasmexec: max_memory_bytes %d exceeds the %d-byte cap", mem, agents.MaxMemoryBytes)
	}
	i.memCap = mem &^ 0xffff // whole WASM pages
	if i.memCap == 0 {
		return fmt.Errorf("wasmexec: max_memory_bytes %d is below one 64 KiB page", mem)
	}
	i.stateCap = rl.MaxStateBytes
	if i.stateCap == 0 {
		i.stateCap = agents.DefaultMaxStateBytes
	}
	if i.stateCap > agents.MaxStateBytesCap {
		return fmt.Errorf("wasmexec: max_state_bytes %d exceeds the %d-byte cap", i.stateCap, agents.MaxStateBytesCap)
	}
	ms := rl.TickTimeoutMs
	if ms == 0 {
		ms = agents.DefaultTickTimeoutMs
	}
	if ms > agents.MaxTickTimeoutMs {
		return fmt.Errorf("wasmexec: tick_timeout_ms %d exceeds the %d ms cap", ms, agents.MaxTickTimeoutMs)
	}
	i.timeout = time.Duration(ms) * time.Millisecond
	return nil
}

// Err returns the error that killed the instance (ErrClosed after Close),
// or nil while it is alive.
func (i *Instance) Err() error {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.err
}

// MemoryBytes returns the size of the guest's linear memory; after the
// instance died, the size it had then.
func (i *Instance) MemoryBytes() uint64 { return i.mem.size.Load() }

// Close closes the instance; a call running concurrently is stopped (at its
// next loop head or call when CloseOnDeadline is on) and fails with
// ErrClosed. Idempotent; it does not wait for that call to return.
func (i *Instance) Close(ctx context.Context) error {
	i.mu.Lock()
	already := i.closed
	i.closed = true
	if i.err == nil {
		i.err = fmt.Errorf("%w: instance closed", ErrClosed)
	}
	i.mu.Unlock()
	if already {
		return nil
	}
	i.reportDroppedLogs(true)
	i.rt.releaseLogLimiter(i.logLimit)
	i.rt.mu.Lock()
	delete(i.rt.instances, i)
	i.rt.mu.Unlock()
	// Memory is unmapped only once no operation uses it (linearMemory.Free).
	_ = i.gm.CloseWithExitCode(ctx, exitCodeClosed)
	return nil
}

// begin starts an operation that may touch guest code or memory: it fails
// if the instance is dead, and keeps the runtime and the memory alive until
// end.
func (i *Instance) begin() error {
	if err := i.Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrInstanceDead, err)
	}
	if err := i.rt.enter(); err != nil {
		return err
	}
	i.mem.enter()
	return nil
}

func (i *Instance) end() {
	i.mem.exit()
	i.rt.exit()
}

// kill records err as the instance's first error and closes it.
func (i *Instance) kill(err error) {
	i.mu.Lock()
	if i.err == nil {
		i.err = err
	}
	i.mu.Unlock()
	_ = i.Close(context.Background())
}

// call runs one export under the deadline. Any error kills the instance.
// It must run between begin and end.
func (i *Instance) call(ctx context.Context, name string, fn api.Function, params ...uint64) ([]uint64, error) {
	if err := i.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInstanceDead, err)
	}
	stack := i.stack[:]
	copy(stack, params)
	i.hostErr = nil
	i.callStart = time.Now()
	i.journalWait.Store(0)
	i.mem.growRefused = false
	i.stderr.reset()
	i.stdout.reset()
	cctx, cancel := context.WithCancel(ctx)
	dl := i.deadline(name, cancel)
	err := fn.CallWithStack(context.WithValue(cctx, instanceKey{}, i), stack)
	hostPaused, pausedFor := dl.stop()
	i.lastPause = pausedFor
	cancel()
	i.stdout.flush()
	i.stderr.flush()
	i.reportDroppedLogs(false)
	if err != nil {
		err = i.classify(ctx, name, err)
		if hostPaused && errors.Is(err, ErrDeadline) {
			err = fmt.Errorf("%w: %s was stopped at its %v deadline, but the host did not run for part of it; not the agent's fault", ErrHostPaused, name, i.timeout)
		}
		i.kill(err)
		return nil, err
	}
	return stack, nil
}

// callDeadline stops a guest call after the instance's timeout of the
// host's running time: paused time (pause.go) is granted on top, within
// the fence and maxPauseGrant.
type callDeadline struct {
	mu      sync.Mutex
	t       *time.Timer
	p0      time.Duration // pauseClock at the start
	granted time.Duration
	waited  time.Duration // journal waits granted
	cut     bool          // cancelled at its deadline after a pause it could not be granted
}

func (i *Instance) deadline(name string, cancel context.CancelFunc) *callDeadline {
	d := &callDeadline{p0: pauseClock()}
	d.mu.Lock() // the callback sees d.t set
	defer d.mu.Unlock()
	d.t = time.AfterFunc(i.timeout, func() {
		d.mu.Lock()
		defer d.mu.Unlock()
		if d.t == nil {
			return // the call returned
		}
		waited := time.Duration(i.journalWait.Load())
		if s := i.journalSince.Load(); s != 0 {
			waited += time.Since(time.Unix(0, s)) // a wait still in progress
		}
		if w := waited - d.waited; w > 0 && d.waited+w <= maxPauseGrant {
			// The runner journaled intents meanwhile: the agent gets that
			// time back (the intent's commit is the host's work).
			d.waited += w
			d.t.Reset(w)
			return
		}
		extra := pauseClock() - d.p0 - d.granted
		if extra > 0 {
			if d.granted+extra <= maxPauseGrant && (i.fence == nil || time.Now().Add(extra).Before(i.fence())) {
				d.granted += extra
				d.t.Reset(extra)
				i.rt.logger.Info("wasmexec: the host paused during a call; its deadline moves by the pause (not the agent's time)",
					"agent", i.did, "call", name, "paused", extra.Round(time.Millisecond))
				return
			}
			d.cut = true
		}
		cancel()
	})
	return d
}

// stop ends the deadline when the call returned; it reports whether the
// call was cut after a pause it could not be granted, and how long the
// host was paused during the call.
func (d *callDeadline) stop() (bool, time.Duration) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.t.Stop()
	d.t = nil
	return d.cut, max(pauseClock()-d.p0, 0)
}

// classify turns a failed call's error into one of the package's sentinels,
// naming the export.
func (i *Instance) classify(ctx context.Context, name string, err error) error {
	if i.hostErr != nil {
		return fmt.Errorf("%s: %w", name, i.hostErr)
	}
	var exit *sys.ExitError
	if errors.As(err, &exit) {
		switch exit.ExitCode() {
		case sys.ExitCodeDeadlineExceeded, sys.ExitCodeContextCanceled:
			if ctx.Err() != nil { // the caller's context ended, not our deadline
				return fmt.Errorf("wasmexec: %s stopped: %w", name, ctx.Err())
			}
			return fmt.Errorf("%w: %s ran longer than its %v deadline (tick_timeout_ms) and was stopped", ErrDeadline, name, i.timeout)
		case exitCodeClosed:
			return fmt.Errorf("%w: %s stopped because the instance was closed", ErrClosed, name)
		}
		if i.outOfMemory() {
			return fmt.Errorf("%w: %s: the guest hit its %d-byte memory cap (exit code %d%s)", ErrOutOfMemory, name, i.memCap, exit.ExitCode(), i.stderr.excerpt())
		}
		return fmt.Errorf("%w: %s exited with code %d%s", ErrTrap, name, exit.ExitCode(), i.stderr.excerpt())
	}
	first, _, _ := strings.Cut(err.Error(), "\n")
	if i.outOfMemory() {
		return fmt.Errorf("%w: %s: the guest hit its %d-byte memory cap (%s%s)", ErrOutOfMemory, name, i.memCap, first, i.stderr.excerpt())
	}
	return fmt.Errorf("%w: %s: %s%s", ErrTrap, name, first, i.stderr.excerpt())
}

// outOfMemory reports whether the failed call was caused by the memory cap:
// a grow was refused during the call, or the guest said so (Go prints
// "fatal error: out of memory").
func (i *Instance) outOfMemory() bool {
	return i.mem.growRefused || strings.Contains(i.stderr.headString(), "out of memory")
}

// deniedRand makes WASI random_get fail with EIO (docs/ABI.md): randomness
// must come from igor.rand_bytes, which is recorded.
type deniedRand struct{}

func (deniedRand) Read([]byte) (int, error) {
	return 0, errors.New("wasmexec: WASI random_get is denied; use igor.rand_bytes")
}

// Resume restores state: it allocates len(state) bytes in the guest (via
// agent_alloc or malloc), copies state there and calls agent_resume; empty
// state calls agent_resume(0, 0). Call it once, after Instantiate and before
// the first Tick.
//
// Errors: ErrStateTooLarge (state above max_state_bytes; the instance stays
// usable), ErrResumed (a second call), ErrMissingExport (no allocation
// export for non-empty state), ErrBadPointer (the allocation lies outside
// memory), ErrTrap, ErrDeadline, ErrOutOfMemory, ErrInstanceDead, ErrClosed.
func (i *Instance) Resume(ctx context.Context, state []byte) error {
	if uint64(len(state)) > i.stateCap {
		return fmt.Errorf("%w: resume state is %d bytes, max_state_bytes is %d", ErrStateTooLarge, len(state), i.stateCap)
	}
	if err := i.begin(); err != nil {
		return err
	}
	defer i.end()
	if i.fnResume == nil {
		return fmt.Errorf("%w: Resume is called once per instance", ErrResumed)
	}
	if len(state) > 0 && i.fnAlloc == nil {
		return fmt.Errorf("%w: agent_alloc (or malloc), needed to resume a non-empty state", ErrMissingExport)
	}
	// Called once: their call engines need not live as long as the instance.
	defer func() { i.fnResume, i.fnAlloc = nil, nil }()
	if len(state) == 0 {
		_, err := i.call(ctx, "agent_resume", i.fnResume, 0, 0)
		return err
	}
	res, err := i.call(ctx, i.mod.alloc, i.fnAlloc, uint64(len(state)))
	if err != nil {
		return err
	}
	ptr := uint32(res[0])
	if ptr == 0 || !i.gm.Memory().Write(ptr, state) {
		err := fmt.Errorf("%w: %s(%d) returned %#x, outside linear memory (%d bytes)", ErrBadPointer, i.mod.alloc, len(state), ptr, i.gm.Memory().Size())
		i.kill(err)
		return err
	}
	_, err = i.call(ctx, "agent_resume", i.fnResume, uint64(ptr), uint64(len(state)))
	return err
}

// Tick runs agent_tick once, recording its observations. On error the
// result still carries the elapsed time and the observations made so far.
//
// Errors: ErrTrap, ErrDeadline, ErrOutOfMemory, ErrInstanceDead, ErrClosed,
// ErrDivergence (replay only).
func (i *Instance) Tick(ctx context.Context) (TickResult, error) {
	return i.tick(ctx, i.replay)
}

// ReplayTick runs agent_tick once in this instance with its hostcalls
// answered from log, a tick recorded earlier (by this or another instance
// of the agent, resumed from the same state): the way a new holder brings
// an agent to the state its predecessor reached before it ticks anew. The
// guest sees exactly what it saw then; log lines are not shown again.
//
// With partial false the tick must use every entry and make no other call.
// With partial true, log is a prefix of the tick (its holder stopped inside
// it): once the entries are used up the tick goes on live, recording, and
// the result's Log is the whole tick — the prefix, then the new entries.
//
// Errors: ErrBadTickLog (log is not well formed), ErrDivergence (a hostcall
// that does not match the next entry, or entries left over; the instance
// is then dead, since its state may be half a tick), and Tick's errors.
func (i *Instance) ReplayTick(ctx context.Context, log TickLog, partial bool) (TickResult, error) {
	if i.replay != nil {
		return TickResult{}, fmt.Errorf("wasmexec: ReplayTick on an instance made by Replay")
	}
	if err := checkTickLog(log); err != nil {
		return TickResult{}, err
	}
	rep := &replayState{log: log, partial: partial}
	defer func() { i.replay = nil }()
	return i.tick(ctx, rep)
}

// checkTickLog checks that l is a log a recording host produces.
func checkTickLog(l TickLog) error {
	if len(l.Entries) == 0 {
		return fmt.Errorf("%w: no entries (a tick log starts with tick_time)", ErrBadTickLog)
	}
	if len(l.Entries) > MaxTickLogEntries {
		return fmt.Errorf("%w: %d entries, the limit is %d", ErrBadTickLog, len(l.Entries), MaxTickLogEntries)
	}
	total := 0
	for k, e := range l.Entries {
		if err := checkObservation(k, e); err != nil {
			return fmt.Errorf("%w: %v", ErrBadTickLog, err)
		}
		total += len(e.Data)
	}
	if total > MaxTickLogDataBytes {
		return fmt.Errorf("%w: more than %d data bytes", ErrBadTickLog, MaxTickLogDataBytes)
	}
	if err := checkSequence(l.Entries); err != nil {
		return fmt.Errorf("%w: %v", ErrBadTickLog, err)
	}
	return nil
}

func (i *Instance) tick(ctx context.Context, rep *replayState) (TickResult, error) {
	if err := i.begin(); err != nil {
		return TickResult{}, err
	}
	defer i.end()
	var now int64
	i.replay = rep
	if rep != nil {
		now = rep.log.Entries[0].Value
		rep.pos, rep.data = 1, 0
	} else {
		now = i.clock()
		i.tickLog = make([]Observation, 1, 8)
		i.tickLog[0] = Observation{Kind: TickTime, Value: now}
		i.tickLogData = 0
	}
	i.wasiNow, i.inTick, i.tickTime = now, true, now
	start := time.Now()
	res, err := i.call(ctx, "agent_tick", i.fnTick)
	elapsed := max(time.Since(start)-i.lastPause-time.Duration(i.journalWait.Load()), 0)
	i.wasiNow, i.inTick = i.loadInstant, false
	if err == nil && i.replay != nil && !i.replay.whole && i.replay.pos != len(i.replay.log.Entries) {
		next := i.replay.log.Entries[i.replay.pos]
		err = fmt.Errorf("%w: the tick ended with %d of %d log entries unused (next: %s, value %d)",
			ErrDivergence, len(i.replay.log.Entries)-i.replay.pos, len(i.replay.log.Entries), next.Kind, next.Value)
		i.kill(err)
	}
	var tr TickResult
	switch {
	case rep == nil:
		tr = TickResult{Elapsed: elapsed, Log: TickLog{Entries: i.tickLog}}
	case i.replay == nil:
		// A partial log ran out and the tick went on live.
		tr = TickResult{Elapsed: elapsed, Log: TickLog{Entries: i.tickLog}}
	default:
		tr = TickResult{Elapsed: elapsed, Log: rep.log}
	}
	i.tickLog = nil
	_, tr.Paid = tr.Log.PaidReceipts()
	if rep != nil {
		_, tr.PaidReplayed = TickLog{Entries: rep.log.Entries[:rep.pos]}.PaidReceipts()
	}
	if err != nil {
		return tr, err
	}
	tr.More = i.mod.tickResult && uint32(res[0]) != 0
	return tr, nil
}

// Checkpoint calls agent_checkpoint and agent_checkpoint_ptr and returns a
// copy of the guest's state (empty, non-nil, for length 0).
//
// Errors: ErrStateTooLarge (length above max_state_bytes), ErrBadPointer
// (the buffer lies outside memory), each naming the export and killing the
// instance; ErrTrap, ErrDeadline, ErrOutOfMemory, ErrInstanceDead, ErrClosed.
func (i *Instance) Checkpoint(ctx context.Context) ([]byte, error) {
	if err := i.begin(); err != nil {
		return nil, err
	}
	defer i.end()
	res, err := i.call(ctx, "agent_checkpoint", i.fnCkpt)
	if err != nil {
		return nil, err
	}
	n := uint32(res[0])
	if n == 0 {
		return []byte{}, nil
	}
	if uint64(n) > i.stateCap {
		err := fmt.Errorf("%w: agent_checkpoint returned length %d (as i32: %d), max_state_bytes is %d", ErrStateTooLarge, n, int32(n), i.stateCap)
		i.kill(err)
		return nil, err
	}
	res, err = i.call(ctx, "agent_checkpoint_ptr", i.fnCkptPtr)
	if err != nil {
		return nil, err
	}
	ptr := uint32(res[0])
	buf, ok := i.gm.Memory().Read(ptr, n)
	if !ok {
		err := fmt.Errorf("%w: agent_checkpoint_ptr returned %#x; [%#x, %#x) lies outside linear memory (%d bytes)", ErrBadPointer, ptr, ptr, uint64(ptr)+uint64(n), i.gm.Memory().Size())
		i.kill(err)
		return nil, err
	}
	return append([]byte(nil), buf...), nil
}
