package node

// Mesh benchmarks. Each one builds a real in-process mesh on loopback, so a
// run is one long series, not b.N repetitions of a small operation: the
// figures are the custom metrics (p50/p99 in ms and ratios to a baseline
// measured in the same run); ns/op is suppressed. Run with
//
//	go test ./node -run '^$' -bench 'PublishToFirstTick|QueryByDID' -benchtime 1x -timeout 20m
//
// (with the default -benchtime=1s each benchmark also runs exactly once,
// since its single run takes longer than that).

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// benchMeshes is startMeshes for any testing.TB, with the run options given:
// n real mesh nodes on loopback, all bootstrapped from node 0.
func benchMeshes(tb testing.TB, n, slots int, run hosting.RunOptions) []*Mesh {
	tb.Helper()
	var ms []*Mesh
	for i := 0; i < n; i++ {
		cfg := MeshConfig{Home: tb.TempDir(), Slots: slots, Price: 1000, Logger: quietLogger(), Run: run}
		if i > 0 {
			cfg.Bootstrap = []string{ms[0].PeerAddrs()[0]}
		}
		m, err := StartMesh(context.Background(), cfg)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	return ms
}

// pollUntil calls cond every interval until it returns nil, failing tb
// after d with cond's last error.
func pollUntil(tb testing.TB, what string, d, interval time.Duration, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(interval)
	}
}

// waitSeesHosts waits until m's Hosts lists at least want hosts. Only the
// publisher needs the full list (placement ranks what it sees), so the
// benchmarks wait on it alone rather than on every node as waitHosts does.
func waitSeesHosts(tb testing.TB, m *Mesh, want int, d time.Duration) {
	tb.Helper()
	pollUntil(tb, fmt.Sprintf("the publisher to see %d hosts", want), d, 50*time.Millisecond, func() error {
		hs, err := m.Hosts(context.Background())
		if err != nil {
			return err
		}
		if len(hs) < want {
			return fmt.Errorf("sees %d hosts", len(hs))
		}
		return nil
	})
}

// pctMs is the nearest-rank p-th percentile (0 < p ≤ 1) of ds, in ms; NaN
// for no samples.
func pctMs(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return math.NaN()
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return float64(s[max(i, 0)].Nanoseconds()) / 1e6
}

// localFirstTick is the no-network baseline of publish-to-first-tick: on one
// node, create the agent (store module, compile, genesis, checkpoint 0),
// load it (verify lineage, compile — cached by then) and run it until its
// first tick is committed, exactly the work a holder does minus the mesh.
func localFirstTick(tb testing.TB, l *Local, wasm, man []byte) time.Duration {
	tb.Helper()
	ctx := context.Background()
	// A mesh node's runtime exists before any lease arrives: keep its
	// creation out of the baseline.
	if _, err := l.Runtime(ctx); err != nil {
		tb.Fatal(err)
	}
	t0 := time.Now()
	did, _, err := l.CreateAgent(ctx, wasm, man, 1_000_000_000, 1000, nil)
	if err != nil {
		tb.Fatal(err)
	}
	a, env, err := l.LoadAgent(ctx, did, nil)
	if err != nil {
		tb.Fatal(err)
	}
	res, err := hosting.Run(ctx, env, a, hosting.RunOptions{CheckpointEvery: 1, MaxTicks: 1, Price: -1})
	if err != nil {
		tb.Fatal(err)
	}
	d := time.Since(t0)
	if res.Head.Checkpoint.Tick != 1 {
		tb.Fatalf("local run committed tick %d, want 1", res.Head.Checkpoint.Tick)
	}
	return d
}

