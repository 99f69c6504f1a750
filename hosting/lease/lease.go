package lease

import (
	"errors"
	"fmt"
	"slices"
)

// Errors of the lease state machine.
var (
	// ErrInvalidConfig: Config breaks a rule (see Config); the message says which.
	ErrInvalidConfig = errors.New("lease: invalid config")
	// ErrInvalidMessage: a message from outside the group, to another node,
	// or of an unknown type.
	ErrInvalidMessage = errors.New("lease: invalid message")
	// ErrNotHolder: only the running holder may propose or transfer.
	ErrNotHolder = errors.New("lease: not the running holder")
	// ErrInvalidCheckpoint: a proposal without an ID or whose Seq does not
	// exceed the last proposal's.
	ErrInvalidCheckpoint = errors.New("lease: invalid checkpoint proposal")
	// ErrNotCommitted: a transfer while the latest proposal is not committed.
	ErrNotCommitted = errors.New("lease: latest checkpoint not committed yet")
	// ErrLeaseLive: a campaign while the lease is live in this node's view.
	ErrLeaseLive = errors.New("lease: lease still live here")
)

// Checkpoint names one checkpoint of the agent. ID is opaque to the machine
// (the driver uses the checkpoint CID).
type Checkpoint struct {
	Seq uint64
	ID  string
}

// HardState is what a node must persist before it sends any message
// produced together with it.
type HardState struct {
	// Epoch is the highest epoch this node promised or acknowledged; it
	// never acknowledges or promises a lower one again.
	Epoch uint64
	// Accepted is the latest checkpoint this node stored, and AcceptedAt the
	// epoch of the holder it accepted it from (the "ballot"). Recovery picks
	// the highest (AcceptedAt, Seq) among a majority.
	Accepted   Checkpoint
	AcceptedAt uint64
}

// MsgType is the kind of a Message.
type MsgType uint8

const (
	// MsgAppend: holder → member. Heartbeat round Round at Epoch, carrying
	// the holder's latest checkpoint and its commit point.
	MsgAppend MsgType = iota + 1
	// MsgAppendAck: member → holder. Acknowledges round Round of Epoch;
	// Checkpoint.Seq is the member's accepted seq at Epoch. Reject: the
	// member promised Hint > Epoch.
	MsgAppendAck
	// MsgPromiseRequest: candidate → member, asking a promise for Epoch.
	MsgPromiseRequest
	// MsgPromise: member → candidate. Granted: carries the member's
	// Accepted/AcceptedAt. Reject: refused; Hint is the member's epoch.
	MsgPromise
	// MsgRelease: holder → members. The holder of Epoch stopped the agent
	// for a handoff: its lease grants nothing any more.
	MsgRelease
	// MsgHandoff: holder → target. Campaign now at Epoch+1.
	MsgHandoff
)

// Message is one protocol message. Which fields matter depends on Type.
type Message struct {
	Type       MsgType
	From, To   string
	Epoch      uint64
	Round      uint64     // MsgAppend, MsgAppendAck
	Commit     uint64     // MsgAppend: seq of the latest committed checkpoint
	Checkpoint Checkpoint // MsgAppend, MsgAppendAck (Seq only), MsgPromise
	AcceptedAt uint64     // MsgPromise
	Reject     bool       // MsgAppendAck, MsgPromise
	Hint       uint64     // on Reject: the responder's epoch
}

// Ready is the batch of outputs to handle, in the order given in the
// package documentation, before calling Advance.
type Ready struct {
	Persist   *HardState   // persist (fsync) FIRST, before anything else
	Stop      bool         // stop the agent before sending Messages
	Committed []Checkpoint // newly committed, in seq order
	Start     *Checkpoint  // resume the agent from this committed checkpoint
	Messages  []Message    // send last
}

// Empty reports whether the Ready asks for nothing.
func (rd Ready) Empty() bool {
	return rd.Persist == nil && !rd.Stop && len(rd.Committed) == 0 && rd.Start == nil && len(rd.Messages) == 0
}

