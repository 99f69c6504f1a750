package main

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseArgsFailover(t *testing.T) {
	cfg, err := parseArgs(nil)
	if err != nil || cfg.Kill != 0 || cfg.Observe != 180*time.Second || cfg.Seed != 1 || cfg.Burn {
		t.Fatalf("failover defaults: %+v %v", cfg, err)
	}
	cfg, err = parseArgs([]string{"--nodes", "5", "--kill", "2", "--observe", "120", "--seed", "7", "--burn"})
	if err != nil || cfg.Kill != 2 || cfg.Observe != 120*time.Second || cfg.Seed != 7 || !cfg.Burn {
		t.Fatalf("%+v %v", cfg, err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", "3", "--kill", "3"}, "--kill must be from 0 to nodes-1 = 2"},
		{[]string{"--kill", "-1"}, "--kill must be from 0"},
		{[]string{"--nodes", "1", "--kill", "1"}, "--kill must be from 0 to nodes-1 = 0"},
		{[]string{"--kill", "1", "--observe", "0"}, "--observe must be from 1"},
		{[]string{"--burn"}, "--burn burns a core during the failover observation: it needs --kill"},
		{[]string{"--spread"}, "--spread picks the nodes to kill: it needs --kill"},
	} {
		if _, err := parseArgs(c.args); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want %q", c.args, err, c.want)
		}
	}
}

func TestPickVictims(t *testing.T) {
	a := pickVictims(5, 2, 1)
	if len(a) != 2 || !slices.Equal(a, pickVictims(5, 2, 1)) {
		t.Fatalf("not deterministic or wrong size: %v", a)
	}
	differs := false
	for seed := uint64(1); seed < 50; seed++ {
		v := pickVictims(7, 3, seed)
		if len(v) != 3 || !slices.IsSorted(v) || slices.Contains(v, 0) || len(slices.Compact(slices.Clone(v))) != 3 {
			t.Fatalf("seed %d: %v", seed, v)
		}
		for _, i := range v {
			if i < 1 || i > 6 {
				t.Fatalf("seed %d: index %d out of 1..6", seed, i)
			}
		}
		differs = differs || !slices.Equal(v, pickVictims(7, 3, 1))
	}
	if !differs {
		t.Error("every seed picks the same nodes")
	}
	if v := pickVictims(3, 5, 1); !slices.Equal(v, []int{1, 2}) {
		t.Errorf("k above n-1: %v", v)
	}
	if v := pickVictims(3, 0, 1); v != nil {
		t.Errorf("k 0: %v", v)
	}
	if v := pickVictims(1, 1, 1); v != nil {
		t.Errorf("one node: %v", v)
	}
}

func TestPercentile(t *testing.T) {
	ten := []float64{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	for _, c := range []struct {
		v    []float64
		p    float64
		want float64
	}{
		{ten, 50, 5}, {ten, 99, 10}, {ten, 100, 10}, {ten, 90, 9}, {ten, 91, 10}, {ten, 10, 1}, {ten, 0.1, 1},
		{[]float64{7}, 50, 7}, {[]float64{7}, 99, 7},
		{[]float64{1, 2}, 50, 1}, {[]float64{1, 2}, 51, 2},
		{nil, 50, 0},
	} {
		if got := percentile(c.v, c.p); got != c.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", c.v, c.p, got, c.want)
		}
	}
	// 200 values 1..200: p99 is the 198th.
	var h []float64
	for i := 1; i <= 200; i++ {
		h = append(h, float64(i))
	}
	if got := percentile(h, 99); got != 198 {
		t.Errorf("p99 of 1..200 = %v", got)
	}
}

