package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
)

// The re-bootstrap schedule: 1 s, doubling, capped at 20 s; jitter only
// shortens a wait, so the cap is a bound.
func TestRebootstrapSchedule(t *testing.T) {
	var got []time.Duration
	for w := rebootstrapFirst; len(got) < 7; w = nextRebootstrap(w) {
		got = append(got, w)
	}
	want := []time.Duration{1, 2, 4, 8, 16, 20, 20}
	for i := range want {
		want[i] *= time.Second
	}
	if !slices.Equal(got, want) {
		t.Fatalf("schedule %v, want %v", got, want)
	}
	for range 1000 {
		if j := jitter(rebootstrapMax); j < rebootstrapMax*4/5 || j > rebootstrapMax {
			t.Fatalf("jitter(%v) = %v, want within [%v, %v]", rebootstrapMax, j, rebootstrapMax*4/5, rebootstrapMax)
		}
	}
}

func TestConnect(t *testing.T) {
	a, b := startMeshes(t, 1, 0)[0], startMeshes(t, 1, 0)[0] // two meshes of one
	ctx := context.Background()
	id, err := b.Connect(ctx, a.PeerAddrs()[0])
	if err != nil || id != a.Host.ID() {
		t.Fatalf("Connect = %v, %v", id, err)
	}
	if !slices.Contains(b.Host.Network().Peers(), a.Host.ID()) {
		t.Fatal("not connected after Connect")
	}
	eventually(t, "a in b's routing table", 10*time.Second, func() error {
		if b.DHT.RoutingTableSize() != 1 {
			return fmt.Errorf("routing table size %d", b.DHT.RoutingTableSize())
		}
		return nil
	})

	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}()
	stranger := "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
	for _, c := range []struct {
		addr string
		want error
	}{
		{"nonsense", ErrBadPeerAddr},
		{"/ip4/127.0.0.1/tcp/4001", ErrBadPeerAddr},
		{b.PeerAddrs()[0], ErrBadPeerAddr}, // itself
		{fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", free, stranger), ErrPeerUnreachable},
	} {
		if _, err := b.Connect(ctx, c.addr); !errors.Is(err, c.want) {
			t.Errorf("Connect(%q) = %v, want %v", c.addr, err, c.want)
		}
	}
	// The context bounds the dial: TEST-NET-1 is never routed, so the dial
	// fails at once or waits for the deadline, never longer.
	dctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := b.Connect(dctx, "/ip4/192.0.2.1/tcp/4001/p2p/"+stranger); !errors.Is(err, ErrPeerUnreachable) {
		t.Fatalf("Connect to an unrouted address = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("Connect with a 300 ms deadline took %v", d)
	}
}

// Drain with nothing running returns at once, peers or not; with an agent
// running and no peer connected it says there is nowhere to drain instead
// of waiting for its context.
func TestDrainNowhere(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := startMeshes(t, 1, 0)[0].Drain(ctx); err != nil {
		t.Fatalf("Drain with nothing running: %v", err)
	}
	m := startMeshes(t, 1, 2)[0]
	wasm, man := testagents.Bytes(t, "heartbeat")
	solo := 0
	res, err := m.PublishAgent(ctx, PublishRequest{Wasm: wasm, Manifest: man, Budget: 1_000_000, MinReplicas: &solo}, nil)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the agent running", 30*time.Second, func() error {
		for _, st := range m.Custody.Status() {
			if st.DID == res.DID && st.Running {
				return nil
			}
		}
		return fmt.Errorf("custody %+v", m.Custody.Status())
	})
	start := time.Now()
	err = m.Drain(ctx)
	if !errors.Is(err, ErrNowhereToDrain) {
		t.Fatalf("Drain alone with an agent = %v, want ErrNowhereToDrain", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Drain took %v to see there is nowhere to drain", d)
	}
}