// Config configures one Machine. Durations are in ticks of the node's local
// monotonic clock.
type Config struct {
	Self  string   // this node's peer ID
	Group []string // the custody group, sorted, including Self
	// Rank is Self's position in the rendezvous order of the standbys
	// (0 = first to try a takeover). It staggers takeover attempts.
	Rank int
	// HeartbeatTicks between heartbeat rounds of the holder. Default 1.
	HeartbeatTicks int
	// LeaseTicks: a round acknowledged by a majority lets the holder run
	// until LeaseTicks after it SENT that round. Must exceed HeartbeatTicks.
	LeaseTicks int
	// WaitTicks: a member regards the lease as lapsed once more than
	// WaitTicks passed since it RECEIVED the latest heartbeat. Must be at
	// least LeaseTicks + DriftTicks.
	WaitTicks int
	// DriftTicks is the margin for clock-rate drift ρ between nodes (and
	// driver latency): DriftTicks ≥ 2ρ·LeaseTicks/(1−ρ). At least 1.
	DriftTicks int
	// StaggerTicks between the takeover attempts of successive ranks.
	// Default 2·HeartbeatTicks.
	StaggerTicks int
	// RetryTicks: a takeover attempt without a majority gives up after this
	// long and backs off RetryTicks/2 plus up to RetryTicks of jitter.
	// Default 4·HeartbeatTicks.
	RetryTicks int
	// QuietTicks: a new machine starts no takeover attempt of its own
	// before this tick or its first heartbeat, whichever comes first (it
	// still promises and follows). A member that just
	// joined a group sets it to WaitTicks, so the holder the publisher
	// picked (which calls Campaign) wins epoch 1, not whichever standby
	// happens to join first.
	QuietTicks int
	// Rand is the jitter source. Required (tests pin it).
	Rand func() uint64
	// HardState as last persisted; zero for a node new to the group.
	HardState HardState
	// Released: no lease at HardState.Epoch can depend on this node — it
	// has just joined a group that replaces one whose holder stopped and
	// which a majority left (a regroup). The machine then promises at once
	// instead of first waiting WaitTicks, which protects only leases this
	// node may have acknowledged. Never set it on a restart or a revive.
	Released bool
}

func (c *Config) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, a...))
	}
	if c.Self == "" {
		return bad("Self is empty; set it to this node's peer ID")
	}
	if len(c.Group) == 0 {
		return bad("Group is empty; list the custody group including Self")
	}
	if !slices.IsSorted(c.Group) {
		return bad("Group is not sorted; sort it so every member agrees on it")
	}
	for i := 1; i < len(c.Group); i++ {
		if c.Group[i] == c.Group[i-1] {
			return bad("Group lists %q twice", c.Group[i])
		}
	}
	if _, ok := slices.BinarySearch(c.Group, c.Self); !ok {
		return bad("Group does not contain Self %q", c.Self)
	}
	if c.Rank < 0 || c.Rank >= len(c.Group) {
		return bad("Rank %d is outside 0..%d", c.Rank, len(c.Group)-1)
	}
	if c.HeartbeatTicks == 0 {
		c.HeartbeatTicks = 1
	}
	if c.HeartbeatTicks < 0 {
		return bad("HeartbeatTicks %d is negative", c.HeartbeatTicks)
	}
	if c.LeaseTicks <= c.HeartbeatTicks {
		return bad("LeaseTicks %d must exceed HeartbeatTicks %d, or the lease cannot be renewed in time", c.LeaseTicks, c.HeartbeatTicks)
	}
	if c.DriftTicks < 1 {
		return bad("DriftTicks %d must be at least 1 (no two clocks run at the same rate)", c.DriftTicks)
	}
	if c.WaitTicks < c.LeaseTicks+c.DriftTicks {
		return bad("WaitTicks %d must be at least LeaseTicks+DriftTicks = %d, so the holder's lease ends before any standby acts", c.WaitTicks, c.LeaseTicks+c.DriftTicks)
	}
	if c.StaggerTicks == 0 {
		c.StaggerTicks = 2 * c.HeartbeatTicks
	}
	if c.RetryTicks == 0 {
		c.RetryTicks = 4 * c.HeartbeatTicks
	}
	if c.StaggerTicks < 0 || c.RetryTicks < 0 || c.QuietTicks < 0 {
		return bad("StaggerTicks %d, RetryTicks %d and QuietTicks %d must not be negative", c.StaggerTicks, c.RetryTicks, c.QuietTicks)
	}
	if c.Rand == nil {
		return bad("Rand is nil; pass a jitter source")
	}
	if c.HardState.AcceptedAt > c.HardState.Epoch {
		return bad("HardState accepted at epoch %d above its epoch %d; the state is corrupt", c.HardState.AcceptedAt, c.HardState.Epoch)
	}
	return nil
}