// A small script of samples: view("n0", "a@2", "b@3") is n0 answering with
// a running at epoch 2 and b at epoch 3; a "-" prefix is a membership that
// does not run; down("n2") did not answer.
func view(node string, sts ...string) obsNode {
	n := obsNode{Name: node, OK: true, Sts: map[string]custodyStatus{}}
	for _, s := range sts {
		st := custodyStatus{Running: true, Role: "holder"}
		if strings.HasPrefix(s, "-") {
			s, st.Running, st.Role = s[1:], false, "follower"
		}
		if strings.HasPrefix(s, "~") {
			s, st.Running, st.Role, st.Moving = s[1:], false, "holder", true
		}
		d, e, _ := strings.Cut(s, "@")
		for _, c := range e {
			st.Epoch = st.Epoch*10 + uint64(c-'0')
		}
		st.DID = d
		n.Sts[d] = st
	}
	return n
}

func down(node string) obsNode { return obsNode{Name: node} }

func at(s float64, nodes ...obsNode) obsSample {
	return obsSample{At: time.Duration(s * float64(time.Second)), Nodes: nodes}
}

// n1 is killed; a and b ran there, c on n0, d on n2.
func testBase() (map[string]baseAgent, map[string]bool) {
	return map[string]baseAgent{
		"a": {Node: "n1", Epoch: 1, Tick: 100, Dead: true},
		"b": {Node: "n1", Epoch: 4, Tick: 100, Dead: true},
		"c": {Node: "n0", Epoch: 1},
		"d": {Node: "n2", Epoch: 1},
	}, map[string]bool{"n1": true}
}

func TestTrackerRecovery(t *testing.T) {
	base, dead := testBase()
	tr := newTracker([]string{"a", "b", "c", "d", "x"}, base, dead) // x: not followed
	tr.add(at(0.25, view("n0", "c@1", "-a@1"), view("n2", "d@1", "-b@4")))
	if tr.lastRunning != 2 || tr.lastMissing != 2 {
		t.Errorf("after the kill: running %d, nowhere %d", tr.lastRunning, tr.lastMissing)
	}
	tr.add(at(2, view("n0", "c@1", "a@2"), view("n2", "d@1", "-b@4")))
	// n0 does not answer: c is not a survivor stop; b recovers on n2.
	tr.add(at(3, down("n0"), view("n2", "d@1", "b@6")))
	if tr.lastRunning != 3 || tr.lastMissing != 1 {
		t.Errorf("a partial sample changed the counts: running %d, nowhere %d", tr.lastRunning, tr.lastMissing)
	}
	b1 := tr.takeBucket()
	if b1.Recoveries != 2 || b1.Samples != 3 || b1.Partial != 1 || b1.Stops != 0 || b1.HolderChanges != 0 {
		t.Errorf("bucket: %+v", b1)
	}
	tr.add(at(3.25, view("n0", "c@1", "a@2"), view("n2", "d@1", "b@6")))
	if b := tr.takeBucket(); b.Recoveries != 0 || b.Samples != 1 {
		t.Errorf("second bucket: %+v", b)
	}
	o := tr.result()
	r := o.Recovery
	if r.Agents != 2 || r.Recovered != 2 || r.Never != 0 || r.MinS != 2 || r.P50S != 2 || r.P99S != 3 || r.MaxS != 3 ||
		r.EpochUpMin != 1 || r.EpochUpMax != 2 || r.LostAgain != 0 {
		t.Errorf("recovery: %+v", r)
	}
	if o.SurvivorAgents != 2 || o.SurvivorStops != 0 || o.HolderChanges != 0 || o.Dups.Agents != 0 ||
		o.Samples != 4 || o.Partial != 1 || o.FinalRunning != 4 || o.FinalMissing != 0 || o.MaxGapS != 1.75 {
		t.Errorf("outcome: %+v", o)
	}
}

