package hosting

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/wasmexec"
)

// Sentinel errors of the runner.
var (
	// ErrBudgetExhausted: the agent has no budget left; its final checkpoint
	// records budget 0 and it will not tick again.
	ErrBudgetExhausted = errors.New("hosting: budget exhausted")
	// ErrPriceTooHigh: this host's price is above the manifest's
	// max_price_per_second; running would make checkpoints verify rejects.
	ErrPriceTooHigh = errors.New("hosting: price above the agent's limit")
	// ErrKeyMismatch: the agent key given does not belong to the agent's DID.
	ErrKeyMismatch = errors.New("hosting: agent key does not match the agent's DID")
	// ErrTooManyFailures: the instance failed repeatedly even when re-created
	// from the last checkpoint; the runner gave up.
	ErrTooManyFailures = errors.New("hosting: agent failed repeatedly")
	// ErrModuleTooLarge: the module object exceeds MaxModuleBytes.
	ErrModuleTooLarge = errors.New("hosting: module too large")
	// ErrFenced is the cancellation cause that stops a run WITHOUT a final
	// checkpoint: its lease ended, so anything it committed now would be a
	// checkpoint no custody group accepts (context.WithCancelCause).
	ErrFenced = errors.New("hosting: lease ended; stopped without a final checkpoint")
)

// MaxModuleBytes caps the size of an agent's WASM module.
const MaxModuleBytes = 64 << 20

// Blocks is what the runner needs from a content store. contentstore.Store
// implements it; the runner declares it so hosting does not depend on how
// blocks are kept.
type Blocks interface {
	Put(codec uint64, data []byte) (cid.Cid, error)
	Get(c cid.Cid) ([]byte, error)
	PutObjectBytes(b []byte) (cid.Cid, error)
	ReadObject(c cid.Cid, max int64) ([]byte, error)
	Pin(c cid.Cid) error
	Unpin(c cid.Cid) error
}

// Heads persists each agent's head pointer. SetHead is the commit point of a
// checkpoint: the blocks are durable before it is called, and a checkpoint
// not recorded by SetHead is never resumed.
type Heads interface {
	SetHead(did string, c cid.Cid) error
}

// Env is what a runner works with. All fields are required except Logger
// and AgentLog.
type Env struct {
	Runtime  *wasmexec.Runtime
	Blocks   Blocks
	Heads    Heads
	NodeKey  ed25519.PrivateKey // signs every checkpoint as its holder
	Logger   *slog.Logger
	AgentLog func(shortDID, msg string) // agent log lines; default: Logger
	// OnAgentLog, if set, also receives each agent log line with the
	// agent's whole DID (the node keeps recent lines for `igor-node logs`).
	// It runs inside the agent's log call: it must not block.
	OnAgentLog func(did, msg string)
	Now        func() time.Time // wall clock for checkpoint times; default time.Now
	// OnCheckpoint, if set, is called after every checkpoint the runner
	// wrote (the head is durable here). Alone on a node that is the commit;
	// under custody it is only the local write, which the driver then
	// proposes to its group (committed once a majority stored it). It runs
	// on the runner's goroutine: keep it short or hand off.
	OnCheckpoint func(Head)
	// NoPins: the runner does not pin each checkpoint it writes (nor unpin
	// the previous one). A custody run sets it: the driver pins the
	// group's accepted checkpoint itself, and two pins per commit were
	// two durable writes the commit does not need.
	NoPins bool
	// Verified, if set, lets Load skip re-verifying the part of a lineage
	// verified before in this process (see Verified).
	Verified *Verified
}

func (e *Env) validate() error {
	switch {
	case e.Runtime == nil:
		return errors.New("hosting: Env.Runtime is required")
	case e.Blocks == nil:
		return errors.New("hosting: Env.Blocks is required")
	case e.Heads == nil:
		return errors.New("hosting: Env.Heads is required")
	case len(e.NodeKey) != ed25519.PrivateKeySize:
		return errors.New("hosting: Env.NodeKey is required")
	}
	if e.Logger == nil {
		e.Logger = slog.Default()
	}
	if e.Now == nil {
		e.Now = time.Now
	}
	if e.AgentLog == nil {
		lg := e.Logger
		e.AgentLog = func(short, msg string) { lg.Info(msg, "agent", short) }
	}
	return nil
}

// CreateParams describe a new agent.
type CreateParams struct {
	Wasm []byte
	// Module, if defined, names a module already stored (Wasm is then
	// ignored): a bulk publish of one module neither reads it back nor
	// stores it again, and compiles it once.
	Module   cid.Cid
	Manifest *agents.Manifest
	Budget   int64 // microcents
	Price    int64 // microcents per second of tick wall time
	AgentKey ed25519.PrivateKey
	// Owner, if set, is the did:key whose signed records may stop, start,
	// top up, delete and upgrade the agent (agents.Genesis.Owner).
	Owner string
}

// Head is an agent's committed position.
type Head struct {
	CID        cid.Cid
	Checkpoint *agents.Checkpoint
}

