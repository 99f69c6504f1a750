package wasmexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// Config configures a Runtime.
type Config struct {
	// CacheDir holds wazero's on-disk compilation cache, so a module compiled
	// once is loaded in milliseconds after a restart. "" keeps the cache in
	// memory only.
	CacheDir string
	// Logger receives guest stdout/stderr and, unless an instance sets its
	// own Log, the agents' log_emit lines. nil means slog.Default().
	Logger *slog.Logger
	// CloseOnDeadline stops a guest call at its deadline (nil means true).
	// Without it a runaway loop cannot be stopped at all; turn it off only to
	// measure what it costs.
	CloseOnDeadline *bool
	// AgentLogRate and AgentLogBurst bound, per agent (the instances of one
	// AgentDID share a bucket), how many agent log lines (log_emit, and
	// guest stdout/stderr lines) reach the node's log:
	// a token bucket refilled at AgentLogRate lines per second holding at
	// most AgentLogBurst lines. Lines over the limit are only kept out of
	// the node's log (log_emit lines are still recorded in the tick log),
	// counted (LogLinesDropped) and reported by one warning per second.
	// Zero means the default (DefaultAgentLogRate, DefaultAgentLogBurst);
	// negative, NaN or infinite values are ErrBadConfig.
	AgentLogRate  float64
	AgentLogBurst int
}

// Runtime compiles and runs agent modules. Use one per node: every instance
// shares its wazero runtime, the `igor` host module and the compilation
// cache. It is safe for concurrent use.
type Runtime struct {
	wz     wazero.Runtime
	cache  wazero.CompilationCache
	logger *slog.Logger
	// wasiFuncs are the functions wazero's WASI module exports, to reject an
	// unknown WASI import at Compile with a clear message.
	wasiFuncs map[string]api.FunctionDefinition
	seq       atomic.Uint64 // unique guest module names
	// logRate, logBurst: the agent log rate limit of each agent.
	logRate    float64
	logBurst   int
	logDropped atomic.Uint64 // lines dropped by the rate limit, all instances
	// httpRT: the transport of http_request (newHTTPTransport), made on
	// first use.
	httpOnce sync.Once
	httpRT   *http.Transport

	mu        sync.Mutex
	closed    bool
	modules   map[string]*compileEntry // guarded by mu
	instances map[*Instance]struct{}   // live instances, guarded by mu
	// limiters: the agent log buckets by DID; idleLimiters: those no live
	// instance uses, dropped once refilled. Guarded by mu.
	limiters, idleLimiters map[string]*logLimiter
	inflight               int           // operations using guest memory or code, guarded by mu
	idle                   chan struct{} // closed when closed && inflight == 0
}

// httpTransport returns the Runtime's transport for http_request.
func (r *Runtime) httpTransport() *http.Transport {
	r.httpOnce.Do(func() { r.httpRT = newHTTPTransport() })
	return r.httpRT
}

type compileEntry struct {
	done chan struct{}
	mod  *Module
	err  error
}

// wasmPageLimit is wazero's runtime-wide memory limit: the 64 MiB ABI cap.
// Lower per-manifest caps are enforced per instance by linearMemory.
const wasmPageLimit = 1024

