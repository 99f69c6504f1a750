package node

import (
	"context"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

// evictLoop finds memberships whose group was replaced without them and
// leaves them (docs/PROTOCOL.md "Evicted members"). A regroup asks every
// live member to leave; one cut off at that moment (a partition, a crash
// and restart) never hears it and keeps the old group — and the agent key
// — for good, campaigning against members that ignore it. Checked every
// OrphanAfter/2 for members that heard no holder for OrphanAfter.
func (m *Mesh) evictLoop() {
	defer m.wg.Done()
	every := max(m.Custody.Timing().OrphanAfter/2, time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		for _, st := range m.Custody.Status() {
			if m.ctx.Err() != nil {
				return
			}
			if m.orphaned(st) {
				m.checkEvicted(st)
			}
		}
	}
}

// orphaned: a started group's non-holder that has heard no holder for
// OrphanAfter (counted from its start if it never heard one). A group that
// never started waits for its publisher's kick and is left alone.
func (m *Mesh) orphaned(st custody.Status) bool {
	if !st.Started || st.Role == lease.Holder.String() || st.Running {
		return false
	}
	last := st.Since
	if st.LastHeard.After(last) {
		last = st.LastHeard
	}
	return time.Since(last) >= m.Custody.Timing().OrphanAfter
}

// checkEvicted leaves st's group if the agent lives on in another: its head
// record (signed by the agent key) names a higher epoch, and the holder it
// names answers with a member list without this node. No proof, no leave: a
// member merely cut off from its own group (the holder answers with our
// list, or does not answer) stays, and its holder regroups it if needed.
func (m *Mesh) checkEvicted(st custody.Status) {
	ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
	defer cancel()
	rec, err := m.resolveHeadRecord(ctx, st.DID)
	// The same epoch counts: a change in place keeps the epoch, and a member
	// removed while it was down never heard that it was out.
	if err != nil || rec.Epoch < st.Epoch || rec.Holder == m.PeerID() {
		return
	}
	id, err := peer.Decode(rec.Holder)
	if err != nil {
		return
	}
	live, err := m.askStatus(ctx, id, st.DID)
	if err != nil || !live.OK || live.Epoch < st.Epoch || slices.Contains(live.Members, m.PeerID()) {
		return // no proof: the holder counts us (its list may be newer than ours after a change in place)
	}
	m.Logger.Warn("custody: this node's group of the agent was replaced without it; leaving and deleting its state and key",
		"agent", st.DID, "our epoch", st.Epoch, "our members", st.Members, "holder", rec.Holder, "their epoch", live.Epoch, "their members", live.Members)
	if err := m.Custody.Leave(st.DID, ""); err != nil {
		m.Logger.Warn("custody: leave a replaced group", "agent", st.DID, "err", err)
	}
}
