package node

import (
	"context"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
)

// The partition gate cuts two nodes apart in both directions for the time
// given, and lets them connect again afterwards.
func TestPartitionGate(t *testing.T) {
	ms := startMeshes(t, 2, 0)
	a, b := ms[0], ms[1]
	eventually(t, "the two nodes to connect", 10*time.Second, func() error {
		if a.Host.Network().Connectedness(b.Host.ID()) != network.Connected {
			return context.DeadlineExceeded
		}
		return nil
	})
	until := time.Now().Add(3 * time.Second)
	a.gate.block(b.Host.ID(), until)
	b.gate.block(a.Host.ID(), until)
	a.Host.Network().ClosePeer(b.Host.ID())
	b.Host.Network().ClosePeer(a.Host.ID())
	// Each side learns of the other's close asynchronously (a QUIC or TCP
	// close in flight); until then Connect returns at once on the old
	// connection, which says nothing about the gate.
	eventually(t, "both sides to drop the connection", 10*time.Second, func() error {
		if len(a.Host.Network().ConnsToPeer(b.Host.ID())) > 0 || len(b.Host.Network().ConnsToPeer(a.Host.ID())) > 0 {
			return context.DeadlineExceeded
		}
		return nil
	})
	if err := a.Host.Connect(context.Background(), meshInfo(b)); err == nil {
		t.Fatal("a connected to b through the partition")
	}
	if err := b.Host.Connect(context.Background(), meshInfo(a)); err == nil {
		t.Fatal("b connected to a through the partition")
	}
	time.Sleep(time.Until(until) + 100*time.Millisecond)
	eventually(t, "the partition to heal", 10*time.Second, func() error {
		return a.Host.Connect(context.Background(), meshInfo(b))
	})
}
