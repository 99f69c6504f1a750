package lease

import (
	"cmp"
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
	// ErrNotMember: a message from a node outside every configuration this
	// machine knows (e.g. a member removed by a configuration change). It
	// also wraps ErrInvalidMessage; drivers may drop such messages quietly.
	ErrNotMember = errors.New("lease: sender is not a member")
	// ErrChangeInFlight: a configuration change while an earlier one, or a
	// checkpoint, is not committed yet.
	ErrChangeInFlight = errors.New("lease: a proposal is not committed yet")
)

// MaxMembers bounds a configuration (and each of a joint pair).
const MaxMembers = 9

// Conf is the configuration of a custody group: the members whose
// majority decides. It is replicated with the checkpoints (PROTOCOL.md,
// "Membership change in place"). Index 0 is the founding group
// (Config.Group) and carries no lists; every change raises Index by one.
type Conf struct {
	Index   uint64
	Members []string // sorted; empty when Index is 0
	// Joint: while a change is in flight, the members before it. Every
	// quorum (lease, commit, promises) then needs a majority of both.
	Joint []string
}

func (c Conf) equal(o Conf) bool {
	return c.Index == o.Index && slices.Equal(c.Members, o.Members) && slices.Equal(c.Joint, o.Joint)
}

func (c Conf) clone() Conf {
	return Conf{Index: c.Index, Members: slices.Clone(c.Members), Joint: slices.Clone(c.Joint)}
}

// check reports what is wrong with a configuration read from the wire or
// disk ("" when nothing).
func (c Conf) check() string {
	if c.Index == 0 {
		if len(c.Members) != 0 || len(c.Joint) != 0 {
			return "configuration 0 (the founding group) carries member lists"
		}
		return ""
	}
	if len(c.Members) == 0 {
		return fmt.Sprintf("configuration %d has no members", c.Index)
	}
	for _, set := range [][]string{c.Members, c.Joint} {
		if msg := checkSet(set); msg != "" {
			return fmt.Sprintf("configuration %d: %s", c.Index, msg)
		}
	}
	return ""
}

func checkSet(set []string) string {
	if len(set) > MaxMembers {
		return fmt.Sprintf("%d members, the limit is %d", len(set), MaxMembers)
	}
	if !slices.IsSorted(set) {
		return "members not sorted"
	}
	for i, p := range set {
		if p == "" || len(p) > maxIDLen {
			return fmt.Sprintf("member %q is not a peer ID", p)
		}
		if i > 0 && set[i-1] == p {
			return fmt.Sprintf("member %q listed twice", p)
		}
	}
	return ""
}

// pos orders the values one holder proposes: checkpoints raise seq,
// configuration changes raise conf.
type pos struct{ seq, conf uint64 }

func (a pos) less(b pos) bool { return a.seq < b.seq || a.seq == b.seq && a.conf < b.conf }

// entry is a value the holder proposed: its position and checkpoint.
type entry struct {
	at pos
	cp Checkpoint
}

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
	// Conf is the configuration accepted with Accepted (part of the same
	// value): the newest this node knows, which it counts quorums by.
	Conf Conf
}

func (hs HardState) pos() pos { return pos{hs.Accepted.Seq, hs.Conf.Index} }

// Equal reports whether two hard states are the same.
func (hs HardState) Equal(o HardState) bool {
	return hs.Epoch == o.Epoch && hs.Accepted == o.Accepted && hs.AcceptedAt == o.AcceptedAt && hs.Conf.equal(o.Conf)
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
	// MsgPairBeat: node → peer, one per heartbeat round for every group
	// the two share (pairs.go): Round, Session. No group, no epoch.
	MsgPairBeat
	// MsgPairAck: peer → node. Acknowledges pair round Round; Session and
	// Gen are the acknowledging node's PairID, Echo the beat's session.
	MsgPairAck
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
	// Conf: MsgAppend and MsgPromise, the configuration of Checkpoint's
	// value; MsgAppendAck, only its Index (with Checkpoint.Seq, the
	// member's accepted position).
	Conf Conf
	// Pair leases (pairs.go). Session: the sender's pair session (MsgAppend
	// of a holder using pair leases, MsgAppendAck, MsgPairBeat, MsgPairAck).
	// Gen: on MsgAppend and MsgPairBeat the sender's relinquishment count
	// towards the recipient, on MsgAppendAck and MsgPairAck its defection
	// count. Echo: MsgPairAck, the beat's Session; MsgAppendAck, the
	// Append's Gen. EchoGen: MsgPairAck, the beat's Gen.
	Session, Gen, Echo, EchoGen uint64
}

