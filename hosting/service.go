package hosting

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
)

// Errors of the hosting service.
var (
	// ErrNoCapacity: every slot of this node is taken.
	ErrNoCapacity = errors.New("hosting: no free slot")
	// ErrAlreadyHosted: the agent already runs here.
	ErrAlreadyHosted = errors.New("hosting: agent already hosted here")
	// ErrStaleEpoch: a lease offer whose epoch does not exceed the head's.
	ErrStaleEpoch = errors.New("hosting: lease epoch is not newer than the agent's")
	// ErrNotHosted: the agent is not hosted here.
	ErrNotHosted = errors.New("hosting: agent not hosted here")
	// ErrServiceClosed: the service has shut down.
	ErrServiceClosed = errors.New("hosting: service closed")
)

// Lease is an offer to run an agent from a committed head at a new epoch.
// (Single-holder leases; the custody group of the brief §5 builds on this.)
type Lease struct {
	Head  cid.Cid
	Key   ed25519.PrivateKey // the agent key, escrowed to the holder
	Epoch uint64             // must be greater than the head checkpoint's epoch (see Exclusive)
	Term  time.Duration      // lease term; the head record advertises its end
	// Fence, if set, is passed to RunOptions.Fence: the custody driver's
	// lease end in local time.
	Fence func() time.Time
	// OnCheckpoint, if set, replaces ServiceConfig.OnCheckpoint for this agent:
	// each checkpoint the runner wrote locally is handed to it (the custody
	// driver proposes it to its group; it is committed only once a majority
	// stored it, which is what "commit" means there). The runner then does
	// not pin its checkpoints (the driver pins what the group accepted).
	OnCheckpoint func(Head)
	// AwaitCommit, if set, is passed to RunOptions.AwaitCommit: the custody
	// driver's wait for a checkpoint to be held by a majority.
	AwaitCommit func(ctx context.Context, seq uint64) error
	// OnExit, if set, is called once when the run ends by itself (budget,
	// failures, MaxTicks) — not when Stop or Close ended it.
	OnExit func(Result, error)
	// Exclusive: the epoch is this holder's alone (a custody lease: one
	// holder per epoch), so the run may resume a head made at this very
	// epoch — the holder's own final checkpoint, after a move that did not
	// happen. Without it the epoch must exceed the head's.
	Exclusive bool
}

