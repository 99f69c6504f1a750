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

// TestVerifiedKeepsEachAgentsRecent: other agents' checkpoints push an
// agent's checkpoints out of the ring, but not its last few verified with
// a base — including one below its highest, where a fork returns to — which
// stay trusted with their bases until the agent's own later ones replace
// them.
func TestVerifiedKeepsEachAgentsRecent(t *testing.T) {
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
	// A standby accepted a/6, then verified the old holder's a/7; the new
	// holder's a/7' builds on a/6.
	v.AddBase(base("a", 6))
	v.AddBase(base("a", 7))
	for i := range 10 {
		v.AddBase(base(fmt.Sprintf("other%d", i%2), uint64(i)))
	}
	for _, seq := range []uint64{6, 7} {
		id := c(fmt.Sprintf("a/%d", seq))
		if !v.Has(id) {
			t.Fatalf("a/%d was forgotten after other agents' commits", seq)
		}
		if b, ok := v.Base(id); !ok || b.Entry.Checkpoint.Seq != seq || !b.Entry.CID.Equals(id) {
			t.Fatalf("base of a/%d: %v %+v", seq, ok, b.Entry)
		}
	}
	// The agent's own later checkpoints replace its oldest.
	for seq := uint64(8); seq < 8+4; seq++ {
		v.AddBase(base("a", seq))
	}
	for i := range 4 {
		v.AddBase(base("b", uint64(i))) // and the ring forgets a's too
	}
	for seq := uint64(6); seq < 12; seq++ {
		want := seq >= 8
		if got := v.Has(c(fmt.Sprintf("a/%d", seq))); got != want {
			t.Fatalf("after a/8..a/11 and a full ring of b: Has(a/%d) = %v, want %v", seq, got, want)
		}
	}
	// Adding a kept checkpoint again does not take a second place.
	v.AddBase(base("a", 11))
	v.AddBase(base("a", 11))
	if !v.Has(c("a/8")) {
		t.Fatal("a checkpoint added twice pushed out another of the agent's")
	}
	// Bounded: at most size agents' checkpoints are kept beside the ring.
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
		t.Fatalf("%d of 100 agents' checkpoints kept by a set of size 4: want at most 8 (ring and recent)", kept)
	}
}

// TestVerifiedStats: NoteWalk counts the checkpoints a walk verified — not
// the trusted one it stopped at — and walks to the genesis apart.
func TestVerifiedStats(t *testing.T) {
	v := hosting.NewVerified(4)
	v.NoteSteps(3)
	v.NoteWalk(&agents.Lineage{Entries: make([]agents.Entry, 5), Partial: true})
	v.NoteWalk(&agents.Lineage{Entries: make([]agents.Entry, 7)})
	want := hosting.VerifyStats{Steps: 3, Walks: 2, Walked: 4 + 7, GenesisWalks: 1}
	if got := v.Stats(); got != want {
		t.Fatalf("stats %+v, want %+v", got, want)
	}
	var none *hosting.Verified
	none.NoteSteps(1)
	none.NoteWalk(&agents.Lineage{})
	if got := none.Stats(); got != (hosting.VerifyStats{}) {
		t.Fatalf("a nil set counted %+v", got)
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
