package node

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// partitionGate refuses connections to and from peers blocked until some
// time: a connection gate, so chaos runs can partition a local testnet
// without network namespaces. Blocks are set only through the debug API
// (POST /v1/debug/partition), which a daemon serves only when started with
// IGOR_DEBUG_PARTITION=1; with no block set the gate admits everything.
type partitionGate struct {
	mu    sync.Mutex
	until map[peer.ID]time.Time
}

func newPartitionGate() *partitionGate { return &partitionGate{until: map[peer.ID]time.Time{}} }

// block refuses p until the time given (replacing any earlier block).
func (g *partitionGate) block(p peer.ID, until time.Time) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.until[p] = until
}

func (g *partitionGate) blocked(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	t, ok := g.until[p]
	if ok && time.Now().After(t) {
		delete(g.until, p)
		return false
	}
	return ok
}

func (g *partitionGate) InterceptPeerDial(p peer.ID) bool { return !g.blocked(p) }
func (g *partitionGate) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool {
	return !g.blocked(p)
}
func (g *partitionGate) InterceptAccept(network.ConnMultiaddrs) bool { return true }
func (g *partitionGate) InterceptSecured(_ network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return !g.blocked(p)
}
func (g *partitionGate) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return !g.blocked(c.RemotePeer()), 0
}
