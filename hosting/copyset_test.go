package hosting

import (
	"cmp"
	"fmt"
	"slices"
	"testing"

	"github.com/igor-mesh/igor-node/agents"
)

// copysetGroups places n agents over peers as a publish does (the best host
// by rendezvous, then its ring neighbourhood) or, with near false, by
// rendezvous alone; it returns each group, holder first.
func copysetGroups(peers []string, n, replicas int, near bool) [][]string {
	var out [][]string
	for i := 0; i < n; i++ {
		aid := fmt.Sprintf("agent-%d", i)
		ranked := Rank(aid, peers)
		if near {
			ranked = NearPeersFirst(ranked, ranked[0], peers, replicas)
		}
		out = append(out, ranked[:1+replicas])
	}
	return out
}

// partners counts, per peer, the distinct peers it shares a group with.
func partners(groups [][]string) map[string]int {
	sets := map[string]map[string]bool{}
	for _, g := range groups {
		for _, a := range g {
			for _, b := range g {
				if a != b {
					if sets[a] == nil {
						sets[a] = map[string]bool{}
					}
					sets[a][b] = true
				}
			}
		}
	}
	out := map[string]int{}
	for p, s := range sets {
		out[p] = len(s)
	}
	return out
}

func testPeers(n int) []string {
	var peers []string
	for i := 0; i < n; i++ {
		peers = append(peers, peerOf(fmt.Sprintf("n%d", i)))
	}
	return peers
}

// TestNearFirstSmallMeshIsRendezvous: a mesh of up to 2·NearWidth+1 hosts is
// one neighbourhood, so groups there are exactly rendezvous groups (the
// 3- and 5-node testnets place as before).
func TestNearFirstSmallMeshIsRendezvous(t *testing.T) {
	m := testManifest(t, `{}`)
	for n := 1; n <= 2*NearWidth(2)+1; n++ {
		var hosts []*agents.HostRecord
		for i := 0; i < n; i++ {
			hosts = append(hosts, hostRec(t, fmt.Sprintf("n%d", i), nil))
		}
		for i := 0; i < 50; i++ {
			aid := agentOf(fmt.Sprint(i))
			ranked, err := Place(aid, m, hosts, placeNow)
			if err != nil {
				t.Fatal(err)
			}
			near := NearFirst(ranked, ranked[0].Peer, HostPeers(hosts), 2)
			if !slices.Equal(HostPeers(near), HostPeers(ranked)) {
				t.Fatalf("%d hosts, agent %d: NearFirst %v, Place %v: want the same order", n, i, HostPeers(near), HostPeers(ranked))
			}
		}
	}
}

