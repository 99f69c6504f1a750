package node

import (
	"context"
	"net/http"
	"strings"
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

// POST /v1/debug/partition exists only with APIOptions.DebugPartition;
// a bad peer ID blocks nobody; a good request cuts the peers off.
func TestPartitionEndpoint(t *testing.T) {
	ms := startMeshes(t, 2, 0)
	a, b := ms[0], ms[1]
	post := func(srv *APIServer, body string) int {
		t.Helper()
		resp, err := http.Post("http://"+srv.Addr()+"/v1/debug/partition", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	off, err := a.ServeAPIWithOptions("127.0.0.1:0", APIOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer off.Close(context.Background())
	good := `{"peers":["` + b.Host.ID().String() + `"],"seconds":30}`
	if code := post(off, good); code != http.StatusNotFound {
		t.Fatalf("partition endpoint without DebugPartition: %d, want 404", code)
	}
	on, err := a.ServeAPIWithOptions("127.0.0.1:0", APIOptions{DebugPartition: true})
	if err != nil {
		t.Fatal(err)
	}
	defer on.Close(context.Background())
	for _, bad := range []string{`{}`, `{"peers":["x"],"seconds":1}`, `{"peers":["` + b.Host.ID().String() + `","nope"],"seconds":1}`,
		`{"peers":["` + b.Host.ID().String() + `"],"seconds":0}`, `{"peers":["` + b.Host.ID().String() + `"],"seconds":1,"x":1}`} {
		if code := post(on, bad); code != http.StatusBadRequest {
			t.Fatalf("body %s: %d, want 400", bad, code)
		}
	}
	if a.gate.blocked(b.Host.ID()) {
		t.Fatal("a refused request blocked a peer")
	}
	if code := post(on, good); code != http.StatusOK {
		t.Fatalf("partition: %d, want 200", code)
	}
	if !a.gate.blocked(b.Host.ID()) {
		t.Fatal("the peer is not blocked after the partition request")
	}
	if err := a.Host.Connect(context.Background(), meshInfo(b)); err == nil {
		t.Fatal("a connected to b through the partition")
	}
}
