package custody

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

type evKind int

const (
	evMsg        evKind = iota + 1 // a message from a member
	evEnsured                      // a checkpoint fetch ended
	evCheckpoint                   // the running agent wrote a checkpoint locally (to propose)
	evExit                         // the running agent stopped by itself
	evReview                       // review placement now (drain)
	evCampaign                     // campaign now (first holder of a new group)
	evReviewed                     // a placement review ended: target in id
	evFilled                       // a lineage fetch ended
	evRegrouped                    // a regroup failed before any member left (err)
	evSuperseded                   // a head record at a higher epoch exists (epoch)
	evReplaced                     // Hooks.Replace ended: new members in members (err; toward in id)
	evJoinConf                     // Hooks.Replace reserves a configuration for members (answer on reply)
	evControl                      // an owner's control record to apply (ctl; answer on done)
	evFinal                        // the node stops: a final checkpoint, then hold (answer on done once committed)
)

// proposal is a checkpoint this holder made and proposed.
type proposal struct {
	at   time.Time // when (commit latency)
	head *agents.Checkpoint
}

type event struct {
	kind    evKind
	msg     lease.Message
	id      string // evEnsured: checkpoint ID
	err     error
	head    hosting.Head     // evCheckpoint
	epoch   uint64           // evSuperseded
	conf    lease.Conf       // evReplaced: the configuration the new members joined with
	members []string         // evReplaced, evJoinConf
	reply   chan joinConf    // evJoinConf
	ctl     *agents.Control  // evControl
	done    chan controlDone // evControl
}

// controlDone answers Manager.Control: the committed checkpoint's ID, or
// why the record was not applied.
type controlDone struct {
	id  string
	err error
}

type joinConf struct {
	conf lease.Conf
	err  error
}

const (
	inboxSize   = 256
	maxHeld     = 32               // messages held per checkpoint being fetched
	ensureLimit = 60 * time.Second // one checkpoint fetch
	stopLimit   = 30 * time.Second // waiting for a tick in flight (≤ tick_timeout) and a final checkpoint
)

// driver owns one agent's lease.Machine. Whoever holds own — the driver's
// loop goroutine, or the engine stepping it inline (engine.go) — touches
// the machine and the fields below it up to mu.
type driver struct {
	own sync.Mutex

	m       *Manager
	g       *Group
	gid     GroupID
	did     string
	key     ed25519.PrivateKey
	mc      *lease.Machine
	ranked  []string // current members in rendezvous order
	members []string // current members (lease configuration), sorted
	confIdx uint64   // the configuration index ranked and members follow

	t0       time.Time    // lease tick 0 on the monotonic clock
	base     int64        // t0 as a tick of the manager's grid
	leaseEnd atomic.Int64 // machine's LeaseEnd, for the runner's fence
	// view: with pair leases, the running holder's lease.LeaseView (nil
	// otherwise): the fence extends leaseEnd by the pair acknowledgements
	// since.
	view atomic.Pointer[lease.LeaseView]
	// follow: with pair leases, a quiet bound follower's wake as a function
	// of the pair table (lease.FollowerWake): the engine skips a wake the
	// holder's beats have moved, without the machine.
	follow atomic.Pointer[lease.FollowerWake]
	voters atomic.Value // []string: the configuration's voters (the peers to beat)
	inbox  chan *event  // pointers: an event is ~380 bytes, and 256 of them per group made a quarter of a daemon's heap
	// queued: events sent to inbox and not yet handled. Only with none
	// may a message be stepped inline (it would overtake them).
	queued atomic.Int32
	poke   chan struct{} // wakes the loop (capacity 1: never lost)
	// wake: the manager-grid tick at which the engine steps this quiet
	// driver next; never while the loop polls by itself.
	wake atomic.Int64
	// inl: a step runs inline; handle leaves a Ready that needs I/O
	// beyond sending (persist, stop, start, leave) pending for the loop.
	inl     bool
	pending bool
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}

	// phase: what the driver does about its agent (phase.go); the fields
	// after it are that phase's data.
	phase     phase
	startFrom lease.Checkpoint // phStarting: the committed checkpoint to run from
	target    string           // phHandoff: the member the lease goes to
	targetAt  time.Time        // phHandoff: since when
	change    lease.Conf       // phChanging: the configuration to propose
	changeBy  time.Time        // phChanging: given up after
	// phRegroup, phRegrouping: members not live (not asked to leave), and
	// the non-member host a voluntary move goes to.
	regroupDead []string
	regroupTo   string
	failed      error // phFailed: why
	// phControl: the checkpoint carrying the owner's record, its caller's
	// answer, and whether the agent runs once it is committed.
	ctlSeq    uint64
	ctlID     string
	ctlDone   chan controlDone
	ctlErr    error // the record could not be written: answered at the commit
	ctlResume bool
	ctlDelete bool // the record deletes the agent: the group is released after the commit
	// Manager.Checkpoint: the final checkpoint's seq and its caller.
	finalSeq  uint64
	finalDone chan controlDone
	jobs      jobs // work in flight off the goroutine (phase.go)

	// commits: the highest seq committed while this node ran the agent,
	// for the runner's AwaitCommit (a journaled agent waits for each tick).
	commits commitWatch
	// seenRole, seenEpoch: what handle logged last (debug).
	seenRole  lease.Role
	seenEpoch uint64

	complete map[string]uint64          // checkpoints whose lineage is here (their seqs): markComplete
	held     map[string][]lease.Message // messages waiting for their checkpoint's blocks
	fetching string                     // the held checkpoint whose fetch is in flight (one at a time)
	// fetchEpoch: the epoch of the message that started it; fetchCancel
	// ends it when a newer epoch's message comes.
	fetchEpoch  uint64
	fetchCancel context.CancelFunc
	pinned      string // the checkpoint we pinned (the accepted one, or one accepted up to repinEvery earlier)
	pinnedAt    time.Time
	started     bool // the agent runs here (the Runner has it)
	// reviewedAt: when the latest placement review started.
	reviewedAt time.Time
	deadSince  map[string]time.Time // holder: members not live, since when
	superseded uint64               // the lease epoch at which a higher-epoch head was seen: never start at it
	proposed   map[uint64]proposal  // seq → this holder's proposal not yet committed
	pubEpoch   uint64               // lease epoch of the last head-record publication
	pubOwn     bool                 // a checkpoint this holder made was published at pubEpoch
	pubAt      time.Time            // when the head record was last published
	holder     string
	heard      time.Time // when a holder's heartbeat was last stepped (follower)
	since      time.Time // when this driver started
	lastStart  time.Time

	mu   sync.Mutex // guards snap
	snap Status
}

func newDriver(m *Manager, g *Group, key ed25519.PrivateKey, mc *lease.Machine, ranked []string, base int64) *driver {
	ctx, cancel := context.WithCancel(m.ctx)
	acc, _ := mc.Accepted()
	d := &driver{
		m: m, g: g, gid: g.ID(), did: g.Agent, key: key, mc: mc, ranked: ranked,
		inbox: make(chan *event, inboxSize), poke: make(chan struct{}, 1), ctx: ctx, cancel: cancel, done: make(chan struct{}),
		// Persisted Accepted always has its blocks here: a checkpoint is
		// stepped into the machine only after Ensure.
		complete:  map[string]uint64{acc.ID: acc.Seq, g.Genesis: 0},
		held:      map[string][]lease.Message{},
		proposed:  map[uint64]proposal{},
		deadSince: map[string]time.Time{},
		pinned:    acc.ID,
		since:     m.now(),
	}
	d.base = base
	d.t0 = m.t0.Add(time.Duration(base) * m.cfg.Timing.Interval)
	d.wake.Store(never)
	d.members = mc.Conf().Members
	d.setVoters(mc.Conf())
	d.confIdx = mc.Conf().Index
	d.publish()
	return d
}