// NewRuntime creates a Runtime. Close it to release compiled code. It fails
// with ErrBadConfig for an out-of-range Config field, or if the cache
// directory cannot be created or wazero's host modules cannot be
// instantiated.
func NewRuntime(ctx context.Context, cfg Config) (_ *Runtime, err error) {
	rate, burst, err := logLimits(cfg)
	if err != nil {
		return nil, err
	}
	r := &Runtime{
		logRate:   rate,
		logBurst:  burst,
		logger:    cfg.Logger,
		modules:   make(map[string]*compileEntry),
		instances: make(map[*Instance]struct{}),
		idle:      make(chan struct{}),

		limiters:     make(map[string]*logLimiter),
		idleLimiters: make(map[string]*logLimiter),
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	if cfg.CacheDir != "" {
		if r.cache, err = wazero.NewCompilationCacheWithDir(cfg.CacheDir); err != nil {
			return nil, fmt.Errorf("wasmexec: compilation cache %s: %w", cfg.CacheDir, err)
		}
	} else {
		r.cache = wazero.NewCompilationCache()
	}
	closeOnDeadline := cfg.CloseOnDeadline == nil || *cfg.CloseOnDeadline
	rc := wazero.NewRuntimeConfig().
		WithCompilationCache(r.cache).
		WithMemoryLimitPages(wasmPageLimit).
		WithCloseOnContextDone(closeOnDeadline)
	r.wz = wazero.NewRuntimeWithConfig(ctx, rc)
	defer func() {
		if err != nil {
			err = errors.Join(err, r.wz.Close(ctx), r.cache.Close(ctx))
		}
	}()
	wasi, err := wasi_snapshot_preview1.Instantiate(ctx, r.wz)
	if err != nil {
		return nil, fmt.Errorf("wasmexec: instantiate WASI: %w", err)
	}
	r.wasiFuncs = wasi.(api.Module).ExportedFunctionDefinitions()
	if err := instantiateHostModule(ctx, r.wz); err != nil {
		return nil, fmt.Errorf("wasmexec: instantiate igor host module: %w", err)
	}
	return r, nil
}

// Close stops every live instance (a running call ends at its next loop
// head or call), waits until in-flight calls have returned or ctx ends, then
// releases compiled code and the in-memory cache. Idempotent. If ctx ends
// first it returns ctx's error and leaves the wazero runtime open, because
// freeing code under a running guest would crash the process.
func (r *Runtime) Close(ctx context.Context) error {
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return r.waitIdle(ctx)
	}
	r.closed = true
	insts := make([]*Instance, 0, len(r.instances))
	for inst := range r.instances {
		insts = append(insts, inst)
	}
	if r.inflight == 0 {
		close(r.idle)
	}
	r.mu.Unlock()
	for _, inst := range insts {
		_ = inst.Close(ctx)
	}
	if err := r.waitIdle(ctx); err != nil {
		return err
	}
	errs := []error{r.wz.Close(ctx), r.cache.Close(ctx)}
	r.mu.Lock()
	for _, e := range r.modules {
		select {
		case <-e.done:
			if e.mod != nil {
				errs = append(errs, e.mod.image.close())
			}
		default: // cannot happen: Close waited for compilations
		}
	}
	r.mu.Unlock()
	return errors.Join(errs...)
}

func (r *Runtime) waitIdle(ctx context.Context) error {
	select {
	case <-r.idle:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("wasmexec: close: waiting for running guest calls: %w", ctx.Err())
	}
}

// enter registers an operation that touches guest code or memory, so Close
// waits for it. It fails with ErrClosed after Close.
func (r *Runtime) enter() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return fmt.Errorf("%w: runtime closed", ErrClosed)
	}
	r.inflight++
	return nil
}

func (r *Runtime) exit() {
	r.mu.Lock()
	r.inflight--
	if r.closed && r.inflight == 0 {
		close(r.idle)
	}
	r.mu.Unlock()
}

// Module is a compiled, validated agent module, shared by all its instances.
type Module struct {
	rt      *Runtime
	key     string
	cm      wazero.CompiledModule
	imports []string // "module.name", sorted
	// igorImports are the igor functions the module imports.
	igorImports []string
	// tickResult is whether agent_tick returns an i32 (it may return nothing).
	tickResult bool
	// alloc is the allocation export (agent_alloc or malloc), "" if none.
	alloc string
	// initialize is whether the module exports _initialize.
	initialize bool
	// minMemory is the initial size of linear memory in bytes.
	minMemory uint64
	// image is the initial memory image taken out of the module's data
	// section (dataimage.go), or nil if the module kept its data section.
	image *memImage
}

// Key returns the key the module was compiled under (its CID).
func (m *Module) Key() string { return m.key }

// Imports lists the module's function imports as "module.name", sorted
// (e.g. "igor.clock_now", "wasi_snapshot_preview1.fd_write").
func (m *Module) Imports() []string { return slices.Clone(m.imports) }

