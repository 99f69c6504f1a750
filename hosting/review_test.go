package hosting

import (
	"slices"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
)

const reviewAgent = "z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"

func reviewRecords(now time.Time, peers ...string) map[string]*agents.HostRecord {
	out := map[string]*agents.HostRecord{}
	for _, p := range peers {
		out[p] = &agents.HostRecord{Peer: p, FreeSlots: 1, Expires: now.Add(time.Minute).UnixNano()}
	}
	return out
}

func TestReviewMember(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	order := Rank(reviewAgent, []string{"p1", "p2", "p3", "p4", "p5"})
	best, second, self, below, last := order[0], order[1], order[2], order[3], order[4]
	members := []string{last, below, self, second, best} // any order: ranked inside
	cases := []struct {
		name     string
		draining bool
		edit     func(map[string]*agents.HostRecord)
		want     string
	}{
		{"the best member above self", false, nil, best},
		{"the best is full: the next above self", false, func(r map[string]*agents.HostRecord) { r[best].FreeSlots = 0 }, second},
		{"the best's record expired", false, func(r map[string]*agents.HostRecord) { r[best].Expires = now.UnixNano() - 1 }, second},
		{"the best is unknown", false, func(r map[string]*agents.HostRecord) { delete(r, best) }, second},
		{"nobody above self can take it: keep", false, func(r map[string]*agents.HostRecord) {
			r[best].FreeSlots, r[second].FreeSlots = 0, 0
		}, ""},
		{"draining: a member below self will do", true, func(r map[string]*agents.HostRecord) {
			r[best].FreeSlots, r[second].FreeSlots = 0, 0
		}, below},
		{"draining, nobody has room", true, func(r map[string]*agents.HostRecord) {
			for _, h := range r {
				h.FreeSlots = 0
			}
		}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			recs := reviewRecords(now, order...)
			if c.edit != nil {
				c.edit(recs)
			}
			got := ReviewMember(reviewAgent, members, self, c.draining, now, func(p string) *agents.HostRecord { return recs[p] })
			if got != c.want {
				t.Fatalf("ReviewMember = %q, want %q (rank %v, self %s)", got, c.want, order, self)
			}
		})
	}
}

func TestOutsiderCandidates(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	order := Rank(reviewAgent, []string{"p1", "p2", "p3", "p4", "p5", "p6"})
	recs := reviewRecords(now, order...)
	ranked := make([]*agents.HostRecord, len(order))
	for i, p := range order {
		ranked[i] = recs[p]
	}
	peers := func(hs []*agents.HostRecord) []string {
		var out []string
		for _, h := range hs {
			out = append(out, h.Peer)
		}
		return out
	}
	// self ranks 3rd, a member 1st: only the 2nd ranks above self and is outside.
	self, members := order[2], []string{order[0], order[2], order[5]}
	if got, want := peers(OutsiderCandidates(reviewAgent, ranked, members, self, false)), []string{order[1]}; !slices.Equal(got, want) {
		t.Fatalf("moving up: %v, want %v", got, want)
	}
	// Draining or short: every non-member, best first.
	if got, want := peers(OutsiderCandidates(reviewAgent, ranked, members, self, true)), []string{order[1], order[3], order[4]}; !slices.Equal(got, want) {
		t.Fatalf("any host: %v, want %v", got, want)
	}
	// The best-ranked node holds it: nobody outside ranks above it.
	if got := OutsiderCandidates(reviewAgent, ranked, []string{order[0], order[4]}, order[0], false); len(got) != 0 {
		t.Fatalf("holder ranked first: %v, want none", peers(got))
	}
}

func TestShortGroup(t *testing.T) {
	m := &agents.Manifest{}
	m.Lease.Replicas = 2
	for n, want := range map[int]bool{1: true, 2: true, 3: false, 4: false} {
		if got := ShortGroup(m, make([]string, n)); got != want {
			t.Errorf("%d members, 2 replicas: short=%t, want %t", n, got, want)
		}
	}
}
