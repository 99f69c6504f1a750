package hosting

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
)

// ErrAgentStopped: the agent's owner stopped it (its head says so); it runs
// again only after the owner's start record.
var ErrAgentStopped = errors.New("hosting: agent stopped by its owner")

// ErrUpgradeFailed: an owner's upgrade could not be applied — the new
// module did not compile or instantiate, or its agent_resume (or
// agent_checkpoint) failed on the agent's state. Nothing was written: the
// agent keeps its module (rolled back).
var ErrUpgradeFailed = errors.New("hosting: upgrade failed; the agent keeps its module")

// ErrInsideTick: the agent's head is inside a tick (its holder journaled an
// effect's intent and stopped); only the run that finishes the tick may
// follow it. Run the agent, then apply the record.
var ErrInsideTick = errors.New("hosting: the agent's head is inside a tick (an effect in doubt)")

// ApplyControl writes the checkpoint that applies the owner's record ctl on
// top of head, between ticks: same tick and state, no metering, the record
// inline, made at epoch by this node (docs/CHECKPOINT-FORMAT.md, "Control
// records"). The agent must not be running from head (stop it with a final
// checkpoint first): the new checkpoint is the head a run resumes from, if
// the record leaves the agent running. The record is checked against the
// genesis's owner and the head (agents.CheckControl); errors wrap
// agents.ErrControl for a record that may not be applied. Like a tick's
// checkpoint it is only written here: custody proposes it to the group.
func ApplyControl(ctx context.Context, env Env, head Head, key ed25519.PrivateKey, epoch uint64, ctl *agents.Control) (Head, error) {
	if err := env.validate(); err != nil {
		return Head{}, err
	}
	prev := head.Checkpoint
	if prev == nil {
		return Head{}, errors.New("hosting: ApplyControl: head without its checkpoint")
	}
	if epoch < prev.Epoch {
		return Head{}, fmt.Errorf("%w: control at epoch %d, head %s is at epoch %d", ErrStaleEpoch, epoch, head.CID, prev.Epoch)
	}
	if err := checkControl(&env, prev, ctl); err != nil {
		return Head{}, err
	}
	if prev.Partial {
		return Head{}, fmt.Errorf("%w: %s at tick %d; run it to finish the tick, then apply the record", ErrInsideTick, head.CID, prev.Tick)
	}
	if !prev.State.Defined() {
		// A journaled step: write its state down first (replayed), so the
		// record's checkpoint carries the state it applies to.
		var err error
		if head, err = writeStateDown(ctx, &env, head, key, epoch); err != nil {
			return Head{}, err
		}
		prev = head.Checkpoint
	}
	cp := &agents.Checkpoint{
		Agent: prev.Agent, Genesis: prev.Genesis, Prev: head.CID,
		Seq: prev.Seq + 1, Tick: prev.Tick, Epoch: epoch,
		State: prev.State, StateSize: prev.StateSize,
		Module: prev.Module, Manifest: prev.Manifest, Price: prev.Price,
		Control: ctl,
	}
	cp.Controls, cp.Stopped, cp.Budget = agents.ControlledNext(prev, prev.Budget, ctl)
	if ctl.Kind == agents.ControlUpgrade {
		cp.Module, cp.Manifest = ctl.Module, ctl.Manifest
		state, err := upgradeState(ctx, &env, prev, cp)
		if err != nil {
			return Head{}, err
		}
		return commit(&env, key, cp, state, head.CID)
	}
	return commitCheckpoint(&env, key, cp, head.CID)
}

// upgradeState passes prev's state through the new module of cp: a fresh
// instance under the new manifest resumes it and checkpoints it again.
// Any failure is ErrUpgradeFailed.
func upgradeState(ctx context.Context, env *Env, prev, cp *agents.Checkpoint) ([]byte, error) {
	fail := func(format string, args ...any) ([]byte, error) {
		return nil, fmt.Errorf("%w: %s", ErrUpgradeFailed, fmt.Sprintf(format, args...))
	}
	man, mod, err := compileAgent(ctx, *env, cp)
	if err != nil {
		return fail("module %s: %v", cp.Module, err)
	}
	if limit := man.MigrationPolicy.MaxPricePerSecond; limit > 0 && cp.Price > limit {
		return fail("the holder charges %d µc/s, the new manifest allows at most %d", cp.Price, limit)
	}
	state, err := env.Blocks.ReadObject(prev.State, int64(man.ResourceLimits.MaxStateBytes))
	if err != nil {
		return fail("the agent's state %s under the new manifest's max_state_bytes %d: %v", prev.State, man.ResourceLimits.MaxStateBytes, err)
	}
	inst, err := env.Runtime.Instantiate(ctx, mod, instanceConfig(env, man, cp.Agent))
	if err != nil {
		return fail("instantiate module %s: %v", cp.Module, err)
	}
	defer inst.Close(context.Background())
	if err := inst.Resume(ctx, state); err != nil {
		return fail("the new module's agent_resume refused the agent's state: %v", err)
	}
	out, err := inst.Checkpoint(ctx)
	if err != nil {
		return fail("the new module's agent_checkpoint after resuming: %v", err)
	}
	return out, nil
}

