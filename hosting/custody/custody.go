// Package custody drives the custody-group lease protocol (hosting/lease)
// for every agent this node is a member for: one driver per agent owns its
// lease.Machine and a phase machine of its own (phase.go), one engine per
// node steps their lease traffic (engine.go); a driver maps lease ticks to
// the local monotonic clock,
// persists HardState before anything leaves the node, replicates
// checkpoints before it acknowledges them, and starts and stops the agent
// in the hosting.Service as the machine says. docs/PROTOCOL.md is the
// protocol; this package is its I/O edge.
//
// The network is behind Net (the node implements it over libp2p), so this
// package depends on neither libp2p nor the DHT.
package custody

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/lease"
	"github.com/igor-mesh/igor-node/internal/atomicfile"
)

// Errors of the custody manager.
var (
	// ErrBadGroup: a group description that breaks a rule; the message says which.
	ErrBadGroup = errors.New("custody: bad group")
	// ErrNotMember: this node is not a member of the agent's custody group.
	ErrNotMember = errors.New("custody: not a member for this agent")
	// ErrExists: this node already is a member for the agent.
	ErrExists = errors.New("custody: already a member for this agent")
	// ErrNotAllowed: a peer asked for something only the holder may ask.
	ErrNotAllowed = errors.New("custody: not allowed")
	// ErrNotHolder: an owner's control record reached a member that does
	// not hold the agent's lease; the error names the holder it knows.
	ErrNotHolder = errors.New("custody: not the agent's holder")
	// ErrBusy: the holder is moving the agent, changing its group or
	// applying another control record; retry in a moment.
	ErrBusy = errors.New("custody: agent busy")
	// ErrClosed: the manager has shut down.
	ErrClosed = errors.New("custody: closed")
	// ErrNoLeaseState: a membership's group file is here but its lease
	// state is not (lost with a damaged pack, or deleted by hand). Join
	// writes the lease state first, so this is never a crash's leftover;
	// the member may have promised an epoch it no longer remembers and
	// must not take part.
	ErrNoLeaseState = errors.New("custody: lease state missing")
)

// Timing is the lease timing of every group on this node, in lease ticks
// of Interval (docs/PROTOCOL.md "The timing rule"). The defaults give a
// 1.5 s lease renewed every 0.5 s; a standby acts 1.8 s after the last
// heartbeat it received. D = 3 ticks covers clock-rate drift far beyond
// quartz (ρ ≤ 0.09); driver latency does not count against it because the
// tick count is derived from the monotonic clock and the agent is fenced by
// time, not by ticks (see driver.fence).
type Timing struct {
	Interval       time.Duration
	HeartbeatTicks int
	LeaseTicks     int
	DriftTicks     int
	WaitTicks      int
	StaggerTicks   int
	RetryTicks     int
	// GraceTicks: a holder whose lease ended stays the holder this long,
	// its agent fenced, and runs on if a majority renews the lease
	// meanwhile (lease.Config.GraceTicks). Default WaitTicks: a node
	// starved for a moment (its renewals' acknowledgements late, its
	// members still bound to it) no longer stops every agent it holds.
	GraceTicks int
	// RegroupAfter: a member the holder has not heard from for this long
	// is replaced (Hooks.Regroup). Default 30 s.
	RegroupAfter time.Duration
	// MoveAfter: a host outside the group that ranks above the holder gets
	// the agent (Hooks.Review, Regroup) only once it has been reachable
	// this long, so a node that restarts often does not pull agents back
	// and forth. Default 30 s.
	MoveAfter time.Duration
	// HeadRefresh: a holder republishes its agent's head record at least
	// this often (and on every change of holder or epoch), never more
	// often than it commits. Capped by the agent's lease term. Default 1
	// min: once per default lease term (each record is a DHT walk and a
	// verification at ~20 nodes; D44, D70).
	HeadRefresh time.Duration
	// PairLeases: leases renewed by one beat per node pair for all the
	// groups two nodes share (lease/pairs.go, D69), when the Net carries
	// pair messages (PairNet). Off: a heartbeat round per group. On in
	// DefaultTiming.
	PairLeases bool
	// OrphanAfter: a member that has heard no holder for this long asks
	// whether its group still exists (the node's eviction check: a member
	// cut off during a regroup never received its leave). Default 1 min.
	OrphanAfter time.Duration
}

// DefaultTiming is the timing igor-node daemons use.
func DefaultTiming() Timing {
	return Timing{Interval: 100 * time.Millisecond, HeartbeatTicks: 5, LeaseTicks: 15, DriftTicks: 3, WaitTicks: 18, StaggerTicks: 3, RetryTicks: 10, GraceTicks: 18,
		RegroupAfter: 30 * time.Second, MoveAfter: 30 * time.Second, HeadRefresh: time.Minute, OrphanAfter: time.Minute,
		PairLeases: true}
}

// ErrTickTooLong: an agent whose ticks are not journaled has a tick
// timeout longer than a tick may run under the custody lease.
var ErrTickTooLong = errors.New("custody: tick_timeout_ms too long for an unjournaled tick under the custody lease")

// MaxUnjournaledTick is the longest tick timeout an agent without a tick
// journal may have under timing t: a holder starts such a tick only when
// the lease outlasts the whole timeout (its checkpoint, written after a run
// of ticks, is its only output), and right after a renewal the lease has
// LeaseTicks left, a heartbeat interval before the next renewal. Longer
// timeouts would start ticks only by luck, or (≥ a lease) never.
func (t Timing) MaxUnjournaledTick() time.Duration {
	return time.Duration(t.LeaseTicks-t.HeartbeatTicks) * t.Interval
}

