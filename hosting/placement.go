package hosting

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/igor-mesh/igor-node/agents"
)

// ErrNoEligibleHost: no known host record admits the agent. The message
// says why each host was turned down.
var ErrNoEligibleHost = errors.New("hosting: no eligible host")

// Placement is pure: it reads no clock, does no I/O and starts nothing, so
// every node that sees the same host records computes the same order. That
// shared order is what lets nodes agree on an agent's custody group (holder
// then standbys) without talking.

// score is the rendezvous weight of peer for an agent: the first 8 bytes
// of sha256(agentID ‖ 0x00 ‖ peerID), big-endian. prefix is agentID ‖ 0x00
// (the zero byte keeps ("ab","c") and ("a","bc") apart); buf is scratch
// space, returned for reuse.
func score(prefix []byte, peer string, buf []byte) (uint64, []byte) {
	buf = append(append(buf[:0], prefix...), peer...)
	sum := sha256.Sum256(buf)
	return binary.BigEndian.Uint64(sum[:8]), buf
}

// Rank orders peers for an agent by rendezvous (highest random weight)
// hashing: descending score, ties broken by ascending peer ID. agentID is
// the agent ID (agents.AgentID: the DID without "did:key:"), the same string
// on every node. The result is a new slice holding the same elements as
// peers (duplicates included); peers is not modified.
//
// Why rendezvous: each peer's place depends only on its own score, so adding
// or removing a peer never reorders the others, and an agent moves only when
// its own top choices change. That keeps custody groups stable as the mesh
// grows and shrinks.
func Rank(agentID string, peers []string) []string {
	type scored struct {
		peer string
		s    uint64
	}
	prefix := append([]byte(agentID), 0)
	buf := make([]byte, 0, len(prefix)+64)
	ss := make([]scored, len(peers))
	for i, p := range peers {
		var s uint64
		s, buf = score(prefix, p, buf)
		ss[i] = scored{p, s}
	}
	slices.SortFunc(ss, func(a, b scored) int {
		if c := cmp.Compare(b.s, a.s); c != 0 {
			return c
		}
		return strings.Compare(a.peer, b.peer)
	})
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = s.peer
	}
	return out
}

