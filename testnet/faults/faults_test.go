package main

import (
	"errors"
	"slices"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func at(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }

func view(peer string, read time.Time, sts ...custodyStatus) nodeView {
	m := map[string]custodyStatus{}
	for _, s := range sts {
		m[s.DID] = s
	}
	return nodeView{Peer: peer, OK: true, ReadAt: read, Sts: m}
}

func holder(did string, epoch, seq uint64, leaseEnd time.Time, members ...string) custodyStatus {
	return custodyStatus{DID: did, Role: "holder", Running: true, Epoch: epoch, AcceptedSeq: seq, LeaseEnd: leaseEnd, Members: members}
}

func follower(did string, seq uint64, heard time.Time, holderPeer string, members ...string) custodyStatus {
	return custodyStatus{DID: did, Role: "follower", AcceptedSeq: seq, LastHeard: heard, Holder: holderPeer, Members: members}
}

func ident(s string) string { return s }

func TestTrackerTwoRunners(t *testing.T) {
	tr := newTracker(t0, ident)
	dids := []string{"d"}
	// Two runners at different epochs in one sample: not yet a violation.
	tr.add(sample{At: at(1), Views: []nodeView{
		view("a", at(1), holder("d", 1, 5, at(2), "a", "b", "c")),
		view("b", at(1), holder("d", 2, 5, at(3), "a", "b", "c")),
	}}, dids)
	if len(tr.violations) != 0 {
		t.Fatalf("one sample with two epochs: %v", tr.violations)
	}
	// The same in the next sample: a violation.
	tr.add(sample{At: at(1.25), Views: []nodeView{
		view("a", at(1.25), holder("d", 1, 5, at(2), "a", "b", "c")),
		view("b", at(1.25), holder("d", 2, 5, at(3), "a", "b", "c")),
	}}, dids)
	if len(tr.violations) != 1 || tr.violations[0].Kind != "two runners in consecutive samples" {
		t.Fatalf("two consecutive samples: %v", tr.violations)
	}
	// Two runners at one epoch: at once.
	tr2 := newTracker(t0, ident)
	tr2.add(sample{At: at(1), Views: []nodeView{
		view("a", at(1), holder("d", 3, 5, at(2), "a", "b", "c")),
		view("b", at(1), holder("d", 3, 5, at(2), "a", "b", "c")),
	}}, dids)
	if len(tr2.violations) != 1 || tr2.violations[0].Kind != "two runners at one epoch" {
		t.Fatalf("one epoch on two nodes: %v", tr2.violations)
	}
}

func TestTrackerPastLeaseIsNotARunner(t *testing.T) {
	tr := newTracker(t0, ident)
	dids := []string{"d"}
	for _, s := range []float64{5, 5.25} {
		tr.add(sample{At: at(s), Views: []nodeView{
			view("a", at(s), holder("d", 1, 5, at(4), "a", "b", "c")), // lease ended 1 s before
			view("b", at(s), holder("d", 2, 5, at(7), "a", "b", "c")),
		}}, dids)
	}
	if len(tr.violations) != 0 {
		t.Fatalf("a status past its lease end counted as a runner: %v", tr.violations)
	}
	if len(tr.pastLease) != 2 {
		t.Fatalf("past-lease statuses: got %d, want 2", len(tr.pastLease))
	}
}

func TestTrackerCommittedBackwards(t *testing.T) {
	tr := newTracker(t0, ident)
	dids := []string{"d"}
	// a holds; b and c accepted seq 9: seq 9 is committed.
	tr.add(sample{At: at(1), Views: []nodeView{
		view("a", at(1), holder("d", 1, 9, at(2), "a", "b", "c")),
		view("b", at(1), follower("d", 9, at(1), "a", "a", "b", "c")),
		view("c", at(1), follower("d", 9, at(1), "a", "a", "b", "c")),
	}}, dids)
	if tr.committed["d"] != 9 {
		t.Fatalf("committed bound %d, want 9", tr.committed["d"])
	}
	// Later b runs from seq 7: a committed checkpoint was lost.
	tr.add(sample{At: at(4), Views: []nodeView{
		{Peer: "a"},
		view("b", at(4), holder("d", 2, 7, at(5), "a", "b", "c")),
		view("c", at(4), follower("d", 9, at(4), "b", "a", "b", "c")),
	}}, dids)
	if len(tr.violations) != 1 || tr.violations[0].Kind != "committed seq went backwards" {
		t.Fatalf("violations: %v", tr.violations)
	}
	// A holder ahead of its members within one sample is no violation
	// (the bound only counts from earlier samples).
	tr3 := newTracker(t0, ident)
	tr3.add(sample{At: at(1), Views: []nodeView{
		view("a", at(1), holder("d", 1, 4, at(2), "a", "b", "c")),
		view("b", at(1), follower("d", 5, at(1), "a", "a", "b", "c")),
		view("c", at(1), follower("d", 5, at(1), "a", "a", "b", "c")),
	}}, dids)
	if len(tr3.violations) != 0 {
		t.Fatalf("same-sample bound: %v", tr3.violations)
	}
}

func TestTrackerMembershipChangesAndTakeover(t *testing.T) {
	tr := newTracker(t0, ident)
	dids := []string{"d"}
	tr.add(sample{At: at(1), Views: []nodeView{view("a", at(1), holder("d", 1, 1, at(2), "a", "b", "c"))}}, dids)
	w := tr.watch("a", at(1.5), dids)
	tr.add(sample{At: at(2), Views: []nodeView{view("a", at(2)), view("b", at(2))}}, dids)
	tr.add(sample{At: at(3.5), Views: []nodeView{view("b", at(3.5), holder("d", 2, 1, at(5), "b", "c", "e"))}}, dids)
	if len(tr.changes) != 1 || !slices.Equal(tr.changes[0].From, []string{"a", "b", "c"}) || !slices.Equal(tr.changes[0].To, []string{"b", "c", "e"}) {
		t.Fatalf("changes: %+v", tr.changes)
	}
	if got := w.found["d"]; !got.Equal(at(3.5)) {
		t.Fatalf("takeover seen at %v, want %v", got, at(3.5))
	}
	if tr.changes[0].Returning {
		t.Error("e was never a member: not a return")
	}
	tr.add(sample{At: at(4), Views: []nodeView{view("b", at(4), holder("d", 2, 1, at(5), "a", "b", "c"))}}, dids)
	if len(tr.changes) != 2 || !tr.changes[1].Returning {
		t.Fatalf("a back in the group: %+v", tr.changes)
	}
	if d := tr.maxNowhere["d"]; d != 1500*time.Millisecond {
		t.Fatalf("running nowhere %v, want 1.5s", d)
	}
}

func TestClassifyChange(t *testing.T) {
	start, heal := at(0), at(3)
	rm := memberChange{From: []string{"v", "b", "c"}, To: []string{"b", "c", "e"}}
	for _, tc := range []struct {
		at   float64
		heal time.Time
		want string
	}{
		{2, heal, "needless"},        // removed during a 3 s cut
		{10, heal, "needless"},       // removed after it was back
		{33, heal, "needless"},       // a slow rejoin let the bound pass
		{31, at(40), "at bound"},     // a 40 s cut
		{55, at(40), "at bound"},     // decided in the cut, committed after the heal
		{29.9, at(29.9), "needless"}, // a cut just below the bound
	} {
		c := rm
		c.At = at(tc.at)
		if got := classifyChange(c, "v", start, tc.heal); got != tc.want {
			t.Errorf("change at %.1fs, heal %v: %s, want %s", tc.at, tc.heal.Sub(t0), got, tc.want)
		}
	}
	back := rm
	back.At, back.Returning = at(2), true
	if got := classifyChange(back, "v", start, heal); got != "move" {
		t.Errorf("a move back to a former member: %s", got)
	}
	add := memberChange{At: at(2), From: []string{"b", "c"}, To: []string{"b", "c", "v"}}
	if got := classifyChange(add, "v", start, heal); got != "other" {
		t.Errorf("adding the victim: %s", got)
	}
}

func TestRejoined(t *testing.T) {
	heal := at(10)
	members := []string{"v", "b", "c"}
	// v follows b's group: rejoined when it heard b after the heal.
	s := sample{At: at(11), Views: []nodeView{
		view("v", at(11), follower("d", 3, at(9), "b", members...)),
		view("b", at(11), holder("d", 2, 3, at(12), members...)),
	}}
	if done, _, _ := rejoined(s, "v", heal); done {
		t.Fatal("rejoined before hearing its holder")
	}
	s.Views[0] = view("v", at(11), follower("d", 3, at(10.5), "b", members...))
	if done, p, _ := rejoined(s, "v", heal); !done {
		t.Fatalf("not rejoined: %v", p)
	}
	// v holds: every other member must have heard it after the heal.
	s = sample{At: at(11), Views: []nodeView{
		view("v", at(11), holder("d", 1, 3, at(12), members...)),
		view("b", at(11), follower("d", 3, at(10.2), "v", members...)),
		view("c", at(11), follower("d", 3, at(9.9), "v", members...)),
	}}
	if done, p, _ := rejoined(s, "v", heal); done || !slices.Equal(p, []string{"d"}) {
		t.Fatalf("c has not heard v since the heal: done %v pending %v", done, p)
	}
	// A stale membership (the live runner's members exclude v) is skipped.
	s = sample{At: at(11), Views: []nodeView{
		view("v", at(11), follower("d", 3, at(1), "b", members...)),
		view("b", at(11), holder("d", 2, 3, at(12), "b", "c", "e")),
	}}
	if done, p, _ := rejoined(s, "v", heal); !done {
		t.Fatalf("stale membership counted: %v", p)
	}
	if done, _, _ := rejoined(sample{Views: []nodeView{{Peer: "v"}}}, "v", heal); done {
		t.Fatal("an unreadable victim rejoined")
	}
}

func TestCensusFindings(t *testing.T) {
	members := []string{"a", "b", "c"}
	s := sample{Views: []nodeView{
		view("a", at(1), holder("d", 1, 1, at(2), members...)),
		view("b", at(1), follower("d", 1, at(1), "a", members...)),
		view("c", at(1), follower("d", 1, at(1), "a", members...)),
		view("e", at(1), follower("d", 1, at(0), "x", "e", "b", "c")), // left over
		view("p", at(1)),
	}}
	keys := map[string]map[string]bool{"a": {"d": true}, "e": {"d": true}, "p": {"d": true}, "q": {"d": true}}
	got := censusFindings(s, []string{"d"}, keys, map[string]string{"d": "p"}, ident)
	var strs []string
	for _, f := range got {
		strs = append(strs, f.What+"@"+f.Node)
	}
	// e keeps group and key; p published it (keeps the key by design); q
	// is no node of the sample.
	want := []string{"group@e", "key@e"}
	if !slices.Equal(strs, want) {
		t.Fatalf("findings %v, want %v", strs, want)
	}
}

func TestSchedule(t *testing.T) {
	a := schedule(42, 30*time.Second, 45*time.Second, 4)
	b := schedule(42, 30*time.Second, 45*time.Second, 4)
	if len(a) != 4*(len(kinds)-1) {
		t.Fatalf("%d faults, want %d", len(a), 4*(len(kinds)-1))
	}
	for i := range a {
		if a[i].Kind != b[i].Kind || a[i].Dur != b[i].Dur {
			t.Fatal("the schedule is not fixed by the seed")
		}
	}
	count := map[string]int{}
	for _, f := range a {
		count[f.Kind]++
		switch f.Kind {
		case kFlap:
			if len(f.Cycles) < 2 || len(f.Cycles) > 3 {
				t.Errorf("flap with %d cycles", len(f.Cycles))
			}
			for _, c := range f.Cycles {
				if c[0] < time.Second || c[0] > 6*time.Second || c[1] < time.Second || c[1] > 3*time.Second {
					t.Errorf("flap cycle %v", c)
				}
			}
		case kStop:
			if f.Dur < time.Second || f.Dur > 2*time.Second {
				t.Errorf("sigstop for %v", f.Dur)
			}
		case kIsolateLong:
			if f.Dur != 30*time.Second {
				t.Errorf("long cut %v", f.Dur)
			}
		}
	}
	for _, k := range kinds {
		want := 4
		if k == kIsolateLong || k == kIsolateEvict {
			want = 2
		}
		if count[k] != want {
			t.Errorf("%s: %d times in 4 rounds, want %d", k, count[k], want)
		}
	}
}

func TestParseArgs(t *testing.T) {
	if _, err := parseArgs([]string{"--minutes", "1", "--seconds", "30"}); !errors.Is(err, errUsage) {
		t.Errorf("both durations: %v", err)
	}
	if _, err := parseArgs([]string{"--agents", "31"}); !errors.Is(err, errUsage) {
		t.Errorf("31 agents: %v", err)
	}
	c, err := parseArgs([]string{"--seed", "3"})
	if err != nil || c.Seed != 3 || c.Duration != 6*time.Minute || c.Nodes != 5 || c.Agents != 15 {
		t.Errorf("defaults: %+v %v", c, err)
	}
}

func TestPercentile(t *testing.T) {
	v := []float64{3, 1, 2, 4}
	if p := percentile(v, 50); p != 2 {
		t.Errorf("p50 %v", p)
	}
	if p := percentile(v, 100); p != 4 {
		t.Errorf("max %v", p)
	}
}