// Compile compiles and validates wasm once per key (the module's CID, which
// the caller has verified against the bytes) and returns the shared Module.
// Concurrent callers with the same key wait for one compilation; a failed
// compilation is not cached. Compiled modules live until the Runtime closes.
//
// Errors: ErrBadModule (not WASM, invalid, a foreign or unknown import, an
// export with the wrong signature), ErrMissingExport (names the export),
// ErrClosed, or ctx's error while waiting for another caller's compilation.
func (r *Runtime) Compile(ctx context.Context, key string, wasm []byte) (*Module, error) {
	if key == "" {
		return nil, fmt.Errorf("%w: empty module key", ErrBadModule)
	}
	r.mu.Lock()
	if r.closed {
		r.mu.Unlock()
		return nil, fmt.Errorf("%w: runtime closed", ErrClosed)
	}
	if e, ok := r.modules[key]; ok {
		r.mu.Unlock()
		select {
		case <-e.done:
			return e.mod, e.err
		case <-ctx.Done():
			return nil, fmt.Errorf("wasmexec: waiting for compilation of %s: %w", key, ctx.Err())
		}
	}
	e := &compileEntry{done: make(chan struct{})}
	r.modules[key] = e
	r.inflight++ // Close must not free the runtime under a compilation
	r.mu.Unlock()

	e.mod, e.err = r.compile(ctx, key, wasm)
	r.mu.Lock()
	if e.err != nil {
		delete(r.modules, key)
	}
	r.mu.Unlock()
	close(e.done)
	r.exit()
	return e.mod, e.err
}

// Compiled returns the module compiled under key, if a compilation of it
// finished successfully: a caller that holds only the key (a content
// address) can skip reading the module's bytes. It does not wait for a
// compilation in flight.
func (r *Runtime) Compiled(key string) (*Module, bool) {
	r.mu.Lock()
	e, ok := r.modules[key]
	r.mu.Unlock()
	if !ok {
		return nil, false
	}
	select {
	case <-e.done:
		return e.mod, e.err == nil
	default:
		return nil, false
	}
}

// useDataImage and useMemoryAllocator are on in production; tests and
// benchmarks turn them off only to measure what they save. Without the
// allocator the per-instance memory cap falls back to wazero's 64 MiB.
var (
	useDataImage       = true
	useMemoryAllocator = true
)

var wasmMagic = []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}

func (r *Runtime) compile(ctx context.Context, key string, wasm []byte) (*Module, error) {
	if len(wasm) < len(wasmMagic) || !bytes.Equal(wasm[:4], wasmMagic[:4]) {
		return nil, fmt.Errorf("%w: %s is not a WebAssembly binary (no \\0asm header)", ErrBadModule, key)
	}
	if !bytes.Equal(wasm[4:8], wasmMagic[4:]) {
		return nil, fmt.Errorf("%w: %s: WebAssembly binary version %x, only version 1 is supported", ErrBadModule, key, wasm[4:8])
	}
	if err := checkVectorCounts(key, wasm); err != nil {
		return nil, err
	}
	b, image := wasm, []byte(nil)
	if useDataImage && useMemoryAllocator {
		b, image = extractDataImage(wasm)
	}
	cm, err := r.wz.CompileModule(ctx, b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadModule, key, err)
	}
	m := &Module{rt: r, key: key, cm: cm}
	if err := r.validate(m); err != nil {
		_ = cm.Close(ctx)
		return nil, err
	}
	if image != nil {
		m.image = newMemImage(image)
	}
	return m, nil
}

var (
	i32 = api.ValueTypeI32
	i64 = api.ValueTypeI64
)

type signature struct{ params, results []api.ValueType }

func (s signature) String() string {
	return fmt.Sprintf("(%s) -> (%s)", typeNames(s.params), typeNames(s.results))
}

func typeNames(ts []api.ValueType) string {
	var b []byte
	for i, t := range ts {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = append(b, api.ValueTypeName(t)...)
	}
	return string(b)
}