// never: a wake tick the engine never reaches.
const never = math.MaxInt64

// send queues ev for the loop, waiting while the inbox is full unless
// the driver stops or ctx ends; it reports whether ev was queued.
func (d *driver) send(ctx context.Context, ev event) bool {
	d.queued.Add(1)
	select {
	case d.inbox <- &ev:
		return true
	case <-d.ctx.Done():
	case <-ctx.Done():
	}
	d.queued.Add(-1)
	return false
}

// trySend queues ev unless the inbox is full.
func (d *driver) trySend(ev event) bool {
	d.queued.Add(1)
	select {
	case d.inbox <- &ev:
		return true
	default:
		d.queued.Add(-1)
		return false
	}
}

// kick wakes the loop.
func (d *driver) kick() {
	select {
	case d.poke <- struct{}{}:
	default:
	}
}

// followConf updates the member lists after the lease configuration
// changed (a membership change in place).
func (d *driver) followConf() {
	c := d.mc.Conf()
	if c.Index == d.confIdx {
		return
	}
	d.confIdx, d.members = c.Index, c.Members
	all := d.setVoters(c)
	d.ranked = hosting.Rank(agents.AgentID(d.did), all)
	for p := range d.deadSince {
		if !slices.Contains(all, p) {
			delete(d.deadSince, p)
		}
	}
	d.m.cfg.Logger.Info("custody: group members changed in place", "agent", d.did, "configuration", c.String(), "epoch", d.mc.Epoch())
}

func (d *driver) log() *slogLogger { return &slogLogger{d} }

// fence is the runner's lease end in local time (hosting.RunOptions.Fence).
// With pair leases it is computed now, from the holder's frozen view and
// the pair acknowledgements since (the machine is not consulted: its owner
// may be waiting for this runner).
func (d *driver) fence() time.Time {
	end := d.leaseEnd.Load()
	if v := d.view.Load(); v != nil && end > 0 {
		now := int64(d.m.now().Sub(d.t0) / d.m.cfg.Timing.Interval)
		acks := fenceAcks{a: d.m.pairs.acks.Load(), base: d.base, now: d.m.pairs.nowTick()}
		end = max(end, v.End(acks, now))
	}
	return d.t0.Add(time.Duration(end) * d.m.cfg.Timing.Interval)
}

// setVoters publishes c's voters (members and joint, sorted) and returns
// them; the slice is shared and never modified.
func (d *driver) setVoters(c lease.Conf) []string {
	v := slices.Compact(slices.Sorted(slices.Values(append(slices.Clone(c.Members), c.Joint...))))
	d.voters.Store(v)
	d.m.votersGen.Add(1) // after the Store: a rebuild at the new generation sees v
	return v
}

// setLease publishes the machine's lease end (and view) for the fence.
func (d *driver) setLease() {
	d.view.Store(d.mc.LeaseView())
	d.leaseEnd.Store(d.mc.LeaseEnd())
}

func (d *driver) loop() {
	defer close(d.done)
	defer d.shutdown()
	d.own.Lock()
	if d.mc.Removed() {
		// Restarted after persisting its removal, before the Leave ran.
		d.leave()
	}
	tick := time.NewTimer(time.Hour)
	defer tick.Stop()
	d.schedule(tick)
	d.own.Unlock()
	term := time.NewTicker(time.Duration(d.g.TermMs) * time.Millisecond)
	defer term.Stop()
	for {
		var ev *event
		termEnd := false
		select {
		case <-d.ctx.Done():
			return
		case <-tick.C:
		case <-d.poke:
		case <-term.C:
			termEnd = true
		case ev = <-d.inbox:
		}
		d.own.Lock()
		d.m.loops.Add(1)
		if ev != nil {
			d.queued.Add(-1)
		}
		if d.phase == phFailed {
			d.own.Unlock()
			<-d.ctx.Done()
			return
		}
		d.iterate(ev, termEnd)
		d.schedule(tick)
		d.own.Unlock()
	}
}

// manual stands in for loop when a test steps the driver (Manager.man):
// it only ends the driver as loop does.
func (d *driver) manual() {
	defer close(d.done)
	defer d.shutdown()
	<-d.ctx.Done()
}

// iterate is one turn of the driver's loop, with ownership held: the
// Ready an inline step left, a requested campaign, the clock, the event
// (or the lease term's end), then the checks every step is followed by.
func (d *driver) iterate(ev *event, termEnd bool) {
	if d.pending {
		// A Ready an inline step left for this goroutine (engine.go):
		// handled before anything else is stepped.
		d.pending = false
		d.handle()
	}
	d.tryCampaign()
	d.catchUp()
	if termEnd {
		d.review()
	}
	if ev != nil {
		d.on(*ev)
	}
	d.after()
}

// after runs the checks every step is followed by (on the driver's
// goroutine or inline), and publishes the status.
func (d *driver) after() {
	d.leaseEnded()
	switch d.phase {
	case phHandoff:
		d.tryTransfer()
	case phChanging:
		d.tryChange()
	case phRegroup:
		d.tryRegroup()
	case phControl:
		d.tryControl()
	case phStarting:
		if d.m.now().Sub(d.lastStart) >= startRetry {
			d.tryStart()
		}
	case phHolding:
		d.tryFinal()
		if d.started && d.m.draining.Load() && d.m.now().Sub(d.reviewedAt) >= drainReviewEvery {
			d.reviewFor(true) // a draining holder keeps looking for a way out
		}
	}
	d.leaseEnded()
	d.watchMembers()
	d.publish()
}

// leaseEnded ends a holder's phase once the lease machine no longer runs
// the agent (stepped down, transferred, lapsed): whatever the holder was
// doing ends with the lease.
func (d *driver) leaseEnded() {
	if !d.phase.holding() || d.mc.Running() {
		return
	}
	if d.phase == phChanging {
		d.log().warn("membership change abandoned", fmt.Errorf("configuration %s not proposed: the lease ended", d.change))
	}
	if d.finalDone != nil {
		d.finalDone <- controlDone{err: fmt.Errorf("%w: the lease ended before the final checkpoint (seq %d) was committed", ErrBusy, d.finalSeq)}
		d.finalDone = nil
	}
	if d.phase == phControl {
		d.answerControl(fmt.Errorf("%w: the lease ended before checkpoint %s (seq %d) carrying the record was committed; the next holder has it if a majority stored it — check the agent's status before sending a new record", ErrBusy, d.ctlID, d.ctlSeq))
	}
	d.to(phIdle)
}

// to moves the driver to phase p, if that is a move of the phase machine
// (phase.go); any other is a bug: refused, logged and counted
// (Manager.badMoves, which the tests check).
func (d *driver) to(p phase) bool {
	if !canMove(d.phase, p) {
		d.m.badMoves.Add(1)
		d.m.cfg.Logger.Error("custody: driver phase move refused (a bug)", "agent", d.did, "from", d.phase.String(), "to", p.String())
		return false
	}
	d.phase = p
	return true
}