// BenchmarkPublishToFirstTick measures, on a 10-node mesh, the wall time
// from calling Publish on node 0 (heartbeat agent) to the chosen holder
// reporting a committed tick ≥ 1 (polled every 1 ms). It publishes new
// agents of the same module until it has enough samples of each kind:
//
//   - first: the very first publish: both the publisher (CreateAgent) and
//     the holder compile the module cold (one sample).
//   - cold: the holder's runtime compiles the module for the first time;
//     the publisher already has it compiled.
//   - warm: the holder has compiled the module before (it hosted an earlier
//     agent of it, or it is the publisher).
//
// Baseline in the same run: localFirstTick on a fresh node (cold: one cold
// compile, like "cold" here) and again on the same node (warm). x-local is
// mesh/local at p50. hosts-p50-ms is one Hosts() call (the DHT lookups that
// start every Publish), timed just before each publish;
// warm-publish-return-p50-ms is when Publish returned (the holder accepted
// the lease and started the agent). Target: warm ≤ 0.5 s.
//
// Hosted agents tick every 10 s: the first tick runs as soon as the agent
// starts whatever the interval (the run loop's timer starts at zero), and
// a short interval would only add background load from earlier agents.
func BenchmarkPublishToFirstTick(b *testing.B) {
	const (
		nodes      = 10
		minCold    = 5
		minWarm    = 10
		maxPublish = 30
		seriesCap  = 45 * time.Second
	)
	ctx := context.Background()
	wasm, man := testagents.Bytes(b, "heartbeat")
	setup := time.Now()
	ms := benchMeshes(b, nodes, 16, hosting.RunOptions{TickInterval: 10 * time.Second, CheckpointEvery: 1, Price: -1})
	waitSeesHosts(b, ms[0], nodes, 60*time.Second)
	b.ReportMetric(time.Since(setup).Seconds(), "setup-s")
	byPeer := map[string]*Mesh{}
	for _, m := range ms {
		byPeer[m.PeerID()] = m
	}

	// Baseline, with the mesh up (idle) as the mesh figures will be.
	var localCold, localWarm []time.Duration
	for i := 0; i < 3; i++ {
		l, err := OpenLocal(b.TempDir(), quietLogger())
		if err != nil {
			b.Fatal(err)
		}
		localCold = append(localCold, localFirstTick(b, l, wasm, man))
		if i == 0 {
			for j := 0; j < 5; j++ {
				localWarm = append(localWarm, localFirstTick(b, l, wasm, man))
			}
		}
		l.Close()
	}

	compiled := map[string]bool{}
	var first time.Duration
	var cold, warm, hostsD, warmReturned []time.Duration
	firstSelf := false
	end := time.Now().Add(seriesCap)
	for i := 0; i < maxPublish && (len(cold) < minCold || len(warm) < minWarm) && time.Now().Before(end); i++ {
		t0 := time.Now()
		if _, err := ms[0].Hosts(ctx); err != nil {
			b.Fatal(err)
		}
		hostsD = append(hostsD, time.Since(t0))

		t0 = time.Now()
		res, err := ms[0].Publish(ctx, wasm, man, 1_000_000_000, nil)
		if err != nil {
			b.Fatalf("publish %d: %v", i, err)
		}
		ret := time.Since(t0)
		holder := byPeer[res.Holder]
		if holder == nil {
			b.Fatalf("holder %s is not a mesh node", res.Holder)
		}
		pollUntil(b, "the first committed tick of "+res.DID, 30*time.Second, time.Millisecond, func() error {
			st, ok := holder.Svc.Status(res.DID)
			if !ok {
				return errors.New("not hosted")
			}
			if st.Tick < 1 {
				if !st.Running {
					return fmt.Errorf("stopped: %s %s", st.StopReason, st.Error)
				}
				return fmt.Errorf("tick %d", st.Tick)
			}
			return nil
		})
		d := time.Since(t0)
		switch {
		case i == 0:
			first, firstSelf = d, res.Holder == ms[0].PeerID()
			compiled[ms[0].PeerID()] = true // CreateAgent compiled it there
		case compiled[res.Holder]:
			warm = append(warm, d)
			warmReturned = append(warmReturned, ret)
		default:
			cold = append(cold, d)
		}
		compiled[res.Holder] = true
	}
	b.Logf("%d publishes: first %v (holder is the publisher: %v), cold %v, warm %v; local cold %v, warm %v; hosts %v",
		1+len(cold)+len(warm), first, firstSelf, cold, warm, localCold, localWarm, hostsD)
	if len(cold) == 0 || len(warm) == 0 {
		b.Errorf("not enough samples: %d cold, %d warm", len(cold), len(warm))
	}
	lc, lw := pctMs(localCold, 0.5), pctMs(localWarm, 0.5)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(first.Nanoseconds())/1e6, "first-ms")
	b.ReportMetric(pctMs(cold, 0.5), "cold-p50-ms")
	b.ReportMetric(pctMs(warm, 0.5), "warm-p50-ms")
	b.ReportMetric(pctMs(warm, 0.9), "warm-p90-ms")
	b.ReportMetric(float64(len(cold)), "n-cold")
	b.ReportMetric(float64(len(warm)), "n-warm")
	b.ReportMetric(lc, "local-cold-ms")
	b.ReportMetric(lw, "local-warm-ms")
	b.ReportMetric(pctMs(cold, 0.5)/lc, "cold-x-local")
	b.ReportMetric(pctMs(warm, 0.5)/lw, "warm-x-local")
	b.ReportMetric(pctMs(hostsD, 0.5), "hosts-p50-ms")
	b.ReportMetric(pctMs(warmReturned, 0.5), "warm-publish-return-p50-ms")
}