// Create stores the agent's module, manifest and signed genesis, runs
// agent_init in a fresh instance and commits checkpoint 0 (seq 0, tick 0).
// It returns the new head; the agent is then resumed with Open.
func Create(ctx context.Context, env Env, p CreateParams) (Head, error) {
	if err := env.validate(); err != nil {
		return Head{}, err
	}
	if p.Manifest == nil {
		return Head{}, errors.New("hosting: CreateParams.Manifest is required")
	}
	if p.Budget <= 0 {
		return Head{}, fmt.Errorf("hosting: budget must be positive, got %d µc", p.Budget)
	}
	if p.Price < 0 {
		return Head{}, fmt.Errorf("hosting: price must not be negative, got %d µc/s", p.Price)
	}
	// Checked before anything is written: an agent this price could never
	// run would otherwise stay behind with a genesis and a checkpoint 0.
	if limit := p.Manifest.MigrationPolicy.MaxPricePerSecond; limit > 0 && p.Price > limit {
		return Head{}, fmt.Errorf("%w: this host charges %d µc/s, the agent's manifest allows at most %d (migration_policy.max_price_per_second); nothing was created", ErrPriceTooHigh, p.Price, limit)
	}
	did := agents.DID(p.AgentKey.Public().(ed25519.PublicKey))
	modCID, wasm := p.Module, p.Wasm
	if !modCID.Defined() {
		if len(wasm) > MaxModuleBytes {
			return Head{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrModuleTooLarge, len(wasm), MaxModuleBytes)
		}
		var err error
		if modCID, err = env.Blocks.PutObjectBytes(wasm); err != nil {
			return Head{}, fmt.Errorf("store module: %w", err)
		}
	}
	// Compile before writing anything else, so a bad module leaves only an
	// unpinned block that GC reclaims.
	mod, ok := env.Runtime.Compiled(modCID.String())
	if !ok {
		if wasm == nil || p.Module.Defined() {
			var err error
			if wasm, err = env.Blocks.ReadObject(modCID, MaxModuleBytes); err != nil {
				return Head{}, fmt.Errorf("module %s: %w", modCID, err)
			}
		}
		var err error
		if mod, err = env.Runtime.Compile(ctx, modCID.String(), wasm); err != nil {
			return Head{}, err
		}
	}
	manCID, err := env.Blocks.Put(cid.Raw, p.Manifest.Canonical())
	if err != nil {
		return Head{}, fmt.Errorf("store manifest: %w", err)
	}
	g := &agents.Genesis{Agent: did, Module: modCID, Manifest: manCID, Budget: p.Budget, Created: env.Now().UnixNano(), Owner: p.Owner}
	if err := g.Sign(p.AgentKey); err != nil {
		return Head{}, err
	}
	gdata, gCID, err := g.Encode()
	if err != nil {
		return Head{}, err
	}
	if _, err := env.Blocks.Put(cid.DagCBOR, gdata); err != nil {
		return Head{}, fmt.Errorf("store genesis: %w", err)
	}
	inst, err := env.Runtime.Instantiate(ctx, mod, instanceConfig(&env, p.Manifest, did))
	if err != nil {
		return Head{}, err
	}
	defer inst.Close(ctx)
	state, err := inst.Checkpoint(ctx)
	if err != nil {
		return Head{}, err
	}
	cp := &agents.Checkpoint{
		Agent: did, Genesis: gCID, Seq: 0, Tick: 0, Epoch: 0,
		Module: modCID, Manifest: manCID, Budget: p.Budget, Price: p.Price,
	}
	return commit(&env, p.AgentKey, cp, state, cid.Undef)
}

// commit stores state and the signed checkpoint, then moves the head: the
// order makes a crash at any point leave the previous head intact.
func commit(env *Env, agentKey ed25519.PrivateKey, cp *agents.Checkpoint, state []byte, oldHead cid.Cid) (Head, error) {
	stateCID, err := env.Blocks.PutObjectBytes(state)
	if err != nil {
		return Head{}, fmt.Errorf("store state: %w", err)
	}
	cp.State = stateCID
	cp.StateSize = uint64(len(state))
	return commitCheckpoint(env, agentKey, cp, oldHead)
}

// commitCheckpoint signs cp (whose state is stored), stores it and moves
// the head.
func commitCheckpoint(env *Env, agentKey ed25519.PrivateKey, cp *agents.Checkpoint, oldHead cid.Cid) (Head, error) {
	cp.Holder = agents.PeerID(env.NodeKey.Public().(ed25519.PublicKey))
	cp.Time = env.Now().UnixNano()
	if err := cp.Sign(agentKey, env.NodeKey); err != nil {
		return Head{}, err
	}
	data, c, err := cp.Encode()
	if err != nil {
		return Head{}, err
	}
	if _, err := env.Blocks.Put(cid.DagCBOR, data); err != nil {
		return Head{}, fmt.Errorf("store checkpoint: %w", err)
	}
	// Pin before publishing the head so GC can never see a head it may collect.
	if !env.NoPins {
		if err := env.Blocks.Pin(c); err != nil {
			return Head{}, fmt.Errorf("pin checkpoint: %w", err)
		}
	}
	if err := env.Heads.SetHead(cp.Agent, c); err != nil {
		return Head{}, fmt.Errorf("commit head: %w", err)
	}
	if env.OnCheckpoint != nil {
		defer env.OnCheckpoint(Head{CID: c, Checkpoint: cp})
	}
	if oldHead.Defined() && !oldHead.Equals(c) && !env.NoPins {
		// The old head stays reachable through Prev; only the newest needs a pin.
		if err := env.Blocks.Unpin(oldHead); err != nil {
			env.Logger.Warn("unpin previous head", "cid", oldHead, "err", err)
		}
	}
	return Head{CID: c, Checkpoint: cp}, nil
}