// schedule arms the driver's own timer only while it is not quiet (a
// campaign, handoff, regroup, start retry or configuration change polls
// every tick); a quiet driver has none: the engine steps it at the
// machine's next active tick (wake).
func (d *driver) schedule(tick *time.Timer) {
	if d.setWake() {
		tick.Stop()
		return
	}
	tick.Reset(d.m.cfg.Timing.Interval)
}

// setWake records when the engine steps this driver next: at the
// machine's next active tick if it is quiet, never if not (its loop polls).
// It reports whether the driver is quiet.
func (d *driver) setWake() bool {
	if d.quiet() {
		d.follow.Store(d.mc.FollowerWake())
		d.wake.Store(d.base + d.mc.NextTick())
		return true
	}
	d.follow.Store(nil)
	d.wake.Store(never)
	return false
}

// quiet reports whether the driver's next steps are lease traffic only,
// which the engine may run inline (engine.go).
func (d *driver) quiet() bool {
	return !d.pending && d.phase.quiet()
}

// tryCampaign runs a requested campaign (first holder of a new or revived
// group) as soon as this node's view of the lease has lapsed, and again
// whenever an attempt gives up, until the group has a holder: this node,
// or one heard from. A new group never self-starts (D26), so one lost
// attempt (a member still joining, a promise dropped under load) would
// otherwise leave it without a holder for good.
func (d *driver) tryCampaign() {
	if d.phase != phCampaign {
		return
	}
	switch {
	case d.mc.Role() == lease.Holder, d.holder != "" && d.holder != d.m.cfg.Self:
		d.to(phIdle)
		return
	case d.mc.Role() == lease.Candidate:
		return // an attempt is running
	}
	if err := d.mc.Campaign(); err == nil {
		d.handle()
	}
}

// catchUp brings the machine to the monotonic clock's tick in one step
// (lease.Machine.TickTo), so a late timer or a slow handler never makes
// the lease last longer in real time, and a holder that wakes from a
// pause past its lease end steps down before it sends anything — it does
// not replay the heartbeat rounds it missed, which would renew the
// standbys' lapse timers and delay their takeover by a whole wait.
func (d *driver) catchUp() {
	target := int64(d.m.now().Sub(d.t0) / d.m.cfg.Timing.Interval)
	if d.mc.Now() < target && d.phase != phFailed {
		d.mc.TickTo(target)
		d.handle()
	}
}

func (d *driver) on(ev event) {
	switch ev.kind {
	case evMsg:
		d.step(ev.msg)
	case evEnsured:
		msgs := d.held[ev.id]
		delete(d.held, ev.id)
		if d.fetching == ev.id {
			d.fetching, d.fetchCancel = "", nil
		}
		if ev.err != nil {
			d.log().debug("fetch checkpoint "+ev.id, ev.err)
			d.fetchNext()
			return
		}
		if len(msgs) > 0 {
			d.markComplete(ev.id, msgs[0].Checkpoint.Seq)
		}
		for _, msg := range msgs {
			d.step(msg)
		}
		d.fetchNext()
	case evCheckpoint:
		if d.proposeHead(ev.head) {
			d.handle()
		}
	case evExit:
		// Budget exhausted or repeated failures: the final head was proposed
		// through evCheckpoint; the agent stays held (not running) so no other
		// member restarts it only to fail the same way.
		d.started = false
	case evReview:
		d.review()
	case evControl:
		d.control(ev.ctl, ev.done)
	case evFinal:
		d.final(ev.done)
	case evCampaign:
		if d.phase == phIdle {
			d.to(phCampaign)
		}
	case evReviewed:
		d.jobs.done(jobReview)
		switch {
		case ev.id == "" || ev.id == d.m.cfg.Self || slices.Contains(d.members, ev.id):
			d.handOff(ev.id)
		case d.phase == phStarting:
			// This holder cannot run the agent (no slot, draining) and no
			// member can: move the group to the outsider now — nothing runs
			// that a regroup would stop.
			d.startRegroup(nil, ev.id)
		default:
			// A host outside the group: fill the group in place if it is
			// short, or else move the group to it.
			d.replace(nil, ev.id)
		}
	case evSuperseded:
		if d.mc.Epoch() < ev.epoch && d.started {
			d.log().warn("a higher epoch holds the agent; stopping it here", fmt.Errorf("epoch %d above ours %d", ev.epoch, d.mc.Epoch()))
			d.stopAgent(false)
			d.superseded = d.mc.Epoch()
			if d.phase.holding() {
				d.to(phHolding)
			}
			// Give up the lease too, or a majority that still acknowledges
			// us would keep the agent stopped (a forged record must not
			// stall it): hand it to a live member, which campaigns above.
			if d.phase == phHolding {
				for _, p := range d.others() {
					if d.mc.Live(p) {
						d.target, d.targetAt = p, d.m.now()
						d.to(phHandoff)
						break
					}
				}
			}
		}
	case evJoinConf:
		var jc joinConf
		jc.conf, jc.err = d.mc.JoinConf(slices.Sorted(slices.Values(ev.members)))
		ev.reply <- jc // buffered
	case evReplaced:
		d.jobs.done(jobReplace)
		switch {
		case errors.Is(ev.err, ErrNoChange) && ev.id != "":
			d.startRegroup(nil, ev.id) // not short: a voluntary move to a better host outside
		case ev.err != nil && !errors.Is(ev.err, ErrNoChange):
			d.log().warn("replace members in place; keeping the group until the next review", ev.err)
		case ev.err == nil && d.phase == phHolding:
			d.change, d.changeBy = ev.conf, d.m.now().Add(changeLimit)
			d.to(phChanging)
			d.tryChange()
		case ev.err == nil:
			// The joined hosts find themselves outside the group and leave
			// ("Evicted members").
			d.log().warn("membership change abandoned", fmt.Errorf("configuration %s not proposed: the driver is %s", ev.conf, d.phase))
		}
	case evRegrouped:
		if d.phase != phRegrouping {
			return
		}
		// The old group is untouched: run the agent again here.
		d.log().warn("regroup failed; resuming the agent in its group", ev.err)
		if c := d.mc.Committed(); c.ID != "" && d.mc.Running() {
			d.startAgent(c)
		} else {
			d.to(phIdle)
		}
	case evFilled:
		d.jobs.done(jobFill)
		if ev.err != nil {
			d.log().warn("fetch missing lineage", ev.err)
		}
	}
}

// carries reports the checkpoint whose blocks must be here before msg may
// be stepped: a heartbeat's checkpoint is what a member acknowledges as
// stored, and a granted promise's may become the recovery checkpoint.
func carries(msg lease.Message) string {
	switch {
	case msg.Type == lease.MsgAppend:
		return msg.Checkpoint.ID
	case msg.Type == lease.MsgPromise && !msg.Reject:
		return msg.Checkpoint.ID
	}
	return ""
}

