package lease

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// pairNet is a tiny lock-step network of machines with pair tables: every
// tick each node's table and machine tick, and messages are delivered at
// once unless their directed link is cut.
type pairNet struct {
	t     *testing.T
	names []string
	m     map[string]*Machine
	pt    map[string]*PairTable
	cut   map[[2]string]bool
	drop  func(Message) bool // loses the messages it picks, if set
	now   int64
	trace []string
}

func newPairNet(t *testing.T, names []string) *pairNet {
	n := &pairNet{t: t, names: names, m: map[string]*Machine{}, pt: map[string]*PairTable{}, cut: map[[2]string]bool{}}
	for i, name := range names {
		pt, err := NewPairTable(name, uint64(100+i), 2, 10)
		if err != nil {
			t.Fatal(err)
		}
		pt.SetPeers(names)
		m, err := New(Config{Self: name, Group: names, Rank: i, HeartbeatTicks: 2, LeaseTicks: 10, WaitTicks: 12, DriftTicks: 2,
			RetryTicks: 8, Rand: func() uint64 { return 0 }, HardState: HardState{Accepted: Checkpoint{ID: "g"}}, Pairs: pt})
		if err != nil {
			t.Fatal(err)
		}
		n.m[name], n.pt[name] = m, pt
	}
	return n
}

// flush delivers everything until no node has output, checking after each
// Ready that at most one node runs the agent.
func (n *pairNet) flush() {
	for range 1000 {
		var msgs []Message
		for _, name := range n.names {
			rd := n.m[name].Ready()
			msgs = append(msgs, rd.Messages...)
			n.m[name].Advance()
			msgs = append(msgs, n.pt[name].Messages()...)
		}
		var running []string
		for _, name := range n.names {
			if n.m[name].Running() {
				running = append(running, name)
			}
		}
		if len(running) > 1 {
			n.t.Fatalf("t=%d: two runners %v\n%s", n.now, running, strings.Join(n.trace[max(0, len(n.trace)-40):], "\n"))
		}
		if len(msgs) == 0 {
			return
		}
		for _, msg := range msgs {
			if n.cut[[2]string{msg.From, msg.To}] || n.drop != nil && n.drop(msg) {
				continue
			}
			if msg.Type != MsgPairBeat && msg.Type != MsgPairAck {
				n.trace = append(n.trace, fmt.Sprintf("t=%d %s", n.now, DescribeMessage(msg)))
			}
			var err error
			if msg.Type == MsgPairBeat || msg.Type == MsgPairAck {
				err = n.pt[msg.To].Step(msg)
			} else {
				err = n.m[msg.To].Step(msg)
			}
			if err != nil && !errors.Is(err, ErrNotMember) {
				n.t.Fatalf("Step %s: %v", DescribeMessage(msg), err)
			}
		}
	}
	n.t.Fatal("messages never settle")
}

func (n *pairNet) tick(k int) {
	for range k {
		n.now++
		for _, name := range n.names {
			n.pt[name].TickTo(n.now)
			n.m[name].TickTo(n.now)
		}
		n.flush()
	}
}

// isolate cuts (or heals) every link between p and the nodes in others,
// in the directions given.
func (n *pairNet) link(from, to []string, up bool) {
	for _, a := range from {
		for _, b := range to {
			if up {
				delete(n.cut, [2]string{a, b})
			} else {
				n.cut[[2]string{a, b}] = true
			}
		}
	}
}

func (n *pairNet) runner() string {
	for _, name := range n.names {
		if n.m[name].Running() {
			return name
		}
	}
	return ""
}

// TestPairLeaseDefection is the case pair leases need defections for
// (pairs.go): in a group of five, holder a keeps its lease through b and c
// while d and e cannot hear it; d campaigns, e promises. Then d and e hear
// a again (and acknowledge its pair beats), while b stops hearing it and,
// once its view lapsed, promises d too — a majority for d. Had d's and e's
// acknowledgements still counted for a (no defection), a's lease would rest
// on c, d and e while d runs the agent. With defections it ends, and d
// starts only after.
func TestPairLeaseDefection(t *testing.T) {
	names := []string{"a", "b", "c", "d", "e"}
	n := newPairNet(t, names)
	if err := n.m["a"].Campaign(); err != nil {
		t.Fatal(err)
	}
	n.flush()
	n.tick(5)
	if n.runner() != "a" {
		t.Fatalf("a does not run after winning: %s", n.m["a"].Describe())
	}
	appends := func() int {
		k := 0
		for _, l := range n.trace {
			if strings.Contains(l, " Append ") {
				k++
			}
		}
		return k
	}
	before := appends()
	n.tick(40)
	if got := appends() - before; got != 0 {
		t.Fatalf("an idle holder sent %d per-group Appends in 40 ticks; pair beats should renew its lease", got)
	}
	if n.runner() != "a" {
		t.Fatalf("a lost its lease on pair beats alone: %s", n.m["a"].Describe())
	}
	// d and e stop hearing a (one way: a still hears them).
	n.link([]string{"a"}, []string{"d", "e"}, false)
	for i := 0; i < 60 && n.m["d"].Role() != Candidate; i++ {
		n.tick(1)
	}
	if n.m["d"].Role() != Candidate && n.m["e"].Role() != Candidate {
		t.Fatalf("neither d nor e campaigns: %s / %s", n.m["d"].Describe(), n.m["e"].Describe())
	}
	// d and e hear a again and acknowledge its pair beats, but their
	// per-group messages to a are lost (so a learns of no higher epoch);
	// b stops hearing a. a must not count d's and e's acknowledgements:
	// its lease now rests on c alone, and ends before d can start.
	n.link([]string{"a"}, []string{"d", "e"}, true)
	n.link([]string{"a"}, []string{"b"}, false)
	n.drop = func(m Message) bool {
		return m.To == "a" && (m.From == "d" || m.From == "e") && m.Type != MsgPairAck && m.Type != MsgPairBeat
	}
	ran := map[string]bool{}
	for range 200 {
		n.tick(1)
		if r := n.runner(); r != "" {
			ran[r] = true
		}
	}
	if n.runner() == "a" || !slices.ContainsFunc(names, func(p string) bool { return p != "a" && ran[p] }) {
		t.Fatalf("no takeover from a after b, d and e left it (runners seen %v): a %s, d %s", ran, n.m["a"].Describe(), n.m["d"].Describe())
	}
}

