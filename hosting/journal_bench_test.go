package hosting_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
)

// BenchmarkJournalReplay prices what a journal costs a new holder and a
// verifier: bringing an agent to a head N journaled ticks above its last
// state (StateAt: what a takeover's start does before its first tick), and
// re-executing a whole journaled lineage (verify --replay), against
// running the same ticks live, in the same run.
func BenchmarkJournalReplay(b *testing.B) {
	f := newFixture(b)
	ctx := context.Background()
	a, _ := f.createJournaled(b, "heartbeat")
	const total = 500
	start := time.Now()
	res, err := hosting.Run(ctx, f.env, a, hosting.RunOptions{TickInterval: time.Microsecond, FastInterval: time.Microsecond,
		CheckpointEvery: 1 << 40, MaxTicks: total, Price: -1})
	if err != nil {
		b.Fatal(err)
	}
	live := time.Since(start) / total // a live tick, journaled locally (no group)
	lin, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range []int{1, 10, 100, total} {
		e := lin.Entries[n] // seq n journals tick n, no state since seq 0
		head := hosting.Head{CID: e.CID, Checkpoint: e.Checkpoint}
		b.Run(fmt.Sprintf("resume/ticks=%d", n), func(b *testing.B) {
			for range b.N {
				if _, err := hosting.StateAt(ctx, f.env, head); err != nil {
					b.Fatal(err)
				}
			}
			per := b.Elapsed() / time.Duration(b.N)
			b.ReportMetric(float64(per.Microseconds())/1000, "ms/resume")
			b.ReportMetric(float64(per)/float64(n)/float64(live), "replayed-tick÷live-tick")
		})
	}
	b.Run(fmt.Sprintf("verify-replay/ticks=%d", total), func(b *testing.B) {
		for range b.N {
			rep, err := hosting.ReplayLineage(ctx, f.env.Runtime, f.st, lin)
			if err != nil || rep.Divergence != nil || rep.Ticks != total {
				b.Fatalf("%+v %v", rep, err)
			}
		}
		per := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(total)/per.Seconds(), "ticks/s")
		b.ReportMetric(float64(time.Second/live), "live-ticks/s")
	})
}