// TestCopysetsBoundPartners: 500 agents in groups of 3 over 50 nodes. By
// rendezvous alone nearly every node shares a group with every other one;
// with standbys from the holder's neighbourhood no node shares one with
// more than 4·NearWidth peers, holdings are exactly rendezvous's, and five
// nodes spread around the ring can die at once without any group losing
// its majority (at random placement some always do).
func TestCopysetsBoundPartners(t *testing.T) {
	peers := testPeers(50)
	const agentsN, replicas = 500, 2
	w := NearWidth(replicas)
	scattered := copysetGroups(peers, agentsN, replicas, false)
	near := copysetGroups(peers, agentsN, replicas, true)

	pn, ps := partners(near), partners(scattered)
	maxNear, sumNear, sumScattered := 0, 0, 0
	for _, p := range peers {
		maxNear = max(maxNear, pn[p])
		sumNear += pn[p]
		sumScattered += ps[p]
	}
	t.Logf("partners per node: rendezvous alone mean %.1f; near mean %.1f, max %d (bound %d)",
		float64(sumScattered)/50, float64(sumNear)/50, maxNear, 4*w)
	spread := func(groups [][]string) (lo, hi int) {
		n := map[string]int{}
		for _, g := range groups {
			for _, p := range g {
				n[p]++
			}
		}
		lo = len(groups)
		for _, p := range peers {
			lo, hi = min(lo, n[p]), max(hi, n[p])
		}
		return lo, hi
	}
	slo, shi := spread(scattered)
	nlo, nhi := spread(near)
	t.Logf("memberships per node (mean %d): rendezvous alone %d–%d, near %d–%d", 3*agentsN/50, slo, shi, nlo, nhi)
	if maxNear > 4*w {
		t.Fatalf("a node shares groups with %d peers, more than 4·NearWidth = %d", maxNear, 4*w)
	}
	if float64(sumScattered)/50 < 30 {
		t.Fatalf("rendezvous alone gives %.1f partners per node: the comparison is not the scattered case it should be", float64(sumScattered)/50)
	}
	for i := range near {
		if near[i][0] != scattered[i][0] {
			t.Fatalf("agent %d: holder %s, rendezvous's first %s: the holder must stay the agent's best host", i, near[i][0], scattered[i][0])
		}
	}

	// Five victims 10 ring positions apart: no group holds two of them.
	byPos := slices.Clone(peers)
	slices.SortFunc(byPos, func(a, b string) int { return cmp.Compare(ringKey(a), ringKey(b)) })
	for k, p := range byPos {
		if d := RingDistances(byPos[0], peers)[p]; d != min(k, 50-k) {
			t.Fatalf("ring position %d at distance %d from position 0", k, d)
		}
	}
	victims := map[string]bool{}
	for i := 0; i < 5; i++ {
		victims[byPos[i*10]] = true
	}
	lost := func(groups [][]string) int {
		n := 0
		for _, g := range groups {
			dead := 0
			for _, p := range g {
				if victims[p] {
					dead++
				}
			}
			if dead >= 2 {
				n++
			}
		}
		return n
	}
	if l := lost(near); l != 0 {
		t.Fatalf("%d groups lost a majority to 5 nodes spread around the ring", l)
	}
	if l := lost(scattered); l == 0 {
		t.Fatalf("rendezvous alone lost no group to the same 5 nodes: the test no longer shows what copysets are for")
	} else {
		t.Logf("the same 5 nodes killed: rendezvous alone loses a majority in %d groups, near placement in 0", l)
	}
}

// TestNearPeersFirstFallsBack: neighbours that cannot take the agent (not in
// ranked) leave room for the rest of the mesh, in ranked's order; the ring
// is every known host, so one host turning an agent down does not move the
// others' neighbourhoods.
func TestNearPeersFirstFallsBack(t *testing.T) {
	peers := testPeers(30)
	d := RingDistances(peers[0], peers)
	var near, far []string
	for _, p := range peers[1:] {
		if d[p] <= NearWidth(2) {
			near = append(near, p)
		} else {
			far = append(far, p)
		}
	}
	if len(near) != 2*NearWidth(2) {
		t.Fatalf("%d peers within %d ring positions of the anchor, want %d", len(near), NearWidth(2), 2*NearWidth(2))
	}
	// Only one neighbour is eligible: it comes first, then the far ones in
	// the given order.
	ranked := append([]string{far[3], far[0], near[2]}, far[5:]...)
	got := NearPeersFirst(ranked, peers[0], peers, 2)
	want := append([]string{near[2], far[3], far[0]}, far[5:]...)
	if !slices.Equal(got, want) {
		t.Fatalf("NearPeersFirst = %v, want %v", got, want)
	}
	// The anchor need not be eligible, nor in the ring.
	got = NearPeersFirst(far, "not-a-known-peer", peers, 2)
	if len(got) != len(far) {
		t.Fatalf("NearPeersFirst returned %d of %d peers", len(got), len(far))
	}
}

// TestRingDistances: symmetric, 0 only for the anchor, at most n/2, and
// each distance d ≥ 1 held by exactly two peers (one for d = n/2, n even).
func TestRingDistances(t *testing.T) {
	for _, n := range []int{1, 2, 7, 8, 50} {
		peers := testPeers(n)
		for _, a := range peers {
			d := RingDistances(a, peers)
			count := map[int]int{}
			for _, b := range peers {
				if d[b] != RingDistances(b, peers)[a] {
					t.Fatalf("n=%d: distance %s→%s %d, back %d", n, a, b, d[b], RingDistances(b, peers)[a])
				}
				if d[b] > n/2 || (d[b] == 0) != (a == b) {
					t.Fatalf("n=%d: distance %s→%s = %d", n, a, b, d[b])
				}
				count[d[b]]++
			}
			for k, c := range count {
				want := 2
				switch {
				case k == 0:
					want = 1
				case n%2 == 0 && k == n/2:
					want = 1
				}
				if c != want {
					t.Fatalf("n=%d: %d peers at distance %d, want %d", n, c, k, want)
				}
			}
		}
	}
}