func instanceConfig(env *Env, m *agents.Manifest, did string) wasmexec.InstanceConfig {
	short := agents.ShortDID(did)
	logf, hook := env.AgentLog, env.OnAgentLog
	log := func(msg string) { logf(short, msg) }
	if hook != nil {
		log = func(msg string) {
			logf(short, msg)
			hook(did, msg)
		}
	}
	return wasmexec.InstanceConfig{Manifest: m, AgentDID: did, Log: log}
}

// RunOptions control one run of an agent.
type RunOptions struct {
	TickInterval    time.Duration // between ticks when the agent has no more work; default 1s
	FastInterval    time.Duration // when the tick reported more work; default 10ms
	CheckpointEvery uint64        // commit a checkpoint every N ticks; default 5
	MaxTicks        uint64        // stop after this many ticks in this run; 0 = until ctx ends
	MaxFailures     int           // instance failures without a committed checkpoint before giving up; default 3
	Price           int64         // µc per second; <0 = keep the head's price
	// TickGrid aligns the ticks of a node's agents: a tick due at t runs at
	// t rounded to the nearest multiple of TickGrid of the wall clock, so
	// the runners wake together, a few times a second, rather than each at
	// its own instant (each wake-up costs the Go scheduler more than a
	// heartbeat agent's tick), and their checkpoints reach the log's flush
	// together. Default min(TickInterval/4, 250ms); negative: off.
	TickGrid time.Duration
	// Epoch is the lease epoch new checkpoints carry; 0 keeps the head's.
	// It must not be lower than the head's (Run rejects that).
	Epoch uint64
	// Fence, if set, returns the local time at which the run's lease ends.
	// A tick starts only if it ends (by its tick_timeout deadline) before
	// the fence; otherwise the run waits for the lease to be renewed or for
	// ctx to end. So no tick ever runs past the lease, however late the
	// lease driver notices that it ended.
	Fence func() time.Time
	// OnTick, if set, is called on the runner's goroutine after every
	// successful tick with the agent's new tick number (metrics, and the
	// handoff-pause benchmarks). It must not block.
	OnTick func(tick uint64)
	// AwaitCommit, if set, blocks until the checkpoint of seq is committed
	// (held by a majority of the agent's custody group) or ctx ends. A
	// journaled agent (manifest "journal") waits for each tick's step
	// before its next tick and each effect's intent before the effect, so
	// a new holder finds every tick and intent the agent acted on. Unset,
	// the local write is the commit (a lone node).
	AwaitCommit func(ctx context.Context, seq uint64) error
	// StartGate, if set, is waited for before each instantiation of the
	// agent (its first start and every restart after a failure), and its
	// release called once the instance is resumed: the hosting service
	// bounds the starts a node runs at once with it (ServiceConfig.Starts).
	// It returns an error only when ctx ended.
	StartGate func(ctx context.Context) (release func(), err error)
	// WorkGate, if set, is waited for before each tick and each
	// checkpoint, and its release called after it: the hosting service
	// bounds the ticks a node runs at once with it (ServiceConfig.Work),
	// so that runners woken together wait blocked rather than runnable.
	// It returns an error only when ctx ended.
	WorkGate func(ctx context.Context) (release func(), err error)
}

func (o *RunOptions) fill() {
	if o.TickInterval <= 0 {
		o.TickInterval = time.Second
	}
	if o.FastInterval <= 0 {
		o.FastInterval = 10 * time.Millisecond
	}
	switch {
	case o.TickGrid == 0:
		o.TickGrid = min(o.TickInterval/4, 250*time.Millisecond)
	case o.TickGrid < 0:
		o.TickGrid = 0
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = 5
	}
	if o.MaxFailures <= 0 {
		o.MaxFailures = 3
	}
}

// StopReason says why Run returned.
type StopReason string

const (
	StopContext  StopReason = "stopped"          // ctx was cancelled (SIGINT/SIGTERM)
	StopMaxTicks StopReason = "max-ticks"        // RunOptions.MaxTicks reached
	StopBudget   StopReason = "budget-exhausted" // budget reached zero
	StopFailed   StopReason = "failed"           // MaxFailures consecutive instance failures
)

// Result is the outcome of Run.
type Result struct {
	Reason   StopReason
	Head     Head
	Ticks    uint64 // ticks executed in this run (including any rolled back)
	Failures int    // instances replaced after a failure
}

// Loaded is an agent ready to run: its lineage verified, module compiled.
type Loaded struct {
	DID      string
	Head     Head
	Manifest *agents.Manifest
	Module   *wasmexec.Module
	Key      ed25519.PrivateKey
}

