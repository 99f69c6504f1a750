package wasmexec

import (
	"context"
	"fmt"
)

// Replay re-executes one recorded tick and returns the state it leaves: a
// fresh instance of m (cfg's Manifest and AgentDID; cfg.Clock, Rand and Log
// serve only calls outside the tick), agent_init, agent_resume(preState),
// then agent_tick with every hostcall answered from log in order, then a
// checkpoint. For a deterministic agent the result equals the recorded
// post-tick state byte for byte; comparing them is the caller's job.
//
// Errors: ErrDivergence (a hostcall that does not match the next entry, or
// entries left over; the message says which), ErrBadTickLog (log is not a
// well-formed tick log), and everything Instantiate, Resume, Tick and
// Checkpoint return.
func (r *Runtime) Replay(ctx context.Context, m *Module, cfg InstanceConfig, preState []byte, log TickLog) ([]byte, error) {
	if err := checkTickLog(log); err != nil {
		return nil, err
	}
	rep := &replayState{log: log, whole: true}
	inst, err := r.instantiate(ctx, m, cfg, rep)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	defer inst.Close(ctx)
	if err := inst.Resume(ctx, preState); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	if _, err := inst.Tick(ctx); err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	if rep.pos != len(log.Entries) {
		next := log.Entries[rep.pos]
		return nil, fmt.Errorf("%w: the tick ended with %d of %d log entries unused (next: %s, value %d)",
			ErrDivergence, len(log.Entries)-rep.pos, len(log.Entries), next.Kind, next.Value)
	}
	post, err := inst.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("replay: %w", err)
	}
	return post, nil
}
