package node

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/hosting"
)

// BenchmarkSteadyState is testnet/scale.sh's steady state in one process:
// 3 meshes, IGOR_STEADY_AGENTS heartbeat agents (default 150; 1 s ticks, a
// checkpoint every 5) in custody groups of 3, so each node holds a third and
// stands by for the rest. Once every agent runs it measures the process's
// CPU over IGOR_STEADY_SECONDS (default 10) and reports CPU ms per
// agent-second — the figure — and the Go heap per membership.
// IGOR_STEADY_PROFILE=path writes a CPU profile of the measured window only;
// IGOR_STEADY_CHECKPOINT_EVERY=N changes the checkpoint interval (a large N
// leaves the lease traffic and the ticks alone) and IGOR_STEADY_TICK_MS the
// tick interval (a large one, with a large N, leaves the lease traffic
// alone; the figure is still per agent-second of wall time). Besides CPU it reports
// allocations per agent-second, which vary less between runs.
//
// One process carries all three nodes (one GC, one scheduler), and agent
// log lines go to the test's logger; testnet/scale.sh measures separate
// daemons. Use this to compare builds and to profile, the testnet for the
// figures in BENCHMARKS.md.
func BenchmarkSteadyState(b *testing.B) {
	const nodes = 3
	agentsN := benchEnvInt(b, "IGOR_STEADY_AGENTS", 150)
	window := time.Duration(benchEnvInt(b, "IGOR_STEADY_SECONDS", 10)) * time.Second
	ms := benchMeshes(b, nodes, agentsN, hosting.RunOptions{
		TickInterval:    time.Duration(benchEnvInt(b, "IGOR_STEADY_TICK_MS", 1000)) * time.Millisecond,
		CheckpointEvery: uint64(benchEnvInt(b, "IGOR_STEADY_CHECKPOINT_EVERY", 5)), Price: -1})
	waitViews(b, ms, 60*time.Second)
	ctx := context.Background()
	man, mods := heartbeatModules(b, ms)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range jobs {
				if _, err := ms[i%nodes].PublishModule(ctx, mods[i%nodes], man, 1_000_000_000, nil); err != nil {
					b.Error(err)
				}
			}
		})
	}
	for i := range agentsN - nodes {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	running := func() (run, members int) {
		for _, m := range ms {
			for _, s := range m.Custody.Status() {
				members++
				if s.Running {
					run++
				}
			}
		}
		return run, members
	}
	eventually(b, "every agent running", 2*time.Minute, func() error {
		if r, _ := running(); r != agentsN {
			return fmt.Errorf("%d of %d agents running", r, agentsN)
		}
		return nil
	})
	time.Sleep(5 * time.Second) // first commits, head records, pins
	b.ResetTimer()
	for range b.N {
		defer startCPUProfile(b, "IGOR_STEADY_PROFILE")()
		var m0 runtime.MemStats
		runtime.ReadMemStats(&m0)
		cpu0, t0 := cpuTime(), time.Now()
		time.Sleep(window)
		cpu, wall := cpuTime()-cpu0, time.Since(t0)
		r, members := running()
		if r != agentsN {
			b.Errorf("%d of %d agents running at the end of the window", r, agentsN)
		}
		var mst runtime.MemStats
		runtime.ReadMemStats(&mst)
		b.ReportMetric(float64(cpu.Microseconds())/1000/(float64(agentsN)*wall.Seconds()), "cpu-ms/agent-s")
		b.ReportMetric(100*cpu.Seconds()/wall.Seconds(), "%core")
		b.ReportMetric(float64(mst.HeapInuse)/float64(members)/(1<<20), "heap-MiB/membership")
		// Allocation is steadier than CPU time on a shared machine, and
		// most of the per-message cost: a second figure to compare builds.
		b.ReportMetric(float64(mst.Mallocs-m0.Mallocs)/(float64(agentsN)*wall.Seconds()), "allocs/agent-s")
		b.ReportMetric(float64(mst.TotalAlloc-m0.TotalAlloc)/(float64(agentsN)*wall.Seconds())/1024, "KiB-alloc/agent-s")
	}
}
