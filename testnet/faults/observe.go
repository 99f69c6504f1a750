package main

// What the harness sees of the daemons and what it concludes (pure; the
// unit tests feed it samples).

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// custodyStatus is the part of GET /v1/custody (custody.Status) we use.
type custodyStatus struct {
	DID         string    `json:"did"`
	Role        string    `json:"role"`
	Running     bool      `json:"running"`
	Moving      bool      `json:"moving"`
	Epoch       uint64    `json:"epoch"`
	AcceptedSeq uint64    `json:"accepted_seq"`
	Holder      string    `json:"holder"`
	Members     []string  `json:"members"`
	Conf        uint64    `json:"conf"`
	LeaseEnd    time.Time `json:"lease_end"`
	LastHeard   time.Time `json:"last_heard"`
	Started     bool      `json:"started"`
}

// nodeView is one node's custody at one read; OK false when the read
// failed (a stopped or killed daemon): nothing is concluded from it.
type nodeView struct {
	Peer   string
	OK     bool
	ReadAt time.Time
	Sts    map[string]custodyStatus // by DID
}

// sample is one round of reads of every node.
type sample struct {
	At    time.Time
	Views []nodeView
}

// pastLeaseSlack: a status read this long after its lease end that still
// says running is counted as "running past its lease end" (and not as a
// runner: its fence has passed).
const pastLeaseSlack = 250 * time.Millisecond

// runner is a node running an agent at one sample.
type runner struct {
	Peer  string
	Epoch uint64
	St    custodyStatus
}

// runners lists the nodes that run did in s with a live lease; past lists
// those that say running with a lease that ended more than pastLeaseSlack
// before the read.
func runners(s sample, did string) (live, past []runner) {
	for _, v := range s.Views {
		if !v.OK {
			continue
		}
		st, ok := v.Sts[did]
		if !ok || !st.Running {
			continue
		}
		r := runner{v.Peer, st.Epoch, st}
		if !st.LeaseEnd.IsZero() && v.ReadAt.Sub(st.LeaseEnd) > pastLeaseSlack {
			past = append(past, r)
			continue
		}
		live = append(live, r)
	}
	return live, past
}

// committedBound is a lower bound of the agent's committed seq in s, from
// the member list of its one runner: the majority-th highest accepted seq
// among the members that answered (fewer answers only lower it). ok is
// false when not enough members answered.
func committedBound(s sample, did string, members []string) (uint64, bool) {
	var seqs []uint64
	for _, v := range s.Views {
		if !v.OK || !slices.Contains(members, v.Peer) {
			continue
		}
		if st, ok := v.Sts[did]; ok {
			seqs = append(seqs, st.AcceptedSeq)
		}
	}
	k := len(members)/2 + 1
	if len(members) == 0 || len(seqs) < k {
		return 0, false
	}
	slices.Sort(seqs)
	slices.Reverse(seqs)
	return seqs[k-1], true
}

// violation is a safety or status finding at one instant.
type violation struct {
	At     time.Time `json:"-"`
	AtS    float64   `json:"t_s"`
	Kind   string    `json:"kind"`
	DID    string    `json:"did"`
	Detail string    `json:"detail"`
}

// memberChange is a change of an agent's member set, as its one live
// runner reports it.
type memberChange struct {
	At       time.Time `json:"-"`
	AtS      float64   `json:"t_s"`
	DID      string    `json:"did"`
	From, To []string  `json:"-"`
	FromS    string    `json:"from"`
	ToS      string    `json:"to"`
	// Returning: every member it adds was a member of this agent's group
	// earlier in the run (a move back toward a host the group lost, after
	// it had been reachable for MoveAfter: DECISIONS D41), not a repair.
	Returning bool `json:"returning"`
}

// takeoverWatch waits for the agents a victim ran to run elsewhere.
type takeoverWatch struct {
	victim string
	start  time.Time
	dids   map[string]bool
	found  map[string]time.Time // first sample with another runner
	onVict map[string]time.Time // first sample after start with the victim running again (after a gap)
	gap    map[string]bool      // a sample with nobody running it was seen
}

// tracker folds samples into the run's findings. Not safe for concurrent
// use (the harness holds its lock).
type tracker struct {
	t0           time.Time
	name         func(string) string // peer -> "nN"
	dupPrev      map[string]bool
	committed    map[string]uint64 // highest bound seen in earlier samples
	members      map[string][]string
	everMembers  map[string]map[string]bool
	violations   []violation
	pastLease    []violation
	changes      []memberChange
	watches      []*takeoverWatch
	samples      int
	last         sample
	nowhereSince map[string]time.Time // agents running nowhere (complete samples)
	maxNowhere   map[string]time.Duration
}