// CheckManifest refuses a manifest whose agent could not tick under this
// node's custody timing (ErrTickTooLong), saying what to change.
func (m *Manager) CheckManifest(man *agents.Manifest) error {
	limit := m.cfg.Timing.MaxUnjournaledTick()
	tt := time.Duration(man.ResourceLimits.TickTimeoutMs) * time.Millisecond
	if man.Journal || tt <= limit {
		return nil
	}
	return fmt.Errorf("%w: resource_limits.tick_timeout_ms is %d, at most %d here (the custody lease lasts %v and is renewed every %v, and an unjournaled tick must fit in it); lower tick_timeout_ms, or set \"journal\": true (every tick committed before the next; any timeout up to %d ms)",
		ErrTickTooLong, man.ResourceLimits.TickTimeoutMs, limit.Milliseconds(),
		time.Duration(m.cfg.Timing.LeaseTicks)*m.cfg.Timing.Interval, time.Duration(m.cfg.Timing.HeartbeatTicks)*m.cfg.Timing.Interval, agents.MaxTickTimeoutMs)
}

// Net is the network as the drivers see it.
type Net interface {
	// Send queues msg for msg.To about agent did. Best effort: it never
	// blocks and may drop (the protocol tolerates loss).
	Send(did string, gid GroupID, msg lease.Message)
	// Ensure makes checkpoint c of agent did present locally together with
	// what resuming it needs (its state, and every predecessor with its
	// state back to one in stop, or to seq 0), fetching from peers in the
	// order given. It checks that each checkpoint is one of did's with
	// valid signatures. stop holds checkpoint CIDs whose whole lineage is
	// known to be here; nil walks to seq 0.
	Ensure(ctx context.Context, did string, c cid.Cid, peers []string, stop map[string]bool) error
	// Push sends, best effort and without blocking, the blocks of the
	// head's checkpoint (the checkpoint and its state) to the members in
	// to, ahead of the messages sent after it, so their Ensure of it finds
	// them locally. It may skip large checkpoints (they are fetched). The
	// head is the one the runner committed, decoded: not read back.
	Push(did string, gid GroupID, head hosting.Head, to []string)
}

// Hooks connect the drivers to the node.
type Hooks struct {
	// Committed is called on the holder for every checkpoint a majority
	// stored; when Commit.Publish is set the node publishes the agent's
	// head record. It must not block.
	Committed func(Commit)
	// Review is called on the holder at each lease-term end (and at once
	// when the node drains) with the members that are live (this node and
	// those that acknowledge its heartbeats). It returns the peer the agent
	// should move to, or "" to keep it: a live member (handed off within the
	// group), or a host outside the group (the group is replaced by one that
	// includes it, through Regroup with Toward set). It runs on its own
	// goroutine with a 5 s context, and may do network I/O.
	Review func(ctx context.Context, did string, members []string, draining bool) string
	// Regroup replaces a custody group — because members are dead, or to
	// move the agent to a better host outside it: it is called on the
	// holder, on its own goroutine, once the agent is stopped and its final
	// checkpoint (Head, Seq, at Epoch) is committed. It must make a
	// majority of the old group leave (so the old group can never elect a
	// holder again), then place the agent with a new group that starts
	// above Epoch. It returns an error if the old group is untouched (the
	// holder then resumes the agent); once members left, it must finish or
	// report that the agent needs revive.
	Regroup func(p RegroupParams) error
	// Replace changes the group's members in place, without stopping the
	// agent (docs/PROTOCOL.md, "Membership change in place"): it is called
	// on the running holder when members are dead (Dead), or when a review
	// found the group below its replica count. It picks and prewarms new
	// hosts, makes them join (Manager.Join with JoinParams.Add, the joint
	// configuration from p.Conf) and returns the new member list, which the
	// holder then proposes. ErrNoChange: nothing to replace or fill. Off the
	// driver goroutine, with a 1 min context.
	Replace func(ctx context.Context, p ReplaceParams) ([]string, error)
	// Deleted is called on the holder, on its own goroutine, once the
	// checkpoint carrying the owner's delete record is committed: the node
	// asks the other members to leave and leaves itself (keys, heads and
	// pins dropped; the blocks go at the next garbage collection). Nil: the
	// holder only leaves.
	Deleted func(did string, members []string)
}

// ErrNoChange: Hooks.Replace found nothing to replace or fill.
var ErrNoChange = errors.New("custody: no membership change needed")

// ReplaceParams is what Hooks.Replace is asked to do.
type ReplaceParams struct {
	DID     string
	Head    cid.Cid // the latest committed checkpoint: new members start from it
	Seq     uint64
	Epoch   uint64 // the holder's epoch
	Key     ed25519.PrivateKey
	Group   Group    // the group's record (its ID fields go to new members)
	Members []string // the current members
	Dead    []string // members not heard from for RegroupAfter
	// Conf reserves the joint configuration the holder will propose for
	// members (lease.Machine.JoinConf, on the driver's goroutine): what
	// the new members join with. Call it once the member list is final.
	Conf func(ctx context.Context, members []string) (lease.Conf, error)
}

