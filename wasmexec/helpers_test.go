package wasmexec

import (
	"bytes"
	"context"
	"encoding/binary"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

var tmpRoot string

func TestMain(m *testing.M) {
	var err error
	if tmpRoot, err = os.MkdirTemp("", "wasmexec-test-"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(tmpRoot)
	os.Exit(code)
}

// newRuntime returns a Runtime closed at the end of the test. Unless cfg
// says otherwise, runtimes share one on-disk compilation cache, so each
// example agent is compiled once per test binary.
func newRuntime(t testing.TB, cfg Config) *Runtime {
	t.Helper()
	if cfg.CacheDir == "" {
		cfg.CacheDir = filepath.Join(tmpRoot, "cache")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	r, err := NewRuntime(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(context.Background()); err != nil {
			t.Errorf("Runtime.Close: %v", err)
		}
	})
	return r
}

// example compiles a real example agent (agents/examples/<name>) and parses
// its manifest.
func example(t testing.TB, r *Runtime, name string) (*Module, *agents.Manifest) {
	t.Helper()
	wasm, mj := testagents.Bytes(t, name)
	m, err := r.Compile(context.Background(), "example:"+name, wasm)
	if err != nil {
		t.Fatalf("compile %s: %v", name, err)
	}
	man, err := agents.ParseManifest(mj)
	if err != nil {
		t.Fatalf("manifest %s: %v", name, err)
	}
	return m, man
}

// start instantiates m and resumes it from state.
func start(t testing.TB, r *Runtime, m *Module, cfg InstanceConfig, state []byte) *Instance {
	t.Helper()
	ctx := context.Background()
	if cfg.Log == nil {
		cfg.Log = func(string) {}
	}
	inst, err := r.Instantiate(ctx, m, cfg)
	if err != nil {
		t.Fatalf("instantiate: %v", err)
	}
	t.Cleanup(func() { inst.Close(ctx) })
	if err := inst.Resume(ctx, state); err != nil {
		t.Fatalf("resume: %v", err)
	}
	return inst
}

func withLimits(m *agents.Manifest, f func(*agents.ResourceLimits)) *agents.Manifest {
	c := *m
	f(&c.ResourceLimits)
	return &c
}

var (
	probeOnce sync.Once
	probeWasm []byte
	probeErr  error
)

// probe builds testdata/probe, a test agent written against the raw ABI.
func probe(t testing.TB) []byte {
	t.Helper()
	probeOnce.Do(func() {
		out := filepath.Join(tmpRoot, "probe.wasm")
		cmd := exec.Command("go", "build", "-buildmode=c-shared", "-trimpath", "-o", out, "./testdata/probe")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if b, err := cmd.CombinedOutput(); err != nil {
			probeErr = err
			probeWasm = b
			return
		}
		probeWasm, probeErr = os.ReadFile(out)
	})
	if probeErr != nil {
		t.Fatalf("build testdata/probe: %v\n%s", probeErr, probeWasm)
	}
	return probeWasm
}

// rssBytes returns the process's resident set size (Linux).
func rssBytes(t testing.TB) uint64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		t.Skip("needs /proc/self/statm (Linux)")
	}
	f := strings.Fields(string(b))
	n, _ := strconv.ParseUint(f[1], 10, 64)
	return n * uint64(os.Getpagesize())
}

// pssBytes returns the process's proportional set size (Linux): resident
// pages, shared ones divided among the mappings that share them.
func pssBytes(t testing.TB) uint64 {
	b, err := os.ReadFile("/proc/self/smaps_rollup")
	if err != nil {
		t.Skip("needs /proc/self/smaps_rollup (Linux)")
	}
	for line := range strings.Lines(string(b)) {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "Pss:" {
			n, _ := strconv.ParseUint(f[1], 10, 64)
			return n << 10
		}
	}
	t.Skip("no Pss in smaps_rollup")
	return 0
}

// ---- a tiny WASM assembler for modules the Go toolchain cannot produce ----

type wfunc struct {
	export          string
	params, results []byte
	body            []byte // instructions, without the final end
}

