package custody

import (
	"slices"
	"time"

	"github.com/igor-mesh/igor-node/hosting/lease"
)

// The engine: how a node's groups are stepped (DECISIONS D53).
//
// Each driver keeps its goroutine, but only for work that waits — a
// persist, starting or stopping the agent, the results of fetches, reviews
// and membership changes. Lease traffic in the steady state does not wake
// it:
//
//   - Ticks: one engine goroutine per manager wakes on the manager's tick
//     grid and steps, in one pass, every quiet driver whose machine has
//     something to do at this tick (driver.wake: lease.Machine.NextTick).
//     A holder's heartbeat rounds of all its groups thus leave in one pass,
//     and with a Net that batches (Batcher) as one write per peer.
//   - Messages: Deliver steps a quiet driver's machine on the caller's
//     goroutine (the node's stream reader), so an acknowledgement or a
//     heartbeat costs no goroutine switch.
//   - Pair leases (pairs.go, D69): the engine also beats every peer once a
//     round, and skips a quiet bound follower's wake when its holder's
//     beats have moved its lapse (lease.FollowerWake), so an idle group
//     costs its followers nothing and its holder a step about once per
//     lease term.
//
// A driver is quiet when it has no campaign, handoff, regroup, start retry
// or configuration change in flight (those poll on the driver's own timer
// every tick, as before). An inline step that produces a Ready needing more
// than sends — a persist, a stop, a start, a removal — leaves it pending and
// kicks the loop, which handles it before stepping anything else: the order
// of the Ready (persist, stop, committed, start, send) is kept, and nothing
// a persist precedes is sent before it. A message is stepped inline only
// when no event for the driver is queued, so it never overtakes one.
//
// The lock (driver.own) hands ownership of the machine to one goroutine at
// a time; inline callers only TryLock it, so a driver busy in a slow call
// never blocks the engine or a stream reader: the work is queued for it.

// Batcher is implemented by a Net that can hold back sends and write them
// to each peer together: between Cork and the matching Uncork, messages
// and pushes are buffered per peer. Corks nest.
type Batcher interface {
	Cork()
	Uncork()
}

// stepInline catches the machine up to the clock and steps msg (if not
// nil) on the caller's goroutine, when the driver is quiet and idle. It
// reports false when it did not, and the caller must hand the work to the
// loop (kick, or queue the message).
func (d *driver) stepInline(msg *lease.Message) bool {
	if !d.own.TryLock() {
		return false
	}
	if d.ctx.Err() != nil {
		d.own.Unlock()
		return true // the driver stopped: nothing to do
	}
	if d.queued.Load() != 0 || !d.quiet() {
		d.own.Unlock()
		return false
	}
	d.m.inline.Add(1)
	d.inl = true
	d.catchUp()
	if msg != nil {
		if d.pending {
			// The catch-up left work for the loop: the message waits
			// behind it (or is lost if the inbox is full).
			d.trySend(event{kind: evMsg, msg: *msg})
		} else {
			d.step(*msg)
		}
	}
	if !d.pending {
		d.after()
	}
	d.inl = false
	quiet := d.setWake()
	d.own.Unlock()
	if !quiet {
		d.kick() // its loop takes over (and arms its timer)
	}
	return true
}

// runEngine is the manager's tick loop.
func (m *Manager) runEngine() {
	defer close(m.engineDone)
	iv := m.cfg.Timing.Interval
	t := time.NewTimer(iv)
	defer t.Stop()
	var ds []*driver
	b, batch := m.cfg.Net.(Batcher)
	prev := int64(0)
	for {
		next := (time.Since(m.t0)/iv + 1) * iv
		t.Reset(time.Until(m.t0.Add(next)))
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
		start := time.Now()
		late := start.Sub(m.t0.Add(next))
		now := int64(time.Since(m.t0) / iv)
		ds = m.appendDrivers(ds[:0])
		if batch {
			b.Cork()
		}
		var revived map[string]bool
		if m.pairs != nil {
			revived = m.pairs.takeRevived()
		}
		for _, d := range ds {
			w := d.wake.Load()
			if w > now && w != never && len(revived) > 0 && slices.ContainsFunc(d.voters.Load().([]string), func(p string) bool { return revived[p] }) {
				// A member answers again: its holder establishes the group
				// with it now (lease.Machine.wantRound), not at its next wake.
				if d.wake.CompareAndSwap(w, now) {
					w = now
				}
			}
			if w > now {
				continue
			}
			if f := d.follow.Load(); f != nil {
				// A bound follower whose holder kept beating has nothing to
				// do: move its wake, not the machine (CAS: the driver may
				// have set a newer wake meanwhile).
				if t := d.base + f.Tick(groupPairs{p: m.pairs, base: d.base}); t > now {
					d.wake.CompareAndSwap(w, t)
					continue
				}
			}
			if !d.stepInline(nil) {
				d.kick()
			}
		}
		// The pair round goes out after the groups were stepped: a holder
		// whose lease lapsed during a pause of this process has stepped down
		// (and relinquished) before a beat could renew its members' promise.
		// After a pause longer than a lease the round waits a tick more, for
		// step-downs handed to drivers' loops.
		if m.pairs != nil && now-prev <= int64(m.cfg.Timing.LeaseTicks) {
			var peers []string
			if now%int64(m.cfg.Timing.HeartbeatTicks) == 0 {
				peers = m.pairPeers() // the groups' members, refreshed once a round
			}
			m.pairs.tick(now, peers)
		}
		prev = now
		if batch {
			b.Uncork()
		}
		clear(ds) // no references kept to drivers that leave
		m.noteRound(late, time.Since(start))
	}
}

// lateRound: an engine round that began this much after its grid time, or
// took this long, is counted and logged: every holder's lease is renewed
// by these rounds, so a node whose rounds come 300 ms late is a few such
// rounds from self-fencing all its holders at once.
const lateRound = 300 * time.Millisecond

// noteRound counts and logs (at most once per lateLogEvery) an engine
// round that began late or ran long: the process was paused, or the
// engine's goroutine waited for a CPU behind other runnable work (its
// sends are queued, so a slow peer does not hold a round; DECISIONS D79).
func (m *Manager) noteRound(late, took time.Duration) {
	if late < lateRound && took < lateRound {
		return
	}
	m.lateRounds.Add(1)
	if time.Since(m.lateLogged) < lateLogEvery {
		return
	}
	m.lateLogged = time.Now()
	m.cfg.Logger.Warn("custody engine: a round ran late; holders self-fence when rounds are later than their lease; the node was paused or short of CPU (see igor_agent_starts_waiting and go_sched_latencies_seconds)",
		"late", late.Round(time.Millisecond), "took", took.Round(time.Millisecond), "late rounds", m.lateRounds.Load())
}

const lateLogEvery = 5 * time.Second

// EngineStats counts how the drivers were stepped since the manager
// started: Inline, steps the engine or Deliver ran on the caller's
// goroutine; Loop, wake-ups of drivers' goroutines (slow work, or a driver not
// quiet). At steady state Inline carries the lease traffic and Loop grows
// with commits only.
type EngineStats struct {
	Inline, Loop uint64
	Late         uint64 // rounds begun or run lateRound late (noteRound)
}

// EngineStats reports the counts so far.
func (m *Manager) EngineStats() EngineStats {
	return EngineStats{Inline: m.inline.Load(), Loop: m.loops.Load(), Late: m.lateRounds.Load()}
}

func (m *Manager) appendDrivers(ds []*driver) []*driver {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, d := range m.drivers {
		ds = append(ds, d)
	}
	return ds
}