// Commit is a checkpoint a majority of the group stored (Hooks.Committed).
type Commit struct {
	DID   string
	CID   cid.Cid
	Seq   uint64
	Epoch uint64 // the holder's lease epoch
	// Head is the checkpoint itself when this holder made it (no re-read
	// needed); nil for a recovery checkpoint a takeover committed.
	Head *agents.Checkpoint
	Key  ed25519.PrivateKey
	// Latency is the time from the proposal to the majority (0 for a
	// recovery checkpoint).
	Latency time.Duration
	// Publish: the head record is due — the first commit of this holder's
	// epoch, the first checkpoint it made itself, or Timing.HeadRefresh
	// since the last publication. Head records follow custody changes,
	// not every commit (live progress comes from the holder itself).
	Publish bool
	// Until is when the holder will have republished by, if it keeps the
	// lease: its lease end plus the refresh interval (the record's lease
	// expiry; revive waits for it).
	Until time.Time
}

// RegroupParams is what Hooks.Regroup is asked to do.
type RegroupParams struct {
	DID     string
	Head    cid.Cid // the committed final checkpoint
	Seq     uint64
	Epoch   uint64 // the old group's epoch; the new group starts above it
	Key     ed25519.PrivateKey
	Members []string // the old group
	Dead    []string // members not heard from for RegroupAfter
	Toward  string   // a voluntary move: the non-member the agent should run on next
}

// Blocks is the part of the content store the drivers use.
type Blocks interface {
	Pin(c cid.Cid) error
	Unpin(c cid.Cid) error
}

// Keys is the part of the keystore the drivers use.
type Keys interface {
	Put(priv ed25519.PrivateKey) (string, error)
	Get(did string) (ed25519.PrivateKey, error)
	Delete(did string) error
}

// Runner is the part of the hosting service the drivers use
// (*hosting.Service implements it): start an agent under a lease, stop it,
// forget it.
type Runner interface {
	Accept(ctx context.Context, l hosting.Lease) (hosting.Status, error)
	Stop(ctx context.Context, did string, final bool) (hosting.Head, error)
	Forget(did string) error
	// ControlHead reads checkpoint c and checks that an owner's record may
	// be applied on it; Control writes the checkpoint applying it at epoch
	// (hosting.ApplyControl), the agent not running.
	ControlHead(c cid.Cid, ctl *agents.Control) (hosting.Head, error)
	Control(head hosting.Head, key ed25519.PrivateKey, epoch uint64, ctl *agents.Control) (hosting.Head, error)
}

// Config configures a Manager. Dir, Self, Service, Blocks, Keys and Net are
// required.
type Config struct {
	Dir     string // HOME/custody
	Self    string // this node's peer ID
	Service Runner
	Blocks  Blocks
	Keys    Keys
	Net     Net
	Hooks   Hooks
	Timing  Timing // zero: DefaultTiming
	Logger  *slog.Logger
	// Syncer, if set, makes lease-state writes durable in groups with the
	// node's other writes on the same filesystem (the content store's).
	Syncer *atomicfile.Syncer
	// Meta, if set, keeps the lease states of all groups in one log
	// (the content store's pack) instead of a file per group.
	Meta Meta
}

