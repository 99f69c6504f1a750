// Package lease is the custody-group lease protocol of one agent as a pure
// state machine: no goroutines, no clock reads, no I/O. One Machine runs per
// (node, agent). docs/PROTOCOL.md, "Custody-group leases", is the protocol
// document; this package is its executable form.
//
// A custody group is a holder plus R standbys. The holder ticks the agent
// while it holds a lease that a majority of the group acknowledged; standbys
// store its checkpoints; a standby takes over at a higher epoch once the
// lease has lapsed by its own clock and a majority promised it that epoch.
// Time is logical: ticks of the node's local monotonic clock, which the
// driver reports with TickTo.
//
// # Usage
//
// The driver owns one Machine per hosted agent and, from a single goroutine:
//
//  1. Calls TickTo(clock tick) whenever it wakes (at the latest at
//     NextTick), where the clock tick is the node's monotonic time divided
//     by the tick interval; Step for every Message addressed to this node,
//     Propose after each checkpoint the running agent made, and Transfer to
//     hand the agent to a better host. It calls TickTo once, not Tick once
//     per missed tick: after a pause (SIGSTOP, a long GC, a starved
//     goroutine) TickTo fences a holder whose lease ended without first
//     sending the missed heartbeat rounds, which would reach the standbys
//     late and delay the takeover by a whole wait.
//  2. After each such call (and before any other), reads Ready and handles it
//     in this order:
//     a. Persist: if non-nil, write it durably (fsync) BEFORE anything else.
//     A crash may lose any state that was not persisted; the protocol is
//     safe exactly because no message ever depends on unpersisted state.
//     b. Stop: stop the agent and wait until it no longer ticks, BEFORE
//     sending Messages (a promise sent after a step-down lets another node
//     start the agent).
//     c. Committed: these checkpoints are held by a majority; publish the
//     head record, pin the blocks.
//     d. Start: resume the agent from this (committed) checkpoint and tick it
//     until a later Ready says Stop.
//     e. Messages: send them; they may be lost, duplicated or reordered.
//  3. Calls Advance.
//
// The agent may tick only between a Ready with Start and the next Ready with
// Stop. The machine emits Stop at the first TickTo that reaches the tick on
// which the lease ends by the holder's own clock, so a driver that delays
// TickTo or Ready handling must fence the agent by LeaseEnd on its monotonic
// clock itself, or count that delay into Config.DriftTicks.
//
// # Pair leases
//
// With Config.Pairs set, the leases of all the groups two nodes share are
// renewed by one PairTable beat per heartbeat round between them
// (pairs.go; docs/PROTOCOL.md "Pair leases"): a holder sends per-group
// rounds only to propose and to establish a group with a member, and an
// idle group sends nothing. The node's driver ticks its PairTable after
// its groups (so a holder that lapsed during a pause steps down before a
// beat leaves), steps the pair messages into it, serves it to every
// machine as Pairs, fences a running holder by LeaseView.End, and may
// skip a bound follower's wakes by FollowerWake.
//
// # Errors
//
// New returns ErrInvalidConfig. Step returns ErrInvalidMessage for a message
// not meant for this group or this node. Propose returns ErrNotHolder or
// ErrInvalidCheckpoint; Transfer returns ErrNotHolder, ErrNotCommitted or
// ErrInvalidMessage.
package lease
