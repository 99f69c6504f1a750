package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/multiformats/go-multiaddr"
)

var (
	// ErrBadPeerAddr: an address to connect to that is not a multiaddr
	// ending in /p2p/<peer id>, or that names this node.
	ErrBadPeerAddr = errors.New("node: bad peer address")
	// ErrPeerUnreachable: a peer could not be dialled (refused, no route,
	// handshake failed, or the timeout passed; the error then also matches
	// context.DeadlineExceeded).
	ErrPeerUnreachable = errors.New("node: peer unreachable")
)

// DefaultConnectTimeout bounds Connect when its context has no deadline.
const DefaultConnectTimeout = 10 * time.Second

// Re-bootstrap timing (docs/DECISIONS.md D48): a node with bootstrap peers
// that finds itself alone (no connected peer, or an empty routing table)
// dials them again, first after rebootstrapFirst, then backing off by
// doubling to rebootstrapMax; while it has peers it looks every
// rebootstrapCheck.
const (
	rebootstrapFirst = time.Second
	rebootstrapMax   = 20 * time.Second
	rebootstrapCheck = 2 * time.Second
)

// ParsePeerAddr reads a multiaddr ending in /p2p/<peer id>
// ("/ip4/192.0.2.1/tcp/4001/p2p/12D3KooW…"). Errors wrap ErrBadPeerAddr and
// say what a good one looks like.
func ParsePeerAddr(s string) (peer.AddrInfo, error) {
	ma, err := multiaddr.NewMultiaddr(s)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("%w: %q is not a multiaddr (%v); example: /ip4/192.0.2.1/tcp/4001/p2p/12D3KooW…", ErrBadPeerAddr, s, err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		return peer.AddrInfo{}, fmt.Errorf("%w: %q must end in /p2p/<peer id> (%v); the peer's daemon prints its addresses as 'addr …' lines", ErrBadPeerAddr, s, err)
	}
	return *ai, nil
}

// Connect dials the peer at addr (a multiaddr ending in /p2p/<peer id>) and
// returns its ID. Once connected, the peer enters the DHT routing table as
// any other. A dial backoff left by earlier failures is cleared first: an
// operator asking to connect means now. The connection is not remembered
// across restarts (use --bootstrap for that). Without a deadline on ctx,
// DefaultConnectTimeout applies.
//
// Errors: ErrBadPeerAddr (malformed, or this node's own ID),
// ErrPeerUnreachable (also matching context.DeadlineExceeded when the
// timeout passed), or ctx's error.
func (m *Mesh) Connect(ctx context.Context, addr string) (peer.ID, error) {
	ai, err := ParsePeerAddr(addr)
	if err != nil {
		return "", err
	}
	if ai.ID == m.Host.ID() {
		return "", fmt.Errorf("%w: %s is this node's own peer ID", ErrBadPeerAddr, ai.ID)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultConnectTimeout)
		defer cancel()
	}
	m.clearDialBackoff(ai.ID)
	if err := m.Host.Connect(ctx, ai); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("%w: %s at %v: no answer in time: %w", ErrPeerUnreachable, ai.ID, ai.Addrs, ctx.Err())
		}
		return "", fmt.Errorf("%w: %s at %v: %v", ErrPeerUnreachable, ai.ID, ai.Addrs, err)
	}
	return ai.ID, nil
}

// clearDialBackoff forgets libp2p's dial backoff for p. The swarm refuses
// to dial a peer for 5 s + tries² s (up to 5 min) after failures: without
// this, a bootstrap peer that was down for a while would stay undialled for
// minutes after it came back, whatever our own schedule says.
func (m *Mesh) clearDialBackoff(p peer.ID) {
	if sw, ok := m.Host.Network().(interface{ Backoff() *swarm.DialBackoff }); ok {
		sw.Backoff().Clear(p)
	}
}

// isolated reports whether this node has nobody to talk to: no connected
// peer, or none in its DHT routing table.
func (m *Mesh) isolated() bool {
	return len(m.Host.Network().Peers()) == 0 || m.DHT.RoutingTableSize() == 0
}

// nextRebootstrap is the wait before the next attempt after one that
// reached no peer: double the last, capped at rebootstrapMax.
func nextRebootstrap(last time.Duration) time.Duration {
	return min(2*last, rebootstrapMax)
}

// jitter spreads d over [0.8d, d], so that nodes restarted together do not
// dial in lockstep; it never exceeds d, so rebootstrapMax stays a bound.
func jitter(d time.Duration) time.Duration {
	return d - time.Duration(rand.Int64N(int64(d)/5+1))
}

// rebootstrapLoop keeps a node with bootstrap peers in the mesh: whenever
// it is isolated (its bootstrap peers were down at start-up, or it lost
// every peer since), it dials them again with backoff (rebootstrapFirst,
// doubling to rebootstrapMax) until one answers. kad-dht alone would retry
// only every 2 minutes, and libp2p's dial backoff would refuse most of
// those dials. started says whether the start-up bootstrap reached a peer.
func (m *Mesh) rebootstrapLoop(started bool) {
	defer m.wg.Done()
	wait, delay := rebootstrapFirst, rebootstrapCheck
	if !started {
		delay = rebootstrapFirst
	}
	timer := time.NewTimer(delay)
	defer timer.Stop()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-timer.C:
		}
		if !m.isolated() {
			wait = rebootstrapFirst
			timer.Reset(rebootstrapCheck)
			continue
		}
		for _, ai := range m.boot {
			m.clearDialBackoff(ai.ID)
		}
		alone := len(m.Host.Network().Peers()) == 0
		n, err := m.DHT.Bootstrap(m.ctx)
		if m.ctx.Err() != nil {
			return
		}
		if err == nil && n > 0 {
			if alone { // not while connected, waiting for the routing table to fill
				m.Logger.Info("re-bootstrap: reached bootstrap peers", "connected", n)
			}
			wait = rebootstrapFirst
			timer.Reset(rebootstrapCheck)
			continue
		}
		wait = nextRebootstrap(wait)
		m.Logger.Debug("re-bootstrap: no bootstrap peer reachable; retrying", "in", wait)
		timer.Reset(jitter(wait))
	}
}