func (c *Config) validate() error {
	switch {
	case c.Dir == "":
		return errors.New("custody: Config.Dir is required")
	case c.Self == "":
		return errors.New("custody: Config.Self is required")
	case c.Service == nil || c.Blocks == nil || c.Keys == nil || c.Net == nil:
		return errors.New("custody: Config.Service, Blocks, Keys and Net are required")
	}
	if c.Timing == (Timing{}) {
		c.Timing = DefaultTiming()
	}
	if c.Timing.RegroupAfter == 0 {
		c.Timing.RegroupAfter = 30 * time.Second
	}
	if c.Timing.MoveAfter == 0 {
		c.Timing.MoveAfter = 30 * time.Second
	}
	if c.Timing.HeadRefresh == 0 {
		c.Timing.HeadRefresh = time.Minute
	}
	if c.Timing.OrphanAfter == 0 {
		c.Timing.OrphanAfter = time.Minute
	}
	if c.Timing.Interval <= 0 {
		return fmt.Errorf("custody: Timing.Interval %v must be positive", c.Timing.Interval)
	}
	if c.Timing.RegroupAfter < 0 || c.Timing.MoveAfter < 0 || c.Timing.HeadRefresh < 0 || c.Timing.OrphanAfter < 0 {
		return fmt.Errorf("custody: Timing.RegroupAfter %v, MoveAfter %v, HeadRefresh %v and OrphanAfter %v must not be negative",
			c.Timing.RegroupAfter, c.Timing.MoveAfter, c.Timing.HeadRefresh, c.Timing.OrphanAfter)
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Hooks.Committed == nil {
		c.Hooks.Committed = func(Commit) {}
	}
	if c.Hooks.Regroup == nil {
		c.Hooks.Regroup = func(RegroupParams) error {
			return errors.New("custody: no regroup hook")
		}
	}
	if c.Hooks.Replace == nil {
		c.Hooks.Replace = func(context.Context, ReplaceParams) ([]string, error) { return nil, ErrNoChange }
	}
	if c.Hooks.Review == nil {
		c.Hooks.Review = func(context.Context, string, []string, bool) string { return "" }
	}
	// The lease parameters are checked by lease.New for each group.
	_, err := lease.New(c.Timing.leaseConfig(c.Self, []string{c.Self}, 0, lease.HardState{}, 0))
	return err
}

// replaceSlots bounds the membership changes (Hooks.Replace) a node runs
// at once.
const replaceSlots = 2

// neverQuiet: a member of a group that has not started never campaigns on
// its own: only the member the publisher kicks (Manager.Campaign) does, and
// the others follow once they hear it. A group whose placement was undone
// (or only partly undone) thus stays inert instead of coming alive next to
// the group that replaced it. If the publisher dies between join and kick,
// the agent needs revive.
const neverQuiet = 1 << 30

func (t Timing) leaseConfig(self string, members []string, rank int, hs lease.HardState, quiet int) lease.Config {
	// Nobody campaigns on its own before a full wait after (re)joining: a
	// restarted member must learn the current holder first.
	return lease.Config{QuietTicks: quiet,
		Self: self, Group: members, Rank: rank,
		HeartbeatTicks: t.HeartbeatTicks, LeaseTicks: t.LeaseTicks, WaitTicks: t.WaitTicks,
		DriftTicks: t.DriftTicks, StaggerTicks: t.StaggerTicks, RetryTicks: t.RetryTicks, GraceTicks: t.GraceTicks,
		Rand: rand.Uint64, HardState: hs,
	}
}

// Manager runs the custody drivers of one node.
type Manager struct {
	cfg Config
	st  store

	ctx    context.Context
	cancel context.CancelFunc
	t0     time.Time // origin of the tick grid every driver's ticks lie on

	draining atomic.Bool

	regroups atomic.Int64 // Hooks.Regroup calls in flight (Drain waits for them)

	replaceSem chan struct{} // Hooks.Replace calls in flight (replaceSlots)

	mu      sync.Mutex // guards drivers, closed
	drivers map[string]*driver
	closed  bool

	// now and spawn are the clock and the way off the driver's goroutine
	// (time.Now, a goroutine); the driver transcripts replace both.
	now   func() time.Time
	spawn func(func())
	man   *manual // nil but in the driver transcripts

	engineDone chan struct{} // closed when runEngine returned
	pairs      *pairs        // nil without pair leases
	// votersGen counts changes of the groups' voters (driver.setVoters)
	// and of the set of drivers; peers caches pairPeers at a generation
	// (owned by the engine's goroutine).
	votersGen atomic.Uint64
	peers     struct {
		list []string
		gen  uint64
		ok   bool
	}
	inline atomic.Uint64 // EngineStats
	loops  atomic.Uint64
	// lateRounds: EngineStats.Late; lateLogged: the engine goroutine's
	// last warning of one (owned by runEngine).
	lateRounds atomic.Uint64
	lateLogged time.Time
	badMoves   atomic.Uint64 // phase moves refused (driver.to): bugs
}

// alignedNow is the first instant at or after now on the manager's tick
// grid: every driver's tick 0 lies on it, so the ticks (and heartbeat
// rounds) of all groups fall on the same instants and their frames to one
// peer share a write.
func (m *Manager) alignedNow() (time.Time, int64) {
	iv := m.cfg.Timing.Interval
	k := int64((m.now().Sub(m.t0) + iv - 1) / iv)
	return m.t0.Add(time.Duration(k) * iv), k
}

// NewManager returns a manager with no groups; call Restore to resume the
// groups persisted under cfg.Dir.
func NewManager(cfg Config) (*Manager, error) {
	return newManager(cfg, nil)
}

// manual makes a Manager whose drivers a test steps itself (the driver
// transcripts): no engine, no driver goroutines; its clock, its way off
// the drivers' goroutines and the lease machines' randomness are the
// test's.
type manual struct {
	now   func() time.Time
	spawn func(func())
	man   *manual // nil but in the driver transcripts
	rand  func() uint64
}

func newManager(cfg Config, man *manual) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{cfg: cfg, st: store{dir: cfg.Dir, sync: cfg.Syncer, meta: cfg.Meta}, ctx: ctx, cancel: cancel, drivers: map[string]*driver{},
		replaceSem: make(chan struct{}, replaceSlots), engineDone: make(chan struct{}),
		now: time.Now, spawn: func(f func()) { go f() }, man: man}
	if man != nil {
		m.now, m.spawn = man.now, man.spawn
	}
	m.t0 = m.now()
	if pn, ok := cfg.Net.(PairNet); ok && cfg.Timing.PairLeases {
		p, err := newPairs(m, pn)
		if err != nil {
			cancel()
			return nil, err
		}
		m.pairs = p
	}
	if man != nil {
		close(m.engineDone)
	} else {
		go m.runEngine()
	}
	return m, nil
}