// Load verifies the agent's whole lineage from head back to genesis, checks
// that key belongs to the agent, and compiles its module (bound to the
// lineage by CID) so it can run. It reads only committed blocks.
func Load(ctx context.Context, env Env, head cid.Cid, key ed25519.PrivateKey) (*Loaded, error) {
	if err := env.validate(); err != nil {
		return nil, err
	}
	lin, err := verifyHead(env, head, "")
	if err != nil {
		return nil, err
	}
	pub, err := agents.ParseDID(lin.DID)
	if err != nil {
		return nil, err
	}
	if len(key) != ed25519.PrivateKeySize || !bytes.Equal(key.Public().(ed25519.PublicKey), pub) {
		return nil, fmt.Errorf("%w: %s", ErrKeyMismatch, lin.DID)
	}
	last := lin.Head()
	man, mod, err := compileAgent(ctx, env, last.Checkpoint)
	if err != nil {
		return nil, err
	}
	return &Loaded{DID: lin.DID, Head: Head{CID: last.CID, Checkpoint: last.Checkpoint}, Manifest: man, Module: mod, Key: key}, nil
}

// Prepare does what Load does without the agent's key — verify head's
// lineage (a checkpoint of did), remember it in env.Verified, compile the
// module — so that a host about to be offered the agent can Load it
// quickly. It returns Load's errors.
func Prepare(ctx context.Context, env Env, head cid.Cid, did string) error {
	if err := env.validate(); err != nil {
		return err
	}
	lin, err := verifyHead(env, head, did)
	if err != nil {
		return err
	}
	_, _, err = compileAgent(ctx, env, lin.Head().Checkpoint)
	return err
}

// verifyHead verifies head's lineage (above any checkpoint in env.Verified)
// and remembers head as verified.
func verifyHead(env Env, head cid.Cid, did string) (*agents.Lineage, error) {
	lin, err := agents.VerifyLineage(head, env.Blocks, agents.VerifyOptions{ExpectDID: did, Trusted: env.Verified.trusted()})
	if err != nil {
		return nil, err
	}
	env.Verified.NoteWalk(lin)
	env.Verified.AddBase(lin.Base())
	return lin, nil
}

// compileAgent reads cp's manifest (which must be canonical) and module, and
// compiles the module (cached by the runtime under its CID).
func compileAgent(ctx context.Context, env Env, cp *agents.Checkpoint) (*agents.Manifest, *wasmexec.Module, error) {
	mdata, err := env.Blocks.Get(cp.Manifest)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", cp.Manifest, err)
	}
	man, err := agents.ParseManifest(mdata)
	if err != nil {
		return nil, nil, fmt.Errorf("manifest %s: %w", cp.Manifest, err)
	}
	if !bytes.Equal(man.Canonical(), mdata) {
		return nil, nil, fmt.Errorf("manifest %s is not in canonical form: %w", cp.Manifest, agents.ErrMalformed)
	}
	// Compiled under its CID before (the bytes hashed to it then): reading
	// and re-hashing a module of megabytes for every load — each takeover,
	// handoff, join and prewarm — was a sixth of a node's CPU in a bulk
	// publish.
	if mod, ok := env.Runtime.Compiled(cp.Module.String()); ok {
		return man, mod, nil
	}
	wasm, err := env.Blocks.ReadObject(cp.Module, MaxModuleBytes)
	if err != nil {
		return nil, nil, fmt.Errorf("module %s: %w", cp.Module, err)
	}
	mod, err := env.Runtime.Compile(ctx, cp.Module.String(), wasm)
	if err != nil {
		return nil, nil, err
	}
	return man, mod, nil
}

// Run resumes the loaded agent from its head and ticks it until ctx ends,
// MaxTicks is reached or the budget runs out, committing a checkpoint every
// CheckpointEvery ticks and once more before returning (when it ticked
// since the last one). A failed instance is discarded and re-created from
// the last committed checkpoint; ticks since then are redone, but the budget
// they used stays spent (the budget never increases).
//
// Run returns ErrBudgetExhausted (with a valid Result) when the budget hits
// zero, ErrTooManyFailures after MaxFailures failures without a committed
// checkpoint in between, and
// ErrPriceTooHigh before running when the price exceeds the manifest's cap.
//
// Metering: every agent_tick call is billed its wall time (capped at the
// tick timeout, at least 1 ns) at the run's price; each checkpoint records
// the calls and time billed since its predecessor, and its budget is the
// predecessor's less agents.TickCost of that time — the step VerifyLineage
// recomputes. The tick that exhausts the budget completes and is charged
// what was left (never below 0).
func Run(ctx context.Context, env Env, a *Loaded, opts RunOptions) (Result, error) {
	if err := env.validate(); err != nil {
		return Result{}, err
	}
	opts.fill()
	if a.Head.Checkpoint.Stopped {
		return Result{}, fmt.Errorf("%w: %s (head %s)", ErrAgentStopped, a.DID, a.Head.CID)
	}
	r := &run{env: &env, a: a, opts: opts, head: a.Head, journal: a.Manifest.Journal}
	r.budget = a.Head.Checkpoint.Budget
	r.price = a.Head.Checkpoint.Price
	r.epoch = a.Head.Checkpoint.Epoch
	if opts.Epoch != 0 {
		if opts.Epoch < r.epoch {
			return Result{}, fmt.Errorf("%w: run at epoch %d, head %s is at epoch %d", ErrStaleEpoch, opts.Epoch, a.Head.CID, r.epoch)
		}
		r.epoch = opts.Epoch
	}
	if opts.Price >= 0 {
		r.price = opts.Price
	}
	if limit := a.Manifest.MigrationPolicy.MaxPricePerSecond; limit > 0 && r.price > limit {
		return Result{}, fmt.Errorf("%w: this host charges %d µc/s, the agent's manifest allows at most %d (migration_policy.max_price_per_second)", ErrPriceTooHigh, r.price, limit)
	}
	return r.loop(ctx)
}

