package hosting

import (
	"slices"
	"time"

	"github.com/igor-mesh/igor-node/agents"
)

// The placement review's policy (docs/PROTOCOL.md "Placement review"): who,
// at a lease term's end, should run an agent its holder runs now. Pure, as
// placement is; the node supplies the host records it knows, probes the
// chosen host and moves the agent.

// ReviewMember returns the live member the agent should be handed to, or
// "" to keep it (or look outside the group: OutsiderCandidates). Members
// are taken in rendezvous order for agentID: the first one above self
// whose host record (lookup; nil: unknown) is unexpired at now and shows a
// free slot. A draining holder skips itself and takes any such member.
func ReviewMember(agentID string, live []string, self string, draining bool, now time.Time, lookup func(peer string) *agents.HostRecord) string {
	for _, p := range Rank(agentID, live) {
		if p == self {
			if draining {
				continue
			}
			return "" // nobody in the group ranks above this node
		}
		r := lookup(p)
		if r == nil || r.Expires < now.UnixNano() || r.FreeSlots == 0 {
			continue
		}
		return p
	}
	return ""
}

// OutsiderCandidates returns, best first, the hosts outside the group the
// agent may move to: ranked is Place's order of the eligible hosts. With
// anyHost (the holder drains, or the group is below its replica count)
// every non-member qualifies; otherwise only those that rank above self
// for agentID, so an agent moves only toward a better host.
func OutsiderCandidates(agentID string, ranked []*agents.HostRecord, members []string, self string, anyHost bool) []*agents.HostRecord {
	var out []*agents.HostRecord
	for _, h := range ranked {
		if h.Peer == self || slices.Contains(members, h.Peer) {
			continue
		}
		if !anyHost && Rank(agentID, []string{self, h.Peer})[0] != h.Peer {
			break // ranked by the same order: every later host ranks lower too
		}
		out = append(out, h)
	}
	return out
}

// ShortGroup reports whether a group of members is below the replica count
// its manifest asks for (a holder and Lease.Replicas standbys).
func ShortGroup(m *agents.Manifest, members []string) bool {
	return len(members) < 1+int(m.Lease.Replicas)
}