// Restore resumes every group persisted under Dir as a follower (a
// restarted member waits a full lease wait before it promises anything).
// Groups whose files or key cannot be read are skipped and reported in the
// joined error; the others run.
func (m *Manager) Restore() error {
	ids, err := m.st.list()
	if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		_, _ = atomicfile.RemoveStale(filepath.Join(m.st.dir, id)) // a crash's leftovers
		g, err := m.st.loadGroup(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := m.st.migrate(g.Agent); err != nil {
			errs = append(errs, fmt.Errorf("custody group of %s: moving its lease state into the node's log: %w", g.Agent, err))
			continue
		}
		hs, err := m.st.loadHardState(g.Agent)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		key, err := m.cfg.Keys.Get(g.Agent)
		if err != nil {
			errs = append(errs, fmt.Errorf("custody group of %s: agent key: %w", g.Agent, err))
			continue
		}
		if hs.Accepted.ID == "" {
			hs.Accepted = lease.Checkpoint{ID: g.Genesis}
		}
		// The pin follows the accepted checkpoint lazily (driver.repin): the
		// one persisted may not be pinned yet, and after a long downtime the
		// GC grace period no longer protects it.
		if c, err := cid.Decode(hs.Accepted.ID); err == nil {
			if err := m.cfg.Blocks.Pin(c); err != nil {
				errs = append(errs, fmt.Errorf("custody group of %s: pin accepted checkpoint: %w", g.Agent, err))
				continue
			}
		}
		quiet := m.cfg.Timing.WaitTicks
		if hs.Epoch <= g.StartEpoch {
			quiet = neverQuiet // the group never started: wait for the kick
		}
		if err := m.start(g, key, hs, false, quiet, false); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// JoinParams describe a new membership.
type JoinParams struct {
	Group *Group
	Key   ed25519.PrivateKey // the agent key, escrowed to every member
	// Head is the checkpoint the group starts from (Group.Genesis) and its
	// seq; its blocks must already be in the store, verified.
	Seq uint64
	// Epoch is the starting checkpoint's epoch (non-zero when an agent is
	// revived from a lineage that already had holders): the group's first
	// holder campaigns above it.
	Epoch uint64
	// Campaign: this member asks for the first lease at once (the
	// publisher's choice of first holder).
	Campaign bool
	// Released: the group replaces one whose holder stopped at Epoch and
	// which a majority left (a regroup), so no lease at Epoch can depend on
	// this member: it need not wait out a lease before promising
	// (lease.Config.Released). Never for a revive.
	Released bool
	// Add: this node joins a running group as a member added in place
	// (Hooks.Replace on its holder). Group then is the group's record as
	// its members have it (same ID).
	Add *AddParams
}

// AddParams describe a membership added in place.
type AddParams struct {
	Head  cid.Cid    // the holder's committed checkpoint, its blocks here and verified
	Seq   uint64     // its seq
	Epoch uint64     // the holder's epoch
	Conf  lease.Conf // the joint configuration the holder proposes, including this node
}

// Join makes this node a member of a new custody group: it stores the key
// (0600) and the group durably, pins the starting checkpoint and starts
// the driver. It returns ErrBadGroup, ErrExists, ErrClosed.
func (m *Manager) Join(p JoinParams) error {
	g := p.Group
	if err := g.validate(); err != nil {
		return err
	}
	if p.Add != nil {
		if p.Add.Conf.Index == 0 || !slices.Contains(p.Add.Conf.Members, m.cfg.Self) || p.Add.Epoch == 0 {
			return fmt.Errorf("%w: an added member needs the holder's epoch and a changed configuration that includes it (%s)", ErrBadGroup, p.Add.Conf)
		}
	} else if _, ok := slices.BinarySearch(g.Members, m.cfg.Self); !ok {
		return fmt.Errorf("%w: this node %s is not in the member list", ErrBadGroup, m.cfg.Self)
	}
	if len(p.Key) != ed25519.PrivateKeySize || agents.DID(p.Key.Public().(ed25519.PublicKey)) != g.Agent {
		return fmt.Errorf("%w: the escrowed key is not the key of %s", ErrBadGroup, g.Agent)
	}
	if p.Add == nil {
		g.StartEpoch = p.Epoch
	}
	m.mu.Lock()
	old, exists := m.drivers[g.Agent]
	m.mu.Unlock()
	if exists {
		// A newer incarnation of the agent's group (a regroup or revive
		// placed it above the epoch this membership reached) replaces a
		// membership whose group the others have left; anything else is a
		// duplicate or stale offer.
		st := old.snapshot()
		// A repeated add (the holder's first attempt was not proposed)
		// replaces an added membership that never heard a holder.
		readd := p.Add != nil && old.gid == g.ID() && st.Conf > 0 && st.LastHeard.IsZero() && !st.Running
		if !readd && (old.gid == g.ID() || g.StartEpoch < st.Epoch || st.Running || p.Add != nil) {
			return fmt.Errorf("%w: %s (group %s at epoch %d)", ErrExists, g.Agent, old.gid, st.Epoch)
		}
		m.cfg.Logger.Info("custody: a newer group replaces this membership", "agent", g.Agent, "old group", old.gid, "epoch", st.Epoch, "new start epoch", g.StartEpoch)
		if err := m.Leave(g.Agent, ""); err != nil {
			return err
		}
	} else if _, err := m.st.loadGroup(agents.AgentID(g.Agent)); err == nil {
		return fmt.Errorf("%w: %s (persisted)", ErrExists, g.Agent)
	}
	head, err := cid.Decode(g.Genesis)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadGroup, err)
	}
	hs := lease.HardState{Epoch: p.Epoch, Accepted: lease.Checkpoint{Seq: p.Seq, ID: g.Genesis}, AcceptedAt: p.Epoch}
	if p.Add != nil {
		// The committed checkpoint with the joint configuration the holder
		// reserved, accepted at the holder's epoch: this fresh state then
		// never promises an epoch a former incarnation of this node
		// promised, and its vote never counts in a configuration older
		// than the one it joined (at ballot 0, a re-added member's vote
		// with a stale member's made a majority of the founding members and
		// lost a committed checkpoint in the simulator).
		head = p.Add.Head
		hs = lease.HardState{Epoch: p.Add.Epoch, Accepted: lease.Checkpoint{Seq: p.Add.Seq, ID: head.String()}, AcceptedAt: p.Add.Epoch, Conf: p.Add.Conf}
	}
	if err := m.cfg.Blocks.Pin(head); err != nil {
		return err
	}
	if _, err := m.cfg.Keys.Put(p.Key); err != nil {
		return err
	}
	// The lease state goes first, unflushed: the group record makes the
	// membership, and its flush makes the lease state before it in the
	// same log durable too, so a durable group always has its lease state
	// (a missing one is then damage: ErrNoLeaseState).
	if err := m.st.saveHardStateDeferred(g.Agent, hs); err != nil {
		return err
	}
	if err := m.st.saveGroup(g); err != nil {
		return err
	}
	return m.start(g, p.Key, hs, p.Campaign, neverQuiet, p.Released)
}

