package lease

import (
	"fmt"
	"maps"
	"slices"
)

// Pair leases (docs/PROTOCOL.md "Pair leases", DECISIONS D69): between two
// nodes one beat per heartbeat round stands for the heartbeats of every
// group they share, so an idle group sends nothing between its checkpoints.
//
// Each node keeps one PairTable. Every HeartbeatTicks it sends each peer it
// shares a group with a MsgPairBeat {Round, Session, Gen}; the peer answers
// a MsgPairAck {Round, Session, Gen, Echo, EchoGen}. Session is a random
// number a node draws at start (a restart is a new session). On a beat,
// Gen counts the beating node's relinquishments towards the peer: the
// times it stopped holding a group the two share (a step-down, a
// transfer). On an acknowledgement, Gen counts the acknowledging node's
// defections from the beating one: the times it promised, in a group whose
// holder it knew as that node, a higher epoch (or campaigned). Echo and
// EchoGen repeat the beat's Session and Gen.
//
// A member bound to a holder (it acknowledged the holder's Append at its
// current epoch; the Append names the holder's Session and relinquishment
// count) promises nothing in that group until WaitTicks after the latest
// beat that names the same two, as it would after its latest heartbeat. A
// holder counts a member's pair acknowledgements towards its lease only
// while they carry the member's (Session, Gen) and echo the holder's
// relinquishment count of the per-group round that established the group
// with it (Machine.est): an acknowledgement after a defection, a restart or
// a relinquishment extends nothing until a per-group round establishes the
// group again.

// PairID names a node's pair state towards one peer: its session and how
// often it defected from that peer.
type PairID struct{ Session, Gen uint64 }

// estab is what established a group with a member: the member's PairID on
// its AppendAck and the holder's relinquishment count the Append named.
type estab struct {
	id  PairID
	rel uint64
}

// Pairs is a node's pair table as one group's Machine reads it (ticks are
// the machine's). It must be safe to call from the machine's goroutine
// while the table is stepped elsewhere.
type Pairs interface {
	// Session is this node's pair session (never 0).
	Session() uint64
	// Gen is this node's defection count towards peer.
	Gen(peer string) uint64
	// Defect raises it: this node promised, in a group whose holder it
	// knew as peer, an epoch above that holder's.
	Defect(peer string)
	// Rel is this node's relinquishment count towards peer.
	Rel(peer string) uint64
	// Relinquish raises it: this node stopped holding a group it shares
	// with peer.
	Relinquish(peer string)
	// Beat is the tick at which this node last received a pair beat from
	// peer naming session and rel (if peer's beats name others since, the
	// last beat before they changed); false when it never did.
	Beat(peer string, session, rel uint64) (int64, bool)
	// Acked is the send tick of the latest of this node's pair rounds peer
	// acknowledged within the last LeaseTicks with PairID id, echoing
	// relinquishment count rel; false when none. Acknowledgements under an
	// earlier id or rel keep counting for what they establish until they
	// age out (a relinquishment for one group must not end, at once, the
	// leases of every other group held with the same members).
	Acked(peer string, id PairID, rel uint64) (sent int64, ok bool)
	// Latest is the PairID and echoed relinquishment count of peer's
	// latest acknowledgement within the last LeaseTicks (false: none).
	Latest(peer string) (PairID, uint64, bool)
}

// PairTable is one node's pair sessions, a pure state machine like
// Machine: TickTo and Step, then Messages. Ticks are the node's. It is not
// safe for concurrent use (a driver wraps it in a lock to serve Pairs).
type PairTable struct {
	self      string
	session   uint64
	heartbeat int64
	lease     int64
	now       int64
	round     uint64
	lastRound int64
	sent      []pairRound // rounds sent within the last lease (ascending)
	peers     map[string]*pairPeer
	beating   []string // sorted: peers that get beats
	out       []Message
}

type pairRound struct {
	round uint64
	at    int64
}

