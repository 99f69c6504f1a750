package hosting_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// countingBlocks counts block reads.
type countingBlocks struct {
	*contentstore.Store
	gets atomic.Int64
}

func (c *countingBlocks) Get(k cid.Cid) ([]byte, error) {
	c.gets.Add(1)
	return c.Store.Get(k)
}

// Load remembers the head it verified; a later Load of a longer lineage
// re-reads and re-verifies only the checkpoints added since.
func TestLoadReverifiesOnlyNewCheckpoints(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, key := f.create(t, "heartbeat", 1_000_000_000)
	res, err := hosting.Run(ctx, f.env, a, fast(30, 1))
	if err != nil {
		t.Fatal(err)
	}
	cb := &countingBlocks{Store: f.st}
	env := f.env
	env.Blocks = cb
	env.Verified = hosting.NewVerified(16)
	if _, err := hosting.Load(ctx, env, res.Head.CID, key); err != nil {
		t.Fatal(err)
	}
	if !env.Verified.Has(res.Head.CID) {
		t.Fatal("Load did not remember the head it verified")
	}
	a2, err := hosting.Load(ctx, f.env, res.Head.CID, key)
	if err != nil {
		t.Fatal(err)
	}
	res2, err := hosting.Run(ctx, f.env, a2, fast(5, 1))
	if err != nil {
		t.Fatal(err)
	}
	cb.gets.Store(0)
	if _, err := hosting.Load(ctx, env, res2.Head.CID, key); err != nil {
		t.Fatal(err)
	}
	trusted := cb.gets.Load()
	full := env
	full.Verified = nil
	cb.gets.Store(0)
	if _, err := hosting.Load(ctx, full, res2.Head.CID, key); err != nil {
		t.Fatal(err)
	}
	if all := cb.gets.Load(); trusted > all-30 {
		t.Fatalf("Load over a verified prefix read %d blocks, a full Load %d: the 30 verified checkpoints were read again", trusted, all)
	}
}

func TestVerifiedForgetsOldest(t *testing.T) {
	c := func(s string) cid.Cid {
		h, _ := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
		return cid.NewCidV1(cid.Raw, h)
	}
	v := hosting.NewVerified(2)
	v.Add(c("a"))
	v.Add(c("b"))
	v.Add(c("b")) // no-op
	v.Add(c("c"))
	if v.Has(c("a")) || !v.Has(c("b")) || !v.Has(c("c")) {
		t.Fatalf("after a, b, b, c with room for 2: a %v b %v c %v", v.Has(c("a")), v.Has(c("b")), v.Has(c("c")))
	}
	var none *hosting.Verified
	none.Add(c("a"))
	if none.Has(c("a")) {
		t.Fatal("a nil Verified remembered something")
	}
}

// TestVerifiedKeepsEachAgentsLatest: other agents' checkpoints push an
// agent's checkpoints out of the ring, but not its highest one verified
// with a base, which stays trusted with its base until the agent's own
// next one replaces it.
func TestVerifiedKeepsEachAgentsLatest(t *testing.T) {
	c := func(s string) cid.Cid {
		h, _ := multihash.Sum([]byte(s), multihash.SHA2_256, -1)
		return cid.NewCidV1(cid.DagCBOR, h)
	}
	base := func(agent string, seq uint64) agents.Base {
		id := c(fmt.Sprintf("%s/%d", agent, seq))
		return agents.Base{Entry: agents.Entry{CID: id, Checkpoint: &agents.Checkpoint{Agent: agent, Seq: seq}},
			Genesis: &agents.Genesis{}, Manifest: &agents.Manifest{}}
	}
	v := hosting.NewVerified(4)
	v.AddBase(base("a", 7))
	v.AddBase(base("a", 6)) // a lower seq verified later: not the latest
	for i := range 10 {
		v.AddBase(base(fmt.Sprintf("other%d", i%2), uint64(i)))
	}
	if !v.Has(c("a/7")) {
		t.Fatal("agent a's highest verified checkpoint was forgotten after other agents' commits")
	}
	if v.Has(c("a/6")) {
		t.Fatal("a lower checkpoint of a was kept as its latest")
	}
	if b, ok := v.Base(c("a/7")); !ok || b.Entry.Checkpoint.Seq != 7 {
		t.Fatalf("base of a's latest: %v %+v", ok, b.Entry)
	}
	v.AddBase(base("a", 8))
	for i := range 4 {
		v.AddBase(base("b", uint64(i)))
	}
	if v.Has(c("a/7")) || !v.Has(c("a/8")) {
		t.Fatalf("after a's seq 8 and a full ring of b: a/7 %v, a/8 %v; want false, true", v.Has(c("a/7")), v.Has(c("a/8")))
	}
	// Bounded: at most size agents' latest are kept beside the ring.
	for i := range 100 {
		v.AddBase(base(fmt.Sprintf("many%d", i), 1))
	}
	kept := 0
	for i := range 100 {
		if v.Has(c(fmt.Sprintf("many%d/1", i))) {
			kept++
		}
	}
	if kept > 4+4 {
		t.Fatalf("%d of 100 agents' checkpoints kept by a set of size 4: want at most 8 (ring and latest)", kept)
	}
}

// BenchmarkLoadLongLineage: resuming an agent with a 1000-checkpoint
// history — a full Load (the whole lineage verified) against a Load whose
// lineage was verified up to one checkpoint before the head (the
// Verified cache: a takeover by a standby that accepted every checkpoint,
// a handoff back). Metrics: full-ms, cached-ms, x-full (cached ÷ full).
func BenchmarkLoadLongLineage(b *testing.B) {
	const n = 1000
	f := newFixture(b)
	ctx := context.Background()
	a, key := f.create(b, "heartbeat", 1_000_000_000)
	res, err := hosting.Run(ctx, f.env, a, fast(n-1, 1))
	if err != nil {
		b.Fatal(err)
	}
	if res.Head.Checkpoint.Seq != n-1 {
		b.Fatalf("head at seq %d, want %d", res.Head.Checkpoint.Seq, n-1)
	}
	prev := res.Head.Checkpoint.Prev
	var full, cached time.Duration
	b.ResetTimer()
	for range b.N {
		start := time.Now()
		if _, err := hosting.Load(ctx, f.env, res.Head.CID, key); err != nil {
			b.Fatal(err)
		}
		full += time.Since(start)
		env := f.env
		env.Verified = hosting.NewVerified(4)
		env.Verified.Add(prev)
		start = time.Now()
		if _, err := hosting.Load(ctx, env, res.Head.CID, key); err != nil {
			b.Fatal(err)
		}
		cached += time.Since(start)
	}
	b.ReportMetric(float64(full.Milliseconds())/float64(b.N), "full-ms")
	b.ReportMetric(float64(cached.Microseconds())/1e3/float64(b.N), "cached-ms")
	b.ReportMetric(float64(cached)/float64(full), "x-full")
}
