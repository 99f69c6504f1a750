package hosting

import (
	"sync"
	"sync/atomic"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
)

// Verified remembers checkpoints whose whole lineage this process has
// verified, so that resuming an agent (a takeover, a handoff back, a
// restart of the run) re-verifies only what was added since
// (agents.VerifyOptions.Trusted) instead of its whole history — which
// grows without bound for a long-lived agent. It is bounded (oldest
// entries are forgotten first) and in memory only: after a restart the
// first load of each agent verifies everything again. The zero value is
// not usable; a nil *Verified remembers nothing.
//
// Besides the ring it keeps, per agent, the last few checkpoints verified
// with a base (AddBase; recentPerAgent): other agents' commits never push
// them out. A node that is a member of thousands of groups adds hundreds
// of checkpoints a second, so the ring alone held each for half a minute;
// a takeover after that found nothing trusted and verified the agent's
// whole history, every signature since its genesis — the longer the agent
// had lived, the longer its start, and a burst of such starts fed the
// collapse it was part of (issue "Custody engine", session 20). More than
// the highest is kept because a fork leaves the checkpoint a member
// accepted below the highest it verified: a standby verified the old
// holder's seq n+1, the new holder built on n, and the walk from the new
// n+1 stops at n (DECISIONS D77).
//
// With a checkpoint it may keep its agents.Base (AddBase), so that the
// successor of a head this node follows — a standby acknowledging the
// holder's next checkpoint, every few seconds for every group — is checked
// in one step (agents.VerifyNext) without re-reading and re-decoding the
// checkpoint below, the genesis and the manifest.
type Verified struct {
	mu    sync.Mutex
	set   map[string]*agents.Base // nil: verified, no base kept
	order []string                // ring of keys in insertion order
	next  int
	// recent: agent DID → its last checkpoints verified with a base;
	// recentKey: such a checkpoint's key → the DID. At most maxAgents
	// agents (then one is forgotten for each new one).
	recent    map[string]*recentBases
	recentKey map[string]string
	maxAgents int

	steps, walks, walked, genesisWalks atomic.Int64
}

// recentPerAgent is how many of an agent's checkpoints Verified keeps
// beside its ring: the head a member follows, the one below it that a fork
// may return to, and a little slack for a takeover's re-verification.
const recentPerAgent = 4

// recentBases is a small ring of one agent's checkpoints, latest added
// last.
type recentBases struct {
	b    [recentPerAgent]*agents.Base
	next int
}

// NewVerified returns a set holding at most size checkpoints (at least 1)
// in its ring, and besides them the last few of each of at most size
// agents.
func NewVerified(size int) *Verified {
	size = max(size, 1)
	return &Verified{set: make(map[string]*agents.Base, size), order: make([]string, size),
		recent: map[string]*recentBases{}, recentKey: map[string]string{}, maxAgents: size}
}

// Has reports whether c's lineage was verified.
func (v *Verified) Has(c cid.Cid) bool {
	if v == nil {
		return false
	}
	k := c.KeyString()
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.set[k]; ok {
		return true
	}
	_, ok := v.recentKey[k]
	return ok
}

// Add records that c's whole lineage verified.
func (v *Verified) Add(c cid.Cid) { v.add(c, nil) }

// AddBase records that b's checkpoint's whole lineage verified, keeping b
// for Base.
func (v *Verified) AddBase(b agents.Base) {
	if b.Entry.Checkpoint == nil || b.Genesis == nil || b.Manifest == nil {
		v.add(b.Entry.CID, nil)
		return
	}
	v.add(b.Entry.CID, &b)
}

// Base returns the base kept for c, if c is verified with one.
func (v *Verified) Base(c cid.Cid) (agents.Base, bool) {
	if v == nil {
		return agents.Base{}, false
	}
	k := c.KeyString()
	v.mu.Lock()
	defer v.mu.Unlock()
	if b := v.set[k]; b != nil {
		return *b, true
	}
	if did, ok := v.recentKey[k]; ok {
		for _, b := range v.recent[did].b {
			if b != nil && b.Entry.CID.KeyString() == k {
				return *b, true
			}
		}
	}
	return agents.Base{}, false
}

func (v *Verified) add(c cid.Cid, b *agents.Base) {
	if v == nil {
		return
	}
	k := c.KeyString()
	v.mu.Lock()
	defer v.mu.Unlock()
	if b != nil {
		v.keepRecent(k, b)
	}
	if old, ok := v.set[k]; ok {
		if old == nil && b != nil {
			v.set[k] = b
		}
		return
	}
	if old := v.order[v.next]; old != "" {
		delete(v.set, old)
	}
	v.order[v.next] = k
	v.next = (v.next + 1) % len(v.order)
	v.set[k] = b
}

// trusted is the VerifyOptions.Trusted of v (nil when v is nil).
func (v *Verified) trusted() func(cid.Cid) bool {
	if v == nil {
		return nil
	}
	return v.Has
}

// keepRecent adds b (checkpoint key k) to its agent's recent checkpoints,
// forgetting the oldest of them. Called with mu held.
func (v *Verified) keepRecent(k string, b *agents.Base) {
	did := b.Entry.Checkpoint.Agent
	if _, ok := v.recentKey[k]; ok {
		return
	}
	r := v.recent[did]
	if r == nil {
		if len(v.recent) >= v.maxAgents {
			for other, old := range v.recent { // bounded: one agent, at random, is forgotten
				for _, ob := range old.b {
					if ob != nil {
						delete(v.recentKey, ob.Entry.CID.KeyString())
					}
				}
				delete(v.recent, other)
				break
			}
		}
		r = &recentBases{}
		v.recent[did] = r
	}
	if old := r.b[r.next]; old != nil {
		delete(v.recentKey, old.Entry.CID.KeyString())
	}
	r.b[r.next] = b
	r.next = (r.next + 1) % recentPerAgent
	v.recentKey[k] = did
}

// VerifyStats counts the checkpoints this process verified (the metrics
// igor_lineage_*): one step above a kept base is the steady state; walks,
// and above all walks down to the genesis, are what a cold or forgetful
// cache costs.
type VerifyStats struct {
	Steps        int64 `json:"steps"`         // checkpoints verified one step above a kept base (agents.VerifyNext)
	Walks        int64 `json:"walks"`         // lineage walks (agents.VerifyLineage)
	Walked       int64 `json:"walked"`        // checkpoints verified in those walks
	GenesisWalks int64 `json:"genesis_walks"` // walks that found no trusted checkpoint and went down to seq 0
}

// NoteSteps counts n checkpoints verified one step each above a base.
func (v *Verified) NoteSteps(n int) {
	if v != nil {
		v.steps.Add(int64(n))
	}
}

// NoteWalk counts a lineage walk: the checkpoints it verified (the trusted
// one it stopped at is not), and whether it went down to the genesis.
func (v *Verified) NoteWalk(lin *agents.Lineage) {
	if v == nil || lin == nil {
		return
	}
	n := len(lin.Entries)
	if lin.Partial {
		n--
	} else {
		v.genesisWalks.Add(1)
	}
	v.walks.Add(1)
	v.walked.Add(int64(n))
}

// Stats returns the counts so far (zero for a nil set).
func (v *Verified) Stats() VerifyStats {
	if v == nil {
		return VerifyStats{}
	}
	return VerifyStats{Steps: v.steps.Load(), Walks: v.walks.Load(), Walked: v.walked.Load(), GenesisWalks: v.genesisWalks.Load()}
}
