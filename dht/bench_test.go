package dht_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/dht"
)

// benchSizes are mesh sizes. Up to 20 nodes (k = 20) every node holds every
// record, so lookups there mostly measure the network round trips of a full
// lookup; at 25, 5 nodes do not hold a given record.
var benchSizes = []int{5, 10, 25}

const benchKeys = 64 // distinct records / CIDs, queried round-robin

// BenchmarkGetValue: records put from node 0, read from the last node to join.
func BenchmarkGetValue(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := benchMesh(b, n)
			ctx := context.Background()
			keys := make([]string, benchKeys)
			for i := range keys {
				keys[i] = dht.Key("test", fmt.Sprintf("bench-%d", i))
				if err := nodes[0].d.PutValue(ctx, keys[i], []byte("v1")); err != nil {
					b.Fatal(err)
				}
			}
			reader := nodes[n-1].d
			var lat []time.Duration
			i := 0
			for b.Loop() {
				start := time.Now()
				v, err := reader.GetValue(ctx, keys[i%benchKeys])
				lat = append(lat, time.Since(start))
				if err != nil || string(v) != "v1" {
					b.Fatalf("GetValue = %q, %v", v, err)
				}
				i++
			}
			reportPercentiles(b, lat)
		})
	}
}

// BenchmarkFindProviders: CIDs provided by node 0, looked up from the last
// node with max 1 (the "who has this block" question), and with max 20, which
// runs the lookup to completion because only one provider exists.
func BenchmarkFindProviders(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("nodes=%d", n), func(b *testing.B) {
			nodes := benchMesh(b, n)
			ctx := context.Background()
			for i := range benchKeys {
				if err := nodes[0].d.Provide(ctx, blockCID(b, fmt.Sprintf("bench-%d", i))); err != nil {
					b.Fatal(err)
				}
			}
			for _, limit := range []int{1, 20} {
				b.Run(fmt.Sprintf("max=%d", limit), func(b *testing.B) {
					reader := nodes[n-1].d
					var lat []time.Duration
					i := 0
					for b.Loop() {
						c := blockCID(b, fmt.Sprintf("bench-%d", i%benchKeys))
						start := time.Now()
						provs, err := reader.FindProviders(ctx, c, limit)
						lat = append(lat, time.Since(start))
						if err != nil || len(provs) != 1 || provs[0].ID != nodes[0].h.ID() {
							b.Fatalf("FindProviders = %v, %v", provs, err)
						}
						i++
					}
					reportPercentiles(b, lat)
				})
			}
		})
	}
}

// benchMesh starts n nodes bootstrapped from node 0 and waits until every
// routing table holds min(n-1, 15) peers (a 25-node mesh need not give every
// node all 24 others: buckets hold 20).
func benchMesh(b *testing.B, n int) []node {
	start := time.Now()
	nodes := newStar(b, n, min(n-1, 15), withTest)
	b.Logf("%d nodes up and ready in %v", n, time.Since(start))
	return nodes
}

func reportPercentiles(b *testing.B, lat []time.Duration) {
	if len(lat) == 0 {
		return
	}
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[int(p*float64(len(lat)-1))]) / 1e6
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