type pairPeer struct {
	session, rel uint64 // its session and relinquishments as its latest beat names them
	beat         int64  // tick its latest beat naming them arrived; -1 never
	prevBeat     int64  // tick of the latest beat naming others; -1 none
	gen          uint64 // our defections from it
	myRel        uint64 // our relinquishments towards it

	// acks: the latest of our rounds it acknowledged under each of the
	// last few (PairID, relinquishment count) pairs, newest last.
	acks []pairAck
}

type pairAck struct {
	round uint64
	sent  int64 // the round's send tick
	id    PairID
	rel   uint64 // the relinquishment count the round named
}

// maxAcks bounds a peer's acknowledgement history: more changes within a
// lease than this only cost re-establishing a group early.
const maxAcks = 4

// NewPairTable returns the table of node self in session (random, non-zero)
// with the lease timing of its groups. It returns ErrInvalidConfig.
func NewPairTable(self string, session uint64, heartbeatTicks, leaseTicks int) (*PairTable, error) {
	if self == "" || session == 0 || heartbeatTicks < 1 || leaseTicks <= heartbeatTicks {
		return nil, fmt.Errorf("%w: pair table of %q session %d heartbeat %d lease %d: set a peer ID, a non-zero session and 0 < heartbeat < lease",
			ErrInvalidConfig, self, session, heartbeatTicks, leaseTicks)
	}
	return &PairTable{self: self, session: session, heartbeat: int64(heartbeatTicks), lease: int64(leaseTicks),
		lastRound: -int64(heartbeatTicks), peers: map[string]*pairPeer{}}, nil
}

// SetPeers names the peers that get beats: those this node shares a group
// with (sorted or not; self is ignored). The state of peers dropped from
// it is kept (a member may still owe a holder an obligation).
func (t *PairTable) SetPeers(peers []string) {
	ps := slices.DeleteFunc(slices.Clone(peers), func(p string) bool { return p == t.self || p == "" })
	slices.Sort(ps)
	t.beating = slices.Compact(ps)
}

// Peers reports the peers that get beats.
func (t *PairTable) Peers() []string { return slices.Clone(t.beating) }

// Now is the table's tick.
func (t *PairTable) Now() int64 { return t.now }

// NextTick is the tick of the next round.
func (t *PairTable) NextTick() int64 { return max(t.lastRound+t.heartbeat, t.now+1) }

// SetNow advances the table's clock to target (never back) without
// sending: a beat received or an acknowledgement read must count at the
// tick it happens, but rounds leave only on the driver's tick (TickTo) —
// after the node's groups have stepped, so that a holder that lapsed
// during a pause of the process has stepped down and relinquished before
// a beat could renew its members' promise.
func (t *PairTable) SetNow(target int64) { t.now = max(t.now, target) }

// TickTo advances to target and sends a round if one is due (one, however
// many were missed: a late round renews nothing it should not).
func (t *PairTable) TickTo(target int64) {
	t.SetNow(target)
	if t.now-t.lastRound < t.heartbeat {
		return
	}
	t.round++
	t.lastRound = t.now
	t.sent = slices.DeleteFunc(t.sent, func(r pairRound) bool { return r.at+t.lease <= t.now })
	t.sent = append(t.sent, pairRound{t.round, t.now})
	for _, p := range t.beating {
		t.out = append(t.out, Message{Type: MsgPairBeat, From: t.self, To: p, Round: t.round, Session: t.session, Gen: t.peer(p).myRel})
	}
}

func (t *PairTable) peer(p string) *pairPeer {
	pp := t.peers[p]
	if pp == nil {
		pp = &pairPeer{beat: -1, prevBeat: -1}
		t.peers[p] = pp
	}
	return pp
}