type wimport struct {
	mod, name       string
	params, results []byte
}

const (
	tI32 = 0x7f
	tI64 = 0x7e
)

func uleb(v uint64) []byte { return binary.AppendUvarint(nil, v) }

func vec(items ...[]byte) []byte {
	b := uleb(uint64(len(items)))
	for _, it := range items {
		b = append(b, it...)
	}
	return b
}

func name(s string) []byte { return append(uleb(uint64(len(s))), s...) }

func section(id byte, body []byte) []byte {
	return append(append([]byte{id}, uleb(uint64(len(body)))...), body...)
}

func functype(params, results []byte) []byte {
	b := []byte{0x60}
	b = append(b, uleb(uint64(len(params)))...)
	b = append(b, params...)
	b = append(b, uleb(uint64(len(results)))...)
	return append(b, results...)
}

// i32c is i32.const v.
func i32c(v int32) []byte { return appendSleb([]byte{0x41}, int64(v)) }

// call is call f.
func call(f int) []byte { return append([]byte{0x10}, uleb(uint64(f))...) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	opDrop     = []byte{0x1a}
	opI32Store = []byte{0x36, 0x02, 0x00}
	opI64Store = []byte{0x37, 0x03, 0x00}
)

// assemble builds a module with the given imports and functions (function
// index = len(imps) + position), one memory of memPages exported as
// "memory" (unless memPages < 0), and optional data segments at offsets.
type wdata struct {
	off int32
	b   []byte
}

func assemble(imps []wimport, fns []wfunc, memPages int, data ...wdata) []byte {
	var types, imports, funcs, exports, codes [][]byte
	for _, im := range imps {
		imports = append(imports, cat(name(im.mod), name(im.name), []byte{0x00}, uleb(uint64(len(types)))))
		types = append(types, functype(im.params, im.results))
	}
	for i, f := range fns {
		funcs = append(funcs, uleb(uint64(len(types))))
		types = append(types, functype(f.params, f.results))
		if f.export != "" {
			exports = append(exports, cat(name(f.export), []byte{0x00}, uleb(uint64(len(imps)+i))))
		}
		body := cat([]byte{0x00}, f.body, []byte{0x0b}) // no locals
		codes = append(codes, append(uleb(uint64(len(body))), body...))
	}
	out := []byte{0x00, 'a', 's', 'm', 0x01, 0x00, 0x00, 0x00}
	out = append(out, section(1, vec(types...))...)
	if len(imports) > 0 {
		out = append(out, section(2, vec(imports...))...)
	}
	out = append(out, section(3, vec(funcs...))...)
	if memPages >= 0 {
		out = append(out, section(5, vec(cat([]byte{0x00}, uleb(uint64(memPages)))))...)
		exports = append(exports, cat(name("memory"), []byte{0x02, 0x00}))
	}
	out = append(out, section(7, vec(exports...))...)
	out = append(out, section(10, vec(codes...))...)
	if len(data) > 0 {
		var segs [][]byte
		for _, d := range data {
			segs = append(segs, cat([]byte{0x00}, i32c(d.off), []byte{0x0b}, uleb(uint64(len(d.b))), d.b))
		}
		out = append(out, section(11, vec(segs...))...)
	}
	return out
}

// abiFuncs returns minimal implementations of the required exports:
// state is the ckptLen bytes at ckptPtr.
func abiFuncs(tickBody []byte, ckptPtr, ckptLen int32) []wfunc {
	if tickBody == nil {
		tickBody = i32c(0)
	}
	return []wfunc{
		{export: "agent_init"},
		{export: "agent_tick", results: []byte{tI32}, body: tickBody},
		{export: "agent_checkpoint", results: []byte{tI32}, body: i32c(ckptLen)},
		{export: "agent_checkpoint_ptr", results: []byte{tI32}, body: i32c(ckptPtr)},
		{export: "agent_resume", params: []byte{tI32, tI32}},
		{export: "agent_alloc", params: []byte{tI32}, results: []byte{tI32}, body: i32c(8192)},
	}
}

// appendSleb appends v as signed LEB128.
func appendSleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}
