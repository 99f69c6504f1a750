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
}

// NewVerified returns a set holding at most size checkpoints (at least 1).
func NewVerified(size int) *Verified {
	size = max(size, 1)
	return &Verified{set: make(map[string]*agents.Base, size), order: make([]string, size)}
}

// Has reports whether c's lineage was verified.
func (v *Verified) Has(c cid.Cid) bool {
	if v == nil {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.set[c.KeyString()]
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
	v.mu.Lock()
	defer v.mu.Unlock()
	if b := v.set[c.KeyString()]; b != nil {
		return *b, true
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
