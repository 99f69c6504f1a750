package hosting

import (
	"crypto/ed25519"
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
)

// ErrAgentStopped: the agent's owner stopped it (its head says so); it runs
// again only after the owner's start record.
var ErrAgentStopped = errors.New("hosting: agent stopped by its owner")

// ApplyControl writes the checkpoint that applies the owner's record ctl on
// top of head, between ticks: same tick and state, no metering, the record
// inline, made at epoch by this node (docs/CHECKPOINT-FORMAT.md, "Control
// records"). The agent must not be running from head (stop it with a final
// checkpoint first): the new checkpoint is the head a run resumes from, if
// the record leaves the agent running. The record is checked against the
// genesis's owner and the head (agents.CheckControl); errors wrap
// agents.ErrControl for a record that may not be applied. Like a tick's
// checkpoint it is only written here: custody proposes it to the group.
func ApplyControl(env Env, head Head, key ed25519.PrivateKey, epoch uint64, ctl *agents.Control) (Head, error) {
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
	cp := &agents.Checkpoint{
		Agent: prev.Agent, Genesis: prev.Genesis, Prev: head.CID,
		Seq: prev.Seq + 1, Tick: prev.Tick, Epoch: epoch,
		State: prev.State, StateSize: prev.StateSize,
		Module: prev.Module, Manifest: prev.Manifest, Price: prev.Price,
		Control: ctl,
	}
	cp.Controls, cp.Stopped, cp.Budget = agents.ControlledNext(prev, prev.Budget, ctl)
	return commitCheckpoint(&env, key, cp, head.CID)
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
	return ApplyControl(env, head, key, epoch, ctl)
}