func sigOf(d api.FunctionDefinition) signature {
	return signature{d.ParamTypes(), d.ResultTypes()}
}

func (s signature) equal(o signature) bool {
	return slices.Equal(s.params, o.params) && slices.Equal(s.results, o.results)
}

// requiredExports are the ABI's required function exports, in the order
// they are checked (and reported).
var requiredExports = []struct {
	name string
	sigs []signature
}{
	{"agent_init", []signature{{}}},
	{"agent_tick", []signature{{results: []api.ValueType{i32}}, {}}},
	{"agent_checkpoint", []signature{{results: []api.ValueType{i32}}}},
	{"agent_checkpoint_ptr", []signature{{results: []api.ValueType{i32}}}},
	{"agent_resume", []signature{{params: []api.ValueType{i32, i32}}}},
}

var allocSig = signature{params: []api.ValueType{i32}, results: []api.ValueType{i32}}

// validate checks the module against docs/ABI.md.
func (r *Runtime) validate(m *Module) error {
	exports := m.cm.ExportedFunctions()
	for _, req := range requiredExports {
		d, ok := exports[req.name]
		if !ok {
			return fmt.Errorf("%w: %s (module %s)", ErrMissingExport, req.name, m.key)
		}
		if !slices.ContainsFunc(req.sigs, sigOf(d).equal) {
			return fmt.Errorf("%w: %s: export %s has signature %s, want %s", ErrBadModule, m.key, req.name, sigOf(d), req.sigs[0])
		}
	}
	m.tickResult = len(exports["agent_tick"].ResultTypes()) == 1
	for _, name := range []string{"agent_alloc", "malloc"} {
		if d, ok := exports[name]; ok {
			if !sigOf(d).equal(allocSig) {
				return fmt.Errorf("%w: %s: export %s has signature %s, want %s", ErrBadModule, m.key, name, sigOf(d), allocSig)
			}
			m.alloc = name
			break
		}
	}
	if d, ok := exports["_initialize"]; ok {
		if !sigOf(d).equal(signature{}) {
			return fmt.Errorf("%w: %s: export _initialize has signature %s, want ()", ErrBadModule, m.key, sigOf(d))
		}
		m.initialize = true
	}
	mem, ok := m.cm.ExportedMemories()["memory"]
	if !ok {
		return fmt.Errorf("%w: memory (module %s)", ErrMissingExport, m.key)
	}
	m.minMemory = uint64(mem.Min()) << 16
	if len(m.cm.ImportedMemories()) > 0 {
		return fmt.Errorf("%w: %s imports its memory; an agent must define and export its own", ErrBadModule, m.key)
	}
	for _, d := range m.cm.ImportedFunctions() {
		mod, name, _ := d.Import()
		full := mod + "." + name
		m.imports = append(m.imports, full)
		var want signature
		switch mod {
		case igorModule:
			hf, ok := igorFuncs[name]
			if !ok {
				return fmt.Errorf("%w: %s imports %s, which this node does not provide (igor provides: %s)", ErrBadModule, m.key, full, igorFuncNames())
			}
			want = hf.sig
			m.igorImports = append(m.igorImports, name)
		case wasi_snapshot_preview1.ModuleName:
			wd, ok := r.wasiFuncs[name]
			if !ok {
				return fmt.Errorf("%w: %s imports %s, which is not a WASI preview 1 function", ErrBadModule, m.key, full)
			}
			want = sigOf(wd)
		default:
			return fmt.Errorf("%w: %s imports %s: only modules %q and %q can be imported", ErrBadModule, m.key, full, igorModule, wasi_snapshot_preview1.ModuleName)
		}
		if got := sigOf(d); !got.equal(want) {
			return fmt.Errorf("%w: %s imports %s with signature %s, want %s", ErrBadModule, m.key, full, got, want)
		}
	}
	slices.Sort(m.imports)
	m.imports = slices.Compact(m.imports)
	slices.Sort(m.igorImports)
	m.igorImports = slices.Compact(m.igorImports)
	return nil
}