func (d *driver) step(msg lease.Message) {
	if id := carries(msg); id != "" && !d.isComplete(id) {
		d.hold(id, msg)
		// A heartbeat of the holder we already follow renews the lease at
		// once, acknowledging only what is stored here; the new checkpoint
		// is accepted when its blocks have arrived. So a large state that
		// takes longer to fetch than the lease lasts delays commits, not
		// the lease. (Never for a new epoch: its first round carries the
		// recovery checkpoint, which must be stored to be acknowledged.)
		acc, at := d.mc.Accepted()
		if msg.Type == lease.MsgAppend && msg.Epoch == at && msg.Epoch == d.mc.Epoch() && msg.Checkpoint.Seq > acc.Seq {
			hb := msg
			hb.Checkpoint = acc
			if err := d.mc.Step(hb); err == nil {
				d.holder, d.heard = msg.From, d.m.now()
				d.handle()
			}
		}
		return
	}
	if err := d.mc.Step(msg); err != nil {
		d.log().debug("lease message refused", err)
		return
	}
	if msg.Type == lease.MsgAppend && msg.Epoch >= d.mc.Epoch() {
		d.holder, d.heard = msg.From, d.m.now()
	}
	d.handle()
}

// hold parks msg until checkpoint id is here, and fetches it unless a
// fetch is in flight: one lineage fetch at a time per agent. A member that
// fell behind a journaled agent (a checkpoint per tick) hears of a new
// checkpoint with every message; a walk back to its accepted one for each
// of them piled up walks over the same hundreds of checkpoints, which all
// slowed down together and none finished (a restarted member stayed behind
// for the whole 60 s watched). After the walk in flight, the newest held
// checkpoint is fetched, and its walk stops at the one just completed.
func (d *driver) hold(id string, msg lease.Message) {
	msgs := d.held[id]
	if len(msgs) >= maxHeld {
		msgs = msgs[1:]
	}
	d.held[id] = append(msgs, msg)
	if d.fetching != "" && msg.Epoch > d.fetchEpoch && d.fetchCancel != nil {
		// A newer epoch's message: the fetch in flight serves one from an
		// older epoch, whose sender may be the holder that just died (a
		// restarted member's walk waited 15 s on it while the new epoch's
		// messages queued behind it). Its end (an error) starts the next.
		d.fetchCancel()
		d.fetchCancel = nil
	}
	d.fetchNext()
}

// fetchNext starts the fetch of the newest held checkpoint unless one is
// in flight.
func (d *driver) fetchNext() {
	if d.fetching != "" || len(d.held) == 0 {
		return
	}
	// Heartbeats naming a checkpoint no newer than the accepted one, at
	// its epoch, are stale (a newer one was accepted meanwhile): they would
	// only be acknowledged with the accepted seq, which later ones do.
	acc, at := d.mc.Accepted()
	for hid, msgs := range d.held {
		stale := true
		for _, m := range msgs {
			if m.Type != lease.MsgAppend || m.Epoch != at || m.Checkpoint.Seq > acc.Seq {
				stale = false
				break
			}
		}
		if stale {
			delete(d.held, hid)
		}
	}
	var id string
	var msg lease.Message
	for hid, msgs := range d.held {
		last := msgs[len(msgs)-1]
		newer := last.Epoch > msg.Epoch || last.Epoch == msg.Epoch && (last.Checkpoint.Seq > msg.Checkpoint.Seq || last.Checkpoint.Seq == msg.Checkpoint.Seq && hid < id)
		if id == "" || newer {
			id, msg = hid, last
		}
	}
	if id == "" {
		return
	}
	c, err := cid.Decode(id)
	if err != nil {
		delete(d.held, id)
		d.log().debug("message names a checkpoint that is not a CID", err)
		d.fetchNext()
		return
	}
	peers := []string{msg.From}
	for _, p := range d.ranked {
		if p != msg.From && p != d.m.cfg.Self {
			peers = append(peers, p)
		}
	}
	// The walk back stops at a checkpoint known complete here: the accepted
	// one (persisted only after its lineage was here), or one whose walk
	// completed — not at any block that happens to be present, which a
	// fetch cut short leaves behind.
	stop := make(map[string]bool, len(d.complete)+1)
	stop[acc.ID] = true
	for k := range d.complete {
		stop[k] = true
	}
	d.fetching, d.fetchEpoch = id, msg.Epoch
	ctx, cancel := context.WithTimeout(d.ctx, ensureLimit)
	d.fetchCancel = cancel
	d.m.spawn(func() {
		defer cancel()
		err := d.m.cfg.Net.Ensure(ctx, d.did, c, peers, stop)
		d.send(d.ctx, event{kind: evEnsured, id: id, err: err})
	})
}

// markComplete records that checkpoint id (at seq) and its lineage are
// here, and forgets those below the accepted one once there are many (a
// holder of a journaled agent adds one per tick).
func (d *driver) markComplete(id string, seq uint64) {
	d.complete[id] = seq
	if len(d.complete) <= maxComplete {
		return
	}
	acc, _ := d.mc.Accepted()
	for k, s := range d.complete {
		if s < acc.Seq {
			delete(d.complete, k)
		}
	}
}

// isComplete reports whether checkpoint id and its lineage are known here.
func (d *driver) isComplete(id string) bool {
	_, ok := d.complete[id]
	return ok
}

// maxComplete bounds the checkpoints a driver remembers as complete before
// it forgets those below the accepted one.
const maxComplete = 64

// handle carries out the machine's Ready in the order the protocol needs:
// persist, stop, committed, start, send (hosting/lease package docs).
func (d *driver) handle() {
	if r, e := d.mc.Role(), d.mc.Epoch(); r != d.seenRole || e != d.seenEpoch {
		// Elections, for a post-mortem of a slow takeover (debug only).
		d.seenRole, d.seenEpoch = r, e
		d.m.cfg.Logger.Debug("custody: lease role", "agent", d.did, "role", r.String(), "epoch", e, "phase", d.phase.String())
	}
	rd := d.mc.Ready()
	// Fence the runner first: a step-down takes effect for the next tick
	// even before the Stop below has waited for the one in flight.
	d.setLease()
	if rd.Empty() {
		return
	}
	if d.inl && (rd.Persist != nil || rd.Stop || rd.Start != nil || rd.Removed) {
		// Waits on disk or on the runner: the loop handles it, first
		// (nothing more is stepped inline until then).
		d.pending = true
		return
	}
	if rd.Persist != nil {
		if err := d.m.st.saveHardState(d.did, *rd.Persist); err != nil {
			// Without durable state this member could promise an epoch twice:
			// it stops taking part (nothing of this Ready is sent).
			d.failed = err
			d.to(phFailed)
			d.log().error("persist lease state; leaving the group until restarted", err)
			d.stopAgent(false)
			return
		}
	}
	if rd.Stop {
		if d.started {
			// Why a holder stopped is what tells churn under load (self-fenced)
			// from a takeover (fenced) or a handoff.
			d.m.cfg.Logger.Info("custody: stopping the agent", "agent", d.did, "epoch", d.mc.Epoch(), "why", rd.StopReason)
		}
		d.stopAgent(false)
	}
	for _, cp := range rd.Committed {
		d.committed(cp)
	}
	if rd.Start != nil {
		d.startAgent(*rd.Start)
	}
	for _, msg := range rd.Messages {
		if msg.Type == lease.MsgPromiseRequest || msg.Type == lease.MsgPromise {
			d.m.cfg.Logger.Debug("custody: election message", "agent", d.did, "msg", lease.DescribeMessage(msg))
		}
		d.m.cfg.Net.Send(d.did, d.gid, msg)
	}
	if rd.Removed && d.phase != phLeaving {
		d.m.cfg.Logger.Info("custody: removed from the group by a membership change; leaving", "agent", d.did, "configuration", d.mc.Conf().String())
		d.leave()
	}
	if rd.Persist != nil {
		d.followConf()
		// Pins only keep blocks from a garbage collection; they are not part
		// of the protocol's durability (the blocks are on disk before the
		// checkpoint is stepped), so their writes stay off the ack's path.
		d.repin(rd.Persist.Accepted.ID)
	}
	d.mc.Advance()
	d.setLease()
}