// Equal reports whether two messages are the same.
func (m Message) Equal(o Message) bool {
	return m.Type == o.Type && m.From == o.From && m.To == o.To && m.Epoch == o.Epoch && m.Round == o.Round &&
		m.Commit == o.Commit && m.Checkpoint == o.Checkpoint && m.AcceptedAt == o.AcceptedAt &&
		m.Reject == o.Reject && m.Hint == o.Hint && m.Conf.equal(o.Conf) &&
		m.Session == o.Session && m.Gen == o.Gen && m.Echo == o.Echo && m.EchoGen == o.EchoGen
}

// Ready is the batch of outputs to handle, in the order given in the
// package documentation, before calling Advance.
type Ready struct {
	Persist *HardState // persist (fsync) FIRST, before anything else
	Stop    bool       // stop the agent before sending Messages
	// StopReason says why Stop is set, for logs (no step depends on it).
	StopReason string
	Committed  []Checkpoint // newly committed, in seq order
	Start      *Checkpoint  // resume the agent from this committed checkpoint
	Messages   []Message    // send last
	// Removed: this node accepted a configuration without itself. It takes
	// no further part; the driver leaves the group (deletes its state and
	// the agent key) after persisting.
	Removed bool
}

// Empty reports whether the Ready asks for nothing.
func (rd Ready) Empty() bool {
	return rd.Persist == nil && !rd.Stop && len(rd.Committed) == 0 && rd.Start == nil && len(rd.Messages) == 0 && !rd.Removed
}

