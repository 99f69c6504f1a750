package dht_test

import (
	"context"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/dht"
)

func TestScratchSetup(t *testing.T) {
	start := time.Now()
	nodes := []node{startNode(t, withTest)}
	for i := 1; i < 25; i++ {
		nodes = append(nodes, startNode(t, withTest, dht.WithBootstrapPeers(info(nodes[0].h))))
	}
	t.Logf("started %v", time.Since(start))
	ctx := context.Background()
	for _, n := range nodes {
		go n.d.Bootstrap(ctx)
	}
	for k := 0; k < 200; k++ {
		mn, mx := 100, 0
		for _, n := range nodes {
			s := n.d.RoutingTableSize()
			mn = min(mn, s)
			mx = max(mx, s)
		}
		if k%5 == 0 || mn >= 15 {
			t.Logf("%v: min %d max %d", time.Since(start), mn, mx)
		}
		if mn >= 15 { break }
		time.Sleep(100 * time.Millisecond)
	}
}
