package node

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// BenchmarkJournal prices the tick journal (issue "Agents that act"): the
// same counter agents on 3 in-process meshes, journaled ("journal": true:
// each tick committed at the group before the next starts) and not (a
// checkpoint every 5 ticks), at a 1 s tick and at a 10 ms tick (100 ticks/s
// per agent), in the same run. Reported: ticks per second achieved, CPU
// per tick (one process holds all three nodes, so it is the mesh's), and
// the journaled tick's commit latency (propose → majority).
func BenchmarkJournal(b *testing.B) {
	for _, c := range []struct {
		name     string
		interval time.Duration
		agents   int
		window   time.Duration
	}{
		{"tick=1s", time.Second, 30, 10 * time.Second},
		{"tick=10ms", 10 * time.Millisecond, 3, 5 * time.Second},
	} {
		for _, journal := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/journal=%t", c.name, journal), func(b *testing.B) {
				for range b.N {
					benchJournal(b, c.interval, c.agents, c.window, journal)
				}
			})
		}
	}
}

func benchJournal(b *testing.B, interval time.Duration, n int, window time.Duration, journal bool) {
	ctx := context.Background()
	wasm, _ := testagents.Bytes(b, "counter")
	rec := newCustodyRecorder()
	ms := startRecordedMeshes(b, 3, n+1, hosting.RunOptions{TickInterval: interval, FastInterval: interval, CheckpointEvery: 5, Price: -1}, rec, true)
	waitSeesHosts(b, ms[0], 3, 60*time.Second)
	man := `{"name":"counter","capabilities":{"args":{"version":1},"log":{"version":1}},"args":"state_size=64","lease":{"term_seconds":3600}`
	if journal {
		man += `,"journal":true`
	}
	man += "}"
	dids := map[string]bool{}
	for range n {
		res, err := ms[0].Publish(ctx, wasm, []byte(man), 1_000_000_000_000, nil)
		if err != nil {
			b.Fatal(err)
		}
		dids[res.DID] = true
	}
	time.Sleep(3 * time.Second) // every agent running, its lineage at every standby
	count := func(since time.Time) (ticks int, lat []time.Duration) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, e := range rec.evs {
			if !dids[e.did] || e.at.Before(since) {
				continue
			}
			switch {
			case e.kind == evTickKind:
				ticks++
			case e.kind == evCommitKind && e.latency > 0:
				lat = append(lat, e.latency)
			}
		}
		return ticks, lat
	}
	start, cpu0 := time.Now(), cpuTime()
	b.ResetTimer()
	time.Sleep(window)
	b.StopTimer()
	cpu, el := cpuTime()-cpu0, time.Since(start)
	ticks, lat := count(start)
	if ticks == 0 {
		b.Fatal("no ticks in the window")
	}
	slices.Sort(lat)
	b.ReportMetric(float64(ticks)/el.Seconds()/float64(n), "ticks/s/agent")
	b.ReportMetric(float64(cpu.Microseconds())/float64(ticks), "cpu-µs/tick")
	if len(lat) > 0 {
		b.ReportMetric(msOf(lat[len(lat)/2]), "commit-p50-ms")
		b.ReportMetric(msOf(lat[len(lat)*99/100]), "commit-p99-ms")
	}
}