// PrepareUpgrade readies an upgrade record's module before the agent stops
// for it: the manifest (present, canonical) and the module (compiled into
// the runtime's cache). Errors wrap ErrUpgradeFailed.
func PrepareUpgrade(ctx context.Context, env Env, ctl *agents.Control) error {
	if err := env.validate(); err != nil {
		return err
	}
	if _, _, err := compileAgent(ctx, env, &agents.Checkpoint{Module: ctl.Module, Manifest: ctl.Manifest}); err != nil {
		return fmt.Errorf("%w: %v", ErrUpgradeFailed, err)
	}
	return nil
}

// checkControl checks ctl against head and its genesis (read from the store).
func checkControl(env *Env, head *agents.Checkpoint, ctl *agents.Control) error {
	gdata, err := env.Blocks.Get(head.Genesis)
	if err != nil {
		return fmt.Errorf("genesis %s: %w", head.Genesis, err)
	}
	g, err := agents.DecodeGenesis(gdata)
	if err != nil {
		return fmt.Errorf("genesis %s: %w", head.Genesis, err)
	}
	return agents.CheckControl(g, head, ctl)
}

// ControlHead reads the checkpoint c and checks that ctl may be applied on
// it (as ApplyControl will), before anything is stopped.
func (s *Service) ControlHead(c cid.Cid, ctl *agents.Control) (Head, error) {
	data, err := s.env.Blocks.Get(c)
	if err != nil {
		return Head{}, fmt.Errorf("checkpoint %s: %w", c, err)
	}
	cp, err := agents.DecodeCheckpoint(data)
	if err != nil {
		return Head{}, fmt.Errorf("checkpoint %s: %w", c, err)
	}
	if err := checkControl(&s.env, cp, ctl); err != nil {
		return Head{}, err
	}
	return Head{CID: c, Checkpoint: cp}, nil
}

// Control writes the checkpoint applying ctl on head (ApplyControl) for a
// custody holder: not pinned (the driver pins what its group accepted).
func (s *Service) Control(head Head, key ed25519.PrivateKey, epoch uint64, ctl *agents.Control) (Head, error) {
	env := s.env
	env.NoPins = true
	// Bounded: an upgrade instantiates the new module (compiled beforehand,
	// PrepareUpgrade) and runs its resume and checkpoint exports once.
	ctx, cancel := context.WithTimeout(s.ctx, controlLimit)
	defer cancel()
	return ApplyControl(ctx, env, head, key, epoch, ctl)
}

// PrepareUpgrade is PrepareUpgrade in this service's environment.
func (s *Service) PrepareUpgrade(ctx context.Context, ctl *agents.Control) error {
	return PrepareUpgrade(ctx, s.env, ctl)
}

// controlLimit bounds writing one control checkpoint.
const controlLimit = 20 * time.Second

// writeStateDown commits head's state, replayed from its journal, as a
// checkpoint of the same tick (no metering): what a run's final checkpoint
// does for a journaled agent, for a head no run here reached.
func writeStateDown(ctx context.Context, env *Env, head Head, key ed25519.PrivateKey, epoch uint64) (Head, error) {
	state, err := StateAt(ctx, *env, head)
	if err != nil {
		return Head{}, err
	}
	prev := head.Checkpoint
	cp := &agents.Checkpoint{
		Agent: prev.Agent, Genesis: prev.Genesis, Prev: head.CID,
		Seq: prev.Seq + 1, Tick: prev.Tick, Epoch: epoch,
		Module: prev.Module, Manifest: prev.Manifest, Budget: prev.Budget, Price: prev.Price,
		Controls: prev.Controls, Stopped: prev.Stopped,
	}
	return commit(env, key, cp, state, head.CID)
}
