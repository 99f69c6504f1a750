package wasmexec

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// BenchmarkTick measures one Tick: "empty" is a hand-written module whose
// agent_tick returns at once (pure host cost: deadline context, hostcall
// context, tick log, wazero call), "counter" the counter example (a Go
// guest, one trivial tick). Each with close-on-deadline on and off, to
// show what stopping runaway guests costs per call.
func BenchmarkTick(b *testing.B) {
	for _, agent := range []string{"empty", "counter"} {
		for _, closeOn := range []bool{true, false} {
			b.Run(fmt.Sprintf("%s/close-on-deadline=%v", agent, closeOn), func(b *testing.B) {
				r := newRuntime(b, Config{CloseOnDeadline: &closeOn})
				var m *Module
				man := &agents.Manifest{}
				if agent == "empty" {
					var err error
					if m, err = r.Compile(bg, "empty", assemble(nil, abiFuncs(nil, 0, 0), 1)); err != nil {
						b.Fatal(err)
					}
				} else {
					m, man = example(b, r, agent)
				}
				inst := start(b, r, m, InstanceConfig{Manifest: man}, nil)
				b.ReportAllocs()
				b.ResetTimer()
				for b.Loop() {
					if _, err := inst.Tick(bg); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkCompile compiles the counter agent in a fresh Runtime twice per
// iteration: cold (empty on-disk cache) and again in another fresh Runtime
// with the cache the first one filled, as after a node restart.
func BenchmarkCompile(b *testing.B) {
	wasm, _ := testagents.Bytes(b, "counter")
	var cold, hit time.Duration
	for b.Loop() {
		dir := b.TempDir()
		for k := range 2 {
			r, err := NewRuntime(bg, Config{CacheDir: dir})
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if _, err := r.Compile(bg, "counter", wasm); err != nil {
				b.Fatal(err)
			}
			if k == 0 {
				cold += time.Since(t0)
			} else {
				hit += time.Since(t0)
			}
			r.Close(bg)
		}
	}
	n := float64(b.N)
	b.ReportMetric(float64(cold.Milliseconds())/n, "cold-ms")
	b.ReportMetric(float64(hit.Microseconds())/1e3/n, "cache-hit-ms")
	b.ReportMetric(float64(cold)/float64(hit), "speedup-x")
}

// BenchmarkInstantiateResume measures bringing a Go agent back from a
// checkpoint: instantiate (_initialize, agent_init) + agent_resume with a
// 4 KiB state, then close.
func BenchmarkInstantiateResume(b *testing.B) {
	r := newRuntime(b, Config{})
	m, man := example(b, r, "counter")
	c := *man
	c.Args = "state_size=4096"
	src := start(b, r, m, InstanceConfig{Manifest: &c}, nil)
	if _, err := src.Tick(bg); err != nil {
		b.Fatal(err)
	}
	state, err := src.Checkpoint(bg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		inst, err := r.Instantiate(bg, m, InstanceConfig{Manifest: &c, Log: func(string) {}})
		if err != nil {
			b.Fatal(err)
		}
		if err := inst.Resume(bg, state); err != nil {
			b.Fatal(err)
		}
		inst.Close(bg)
	}
}

// BenchmarkInstanceMemory measures the memory 100 live counter instances
// (instantiated, resumed, ticked once) add to the process, per instance:
// RSS (every mapping of a shared page counted in full) and PSS (shared pages
// divided among their mappings, the honest figure with data images). The
// variants switch off the data image and the mmap allocator to show what
// each saves; "wazero-default" is wazero's own []byte memory.
func BenchmarkInstanceMemory(b *testing.B) {
	const n = 100
	for _, v := range []struct {
		name             string
		image, allocator bool
	}{
		{"igor", true, true},
		{"no-data-image", false, true},
		{"wazero-default", false, false},
	} {
		b.Run(v.name, func(b *testing.B) {
			useDataImage, useMemoryAllocator = v.image, v.allocator
			defer func() { useDataImage, useMemoryAllocator = true, true }()
			var rss, pss float64
			for b.Loop() {
				r, err := NewRuntime(bg, Config{Logger: nil})
				if err != nil {
					b.Fatal(err)
				}
				m, man := example(b, r, "counter")
				// One instance first, so one-off costs are not counted.
				start(b, r, m, InstanceConfig{Manifest: man}, nil).Close(bg)
				rss0, pss0 := settledMemory(b)
				insts := make([]*Instance, n)
				for k := range insts {
					insts[k] = start(b, r, m, InstanceConfig{Manifest: man}, nil)
					if _, err := insts[k].Tick(bg); err != nil {
						b.Fatal(err)
					}
				}
				rss1, pss1 := settledMemory(b)
				rss += float64(rss1-rss0) / n
				pss += float64(pss1-pss0) / n
				r.Close(context.Background())
			}
			b.ReportMetric(rss/float64(b.N)/1e6, "RSS-MB/instance")
			b.ReportMetric(pss/float64(b.N)/1e6, "PSS-MB/instance")
		})
	}
}

func settledMemory(b *testing.B) (rss, pss uint64) {
	runtime.GC()
	debug.FreeOSMemory()
	return rssBytes(b), pssBytes(b)
}