func TestTrackerSurvivorStops(t *testing.T) {
	base, dead := testBase()
	tr := newTracker([]string{"a", "b", "c", "d"}, base, dead)
	tr.add(at(1, view("n0", "c@1"), view("n2", "d@1")))
	// c: n0 hands it off to n2 (moving on n0, running on n2: a holder
	// change); d: n2 drops its membership and nothing runs it.
	tr.add(at(5.5, view("n0", "~c@1"), view("n2", "c@2")))
	tr.add(at(5.75, view("n0"), view("n2", "c@2")))
	// d runs again on n0; a runs on n0 (recovery), then moves to n2.
	tr.add(at(9, view("n0", "d@2", "a@2"), view("n2", "c@2")))
	tr.add(at(10, view("n0", "d@2"), view("n2", "c@2", "a@3")))
	o := tr.result()
	if o.SurvivorStops != 2 || o.StopsBack != 2 || len(o.Stops) != 2 {
		t.Fatalf("stops: %+v", o.Stops)
	}
	c, d := o.Stops[0], o.Stops[1]
	if c.DID != "c" || c.Node != "n0" || c.AtS != 5.5 || c.Kind != "moved to n2" || !c.Moving || c.Role != "holder" ||
		c.BackS == nil || *c.BackS != 5.5 || c.BackOn != "n2" {
		t.Errorf("c: %+v", c)
	}
	if d.DID != "d" || d.Node != "n2" || d.AtS != 5.5 || d.Kind != "stopped" || d.Role != "" ||
		d.BackS == nil || *d.BackS != 9 || d.BackOn != "n0" {
		t.Errorf("d: %+v", d)
	}
	if g := o.StopGap; g.N != 2 || g.P50S != 0 || g.P99S != 3.5 || g.MaxS != 3.5 {
		t.Errorf("stop gaps: %+v", g)
	}
	if g := o.Recovery.LostAgainGap; o.Recovery.LostAgainBack != 1 || g.N != 1 || g.MaxS != 0 {
		t.Errorf("lost-again gaps: %d %+v", o.Recovery.LostAgainBack, g)
	}
	// c n0→n2, d n2→n0, a n0→n2 (after its recovery; the recovery itself
	// is no holder change).
	if o.HolderChanges != 3 {
		t.Errorf("holder changes %d, want 3", o.HolderChanges)
	}
	r := o.Recovery
	if r.Recovered != 1 || r.Never != 1 || !slices.Equal(r.NeverDIDs, []string{"b"}) || r.LostAgain != 1 ||
		!strings.Contains(r.LostAgainExample[0], "moved to n2 at 10.00s") || r.P50S != 9 {
		t.Errorf("recovery: %+v", r)
	}
	// A stop is counted once.
	tr.add(at(11, view("n0"), view("n2", "c@2", "a@3")))
	if o := tr.result(); o.SurvivorStops != 2 {
		t.Errorf("stops counted again: %d", o.SurvivorStops)
	}
}

func TestTrackerStopNotBack(t *testing.T) {
	base, dead := testBase()
	tr := newTracker([]string{"c"}, base, dead)
	tr.add(at(1, view("n0", "-c@1"), view("n2")))
	tr.add(at(2, view("n0", "-c@1"), view("n2")))
	o := tr.result()
	if o.SurvivorStops != 1 || o.StopsBack != 0 || o.Stops[0].BackS != nil || o.Stops[0].Role != "follower" || o.Stops[0].Kind != "stopped" {
		t.Errorf("%+v", o.Stops)
	}
	if o.StopGap.N != 0 || o.StopGap.String() != "no gaps" {
		t.Errorf("gaps of a stop that never ran again: %+v", o.StopGap)
	}
	if o.FinalMissing != 1 || o.FinalRunning != 0 {
		t.Errorf("final %d running, %d nowhere", o.FinalRunning, o.FinalMissing)
	}
}

