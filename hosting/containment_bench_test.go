package hosting_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// BenchmarkRunawayContainment: a node runs 8 well-behaved counter agents;
// then a runaway (hostile@loop-tick, tick_timeout_ms 50) joins and spins in
// every tick it gets, is stopped at the deadline, re-created from its last
// checkpoint and spins again, for the whole measurement window.
//
//   - containment: from the runaway tick's deadline until its instance is
//     closed. The deadline is taken as the instant the runaway logged
//     "spinning" (its tick started a few µs before) plus its tick timeout;
//     the end is the runner's log record "agent tick failed; replacing the
//     instance", written right after the failed call returned (wasmexec
//     closes a failed instance before returning the error). Outliers come
//     from scheduling: the watcher that stops the guest at its deadline is a
//     goroutine and must get a CPU.
//   - tick gap: the time between successive ticks of each good agent
//     (tick interval 5 ms + tick + commit + any delay the runaway causes);
//     p99 without the runaway, then with it, in the same run.
//
// Run: go test ./hosting -run '^$' -bench RunawayContainment -benchtime 1x
func BenchmarkRunawayContainment(b *testing.B) {
	const (
		goodAgents = 8
		window     = 3 * time.Second
		timeoutMs  = 50
	)
	run := hosting.RunOptions{TickInterval: 5 * time.Millisecond, FastInterval: 5 * time.Millisecond,
		CheckpointEvery: 5, MaxFailures: 1 << 30, Price: -1}
	n := newHNode(b, run, goodAgents+1)
	wasm, mj := testagents.Bytes(b, "counter")
	gm, err := agents.ParseManifest(mj)
	if err != nil {
		b.Fatal(err)
	}
	var good []string
	for range goodAgents {
		h, k, err := n.publish(wasm, gm)
		if err != nil {
			b.Fatal(err)
		}
		good = append(good, n.host(b, h, k))
	}
	rw, rm := tuneAgent(b, func(m *agents.Manifest) { m.ResourceLimits.TickTimeoutMs = timeoutMs })(testagents.VariantBytes(b, "hostile", "loop-tick"))
	deadline := timeoutMs * time.Millisecond

	var containMs, baseGaps, loadGaps []float64
	b.ResetTimer()
	for range b.N {
		// Without the runaway.
		t0 := time.Now()
		sleepUntil(t0.Add(window))
		t1 := time.Now()
		baseGaps = append(baseGaps, gaps(n, good, t0, t1)...)

		// With it.
		rh, rk, err := n.publish(rw, rm)
		if err != nil {
			b.Fatal(err)
		}
		did := n.host(b, rh, rk)
		pollUntil(b, "the runaway to spin", 30*time.Second, func() bool { return len(n.shown(did)) > 0 })
		t2 := time.Now()
		sleepUntil(t2.Add(window))
		t3 := time.Now()
		loadGaps = append(loadGaps, gaps(n, good, t2, t3)...)
		if _, err := n.svc.Stop(context.Background(), did, false); err != nil {
			b.Fatal(err)
		}
		n.svc.Forget(did)

		// Pair each failure record with the spin that preceded it.
		n.mu.Lock()
		spins := slices.Clone(n.lineAt[agents.ShortDID(did)])
		var fails []time.Time
		for _, r := range n.recs {
			if r.attrs["agent"] == did && strings.HasPrefix(r.msg, "agent tick failed") {
				fails = append(fails, r.time)
			}
		}
		n.mu.Unlock()
		for _, f := range fails {
			k, _ := slices.BinarySearchFunc(spins, f, func(a, t time.Time) int { return a.Compare(t) })
			if k == 0 {
				continue
			}
			containMs = append(containMs, float64(f.Sub(spins[k-1].Add(deadline)))/1e6)
		}
	}
	b.StopTimer()
	if len(containMs) == 0 || len(baseGaps) == 0 || len(loadGaps) == 0 {
		b.Fatalf("no samples: %d containments, %d/%d gaps", len(containMs), len(baseGaps), len(loadGaps))
	}
	slices.Sort(containMs)
	b.ReportMetric(pct(containMs, 50), "contain-p50-ms")
	b.ReportMetric(pct(containMs, 90), "contain-p90-ms")
	b.ReportMetric(containMs[len(containMs)-1], "contain-max-ms")
	b.ReportMetric(float64(len(containMs)), "containments")
	base, load := pctSorted(baseGaps, 99), pctSorted(loadGaps, 99)
	b.ReportMetric(base, "gap-p99-base-ms")
	b.ReportMetric(load, "gap-p99-runaway-ms")
	b.ReportMetric(load/base, "gap-p99-ratio")
	b.ReportMetric(pctSorted(baseGaps, 50), "gap-p50-base-ms")
	b.ReportMetric(pctSorted(loadGaps, 50), "gap-p50-runaway-ms")
}

// sleepUntil waits for the measurement window (the agents are measured,
// not this goroutine).
func sleepUntil(t time.Time) { time.Sleep(time.Until(t)) }

// gaps returns, in ms, the intervals between successive ticks of the
// agents within [from, to).
func gaps(n *hnode, dids []string, from, to time.Time) []float64 {
	var out []float64
	for _, did := range dids {
		var prev time.Time
		for _, t := range n.tickTimes(did) {
			if t.Before(from) || !t.Before(to) {
				continue
			}
			if !prev.IsZero() {
				out = append(out, float64(t.Sub(prev))/1e6)
			}
			prev = t
		}
	}
	return out
}

func pct(sorted []float64, p float64) float64 {
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p/100))]
}

func pctSorted(v []float64, p float64) float64 {
	v = slices.Clone(v)
	slices.Sort(v)
	return pct(v, p)
}
