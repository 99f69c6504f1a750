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