// Role of a Machine.
type Role uint8

const (
	Follower  Role = iota // standby: stores checkpoints, acknowledges the holder
	Candidate             // asking for promises at a higher epoch
	Holder                // holds (or is establishing) the lease
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case Candidate:
		return "candidate"
	case Holder:
		return "holder"
	}
	return fmt.Sprintf("role(%d)", uint8(r))
}

// Machine is one node's view of one agent's custody group. It is not safe
// for concurrent use.
type Machine struct {
	cfg      Config
	majority int

	hs      HardState
	hsDirty bool

	now     int64
	lapseAt int64 // first tick at which the lease counts as lapsed here
	maxSeen uint64
	role    Role
	commit  uint64 // follower: latest commit point heard

	// candidate
	attempt      uint64
	attemptStart int64
	backoffUntil int64
	quietUntil   int64  // Config.QuietTicks; ends early once a holder is heard
	promisedTo   string // volatile: the candidate we promised epoch promisedAt to (repeats are re-granted)
	promisedAt   uint64
	released     uint64 // highest epoch whose holder released it to us (Release/Handoff)
	votes        map[string]Message

	// holder
	running   bool
	wonAt     int64
	leaseEnd  int64 // may run while now < leaseEnd
	lastRound int64 // tick of the latest round sent
	round     uint64
	sent      map[uint64]int64           // round → tick sent
	acks      map[uint64]map[string]bool // round → members that acknowledged
	match     map[string]uint64          // member → accepted seq at our epoch
	lastAck   map[string]int64           // member → tick of its latest acknowledgement
	pending   []Checkpoint               // proposed, not committed (first: recovery)
	committed Checkpoint
	hasCommit bool

	// outputs
	msgs           []Message
	start          *Checkpoint
	stop           bool
	newlyCommitted []Checkpoint
}

// New returns a Machine for cfg. A node restarting with a non-zero
// HardState treats the lease as freshly heard (it does not remember when it
// last acknowledged), so it waits a full WaitTicks before promising.
// It returns ErrInvalidConfig.
func New(cfg Config) (*Machine, error) {
	cfg.Group = slices.Clone(cfg.Group)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	m := &Machine{cfg: cfg, majority: len(cfg.Group)/2 + 1, hs: cfg.HardState}
	m.maxSeen = m.hs.Epoch
	m.quietUntil = int64(cfg.QuietTicks)
	if m.hs.Epoch == 0 || cfg.Released {
		// Never acknowledged anything: no lease can depend on this node.
		m.lapseAt = 0
	} else {
		m.lapseAt = int64(cfg.WaitTicks) + 1
	}
	return m, nil
}

// Role reports the machine's role.
func (m *Machine) Role() Role { return m.role }

// Running reports whether the agent may tick here (between Start and Stop).
func (m *Machine) Running() bool { return m.running }

// Epoch is the highest epoch promised or acknowledged.
func (m *Machine) Epoch() uint64 { return m.hs.Epoch }

// Now is the number of ticks since New.
func (m *Machine) Now() int64 { return m.now }

// LeaseEnd is the tick at which the running holder's lease ends by its own
// clock (it may tick the agent while Now() < LeaseEnd()); 0 when not running.
// A driver maps it to local monotonic time and fences the agent by it, so a
// late Tick call cannot stretch the lease.
func (m *Machine) LeaseEnd() int64 {
	if !m.running {
		return 0
	}
	return m.leaseEnd
}

// Accepted is the latest checkpoint this node stored and the epoch it
// accepted it at.
func (m *Machine) Accepted() (Checkpoint, uint64) { return m.hs.Accepted, m.hs.AcceptedAt }

