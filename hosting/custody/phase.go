package custody

import "fmt"

// phase is what a driver is doing about its agent, on top of the lease
// machine's role (DECISIONS D56). A driver is in exactly one phase; the
// moves between phases are listed in phaseMoves and made only through
// driver.to, which refuses (and counts) any other. Work in flight off the
// driver's goroutine whose result comes back as an event — a placement
// review, a membership change being prepared, a lineage fetch — is a job,
// not a phase: it does not change what the driver steps or sends.
type phase uint8

const (
	// phIdle: the agent is not run nor moved from here: a follower, a
	// candidate, or a holder whose recovery checkpoint is not committed yet
	// (the lease machine's Start comes then).
	phIdle phase = iota
	// phCampaign: asked to campaign for the first lease of a new or
	// revived group, until a holder is known (this node or one heard).
	phCampaign
	// phStarting: holding; the agent is to start from startFrom (retried
	// every startRetry while it cannot: no slot, blocks missing).
	phStarting
	// phHolding: holding; the agent runs here, or stopped by itself
	// (budget exhausted, repeated failures) and stays held.
	phHolding
	// phChanging: holding, the agent runs; new members joined in place
	// (Hooks.Replace) and their configuration is to be proposed by
	// changeBy.
	phChanging
	// phHandoff: the agent stopped with a final checkpoint; the lease goes
	// to target once that is committed.
	phHandoff
	// phRegroup: the agent stopped with a final checkpoint; Hooks.Regroup
	// runs once that is committed.
	phRegroup
	// phRegrouping: Hooks.Regroup runs (placing a new group). It ends with
	// the driver (this node leaves) or, if the old group was untouched,
	// with the agent started again here.
	phRegrouping
	// phControl: holding; an owner's control record is proposed in a
	// checkpoint (the agent stopped first); once it is committed the agent
	// starts again (phStarting) or stays held (phHolding).
	phControl
	// phLeaving: a committed membership change removed this node; Leave
	// runs. Final.
	phLeaving
	// phFailed: the lease state could not be persisted; the driver takes
	// no part until the node restarts. Final.
	phFailed
)

var phaseNames = [...]string{"idle", "campaign", "starting", "holding", "changing", "handoff", "regroup", "regrouping", "control", "leaving", "failed"}

func (p phase) String() string {
	if int(p) < len(phaseNames) {
		return phaseNames[p]
	}
	return fmt.Sprintf("phase(%d)", p)
}

// holding reports whether p belongs to a holder: it ends (to phIdle)
// when the lease machine stops running the agent. phRegrouping does not:
// the regroup hook goes on after the old group's lease ended.
func (p phase) holding() bool {
	switch p {
	case phStarting, phHolding, phChanging, phHandoff, phRegroup, phControl:
		return true
	}
	return false
}

// quiet reports whether a driver in p steps only lease traffic, which the
// engine may run inline (engine.go): every other phase polls on the
// driver's own timer.
func (p phase) quiet() bool { return p == phIdle || p == phHolding }

// phaseMoves lists the moves driver.to makes. Any phase may also move to
// phLeaving or phFailed, which are final.
var phaseMoves = map[phase][]phase{
	phIdle:       {phCampaign, phStarting},
	phCampaign:   {phIdle, phStarting},
	phStarting:   {phIdle, phStarting, phHolding, phHandoff, phRegroup},
	phHolding:    {phIdle, phStarting, phChanging, phHandoff, phRegroup, phControl},
	phChanging:   {phIdle, phStarting, phHolding},
	phHandoff:    {phIdle, phStarting, phHolding},
	phRegroup:    {phIdle, phStarting, phRegrouping},
	phRegrouping: {phIdle, phStarting},
	phControl:    {phIdle, phStarting, phHolding},
}

// canMove reports whether from → to is a move of the phase machine.
func canMove(from, to phase) bool {
	if from == phLeaving || from == phFailed {
		return false
	}
	if to == phLeaving || to == phFailed || from == to {
		return true
	}
	for _, p := range phaseMoves[from] {
		if p == to {
			return true
		}
	}
	return false
}

// job is work in flight off the driver's goroutine; at most one of each
// kind per driver.
type job uint8

const (
	jobReview  job = 1 << iota // Hooks.Review
	jobReplace                 // Hooks.Replace
	jobFill                    // a fetch of missing lineage (fillLineage)
)

type jobs uint8

func (s jobs) has(j job) bool { return s&jobs(j) != 0 }
func (s *jobs) add(j job)     { *s |= jobs(j) }
func (s *jobs) done(j job)    { *s &^= jobs(j) }