// committed reports a checkpoint a majority stored to Hooks.Committed,
// deciding whether the head record is due: on the first commit of an epoch
// (a new holder), on the first checkpoint this holder made itself (the
// record's epoch then moves up too), and every HeadRefresh (capped by the
// lease term) — not on every commit: a record put costs a DHT walk, a
// signature and a verification at every node storing it.
func (d *driver) committed(cp lease.Checkpoint) {
	c, err := cid.Decode(cp.ID)
	if err != nil {
		return
	}
	d.commits.advance(cp.Seq)
	p, own := d.proposed[cp.Seq]
	for seq := range d.proposed {
		if seq <= cp.Seq {
			delete(d.proposed, seq)
		}
	}
	refresh := min(d.m.cfg.Timing.HeadRefresh, time.Duration(d.g.TermMs)*time.Millisecond)
	epoch := d.mc.Epoch()
	now := d.m.now()
	// An owner's record changes what the agent does (stopped, budget):
	// its head record says so at once.
	ctl := own && p.head != nil && p.head.Control != nil
	publish := d.pubEpoch != epoch || (own && !d.pubOwn) || now.Sub(d.pubAt) >= refresh || ctl
	if publish {
		if d.pubEpoch != epoch {
			d.pubOwn = false
		}
		d.pubEpoch, d.pubAt, d.pubOwn = epoch, now, d.pubOwn || own
	}
	var latency time.Duration
	if own {
		latency = now.Sub(p.at)
	}
	d.m.cfg.Hooks.Committed(Commit{DID: d.did, CID: c, Seq: cp.Seq, Epoch: epoch, Head: p.head, Key: d.key,
		Latency: latency, Publish: publish, Until: d.fence().Add(refresh)})
}

// repinEvery bounds how often the pin follows the accepted checkpoint. A
// pin protects its checkpoint and all predecessors from a garbage
// collection; checkpoints accepted since the last repin are younger than
// repinEvery and so inside the store's GC grace period (10 min), which
// protects fresh blocks. Moving the pin on every accepted checkpoint cost
// two durable writes per commit per member.
const repinEvery = time.Minute

// repin moves the pin to the accepted checkpoint id (its predecessors are
// reachable through it) — at most once per repinEvery.
func (d *driver) repin(id string) {
	if id == d.pinned || id == "" || d.m.now().Sub(d.pinnedAt) < repinEvery {
		return
	}
	c, err := cid.Decode(id)
	if err != nil {
		return
	}
	if err := d.m.cfg.Blocks.Pin(c); err != nil {
		d.log().warn("pin accepted checkpoint", err)
		return
	}
	if old, err := cid.Decode(d.pinned); err == nil {
		_ = d.m.cfg.Blocks.Unpin(old)
	}
	d.pinned, d.pinnedAt = id, d.m.now()
}

func (d *driver) startAgent(cp lease.Checkpoint) {
	d.startFrom = cp
	d.to(phStarting)
	d.tryStart()
}

// leave moves to phLeaving and runs Leave (state and key deleted) off the
// goroutine, which Leave waits for.
func (d *driver) leave() {
	d.to(phLeaving)
	d.m.spawn(func() { _ = d.m.Leave(d.did, "") })
}

// startRetry: a holder that could not start its agent (full, or blocks
// still missing) tries again this often, and meanwhile looks for a live
// member that can run it; it does not bounce the agent from member to
// member (every bounce costs an epoch and a takeover).
const startRetry = 2 * time.Second

// tryStart starts the agent from the pending committed checkpoint.
func (d *driver) tryStart() {
	if d.phase != phStarting {
		return
	}
	switch {
	case !d.mc.Running():
		d.to(phIdle)
		return
	case d.started, d.superseded != 0 && d.superseded == d.mc.Epoch():
		// Runs already; or a higher epoch was seen: held, not run, at this one.
		d.to(phHolding)
		return
	}
	cp := d.startFrom
	d.lastStart = d.m.now()
	c, err := cid.Decode(cp.ID)
	if err == nil {
		_ = d.m.cfg.Service.Forget(d.did)
		_, err = d.m.cfg.Service.Accept(d.ctx, hosting.Lease{
			Head: c, Key: d.key, Epoch: d.mc.Epoch(), Term: time.Duration(d.g.TermMs) * time.Millisecond,
			Fence: d.fence, OnCheckpoint: d.onCheckpoint, OnExit: d.onExit, AwaitCommit: d.commits.wait,
			// The lease machine gives each epoch one holder: resuming our own
			// final checkpoint at our epoch (a regroup that failed) is safe.
			Exclusive: true,
		})
	}
	d.holder = d.m.cfg.Self
	if err == nil {
		d.started = true
		d.to(phHolding)
		d.m.cfg.Logger.Info("custody: running agent", "agent", d.did, "epoch", d.mc.Epoch(), "from", cp.ID, "seq", cp.Seq)
		if d.m.draining.Load() {
			// Taken over by a draining node (its holder died and no better
			// member was live): it runs here meanwhile, but moves on now,
			// not at the term's end.
			d.reviewFor(true)
		}
		return
	}
	if errors.Is(err, hosting.ErrBudgetExhausted) {
		d.to(phHolding) // held, not run
		d.m.cfg.Logger.Info("custody: agent's budget is exhausted; holding it without running", "agent", d.did)
		return
	}
	if errors.Is(err, hosting.ErrAgentStopped) {
		d.to(phHolding) // held, not run, until its owner's start record
		d.m.cfg.Logger.Info("custody: agent stopped by its owner; holding it without running", "agent", d.did)
		return
	}
	d.log().warn("cannot run agent here yet; retrying, and looking for a live member that can", err)
	if ve := (*agents.VerifyError)(nil); errors.As(err, &ve) {
		// A hole in the lineage here (e.g. a fetch cut short by a crash):
		// fetch it from the group in the background before the retry.
		d.fillLineage(c)
	}
	d.reviewFor(true)
}

// fillLineage fetches whatever of c's lineage is missing here.
func (d *driver) fillLineage(c cid.Cid) {
	if d.jobs.has(jobFill) {
		return
	}
	d.jobs.add(jobFill)
	peers := d.others()
	d.m.spawn(func() {
		ctx, cancel := context.WithTimeout(d.ctx, ensureLimit)
		defer cancel()
		err := d.m.cfg.Net.Ensure(ctx, d.did, c, peers, nil)
		d.send(d.ctx, event{kind: evFilled, err: err})
	})
}

// others lists the other members in rendezvous order.
func (d *driver) others() []string {
	var out []string
	for _, p := range d.ranked {
		if p != d.m.cfg.Self {
			out = append(out, p)
		}
	}
	return out
}

func (d *driver) onCheckpoint(h hosting.Head) {
	d.send(d.ctx, event{kind: evCheckpoint, head: h})
}

func (d *driver) onExit(res hosting.Result, err error) {
	d.send(d.ctx, event{kind: evExit, err: err})
}