// Committed is the latest checkpoint this holder knows committed (zero when
// not a holder or none yet).
func (m *Machine) Committed() Checkpoint { return m.committed }

// Live reports, on the holder, whether member p acknowledged a heartbeat
// within the last LeaseTicks and stores the latest committed checkpoint: a
// handoff target must be one (a handoff to a dead member costs a full
// takeover). Self is always live; on a non-holder every other member is not.
func (m *Machine) Live(p string) bool {
	if p == m.cfg.Self {
		return true
	}
	if m.role != Holder {
		return false
	}
	at, ok := m.lastAck[p]
	return ok && m.now-at <= int64(m.cfg.LeaseTicks) && m.match[p] >= m.committed.Seq
}

// NextTick is the earliest tick after Now at which Tick may do anything
// (send, fence, campaign, give up), assuming no Step, Propose, Transfer or
// Campaign before it: every Tick, and TickTo(t) for t < NextTick, leaves
// the machine's outputs empty. A driver with many groups sleeps until it
// instead of waking every tick, then calls TickTo(its clock tick).
func (m *Machine) NextTick() int64 {
	next := int64(1) << 62
	switch m.role {
	case Holder:
		next = min(max(m.leaseEnd, m.wonAt+int64(m.cfg.LeaseTicks)), m.lastRound+int64(m.cfg.HeartbeatTicks))
	case Candidate:
		next = m.attemptStart + int64(m.cfg.RetryTicks)
		every := int64(max(1, m.cfg.HeartbeatTicks/2))
		next = min(next, m.now+every-(m.now-m.attemptStart)%every)
	case Follower:
		next = max(m.lapseAt+int64(m.cfg.Rank*m.cfg.StaggerTicks), m.backoffUntil, m.quietUntil)
	}
	return max(next, m.now+1)
}

// Campaign starts a takeover attempt now, without waiting for the rank
// stagger: the driver calls it for the first holder of a new group (every
// member is at epoch 0, nothing can be live) and when the running holder
// could not start the agent and another member should. It returns
// ErrLeaseLive when this node's view of the lease has not lapsed (or it is
// not a follower): a live lease is never cut short by a campaign.
func (m *Machine) Campaign() error {
	if m.role != Follower || !m.lapsed() {
		return fmt.Errorf("%w: %s is %s, lease lapses here at tick %d, now %d", ErrLeaseLive, m.cfg.Self, m.role, m.lapseAt, m.now)
	}
	m.campaign()
	return nil
}

// Tick advances logical time by one tick: TickTo(Now()+1).
func (m *Machine) Tick() { m.TickTo(m.now + 1) }

// TickTo advances logical time to target (no-op if target <= Now) as if the
// node could not act between Now and target (a paused process, a late
// timer): only what is due at target happens, once, and nothing missed is
// replayed. A replayed heartbeat round or promise request would be stale: a
// round sent late renews the followers' lapse timers (delaying a takeover
// by a whole wait) for a lease the holder can no longer hold. For
// target = Now+1 it is exactly one tick.
//
//   - Holder: at or past its fence tick it steps down (Stop) without a
//     round; otherwise it sends at most one round, if one is due.
//   - Candidate: past its retry deadline it gives up, backing off from
//     target; otherwise it asks again at most once, if a request was due.
//   - Follower: it campaigns at target if it may campaign then.
func (m *Machine) TickTo(target int64) {
	if target <= m.now {
		return
	}
	prev := m.now
	m.now = target
	switch m.role {
	case Holder:
		if m.now >= max(m.leaseEnd, m.wonAt+int64(m.cfg.LeaseTicks)) {
			// Self-fence: no majority renewed the lease in time. The lease
			// ended by our clock, before any member's wait ends by theirs.
			// stepDown counts our view as heard at target, not at the fence
			// tick: the agent stops only when this Ready is handled (after
			// the pause), so we promise nobody until W after it really
			// stopped, as after an on-time fence. Only our own promises wait
			// longer; the takeover needs a majority of the others' views.
			m.stepDown()
			return
		}
		if m.now-m.lastRound >= int64(m.cfg.HeartbeatTicks) {
			m.broadcastRound()
		}
	case Candidate:
		if m.now-m.attemptStart >= int64(m.cfg.RetryTicks) {
			// Back off from target, not from the missed deadline: the jitter
			// must still separate us from a competitor, and what reached us
			// during the pause (a new holder's heartbeat) gets the backoff
			// to arrive before we campaign again.
			m.giveUp()
			return
		}
		// Every half heartbeat, ask again whoever has not promised: a
		// request or answer may have been lost, and a member whose lease
		// view was still live may have lapsed since. After a jump, once.
		if every := int64(max(1, m.cfg.HeartbeatTicks/2)); (m.now-m.attemptStart)/every == (prev-m.attemptStart)/every {
			return
		}
		for _, p := range m.cfg.Group {
			if v, ok := m.votes[p]; p != m.cfg.Self && (!ok || v.Reject && v.Hint < m.attempt) {
				m.send(Message{Type: MsgPromiseRequest, To: p, Epoch: m.attempt})
			}
		}
	case Follower:
		if m.now >= m.lapseAt+int64(m.cfg.Rank*m.cfg.StaggerTicks) && m.now >= m.backoffUntil && m.now >= m.quietUntil {
			m.campaign()
		}
	}
}

