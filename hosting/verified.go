package hosting

import (
	"sync"

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
// Besides the ring it keeps, per agent, the highest checkpoint verified
// with a base (AddBase): other agents' commits never push it out. A node
// that is a member of thousands of groups adds hundreds of checkpoints a
// second, so the ring alone held each for half a minute; a takeover after
// that found nothing trusted and verified the agent's whole history, every
// signature since its genesis — the longer the agent had lived, the longer
// its start, and a burst of such starts fed the collapse it was part of
// (issue "Custody engine", session 20).
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
	// latest: agent DID → its highest checkpoint verified with a base;
	// latestKey: that checkpoint's key → the DID. At most maxAgents
	// agents (then one is forgotten for each new one).
	latest    map[string]*agents.Base
	latestKey map[string]string
	maxAgents int
}

// NewVerified returns a set holding at most size checkpoints (at least 1)
// in its ring, and besides them the latest of each of at most size agents.
func NewVerified(size int) *Verified {
	size = max(size, 1)
	return &Verified{set: make(map[string]*agents.Base, size), order: make([]string, size),
		latest: map[string]*agents.Base{}, latestKey: map[string]string{}, maxAgents: size}
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
	_, ok := v.latestKey[k]
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
	if did, ok := v.latestKey[k]; ok {
		return *v.latest[did], true
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
		v.keepLatest(k, b)
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

// keepLatest makes b (checkpoint key k) its agent's latest if its seq is
// the highest seen for that agent. Called with mu held.
func (v *Verified) keepLatest(k string, b *agents.Base) {
	cp := b.Entry.Checkpoint
	cur := v.latest[cp.Agent]
	if cur != nil && cur.Entry.Checkpoint.Seq >= cp.Seq {
		return
	}
	if cur == nil && len(v.latest) >= v.maxAgents {
		for did, b := range v.latest { // bounded: one agent, at random, is forgotten
			delete(v.latestKey, b.Entry.CID.KeyString())
			delete(v.latest, did)
			break
		}
	}
	if cur != nil {
		delete(v.latestKey, cur.Entry.CID.KeyString())
	}
	v.latest[cp.Agent] = b
	v.latestKey[k] = cp.Agent
}