func TestTrackerDuplicates(t *testing.T) {
	base, dead := testBase()
	// c: one sample on two nodes at different epochs (a read racing a
	// hand-off): transient. d: two samples in a row: confirmed. a: one
	// sample, one epoch on two nodes: confirmed.
	tr := newTracker([]string{"a", "c", "d"}, base, dead)
	tr.add(at(1, view("n0", "c@1", "d@1"), view("n2", "c@2", "d@2")))
	tr.add(at(1.25, view("n0", "d@1", "a@5"), view("n2", "c@2", "d@2", "a@5")))
	b := tr.takeBucket()
	if b.DupAgents != 3 {
		t.Errorf("bucket: %d agents on 2+ nodes, want 3", b.DupAgents)
	}
	tr.add(at(1.5, view("n0"), view("n2", "c@2", "d@2", "a@5")))
	o := tr.result()
	if o.Dups.Agents != 3 || o.Dups.Confirmed != 2 {
		t.Fatalf("dups: %+v", o.Dups)
	}
	joined := strings.Join(o.Dups.Examples, "\n")
	for _, want := range []string{"transient: c at 1.00s on n0@e1, n2@e2", "CONFIRMED: d at 1.25s on n0@e1, n2@e2 (2 samples running)", "CONFIRMED: a at 1.25s on n0@e5, n2@e5"} {
		if !strings.Contains(joined, want) {
			t.Errorf("examples %q lack %q", joined, want)
		}
	}
	// The recovery of a is not delayed by its duplicate sample, and no
	// holder change is counted while it runs twice.
	if o.Recovery.Recovered != 1 || o.Recovery.TimesS[0] != 1.25 {
		t.Errorf("recovery: %+v", o.Recovery)
	}
	// Not confirmed by two samples separated by a clean one.
	tr = newTracker([]string{"c"}, base, dead)
	tr.add(at(1, view("n0", "c@1"), view("n2", "c@2")))
	tr.add(at(2, view("n0"), view("n2", "c@2")))
	tr.add(at(3, view("n0", "c@3"), view("n2", "c@2")))
	if o := tr.result(); o.Dups.Agents != 1 || o.Dups.Confirmed != 0 {
		t.Errorf("separated duplicates: %+v", o.Dups)
	}
}

func TestCountLog(t *testing.T) {
	base, _ := testBase()
	log := strings.Join([]string{
		`time=1 level=INFO msg="custody: replacing the custody group" agent=a dead=[x] epoch=3`,
		`time=2 level=INFO msg="custody: handing agent off" agent=c to=p epoch=2`,
		`time=3 level=INFO msg="custody: agent regrouped" agent="d" members=[p q r]`,
		`time=4 level=WARN msg="a higher epoch holds the agent; stopping it here" agent=zz`,
		`time=5 level=INFO msg="custody: running agent" agent=a epoch=3`,
		`time=6 level=INFO msg="hosted agent stopped" reason=stopped`,
	}, "\n") + "\n"
	lc, err := countLog("n0", strings.NewReader(log), base, map[string]bool{"c": true})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][3]int{
		"replacing the custody group": {1, 0, 0},
		"handing agent off":           {0, 1, 0},
		"agent regrouped":             {0, 1, 0},
		"regroup":                     {0, 1, 0},
		"stopping":                    {0, 0, 1},
		"stopped":                     {0, 0, 1},
		"running agent":               {1, 0, 0},
		"level=WARN":                  {0, 0, 1},
	}
	for p, w := range want {
		if lc.Counts[p] != w {
			t.Errorf("%s: %v, want %v", p, lc.Counts[p], w)
		}
	}
	if lc.Counts["self-fenc"] != [3]int{} || lc.Lines != 6 {
		t.Errorf("self-fenc %v, lines %d", lc.Counts["self-fenc"], lc.Lines)
	}
	if len(lc.Examples) != 1 || !strings.Contains(lc.Examples[0], "handing agent off") {
		t.Errorf("examples: %q", lc.Examples)
	}
}

func TestWriteFailover(t *testing.T) {
	base, dead := testBase()
	tr := newTracker([]string{"a", "b", "c", "d"}, base, dead)
	tr.add(at(2, view("n0", "c@1", "a@2"), view("n2", "-d@1", "b@5")))
	back := 3.0
	f := &failoverReport{Kill: 1, Seed: 1, ObserveS: 10, Killed: []string{"n1 (pid 9)"}, Survivors: []string{"n0", "n2"},
		Outcome: tr.result(), Series: []seriesPoint{{T: 5, Running: 3, Missing: 1, CPUPct: []float64{12, 30}}},
		Verify: []verifyResult{{DID: "a", OfKilled: true, OK: true, Valid: true, Checkpoints: 9, MaxEpoch: 2}},
		Logs:   []logCounts{{Node: "n0", Lines: 4, Counts: map[string][3]int{"handing agent off": {0, 1, 0}}}}}
	f.Outcome.Stops[0].BackS, f.Outcome.Stops[0].BackOn = &back, "n0"
	var b strings.Builder
	writeFailover(&b, f)
	s := b.String()
	for _, want := range []string{"SIGKILL n1 (pid 9)", "recovery:       2/2", "survivor stops: 1 of 2", "d on n2 at 2.00s: stopped",
		"running again on n0 at 3.00s", "verify:         1/1", "handing agent off", "0/1/0", "FAILOVER FAIL"} {
		if !strings.Contains(s, want) {
			t.Errorf("report lacks %q:\n%s", want, s)
		}
	}
}