// Step processes one message addressed to this node. It returns
// ErrInvalidMessage for a message from outside the group, to another
// node, or of an unknown type.
func (m *Machine) Step(msg Message) error {
	if msg.To != m.cfg.Self {
		return fmt.Errorf("%w: addressed to %q, this is %q", ErrInvalidMessage, msg.To, m.cfg.Self)
	}
	if msg.From == m.cfg.Self || !m.member(msg.From) {
		return fmt.Errorf("%w: sender %q is not another member of the group", ErrInvalidMessage, msg.From)
	}
	if msg.Epoch == 0 {
		return fmt.Errorf("%w: epoch 0 from %q", ErrInvalidMessage, msg.From)
	}
	switch msg.Type {
	case MsgAppend:
		m.stepAppend(msg)
	case MsgAppendAck:
		m.stepAppendAck(msg)
	case MsgPromiseRequest:
		m.stepPromiseRequest(msg)
	case MsgPromise:
		m.stepPromise(msg)
	case MsgRelease:
		m.stepRelease(msg)
	case MsgHandoff:
		m.stepHandoff(msg)
	default:
		return fmt.Errorf("%w: unknown type %d from %q", ErrInvalidMessage, msg.Type, msg.From)
	}
	return nil
}

// Propose replicates a checkpoint the running agent made. It is committed
// (Ready.Committed) once a majority stored it. It returns ErrNotHolder or
// ErrInvalidCheckpoint.
func (m *Machine) Propose(cp Checkpoint) error {
	if m.role != Holder || !m.running {
		return fmt.Errorf("%w: %s is %s", ErrNotHolder, m.cfg.Self, m.role)
	}
	if cp.ID == "" || cp.Seq <= m.hs.Accepted.Seq {
		return fmt.Errorf("%w: seq %d id %q after seq %d; the seq must grow and the ID be set", ErrInvalidCheckpoint, cp.Seq, cp.ID, m.hs.Accepted.Seq)
	}
	m.hs.Accepted, m.hs.AcceptedAt = cp, m.hs.Epoch
	m.hsDirty = true
	m.pending = append(m.pending, cp)
	m.broadcastRound()
	return nil
}