// Campaign asks this member to campaign for the lease now (the publisher's
// choice of first holder, once every member joined). It returns
// ErrNotMember; a live lease makes the campaign a no-op (lease.ErrLeaseLive,
// logged by the driver).
func (m *Manager) Campaign(did string) error {
	m.mu.Lock()
	d, ok := m.drivers[did]
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotMember, did)
	}
	if !d.send(m.ctx, event{kind: evCampaign}) {
		return ErrClosed
	}
	return nil
}

// Leave ends this node's membership: the driver stops (and the agent, if it
// runs here), the group's files and the agent key are deleted, durably
// before Leave returns — so a node that left never promises for the group
// again. from is the peer asking ("" or Self: this node): only the group's
// publisher before its first epoch (to undo a placement) or the holder this
// member follows (to regroup) may ask; others get ErrNotAllowed.
func (m *Manager) Leave(did, from string) error {
	m.mu.Lock()
	d, ok := m.drivers[did]
	if ok && from != "" && from != m.cfg.Self {
		st := d.snapshot()
		// The publisher may undo a placement before the group's first
		// epoch, the holder that added this node in place may undo the add
		// before it took effect (no value accepted from a holder yet), and
		// the holder this member follows may ask it to leave (a regroup).
		undoAdd := from == d.g.Publisher && st.LastHeard.IsZero() && st.Conf > 0
		if !(st.Epoch == d.g.StartEpoch && from == d.g.Publisher) && !undoAdd && !(from == st.Holder && st.Role == lease.Follower.String()) {
			m.mu.Unlock()
			return fmt.Errorf("%w: %s asked this node to leave the group of %s; only its holder (%s) may", ErrNotAllowed, from, did, st.Holder)
		}
	}
	delete(m.drivers, did)
	m.votersGen.Add(1)
	m.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %s", ErrNotMember, did)
	}
	d.cancel()
	<-d.done
	d.own.Lock() // an inline step may still be finishing
	acc, _ := d.mc.Accepted()
	pinned := d.pinned
	d.own.Unlock()
	for _, id := range []string{acc.ID, pinned} { // the pin may lag the accepted one
		if c, err := cid.Decode(id); err == nil {
			_ = m.cfg.Blocks.Unpin(c)
		}
	}
	_ = m.cfg.Service.Forget(did)
	if d.g.Publisher == m.cfg.Self {
		// The publisher keeps the key it created: it is what revives the
		// agent if every custodian dies.
		return m.st.remove(did)
	}
	return errors.Join(m.st.remove(did), m.cfg.Keys.Delete(did))
}

func (m *Manager) start(g *Group, key ed25519.PrivateKey, hs lease.HardState, campaign bool, quiet int, released bool) error {
	members := g.Members
	if hs.Conf.Index > 0 {
		members = slices.Sorted(slices.Values(append(slices.Clone(hs.Conf.Members), hs.Conf.Joint...)))
		members = slices.Compact(members)
	}
	ranked := hosting.Rank(agents.AgentID(g.Agent), members)
	rank := max(slices.Index(ranked, m.cfg.Self), 0) // 0 for a member removed before it left: it leaves at once
	cfg := m.cfg.Timing.leaseConfig(m.cfg.Self, g.Members, rank, hs, quiet)
	cfg.Released = released
	if m.man != nil {
		cfg.Rand = m.man.rand
	}
	aid, self := agents.AgentID(g.Agent), m.cfg.Self
	cfg.RankIn = func(members []string) int { return slices.Index(hosting.Rank(aid, members), self) }
	_, base := m.alignedNow() // newDriver's base: the same grid tick unless the clock crossed one
	if m.pairs != nil {
		cfg.Pairs = groupPairs{p: m.pairs, base: base}
	}
	mc, err := lease.New(cfg)
	if err != nil {
		return fmt.Errorf("custody group of %s: %w", g.Agent, err)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return ErrClosed
	}
	if _, ok := m.drivers[g.Agent]; ok {
		return fmt.Errorf("%w: %s", ErrExists, g.Agent)
	}
	d := newDriver(m, g, key, mc, ranked, base)
	if campaign {
		d.phase = phCampaign
	}
	m.drivers[g.Agent] = d
	m.votersGen.Add(1)
	if m.man != nil {
		go d.manual() // the test steps it
		return nil
	}
	go d.loop()
	return nil
}

// Deliver steps an incoming message in the agent's driver (inline when it is
// quiet, engine.go; else through its inbox). from must be the
// authenticated sender; a message whose From differs is refused. It
// returns ErrNotMember when this node has no group for did; a full inbox
// drops the message (loss is part of the protocol's model).
func (m *Manager) Deliver(did string, gid GroupID, from string, msg lease.Message) error {
	if msg.Type == lease.MsgPairBeat || msg.Type == lease.MsgPairAck {
		return fmt.Errorf("%w: a pair message in a group's frame", lease.ErrInvalidMessage)
	}
	if msg.From != from {
		return fmt.Errorf("%w: message claims to be from %s, the stream is from %s", lease.ErrInvalidMessage, msg.From, from)
	}
	if msg.To != m.cfg.Self {
		return fmt.Errorf("%w: message for %s delivered to %s", lease.ErrInvalidMessage, msg.To, m.cfg.Self)
	}
	m.mu.Lock()
	d, ok := m.drivers[did]
	m.mu.Unlock()
	if !ok || d.gid != gid {
		return fmt.Errorf("%w: %s (group %s)", ErrNotMember, did, gid)
	}
	if d.stepInline(&msg) {
		return nil
	}
	if !d.trySend(event{kind: evMsg, msg: msg}) {
		m.cfg.Logger.Debug("custody inbox full; message dropped", "agent", did, "from", from)
	}
	return nil
}