// run is the state of one Run call; owned by the calling goroutine.
type run struct {
	env    *Env
	a      *Loaded
	opts   RunOptions
	head   Head
	inst   *wasmexec.Instance
	tick   uint64 // tick number of the agent's current in-memory state
	budget int64  // what is left: head budget less the metering below
	price  int64
	// Metering since the head, recorded in the next checkpoint: agent_tick
	// calls billed (failed and rolled-back ones too) and their time in ns.
	calls   uint64
	metered uint64
	epoch   uint64
	dirty   bool // ticks since the head was committed
	// failures counts instance failures (start, tick, checkpoint) since the
	// last committed checkpoint; MaxFailures of them stop the run. Counted
	// from the last commit, not the last good tick, so an agent whose ticks
	// work but whose checkpoints always fail cannot loop forever.
	failures    int
	lastFailure error
	abort       bool // stopped by ErrFenced: no final checkpoint
	res         Result
	// journal: the manifest asks for every tick to be journaled (a step
	// per tick, its state every CheckpointEvery ticks: stateTick is the
	// tick of the last state written). resume: the head is a partial tick
	// (an effect's intent) that the next tick finishes by replaying it.
	journal   bool
	stateTick uint64
	resume    *wasmexec.TickLog
	// paid: µc the agent paid (wallet_pay) since the last finished step;
	// budget is net of it. receipts: the agent's latest payment receipts,
	// newReceipts: changed since the head (written with the next step).
	paid        int64
	receipts    [][]byte
	newReceipts bool
	// ctx is the run's context while loop runs: a journal wait inside a
	// hostcall (whose own context outlives a stop) ends with it too.
	ctx context.Context
}