// Eligible splits host records into those that can take the agent m
// describes at now and those that cannot, with the reason per peer ID.
// A record is rejected when it has expired at now or when its Admits(m)
// fails. When a peer appears more than once, only its best unexpired record
// counts (agents.SelectHost's order). nil records are skipped. ok keeps the
// order of each peer's first appearance; rejected is never nil.
//
// Records are believed as given: pass only records that passed
// agents.HostValidator (the DHT validates every record it returns). The
// reasons wrap agents.ErrExpired, agents.ErrNotAdmitted or
// agents.ErrBadManifest.
func Eligible(m *agents.Manifest, hosts []*agents.HostRecord, now time.Time) (ok []*agents.HostRecord, rejected map[string]error) {
	rejected = map[string]error{}
	t := now.UnixNano()
	var order []string
	live := map[string][]*agents.HostRecord{}
	lastExpiry := map[string]int64{}
	for _, h := range hosts {
		if h == nil {
			continue
		}
		if e, seen := lastExpiry[h.Peer]; !seen || h.Expires > e {
			if !seen {
				order = append(order, h.Peer)
			}
			lastExpiry[h.Peer] = h.Expires
		}
		if t < h.Expires {
			live[h.Peer] = append(live[h.Peer], h)
		}
	}
	for _, peer := range order {
		recs := live[peer]
		if len(recs) == 0 {
			rejected[peer] = fmt.Errorf("%w: host record expired at %s (now %s)", agents.ErrExpired,
				time.Unix(0, lastExpiry[peer]).UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
			continue
		}
		h := recs[agents.SelectHost(recs)]
		if err := h.Admits(m); err != nil {
			rejected[peer] = err
			continue
		}
		ok = append(ok, h)
	}
	return ok, rejected
}

// maxReasons bounds how many rejections ErrNoEligibleHost's message lists.
const maxReasons = 8

// Place returns the hosts that can take the agent, best first: the eligible
// records (see Eligible) in rendezvous order for agentID. The first is
// where the agent should run; the next ones are its standbys. agentID must
// be an agent ID (agents.AgentID of the DID). Errors wrap agents.ErrBadDID
// (agentID), agents.ErrBadManifest (nil m) or ErrNoEligibleHost, whose
// message lists why hosts were rejected (at most 8, sorted by peer ID, with
// a count of the rest).
func Place(agentID string, m *agents.Manifest, hosts []*agents.HostRecord, now time.Time) ([]*agents.HostRecord, error) {
	if agentID == "" || agents.AgentID("did:key:"+agentID) != agentID {
		return nil, fmt.Errorf("hosting: place: %w: %q is not an agent ID (the DID without \"did:key:\", z6Mk…)", agents.ErrBadDID, agentID)
	}
	if m == nil {
		return nil, fmt.Errorf("hosting: place %s: %w: no manifest", agentID, agents.ErrBadManifest)
	}
	ok, rejected := Eligible(m, hosts, now)
	if len(ok) == 0 {
		return nil, noEligible(agentID, rejected)
	}
	byPeer := make(map[string]*agents.HostRecord, len(ok))
	peers := make([]string, len(ok))
	for i, h := range ok {
		byPeer[h.Peer] = h
		peers[i] = h.Peer
	}
	out := make([]*agents.HostRecord, len(ok))
	for i, p := range Rank(agentID, peers) {
		out[i] = byPeer[p]
	}
	return out, nil
}

func noEligible(agentID string, rejected map[string]error) error {
	if len(rejected) == 0 {
		return fmt.Errorf("%w for agent %s: no host records known (are other nodes reachable, and do they advertise capacity?)", ErrNoEligibleHost, agentID)
	}
	peers := make([]string, 0, len(rejected))
	for p := range rejected {
		peers = append(peers, p)
	}
	slices.Sort(peers)
	var b strings.Builder
	for i, p := range peers {
		if i == maxReasons {
			fmt.Fprintf(&b, "; and %d more", len(peers)-maxReasons)
			break
		}
		if i > 0 {
			b.WriteString("; ")
		}
		reason := rejected[p].Error()
		reason = strings.TrimPrefix(reason, agents.ErrNotAdmitted.Error()+": ")
		reason = strings.TrimPrefix(reason, agents.ErrExpired.Error()+": ")
		fmt.Fprintf(&b, "%s: %s", p, reason)
	}
	return fmt.Errorf("%w for agent %s: all %d known hosts were rejected: %s", ErrNoEligibleHost, agentID, len(peers), b.String())
}

// Copysets (DECISIONS D70). Rendezvous order alone scatters an agent's
// standbys over the whole mesh, so on N nodes every node shares groups
// with nearly every other one: pair leases beat, and connections stay up,
// to N−1 peers, and any two nodes that die at once hold a majority of some
// group. Standbys are therefore taken from the holder's neighbourhood on a
// ring of peers ordered by a hash of the peer ID alone: a node then shares
// groups only with peers a few ring positions away, whatever the number of
// agents, and nodes further apart on the ring than that never share one.
// The holder is still the agent's best host by rendezvous, so holdings
// spread as evenly as before and placement reviews keep their meaning.

// NearWidth is how many ring positions on each side of a group's anchor
// count as its neighbourhood for a group of 1+replicas: at least 2, so a
// group of 3 has 4 candidates for its 2 standbys; meshes of up to
// 2·NearWidth+1 nodes are one neighbourhood, placed exactly as by Rank.
func NearWidth(replicas int) int { return max(2, replicas) }

// ringKey places a peer on the placement ring: the first 8 bytes of
// sha256("igor-ring/v1" ‖ 0x00 ‖ peerID), big-endian.
func ringKey(peer string) uint64 {
	sum := sha256.Sum256([]byte("igor-ring/v1\x00" + peer))
	return binary.BigEndian.Uint64(sum[:8])
}

// RingDistances returns, for every peer of ring and anchor, its distance
// from anchor on the placement ring of those peers (ringKey order, ties
// by peer ID): 0 for the anchor, at most len/2. Duplicates count once.
func RingDistances(anchor string, ring []string) map[string]int {
	peers := append(slices.Clone(ring), anchor)
	slices.Sort(peers)
	peers = slices.Compact(peers)
	keys := make(map[string]uint64, len(peers))
	for _, p := range peers {
		keys[p] = ringKey(p)
	}
	slices.SortFunc(peers, func(a, b string) int {
		if c := cmp.Compare(keys[a], keys[b]); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	at := slices.Index(peers, anchor)
	n := len(peers)
	out := make(map[string]int, n)
	for i, p := range peers {
		d := (i - at + n) % n
		out[p] = min(d, n-d)
	}
	return out
}

// NearPeersFirst returns ranked (an order of peers, e.g. Rank's) with the
// peers near anchor first: those within NearWidth(replicas) positions of
// anchor on the ring of ring's peers, then the rest; each part keeps
// ranked's order. Peers of ranked missing from ring are placed on it too.
// ranked is not modified.
func NearPeersFirst(ranked []string, anchor string, ring []string, replicas int) []string {
	dist := RingDistances(anchor, append(slices.Clone(ring), ranked...))
	w := NearWidth(replicas)
	out := make([]string, 0, len(ranked))
	for _, p := range ranked {
		if dist[p] <= w {
			out = append(out, p)
		}
	}
	for _, p := range ranked {
		if dist[p] > w {
			out = append(out, p)
		}
	}
	return out
}

// NearFirst is NearPeersFirst over host records (Place's result): a group
// is the first 1+replicas of NearFirst(ranked, ranked[0].Peer, ring,
// replicas) — the agent's best host and standbys from its neighbourhood,
// the rest of the mesh only when the neighbourhood lacks eligible hosts.
// ring holds the peers of every known host record, eligible or not, so that
// one node turning a single agent down does not shift the ring.
func NearFirst(ranked []*agents.HostRecord, anchor string, ring []string, replicas int) []*agents.HostRecord {
	peers := make([]string, len(ranked))
	for i, h := range ranked {
		peers[i] = h.Peer
	}
	order := NearPeersFirst(peers, anchor, ring, replicas)
	// A stable reorder by position, so that a peer listed twice keeps both
	// records (Place lists each peer once).
	pos := make(map[string]int, len(order))
	for i, p := range order {
		if _, ok := pos[p]; !ok {
			pos[p] = i
		}
	}
	out := slices.Clone(ranked)
	slices.SortStableFunc(out, func(a, b *agents.HostRecord) int { return cmp.Compare(pos[a.Peer], pos[b.Peer]) })
	return out
}

// HostPeers returns the peer IDs of hosts (a ring for NearFirst).
func HostPeers(hosts []*agents.HostRecord) []string {
	out := make([]string, 0, len(hosts))
	for _, h := range hosts {
		if h != nil {
			out = append(out, h.Peer)
		}
	}
	return out
}