// Config configures one Machine. Durations are in ticks of the node's local
// monotonic clock.
type Config struct {
	Self string // this node's peer ID
	// Group is the founding configuration (Conf index 0), sorted. It
	// includes Self unless HardState.Conf names a later configuration (a
	// member added by a change joins with that configuration).
	Group []string
	// Rank is Self's position in the rendezvous order of the standbys
	// (0 = first to try a takeover). It staggers takeover attempts.
	Rank int
	// RankIn, if set, gives Self's rank among a configuration's members
	// (sorted, joint ones included): after a membership change the ranks
	// must stay distinct, or two members lapse at the same tick and duel.
	// Rank then serves until the first change.
	RankIn func(members []string) int
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
	// GraceTicks: a holder whose lease ended keeps the holder role this
	// long after the end, its agent fenced but not stopped, and runs on at
	// the same epoch if a majority renews the lease meanwhile; it steps
	// down (Stop) when the grace ends, or at once on a higher epoch. 0:
	// it steps down at the lease's end. A lease that lapsed because this
	// node was starved — its renewals or their acknowledgements late, its
	// members still bound to it — then costs nothing, where a step-down
	// costs a stop, a relinquishment that unbinds the members of all its
	// groups with them, campaigns and a start elsewhere: under load, the
	// step-downs of thousands of groups at once fed the load that caused
	// them (docs/PROTOCOL.md "Lapsed holder").
	GraceTicks int
	// Pairs, if set, is the node's pair table (pairs.go): the holder's
	// lease is renewed by the pair beats the members acknowledge, and it
	// sends per-group rounds only to propose, to tell the commit point and
	// to establish the group with a member. Nil: a round every heartbeat.
	Pairs Pairs
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
	if _, ok := slices.BinarySearch(c.Group, c.Self); !ok && c.HardState.Conf.Index == 0 {
		return bad("Group does not contain Self %q", c.Self)
	}
	if msg := c.HardState.Conf.check(); msg != "" {
		return bad("HardState: %s", msg)
	}
	if n := max(len(c.Group), len(c.HardState.Conf.Members)+len(c.HardState.Conf.Joint)); c.Rank < 0 || c.Rank >= n {
		return bad("Rank %d is outside 0..%d", c.Rank, n-1)
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
	if c.StaggerTicks < 0 || c.RetryTicks < 0 || c.QuietTicks < 0 || c.GraceTicks < 0 {
		return bad("StaggerTicks %d, RetryTicks %d, QuietTicks %d and GraceTicks %d must not be negative", c.StaggerTicks, c.RetryTicks, c.QuietTicks, c.GraceTicks)
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
	cfg Config

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
	// bound, boundSess: the holder (and its pair session) whose Append at
	// our epoch we acknowledged last (pair leases): we promise nothing in
	// this group until WaitTicks after its latest pair beat, and defect
	// from it when we do.
	bound               string
	boundSess, boundRel uint64
	votes               map[string]Message
	asked               []string // sorted: every member of a configuration this attempt knows of

	// holder
	running   bool
	wonAt     int64
	leaseEnd  int64 // may run while now < leaseEnd
	lastRound int64 // tick of the latest round sent
	round     uint64
	sent      map[uint64]int64           // round → tick sent
	acks      map[uint64]map[string]bool // round → members that acknowledged
	match     map[string]pos             // member → accepted position at our epoch
	lastAck   map[string]int64           // member → tick of its latest acknowledgement
	// Pair leases: est, the member's PairID on the AppendAck that
	// established the group with it (its pair acknowledgements count while
	// they carry the same); ackSent, the send tick of the latest round it
	// acknowledged.
	est       map[string]estab
	ackSent   map[string]int64
	view      *LeaseView // cached LeaseView; nil when stale
	pending   []entry    // proposed, not committed (first: recovery)
	committed Checkpoint
	commitPos pos
	hasCommit bool
	// leaving: members the committed configuration dropped that have not
	// acknowledged it yet; they get the holder's heartbeats, which tell
	// them they are out, only once the change is committed.
	leaving []string
	// reserved: the highest configuration index JoinConf handed out at
	// this epoch.
	reserved uint64

	// removed: this node accepted a configuration without itself.
	removed bool

	// outputs
	msgs           []Message
	start          *Checkpoint
	stop           bool
	stopWhy        string // Ready.StopReason
	newlyCommitted []Checkpoint
	removedOut     bool
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
	m := &Machine{cfg: cfg, hs: cfg.HardState}
	m.hs.Conf = m.hs.Conf.clone()
	m.removed = !slices.Contains(m.voters(m.hs.Conf), cfg.Self)
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
	return m.effLeaseEnd()
}

// fenceTick is the holder's lease end as its fence counts it: the lease
// end, and at least LeaseTicks after it won (its first round is then
// still in flight).
func (m *Machine) fenceTick() int64 {
	return max(m.effLeaseEnd(), m.wonAt+int64(m.cfg.LeaseTicks))
}

// Accepted is the latest checkpoint this node stored and the epoch it
// accepted it at.
func (m *Machine) Accepted() (Checkpoint, uint64) { return m.hs.Accepted, m.hs.AcceptedAt }

// Conf is the configuration this node counts quorums by (the one accepted
// with its latest value); for index 0 the founding group.
func (m *Machine) Conf() Conf {
	c := m.hs.Conf.clone()
	if c.Index == 0 {
		c.Members = slices.Clone(m.cfg.Group)
	}
	return c
}

// Removed reports whether this node accepted a configuration without
// itself: it takes no further part in the group.
func (m *Machine) Removed() bool { return m.removed }

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
	if s, counted := m.pairSent(p); counted && (!ok || s > at) {
		at, ok = s, true
	}
	return ok && m.now-at <= int64(m.cfg.LeaseTicks) && !m.match[p].less(m.commitPos)
}

// NextTick is the earliest tick after Now at which Tick may do anything
// (send, fence, campaign, give up), assuming no Step, Propose, Transfer or
// Campaign before it: every Tick, and TickTo(t) for t < NextTick, leaves
// the machine's outputs empty. A driver with many groups sleeps until it
// instead of waking every tick, then calls TickTo(its clock tick).
func (m *Machine) NextTick() int64 {
	next := int64(1) << 62
	if m.removed {
		return next
	}
	switch m.role {
	case Holder:
		next = m.fenceTick() + int64(m.cfg.GraceTicks)
		if m.wantRound() {
			next = min(next, m.lastRound+int64(m.cfg.HeartbeatTicks))
		}
	case Candidate:
		next = m.attemptStart + int64(m.cfg.RetryTicks)
		every := int64(max(1, m.cfg.HeartbeatTicks/2))
		next = min(next, m.now+every-(m.now-m.attemptStart)%every)
	case Follower:
		next = max(m.lapseTick()+int64(m.rank()*m.cfg.StaggerTicks), m.backoffUntil, m.quietUntil)
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
	if m.role != Follower || !m.lapsed() || m.removed {
		return fmt.Errorf("%w: %s is %s, lease lapses here at tick %d, now %d", ErrLeaseLive, m.cfg.Self, m.role, m.lapseTick(), m.now)
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
	if m.removed {
		return
	}
	switch m.role {
	case Holder:
		if m.now >= m.fenceTick()+int64(m.cfg.GraceTicks) {
			// Self-fence: no majority renewed the lease in time (nor in the
			// grace after it). The lease ended by our clock, before any
			// member's wait ends by theirs; the agent was fenced from then.
			// stepDown counts our view as heard at target, not at the fence
			// tick: the agent stops only when this Ready is handled (after
			// the pause), so we promise nobody until W after it really
			// stopped, as after an on-time fence. Only our own promises wait
			// longer; the takeover needs a majority of the others' views.
			m.stepDown("self-fenced: no majority renewed the lease in time")
			return
		}
		// Inside the grace (Config.GraceTicks) the lease may have ended:
		// the agent is fenced by LeaseEnd, and the rounds go on as before —
		// a majority acknowledging one renews the lease at this epoch, as
		// any renewal does (the timing rule does not ask whether the lease
		// was still live when the round was sent).
		if m.now-m.lastRound >= int64(m.cfg.HeartbeatTicks) && m.wantRound() {
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
		for _, p := range m.asked {
			if v, ok := m.votes[p]; p != m.cfg.Self && (!ok || v.Reject && v.Hint < m.attempt) {
				m.send(Message{Type: MsgPromiseRequest, To: p, Epoch: m.attempt})
			}
		}
	case Follower:
		if m.now >= m.lapseTick()+int64(m.rank()*m.cfg.StaggerTicks) && m.now >= m.backoffUntil && m.now >= m.quietUntil {
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
	if msg.From == m.cfg.Self {
		return fmt.Errorf("%w: a message from this node to itself", ErrInvalidMessage)
	}
	if msg.Epoch == 0 {
		return fmt.Errorf("%w: epoch 0 from %q", ErrInvalidMessage, msg.From)
	}
	if bad := msg.checkConf(); bad != "" {
		return fmt.Errorf("%w: from %q: %s", ErrInvalidMessage, msg.From, bad)
	}
	if m.removed {
		// No further part in the group; only tell a holder that keeps
		// telling us we are out that we know.
		if msg.Type == MsgAppend && msg.Epoch == m.hs.AcceptedAt {
			m.send(Message{Type: MsgAppendAck, To: msg.From, Epoch: msg.Epoch, Round: msg.Round, Checkpoint: Checkpoint{Seq: m.hs.Accepted.Seq}, Conf: Conf{Index: m.hs.Conf.Index}})
		}
		return nil
	}
	if !m.member(msg) {
		return fmt.Errorf("%w: %w: %q is in no configuration %s knows", ErrInvalidMessage, ErrNotMember, msg.From, m.cfg.Self)
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
	m.pending = append(m.pending, entry{m.hs.pos(), cp})
	m.broadcastRound()
	return nil
}

// JoinConf reserves the joint configuration of a change to members
// (sorted, including this holder): the current members with members, at
// a configuration index never handed out before at this epoch. A member
// being added joins with it (at this epoch, with the committed checkpoint);
// ChangeConfig then proposes it. Reserving matters: a member that joined
// for a change the holder abandoned holds that configuration at this
// epoch, and no other value may ever have the same position. It returns
// ErrNotHolder or ErrInvalidConfig.
func (m *Machine) JoinConf(members []string) (Conf, error) {
	if m.role != Holder || !m.running {
		return Conf{}, fmt.Errorf("%w: %s is %s", ErrNotHolder, m.cfg.Self, m.role)
	}
	if msg := checkSet(members); msg != "" || len(members) == 0 || !slices.Contains(members, m.cfg.Self) {
		if msg == "" {
			msg = "it must include this holder " + m.cfg.Self
		}
		return Conf{}, fmt.Errorf("%w: new members %v: %s", ErrInvalidConfig, members, msg)
	}
	m.reserved = max(m.reserved, m.hs.Conf.Index) + 1
	return Conf{Index: m.reserved, Members: slices.Clone(members), Joint: slices.Clone(m.members(m.hs.Conf))}, nil
}

// ChangeConfig proposes c, the latest configuration JoinConf reserved:
// the group's members change without the agent stopping. The joint
// configuration is replicated first and, once a majority of both the old
// and the new members stored it, the new members alone (PROTOCOL.md,
// "Membership change in place"). It returns ErrNotHolder,
// ErrChangeInFlight (a change or a checkpoint is not committed yet: retry
// after the next commit) or ErrInvalidConfig (c is not the latest
// reservation, or the members changed since).
func (m *Machine) ChangeConfig(c Conf) error {
	if m.role != Holder || !m.running {
		return fmt.Errorf("%w: %s is %s", ErrNotHolder, m.cfg.Self, m.role)
	}
	if c.Index == 0 || c.Index != m.reserved || c.Index <= m.hs.Conf.Index || !slices.Equal(c.Joint, m.members(m.hs.Conf)) || c.check() != "" {
		return fmt.Errorf("%w: %s is not the configuration reserved last (index %d) from the current members %v", ErrInvalidConfig, c, m.reserved, m.members(m.hs.Conf))
	}
	if len(m.pending) > 0 || len(m.hs.Conf.Joint) > 0 {
		return fmt.Errorf("%w: %d proposals pending", ErrChangeInFlight, len(m.pending))
	}
	m.hs.Conf = c.clone()
	m.hsDirty = true
	m.pending = append(m.pending, entry{m.hs.pos(), m.hs.Accepted})
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
	if to == m.cfg.Self || !slices.Contains(m.members(m.hs.Conf), to) {
		return fmt.Errorf("%w: transfer target %q is not another member", ErrInvalidMessage, to)
	}
	if len(m.pending) > 0 {
		return fmt.Errorf("%w: seq %d pending", ErrNotCommitted, m.pending[len(m.pending)-1].cp.Seq)
	}
	if len(m.hs.Conf.Joint) > 0 {
		return fmt.Errorf("%w: a configuration change is in flight", ErrNotCommitted)
	}
	commit := m.committed.Seq
	m.stepDown("handing the agent off")
	// We stopped the agent and will never renew this epoch (a restarted node
	// starts as a follower), so our own view may lapse at once; back off so
	// the target, not we, takes the next epoch.
	m.lapseAt = m.now
	m.backoffUntil = m.now + int64(m.cfg.RetryTicks)
	for _, p := range m.voters(m.hs.Conf) {
		if p != m.cfg.Self && p != to {
			m.send(Message{Type: MsgRelease, To: p, Epoch: m.hs.Epoch, Commit: commit})
		}
	}
	m.send(Message{Type: MsgHandoff, To: to, Epoch: m.hs.Epoch, Commit: commit})
	return nil
}

// Ready returns the outputs accumulated since the last Advance.
func (m *Machine) Ready() Ready {
	rd := Ready{Stop: m.stop, Start: m.start, Messages: m.msgs, Committed: m.newlyCommitted, Removed: m.removedOut}
	if m.stop {
		rd.StopReason = cmp.Or(m.stopWhy, "left the holder role")
	}
	if m.hsDirty {
		hs := m.hs
		hs.Conf = hs.Conf.clone()
		rd.Persist = &hs
	}
	return rd
}

// Advance acknowledges that the last Ready was handled.
func (m *Machine) Advance() {
	m.hsDirty, m.stop, m.start, m.msgs, m.newlyCommitted, m.removedOut = false, false, nil, nil, nil, false
	m.stopWhy = ""
}

// rank is Self's takeover rank in its current configuration.
func (m *Machine) rank() int {
	if m.cfg.RankIn == nil || m.hs.Conf.Index == 0 {
		return m.cfg.Rank
	}
	return max(m.cfg.RankIn(m.voters(m.hs.Conf)), 0)
}

// members is c's member list (the founding group for index 0).
func (m *Machine) members(c Conf) []string {
	if c.Index == 0 {
		return m.cfg.Group
	}
	return c.Members
}

// voters is every node whose vote a quorum of c counts, sorted.
func (m *Machine) voters(c Conf) []string {
	if len(c.Joint) == 0 {
		return m.members(c)
	}
	v := append(slices.Clone(c.Members), c.Joint...)
	slices.Sort(v)
	return slices.Compact(v)
}

// quorum reports whether the nodes for which has is true are a majority
// of c (of both halves of a joint configuration).
func (m *Machine) quorum(c Conf, has func(p string) bool) bool {
	maj := func(set []string) bool {
		n := 0
		for _, p := range set {
			if has(p) {
				n++
			}
		}
		return n >= len(set)/2+1
	}
	return maj(m.members(c)) && (len(c.Joint) == 0 || maj(c.Joint))
}

// member reports whether msg comes from a node this machine may hear: one
// of its configuration, one a candidate learned of from promises, or the
// holder of an Append whose configuration includes both (a member that
// missed a change learns it from the holder's heartbeat).
func (m *Machine) member(msg Message) bool {
	if slices.Contains(m.voters(m.hs.Conf), msg.From) || m.role == Candidate && slices.Contains(m.asked, msg.From) ||
		m.role == Holder && msg.Type == MsgAppendAck && slices.Contains(m.leaving, msg.From) {
		return true
	}
	if msg.Type == MsgAppend && msg.Conf.Index > m.hs.Conf.Index {
		v := m.voters(msg.Conf)
		return slices.Contains(v, msg.From) && slices.Contains(v, m.cfg.Self)
	}
	return false
}

func (m *Machine) send(msg Message) {
	msg.From = m.cfg.Self
	m.msgs = append(m.msgs, msg)
}

func (m *Machine) lapsed() bool { return m.role != Holder && m.now >= m.lapseTick() }

// lapseTick is the first tick at which the lease counts as lapsed here:
// WaitTicks after the latest heartbeat, and with pair leases after the
// latest pair beat of the holder this node is bound to.
func (m *Machine) lapseTick() int64 {
	at := m.lapseAt
	if m.bound != "" && m.cfg.Pairs != nil {
		if b, ok := m.cfg.Pairs.Beat(m.bound, m.boundSess, m.boundRel); ok {
			at = max(at, b+int64(m.cfg.WaitTicks)+1)
		}
	}
	return at
}

// defect: this node promises an epoch above its bound holder's (to a
// candidate, or to itself by campaigning): the holder must stop counting
// its pair acknowledgements (pairs.go).
func (m *Machine) defect() {
	if m.bound != "" && m.cfg.Pairs != nil {
		m.cfg.Pairs.Defect(m.bound)
	}
	m.bound, m.boundSess, m.boundRel = "", 0, 0
}

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
	m.votes, m.sent, m.acks, m.match, m.pending, m.leaving = nil, nil, nil, nil, nil, nil
}

// Relinquish, on a holder with pair leases, raises its relinquishment count
// towards every other voter: members bound to it keep their promise only
// while its beats name what its Appends named, so it ends W after its next
// beat, and its other groups with them get established again. A holder
// stepping down does it; so does one whose node shuts its group down
// without a step (the machine is then dropped). Otherwise a no-op.
func (m *Machine) Relinquish() {
	if m.role != Holder || m.cfg.Pairs == nil {
		return
	}
	for _, p := range m.voters(m.hs.Conf) {
		if p != m.cfg.Self {
			m.cfg.Pairs.Relinquish(p)
		}
	}
}

// stepDown ends this node's holding; it treats its own lease as just heard,
// so it does not promise anyone until its view lapses like everyone's.
func (m *Machine) stepDown(why string) {
	if m.running && m.stopWhy == "" {
		m.stopWhy = why
	}
	m.Relinquish()
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
		m.stepDown("fenced: a holder at a higher epoch appeared")
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
	if msg.Epoch > m.hs.AcceptedAt || (msg.Epoch == m.hs.AcceptedAt && m.hs.pos().less(pos{msg.Checkpoint.Seq, msg.Conf.Index})) {
		m.hs.Accepted, m.hs.AcceptedAt, m.hs.Conf = msg.Checkpoint, msg.Epoch, msg.Conf.clone()
		m.hsDirty = true
		if !slices.Contains(m.voters(m.hs.Conf), m.cfg.Self) {
			// Removed by a committed change (the holder tells a dropped
			// member only once the change is committed, so no holder can
			// ever need our vote again): persist it, acknowledge so the
			// holder stops telling us, and let the driver leave.
			m.removed, m.removedOut = true, true
		}
	}
	ack := Message{Type: MsgAppendAck, To: msg.From, Epoch: msg.Epoch, Round: msg.Round, Checkpoint: Checkpoint{Seq: m.hs.Accepted.Seq}, Conf: Conf{Index: m.hs.Conf.Index}}
	m.bound, m.boundSess, m.boundRel = "", 0, 0
	if msg.Session != 0 && m.cfg.Pairs != nil {
		// Bound to this holder from now on (pairs.go); the acknowledgement
		// names our PairID towards it, under which it may count our pair
		// acknowledgements in this group.
		m.bound, m.boundSess, m.boundRel = msg.From, msg.Session, msg.Gen
		ack.Session, ack.Gen, ack.Echo = m.cfg.Pairs.Session(), m.cfg.Pairs.Gen(msg.From), msg.Gen
	}
	m.send(ack)
}

func (m *Machine) stepPromiseRequest(msg Message) {
	m.see(msg.Epoch)
	// A repeated request of the candidate we promised this epoch to (the
	// first answer may have been lost): the same promise again. Nothing
	// changed since — an accepted checkpoint at this epoch could only come
	// from that candidate after it won, and then it asks no more.
	if m.role == Follower && msg.Epoch == m.hs.Epoch && msg.Epoch == m.promisedAt && msg.From == m.promisedTo && m.lapsed() {
		m.send(Message{Type: MsgPromise, To: msg.From, Epoch: msg.Epoch, Checkpoint: m.hs.Accepted, AcceptedAt: m.hs.AcceptedAt, Conf: m.hs.Conf.clone()})
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
	m.defect()
	m.promisedTo, m.promisedAt = msg.From, msg.Epoch
	// Give the candidate we promised an attempt's time to win and send its
	// first round before campaigning ourselves (Raft resets its election
	// timer on a vote for the same reason): a member whose own wait had run
	// out campaigned a tick after promising, and the two outbid each other
	// for seconds (epochs 3, 4, 5, 6… while a restarted member caught up).
	// Promises to others stay possible: the view stays lapsed.
	m.backoffUntil = max(m.backoffUntil, m.now+int64(m.cfg.RetryTicks))
	m.send(Message{Type: MsgPromise, To: msg.From, Epoch: msg.Epoch, Checkpoint: m.hs.Accepted, AcceptedAt: m.hs.AcceptedAt, Conf: m.hs.Conf.clone()})
}

func (m *Machine) stepRelease(msg Message) {
	// Only the holder of our current epoch can release it, and it stopped
	// the agent before sending this; its late heartbeats are ignored.
	if msg.Epoch == m.hs.Epoch && m.role == Follower {
		m.lapseAt = m.now
		m.bound, m.boundSess, m.boundRel = "", 0, 0 // it stopped the agent: no lease to protect
		m.released = max(m.released, msg.Epoch)
		m.commit = max(m.commit, msg.Commit)
		// The target campaigns now: grant it a promise, but do not race it
		// (ranked above the target, this member campaigned after its
		// stagger whenever the Handoff was slow to reach the target, and
		// the agent landed here: testdata/handoff-race.txt). If the target
		// fails, this member campaigns after the backoff.
		m.backoffUntil = max(m.backoffUntil, m.now+int64(m.cfg.RetryTicks))
	}
}

func (m *Machine) stepHandoff(msg Message) {
	if msg.Epoch == m.hs.Epoch && m.role == Follower {
		m.lapseAt = m.now
		m.bound, m.boundSess, m.boundRel = "", 0, 0
		m.released = max(m.released, msg.Epoch)
		m.commit = max(m.commit, msg.Commit)
		m.campaign()
	}
}

// ---- candidate side ----

func (m *Machine) campaign() {
	m.defect() // a candidate promises itself its attempt
	m.role = Candidate
	m.attempt = max(m.hs.Epoch, m.maxSeen) + 1
	m.attemptStart = m.now
	m.votes = map[string]Message{}
	m.asked = slices.Clone(m.voters(m.hs.Conf))
	for _, p := range m.asked {
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
		_, _, conf := m.best()
		if !m.quorum(conf, func(p string) bool {
			v, ok := m.votes[p]
			return !ok || !v.Reject || v.Hint < m.attempt
		}) {
			m.giveUp()
		}
		return
	}
	m.maybeWin()
}

// best is the value with the highest (AcceptedAt, seq, conf) among this
// candidate's own and the promises it holds. Two promises at the same
// position are the same value (one holder proposed it).
func (m *Machine) best() (Checkpoint, uint64, Conf) {
	best, bestAt, conf := m.hs.Accepted, m.hs.AcceptedAt, m.hs.Conf
	for _, p := range m.asked {
		v, ok := m.votes[p]
		if !ok || v.Reject {
			continue
		}
		if v.AcceptedAt > bestAt || (v.AcceptedAt == bestAt && (pos{best.Seq, conf.Index}).less(pos{v.Checkpoint.Seq, v.Conf.Index})) {
			best, bestAt, conf = v.Checkpoint, v.AcceptedAt, v.Conf
		}
	}
	return best, bestAt, conf
}

func (m *Machine) maybeWin() {
	if m.attempt <= m.hs.Epoch {
		return
	}
	// The highest (AcceptedAt, seq, conf) among a quorum extends every
	// committed value; its configuration is the one to count by, so a
	// promise naming a newer configuration makes us ask its members too.
	best, _, conf := m.best()
	for _, p := range m.voters(conf) {
		if i, found := slices.BinarySearch(m.asked, p); !found {
			m.asked = slices.Insert(m.asked, i, p)
			if p != m.cfg.Self {
				m.send(Message{Type: MsgPromiseRequest, To: p, Epoch: m.attempt})
			}
		}
	}
	if !slices.Contains(m.members(conf), m.cfg.Self) {
		// The group went on without us (or is changing to members without
		// us): only a member of the new configuration may hold it.
		m.giveUp()
		return
	}
	if !m.quorum(conf, func(p string) bool {
		v, ok := m.votes[p]
		return p == m.cfg.Self || ok && !v.Reject
	}) {
		return
	}
	m.hs.Epoch = m.attempt
	m.hs.Accepted, m.hs.AcceptedAt, m.hs.Conf = best, m.attempt, conf.clone()
	m.hsDirty = true
	m.role = Holder
	m.votes = nil
	m.wonAt = m.now
	m.leaseEnd = 0
	m.round = 0
	m.sent = map[uint64]int64{}
	m.acks = map[uint64]map[string]bool{}
	m.match = map[string]pos{}
	m.lastAck = map[string]int64{}
	m.est, m.ackSent, m.view = map[string]estab{}, map[string]int64{}, nil
	m.reserved = 0
	m.pending = []entry{{m.hs.pos(), best}}
	m.hasCommit = false
	m.committed, m.commitPos = Checkpoint{}, pos{}
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
	m.match[m.cfg.Self] = m.hs.pos()
	to := m.voters(m.hs.Conf)
	m.leaving = slices.DeleteFunc(m.leaving, func(p string) bool { return slices.Contains(to, p) }) // added back
	if len(m.pending) == 0 && len(m.hs.Conf.Joint) == 0 {
		to = append(slices.Clone(to), m.leaving...) // the change is committed: tell them
	}
	var sess uint64
	if m.cfg.Pairs != nil {
		sess = m.cfg.Pairs.Session()
	}
	for _, p := range to {
		if p != m.cfg.Self {
			msg := Message{Type: MsgAppend, To: p, Epoch: m.hs.Epoch, Round: m.round, Commit: m.committed.Seq, Checkpoint: m.hs.Accepted, Conf: m.hs.Conf.clone(), Session: sess}
			if sess != 0 {
				msg.Gen = m.cfg.Pairs.Rel(p)
			}
			m.send(msg)
		}
	}
	m.progress(m.round)
}

func (m *Machine) stepAppendAck(msg Message) {
	m.see(msg.Hint)
	if msg.Reject {
		if m.role == Holder && msg.Hint > m.hs.Epoch {
			m.stepDown("fenced: a member promised a higher epoch")
		}
		return
	}
	if m.role != Holder || msg.Epoch != m.hs.Epoch {
		return
	}
	if i := slices.Index(m.leaving, msg.From); i >= 0 {
		if !(pos{msg.Checkpoint.Seq, msg.Conf.Index}).less(m.hs.pos()) {
			m.leaving = slices.Delete(m.leaving, i, i+1) // it knows it is out
		}
		return
	}
	if at, had := (pos{msg.Checkpoint.Seq, msg.Conf.Index}), m.match[msg.From]; !m.hasMatch(msg.From) || had.less(at) {
		m.match[msg.From] = at
	}
	m.lastAck[msg.From] = m.now
	if m.cfg.Pairs != nil {
		if t, ok := m.sent[msg.Round]; ok && t >= m.ackSent[msg.From] {
			m.ackSent[msg.From] = t
			if msg.Session != 0 {
				m.est[msg.From] = estab{PairID{msg.Session, msg.Gen}, msg.Echo}
			}
			m.view = nil
		}
	}
	if a, ok := m.acks[msg.Round]; ok {
		a[msg.From] = true
	}
	m.progress(msg.Round)
}

func (m *Machine) hasMatch(p string) bool { _, ok := m.match[p]; return ok }

// progress extends the lease by round r if a majority acknowledged it,
// commits what a majority stored, and starts the agent once both hold.
//
// Quorums count by the holder's newest configuration, which is at least as
// strict as the one a pending value was proposed under: a joint
// configuration needs a majority of the old members too, and the new one
// alone is proposed only once the joint one is committed (so everything
// before it is).
func (m *Machine) progress(r uint64) {
	m.view = nil
	if a, ok := m.acks[r]; ok && m.quorum(m.hs.Conf, func(p string) bool { return a[p] }) {
		m.leaseEnd = max(m.leaseEnd, m.sent[r]+int64(m.cfg.LeaseTicks))
	}
	for len(m.pending) > 0 {
		e := m.pending[0]
		if !m.quorum(m.hs.Conf, func(p string) bool { s, ok := m.match[p]; return ok && !s.less(e.at) }) {
			break
		}
		m.pending = m.pending[1:]
		if !m.hasCommit || e.cp.Seq > m.committed.Seq {
			m.committed = e.cp // a configuration change carries the checkpoint before it
			m.newlyCommitted = append(m.newlyCommitted, e.cp)
		}
		m.commitPos, m.hasCommit = e.at, true
	}
	if !m.running && m.hasCommit && m.now < m.effLeaseEnd() {
		m.running = true
		cp := m.committed
		m.start = &cp
	}
	if len(m.pending) == 0 && len(m.hs.Conf.Joint) > 0 && m.hasCommit {
		// The joint configuration is committed: now the new members alone.
		for _, p := range m.hs.Conf.Joint {
			if !slices.Contains(m.hs.Conf.Members, p) && !slices.Contains(m.leaving, p) {
				m.leaving = append(m.leaving, p)
			}
		}
		m.hs.Conf = Conf{Index: m.hs.Conf.Index + 1, Members: m.hs.Conf.Members}
		m.hsDirty = true
		m.pending = append(m.pending, entry{m.hs.pos(), m.hs.Accepted})
		m.broadcastRound()
	}
}