// Step processes a pair message addressed to this node. It returns
// ErrInvalidMessage for one that is not (wrong type, address, or a zero
// session).
func (t *PairTable) Step(msg Message) error {
	if msg.To != t.self || msg.From == t.self || msg.From == "" || msg.Session == 0 || msg.Round == 0 {
		return fmt.Errorf("%w: pair message from %q to %q (this is %q) round %d session %d", ErrInvalidMessage, msg.From, msg.To, t.self, msg.Round, msg.Session)
	}
	switch msg.Type {
	case MsgPairBeat:
		p := t.peer(msg.From)
		restarted := msg.Session != p.session
		if restarted || msg.Gen != p.rel {
			p.prevBeat = max(p.prevBeat, p.beat)
			p.session, p.rel = msg.Session, msg.Gen
		}
		p.beat = t.now
		t.out = append(t.out, Message{Type: MsgPairAck, From: t.self, To: msg.From, Round: msg.Round, Session: t.session, Gen: p.gen, Echo: msg.Session, EchoGen: msg.Gen})
		if restarted && slices.Contains(t.beating, msg.From) {
			// A new session (a restart, or first contact): beat it at once,
			// in a round of its own, so that its acknowledgement — which
			// tells our holders to establish their groups with it again —
			// comes now, not at our next round. It cannot renew anything:
			// a new session holds no promise.
			t.round++
			t.sent = append(t.sent, pairRound{t.round, t.now})
			t.out = append(t.out, Message{Type: MsgPairBeat, From: t.self, To: msg.From, Round: t.round, Session: t.session, Gen: p.myRel})
		}
	case MsgPairAck:
		if msg.Echo != t.session {
			return nil // an acknowledgement of an earlier incarnation's round
		}
		i := slices.IndexFunc(t.sent, func(r pairRound) bool { return r.round == msg.Round })
		if i < 0 {
			return nil // too old to extend a lease
		}
		p := t.peer(msg.From)
		a := pairAck{msg.Round, t.sent[i].at, PairID{msg.Session, msg.Gen}, msg.EchoGen}
		j := slices.IndexFunc(p.acks, func(x pairAck) bool { return x.id == a.id && x.rel == a.rel })
		switch {
		case j >= 0 && a.round > p.acks[j].round:
			p.acks = append(slices.Delete(p.acks, j, j+1), a)
		case j < 0:
			if len(p.acks) == maxAcks {
				p.acks = slices.Delete(p.acks, 0, 1)
			}
			p.acks = append(p.acks, a)
		}
	default:
		return fmt.Errorf("%w: %s is not a pair message", ErrInvalidMessage, msg.Type)
	}
	return nil
}

// Messages returns the messages to send and forgets them.
func (t *PairTable) Messages() []Message {
	out := t.out
	t.out = nil
	return out
}

// Session implements Pairs.
func (t *PairTable) Session() uint64 { return t.session }

// Gen implements Pairs.
func (t *PairTable) Gen(peer string) uint64 {
	if p := t.peers[peer]; p != nil {
		return p.gen
	}
	return 0
}

// Defect implements Pairs.
func (t *PairTable) Defect(peer string) { t.peer(peer).gen++ }

// Rel implements Pairs.
func (t *PairTable) Rel(peer string) uint64 {
	if p := t.peers[peer]; p != nil {
		return p.myRel
	}
	return 0
}

// Relinquish implements Pairs.
func (t *PairTable) Relinquish(peer string) { t.peer(peer).myRel++ }

// Beat implements Pairs.
func (t *PairTable) Beat(peer string, session, rel uint64) (int64, bool) {
	p := t.peers[peer]
	switch {
	case p == nil:
		return 0, false
	case p.session == session && p.rel == rel && p.beat >= 0:
		return p.beat, true
	case p.prevBeat >= 0:
		// Beats name something else now (a restart, a relinquishment): the
		// last beat before they did — the latest of all earlier ones, so
		// never earlier than the last naming session and rel.
		return p.prevBeat, true
	}
	return 0, false
}

// Acked implements Pairs.
func (t *PairTable) Acked(peer string, id PairID, rel uint64) (int64, bool) {
	if p := t.peers[peer]; p != nil {
		for _, a := range p.acks {
			if a.id == id && a.rel == rel && a.sent+t.lease > t.now {
				return a.sent, true
			}
		}
	}
	return 0, false
}

// PairAcks is a copy of a PairTable's acknowledgement history, read
// without the table's lock: a running holder's fence computes its lease end
// from it every time the runner looks (LeaseView.End), and a thousand
// runners doing so under the lock the engine and the stream readers need
// delayed the very beats and acknowledgements that renew the leases.
type PairAcks struct {
	lease int64
	peers map[string][]pairAck
}