// DeliverPair steps a pair message (lease/pairs.go) from the authenticated
// peer from. Without pair leases it returns ErrNotMember (the sender's
// node has them on and this one not: its beats are dropped, and its
// groups here renew by per-group rounds). A message that is not a valid
// pair message returns lease.ErrInvalidMessage.
func (m *Manager) DeliverPair(from string, msg lease.Message) error {
	if m.pairs == nil {
		return fmt.Errorf("%w: pair leases are off here", ErrNotMember)
	}
	if err := m.pairs.deliver(from, msg); err != nil {
		return fmt.Errorf("%w: pair message from %s: %v", lease.ErrInvalidMessage, from, err)
	}
	return nil
}

// Status is one membership as this node sees it.
type Status struct {
	DID         string   `json:"did"`
	Role        string   `json:"role"` // follower, candidate, holder
	Running     bool     `json:"running"`
	Epoch       uint64   `json:"epoch"`
	AcceptedSeq uint64   `json:"accepted_seq"`
	Accepted    string   `json:"accepted"`
	AcceptedAt  uint64   `json:"accepted_at"`
	Committed   string   `json:"committed,omitempty"`
	Holder      string   `json:"holder,omitempty"` // latest holder heard from (or this node)
	Members     []string `json:"members"`
	// Conf is the index of the lease configuration Members come from (0:
	// the founding members; each change in place adds one).
	Conf     uint64    `json:"conf,omitempty"`
	LeaseEnd time.Time `json:"lease_end,omitzero"`
	// Moving: this holder is handing the agent off or regrouping it (the
	// agent is stopped here and not yet running elsewhere).
	Moving bool `json:"moving,omitempty"`
	// Phase: what the driver is doing about the agent (idle, campaign,
	// starting, holding, changing, handoff, regroup, regrouping, leaving,
	// failed; DECISIONS D56).
	Phase string `json:"phase"`
	// Since: when this membership's driver started (join or restart).
	// LastHeard: when it last heard its holder (the holder: now). Started:
	// the group has had a holder (epoch above its start).
	Since     time.Time `json:"since"`
	LastHeard time.Time `json:"last_heard,omitzero"`
	Started   bool      `json:"started"`
	Error     string    `json:"error,omitempty"`
}

// Status lists every membership, by DID.
func (m *Manager) Status() []Status {
	m.mu.Lock()
	ds := make([]*driver, 0, len(m.drivers))
	for _, d := range m.drivers {
		ds = append(ds, d)
	}
	m.mu.Unlock()
	out := make([]Status, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DID < out[j].DID })
	return out
}

// Agent reports one membership, or ErrNotMember.
func (m *Manager) Agent(did string) (Status, error) {
	m.mu.Lock()
	d, ok := m.drivers[did]
	m.mu.Unlock()
	if !ok {
		return Status{}, fmt.Errorf("%w: %s", ErrNotMember, did)
	}
	return d.snapshot(), nil
}

// Control applies an owner's control record (stop, start, top-up) to an
// agent this node holds: the agent stops with a final checkpoint, the
// checkpoint carrying the record follows it, and once the group committed
// it the agent runs again unless stopped (docs/PROTOCOL.md, "Owner
// control"). It returns the committed checkpoint's ID, or ErrNotMember,
// ErrNotHolder (naming the holder known here), ErrBusy, or an
// agents.ErrControl error for a record that may not be applied.
func (m *Manager) Control(ctx context.Context, did string, ctl *agents.Control) (string, error) {
	return retryInsideTick(ctx, controlRetry, func() (string, error) { return m.control(ctx, did, ctl) })
}

// controlRetry is how often Control tries again a record refused because
// the agent's head is inside a tick.
const controlRetry = 100 * time.Millisecond

// retryInsideTick calls try until it is not refused for a head inside a
// tick, or ctx ends (the last answer is returned). A journaled agent's head
// is inside a tick while an effect's intent is committed and its result is
// not: a stop that cut the intent's commit wait leaves the head there, and
// the driver runs the agent again to finish that tick (the effect with its
// journaled key). An owner cannot time a record around that, so the record
// waits for it rather than fail; once refused for it, a driver busy
// restarting the agent (busyPhase) is waited out too.
func retryInsideTick(ctx context.Context, every time.Duration, try func() (string, error)) (string, error) {
	id, err := try()
	inside := false
	for {
		var busy busyPhase
		switch {
		case errors.Is(err, hosting.ErrInsideTick):
			inside = true
		case inside && errors.As(err, &busy):
		default:
			return id, err
		}
		select {
		case <-ctx.Done():
			return id, err
		case <-time.After(every):
		}
		id, err = try()
	}
}