// stopAgent stops the agent if it runs here. final: commit a last
// checkpoint (handoff); otherwise stop at once (fenced).
func (d *driver) stopAgent(final bool) (hosting.Head, bool) {
	if !d.started {
		return hosting.Head{}, false
	}
	d.started = false
	ctx, cancel := context.WithTimeout(context.Background(), stopLimit)
	defer cancel()
	h, err := d.m.cfg.Service.Stop(ctx, d.did, final)
	if err != nil {
		d.log().error("stop agent", err)
		return hosting.Head{}, false
	}
	return h, true
}

// review asks the node, off the driver goroutine (it may do DHT lookups
// that must not delay heartbeats), whether the agent should move.
func (d *driver) review() {
	if dead := d.deadMembers(); len(dead) > 0 && !d.m.draining.Load() {
		d.replace(dead, "")
		return
	}
	d.reviewFor(d.m.draining.Load())
}

// changeLimit bounds how long new members that joined wait for the holder
// to propose them (it waits for pending checkpoints to commit).
const changeLimit = 10 * time.Second

// replace changes the members in place while the agent runs: Hooks.Replace
// picks, prewarms and joins new hosts for the dead members (or to fill a
// short group; toward is the outsider a review found), then tryChange
// proposes the new members. Off the driver goroutine.
func (d *driver) replace(dead []string, toward string) {
	if d.jobs.has(jobReplace) || d.phase != phHolding || !d.started || !d.mc.Running() {
		return
	}
	c := d.mc.Committed()
	head, err := cid.Decode(c.ID)
	if err != nil {
		return
	}
	d.jobs.add(jobReplace)
	var reserved lease.Conf // written by p.Conf, read after Replace returned
	p := ReplaceParams{DID: d.did, Head: head, Seq: c.Seq, Epoch: d.mc.Epoch(), Key: d.key, Group: *d.g,
		Members: slices.Clone(d.members), Dead: slices.Clone(dead),
		Conf: func(ctx context.Context, members []string) (lease.Conf, error) {
			reply := make(chan joinConf, 1)
			if !d.send(ctx, event{kind: evJoinConf, members: members, reply: reply}) {
				return lease.Conf{}, errors.Join(ErrClosed, ctx.Err())
			}
			select {
			case r := <-reply:
				reserved = r.conf
				return r.conf, r.err
			case <-ctx.Done():
				return lease.Conf{}, ctx.Err()
			}
		}}
	d.m.spawn(func() {
		// A node that died leaves a change to make in every group it was
		// in, all due at once; the agents keep running meanwhile, so the
		// changes queue (replaceSlots at a time) rather than burst: their
		// probes, joins and verifications would starve the lease renewals
		// of healthy groups (measured: with a CPU burner, 3 holders of 239
		// lost their lease in the burst).
		select {
		case d.m.replaceSem <- struct{}{}:
		case <-d.ctx.Done():
			return
		}
		ctx, cancel := context.WithTimeout(d.ctx, prepareLimit)
		members, err := d.m.cfg.Hooks.Replace(ctx, p)
		cancel()
		<-d.m.replaceSem
		if err == nil && !slices.Equal(slices.Sorted(slices.Values(members)), reserved.Members) {
			err = fmt.Errorf("custody: Hooks.Replace returned %v, not the members it reserved a configuration for (%v)", members, reserved.Members)
		}
		d.send(d.ctx, event{kind: evReplaced, members: members, conf: reserved, err: err, id: toward})
	})
}

// tryChange proposes the members Hooks.Replace made join, once nothing
// else is pending (lease.ErrChangeInFlight), with the configuration they
// joined with; past changeLimit, or if the configuration moved on, it
// gives up (the joined hosts find themselves outside the group and leave:
// "Evicted members").
func (d *driver) tryChange() {
	if d.phase != phChanging {
		return
	}
	if d.m.now().After(d.changeBy) {
		d.to(phHolding)
		d.log().warn("membership change abandoned", fmt.Errorf("configuration %s not proposed in time", d.change))
		return
	}
	err := d.mc.ChangeConfig(d.change)
	if errors.Is(err, lease.ErrChangeInFlight) {
		return
	}
	d.to(phHolding)
	if err != nil {
		d.log().warn("propose new members", err)
		return
	}
	d.m.cfg.Logger.Info("custody: replacing members in place", "agent", d.did, "configuration", d.change.String(), "epoch", d.mc.Epoch())
	d.handle()
}

// reviewLimit bounds a placement review (Hooks.Review): it may enumerate
// the mesh's hosts, which waits on reads from peers that just died. It
// runs off the driver goroutine, so only the move waits for it.
const reviewLimit = 20 * time.Second

// drainReviewEvery: how often a draining node's running agents look again
// for a host, when a review found none (or took over as the node drained).
const drainReviewEvery = 5 * time.Second

// prepareLimit bounds a membership change's prewarm and joins (Hooks.Replace).
const prepareLimit = time.Minute

// watchMembers tracks, on the running holder, since when each member has
// not been live (acknowledging heartbeats, holding the committed checkpoint).
func (d *driver) watchMembers() {
	if !d.mc.Running() {
		clear(d.deadSince)
		return
	}
	now := d.m.now()
	for _, p := range d.members {
		if d.mc.Live(p) {
			delete(d.deadSince, p)
		} else if _, ok := d.deadSince[p]; !ok {
			d.deadSince[p] = now
		}
	}
}

// deadMembers lists the members not live for RegroupAfter.
func (d *driver) deadMembers() []string {
	var dead []string
	for _, p := range d.members {
		if since, ok := d.deadSince[p]; ok && d.m.now().Sub(since) >= d.m.cfg.Timing.RegroupAfter {
			dead = append(dead, p)
		}
	}
	return dead
}

// startRegroup begins replacing the group — because members are dead, or
// (toward ≠ "") to move the agent to a better-ranked host outside it: stop
// the agent with a final checkpoint and propose it; tryRegroup goes on once
// it is committed.
func (d *driver) startRegroup(dead []string, toward string) {
	if !d.mayMove() {
		return
	}
	if toward != "" && d.started && !d.m.draining.Load() {
		// A move toward a better host while the agent runs here is never
		// urgent (a draining node's is): not while a member is briefly
		// unreachable (not live, but for less than RegroupAfter), which
		// would count it as dead — not asked to leave, dropped from the
		// group for a blip, left holding a stale group. The next review
		// tries again.
		for _, p := range d.members {
			if since, ok := d.deadSince[p]; ok && d.m.now().Sub(since) < d.m.cfg.Timing.RegroupAfter {
				d.m.cfg.Logger.Info("custody: move deferred: a member is briefly unreachable", "agent", d.did, "to", toward, "member", p)
				return
			}
		}
	}
	for _, p := range d.members {
		if !d.mc.Live(p) && !slices.Contains(dead, p) {
			// Not live now (a holder that died, as a rule): not asked to
			// leave — a dial to a dead host costs the agent seconds — nor
			// placed. A majority of the old group must still leave.
			dead = append(dead, p)
		}
	}
	if toward != "" {
		d.m.cfg.Logger.Info("custody: moving the agent to a better-ranked host outside its group", "agent", d.did, "to", toward, "epoch", d.mc.Epoch())
	} else {
		d.m.cfg.Logger.Info("custody: replacing the custody group", "agent", d.did, "dead", dead, "epoch", d.mc.Epoch())
	}
	d.to(phRegroup) // a holder that could not start: the regroup takes over
	d.regroupDead, d.regroupTo = dead, toward
	if h, ok := d.stopAgent(true); ok {
		d.proposeHead(h)
	}
	d.handle()
}

