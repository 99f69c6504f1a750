package node

import (
	"context"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// BenchmarkPublishBulk publishes 100 heartbeat agents 16 at a time through 5
// in-process meshes (round robin, by module CID, as testnet/scale.sh
// does), with the host views warm; it reports agents/s. One process, so a
// CPU profile (-cpuprofile) shows where a publication's time goes on
// every side: the publisher's offers, the members' joins, the first
// holder's campaign. It logs the latency of each stage of a publication
// and the process's CPU use.
func BenchmarkPublishBulk(b *testing.B) {
	const nodes = 5
	// IGOR_PUBLISH_PARALLEL and IGOR_PUBLISH_AGENTS change the defaults
	// (16 at a time, 100 agents); IGOR_PUBLISH_PROFILE=path writes a CPU
	// profile of the timed part.
	parallel := benchEnvInt(b, "IGOR_PUBLISH_PARALLEL", 16)
	agentsN := benchEnvInt(b, "IGOR_PUBLISH_AGENTS", 100)
	ms := benchMeshes(b, nodes, 200, hosting.RunOptions{TickInterval: time.Second, CheckpointEvery: 5, Price: -1})
	waitViews(b, ms, 60*time.Second)
	ctx := context.Background()
	man, mods := heartbeatModules(b, ms)
	b.ResetTimer()
	for range b.N {
		var (
			mu  sync.Mutex
			all [][]time.Duration
		)
		// A CPU profile of the timed part only (not the meshes' start and
		// the first compile of the module on every node).
		defer startCPUProfile(b, "IGOR_PUBLISH_PROFILE")()
		start := time.Now()
		cpu0 := cpuTime()
		jobs := make(chan int)
		var wg sync.WaitGroup
		for range parallel {
			wg.Go(func() {
				for i := range jobs {
					t0 := time.Now()
					var marks []time.Duration // at each progress report, then at the end
					prog := func(string) { marks = append(marks, time.Since(t0)) }
					if _, err := ms[i%nodes].PublishModule(ctx, mods[i%nodes], man, 1_000_000_000, prog); err != nil {
						b.Error(err)
					}
					marks = append(marks, time.Since(t0))
					mu.Lock()
					all = append(all, marks)
					mu.Unlock()
				}
			})
		}
		for i := range agentsN {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		b.ReportMetric(float64(agentsN)/time.Since(start).Seconds(), "agents/s")
		// Progress reports: hosts read, agent created, group chosen, placed.
		for k, stage := range []string{"read hosts", "create the agent", "choose the group", "offers (fetch, verify, join) and kick"} {
			var ds []time.Duration
			for _, m := range all {
				if k < len(m) {
					d := m[k]
					if k > 0 {
						d -= m[k-1]
					}
					ds = append(ds, d)
				}
			}
			b.Logf("%-40s p50 %7.1f ms  p90 %7.1f ms", stage, pctMs(ds, .5), pctMs(ds, .9))
		}
		cpu, wall := cpuTime()-cpu0, time.Since(start)
		b.ReportMetric(float64(cpu.Milliseconds())/float64(agentsN), "cpu-ms/agent")
		b.Logf("CPU %.0f%% of one core over %v", 100*cpu.Seconds()/wall.Seconds(), wall.Round(time.Millisecond))
	}
}

func benchEnvInt(b *testing.B, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// heartbeatModules publishes one heartbeat agent from every mesh, so each
// node stores and compiles the module once, and returns the manifest and
// each node's module CID (to publish more by CID, as testnet/scale.sh does).
func heartbeatModules(b *testing.B, ms []*Mesh) ([]byte, []cid.Cid) {
	wasm, man := testagents.Bytes(b, "heartbeat")
	mods := make([]cid.Cid, len(ms))
	for i, m := range ms {
		res, err := m.Publish(context.Background(), wasm, man, 1_000_000_000, nil)
		if err != nil {
			b.Fatal(err)
		}
		if mods[i], err = cid.Decode(res.Module); err != nil {
			b.Fatal(err)
		}
	}
	return man, mods
}

// startCPUProfile writes a CPU profile to the path in the environment
// variable env, if set, until the returned function is called.
func startCPUProfile(b *testing.B, env string) func() {
	p := os.Getenv(env)
	if p == "" {
		return func() {}
	}
	f, err := os.Create(p)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}