func TestTrackerLostAgainStopped(t *testing.T) {
	base, dead := testBase()
	tr := newTracker([]string{"a"}, base, dead)
	tr.add(at(2, view("n0", "a@2"), view("n2")))
	tr.add(at(31, view("n0", "~a@2"), view("n2")))
	tr.add(at(32, down("n0"), view("n2"))) // partial: not counted as running nowhere
	tr.add(at(35, view("n0", "a@3"), view("n2")))
	r := tr.result().Recovery
	if r.LostAgain != 1 || r.LostAgainBack != 1 || r.LostAgainGap.MaxS != 4 || !strings.Contains(r.LostAgainExample[0], "then stopped at 31.00s") {
		t.Errorf("%+v", r)
	}
}

func TestGaps(t *testing.T) {
	g := gaps([]float64{3, 1, 2})
	if g.N != 3 || g.P50S != 2 || g.P99S != 3 || g.MaxS != 3 || g.String() != "p50 2.00s, p99 3.00s, max 3.00s" {
		t.Errorf("%+v %s", g, g)
	}
}

// TestPickSpreadVictims: no two victims share a custody group; the pick is
// the seed's; too few such nodes is an error that says why.
func TestPickSpreadVictims(t *testing.T) {
	// A ring of 12 nodes where each node shares groups with its 2
	// neighbours on each side (as D70's placement does).
	const n = 12
	nodes := make([]*node, n)
	for i := range nodes {
		nodes[i] = &node{Index: i, Peer: fmt.Sprintf("p%d", i)}
	}
	var per [][]custodyStatus
	for i := 0; i < n; i++ {
		per = append(per, []custodyStatus{{DID: fmt.Sprintf("a%d", i), Members: []string{
			fmt.Sprintf("p%d", i), fmt.Sprintf("p%d", (i+1)%n), fmt.Sprintf("p%d", (i+2)%n)}}})
	}
	pg := partnerGraph(nodes, per)
	for i := 0; i < n; i++ {
		if len(pg[i]) != 4 || !pg[i][(i+1)%n] || !pg[i][(i+n-2)%n] || pg[i][(i+3)%n] {
			t.Fatalf("node %d: partners %v, want the 2 neighbours on each side", i, pg[i])
		}
	}
	for seed := uint64(1); seed <= 50; seed++ {
		v, err := pickSpreadVictims(n, 2, seed, pg)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(v) != 2 || v[0] == 0 || pg[v[0]][v[1]] {
			t.Fatalf("seed %d: victims %v share a group or include n0", seed, v)
		}
		if again, _ := pickSpreadVictims(n, 2, seed, pg); !slices.Equal(again, v) {
			t.Fatalf("seed %d: %v then %v", seed, v, again)
		}
	}
	// Everyone shares a group with everyone: no two can be killed.
	all := make([]map[int]bool, 5)
	for i := range all {
		all[i] = map[int]bool{}
		for j := 0; j < 5; j++ {
			if i != j {
				all[i][j] = true
			}
		}
	}
	if _, err := pickSpreadVictims(5, 2, 1, all); err == nil || !strings.Contains(err.Error(), "share no custody group") {
		t.Fatalf("pickSpreadVictims over a full graph: err %v, want one saying no 2 nodes share no group", err)
	}
}