func (r *run) loop(ctx context.Context) (Result, error) {
	r.ctx = ctx
	defer func() {
		if r.inst != nil {
			r.inst.Close(context.Background())
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		if r.budget <= 0 {
			return r.finish(StopBudget, ErrBudgetExhausted)
		}
		if r.opts.MaxTicks > 0 && r.res.Ticks >= r.opts.MaxTicks {
			return r.finish(StopMaxTicks, nil)
		}
		select {
		case <-ctx.Done():
		case <-timer.C:
		}
		// A stop wins over a due tick (both may be ready at once: a journaled
		// agent's next tick can be due as soon as its commit is).
		if ctx.Err() != nil {
			return r.stopped(ctx)
		}
		if wait, fenced := r.fenced(); fenced {
			timer.Reset(wait)
			continue
		}
		if r.inst == nil {
			if err := r.gatedStart(ctx); err != nil {
				if ctx.Err() != nil {
					return r.finish(StopContext, nil) // no instance: nothing to checkpoint
				}
				r.failures++
				r.res.Failures++
				r.env.Logger.Error("agent instance failed to start", "agent", r.a.DID, "err", err)
				if r.failures >= r.opts.MaxFailures {
					return r.finish(StopFailed, fmt.Errorf("%w: %d failures without a committed checkpoint, last: %w", ErrTooManyFailures, r.failures, err))
				}
				timer.Reset(r.opts.TickInterval)
				continue
			}
			if wait, fenced := r.fenced(); fenced {
				// The start (and its wait for a slot) took long enough for
				// the lease to end meanwhile: the fence is judged again.
				timer.Reset(wait)
				continue
			}
		}
		// A tick in progress is not interrupted by shutdown (its own deadline
		// bounds it): stopping between ticks keeps every completed tick. Nor
		// by the budget running out: the last tick completes, is charged
		// what is left, and the final checkpoint records budget 0 — the
		// host gives at most one tick timeout unpaid, and the lineage says
		// the agent is spent (a cut tick could not be recorded at all).
		release, err := r.workGate(ctx)
		if err != nil {
			return r.stopped(ctx) // stopped while waiting: as between ticks
		}
		if wait, fenced := r.fenced(); fenced {
			// The wait for a slot took the lease past the tick's end.
			release()
			timer.Reset(wait)
			continue
		}
		var res wasmexec.TickResult
		if r.resume != nil {
			// The head is inside this tick (its holder journaled an effect's
			// intent and stopped): replay it up to there, then go on live.
			// The payments it replays are this tick's, not yet counted.
			res, err = r.inst.ReplayTick(context.WithoutCancel(ctx), *r.resume, true)
			if res.PaidReplayed > 0 {
				r.paid += res.PaidReplayed
				rcpts, _ := r.resume.PaidReceipts()
				for _, rc := range rcpts {
					purse{r}.AddReceipt(rc)
				}
			}
			r.resume = nil
		} else {
			res, err = r.inst.Tick(context.WithoutCancel(ctx))
		}
		release()
		r.res.Ticks++
		r.bill(res.Elapsed)
		if errors.Is(err, wasmexec.ErrHostPaused) {
			// The host paused during the tick and its time could not be
			// granted back (the lease fence): not the agent's failure.
			r.env.Logger.Warn("agent tick cut by a host pause; replacing the instance from the last checkpoint (not counted as the agent's failure)",
				"agent", r.a.DID, "tick", r.tick+1, "head", r.head.CID, "err", err)
			r.discard()
			timer.Reset(r.opts.TickInterval)
			continue
		}
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// The stop ended the wait for an effect's intent to commit: the
			// effect was not made and the head is that intent, which the
			// next run finishes. Not the agent's failure.
			r.env.Logger.Info("agent tick cut by a stop before its effect; the next run finishes it from the intent",
				"agent", r.a.DID, "tick", r.tick+1, "head", r.head.CID)
			r.discard()
			continue
		}
		if err != nil {
			r.failures++
			r.res.Failures++
			r.lastFailure = err
			r.env.Logger.Error("agent tick failed; replacing the instance from the last checkpoint",
				"agent", r.a.DID, "tick", r.tick+1, "head", r.head.CID, "err", err)
			r.discard()
			if r.failures >= r.opts.MaxFailures {
				return r.finish(StopFailed, fmt.Errorf("%w: %d failures without a committed checkpoint, last: %w", ErrTooManyFailures, r.failures, err))
			}
			timer.Reset(r.opts.TickInterval)
			continue
		}
		r.tick++
		r.dirty = true
		if r.opts.OnTick != nil {
			r.opts.OnTick(r.tick)
		}
		var spent time.Duration // journaling: counted into the interval
		if r.journal {
			t0 := time.Now()
			if err := r.journalTick(ctx, res.Log); err != nil {
				return r.res, err
			}
			spent = time.Since(t0)
			if r.failures >= r.opts.MaxFailures {
				return r.finish(StopFailed, fmt.Errorf("%w: %d failures without a state written, last: %w", ErrTooManyFailures, r.failures, r.lastFailure))
			}
		} else if r.tick-r.head.Checkpoint.Tick >= r.opts.CheckpointEvery {
			// Nor is a checkpoint in progress (its deadline bounds it): a
			// stop for a handoff or regroup that cancelled it killed the
			// instance, lost the ticks since the last checkpoint and made
			// the next holder run them again (seen in a mass failover).
			if err := r.gatedCheckpoint(context.WithoutCancel(ctx)); err != nil {
				return r.res, err
			}
			if r.failures >= r.opts.MaxFailures {
				return r.finish(StopFailed, fmt.Errorf("%w: %d failures without a committed checkpoint, last: %w", ErrTooManyFailures, r.failures, r.lastFailure))
			}
		}
		// The wait for the journal's commit is part of the interval to the
		// next tick, so a fast agent keeps its cadence when the commit
		// takes less than the interval.
		if res.More {
			timer.Reset(max(r.opts.FastInterval-spent, 0))
		} else {
			timer.Reset(onGrid(time.Now(), max(r.opts.TickInterval-spent, 0), r.opts.TickGrid))
		}
	}
}

// onGrid is the wait from now to now+d rounded to the nearest multiple of
// grid (0: d itself); never zero or negative with a grid, so a tick that
// ran past half the grid waits for the next point rather than firing at
// once. Every interval is then d ± grid/2, and on average d: the rounding
// does not drift.
func onGrid(now time.Time, d, grid time.Duration) time.Duration {
	if grid <= 0 {
		return d
	}
	at := now.Add(d).Round(grid)
	if !at.After(now) {
		at = at.Add(grid)
	}
	return at.Sub(now)
}

// fenced reports whether a tick started now could outlast the lease, and
// if so how long to wait before looking again: 25 ms while the lease is
// live or just ended (a renewal is due), 100 ms once it ended a while ago
// — a custody holder waiting for a renewal in its grace
// (lease.Config.GraceTicks). Each look computes the lease end (from
// lease.PairAcks, the acknowledgements' lock-free copy); a thousand fenced
// runs looking every FastInterval, under the pair table's lock then, took
// 8 % of a node's CPU in the collapse of session 20, when it was short of
// CPU already.
//
// A journaled agent's tick may start whenever the lease holds, however
// long it may run: everything it does outside its sandbox goes through a
// commit at this holder's epoch — each effect's intent before the effect,
// the tick's end before the next tick — which a group that moved on to a
// new holder refuses. So a tick that outlives the lease acts on nothing,
// and an agent whose HTTP calls need seconds can run under a 1.5 s lease
// (an unjournaled tick must fit in the lease: its checkpoint is its only
// output, written after a run of ticks).
func (r *run) fenced() (time.Duration, bool) {
	if r.opts.Fence == nil {
		return 0, false
	}
	horizon := time.Duration(r.a.Manifest.ResourceLimits.TickTimeoutMs) * time.Millisecond
	if r.journal {
		horizon = 0
	}
	now, fence := time.Now(), r.opts.Fence()
	if now.Add(horizon).Before(fence) {
		return 0, false
	}
	every := 25 * time.Millisecond
	if now.Sub(fence) > 250*time.Millisecond {
		every = 100 * time.Millisecond
	}
	return min(max(r.opts.FastInterval, every), r.opts.TickInterval), true
}

