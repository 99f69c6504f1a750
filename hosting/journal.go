package hosting

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/wasmexec"
)

// ErrReplay: a journaled tick could not be replayed to reach the agent's
// head — the journal is not a tick log, or the agent did not follow it (it
// is not deterministic given its observations, docs/ABI.md). The agent
// cannot be resumed at its head by this node.
var ErrReplay = errors.New("hosting: replay of the journaled ticks failed")

// maxReplaySteps bounds the walk from a head back to a checkpoint with
// state: a holder writes the state every CheckpointEvery ticks and when it
// stops, so a longer run of journaled steps means a lineage no holder of
// this node's making produced.
const maxReplaySteps = 10000

// replayed is where replayTo left an instance.
type replayed struct {
	stateTick uint64            // tick of the state it resumed from
	partial   *wasmexec.TickLog // the head's partial tick, still to finish
	steps     int               // journaled ticks replayed
	receipts  [][]byte          // the payments' receipts of the ticks replayed, in order
}

// replayTo brings inst (just instantiated) to head: it resumes the state
// of the nearest checkpoint at or below head that has one, then replays
// every journaled tick above it in order. A partial tick at head is not
// replayed but returned: the run finishes it (ReplayTick with partial), so
// its effect is issued with its journaled idempotency key. Partial steps
// below head are skipped: the step after each holds its tick's whole log.
func replayTo(ctx context.Context, env *Env, man *agents.Manifest, inst *wasmexec.Instance, head Head) (replayed, error) {
	var chain []*agents.Checkpoint // head first
	cp := head.Checkpoint
	for !cp.State.Defined() {
		if len(chain) >= maxReplaySteps {
			return replayed{}, fmt.Errorf("%w: more than %d journaled steps without state below %s", ErrReplay, maxReplaySteps, head.CID)
		}
		chain = append(chain, cp)
		prev := cp.Prev
		data, err := env.Blocks.Get(prev)
		if err != nil {
			return replayed{}, fmt.Errorf("checkpoint %s: %w", prev, err)
		}
		if cp, err = agents.DecodeCheckpoint(data); err != nil {
			return replayed{}, fmt.Errorf("checkpoint %s: %w", prev, err) // cp is nil here
		}
	}
	state, err := env.Blocks.ReadObject(cp.State, int64(man.ResourceLimits.MaxStateBytes))
	if err != nil {
		return replayed{}, fmt.Errorf("state %s: %w", cp.State, err)
	}
	if err := inst.Resume(ctx, state); err != nil {
		return replayed{}, err
	}
	out := replayed{stateTick: cp.Tick}
	for k := len(chain) - 1; k >= 0; k-- {
		step := chain[k]
		if step.Partial && k > 0 {
			continue
		}
		log, err := readJournal(env, step)
		if err != nil {
			return replayed{}, err
		}
		if step.Partial {
			out.partial = &log
			break
		}
		if _, err := inst.ReplayTick(ctx, log, false); err != nil {
			return replayed{}, fmt.Errorf("%w: tick %d (checkpoint seq %d): %w", ErrReplay, step.Tick, step.Seq, err)
		}
		rcpts, _ := log.PaidReceipts()
		out.receipts = append(out.receipts, rcpts...)
		out.steps++
	}
	return out, nil
}

// readJournal reads and decodes the tick log a journaled checkpoint links.
func readJournal(env *Env, cp *agents.Checkpoint) (wasmexec.TickLog, error) {
	data, err := env.Blocks.ReadObject(cp.Journal, agents.MaxJournalBytes)
	if err != nil {
		return wasmexec.TickLog{}, fmt.Errorf("journal %s of tick %d: %w", cp.Journal, cp.Tick, err)
	}
	log, err := wasmexec.DecodeTickLog(data)
	if err != nil {
		return wasmexec.TickLog{}, fmt.Errorf("%w: journal %s of tick %d: %w", ErrReplay, cp.Journal, cp.Tick, err)
	}
	return log, nil
}

// StateAt returns the agent's state at head: the head's own, or the state
// below it advanced by replaying the journaled ticks above that. For a
// partial head (inside a tick) it is the state after the last finished
// tick. Errors: ErrReplay, and those of reading blocks and compiling.
func StateAt(ctx context.Context, env Env, head Head) ([]byte, error) {
	if err := env.validate(); err != nil {
		return nil, err
	}
	cp := head.Checkpoint
	man, mod, err := compileAgent(ctx, env, cp)
	if err != nil {
		return nil, err
	}
	if cp.State.Defined() {
		return env.Blocks.ReadObject(cp.State, int64(man.ResourceLimits.MaxStateBytes))
	}
	inst, err := env.Runtime.Instantiate(ctx, mod, instanceConfig(&env, man, cp.Agent))
	if err != nil {
		return nil, err
	}
	defer inst.Close(context.Background())
	if _, err := replayTo(ctx, &env, man, inst, head); err != nil {
		return nil, err
	}
	return inst.Checkpoint(ctx)
}