// Status is what the node reports about an agent it hosts.
type Status struct {
	DID     string    `json:"did"`
	Head    string    `json:"head"`
	Seq     uint64    `json:"seq"`
	Tick    uint64    `json:"tick"`
	Epoch   uint64    `json:"epoch"`
	Budget  int64     `json:"budget_microcents"`
	Running bool      `json:"running"`
	Started time.Time `json:"started"`
	// TermEnd is the end of the current lease term by this node's clock:
	// the start, then each commit, plus the term (the custody group's
	// term, or the manifest's lease.term_seconds). The custody lease itself
	// is GET /v1/custody's lease_end.
	TermEnd    time.Time  `json:"term_end"`
	StopReason StopReason `json:"stop_reason,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// ServiceConfig configures a hosting service.
type ServiceConfig struct {
	Slots int        // agents this node runs at once; default 16
	Run   RunOptions // tick loop options for every hosted agent
	// Starts bounds the agent starts that run at once: a lease's lineage
	// verification in Accept, and each instantiation and resume in the
	// run. Default max(1, GOMAXPROCS-1): a burst of takeovers after a
	// node died queues here instead of taking every core from the lease
	// traffic of the groups that are healthy (issue "Custody engine",
	// item 6). Negative is an error.
	Starts int
	// Work bounds the agents' ticks and checkpoints — and, through
	// WorkGate, whatever else the node gates with them (its standbys'
	// checkpoint verifications) — that run at once. Default GOMAXPROCS.
	// A node's runners wake together on the tick grid, hundreds at once:
	// ungated, each is runnable until its tick and checkpoint are done,
	// and a lease goroutine woken behind them — the custody engine, a
	// stream reader — waited for all of them, a second and more when GC
	// assists and a busy machine slowed each (DECISIONS D79). Waiting for
	// a slot, a runner is blocked, not runnable: the queue the lease
	// traffic waits in stays short. Negative is an error.
	Work int
	// OnCheckpoint is called after each checkpoint a hosted agent without
	// a custody lease wrote (there, its commit), with its key and lease (the
	// node publishes the head record and provides the blocks). It must not
	// block for long.
	OnCheckpoint func(h Head, key ed25519.PrivateKey, leaseExpiry time.Time)
	// OnTick, if set, is called after every successful tick of every hosted
	// agent (RunOptions.OnTick). It must not block.
	OnTick func(did string, tick uint64)
}

// Service runs leased agents, one goroutine each. It owns the table of
// hosted agents; every method is safe for concurrent use.
type Service struct {
	env Env
	cfg ServiceConfig

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex // guards agents and closed
	agents map[string]*hosted
	closed bool
	// running counts the entries of agents whose run has not ended, so
	// capacity checks are O(1): counting them under mu cost 6 % of a
	// daemon's CPU at 1,000 agents (every Accept, every advertisement).
	running atomic.Int64

	// starts holds a token per start in progress (ServiceConfig.Starts);
	// startsWaiting counts those waiting for one, startsPeak the most in
	// progress at once.
	starts        chan struct{}
	startsWaiting atomic.Int64
	startsPeak    atomic.Int64
	// work holds a token per gated step in progress (ServiceConfig.Work).
	work chan struct{}
}

type hosted struct {
	mu      sync.Mutex // guards status, head, stopped
	status  Status
	head    Head
	stopped bool // Stop or Close ended the run
	cancel  context.CancelCauseFunc
	done    chan struct{}
}

// NewService starts an empty hosting service.
func NewService(env Env, cfg ServiceConfig) (*Service, error) {
	if err := env.validate(); err != nil {
		return nil, err
	}
	if cfg.Slots <= 0 {
		cfg.Slots = 16
	}
	switch {
	case cfg.Work < 0:
		return nil, fmt.Errorf("hosting: ServiceConfig.Work is %d: want the number of ticks and verifications to run at once, or 0 for the default", cfg.Work)
	case cfg.Starts < 0:
		return nil, fmt.Errorf("hosting: ServiceConfig.Starts is %d: want the number of agent starts to run at once, or 0 for the default", cfg.Starts)
	case cfg.Starts == 0:
		cfg.Starts = max(1, runtime.GOMAXPROCS(0)-1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{env: env, cfg: cfg, ctx: ctx, cancel: cancel, agents: map[string]*hosted{},
		starts: make(chan struct{}, cfg.Starts), work: make(chan struct{}, cmp.Or(cfg.Work, runtime.GOMAXPROCS(0)))}, nil
}

// startGate waits for a start slot (ServiceConfig.Starts) or for ctx to
// end, and returns the slot's release.
func (s *Service) startGate(ctx context.Context) (func(), error) {
	select {
	case s.starts <- struct{}{}:
	default:
		s.startsWaiting.Add(1)
		select {
		case s.starts <- struct{}{}:
			s.startsWaiting.Add(-1)
		case <-ctx.Done():
			s.startsWaiting.Add(-1)
			return nil, context.Cause(ctx)
		}
	}
	for n := int64(len(s.starts)); ; {
		if p := s.startsPeak.Load(); n <= p || s.startsPeak.CompareAndSwap(p, n) {
			break
		}
	}
	return func() { <-s.starts }, nil
}

// WorkGate waits for a work slot (ServiceConfig.Work) or for ctx to end,
// and returns the slot's release. The agents' ticks and checkpoints take
// one; so may other CPU-bound work of the node that runs per agent.
func (s *Service) WorkGate(ctx context.Context) (func(), error) {
	select {
	case s.work <- struct{}{}:
		return func() { <-s.work }, nil
	case <-ctx.Done():
		return nil, context.Cause(ctx)
	}
}

// StartStats reports the agent starts waiting for a slot now, and the
// most that ran at once since the service started.
func (s *Service) StartStats() (waiting, peak int) {
	return int(s.startsWaiting.Load()), int(s.startsPeak.Load())
}

// FreeSlots is how many more agents this node accepts.
func (s *Service) FreeSlots() int { return s.cfg.Slots - s.runningNow() }

// Slots is the configured capacity.
func (s *Service) Slots() int { return s.cfg.Slots }

func (s *Service) runningNow() int { return int(s.running.Load()) }

// Accept takes a lease: it verifies the agent's whole lineage from
// lease.Head (the blocks must already be in the store), checks the key and
// the epoch, and starts ticking the agent at the new epoch. It returns
// ErrNoCapacity, ErrAlreadyHosted, ErrStaleEpoch, ErrServiceClosed, or the
// verification error.
func (s *Service) Accept(ctx context.Context, lease Lease) (Status, error) {
	s.mu.Lock()
	closed, free := s.closed, s.cfg.Slots-s.runningNow()
	s.mu.Unlock()
	if closed {
		return Status{}, ErrServiceClosed
	}
	if free <= 0 {
		return Status{}, fmt.Errorf("%w (%d of %d in use)", ErrNoCapacity, s.cfg.Slots, s.cfg.Slots)
	}
	release, err := s.startGate(ctx)
	if err != nil {
		return Status{}, fmt.Errorf("hosting: waiting to start the agent of %s: %w", lease.Head, err)
	}
	a, err := Load(ctx, s.env, lease.Head, lease.Key)
	release()
	if err != nil {
		return Status{}, err
	}
	if lease.Epoch < a.Head.Checkpoint.Epoch || lease.Epoch == a.Head.Checkpoint.Epoch && !lease.Exclusive {
		return Status{}, fmt.Errorf("%w: offer at epoch %d, head %s is at epoch %d", ErrStaleEpoch, lease.Epoch, a.Head.CID, a.Head.Checkpoint.Epoch)
	}
	if a.Head.Checkpoint.Stopped {
		return Status{}, fmt.Errorf("%w: %s (head %s)", ErrAgentStopped, a.DID, a.Head.CID)
	}
	if a.Head.Checkpoint.Budget == 0 {
		return Status{}, fmt.Errorf("%w: %s", ErrBudgetExhausted, a.DID)
	}
	term := lease.Term
	if term <= 0 {
		term = time.Duration(a.Manifest.Lease.TermSeconds) * time.Second
	}
	h := &hosted{done: make(chan struct{})}
	h.status = Status{DID: a.DID, Head: a.Head.CID.String(), Seq: a.Head.Checkpoint.Seq, Tick: a.Head.Checkpoint.Tick,
		Epoch: lease.Epoch, Budget: a.Head.Checkpoint.Budget, Running: true, Started: s.env.Now(), TermEnd: s.env.Now().Add(term)}

	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return Status{}, ErrServiceClosed
	}
	if old, ok := s.agents[a.DID]; ok {
		select {
		case <-old.done:
		default:
			s.mu.Unlock()
			return Status{}, fmt.Errorf("%w: %s", ErrAlreadyHosted, a.DID)
		}
	}
	if s.cfg.Slots-s.runningNow() <= 0 {
		s.mu.Unlock()
		return Status{}, fmt.Errorf("%w (%d of %d in use)", ErrNoCapacity, s.cfg.Slots, s.cfg.Slots)
	}
	runCtx, cancel := context.WithCancelCause(s.ctx)
	h.cancel = cancel
	s.agents[a.DID] = h
	s.running.Add(1)
	s.wg.Add(1)
	s.mu.Unlock()

	h.head = a.Head
	env := s.env
	key := lease.Key
	env.NoPins = lease.OnCheckpoint != nil // custody pins the accepted checkpoint itself
	env.OnCheckpoint = func(head Head) {
		h.mu.Lock()
		h.head = head
		h.status.Head, h.status.Seq, h.status.Tick = head.CID.String(), head.Checkpoint.Seq, head.Checkpoint.Tick
		h.status.Budget, h.status.Epoch = head.Checkpoint.Budget, head.Checkpoint.Epoch
		// Single holder: a commit renews the lease for another term.
		h.status.TermEnd = s.env.Now().Add(term)
		expiry := h.status.TermEnd
		h.mu.Unlock()
		if lease.OnCheckpoint != nil {
			lease.OnCheckpoint(head)
		} else if s.cfg.OnCheckpoint != nil {
			s.cfg.OnCheckpoint(head, key, expiry)
		}
	}
	opts := s.cfg.Run
	opts.Epoch = lease.Epoch
	opts.Fence = lease.Fence
	opts.AwaitCommit = lease.AwaitCommit
	opts.StartGate = s.startGate
	opts.WorkGate = s.WorkGate
	if s.cfg.OnTick != nil {
		did := a.DID
		opts.OnTick = func(t uint64) { s.cfg.OnTick(did, t) }
	}
	go func() {
		defer s.wg.Done()
		defer cancel(nil)
		res, err := Run(runCtx, env, a, opts)
		h.mu.Lock()
		h.status.Running = false
		h.status.StopReason = res.Reason
		if err != nil {
			h.status.Error = err.Error()
		}
		if res.Head.CID.Defined() {
			h.head = res.Head
		}
		stopped := h.stopped
		h.mu.Unlock()
		// Done before OnExit: whoever OnExit wakes may Forget or re-Accept
		// the agent at once. The count first, so a slot is free by then.
		s.running.Add(-1)
		close(h.done)
		if !stopped && lease.OnExit != nil {
			lease.OnExit(res, err)
		}
		if err != nil && !errors.Is(err, ErrBudgetExhausted) {
			s.env.Logger.Error("hosted agent stopped", "agent", a.DID, "reason", res.Reason, "err", err)
		} else {
			s.env.Logger.Info("hosted agent stopped", "agent", a.DID, "reason", res.Reason)
		}
	}()
	return h.snapshot(), nil
}

func (h *hosted) snapshot() Status {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.status
}

// Stop stops one hosted agent and waits (honouring ctx) until it no longer
// ticks. With final, the run commits a final checkpoint first (a handoff);
// without, it stops at once and commits nothing more (fenced: its lease
// ended). It returns the agent's last committed head, or ErrNotHosted.
func (s *Service) Stop(ctx context.Context, did string, final bool) (Head, error) {
	s.mu.Lock()
	h, ok := s.agents[did]
	s.mu.Unlock()
	if !ok {
		return Head{}, fmt.Errorf("%w: %s", ErrNotHosted, did)
	}
	h.mu.Lock()
	h.stopped = true
	h.mu.Unlock()
	if final {
		h.cancel(context.Canceled)
	} else {
		h.cancel(ErrFenced)
	}
	select {
	case <-h.done:
	case <-ctx.Done():
		return Head{}, fmt.Errorf("hosting: agent %s still stopping: %w", did, ctx.Err())
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.head, nil
}

// Forget drops a stopped agent from the table (a hosted agent it refuses
// with ErrAlreadyHosted).
func (s *Service) Forget(did string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	h, ok := s.agents[did]
	if !ok {
		return nil
	}
	select {
	case <-h.done:
		delete(s.agents, did)
		return nil
	default:
		return fmt.Errorf("%w: %s", ErrAlreadyHosted, did)
	}
}

// Status reports one hosted agent.
func (s *Service) Status(did string) (Status, bool) {
	s.mu.Lock()
	h, ok := s.agents[did]
	s.mu.Unlock()
	if !ok {
		return Status{}, false
	}
	return h.snapshot(), true
}

// Hosted lists every agent this node hosts or hosted since it started, by DID.
func (s *Service) Hosted() []Status {
	s.mu.Lock()
	hs := make([]*hosted, 0, len(s.agents))
	for _, h := range s.agents {
		hs = append(hs, h)
	}
	s.mu.Unlock()
	out := make([]Status, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].DID < out[j].DID })
	return out
}

// Close stops every hosted agent between ticks; each commits its final
// checkpoint before Close returns. It honours ctx only for the wait.
func (s *Service) Close(ctx context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("hosting: agents still stopping: %w", ctx.Err())
	}
}
