package hosting

import (
	"sync"

	"github.com/ipfs/go-cid"
)

// Verified remembers checkpoints whose whole lineage this process has
// verified, so that resuming an agent (a takeover, a handoff back, a
// restart of the run) re-verifies only what was added since
// (agents.VerifyOptions.Trusted) instead of its whole history — which
// grows without bound for a long-lived agent. It is bounded (oldest
// entries are forgotten first) and in memory only: after a restart the
// first load of each agent verifies everything again. The zero value is
// not usable; a nil *Verified remembers nothing.
type Verified struct {
	mu    sync.Mutex
	set   map[string]struct{}
	order []string // ring of keys in insertion order
	next  int
}

// NewVerified returns a set holding at most size checkpoints (at least 1).
func NewVerified(size int) *Verified {
	size = max(size, 1)
	return &Verified{set: make(map[string]struct{}, size), order: make([]string, size)}
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
func (v *Verified) Add(c cid.Cid) {
	if v == nil {
		return
	}
	k := c.KeyString()
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.set[k]; ok {
		return
	}
	if old := v.order[v.next]; old != "" {
		delete(v.set, old)
	}
	v.order[v.next] = k
	v.next = (v.next + 1) % len(v.order)
	v.set[k] = struct{}{}
}

// trusted is the VerifyOptions.Trusted of v (nil when v is nil).
func (v *Verified) trusted() func(cid.Cid) bool {
	if v == nil {
		return nil
	}
	return v.Has
}