// ReplayReport is what ReplayLineage found.
type ReplayReport struct {
	// Ticks: journaled ticks re-executed from their recorded observations.
	Ticks uint64 `json:"ticks_replayed"`
	// Compared: checkpoints whose stored state the replay reached byte for
	// byte (each journaled step with state, and each state written down
	// after journaled steps).
	Compared int `json:"states_compared"`
	// Unjournaled: ticks with no journal (an agent or a stretch of its
	// life not journaled): not re-executed; the next stored state is taken
	// as it is.
	Unjournaled uint64 `json:"ticks_unjournaled"`
	// Divergence, if set, is the first checkpoint the replay could not
	// reach: the lineage's states do not follow from its journal.
	Divergence *Divergence `json:"divergence,omitempty"`
}

// Divergence names the checkpoint where a replay parted from the lineage.
type Divergence struct {
	Seq    uint64 `json:"seq"`
	Tick   uint64 `json:"tick"`
	CID    string `json:"cid"`
	Reason string `json:"reason"`
}

// ReplayLineage re-executes every journaled tick of a verified lineage from
// the state before it, with the tick's recorded observations, and compares
// each stored state the journal leads to with the state the replay reached
// (docs/PROTOCOL.md, "Tick journal"). It proves the agent's states follow
// from its journal (that the holders ran the module they claim on the
// observations they recorded), not that the observations were true. Only
// rt and blocks are used: no key, no network.
func ReplayLineage(ctx context.Context, rt *wasmexec.Runtime, blocks Blocks, lin *agents.Lineage) (ReplayReport, error) {
	env := &Env{Runtime: rt, Blocks: blocks, AgentLog: func(string, string) {}}
	var rep ReplayReport
	var inst *wasmexec.Instance
	closeInst := func() {
		if inst != nil {
			inst.Close(context.Background())
			inst = nil
		}
	}
	defer closeInst()
	diverged := func(e agents.Entry, format string, args ...any) (ReplayReport, error) {
		rep.Divergence = &Divergence{Seq: e.Checkpoint.Seq, Tick: e.Checkpoint.Tick, CID: e.CID.String(), Reason: fmt.Sprintf(format, args...)}
		return rep, nil
	}
	// resync starts a fresh instance from e's stored state (its module and
	// manifest in force).
	resync := func(e agents.Entry) error {
		closeInst()
		man, mod, err := compileAgent(ctx, *env, e.Checkpoint)
		if err != nil {
			return err
		}
		state, err := blocks.ReadObject(e.Checkpoint.State, int64(man.ResourceLimits.MaxStateBytes))
		if err != nil {
			return fmt.Errorf("state %s: %w", e.Checkpoint.State, err)
		}
		if inst, err = rt.Instantiate(ctx, mod, instanceConfig(env, man, e.Checkpoint.Agent)); err != nil {
			return err
		}
		return inst.Resume(ctx, state)
	}
	compare := func(e agents.Entry) (bool, string, error) {
		got, err := inst.Checkpoint(ctx)
		if err != nil {
			return false, "", err
		}
		want, err := blocks.ReadObject(e.Checkpoint.State, agents.MaxStateBytesCap)
		if err != nil {
			return false, "", fmt.Errorf("state %s: %w", e.Checkpoint.State, err)
		}
		if string(got) == string(want) {
			return true, "", nil
		}
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		return false, fmt.Sprintf("the replay reached a state of %d bytes, the checkpoint stores %d; first difference at byte %d", len(got), len(want), i), nil
	}
	for k, e := range lin.Entries {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		cp := e.Checkpoint
		if k == 0 {
			if err := resync(e); err != nil {
				return rep, err
			}
			continue
		}
		prev := lin.Entries[k-1].Checkpoint
		switch {
		case cp.Partial:
			// The step that finishes the tick holds its whole log.
		case cp.Journal.Defined():
			if inst == nil {
				return diverged(e, "journaled tick %d follows no state the replay could start from", cp.Tick)
			}
			log, err := readJournal(env, cp)
			if err != nil {
				return diverged(e, "%v", err)
			}
			if _, err := inst.ReplayTick(ctx, log, false); err != nil {
				return diverged(e, "tick %d: %v", cp.Tick, err)
			}
			rep.Ticks++
			if cp.State.Defined() {
				ok, why, err := compare(e)
				if err != nil {
					return rep, err
				}
				if !ok {
					return diverged(e, "tick %d: %s", cp.Tick, why)
				}
				rep.Compared++
			}
		case !prev.State.Defined() && cp.Tick == prev.Tick && cp.Control == nil:
			// The state of journaled ticks written down.
			ok, why, err := compare(e)
			if err != nil {
				return rep, err
			}
			if !ok {
				return diverged(e, "tick %d's state written down: %s", cp.Tick, why)
			}
			rep.Compared++
		default:
			// Ticks without a journal, or an owner's record (an upgrade
			// changes the module): go on from the stored state.
			rep.Unjournaled += agents.CompletedTicks(cp) - agents.CompletedTicks(prev)
			if err := resync(e); err != nil {
				return rep, err
			}
		}
	}
	return rep, nil
}

