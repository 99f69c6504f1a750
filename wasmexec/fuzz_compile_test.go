package wasmexec

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
)

// fuzzCompileRT is one worker's runtime for FuzzCompile. Compiled modules
// live until their runtime closes, so it is replaced after a number of
// successful compilations to keep a long fuzz run's memory flat.
var (
	fuzzCompileRT *Runtime
	fuzzCompiled  int
)

// compileSeeds are small modules: valid agents (with and without a data
// section, with a granted igor import, one that loops forever in its tick)
// and near misses (a wrong signature, no memory, a foreign import, a bad
// version, a cut-off module).
func compileSeeds() [][]byte {
	fns := abiFuncs(nil, 0, 0)
	loop := abiFuncs([]byte{0x03, 0x40, 0x0c, 0x00, 0x0b, 0x41, 0x00}, 0, 0) // loop { br 0 }; i32.const 0
	clock := []wimport{{mod: igorModule, name: "clock_now", results: []byte{tI64}}}
	badSig := slices.Clone(fns)
	badSig[4] = wfunc{export: "agent_resume", params: []byte{tI32}}
	valid := assemble(nil, fns, 1, wdata{16, []byte("hello")})
	return [][]byte{
		valid,
		assemble(clock, fns, 1),
		assemble(nil, loop, 1),
		assemble(nil, badSig, 1),
		assemble(nil, fns, -1), // no memory
		assemble([]wimport{{mod: "env", name: "f"}}, fns, 1),
		append([]byte{0, 'a', 's', 'm', 2, 0, 0, 0}, valid[8:]...),
		valid[:len(valid)-3],
		[]byte("\x00asm"),
	}
}

// FuzzCompile: arbitrary bytes handed to the sandbox as a module (a publish
// request, a fetched module block) compile to a validated module or fail
// with ErrBadModule/ErrMissingExport — never a panic or a hang. A module that
// compiles is instantiated under a 1 MiB memory cap and a 100 ms call
// deadline, ticked and checkpointed: every outcome is either success or one
// of the package's sentinels, within the deadline's bound.
func FuzzCompile(f *testing.F) {
	for _, s := range compileSeeds() {
		f.Add(s)
	}
	f.Cleanup(func() {
		if fuzzCompileRT != nil {
			fuzzCompileRT.Close(context.Background())
			fuzzCompileRT = nil
		}
	})
	man := &agents.Manifest{
		Capabilities: map[string]agents.CapabilitySpec{agents.CapClock: {Version: 1}, agents.CapRand: {Version: 1},
			agents.CapLog: {Version: 1}, agents.CapArgs: {Version: 1}},
		ResourceLimits: agents.ResourceLimits{MaxMemoryBytes: 1 << 20, MaxStateBytes: 1 << 16, TickTimeoutMs: 100},
	}
	sentinels := []error{ErrBadModule, ErrMissingExport, ErrImportNotGranted, ErrDeadline, ErrOutOfMemory,
		ErrTrap, ErrInstanceDead, ErrStateTooLarge, ErrBadPointer}
	isSentinel := func(err error) bool {
		return slices.ContainsFunc(sentinels, func(s error) bool { return errors.Is(err, s) })
	}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		ctx := context.Background()
		if fuzzCompileRT == nil || fuzzCompiled >= 64 {
			if fuzzCompileRT != nil {
				if err := fuzzCompileRT.Close(ctx); err != nil {
					t.Fatal(err)
				}
			}
			r, err := NewRuntime(ctx, Config{Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			fuzzCompileRT, fuzzCompiled = r, 0
		}
		r := fuzzCompileRT
		sum := sha256.Sum256(wasm)
		key := hex.EncodeToString(sum[:])
		start := time.Now()
		m, err := r.Compile(ctx, key, wasm)
		if err != nil {
			if !errors.Is(err, ErrBadModule) && !errors.Is(err, ErrMissingExport) {
				t.Fatalf("compile error without ErrBadModule/ErrMissingExport: %v", err)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Fatalf("rejecting %d bytes took %v", len(wasm), d)
			}
			return
		}
		fuzzCompiled++
		if imps := m.Imports(); !slices.IsSorted(imps) {
			t.Fatalf("imports not sorted: %v", imps)
		}
		// The same bytes under the same key give the same module.
		if again, err := r.Compile(ctx, key, wasm); err != nil || again != m {
			t.Fatalf("second compile of the same key: %v", err)
		}
		inst, err := r.Instantiate(ctx, m, InstanceConfig{Manifest: man, Log: func(string) {}, Clock: func() int64 { return 1 },
			Rand: bytes.NewReader(make([]byte, 1<<16))})
		if err != nil {
			if !isSentinel(err) {
				t.Fatalf("instantiate error without a sentinel: %v", err)
			}
			return
		}
		defer inst.Close(ctx)
		if _, err := inst.Tick(ctx); err != nil && !isSentinel(err) {
			t.Fatalf("tick error without a sentinel: %v", err)
		}
		if state, err := inst.Checkpoint(ctx); err != nil && !isSentinel(err) {
			t.Fatalf("checkpoint error without a sentinel: %v", err)
		} else if err == nil && len(state) > 1<<16 {
			t.Fatalf("checkpoint of %d bytes passed max_state_bytes 65536", len(state))
		}
		if inst.MemoryBytes() > 1<<20 {
			t.Fatalf("instance memory %d bytes is above the 1 MiB cap", inst.MemoryBytes())
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("compile+instantiate+tick+checkpoint took %v with a 100 ms deadline", d)
		}
	})
}

// TestCompileSeeds: the first three seeds are real agents (so FuzzCompile
// starts from modules that reach instantiation), the rest are refused.
func TestCompileSeeds(t *testing.T) {
	r := newRuntime(t, Config{CacheDir: t.TempDir()})
	for i, s := range compileSeeds() {
		_, err := r.Compile(context.Background(), "seed"+string(rune('a'+i)), s)
		if (i < 3) != (err == nil) {
			t.Errorf("seed %d: %v", i, err)
		}
	}
}