// BenchmarkQueryByDID measures QueryAgent from a node that neither
// published nor hosts the agent, at 5, 10 and 25 nodes: 200 queries while
// the agent keeps committing (a checkpoint every ~100 ms), so some queries
// find a head the observer has not fetched yet (fetch from the holder,
// re-hash, verify) and the rest read the checkpoint from the local store.
// Baseline in the same run, interleaved with the queries: a bare DHT
// GetValue of the same head-record key; x-getvalue is query p50 over
// GetValue p50, i.e. what decoding, fetching and verifying the checkpoint
// adds to the lookup.
func BenchmarkQueryByDID(b *testing.B) {
	for _, n := range []int{5, 10, 25} {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) { benchQuery(b, n) })
	}
}

func benchQuery(b *testing.B, nodes int) {
	const queries = 200
	ctx := context.Background()
	wasm, man := testagents.Bytes(b, "heartbeat")
	setup := time.Now()
	ms := benchMeshes(b, nodes, 4, hosting.RunOptions{TickInterval: 100 * time.Millisecond, CheckpointEvery: 1, Price: -1})
	started := time.Since(setup)
	waitSeesHosts(b, ms[0], nodes, 60*time.Second)
	res, err := ms[0].Publish(ctx, wasm, man, 1_000_000_000, nil)
	if err != nil {
		b.Fatal(err)
	}
	var observer *Mesh
	for _, m := range ms[1:] {
		if m.PeerID() != res.Holder {
			observer = m
			break
		}
	}
	seen := map[string]bool{} // heads the observer has fetched (QueryAgent is its only fetcher)
	pollUntil(b, "the observer to see seq ≥ 3", 60*time.Second, 20*time.Millisecond, func() error {
		st, err := observer.QueryAgent(ctx, res.DID)
		if err != nil {
			return err
		}
		seen[st.Head] = true
		if st.Seq < 3 {
			return fmt.Errorf("seq %d", st.Seq)
		}
		return nil
	})
	b.ReportMetric(started.Seconds(), "start-s")
	b.ReportMetric(time.Since(setup).Seconds(), "setup-s")
	b.ReportMetric(float64(observer.DHT.RoutingTableSize()), "observer-table")

	key := agents.HeadRecordKey(res.DID)
	var all, fetched, cached, gets []time.Duration
	failures := 0
	var firstErr error
	getValue := func() {
		t0 := time.Now()
		if _, err := observer.DHT.GetValue(ctx, key); err != nil {
			failures++
			firstErr = cmpErr(firstErr, err)
			return
		}
		gets = append(gets, time.Since(t0))
	}
	query := func() {
		t0 := time.Now()
		st, err := observer.QueryAgent(ctx, res.DID)
		d := time.Since(t0)
		if err != nil {
			failures++
			firstErr = cmpErr(firstErr, err)
			return
		}
		all = append(all, d)
		if seen[st.Head] {
			cached = append(cached, d)
		} else {
			fetched = append(fetched, d)
			seen[st.Head] = true
		}
	}
	for i := 0; i < queries; i++ {
		if i%2 == 0 {
			getValue()
			query()
		} else {
			query()
			getValue()
		}
	}
	if failures > 0 {
		b.Errorf("%d of %d calls failed; first: %v", failures, 2*queries, firstErr)
	}
	if len(all) == 0 || len(gets) == 0 {
		b.Fatal("no successful samples")
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(pctMs(all, 0.5), "p50-ms")
	b.ReportMetric(pctMs(all, 0.99), "p99-ms")
	b.ReportMetric(pctMs(gets, 0.5), "getvalue-p50-ms")
	b.ReportMetric(pctMs(gets, 0.99), "getvalue-p99-ms")
	b.ReportMetric(pctMs(all, 0.5)/pctMs(gets, 0.5), "x-getvalue")
	b.ReportMetric(pctMs(fetched, 0.5), "fetch-p50-ms")
	b.ReportMetric(pctMs(cached, 0.5), "cached-p50-ms")
	b.ReportMetric(float64(len(fetched))/float64(len(all)), "fetched-frac")
}

func cmpErr(first, err error) error {
	if first != nil {
		return first
	}
	return err
}