// Transfer hands the agent to member to (a better host) at the next epoch:
// the holder stops the agent now, releases its lease and asks to to take
// over. The latest proposal must be committed. It returns ErrNotHolder,
// ErrNotCommitted or ErrInvalidMessage (to is not another member).
func (m *Machine) Transfer(to string) error {
	if m.role != Holder || !m.running {
		return fmt.Errorf("%w: %s is %s", ErrNotHolder, m.cfg.Self, m.role)
	}
	if to == m.cfg.Self || !m.member(to) {
		return fmt.Errorf("%w: transfer target %q is not another member", ErrInvalidMessage, to)
	}
	if len(m.pending) > 0 {
		return fmt.Errorf("%w: seq %d pending", ErrNotCommitted, m.pending[len(m.pending)-1].Seq)
	}
	commit := m.committed.Seq
	m.stepDown()
	// We stopped the agent and will never renew this epoch (a restarted node
	// starts as a follower), so our own view may lapse at once; back off so
	// the target, not we, takes the next epoch.
	m.lapseAt = m.now
	m.backoffUntil = m.now + int64(m.cfg.RetryTicks)
	for _, p := range m.cfg.Group {
		if p != m.cfg.Self && p != to {
			m.send(Message{Type: MsgRelease, To: p, Epoch: m.hs.Epoch, Commit: commit})
		}
	}
	m.send(Message{Type: MsgHandoff, To: to, Epoch: m.hs.Epoch, Commit: commit})
	return nil
}

// Ready returns the outputs accumulated since the last Advance.
func (m *Machine) Ready() Ready {
	rd := Ready{Stop: m.stop, Start: m.start, Messages: m.msgs, Committed: m.newlyCommitted}
	if m.hsDirty {
		hs := m.hs
		rd.Persist = &hs
	}
	return rd
}

// Advance acknowledges that the last Ready was handled.
func (m *Machine) Advance() {
	m.hsDirty, m.stop, m.start, m.msgs, m.newlyCommitted = false, false, nil, nil, nil
}

func (m *Machine) member(p string) bool {
	_, ok := slices.BinarySearch(m.cfg.Group, p)
	return ok
}

func (m *Machine) send(msg Message) {
	msg.From = m.cfg.Self
	m.msgs = append(m.msgs, msg)
}

func (m *Machine) lapsed() bool { return m.role != Holder && m.now >= m.lapseAt }

// heard records a valid heartbeat: the lease is live here for WaitTicks more.
func (m *Machine) heard() { m.lapseAt = max(m.lapseAt, m.now+int64(m.cfg.WaitTicks)+1) }

func (m *Machine) see(epoch uint64) { m.maxSeen = max(m.maxSeen, epoch) }

// becomeFollower leaves any role; a holder stops its agent.
func (m *Machine) becomeFollower() {
	if m.running {
		m.running = false
		m.stop = true
	}
	m.role = Follower
	m.votes, m.sent, m.acks, m.match, m.pending = nil, nil, nil, nil, nil
}

// stepDown ends this node's holding; it treats its own lease as just heard,
// so it does not promise anyone until its view lapses like everyone's.
func (m *Machine) stepDown() {
	m.commit = max(m.commit, m.committed.Seq)
	m.becomeFollower()
	m.heard()
}

// ---- follower side ----

func (m *Machine) stepAppend(msg Message) {
	m.see(msg.Epoch)
	if msg.Epoch <= m.released && m.role != Holder {
		// Its holder stopped and released this epoch; a heartbeat of it that
		// arrives late (e.g. held while its checkpoint was fetched) must not
		// end the campaign that replaces it. Ignoring a message is safe.
		return
	}
	if msg.Epoch < m.hs.Epoch {
		m.send(Message{Type: MsgAppendAck, To: msg.From, Epoch: msg.Epoch, Round: msg.Round, Reject: true, Hint: m.hs.Epoch})
		return
	}
	if m.role == Holder {
		if msg.Epoch == m.hs.Epoch {
			return // impossible: one holder per epoch; ignore rather than obey
		}
		m.stepDown() // fenced by a higher epoch
	}
	if m.role == Candidate {
		m.becomeFollower()
	}
	if msg.Epoch > m.hs.Epoch {
		m.hs.Epoch = msg.Epoch
		m.hsDirty = true
	}
	m.heard()
	m.quietUntil = 0 // the group has a holder: from now on the lease timing rules
	m.commit = max(m.commit, msg.Commit)
	if msg.Epoch > m.hs.AcceptedAt || (msg.Epoch == m.hs.AcceptedAt && msg.Checkpoint.Seq > m.hs.Accepted.Seq) {
		m.hs.Accepted, m.hs.AcceptedAt = msg.Checkpoint, msg.Epoch
		m.hsDirty = true
	}
	m.send(Message{Type: MsgAppendAck, To: msg.From, Epoch: msg.Epoch, Round: msg.Round, Checkpoint: Checkpoint{Seq: m.hs.Accepted.Seq}})
}

