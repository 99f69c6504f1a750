package lease

import (
	"container/heap"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

var long = flag.Bool("long", false, "run many more random schedules (also LEASE_SIM_SCHEDULES=n)")

// The random simulation drives N machines through a seeded schedule of
// message delay, loss, duplication and reordering, crashes (losing only what
// was not persisted, sometimes in the middle of handling a Ready), restarts,
// partitions, process pauses and per-node clocks whose rate drifts within
// [1-ρ, 1+ρ]. Real time is explicit (a float64); the model is the set of
// nodes whose agent is running at each real instant. A paused node (SIGSTOP,
// a long GC) keeps its clock running but neither ticks nor steps, and its
// agent is frozen with it; on waking it calls TickTo(its clock tick) once,
// and only then receives what arrived meanwhile. After every event it checks:
//
//   - one runner: no node starts the agent, or resumes it after a pause,
//     while another still runs it;
//   - one holder per epoch, and Starts come in increasing epoch order;
//   - no committed checkpoint is lost or forked: every commit and every
//     Start descends from the latest committed checkpoint;
//   - each node's persisted epoch only grows, across restarts.
//
// At the end the network heals and every node restarts; within a bounded
// time some node must run the agent and commit a new checkpoint (liveness,
// so that a machine that never does anything cannot pass).
const (
	simH, simL, simD = 2, 10, 2
	simW             = simL + simD
	// simRho is the largest drift the margin covers: D ≥ 2ρL/(1-ρ).
	simRho = 0.09
)

type simParams struct {
	n                  int
	loss, dup, longDel float64
	maxDelay           float64
	midCrash           float64
	chaosEvery         float64
	duration           float64
	propose            float64
	pause              float64 // per tick
	// grace: Config.GraceTicks of every machine (half the schedules 0:
	// step down at the lease's end; the rest 1..W). With a grace a lapsed
	// holder still "runs" (no Stop yet), so one runner is checked on the
	// nodes that may tick: running, and their clock before LeaseEnd.
	grace int
	// pairs: the machines use pair leases (pairs.go); each node's
	// PairTable beats every other node through the same lossy network.
	pairs bool
	// noDefect (a mutant, for TestRandomSchedulesCatchMissingDefection):
	// the machines' defections are dropped, as if pairs.go had none.
	noDefect bool
}

type simEvent struct {
	at   float64
	seq  uint64
	kind int // evTick, evDeliver, evChaos
	node int
	gen  int
	msg  Message
	// evTick: the clock ticks to advance (TickTo(Now()+ticks)); 0 means 1
	// and a new pause may start there.
	ticks int64
}

const (
	evTick = iota
	evDeliver
	evChaos
	evRestart
)

type eventQueue []*simEvent

func (q eventQueue) Len() int { return len(q) }
func (q eventQueue) Less(i, j int) bool {
	if q[i].at != q[j].at {
		return q[i].at < q[j].at
	}
	return q[i].seq < q[j].seq
}
func (q eventQueue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *eventQueue) Push(x any)   { *q = append(*q, x.(*simEvent)) }
func (q *eventQueue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

type simNode struct {
	name    string
	rank    int
	m       *Machine
	up      bool
	gen     int
	hs      HardState
	rate    float64
	running bool
	rnd     *rand.Rand
	// pausedUntil: the process is paused until this real time; deliveries
	// wait for it. suspended: it was running the agent when paused (the
	// agent is frozen and counts as not running until the node wakes).
	pausedUntil float64
	suspended   bool
	// absent: not a member and no state (a spare host, or one that left
	// after a configuration change removed it).
	absent bool
	prio   int // rank order across all hosts (RankIn)
	pt     *PairTable
	// fenced: running, but its lease ended (a holder in its grace), at
	// the last check.
	fenced bool
}

type sim struct {
	p     simParams
	rng   *rand.Rand
	now   float64
	seq   uint64
	q     eventQueue
	nodes []*simNode
	index map[string]int
	side  []int           // partition side per node; nil = connected
	cut   map[[2]int]bool // directed links that drop everything (non-transitive, asymmetric)
	// gcut: directed links that drop per-group messages and carry pair
	// messages (a group idle on that link, or its messages refused there:
	// safety must not rest on per-group messages getting through).
	gcut map[[2]int]bool
	calm bool // final phase: no loss, no chaos

	parent    map[string]string // checkpoint ID → parent ID
	seqOf     map[string]uint64
	committed map[uint64]string // seq → ID
	maxCommit Checkpoint
	epochHold map[uint64]string
	lastStart uint64
	nextID    int

	founders []string // the founding configuration (Config.Group)

	violation  string
	calmCommit int
	trace      []string
	tracing    bool
	stats      simStats
}

type simStats struct {
	starts, commits, fences, crashes, schedules, takeovers, transfers int
	appends, pairMsgs                                                 int // per-group Appends and pair messages sent
	changes, removals                                                 int // ChangeConfig accepted; members that learned they are out
	pauses, wakeFences, resumes                                       int // wakeFences: a paused runner stopped on waking
	revivals                                                          int // a holder's lease renewed in its grace (GraceTicks)
}

func (s *sim) logf(format string, a ...any) {
	if s.tracing {
		s.trace = append(s.trace, fmt.Sprintf("%9.3f ", s.now)+fmt.Sprintf(format, a...))
	}
}

func (s *sim) fail(format string, a ...any) {
	if s.violation == "" {
		s.violation = fmt.Sprintf("t=%.3f: ", s.now) + fmt.Sprintf(format, a...)
	}
}

func (s *sim) push(e *simEvent) {
	s.seq++
	e.seq = s.seq
	heap.Push(&s.q, e)
}

func newSim(seed uint64, tracing bool, mode simMode) *sim {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	p := simParams{n: 3, pairs: mode.pairs, noDefect: mode.noDefect}
	if rng.IntN(2) == 1 {
		p.n = 5
	}
	p.loss = rng.Float64() * 0.3
	p.dup = rng.Float64() * 0.1
	p.longDel = rng.Float64() * 0.05
	p.maxDelay = 0.05 + rng.Float64()*1.5
	p.midCrash = rng.Float64() * 0.01
	p.chaosEvery = 3 + rng.Float64()*30
	p.duration = 150 + rng.Float64()*250
	p.propose = 0.1 + rng.Float64()*0.5
	p.pause = rng.Float64() * 0.01
	if seed%2 == 1 {
		// From the seed, not rng: the schedules of the seeds stay as
		// they were before the grace existed.
		p.grace = 1 + int(seed/2)%simW
	}
	if p.pairs && rng.IntN(2) == 0 {
		// Mostly idle: the lease then rests on pair beats alone between
		// rare proposals, which is what pair leases are for.
		p.propose = rng.Float64() * 0.02
	}
	s := &sim{p: p, rng: rng, index: map[string]int{}, parent: map[string]string{}, seqOf: map[string]uint64{"g": 0},
		committed: map[uint64]string{0: "g"}, maxCommit: Checkpoint{ID: "g"}, epochHold: map[uint64]string{}, tracing: tracing}
	// The founders, and two spare hosts a configuration change may add.
	const spares = 2
	ranks := rng.Perm(p.n + spares)
	for i := range p.n + spares {
		name := string(rune('a' + i))
		nd := &simNode{name: name, rank: ranks[i] % p.n, prio: ranks[i], hs: HardState{Accepted: Checkpoint{ID: "g"}},
			rnd: rand.New(rand.NewPCG(seed+uint64(i)+1, 7)), absent: i >= p.n}
		s.nodes = append(s.nodes, nd)
		s.index[name] = i
		if i < p.n {
			s.founders = append(s.founders, name)
		}
	}
	for i := range p.n { // founders' ranks: their order by priority
		s.nodes[i].rank = 0
		for j := range p.n {
			if s.nodes[j].prio < s.nodes[i].prio {
				s.nodes[i].rank++
			}
		}
	}
	for i := range p.n {
		s.start(i, s.founders)
	}
	s.push(&simEvent{at: p.chaosEvery * rng.Float64(), kind: evChaos})
	return s
}

func (s *sim) group() []string { return s.founders }

func (s *sim) start(i int, group []string) {
	nd := s.nodes[i]
	// The custody driver starts restored members quiet for a wait, and new
	// ones for longer (QuietTicks); any value must be safe.
	quiet := s.rng.IntN(3 * simW)
	var pairs Pairs
	nd.pt = nil
	if s.p.pairs {
		pt, err := NewPairTable(nd.name, 1+s.rng.Uint64N(1<<40), simH, simL) // a new session per process
		if err != nil {
			s.fail("NewPairTable(%s): %v", nd.name, err)
			return
		}
		var peers []string
		for _, o := range s.nodes {
			peers = append(peers, o.name)
		}
		pt.SetPeers(peers)
		nd.pt, pairs = pt, pt
		if s.p.noDefect {
			pairs = noDefect{pt}
		}
	}
	m, err := New(Config{Pairs: pairs, Self: nd.name, Group: group, Rank: nd.rank, HeartbeatTicks: simH, LeaseTicks: simL,
		WaitTicks: simW, DriftTicks: simD, Rand: nd.rnd.Uint64, HardState: nd.hs, QuietTicks: quiet, GraceTicks: s.p.grace,
		RankIn: func(members []string) int {
			// The order of a fixed per-schedule priority, as the driver's
			// rendezvous order is fixed per agent.
			r := 0
			for _, p := range members {
				if s.nodes[s.index[p]].prio < nd.prio {
					r++
				}
			}
			return r
		}})
	if err != nil {
		s.fail("New(%s): %v", nd.name, err)
		return
	}
	nd.m, nd.up, nd.absent = m, true, false
	nd.pausedUntil, nd.suspended = 0, false
	nd.gen++
	if m.Removed() {
		// Crashed after persisting its removal, before leaving.
		s.logf("%s restarts removed", nd.name)
		s.leave(i)
		return
	}
	s.newRate(nd)
	// A new process: its monotonic clock starts at an arbitrary phase.
	s.push(&simEvent{at: s.now + s.rng.Float64()/nd.rate, kind: evTick, node: i, gen: nd.gen})
	s.logf("%s starts, persisted %s, rank %d", nd.name, nd.hs, nd.rank)
}

// noDefect is a PairTable whose Defect does nothing (the mutant of
// simParams.noDefect).
type noDefect struct{ *PairTable }

func (noDefect) Defect(string) {}

func (s *sim) newRate(nd *simNode) {
	switch s.rng.IntN(3) {
	case 0:
		nd.rate = 1 - simRho
	case 1:
		nd.rate = 1 + simRho
	default:
		nd.rate = 1 - simRho + 2*simRho*s.rng.Float64()
	}
}

// leave: a member told it is out deletes its state, as the driver does.
func (s *sim) leave(i int) {
	nd := s.nodes[i]
	if nd.running {
		s.fail("%s leaves the group while running the agent", nd.name)
	}
	s.logf("%s leaves the group", nd.name)
	nd.up, nd.m, nd.absent, nd.hs, nd.pt = false, nil, true, HardState{}, nil
	nd.gen++
}

func (s *sim) crash(i int) {
	nd := s.nodes[i]
	if !nd.up {
		return
	}
	s.logf("%s crashes (running=%t)", nd.name, nd.running)
	s.stats.crashes++
	nd.up, nd.m, nd.running, nd.pt = false, nil, false, nil
	nd.pausedUntil, nd.suspended = 0, false
}

func (s *sim) connected(a, b int) bool {
	return (s.side == nil || s.side[a] == s.side[b]) && !s.cut[[2]int{a, b}]
}

func (s *sim) run() {
	for s.violation == "" && len(s.q) > 0 {
		e := heap.Pop(&s.q).(*simEvent)
		s.now = e.at
		if !s.calm && s.now > s.p.duration {
			s.beginCalm()
		}
		if s.calm && s.now > s.p.duration+calmTicks {
			break
		}
		switch e.kind {
		case evTick:
			nd := s.nodes[e.node]
			if !nd.up || nd.gen != e.gen {
				continue
			}
			pauseP := s.p.pause
			if nd.running {
				pauseP *= 4 // a paused holder is the interesting case
			}
			if e.ticks == 0 && !s.calm && s.rng.Float64() < pauseP {
				// Paused for k ticks of its clock, often longer than W: it
				// wakes on the grid, at the tick its clock is at then.
				k := 1 + s.rng.Int64N(3*simL)
				nd.pausedUntil = s.now + float64(k)/nd.rate
				nd.suspended, nd.running = nd.running, false
				s.logf("%s pauses for %d ticks (running=%t)", nd.name, k, nd.suspended)
				s.stats.pauses++
				s.push(&simEvent{at: nd.pausedUntil, kind: evTick, node: e.node, gen: e.gen, ticks: k + 1})
				continue
			}
			resumed := false
			if e.ticks > 0 {
				// Wakes: the frozen agent is held until this Ready's Stop.
				nd.pausedUntil = 0
				resumed, nd.running, nd.suspended = nd.suspended, nd.suspended, false
			}
			next, role := nd.m.NextTick(), nd.m.Role()
			target := nd.m.Now() + max(e.ticks, 1)
			nd.m.TickTo(target)
			if rd := nd.m.Ready(); target < next && (!rd.Empty() || nd.m.Role() != role) {
				s.fail("%s: TickTo(%d) before NextTick %d did something: %+v, %s -> %s", nd.name, target, next, rd, role, nd.m.Role())
			}
			if nd.m.Now() != target {
				s.fail("%s: TickTo(%d) left Now at %d", nd.name, target, nd.m.Now())
			}
			// Nothing missed is replayed: one message per member at most, and
			// no heartbeat with a Stop (it would renew the followers' views
			// of a lease that is over, delaying the takeover).
			perTo := map[string]int{}
			for _, msg := range nd.m.Ready().Messages {
				if perTo[msg.To]++; perTo[msg.To] > 1 || nd.m.Ready().Stop && msg.Type == MsgAppend {
					s.fail("%s: TickTo(%d) replays missed actions: %s", nd.name, target, DescribeReady("", nd.m.Ready()))
				}
			}
			if resumed {
				s.logf("%s wakes at tick %d", nd.name, target)
				if nd.m.Ready().Stop {
					s.stats.wakeFences++
				}
			}
			s.handle(e.node)
			if nd.up && nd.pt != nil {
				nd.pt.TickTo(target)
				s.sendPairs(nd)
				// A fence reads a copy of the acknowledgements (PairAcks),
				// not the table: the lease end must be the same. (Every
				// 8th tick: the copy at every tick tripled the run time.)
				if v := nd.m.LeaseView(); v != nil && target%8 == 0 {
					if a, b := v.End(nd.pt, nd.m.Now()), v.End(acksAt{nd.pt.Acks(), nd.pt.Now()}, nd.m.Now()); a != b {
						s.fail("%s: lease end %d by the pair table, %d by its copy", nd.name, a, b)
					}
				}
				// The engine skips a bound follower's wakes by FollowerWake:
				// it must agree with NextTick.
				if fw := nd.m.FollowerWake(); fw != nil {
					if a, b := fw.Tick(nd.pt), nd.m.NextTick(); a != b {
						s.fail("%s: FollowerWake says tick %d, NextTick %d (%s)", nd.name, a, b, nd.m.Describe())
					}
				}
			}
			if resumed && nd.up && s.mayTick(nd) {
				for _, o := range s.nodes {
					if o != nd && s.mayTick(o) {
						s.fail("two runners: %s resumes the agent after a pause while %s runs it", nd.name, o.name)
					}
				}
				s.logf("%s resumes the agent, lease end %d", nd.name, nd.m.LeaseEnd())
				s.stats.resumes++
			}
			propose := s.p.propose
			if s.calm {
				propose = max(propose, 0.1) // liveness asks for a commit in the calm phase
			}
			if nd.up && nd.m.Running() && s.rng.Float64() < propose {
				s.nextID++
				id := fmt.Sprintf("%s%d", nd.name, s.nextID)
				parent := nd.hs.Accepted
				if err := nd.m.Propose(Checkpoint{Seq: parent.Seq + 1, ID: id}); err != nil {
					s.fail("%s Propose while running: %v", nd.name, err)
				}
				s.parent[id], s.seqOf[id] = parent.ID, parent.Seq+1
				s.handle(e.node)
			}
			if nd.up && nd.gen == e.gen {
				if s.rng.Float64() < 0.1 && !s.calm {
					s.newRate(nd)
				}
				s.push(&simEvent{at: s.now + 1/nd.rate, kind: evTick, node: e.node, gen: e.gen})
			}
		case evDeliver:
			to, from := s.index[e.msg.To], s.index[e.msg.From]
			nd := s.nodes[to]
			if nd.up && s.now < nd.pausedUntil {
				// Waits in the socket buffer; delivered after the wake-up TickTo.
				s.push(&simEvent{at: nd.pausedUntil, kind: evDeliver, msg: e.msg})
				continue
			}
			if !nd.up || nd.absent || !s.connected(from, to) {
				continue
			}
			msg := e.msg
			if msg.Type == MsgPairBeat || msg.Type == MsgPairAck {
				if nd.pt == nil {
					s.fail("%s: a pair message without pair leases: %s", nd.name, DescribeMessage(msg))
					continue
				}
				s.logf("deliver %s", DescribeMessage(msg))
				fw := nd.m.FollowerWake() // taken before the beat, as the engine holds it
				if err := nd.pt.Step(msg); err != nil {
					s.fail("PairTable.Step: %v", err)
				}
				if fw != nil {
					if a, b := fw.Tick(nd.pt), nd.m.NextTick(); a != b {
						s.fail("%s: FollowerWake taken before %s says tick %d, NextTick %d (%s)", nd.name, DescribeMessage(msg), a, b, nd.m.Describe())
					}
				}
				s.sendPairs(nd)
				continue
			}
			// The custody driver renews the lease of the holder a member
			// already follows while the new checkpoint is still being
			// fetched: it steps a copy carrying only what it stored, and the
			// real message once the blocks are in (or never, if the fetch
			// fails). Model both. (Widening the condition to a new epoch is
			// caught: it resumes an old checkpoint at a higher epoch.)
			acc, at := nd.m.Accepted()
			if msg.Type == MsgAppend && msg.Epoch == at && msg.Epoch == nd.m.Epoch() && msg.Checkpoint.Seq > acc.Seq && s.rng.Float64() < 0.3 {
				hb := msg
				hb.Checkpoint = acc
				s.logf("deliver (fetching %s) %s", msg.Checkpoint.ID, DescribeMessage(hb))
				if err := nd.m.Step(hb); err != nil && !errors.Is(err, ErrNotMember) {
					s.fail("Step: %v", err)
				}
				s.handle(to)
				if s.rng.Float64() < 0.8 {
					s.push(&simEvent{at: s.now + s.rng.Float64()*3*s.p.maxDelay, kind: evDeliver, msg: msg})
				}
				continue
			}
			s.logf("deliver %s", DescribeMessage(msg))
			if err := nd.m.Step(msg); err != nil && !errors.Is(err, ErrNotMember) {
				s.fail("Step: %v", err)
			} else if err != nil {
				s.logf("  refused: %v", err)
			}
			s.handle(to)
		case evRestart:
			if !s.nodes[e.node].up && !s.nodes[e.node].absent && !s.calm {
				s.start(e.node, s.group())
			}
		case evChaos:
			if s.calm {
				continue
			}
			s.chaos()
			s.push(&simEvent{at: s.now + s.p.chaosEvery*(0.2+s.rng.Float64()), kind: evChaos})
		}
		if s.p.grace > 0 {
			s.checkRunners()
		}
	}
}

const calmTicks = 200

func (s *sim) beginCalm() {
	s.calm = true
	s.side, s.cut, s.gcut = nil, nil, nil
	s.logf("calm: heal, restart all, no loss")
	for i, nd := range s.nodes {
		if !nd.up && !nd.absent {
			s.start(i, s.group())
		}
	}
	s.calmCommit = s.stats.commits
}

func (s *sim) chaos() {
	i := s.rng.IntN(len(s.nodes))
	nd := s.nodes[i]
	switch s.rng.IntN(14) {
	case 11, 12, 13: // the holder changes the group's members in place
		s.reconfigure()
	case 10: // the driver asks for a campaign (publisher's kick, revive)
		if nd.up && nd.pausedUntil == 0 {
			err := nd.m.Campaign()
			if err != nil && !errors.Is(err, ErrLeaseLive) {
				s.fail("%s Campaign: %v", nd.name, err)
			}
			s.logf("%s campaign: %v", nd.name, err)
			s.handle(i)
		}
	case 0: // crash
		s.crash(i)
	case 1: // restart a crashed node
		for k := range s.nodes {
			j := (i + k) % len(s.nodes)
			if !s.nodes[j].up && !s.nodes[j].absent {
				s.start(j, s.group())
				break
			}
		}
	case 2: // isolate the runner (or a random node) from everyone
		for j, o := range s.nodes {
			if o.running || o.suspended {
				i = j
			}
		}
		s.side = make([]int, len(s.nodes))
		s.side[i] = 1
		s.logf("isolate %s", s.nodes[i].name)
	case 3: // random split
		s.side = make([]int, len(s.nodes))
		for j := range s.side {
			s.side[j] = s.rng.IntN(2)
		}
		s.logf("partition %v", s.side)
	case 4:
		s.side, s.cut, s.gcut = nil, nil, nil
		s.logf("heal")
	case 5:
		if nd.up {
			s.newRate(nd)
		}
	case 6: // bounce: a process restart a moment later
		s.bounce(i)
	case 7: // isolate the runner and bounce another node
		r := -1
		for j, o := range s.nodes {
			if o.running || o.suspended {
				r = j
			}
		}
		if r >= 0 && r != i {
			s.side = make([]int, len(s.nodes))
			s.side[r] = 1
			s.logf("isolate %s", s.nodes[r].name)
		}
		s.bounce(i)
	case 9: // cut random directed links (with pair leases, half the time for per-group messages only)
		cut := map[[2]int]bool{}
		for a := range s.nodes {
			for b := range s.nodes {
				if a != b && s.rng.IntN(3) == 0 {
					cut[[2]int{a, b}] = true
				}
			}
		}
		if !s.p.pairs {
			s.cut = cut
			s.logf("cut %v", cut)
			break
		}
		// With pair leases the lease outlives per-group traffic: cuts
		// that drop only per-group messages, alone or beside full cuts,
		// reach the states the pair table must handle (a holder that
		// hears of a higher epoch only through a per-group message).
		switch s.rng.IntN(4) {
		case 0:
			s.cut = cut
			s.logf("cut %v", cut)
		case 1:
			s.gcut = cut
			s.logf("cut group messages %v", cut)
		case 2: // every per-group message to and from the runner (or node i)
			r := i
			for j, o := range s.nodes {
				if o.running || o.suspended {
					r = j
				}
			}
			s.gcut = map[[2]int]bool{}
			for j := range s.nodes {
				if j != r {
					s.gcut[[2]int{r, j}], s.gcut[[2]int{j, r}] = true, true
				}
			}
			s.logf("cut group messages of %s", s.nodes[r].name)
		case 3: // one link, both ways
			j := (i + 1 + s.rng.IntN(len(s.nodes)-1)) % len(s.nodes)
			s.cut = map[[2]int]bool{{i, j}: true, {j, i}: true}
			s.logf("cut %s-%s", nd.name, s.nodes[j].name)
		}
	case 8: // hand the agent to another member
		for j, o := range s.nodes {
			if o.running && j != i {
				err := o.m.Transfer(nd.name)
				switch {
				case err == nil:
					s.stats.transfers++
					s.logf("%s transfers to %s", o.name, nd.name)
					s.handle(j)
				case errors.Is(err, ErrInvalidMessage) && !slices.Contains(o.m.Conf().Members, nd.name):
				case !errors.Is(err, ErrNotCommitted):
					s.fail("%s Transfer(%s): %v", o.name, nd.name, err)
				}
			}
		}
	}
}

// reconfigure: the running holder swaps a member for a spare, adds one or
// drops one, as the custody driver does to replace a dead member or fill
// a short group. An added host joins first, with the joint configuration
// and the committed checkpoint (custody.Manager.Join), like the driver's.
func (s *sim) reconfigure() {
	h := -1
	for j, o := range s.nodes {
		if o.running && o.pausedUntil == 0 {
			h = j
		}
	}
	if h < 0 {
		return
	}
	hm := s.nodes[h].m
	members := hm.Conf().Members
	var spare []int
	for j, o := range s.nodes {
		if o.absent && !slices.Contains(members, o.name) {
			spare = append(spare, j)
		}
	}
	var others []string
	for _, p := range members {
		if p != s.nodes[h].name {
			others = append(others, p)
		}
	}
	next := slices.Clone(members)
	var added []int
	switch op := s.rng.IntN(3); {
	case op == 0 && len(spare) > 0 && len(others) > 0: // swap
		out := others[s.rng.IntN(len(others))]
		next = slices.DeleteFunc(next, func(p string) bool { return p == out })
		fallthrough
	case op == 1 && len(spare) > 0 && len(members) < 5: // add
		j := spare[s.rng.IntN(len(spare))]
		added = append(added, j)
		next = append(next, s.nodes[j].name)
	case len(others) > 1: // drop
		out := others[s.rng.IntN(len(others))]
		next = slices.DeleteFunc(next, func(p string) bool { return p == out })
	default:
		return
	}
	slices.Sort(next)
	jc, err := hm.JoinConf(next)
	if err != nil {
		s.fail("%s JoinConf(%v): %v", s.nodes[h].name, next, err)
		return
	}
	for _, j := range added {
		nd := s.nodes[j]
		nd.hs = HardState{Epoch: hm.Epoch(), Accepted: hm.Committed(), AcceptedAt: hm.Epoch(), Conf: jc}
		s.start(j, s.group())
		s.logf("%s joins with %s", nd.name, nd.hs)
	}
	if s.rng.IntN(4) == 0 {
		// The driver gives up (a join failed, or too long): the hosts that
		// joined are asked to leave — or do not hear it (kept, harmless: a
		// configuration nobody proposed). The reservation is spent.
		for _, j := range added {
			if s.rng.IntN(2) == 0 {
				s.leave(j)
			}
		}
		s.logf("%s abandons the change to %v", s.nodes[h].name, next)
		return
	}
	if err := hm.ChangeConfig(jc); err != nil {
		if !errors.Is(err, ErrChangeInFlight) {
			s.fail("%s ChangeConfig(%v): %v", s.nodes[h].name, next, err)
		}
		for _, j := range added {
			s.leave(j) // the holder asks them to leave again
		}
		return
	}
	s.stats.changes++
	s.logf("%s changes the members to %v", s.nodes[h].name, next)
	s.handle(h)
}

func (s *sim) bounce(i int) {
	s.crash(i)
	s.push(&simEvent{at: s.now + 2*s.rng.Float64(), kind: evRestart, node: i})
}

// handle processes one Ready as a driver must, checking the model.
func (s *sim) handle(i int) {
	nd := s.nodes[i]
	rd := nd.m.Ready()
	if rd.Empty() {
		nd.m.Advance()
		return
	}
	if rd.Persist != nil {
		hs := *rd.Persist
		if hs.Epoch < nd.hs.Epoch {
			s.fail("%s persisted epoch %d after %d", nd.name, hs.Epoch, nd.hs.Epoch)
		}
		if hs.AcceptedAt > hs.Epoch {
			s.fail("%s persisted %s: accepted above its epoch", nd.name, hs)
		}
		// Through the real disk encoding, as a driver persists it.
		data, err := EncodeHardState(hs)
		if err != nil {
			s.fail("%s: encode %s: %v", nd.name, hs, err)
		}
		if back, err := DecodeHardState(data); err != nil || !back.Equal(hs) {
			s.fail("%s: HardState %s does not survive encoding: %v", nd.name, hs, err)
		}
		nd.hs = hs
		s.logf("%s persist %s", nd.name, hs)
	}
	if !s.calm && s.rng.Float64() < s.p.midCrash {
		// Crash after the fsync, before anything else of the Ready happened.
		nd.m.Advance()
		s.crash(i)
		return
	}
	if rd.Stop {
		if !nd.running {
			s.fail("%s stops an agent it does not run", nd.name)
		}
		if rd.StopReason == "" || rd.StopReason == "left the holder role" {
			s.fail("%s stops its agent without saying why (%q): every path that stops a holder names its reason", nd.name, rd.StopReason)
		}
		nd.running = false
		s.stats.fences++
		s.logf("%s STOP (%s)", nd.name, rd.StopReason)
	}
	for _, c := range rd.Committed {
		s.commit(nd, c)
	}
	if rd.Start != nil {
		s.startAgent(nd, *rd.Start)
	}
	for _, m := range rd.Messages {
		if m.Type == MsgAppend {
			s.stats.appends++
		}
		s.sendWire(nd, m)
	}
	nd.m.Advance()
	if rd.Removed {
		s.stats.removals++
		s.leave(i)
	}
}

// sendPairs sends what nd's pair table has to send.
func (s *sim) sendPairs(nd *simNode) {
	for _, m := range nd.pt.Messages() {
		s.stats.pairMsgs++
		s.sendWire(nd, m)
	}
}

// sendWire sends m through the real wire encoding, as a driver does.
func (s *sim) sendWire(nd *simNode, m Message) {
	data, err := EncodeMessage(m)
	if err != nil {
		s.fail("%s: encode %v: %v", nd.name, m, err)
	}
	back, err := DecodeMessage(data)
	if err != nil || !back.Equal(m) {
		s.fail("%s: message %v does not survive the wire: %v", nd.name, m, err)
	}
	s.send(back)
}

func (s *sim) commit(nd *simNode, c Checkpoint) {
	s.stats.commits++
	s.logf("%s committed %s", nd.name, c)
	if id, ok := s.committed[c.Seq]; ok {
		if id != c.ID {
			s.fail("fork: %s committed %s, but %d:%s was committed before", nd.name, c, c.Seq, id)
		}
		return
	}
	if c.Seq < s.maxCommit.Seq {
		// A holder that learns late that a majority accepted its proposals commits
		// them in order, possibly after another node committed a later one that
		// descends from them (seed 14399 of 60,000): that loses nothing.
		if !s.descends(s.maxCommit.ID, c) {
			s.fail("%s committed %s below the committed %s, which does not descend from it", nd.name, c, s.maxCommit)
			return
		}
		s.committed[c.Seq] = c.ID
		return
	}
	if !s.descends(c.ID, s.maxCommit) {
		s.fail("%s committed %s, which does not descend from the committed %s", nd.name, c, s.maxCommit)
	}
	s.committed[c.Seq] = c.ID
	s.maxCommit = c
}

func (s *sim) descends(id string, anc Checkpoint) bool {
	for {
		if id == anc.ID {
			return true
		}
		sq, ok := s.seqOf[id]
		if !ok || sq <= anc.Seq {
			return false
		}
		id = s.parent[id]
	}
}

// mayTick reports whether o's agent may tick now: it runs and, with a
// grace, its clock is before its lease end (its runner's fence; without a
// grace the machine stops the agent at that tick, so running is the test).
func (s *sim) mayTick(o *simNode) bool {
	if s.p.grace == 0 {
		return o.running
	}
	return o.up && o.running && o.m.Now() < o.m.LeaseEnd()
}

// checkRunners: at most one node may tick the agent, after every event (a
// lapsed holder in its grace ticks again when a late acknowledgement
// renews its lease, with no Start).
func (s *sim) checkRunners() {
	var on []string
	for _, o := range s.nodes {
		may := s.mayTick(o)
		if may {
			on = append(on, fmt.Sprintf("%s (epoch %d, tick %d, lease end %d)", o.name, o.m.Epoch(), o.m.Now(), o.m.LeaseEnd()))
			if o.fenced {
				s.stats.revivals++ // renewed in its grace: it ticks again without a Start
				s.logf("%s: lease renewed in its grace, lease end %d", o.name, o.m.LeaseEnd())
			}
		}
		o.fenced = o.up && o.running && !may
	}
	if len(on) > 1 {
		s.fail("two runners: %s may tick the agent at once", strings.Join(on, " and "))
	}
}

func (s *sim) startAgent(nd *simNode, c Checkpoint) {
	for _, o := range s.nodes {
		if o != nd && s.mayTick(o) {
			s.fail("two runners: %s starts the agent at epoch %d while %s runs it", nd.name, nd.m.Epoch(), o.name)
		}
	}
	if nd.running {
		s.fail("%s starts twice", nd.name)
	}
	ep := nd.m.Epoch()
	if h, ok := s.epochHold[ep]; ok {
		s.fail("epoch %d held twice: by %s and %s", ep, h, nd.name)
	}
	if ep <= s.lastStart {
		s.fail("%s starts at epoch %d after a start at epoch %d", nd.name, ep, s.lastStart)
	}
	if s.committed[c.Seq] != c.ID || c.Seq < s.maxCommit.Seq {
		s.fail("%s starts from %s, not the latest committed %s", nd.name, c, s.maxCommit)
	}
	s.epochHold[ep], s.lastStart = nd.name, ep
	nd.running = true
	s.stats.starts++
	if ep > 1 {
		s.stats.takeovers++
	}
	s.logf("%s START at epoch %d from %s", nd.name, ep, c)
}

func (s *sim) send(m Message) {
	from, to := s.index[m.From], s.index[m.To]
	if !s.connected(from, to) || (s.gcut[[2]int{from, to}] && m.Type != MsgPairBeat && m.Type != MsgPairAck) {
		return
	}
	copies := 1
	if !s.calm {
		if s.rng.Float64() < s.p.loss {
			copies = 0
		} else if s.rng.Float64() < s.p.dup {
			copies = 2
		}
	}
	for range copies {
		d := 0.01 + s.rng.Float64()*s.p.maxDelay
		if !s.calm && s.rng.Float64() < s.p.longDel {
			d += s.rng.Float64() * 40 // arrives long after, reordered
		}
		s.push(&simEvent{at: s.now + d, kind: evDeliver, msg: m})
	}
}

func simSchedules(t *testing.T) int {
	if v := os.Getenv("LEASE_SIM_SCHEDULES"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			t.Fatalf("LEASE_SIM_SCHEDULES=%q: want a positive number", v)
		}
		return n
	}
	if *long {
		return 200000
	}
	if testing.Short() {
		return 300
	}
	return 4000
}

// simTail: how many trace lines a failure prints (LEASE_SIM_TAIL).
var simTail = func() int {
	if n, err := strconv.Atoi(os.Getenv("LEASE_SIM_TAIL")); err == nil && n > 0 {
		return n
	}
	return 80
}()

// simMode: which machines a schedule runs.
type simMode struct{ pairs, noDefect bool }

func TestRandomSchedules(t *testing.T) { randomSchedules(t, simMode{}) }

// TestRandomSchedulesPairLeases: the same schedules with pair leases —
// the lease renewed by pair beats, per-group rounds only to propose, tell
// the commit point and establish — and restarts drawing new sessions.
func TestRandomSchedulesPairLeases(t *testing.T) { randomSchedules(t, simMode{pairs: true}) }

// TestRandomSchedulesCatchMissingDefection checks the simulator, not the
// machine: with defections dropped (the mutant pairs.go needs them
// against, TestPairLeaseDefection) the pair-lease schedules must find two
// runners. Session 14's simulator did not in 4,000 schedules: its random
// cuts rarely separated just one holder–member link for a lease, and never
// dropped per-group messages while pair messages passed (a holder's next
// Append showed it the higher epoch). With cuts of one link both ways and
// of per-group messages only, the mutant fails at seed 1037 (~12 s).
func TestRandomSchedulesCatchMissingDefection(t *testing.T) {
	if testing.Short() {
		t.Skip("a check of the simulator's reach, minutes under -race: the run without -short makes it")
	}
	const limit = 3000
	for seed := uint64(1); seed <= limit; seed++ {
		s := newSim(seed, false, simMode{pairs: true, noDefect: true})
		s.run()
		if s.violation != "" {
			t.Logf("the mutant fails at seed %d: %s", seed, s.violation)
			return
		}
	}
	t.Fatalf("%d pair-lease schedules with defections dropped found no violation: the simulator cannot see what defections are for", limit)
}

func randomSchedules(t *testing.T, mode simMode) {
	n := simSchedules(t)
	base := uint64(1)
	if v := os.Getenv("LEASE_SIM_SEED"); v != "" {
		b, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("LEASE_SIM_SEED=%q: %v", v, err)
		}
		base = b
	}
	begin := time.Now()
	var total simStats
	for k := range n {
		seed := base + uint64(k)
		s := newSim(seed, false, mode)
		s.run()
		if s.violation == "" {
			s.checkLiveness()
		}
		if s.violation != "" {
			tr := newSim(seed, true, mode)
			tr.run()
			if tr.violation == "" {
				tr.checkLiveness()
			}
			tail := tr.trace
			if len(tail) > simTail {
				tail = tail[len(tail)-simTail:]
			}
			if tr.violation != s.violation {
				t.Errorf("seed %d: traced rerun differs (%q): the simulation is not deterministic", seed, tr.violation)
			}
			t.Fatalf("seed %d (rerun: LEASE_SIM_SEED=%d LEASE_SIM_SCHEDULES=1 go test -run TestRandomSchedules) params %+v:\n%s\nlast events:\n%s",
				seed, seed, s.p, s.violation, strings.Join(tail, "\n"))
		}
		total.starts += s.stats.starts
		total.commits += s.stats.commits
		total.fences += s.stats.fences
		total.crashes += s.stats.crashes
		total.takeovers += s.stats.takeovers
		total.transfers += s.stats.transfers
		total.pauses += s.stats.pauses
		total.wakeFences += s.stats.wakeFences
		total.resumes += s.stats.resumes
		total.revivals += s.stats.revivals
		total.changes += s.stats.changes
		total.removals += s.stats.removals
		total.appends += s.stats.appends
		total.pairMsgs += s.stats.pairMsgs
		total.schedules++
	}
	t.Logf("%d schedules in %v: %d starts (%d at epoch > 1), %d stops, %d commits, %d crashes, %d transfers, %d pauses (runners: %d stopped on waking, %d resumed), %d leases renewed in their grace, %d membership changes, %d members removed; %d per-group Appends, %d pair messages",
		total.schedules, time.Since(begin).Round(time.Millisecond), total.starts, total.takeovers, total.fences, total.commits, total.crashes, total.transfers,
		total.pauses, total.wakeFences, total.resumes, total.revivals, total.changes, total.removals, total.appends, total.pairMsgs)
	// The schedules must exercise what they claim to; a machine that never
	// hands the agent over would pass the safety checks vacuously.
	// (Transfers: ~1 in 7 schedules since membership changes joined the
	// chaos; 29 in the 300 of -short.)
	if total.takeovers < n || total.fences < n/2 || total.transfers < n/15 || total.wakeFences < n/10 || total.resumes < n/10 ||
		total.changes < n/2 || total.removals < n/4 || total.revivals < n/10 {
		t.Fatalf("schedules too tame: %d takeovers, %d stops, %d transfers, %d runners stopped and %d resumed on waking, %d leases renewed in their grace, %d membership changes, %d removals in %d schedules",
			total.takeovers, total.fences, total.transfers, total.wakeFences, total.resumes, total.revivals, total.changes, total.removals, n)
	}
}

// checkLiveness: after the calm phase (everyone up and connected for
// calmTicks) the agent runs somewhere and committed new checkpoints.
func (s *sim) checkLiveness() {
	running := 0
	for _, nd := range s.nodes {
		if nd.running {
			running++
		}
	}
	if running != 1 {
		s.fail("liveness: %d runners after %d calm ticks", running, calmTicks)
	}
	if s.stats.commits <= s.calmCommit {
		s.fail("liveness: no commit in %d calm ticks", calmTicks)
	}
}

// acksAt reads a PairAcks copy at a tick, as a driver's fence does.
type acksAt struct {
	a   *PairAcks
	now int64
}

func (x acksAt) Acked(peer string, id PairID, rel uint64) (int64, bool) {
	return x.a.Acked(peer, id, rel, x.now)
}