func newTracker(t0 time.Time, name func(string) string) *tracker {
	return &tracker{t0: t0, name: name, dupPrev: map[string]bool{}, committed: map[string]uint64{},
		members: map[string][]string{}, everMembers: map[string]map[string]bool{}, nowhereSince: map[string]time.Time{}, maxNowhere: map[string]time.Duration{}}
}

func (t *tracker) names(peers []string) string {
	out := make([]string, len(peers))
	for i, p := range peers {
		out[i] = t.name(p)
	}
	slices.Sort(out)
	return strings.Join(out, ",")
}

func (t *tracker) violate(at time.Time, kind, did, format string, a ...any) {
	t.violations = append(t.violations, violation{at, round1(at.Sub(t.t0).Seconds()), kind, did, fmt.Sprintf(format, a...)})
}

// add folds one sample over the agents dids.
func (t *tracker) add(s sample, dids []string) {
	t.samples++
	t.last = s
	complete := !slices.ContainsFunc(s.Views, func(v nodeView) bool { return !v.OK })
	bounds := map[string]uint64{}
	for _, did := range dids {
		live, past := runners(s, did)
		for _, p := range past {
			t.pastLease = append(t.pastLease, violation{s.At, round1(s.At.Sub(t.t0).Seconds()), "running past lease end", did,
				fmt.Sprintf("%s says running at epoch %d, lease ended %v before the read", t.name(p.Peer), p.Epoch, s.At.Sub(p.St.LeaseEnd).Round(time.Millisecond))})
		}
		// One runner per agent.
		dup := len(live) >= 2
		if dup {
			var desc []string
			sameEpoch := false
			for i, r := range live {
				desc = append(desc, fmt.Sprintf("%s@%d", t.name(r.Peer), r.Epoch))
				for _, q := range live[:i] {
					sameEpoch = sameEpoch || q.Epoch == r.Epoch
				}
			}
			switch {
			case sameEpoch:
				t.violate(s.At, "two runners at one epoch", did, "running on %s", strings.Join(desc, " "))
			case t.dupPrev[did]:
				t.violate(s.At, "two runners in consecutive samples", did, "running on %s", strings.Join(desc, " "))
			}
		}
		t.dupPrev[did] = dup
		// No committed checkpoint lost: a live runner holds at least what
		// earlier samples showed committed.
		for _, r := range live {
			if c := t.committed[did]; r.St.AcceptedSeq < c {
				t.violate(s.At, "committed seq went backwards", did, "%s runs epoch %d from accepted seq %d; seq %d was committed earlier",
					t.name(r.Peer), r.Epoch, r.St.AcceptedSeq, c)
			}
		}
		if len(live) == 1 {
			r := live[0]
			if b, ok := committedBound(s, did, r.St.Members); ok {
				bounds[did] = b
			}
			ms := slices.Clone(r.St.Members)
			slices.Sort(ms)
			ever := t.everMembers[did]
			if ever == nil {
				ever = map[string]bool{}
				t.everMembers[did] = ever
			}
			if old, ok := t.members[did]; ok && !slices.Equal(old, ms) {
				returning := true
				for _, m := range ms {
					if !slices.Contains(old, m) && !ever[m] {
						returning = false
					}
				}
				t.changes = append(t.changes, memberChange{s.At, round1(s.At.Sub(t.t0).Seconds()), did, old, ms, t.names(old), t.names(ms), returning})
			}
			for _, m := range ms {
				ever[m] = true
			}
			t.members[did] = ms
		}
		// Running nowhere, in samples that read every node.
		if complete {
			if len(live) == 0 {
				if _, ok := t.nowhereSince[did]; !ok {
					t.nowhereSince[did] = s.At
				}
			} else if since, ok := t.nowhereSince[did]; ok {
				t.maxNowhere[did] = max(t.maxNowhere[did], s.At.Sub(since))
				delete(t.nowhereSince, did)
			}
		}
		// Takeovers.
		for _, w := range t.watches {
			if !w.dids[did] {
				continue
			}
			if len(live) == 0 {
				w.gap[did] = true
			}
			for _, r := range live {
				if r.Peer != w.victim {
					if _, ok := w.found[did]; !ok {
						w.found[did] = s.At
					}
				} else if w.gap[did] {
					if _, ok := w.onVict[did]; !ok {
						w.onVict[did] = s.At
					}
				}
			}
		}
	}
	for did, b := range bounds {
		t.committed[did] = max(t.committed[did], b)
	}
}

// watch starts following the agents that victim runs now.
func (t *tracker) watch(victim string, start time.Time, dids []string) *takeoverWatch {
	w := &takeoverWatch{victim: victim, start: start, dids: map[string]bool{}, found: map[string]time.Time{},
		onVict: map[string]time.Time{}, gap: map[string]bool{}}
	for _, d := range dids {
		w.dids[d] = true
	}
	t.watches = append(t.watches, w)
	return w
}