func (m *Machine) stepPromiseRequest(msg Message) {
	m.see(msg.Epoch)
	// A repeated request of the candidate we promised this epoch to (the
	// first answer may have been lost): the same promise again. Nothing
	// changed since — an accepted checkpoint at this epoch could only come
	// from that candidate after it won, and then it asks no more.
	if m.role == Follower && msg.Epoch == m.hs.Epoch && msg.Epoch == m.promisedAt && msg.From == m.promisedTo && m.lapsed() {
		m.send(Message{Type: MsgPromise, To: msg.From, Epoch: msg.Epoch, Checkpoint: m.hs.Accepted, AcceptedAt: m.hs.AcceptedAt})
		return
	}
	// Two candidates for the same epoch refuse each other and, with a
	// member down, both wait out RetryTicks. The one whose ID sorts higher
	// yields: it drops its attempt (it persisted nothing and counts its own
	// vote no more) and promises the epoch to the other, once.
	if m.role == Candidate && msg.Epoch == m.attempt && msg.From < m.cfg.Self && m.attempt > m.hs.Epoch {
		m.becomeFollower()
		m.backoffUntil = m.now + int64(m.cfg.RetryTicks) // let the other win
	}
	own := m.hs.Epoch
	if m.role == Candidate {
		own = max(own, m.attempt) // a candidate has promised itself its attempt
	}
	if !m.lapsed() || msg.Epoch <= own {
		m.send(Message{Type: MsgPromise, To: msg.From, Epoch: msg.Epoch, Reject: true, Hint: own})
		return
	}
	if m.role == Candidate {
		m.becomeFollower() // msg.Epoch > attempt: ours can no longer win
	}
	m.hs.Epoch = msg.Epoch
	m.hsDirty = true
	m.promisedTo, m.promisedAt = msg.From, msg.Epoch
	m.send(Message{Type: MsgPromise, To: msg.From, Epoch: msg.Epoch, Checkpoint: m.hs.Accepted, AcceptedAt: m.hs.AcceptedAt})
}

func (m *Machine) stepRelease(msg Message) {
	// Only the holder of our current epoch can release it, and it stopped
	// the agent before sending this; its late heartbeats are ignored.
	if msg.Epoch == m.hs.Epoch && m.role == Follower {
		m.lapseAt = m.now
		m.released = max(m.released, msg.Epoch)
		m.commit = max(m.commit, msg.Commit)
	}
}

func (m *Machine) stepHandoff(msg Message) {
	if msg.Epoch == m.hs.Epoch && m.role == Follower {
		m.lapseAt = m.now
		m.released = max(m.released, msg.Epoch)
		m.commit = max(m.commit, msg.Commit)
		m.campaign()
	}
}

// ---- candidate side ----

func (m *Machine) campaign() {
	m.role = Candidate
	m.attempt = max(m.hs.Epoch, m.maxSeen) + 1
	m.attemptStart = m.now
	m.votes = map[string]Message{}
	for _, p := range m.cfg.Group {
		if p != m.cfg.Self {
			m.send(Message{Type: MsgPromiseRequest, To: p, Epoch: m.attempt})
		}
	}
	m.maybeWin()
}

func (m *Machine) giveUp() {
	m.becomeFollower()
	r := int64(m.cfg.RetryTicks)
	m.backoffUntil = m.now + r/2 + 1 + int64(m.cfg.Rand()%uint64(r+1))
}

func (m *Machine) stepPromise(msg Message) {
	m.see(msg.Hint)
	if m.role != Candidate || msg.Epoch != m.attempt {
		return
	}
	if v, ok := m.votes[msg.From]; ok && !v.Reject {
		return // a promise stands
	}
	m.votes[msg.From] = msg
	if msg.Reject {
		// A refusal with a hint at or above our attempt is final (that
		// member promised or attempts this epoch or a later one); one for a
		// live lease may turn into a promise when the member's view lapses.
		final := 0
		for _, v := range m.votes {
			if v.Reject && v.Hint >= m.attempt {
				final++
			}
		}
		if final > len(m.cfg.Group)-m.majority {
			m.giveUp()
		}
		return
	}
	m.maybeWin()
}