// A group of one with pair leases renews its lease by the clock alone, and
// the runner's fence (LeaseView.End) agrees: the solo daemon's agent, whose
// ticks stopped when the view counted the holder as fresh at "infinity"
// and the fence's time arithmetic overflowed.
func TestPairLeaseGroupOfOne(t *testing.T) {
	n := newPairNet(t, []string{"a"})
	if err := n.m["a"].Campaign(); err != nil {
		t.Fatal(err)
	}
	n.flush()
	for range 100 {
		n.tick(1)
		m := n.m["a"]
		if !m.Running() {
			t.Fatalf("t=%d: the only member stopped: %s", n.now, m.Describe())
		}
		end, view := m.LeaseEnd(), m.LeaseView().End(n.pt["a"], m.Now())
		if end <= m.Now() || end > m.Now()+10 || view != end {
			t.Fatalf("t=%d: lease end %d, view %d: want both in (now, now+L]", n.now, end, view)
		}
	}
}

// A holder that hands one group off relinquishes towards its members,
// which ends their promise in that group — but the leases of its other
// groups with the same members must hold: they keep counting the
// acknowledgements under the old relinquishment count until the groups are
// established again. (With one acknowledgement kept per peer, the first
// acknowledgement naming the new count ended every such lease at once: 97
// agents held by survivors stopped in a 1,000-agent run when rank moves
// began after a failover.)
func TestRelinquishKeepsOtherGroups(t *testing.T) {
	names := []string{"a", "b", "c"}
	pts := map[string]*PairTable{}
	ms := map[string]map[string]*Machine{} // group → node → machine
	for i, n := range names {
		pt, err := NewPairTable(n, uint64(10+i), 2, 10)
		if err != nil {
			t.Fatal(err)
		}
		pt.SetPeers(names)
		pts[n] = pt
	}
	for _, g := range []string{"g1", "g2"} {
		ms[g] = map[string]*Machine{}
		for i, n := range names {
			m, err := New(Config{Self: n, Group: names, Rank: i, HeartbeatTicks: 2, LeaseTicks: 10, WaitTicks: 12, DriftTicks: 2,
				Rand: func() uint64 { return 0 }, HardState: HardState{Accepted: Checkpoint{ID: "g"}}, Pairs: pts[n]})
			if err != nil {
				t.Fatal(err)
			}
			ms[g][n] = m
		}
	}
	now := int64(0)
	flush := func() {
		for range 100 {
			type env struct {
				g   string
				msg Message
			}
			var out []env
			for _, g := range []string{"g1", "g2"} {
				for _, n := range names {
					out = append(out, func() (e []env) {
						for _, msg := range ms[g][n].Ready().Messages {
							e = append(e, env{g, msg})
						}
						return
					}()...)
					ms[g][n].Advance()
				}
			}
			for _, n := range names {
				for _, msg := range pts[n].Messages() {
					out = append(out, env{"", msg})
				}
			}
			if len(out) == 0 {
				return
			}
			for _, e := range out {
				var err error
				if e.g == "" {
					err = pts[e.msg.To].Step(e.msg)
				} else {
					err = ms[e.g][e.msg.To].Step(e.msg)
				}
				if err != nil {
					t.Fatalf("%s: %v", DescribeMessage(e.msg), err)
				}
			}
		}
		t.Fatal("messages never settle")
	}
	tick := func(k int) {
		for range k {
			now++
			for _, n := range names {
				for _, g := range []string{"g1", "g2"} {
					ms[g][n].TickTo(now)
				}
				pts[n].TickTo(now)
			}
			flush()
			if !ms["g2"]["a"].Running() {
				t.Fatalf("t=%d: a lost g2 (%s)", now, ms["g2"]["a"].Describe())
			}
		}
	}
	for _, g := range []string{"g1", "g2"} {
		if err := ms[g]["a"].Campaign(); err != nil {
			t.Fatal(err)
		}
	}
	flush()
	tick(30) // idle: both leases on pair beats alone
	if err := ms["g1"]["a"].Transfer("b"); err != nil {
		t.Fatal(err)
	}
	flush()
	tick(40)
	if !ms["g1"]["b"].Running() {
		t.Fatalf("g1 did not move to b: %s", ms["g1"]["b"].Describe())
	}
}