// Acks returns a copy of the table's acknowledgement history (it changes
// when an acknowledgement is stepped and when the peers are set).
func (t *PairTable) Acks() *PairAcks {
	a := &PairAcks{lease: t.lease, peers: make(map[string][]pairAck, len(t.peers))}
	for name, p := range t.peers {
		if len(p.acks) > 0 {
			a.peers[name] = slices.Clone(p.acks)
		}
	}
	return a
}

// Acked is what the table's Acked answered when the copy was made, with
// the table's clock at now.
func (a *PairAcks) Acked(peer string, id PairID, rel uint64, now int64) (int64, bool) {
	for _, x := range a.peers[peer] {
		if x.id == id && x.rel == rel && x.sent+a.lease > now {
			return x.sent, true
		}
	}
	return 0, false
}

// AckedPairs is what LeaseView.End reads: Pairs.Acked.
type AckedPairs interface {
	Acked(peer string, id PairID, rel uint64) (sent int64, ok bool)
}

// Latest implements Pairs.
func (t *PairTable) Latest(peer string) (PairID, uint64, bool) {
	p := t.peers[peer]
	if p == nil {
		return PairID{}, 0, false
	}
	var best *pairAck
	for i := range p.acks {
		if a := &p.acks[i]; a.sent+t.lease > t.now && (best == nil || a.round > best.round) {
			best = a
		}
	}
	if best == nil {
		return PairID{}, 0, false
	}
	return best.id, best.rel, true
}

// never: a tick no lease reaches (the freshness of a member never heard).
const neverTick = -(int64(1) << 60)

// quorumFresh is the latest t such that a majority of members, and of
// joint when set, is fresh at t or later; the holder itself is fresh at
// now (a group of one renews its lease by the clock alone).
func quorumFresh(self string, now int64, members, joint []string, fresh func(string) int64) int64 {
	kth := func(set []string) int64 {
		if len(set) == 0 {
			return 1 << 62
		}
		var buf [2 * MaxMembers]int64
		vals := buf[:0]
		for _, p := range set {
			if p == self {
				vals = append(vals, now)
			} else {
				vals = append(vals, fresh(p))
			}
		}
		slices.Sort(vals)
		return vals[len(vals)-(len(vals)/2+1)] // the majority-th largest
	}
	return min(kth(members), kth(joint))
}

// pairSent is the send tick of the latest pair round member p acknowledged
// under the PairID that established the group with it (false: none counts).
func (m *Machine) pairSent(p string) (int64, bool) {
	if m.cfg.Pairs == nil || m.role != Holder {
		return 0, false
	}
	est, ok := m.est[p]
	if !ok {
		return 0, false
	}
	return m.cfg.Pairs.Acked(p, est.id, est.rel)
}

// effLeaseEnd is the holder's lease end: the per-round rule (progress) and,
// with pair leases, LeaseTicks after the latest tick at which a majority
// acknowledged a round sent then — a per-group round, or a pair round
// under the PairID that established the group.
func (m *Machine) effLeaseEnd() int64 {
	if m.cfg.Pairs == nil || m.role != Holder {
		return m.leaseEnd
	}
	members := m.members(m.hs.Conf)
	t := quorumFresh(m.cfg.Self, m.now, members, m.hs.Conf.Joint, func(p string) int64 {
		f, ok := m.ackSent[p]
		if !ok {
			f = neverTick
		}
		if s, counted := m.pairSent(p); counted {
			f = max(f, s)
		}
		return f
	})
	return max(m.leaseEnd, t+int64(m.cfg.LeaseTicks))
}