func (t *tracker) unwatch(w *takeoverWatch) {
	t.watches = slices.DeleteFunc(t.watches, func(x *takeoverWatch) bool { return x == w })
}

// runningOn lists the agents that peer runs (live lease) in the latest sample.
func (t *tracker) runningOn(peer string, dids []string) []string {
	var out []string
	for _, did := range dids {
		live, _ := runners(t.last, did)
		if len(live) == 1 && live[0].Peer == peer {
			out = append(out, did)
		}
	}
	return out
}

// exactlyOnce counts the agents that run on exactly one node in the latest
// sample (and whether every node answered).
func (t *tracker) exactlyOnce(dids []string) (n int, complete bool) {
	complete = !slices.ContainsFunc(t.last.Views, func(v nodeView) bool { return !v.OK })
	for _, did := range dids {
		if live, _ := runners(t.last, did); len(live) == 1 {
			n++
		}
	}
	return n, complete
}

// rejoined reports whether every group of victim hears it again, or it
// hears its group, since heal (the LastHeard of the statuses): a follower
// has heard its holder after heal; as holder, every other member has heard
// it after heal. Groups in which victim is no longer a member by the one
// live runner's word are not counted (stale memberships are a finding of
// their own). pending names the groups still waiting; counted is how many
// groups were looked at (0: the node is in no live group any more).
func rejoined(s sample, victim string, heal time.Time) (done bool, pending []string, counted int) {
	var vv *nodeView
	for i := range s.Views {
		if s.Views[i].Peer == victim {
			vv = &s.Views[i]
		}
	}
	if vv == nil || !vv.OK {
		return false, []string{"victim unreadable"}, 0
	}
	dids := make([]string, 0, len(vv.Sts))
	for did := range vv.Sts {
		dids = append(dids, did)
	}
	sort.Strings(dids)
	for _, did := range dids {
		st := vv.Sts[did]
		live, _ := runners(s, did)
		if len(live) == 1 && !slices.Contains(live[0].St.Members, victim) {
			continue // stale membership
		}
		counted++
		if st.Role == "holder" && st.Running {
			for _, m := range st.Members {
				if m == victim {
					continue
				}
				ok := false
				for _, v := range s.Views {
					if v.Peer == m && v.OK {
						ms, has := v.Sts[did]
						ok = has && ms.Holder == victim && ms.LastHeard.After(heal)
					}
				}
				if !ok {
					pending = append(pending, did)
					break
				}
			}
			continue
		}
		if !st.LastHeard.After(heal) {
			pending = append(pending, did)
		}
	}
	return len(pending) == 0, pending, counted
}

// staleFinding is a node that still has a custody group (or the key) of an
// agent whose live runner does not list it as a member.
type staleFinding struct {
	DID  string `json:"did"`
	Node string `json:"node"`
	What string `json:"what"` // "group" or "key"
}

func (f staleFinding) String() string { return fmt.Sprintf("%s:%s@%s", f.What, tail(f.DID, 6), f.Node) }

// censusFindings compares each node's memberships and agent keys with the
// member list of each agent's one live runner. keys[peer] holds the DIDs
// whose key file the node has (nil: not looked at); publisher[did] is the
// node that published the agent (it keeps the key by design). Agents with
// no single live runner are skipped (nothing to compare with).
func censusFindings(s sample, dids []string, keys map[string]map[string]bool, publisher map[string]string, name func(string) string) []staleFinding {
	var out []staleFinding
	for _, did := range dids {
		live, _ := runners(s, did)
		if len(live) != 1 {
			continue
		}
		members := live[0].St.Members
		for _, v := range s.Views {
			if slices.Contains(members, v.Peer) {
				continue
			}
			if _, ok := v.Sts[did]; v.OK && ok {
				out = append(out, staleFinding{did, name(v.Peer), "group"})
			}
			if keys[v.Peer][did] && publisher[did] != v.Peer {
				out = append(out, staleFinding{did, name(v.Peer), "key"})
			}
		}
	}
	return out
}

// percentile is the nearest-rank p-th percentile of values (sorted here).
func percentile(values []float64, p float64) float64 {
	if len(values) == 0 {
		return math.NaN()
	}
	s := slices.Clone(values)
	slices.Sort(s)
	r := int(math.Ceil(p / 100 * float64(len(s))))
	return s[min(max(r, 1), len(s))-1]
}

func round1(f float64) float64 { return math.Round(f*10) / 10 }
func round2(f float64) float64 { return math.Round(f*100) / 100 }

func tail(s string, n int) string { return s[max(0, len(s)-n):] }