func (m *Machine) maybeWin() {
	granted := 1 // ourselves
	for _, v := range m.votes {
		if !v.Reject {
			granted++
		}
	}
	if granted < m.majority || m.attempt <= m.hs.Epoch {
		return
	}
	// Promise ourselves the attempt; choose the highest (AcceptedAt, Seq)
	// among the majority: it extends every committed checkpoint.
	best, bestAt := m.hs.Accepted, m.hs.AcceptedAt
	for _, p := range m.cfg.Group {
		v, ok := m.votes[p]
		if !ok || v.Reject {
			continue
		}
		if v.AcceptedAt > bestAt || (v.AcceptedAt == bestAt && v.Checkpoint.Seq > best.Seq) {
			best, bestAt = v.Checkpoint, v.AcceptedAt
		}
	}
	m.hs.Epoch = m.attempt
	m.hs.Accepted, m.hs.AcceptedAt = best, m.attempt
	m.hsDirty = true
	m.role = Holder
	m.votes = nil
	m.wonAt = m.now
	m.leaseEnd = 0
	m.round = 0
	m.sent = map[uint64]int64{}
	m.acks = map[uint64]map[string]bool{}
	m.match = map[string]uint64{}
	m.lastAck = map[string]int64{}
	m.pending = []Checkpoint{best}
	m.hasCommit = false
	m.committed = Checkpoint{}
	// The recovered checkpoint is re-accepted at the new epoch by a majority
	// (committed) before the agent starts from it.
	m.broadcastRound()
}

// ---- holder side ----

func (m *Machine) broadcastRound() {
	m.round++
	m.sent[m.round] = m.now
	m.lastRound = m.now
	for r, t := range m.sent {
		if t+int64(m.cfg.LeaseTicks) <= m.now && r != m.round {
			delete(m.sent, r) // can no longer extend the lease
			delete(m.acks, r)
		}
	}
	m.acks[m.round] = map[string]bool{m.cfg.Self: true}
	m.match[m.cfg.Self] = m.hs.Accepted.Seq
	for _, p := range m.cfg.Group {
		if p != m.cfg.Self {
			m.send(Message{Type: MsgAppend, To: p, Epoch: m.hs.Epoch, Round: m.round, Commit: m.committed.Seq, Checkpoint: m.hs.Accepted})
		}
	}
	m.progress(m.round)
}

func (m *Machine) stepAppendAck(msg Message) {
	m.see(msg.Hint)
	if msg.Reject {
		if m.role == Holder && msg.Hint > m.hs.Epoch {
			m.stepDown() // fenced: a member promised a higher epoch
		}
		return
	}
	if m.role != Holder || msg.Epoch != m.hs.Epoch {
		return
	}
	m.match[msg.From] = max(m.match[msg.From], msg.Checkpoint.Seq)
	m.lastAck[msg.From] = m.now
	if a, ok := m.acks[msg.Round]; ok {
		a[msg.From] = true
	}
	m.progress(msg.Round)
}

// progress extends the lease by round r if a majority acknowledged it,
// commits what a majority stored, and starts the agent once both hold.
func (m *Machine) progress(r uint64) {
	if a, ok := m.acks[r]; ok && len(a) >= m.majority {
		m.leaseEnd = max(m.leaseEnd, m.sent[r]+int64(m.cfg.LeaseTicks))
	}
	for len(m.pending) > 0 {
		cp := m.pending[0]
		n := 0
		for _, s := range m.match {
			if s >= cp.Seq {
				n++
			}
		}
		if n < m.majority {
			break
		}
		m.pending = m.pending[1:]
		m.committed, m.hasCommit = cp, true
		m.newlyCommitted = append(m.newlyCommitted, cp)
	}
	if !m.running && m.hasCommit && m.now < m.leaseEnd {
		m.running = true
		cp := m.committed
		m.start = &cp
	}
}