// wantRound reports whether the holder's next heartbeat slot needs a
// per-group round. Without pair leases, always. With them, only to make
// a proposal stick (pending), to finish a configuration change, or to
// establish the group with a member that
// answers but whose pair acknowledgements do not count for it — never for
// a member that answers nothing (a dead peer costs no per-group traffic).
// The commit point reaches the standbys with the next proposal: nothing
// on a standby depends on it (a candidate recovers from the accepted
// checkpoints, not from commit points).
func (m *Machine) wantRound() bool {
	if m.cfg.Pairs == nil || len(m.pending) > 0 || len(m.leaving) > 0 || len(m.hs.Conf.Joint) > 0 {
		return true
	}
	for _, p := range m.voters(m.hs.Conf) {
		if p == m.cfg.Self {
			continue
		}
		id, rel, answers := m.cfg.Pairs.Latest(p)
		if est, ok := m.est[p]; ok && answers && (estab{id, rel}) == est {
			continue // its latest acknowledgement counts
		}
		// Not counted, or counted only by acknowledgements an earlier
		// relinquishment or defection is about to age out: establish the
		// group again now, while the older ones still hold the lease.
		if answers || m.lastAck[p]+int64(m.cfg.LeaseTicks) > m.now && m.hasLastAck(p) {
			return true
		}
	}
	return false
}

func (m *Machine) hasLastAck(p string) bool { _, ok := m.lastAck[p]; return ok }

// LeaseView is what a running holder's lease end depends on besides the
// pair table, frozen: a driver hands it to the agent's runner, whose fence
// computes the lease end (End) as pair acknowledgements arrive, without
// the machine. Nil when the machine is not a running holder with pair
// leases.
type LeaseView struct {
	self           string
	lease, end     int64 // end: the per-round lease end
	members, joint []string
	ackSent        map[string]int64
	est            map[string]estab
}

// LeaseView returns the running holder's current view (the same value
// until the machine's group state changes).
func (m *Machine) LeaseView() *LeaseView {
	if m.cfg.Pairs == nil || !m.running {
		return nil
	}
	if m.view == nil {
		m.view = &LeaseView{self: m.cfg.Self, lease: int64(m.cfg.LeaseTicks), end: m.leaseEnd,
			members: slices.Clone(m.members(m.hs.Conf)), joint: slices.Clone(m.hs.Conf.Joint),
			ackSent: maps.Clone(m.ackSent), est: maps.Clone(m.est)}
	}
	return m.view
}

// End is the lease end by this view and the pair table's acknowledgements
// at tick now (the machine's LeaseEnd at the time of the view, extended by
// pair rounds acknowledged since). Ticks are the machine's.
func (v *LeaseView) End(pairs AckedPairs, now int64) int64 {
	t := quorumFresh(v.self, now, v.members, v.joint, func(p string) int64 {
		f, ok := v.ackSent[p]
		if !ok {
			f = neverTick
		}
		if est, ok := v.est[p]; ok {
			if sent, ok := pairs.Acked(p, est.id, est.rel); ok {
				f = max(f, sent)
			}
		}
		return f
	})
	return max(v.end, t+v.lease)
}

// FollowerWake is when a follower bound to a holder (pair leases) must be
// ticked next, as a function of the pair table: its lapse moves with the
// holder's beats, which the machine does not see between steps, so a
// driver that woke it at NextTick would mostly find nothing to do. Nil
// when the machine is not such a follower (NextTick is then exact).
type FollowerWake struct {
	peer          string
	session, rel  uint64
	floor, offset int64
}

// FollowerWake returns the machine's wake function, or nil.
func (m *Machine) FollowerWake() *FollowerWake {
	if m.cfg.Pairs == nil || m.role != Follower || m.bound == "" || m.removed {
		return nil
	}
	rs := int64(m.rank() * m.cfg.StaggerTicks)
	return &FollowerWake{peer: m.bound, session: m.boundSess, rel: m.boundRel,
		floor: max(m.lapseAt+rs, m.backoffUntil, m.quietUntil, m.now+1), offset: int64(m.cfg.WaitTicks) + 1 + rs}
}

// Tick is the follower's NextTick given the pair table now (the same value
// NextTick returns once the machine has seen the same beats).
func (w *FollowerWake) Tick(p Pairs) int64 {
	if b, ok := p.Beat(w.peer, w.session, w.rel); ok {
		return max(w.floor, b+w.offset)
	}
	return w.floor
}