// workGate takes a slot of the run's WorkGate (a no-op release without
// one).
func (r *run) workGate(ctx context.Context) (func(), error) {
	if r.opts.WorkGate == nil {
		return func() {}, nil
	}
	return r.opts.WorkGate(ctx)
}

// gatedCheckpoint is checkpoint inside a slot of the run's WorkGate. The
// checkpoint is written whatever ctx says (the caller passes a context
// without cancel), so the slot is waited for without it too.
func (r *run) gatedCheckpoint(ctx context.Context) error {
	release, err := r.workGate(ctx)
	if err != nil {
		return err
	}
	defer release()
	return r.checkpoint(ctx)
}

// gatedStart is start inside the run's StartGate, if any.
func (r *run) gatedStart(ctx context.Context) error {
	if r.opts.StartGate == nil {
		return r.start(ctx)
	}
	release, err := r.opts.StartGate(ctx)
	if err != nil {
		return err
	}
	defer release()
	return r.start(ctx)
}

// start instantiates the agent and brings it to the committed head: resumed
// from the head's state, or — a journaled step without state — from the
// state below it, advanced by replaying the journaled ticks since.
func (r *run) start(ctx context.Context) error {
	cfg := instanceConfig(r.env, r.a.Manifest, r.a.DID)
	cfg.Fence = r.opts.Fence // paused time is granted back only within the lease
	cfg.Wallet, cfg.Price = purse{r}, r.price
	cfg.AgentPub = r.a.Key.Public().(ed25519.PublicKey)
	cfg.Sign = func(msg []byte) []byte { return ed25519.Sign(r.a.Key, msg) }
	if r.journal {
		cfg.BeforeEffect = r.intent
	}
	receipts, err := readReceipts(r.env, r.head.Checkpoint)
	if err != nil {
		return err
	}
	inst, err := r.env.Runtime.Instantiate(ctx, r.a.Module, cfg)
	if err != nil {
		return err
	}
	at, err := replayTo(ctx, r.env, r.a.Manifest, inst, r.head)
	if err != nil {
		inst.Close(ctx)
		return err
	}
	// The snapshot at the state resumed from, then the payments of the
	// journaled ticks replayed above it.
	r.receipts, r.newReceipts = receipts, len(at.receipts) > 0
	for _, rc := range at.receipts {
		purse{r}.AddReceipt(rc)
	}
	r.inst = inst
	r.tick = agents.CompletedTicks(r.head.Checkpoint)
	r.stateTick, r.resume = at.stateTick, at.partial
	r.dirty = false
	return nil
}

// discard drops the instance and every uncommitted tick.
func (r *run) discard() {
	if r.inst != nil {
		r.inst.Close(context.Background())
		r.inst = nil
	}
	r.tick = agents.CompletedTicks(r.head.Checkpoint)
	r.resume = nil
	r.dirty = false
	// Payments of the ticks dropped were never committed: a new instance
	// replays (and so re-applies) those a partial head journaled.
	r.paid = 0
	r.rebudget()
}

// journalTick commits the tick just run as a journaled step: its log, and
// the state when CheckpointEvery ticks passed since the last state was
// written; then waits until the group holds it (AwaitCommit), so the next
// tick starts only once a new holder would find this one.
func (r *run) journalTick(ctx context.Context, log wasmexec.TickLog) error {
	var state []byte
	if r.tick-r.stateTick >= r.opts.CheckpointEvery {
		var err error
		if state, err = r.inst.Checkpoint(context.WithoutCancel(ctx)); err != nil {
			// The instance is dead; journal the tick anyway (a new instance
			// replays it), its state at a later tick.
			r.env.Logger.Error("agent checkpoint failed; journaling the tick without its state",
				"agent", r.a.DID, "tick", r.tick, "err", err)
			r.discardKeepTick()
			state = nil
			if !errors.Is(err, wasmexec.ErrHostPaused) {
				r.failures++
				r.res.Failures++
				r.lastFailure = err
			}
		}
	}
	prev := r.head
	jc, err := r.env.Blocks.PutObjectBytes(log.Encode())
	if err != nil {
		return fmt.Errorf("store the journal of %s at tick %d: %w", r.a.DID, r.tick, err)
	}
	cp := &agents.Checkpoint{
		Agent: r.a.DID, Genesis: prev.Checkpoint.Genesis, Prev: prev.CID,
		Seq: prev.Checkpoint.Seq + 1, Tick: r.tick, Epoch: r.epoch,
		Module: prev.Checkpoint.Module, Manifest: prev.Checkpoint.Manifest,
		Budget: r.budget, Price: r.price, Calls: r.calls, Metered: r.metered,
		Controls: prev.Checkpoint.Controls, Journal: jc, Paid: r.paid,
		Receipts: prev.Checkpoint.Receipts,
	}
	if state != nil {
		if cp.Receipts, err = r.receiptsLink(); err != nil {
			return err
		}
	}
	var h Head
	if state != nil {
		h, err = commit(r.env, r.a.Key, cp, state, prev.CID)
		r.stateTick = r.tick
	} else {
		h, err = commitCheckpoint(r.env, r.a.Key, cp, prev.CID)
	}
	if err != nil {
		return fmt.Errorf("commit the journaled tick %d of %s: %w", r.tick, r.a.DID, err)
	}
	r.head = h
	r.dirty = false
	r.calls, r.metered, r.paid = 0, 0, 0
	if state != nil {
		// Failures count from the last state written: journaled steps
		// alone are no progress for an agent whose agent_checkpoint fails.
		r.newReceipts = false
		r.failures = 0
	}
	if r.opts.AwaitCommit != nil {
		// Cancelled (a stop, a lost lease): the loop sees ctx next.
		_ = r.opts.AwaitCommit(ctx, cp.Seq)
	}
	return nil
}