func (m *Manager) control(ctx context.Context, did string, ctl *agents.Control) (string, error) {
	m.mu.Lock()
	d, ok := m.drivers[did]
	m.mu.Unlock()
	if !ok {
		return "", fmt.Errorf("%w: %s", ErrNotMember, did)
	}
	reply := make(chan controlDone, 1)
	if !d.send(ctx, event{kind: evControl, ctl: ctl, done: reply}) {
		return "", fmt.Errorf("custody: control of %s not queued: %w", did, context.Cause(ctx))
	}
	select {
	case r := <-reply:
		return r.id, r.err
	case <-d.done:
		return "", fmt.Errorf("%w: the driver of %s stopped", ErrClosed, did)
	case <-ctx.Done():
		return "", fmt.Errorf("custody: control of %s not answered in time (it may still be applied; check the agent's status): %w", did, ctx.Err())
	}
}

// Group returns a copy of the agent's custody group, or ErrNotMember.
func (m *Manager) Group(did string) (Group, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.drivers[did]
	if !ok {
		return Group{}, fmt.Errorf("%w: %s", ErrNotMember, did)
	}
	g := *d.g
	g.Members = slices.Clone(g.Members)
	return g, nil
}

// GroupID returns the ID of did's custody group on this node, computed once
// when its driver started (a push is checked against it per frame; a
// sha256 over the group each time was 4 % of a daemon at 25 nodes).
func (m *Manager) GroupID(did string) (GroupID, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.drivers[did]
	if !ok {
		return GroupID{}, fmt.Errorf("%w: %s", ErrNotMember, did)
	}
	return d.gid, nil
}

// Superseded tells the agent's driver that a committed checkpoint at epoch
// exists (seen in a head record). If that is above the epoch this node
// holds the agent at, the agent stops at once and is not restarted here
// for this lease (its lease cannot be renewed by a majority any more; the
// timing rule would stop it shortly anyway). It reports whether this node
// was running the agent at a lower epoch.
func (m *Manager) Superseded(did string, epoch uint64) bool {
	m.mu.Lock()
	d, ok := m.drivers[did]
	m.mu.Unlock()
	if !ok {
		return false
	}
	st := d.snapshot()
	if !st.Running || st.Epoch >= epoch {
		return false
	}
	d.send(m.ctx, event{kind: evSuperseded, epoch: epoch})
	return true
}

// Draining reports whether Drain was called.
func (m *Manager) Draining() bool { return m.draining.Load() }

// BeginDrain marks the node draining (it accepts no new custody and Review
// steers agents away) without waiting; Drain calls it first.
func (m *Manager) BeginDrain() { m.draining.Store(true) }

// Timing is the lease timing in use (defaults filled in).
func (m *Manager) Timing() Timing { return m.cfg.Timing }

// Drain hands every agent this node runs to another member of its group
// (each at a new epoch, from a final committed checkpoint; or to a new
// group when no member can take it) and waits until none runs or is being
// moved here, or ctx ends. The node keeps serving as a standby; it
// accepts no new holding (Review steers agents away from a draining node).
func (m *Manager) Drain(ctx context.Context) error {
	m.BeginDrain()
	for {
		m.mu.Lock()
		var running []*driver
		for _, d := range m.drivers {
			// A handoff or regroup in flight counts: returning then (and
			// the daemon exiting) would cut a regroup short after the old
			// group left, stranding the agent.
			if st := d.snapshot(); st.Running || st.Moving {
				running = append(running, d)
			}
		}
		m.mu.Unlock()
		// A regroup hook goes on after its driver left (placing the new
		// group): it must finish before the node may stop.
		if len(running) == 0 && m.regroups.Load() == 0 {
			return nil
		}
		for _, d := range running {
			d.trySend(event{kind: evReview})
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("custody: %d agent(s) still running or being moved here, %d regroup(s) placing a new group: %w", len(running), m.regroups.Load(), ctx.Err())
		case <-time.After(m.cfg.Timing.Interval * 5):
		}
	}
}

// Checkpoint stops every agent running here with a final checkpoint and
// waits (honouring ctx) until each one's group committed it: a node
// stopping with nowhere to hand its agents (no member reachable, or a
// group of one) keeps every tick they made. The agents stay held, not run,
// until the node stops. It returns how many final checkpoints were not
// committed when ctx ended (those agents resume from their last committed
// one).
func (m *Manager) Checkpoint(ctx context.Context) (uncommitted int, err error) {
	m.mu.Lock()
	ds := make([]*driver, 0, len(m.drivers))
	for _, d := range m.drivers {
		ds = append(ds, d)
	}
	m.mu.Unlock()
	var waits []chan controlDone
	for _, d := range ds {
		if !d.snapshot().Running {
			continue
		}
		done := make(chan controlDone, 1)
		if d.send(ctx, event{kind: evFinal, done: done}) {
			waits = append(waits, done)
		}
	}
	for _, w := range waits {
		select {
		case r := <-w:
			if r.err != nil {
				uncommitted++
			}
		case <-ctx.Done():
			return uncommitted + 1, ctx.Err()
		}
	}
	return uncommitted, nil
}

// Close stops every driver. An agent running here is stopped WITHOUT a
// final checkpoint: nothing uncommitted may look like a successor of the
// committed head; the next holder resumes from the last committed one.
// (Drain first to hand agents off without losing ticks.)
func (m *Manager) Close() error {
	m.mu.Lock()
	m.closed = true
	ds := make([]*driver, 0, len(m.drivers))
	for _, d := range m.drivers {
		ds = append(ds, d)
	}
	m.mu.Unlock()
	m.cancel()
	for _, d := range ds {
		<-d.done
	}
	<-m.engineDone
	return nil
}
