package hosting

import (
	"context"
	"errors"
	"fmt"

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
		data, err := env.Blocks.Get(cp.Prev)
		if err != nil {
			return replayed{}, fmt.Errorf("checkpoint %s: %w", cp.Prev, err)
		}
		if cp, err = agents.DecodeCheckpoint(data); err != nil {
			return replayed{}, fmt.Errorf("checkpoint %s: %w", cp.Prev, err)
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