// discardKeepTick drops a dead instance after a tick whose log is still to
// be journaled: the next start replays up to it.
func (r *run) discardKeepTick() {
	if r.inst != nil {
		r.inst.Close(context.Background())
		r.inst = nil
	}
}

func (r *run) checkpoint(ctx context.Context) error {
	state, err := r.inst.Checkpoint(ctx)
	if err != nil {
		// The instance is dead; its ticks since the head cannot be saved.
		r.env.Logger.Error("agent checkpoint failed; rolling back to the last checkpoint",
			"agent", r.a.DID, "head", r.head.CID, "err", err)
		r.discard()
		if errors.Is(err, wasmexec.ErrHostPaused) {
			return nil // the host's pause, not the agent's failure
		}
		r.failures++
		r.res.Failures++
		r.lastFailure = err
		return nil
	}
	prev := r.head
	cp := &agents.Checkpoint{
		Agent: r.a.DID, Genesis: prev.Checkpoint.Genesis, Prev: prev.CID,
		Seq: prev.Checkpoint.Seq + 1, Tick: r.tick, Epoch: r.epoch,
		Module: prev.Checkpoint.Module, Manifest: prev.Checkpoint.Manifest,
		Budget: r.budget, Price: r.price, Calls: r.calls, Metered: r.metered,
		Controls: prev.Checkpoint.Controls, // the owner's records applied so far
		Paid:     r.paid,
	}
	if cp.Receipts, err = r.receiptsLink(); err != nil {
		return err
	}
	h, err := commit(r.env, r.a.Key, cp, state, prev.CID)
	if err != nil {
		return fmt.Errorf("commit checkpoint of %s at tick %d: %w", r.a.DID, r.tick, err)
	}
	r.head = h
	r.dirty = false
	r.calls, r.metered, r.paid, r.newReceipts = 0, 0, 0, false
	r.failures = 0 // progress is committed: failures count from here
	return nil
}

func (r *run) tickTimeoutNs() uint64 {
	return r.a.Manifest.ResourceLimits.TickTimeoutMs * uint64(time.Millisecond)
}

// bill meters one agent_tick call: its time, capped at the tick timeout
// (the host absorbs any overshoot of its own deadline, so the signed
// metering always satisfies VerifyLineage's bound), and at least 1 ns (no
// call is free). The budget is recomputed from the head's, with the same
// formula VerifyLineage applies to the checkpoint.
func (r *run) bill(elapsed time.Duration) {
	ns := uint64(max(elapsed, 1))
	ns = min(ns, r.tickTimeoutNs())
	r.calls++
	r.metered += ns
	r.rebudget()
}

// rebudget recomputes what is left: the head's budget less the metering
// and the payments since, as VerifyLineage recomputes a checkpoint's.
func (r *run) rebudget() {
	r.budget = max(agents.BudgetAfter(r.head.Checkpoint.Budget, r.metered, r.price)-r.paid, 0)
}

// stopped ends a run whose ctx was cancelled: with a final checkpoint of
// the ticks since the last one, unless the lease ended (ErrFenced).
func (r *run) stopped(ctx context.Context) (Result, error) {
	r.abort = errors.Is(context.Cause(ctx), ErrFenced)
	return r.finish(StopContext, nil)
}

// finish commits the final checkpoint when the agent ticked since the last
// one, and records the head in the result. When the budget ran out on a
// successful tick the final checkpoint records budget 0. (If it ran out on a
// failed tick there is no new state to record: tick numbers strictly
// increase along a lineage, so the committed head keeps its budget.)
func (r *run) finish(reason StopReason, err error) (Result, error) {
	// A journaled head without state gets it written down (the same tick),
	// so whoever resumes next need not replay — unless the head is inside
	// a tick (partial), which only finishing the tick may follow.
	unwritten := r.journal && !r.head.Checkpoint.State.Defined() && !r.head.Checkpoint.Partial
	if (r.dirty || unwritten) && r.inst != nil && !r.abort {
		if cerr := r.checkpoint(context.Background()); cerr != nil {
			err = errors.Join(err, cerr)
		}
	}
	if reason == StopBudget && r.head.Checkpoint.Budget != 0 {
		r.env.Logger.Warn("budget ran out on a failed tick; the last checkpoint keeps its budget",
			"agent", r.a.DID, "head", r.head.CID, "budget", r.head.Checkpoint.Budget)
	}
	r.res.Reason = reason
	r.res.Head = r.head
	return r.res, err
}
