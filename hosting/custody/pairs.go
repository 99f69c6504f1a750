package custody

import (
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/igor-mesh/igor-node/hosting/lease"
)

// Pair leases on a node (lease/pairs.go, DECISIONS D69): one lease.PairTable
// per manager, beaten by the engine on the manager's tick grid and stepped
// by the stream readers; every group's machine reads it through a
// groupPairs, which translates its ticks (a driver's tick 0 lies on the
// grid at its base). Enabled by Timing.PairLeases when the Net can carry
// pair messages (PairNet).

// PairNet is implemented by a Net that carries pair messages (MsgPairBeat,
// MsgPairAck), which belong to no group.
type PairNet interface {
	// SendPair queues msg for msg.To. Best effort, never blocks.
	SendPair(msg lease.Message)
}

// pairs serves one PairTable to the engine, the stream readers and the
// groups' machines and runners.
type pairs struct {
	m   *Manager
	net PairNet
	mu  sync.Mutex
	t   *lease.PairTable
	// beatAt: the local time of each peer's latest beat (any session), for
	// status (a standby of an idle group hears its holder only so).
	beatAt map[string]time.Time
	// revived: peers whose acknowledgements count again (fresh after
	// silence, or naming another session, defection or relinquishment
	// count) since the engine last looked: the holders of groups with them
	// are woken at once to establish those groups again, instead of at
	// their next lease-end wake (a healed member was heard ~1 s late).
	revived map[string]bool
	// acks: the table's acknowledgement history as of its latest change,
	// for the runners' fences, which read it without the lock (fenceAcks).
	acks atomic.Pointer[lease.PairAcks]
}

func newPairs(m *Manager, net PairNet) (*pairs, error) {
	t, err := lease.NewPairTable(m.cfg.Self, rand.Uint64()|1, m.cfg.Timing.HeartbeatTicks, m.cfg.Timing.LeaseTicks)
	if err != nil {
		return nil, err
	}
	p := &pairs{m: m, net: net, t: t, beatAt: map[string]time.Time{}, revived: map[string]bool{}}
	p.acks.Store(t.Acks())
	return p, nil
}

// fenceAcks is the acknowledgement history as one driver's fence reads it
// (lease.AckedPairs, ticks the driver's): without the table's lock. A
// runner looks at its fence every few milliseconds while it waits for a
// renewal; under the lock, a thousand of them queued the engine's beats
// and the readers' acknowledgements behind them — the renewals they were
// waiting for.
type fenceAcks struct {
	a         *lease.PairAcks
	base, now int64 // now: the grid tick
}

func (f fenceAcks) Acked(peer string, id lease.PairID, rel uint64) (int64, bool) {
	sent, ok := f.a.Acked(peer, id, rel, f.now)
	return sent - f.base, ok
}

// nowTick is the manager-grid tick of the clock now.
func (p *pairs) nowTick() int64 { return int64(p.m.now().Sub(p.m.t0) / p.m.cfg.Timing.Interval) }

// flushLocked sends what the table has to send.
func (p *pairs) flushLocked() {
	for _, msg := range p.t.Messages() {
		p.net.SendPair(msg)
	}
}

// tick is the engine's: the round due at tick now, to peers (nil: keep).
func (p *pairs) tick(now int64, peers []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if peers != nil {
		p.t.SetPeers(peers)
	}
	p.t.TickTo(now)
	p.flushLocked()
}

// deliver steps a pair message from the authenticated peer from. The table
// first catches up to the clock, so a beat counts as heard now, never at
// an earlier tick (that would shorten the promise it binds).
func (p *pairs) deliver(from string, msg lease.Message) error {
	if msg.From != from {
		return lease.ErrInvalidMessage
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.t.SetNow(p.nowTick())
	id0, rel0, ok0 := p.t.Latest(from)
	if err := p.t.Step(msg); err != nil {
		return err
	}
	switch msg.Type {
	case lease.MsgPairBeat:
		p.beatAt[from] = p.m.now()
	case lease.MsgPairAck:
		if id, rel, ok := p.t.Latest(from); ok && (!ok0 || id != id0 || rel != rel0) {
			p.revived[from] = true
		}
		p.acks.Store(p.t.Acks())
	}
	p.flushLocked()
	return nil
}

// takeRevived returns the peers revived since the last call.
func (p *pairs) takeRevived() map[string]bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.revived) == 0 {
		return nil
	}
	r := p.revived
	p.revived = map[string]bool{}
	return r
}

func (p *pairs) lastBeat(peer string) time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.beatAt[peer]
}

// groupPairs is the table as one driver's machine sees it (lease.Pairs).
type groupPairs struct {
	p    *pairs
	base int64
}

func (g groupPairs) Session() uint64 { return g.p.t.Session() } // constant: no lock

// locked runs f on the table under its lock.
func (g groupPairs) locked(f func(t *lease.PairTable)) {
	g.p.mu.Lock()
	defer g.p.mu.Unlock()
	f(g.p.t)
}

func (g groupPairs) Gen(peer string) (n uint64) {
	g.locked(func(t *lease.PairTable) { n = t.Gen(peer) })
	return n
}

func (g groupPairs) Rel(peer string) (n uint64) {
	g.locked(func(t *lease.PairTable) { n = t.Rel(peer) })
	return n
}

func (g groupPairs) Defect(peer string) { g.locked(func(t *lease.PairTable) { t.Defect(peer) }) }

func (g groupPairs) Relinquish(peer string) {
	g.locked(func(t *lease.PairTable) { t.Relinquish(peer) })
}

func (g groupPairs) Beat(peer string, session, rel uint64) (int64, bool) {
	g.p.mu.Lock()
	defer g.p.mu.Unlock()
	at, ok := g.p.t.Beat(peer, session, rel)
	return at - g.base, ok
}

func (g groupPairs) Acked(peer string, id lease.PairID, rel uint64) (int64, bool) {
	g.p.mu.Lock()
	defer g.p.mu.Unlock()
	g.p.t.SetNow(g.p.nowTick()) // an acknowledgement older than a lease counts no more
	sent, ok := g.p.t.Acked(peer, id, rel)
	return sent - g.base, ok
}

func (g groupPairs) Latest(peer string) (lease.PairID, uint64, bool) {
	g.p.mu.Lock()
	defer g.p.mu.Unlock()
	g.p.t.SetNow(g.p.nowTick())
	return g.p.t.Latest(peer)
}

// pairPeers is every member of every group here: the peers to beat. It is
// rebuilt only when a group's voters or the set of groups changed since
// the last call (votersGen): at a thousand groups the rebuild and its sort
// were the engine's largest cost, twice a second, for a set that changes
// at a regroup. Called by the engine's goroutine only, which owns the cache.
func (m *Manager) pairPeers() []string {
	gen := m.votersGen.Load()
	if m.peers.ok && m.peers.gen == gen {
		return m.peers.list
	}
	m.mu.Lock()
	var ps []string
	for _, d := range m.drivers {
		ps = append(ps, d.voters.Load().([]string)...)
	}
	m.mu.Unlock()
	slices.Sort(ps)
	ps = slices.Compact(ps)
	// A change during the rebuild advanced votersGen past gen: the next
	// call rebuilds again.
	m.peers.list, m.peers.gen, m.peers.ok = ps, gen, true
	return ps
}