// purse is the run's wasmexec.Wallet: the budget the agent may spend (net
// of metering and payments since the head) and its receipts.
type purse struct{ r *run }

func (p purse) Balance() int64 { return p.r.budget }

func (p purse) Debit(amount int64) bool {
	if amount <= 0 || p.r.budget < amount {
		return false
	}
	p.r.paid += amount
	p.r.rebudget()
	return true
}

func (p purse) Receipts() [][]byte { return p.r.receipts }

func (p purse) AddReceipt(rc []byte) {
	r := p.r
	if len(r.receipts) >= agents.MaxReceipts {
		r.receipts = slices.Clone(r.receipts[len(r.receipts)-agents.MaxReceipts+1:])
	}
	r.receipts = append(r.receipts, slices.Clone(rc))
	r.newReceipts = true
}

// intent journals an effect's intent (wasmexec.InstanceConfig.BeforeEffect)
// as a partial checkpoint — the tick's log so far, the intent last; no
// metering, no payment, the budget unchanged — and waits until the group
// holds it: only then may the effect happen (docs/PROTOCOL.md, "Effects in
// doubt"). It runs inside the tick, on the run's goroutine.
func (r *run) intent(ctx context.Context, e wasmexec.Effect) (string, error) {
	prev := r.head
	jc, err := r.env.Blocks.PutObjectBytes(e.Log.Encode())
	if err != nil {
		return "", fmt.Errorf("store the intent of %s at tick %d: %w", r.a.DID, r.tick+1, err)
	}
	cp := &agents.Checkpoint{
		Agent: r.a.DID, Genesis: prev.Checkpoint.Genesis, Prev: prev.CID,
		Seq: prev.Checkpoint.Seq + 1, Tick: r.tick + 1, Epoch: r.epoch,
		Module: prev.Checkpoint.Module, Manifest: prev.Checkpoint.Manifest,
		Budget: prev.Checkpoint.Budget, Price: r.price,
		Controls: prev.Checkpoint.Controls, Journal: jc, Partial: true,
		Receipts: prev.Checkpoint.Receipts,
	}
	h, err := commitCheckpoint(r.env, r.a.Key, cp, prev.CID)
	if err != nil {
		return "", fmt.Errorf("commit the intent of %s at tick %d: %w", r.a.DID, cp.Tick, err)
	}
	r.head = h
	if r.opts.AwaitCommit != nil {
		// The hostcall's context outlives a stop of the run: end the wait
		// with either.
		wctx, cancel := context.WithCancel(ctx)
		defer cancel()
		if r.ctx != nil {
			stop := context.AfterFunc(r.ctx, cancel)
			defer stop()
		}
		if err := r.opts.AwaitCommit(wctx, cp.Seq); err != nil {
			return "", fmt.Errorf("the intent of %s at tick %d was not committed: %w", r.a.DID, cp.Tick, err)
		}
	}
	return e.Key, nil
}

// receiptsLink is the receipts link of the next checkpoint: the head's, or
// a new object when a payment added a receipt since.
func (r *run) receiptsLink() (cid.Cid, error) {
	if !r.newReceipts {
		return r.head.Checkpoint.Receipts, nil
	}
	b := binary.LittleEndian.AppendUint32(nil, uint32(len(r.receipts)))
	for _, rc := range r.receipts {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(rc)))
		b = append(b, rc...)
	}
	c, err := r.env.Blocks.PutObjectBytes(b)
	if err != nil {
		return cid.Undef, fmt.Errorf("store the receipts of %s: %w", r.a.DID, err)
	}
	return c, nil
}

// readReceipts decodes the receipts object cp links (none without one).
func readReceipts(env *Env, cp *agents.Checkpoint) ([][]byte, error) {
	if !cp.Receipts.Defined() {
		return nil, nil
	}
	data, err := env.Blocks.ReadObject(cp.Receipts, 4+agents.MaxReceipts*(4+agents.MaxReceiptBytes))
	if err != nil {
		return nil, fmt.Errorf("receipts %s: %w", cp.Receipts, err)
	}
	bad := func(why string) ([][]byte, error) {
		return nil, fmt.Errorf("%w: receipts %s: %s", agents.ErrMalformed, cp.Receipts, why)
	}
	if len(data) < 4 {
		return bad("shorter than its count")
	}
	n := binary.LittleEndian.Uint32(data)
	if n > agents.MaxReceipts {
		return bad(fmt.Sprintf("%d receipts, at most %d", n, agents.MaxReceipts))
	}
	p, out := 4, make([][]byte, 0, n)
	for range n {
		if len(data)-p < 4 {
			return bad("truncated")
		}
		l := int(binary.LittleEndian.Uint32(data[p:]))
		p += 4
		if l > agents.MaxReceiptBytes || l > len(data)-p {
			return bad(fmt.Sprintf("a receipt of %d bytes", l))
		}
		out = append(out, data[p:p+l])
		p += l
	}
	if p != len(data) {
		return bad("trailing bytes")
	}
	return out, nil
}