// mayMove reports whether the agent may be handed off or regrouped now: a
// holder running it, or one that cannot start it (phStarting) — not one
// already moving it, changing its members, or holding it stopped.
func (d *driver) mayMove() bool {
	return d.mc.Running() && (d.phase == phStarting || d.phase == phHolding && d.started)
}

// proposeHead marks a checkpoint the runner wrote locally as stored
// here and proposes it to the group when it is newer than the accepted one
// (a handoff's final checkpoint may already be proposed), recording when,
// for the commit-latency metric. It reports whether it proposed.
func (d *driver) proposeHead(h hosting.Head) bool {
	id := h.CID.String()
	if h.Checkpoint != nil {
		d.markComplete(id, h.Checkpoint.Seq)
	}
	if acc, _ := d.mc.Accepted(); !d.mc.Running() || h.Checkpoint == nil || h.Checkpoint.Seq <= acc.Seq {
		return false // not holding, or already proposed
	}
	if err := d.mc.Propose(lease.Checkpoint{Seq: h.Checkpoint.Seq, ID: id}); err != nil {
		d.log().debug("propose", err)
		return false
	}
	d.proposed[h.Checkpoint.Seq] = proposal{at: d.m.now(), head: h.Checkpoint}
	// The blocks go ahead of the heartbeat that proposes them (handle sends
	// it next, on the same ordered stream per member).
	d.m.cfg.Net.Push(d.did, d.gid, h, d.others())
	return true
}

// tryRegroup hands the group's replacement to the node once the final
// checkpoint is committed. If the lease ends first, the group takes over as
// after a crash (and the new holder regroups in its turn).
func (d *driver) tryRegroup() {
	if d.phase != phRegroup {
		return
	}
	acc, _ := d.mc.Accepted()
	c := d.mc.Committed()
	if c.ID == "" || c.Seq != acc.Seq {
		return // not committed yet
	}
	head, err := cid.Decode(c.ID)
	if err != nil {
		return
	}
	d.to(phRegrouping)
	members, dead, toward, epoch := slices.Clone(d.members), slices.Clone(d.regroupDead), d.regroupTo, d.mc.Epoch()
	d.m.regroups.Add(1)
	d.m.spawn(func() {
		defer d.m.regroups.Add(-1)
		err := d.m.cfg.Hooks.Regroup(RegroupParams{DID: d.did, Head: head, Seq: c.Seq, Epoch: epoch, Key: d.key,
			Members: members, Dead: dead, Toward: toward})
		if err != nil {
			d.send(d.ctx, event{kind: evRegrouped, err: err})
		}
	})
}

// reviewFor runs a review; away: this node drains (or cannot run the
// agent), so any live member or other host will do.
func (d *driver) reviewFor(away bool) {
	if d.jobs.has(jobReview) || !d.mayMove() {
		return
	}
	d.jobs.add(jobReview)
	d.reviewedAt = d.m.now()
	// Only members that answer heartbeats and hold the committed checkpoint
	// are candidates; a dead one would be handed the agent only to lose it.
	var live []string
	for _, p := range d.members {
		if d.mc.Live(p) {
			live = append(live, p)
		}
	}
	d.m.spawn(func() {
		ctx, cancel := context.WithTimeout(d.ctx, reviewLimit)
		target := d.m.cfg.Hooks.Review(ctx, d.did, live, away)
		cancel()
		d.send(d.ctx, event{kind: evReviewed, id: target})
	})
}

// handOff stops the agent with a final checkpoint, proposes it, and
// transfers the lease to target once it is committed (tryTransfer).
func (d *driver) handOff(target string) {
	if target == "" || target == d.m.cfg.Self || !slices.Contains(d.members, target) || !d.mayMove() {
		return
	}
	d.m.cfg.Logger.Info("custody: handing agent off", "agent", d.did, "to", target, "epoch", d.mc.Epoch())
	d.target, d.targetAt = target, d.m.now()
	d.to(phHandoff)
	if h, ok := d.stopAgent(true); ok {
		d.proposeHead(h)
	}
	d.handle()
}

// tryTransfer completes a pending handoff once the final checkpoint is
// committed. If the lease ends first the machine stops by itself and the
// group takes over as after a crash.
func (d *driver) tryTransfer() {
	if d.phase != phHandoff {
		return
	}
	// Hand over only once the target itself stored the final checkpoint
	// (a majority did, but not necessarily the target): a target still
	// fetching it would campaign without it and lose time. After a second,
	// any live member that has it will do.
	if !d.mc.Live(d.target) {
		if d.m.now().Sub(d.targetAt) < time.Second {
			return
		}
		for _, p := range d.others() {
			if d.mc.Live(p) {
				d.target = p
				break
			}
		}
	}
	err := d.mc.Transfer(d.target)
	if errors.Is(err, lease.ErrNotCommitted) {
		return
	}
	if err != nil {
		// Still holding, the agent stopped: run it again here from the
		// committed checkpoint (the next review may try another move).
		d.log().warn("transfer to "+d.target+"; running the agent here again", err)
		if c := d.mc.Committed(); c.ID != "" && !d.started {
			d.startAgent(c)
		} else {
			d.to(phHolding)
		}
		return
	}
	d.handle() // releases the lease: after() ends the phase
}

func (d *driver) shutdown() {
	d.own.Lock()
	defer d.own.Unlock()
	d.wake.Store(never)
	d.stopAgent(false)
	d.mc.Relinquish()
	d.publish()
}

func (d *driver) publish() {
	acc, at := d.mc.Accepted()
	st := Status{
		DID: d.did, Role: d.mc.Role().String(), Running: d.mc.Running() && d.started, Epoch: d.mc.Epoch(),
		AcceptedSeq: acc.Seq, Accepted: acc.ID, AcceptedAt: at, Holder: d.holder, Members: d.members, Conf: d.confIdx,
		Moving: d.mc.Running() && (d.phase == phHandoff || d.phase == phRegroup || d.phase == phRegrouping), Phase: d.phase.String(),
		Since: d.since, LastHeard: d.heard, Started: d.mc.Epoch() > d.g.StartEpoch,
	}
	if d.mc.Role() == lease.Holder {
		st.LastHeard = d.m.now()
	}
	if c := d.mc.Committed(); c.ID != "" {
		st.Committed = c.ID
	}
	if le := d.mc.LeaseEnd(); le > 0 {
		st.LeaseEnd = d.t0.Add(time.Duration(le) * d.m.cfg.Timing.Interval)
	}
	if d.failed != nil {
		st.Error = d.failed.Error()
	}
	d.mu.Lock()
	d.snap = st
	d.mu.Unlock()
}

// snapshot is the latest published status. A holder whose lease end has
// passed is not reported running, even if its loop has not yet handled
// the step-down (busy stopping the agent, or the process was paused): the
// runner's fence has stopped the agent by then.
func (d *driver) snapshot() Status {
	d.mu.Lock()
	st := d.snap
	d.mu.Unlock()
	if d.m.pairs != nil {
		if st.Running && !st.LeaseEnd.IsZero() {
			st.LeaseEnd = d.fence() // renewed by pair beats since the snapshot
		}
		if st.Holder != "" && st.Holder != d.m.cfg.Self {
			if at := d.m.pairs.lastBeat(st.Holder); at.After(st.LastHeard) {
				st.LastHeard = at // an idle group's holder is heard by its beats
			}
		}
	}
	if st.Running && !st.LeaseEnd.IsZero() && !d.m.now().Before(st.LeaseEnd) {
		st.Running = false
	}
	return st
}

type slogLogger struct{ d *driver }

func (l *slogLogger) debug(msg string, err error) {
	l.d.m.cfg.Logger.Debug("custody: "+msg, "agent", l.d.did, "err", err)
}
func (l *slogLogger) warn(msg string, err error) {
	l.d.m.cfg.Logger.Warn("custody: "+msg, "agent", l.d.did, "err", err)
}
func (l *slogLogger) error(msg string, err error) {
	l.d.m.cfg.Logger.Error("custody: "+msg, "agent", l.d.did, "err", err)
}

// control applies an owner's record: checked first against the accepted
// head (a record that may not be applied leaves the agent running), then
// the agent stops with a final checkpoint, the checkpoint carrying the
// record is proposed after it, and tryControl ends the phase once it is
// committed.
func (d *driver) control(ctl *agents.Control, done chan controlDone) {
	answer := func(err error) { done <- controlDone{err: err} }
	switch {
	case !d.mc.Running():
		answer(fmt.Errorf("%w: %s; the holder known here is %q", ErrNotHolder, d.did, d.holder))
		return
	case d.phase != phHolding:
		answer(busyPhase{did: d.did, phase: d.phase.String()})
		return
	case d.jobs.has(jobReplace):
		// New members may have joined already and are not in the
		// configuration yet: a delete would not ask them to leave.
		answer(fmt.Errorf("%w: %s is adding members to its group; retry in a moment", ErrBusy, d.did))
		return
	}
	acc, _ := d.mc.Accepted()
	c, err := cid.Decode(acc.ID)
	var head hosting.Head
	if err == nil {
		head, err = d.m.cfg.Service.ControlHead(c, ctl)
	}
	if err != nil {
		answer(err)
		return
	}
	if h, ok := d.stopAgent(true); ok {
		d.proposeHead(h)
		if h.Checkpoint != nil && h.Checkpoint.Seq >= head.Checkpoint.Seq {
			head = h
		}
	}
	nh, err := d.m.cfg.Service.Control(head, d.key, d.mc.Epoch(), ctl)
	if err != nil {
		// Nothing carries the record: run the agent again once its final
		// checkpoint is committed (ctlSeq 0: tryControl answers err).
		d.log().warn("apply control record "+ctl.String(), err)
		d.ctlSeq, d.ctlID, d.ctlResume, d.ctlDelete = head.Checkpoint.Seq, "", !head.Checkpoint.Stopped && head.Checkpoint.Budget > 0, false
		d.ctlDone = done
		d.ctlErr = err
		d.to(phControl)
		d.handle()
		return
	}
	d.proposeHead(nh)
	d.m.cfg.Logger.Info("custody: applying the owner's control record", "agent", d.did, "record", ctl.String(), "checkpoint", nh.CID, "seq", nh.Checkpoint.Seq)
	d.ctlSeq, d.ctlID, d.ctlDone, d.ctlErr = nh.Checkpoint.Seq, nh.CID.String(), done, nil
	d.ctlResume = !nh.Checkpoint.Stopped && nh.Checkpoint.Budget > 0
	d.ctlDelete = nh.Checkpoint.Deleted()
	d.to(phControl)
	d.handle()
}

// tryControl ends phControl once the checkpoint carrying the record (or,
// when it could not be written, the agent's final one) is committed: the
// caller is answered and the agent runs again from it unless stopped.
func (d *driver) tryControl() {
	if d.phase != phControl {
		return
	}
	c := d.mc.Committed()
	if c.ID == "" || c.Seq < d.ctlSeq {
		return
	}
	if d.ctlErr != nil {
		d.answerControl(d.ctlErr)
	} else {
		d.answerControl(nil)
	}
	if d.ctlResume {
		d.startAgent(c)
		return
	}
	d.to(phHolding) // held, not run
	if d.ctlDelete {
		d.ctlDelete = false
		d.m.cfg.Logger.Info("custody: agent deleted by its owner; releasing its group", "agent", d.did, "checkpoint", c.ID)
		members := d.others()
		if hook := d.m.cfg.Hooks.Deleted; hook != nil {
			d.m.spawn(func() { hook(d.did, members) })
		} else {
			d.leave()
		}
	}
}

// busyPhase is ErrBusy for a record that came while the driver is in
// another phase (applying the previous record, handing off…): passing, so
// Manager.Control retries it while it waits for a tick to end.
type busyPhase struct{ did, phase string }

func (e busyPhase) Error() string {
	return fmt.Sprintf("%v: %s is %s here; retry in a moment", ErrBusy, e.did, e.phase)
}

func (e busyPhase) Is(target error) bool { return target == ErrBusy }

// answerControl answers the pending control call once.
func (d *driver) answerControl(err error) {
	if d.ctlDone == nil {
		return
	}
	d.ctlDone <- controlDone{id: d.ctlID, err: err}
	d.ctlDone, d.ctlErr = nil, nil
}

// final stops the running agent with a final checkpoint for a node that
// stops with nowhere to hand it (Manager.Checkpoint); done is answered
// once the group committed it (tryFinal), or at once with an error.
func (d *driver) final(done chan controlDone) {
	if d.phase != phHolding || !d.started || !d.mc.Running() {
		done <- controlDone{err: fmt.Errorf("%w: %s is %s here", ErrBusy, d.did, d.phase)}
		return
	}
	h, ok := d.stopAgent(true)
	if !ok || h.Checkpoint == nil {
		done <- controlDone{err: fmt.Errorf("custody: %s stopped without a final checkpoint", d.did)}
		return
	}
	d.proposeHead(h)
	d.finalSeq, d.finalDone = h.Checkpoint.Seq, done
	d.handle()
	d.tryFinal()
}

// tryFinal answers Manager.Checkpoint once the final checkpoint is
// committed.
func (d *driver) tryFinal() {
	if d.finalDone == nil {
		return
	}
	if c := d.mc.Committed(); c.ID != "" && c.Seq >= d.finalSeq {
		d.finalDone <- controlDone{id: c.ID}
		d.finalDone = nil
	}
}

// commitWatch lets the runner's goroutine wait for the driver's commits.
// The driver advances it; waiters block on a channel closed at each
// advance (one allocation per commit, none per waiter).
type commitWatch struct {
	mu  sync.Mutex
	seq uint64
	ch  chan struct{} // closed when seq grows; nil until someone waits
}

func (w *commitWatch) advance(seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if seq <= w.seq {
		return
	}
	w.seq = seq
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// wait returns once seq is committed, or ctx's error when ctx ends first
// (the runner is being stopped: a lost lease, a handoff).
func (w *commitWatch) wait(ctx context.Context, seq uint64) error {
	for {
		w.mu.Lock()
		if w.seq >= seq {
			w.mu.Unlock()
			return nil
		}
		if w.ch == nil {
			w.ch = make(chan struct{})
		}
		ch := w.ch
		w.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
