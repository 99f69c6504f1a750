package p2phost

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

func TestOptionsValidate(t *testing.T) {
	if err := DefaultOptions().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	cases := map[string]struct {
		edit func(*Options)
		want string
	}{
		"zero conns":        {func(o *Options) { o.Conns = 0 }, "Conns is 0"},
		"negative memory":   {func(o *Options) { o.PeerMemory = -1 }, "PeerMemory is -1"},
		"inbound > total":   {func(o *Options) { o.ConnsInbound = o.Conns + 1 }, "ConnsInbound"},
		"peer mem > system": {func(o *Options) { o.PeerMemory = o.Memory + 1 }, "PeerMemory"},
		"low > high":        {func(o *Options) { o.LowWater = o.HighWater + 1 }, "LowWater"},
		"high > conns":      {func(o *Options) { o.HighWater = o.Conns + 1; o.LowWater = 1 }, "HighWater"},
		"no grace":          {func(o *Options) { o.GracePeriod = 0 }, "GracePeriod"},
		"protocol per peer": {func(o *Options) { o.Protocols[LeaseProtocol] = ProtocolLimit{Inbound: 2, InboundPerPeer: 3} }, "/igor/lease/1.0.0"},
		"off, bad connmgr":  {func(o *Options) { o.NoResourceManager = true; o.LowWater = 0 }, "low 0"},
	}
	for name, c := range cases {
		o := DefaultOptions()
		c.edit(&o)
		err := o.Validate()
		if !errors.Is(err, ErrBadOptions) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want ErrBadOptions naming %q", name, err, c.want)
		}
		if _, err := NewWithOptions(nil, Loopback, o); !errors.Is(err, ErrBadOptions) {
			t.Errorf("%s: NewWithOptions: %v", name, err)
		}
	}
}

// The per-protocol, per-peer inbound stream limit is enforced by libp2p:
// streams beyond it are reset while those within stay open, and the limit
// is per peer (another peer still gets its streams).
func TestProtocolPeerLimit(t *testing.T) {
	o := DefaultOptions()
	o.Protocols[LeaseProtocol] = ProtocolLimit{Inbound: 64, InboundPerPeer: 3}
	srv, err := NewWithOptions(nil, Loopback, o)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	release := make(chan struct{})
	defer close(release)
	srv.SetStreamHandler(LeaseProtocol, func(s network.Stream) {
		<-release
		s.Reset()
	})
	open := func(n int, newStream func(context.Context) (network.Stream, error)) (ok, refused int) {
		for i := 0; i < n; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s, err := newStream(ctx)
			if err == nil {
				// Negotiation is lazy: write, then read, to learn the verdict.
				s.SetDeadline(time.Now().Add(300 * time.Millisecond))
				_, _ = s.Write([]byte{1})
				_, err = s.Read(make([]byte, 1))
				if isTimeout(err) {
					err = nil // still open, held by the handler
				}
			}
			cancel()
			if err == nil {
				ok++
			} else {
				refused++
			}
		}
		return ok, refused
	}
	for i := 0; i < 2; i++ {
		cli, err := New(nil, Loopback)
		if err != nil {
			t.Fatal(err)
		}
		defer cli.Close()
		ai := peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}
		if err := cli.Connect(context.Background(), ai); err != nil {
			t.Fatal(err)
		}
		ok, refused := open(5, func(ctx context.Context) (network.Stream, error) {
			return cli.NewStream(ctx, srv.ID(), LeaseProtocol)
		})
		if ok != 3 || refused != 2 {
			t.Fatalf("client %d: %d streams open, %d refused; want 3 and 2", i, ok, refused)
		}
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func TestNoResourceManager(t *testing.T) {
	o := DefaultOptions()
	o.NoResourceManager = true
	h, err := NewWithOptions(nil, Loopback, o)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if _, ok := h.Network().ResourceManager().(*network.NullResourceManager); !ok {
		t.Fatalf("resource manager %T, want the null one", h.Network().ResourceManager())
	}
}

// A peer cut off is redialled about once a second over TCP and QUIC, and
// dials back, all counted per remote address by the resource manager's
// connection rate limit: when the cut heals, the limit must still let the
// next connection through. libp2p's default (one every 5 s per IPv4
// address after a burst of 16, loopback exempt) refused them for up to
// 30 s after a 30 s cut in the network-namespace fault suite.
func TestConnRateLimitAllowsRedials(t *testing.T) {
	rm, err := newResourceManager(DefaultOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer rm.Close()
	addr := multiaddr.StringCast("/ip4/10.77.0.2/udp/4001/quic-v1")
	open := func(i int) {
		t.Helper()
		scope, err := rm.OpenConnection(network.DirOutbound, true, addr)
		if err != nil {
			t.Fatalf("connection %d to one address refused: %v", i, err)
		}
		scope.Done()
	}
	for i := 1; i <= 32; i++ { // the burst: ~20 s of a cut's redials at once
		open(i)
	}
	for i := 33; i <= 36; i++ { // then 1.5 a second
		time.Sleep(667 * time.Millisecond)
		open(i)
	}
	// Still a limit: a flood from one address is refused.
	refused := false
	for range 100 {
		scope, err := rm.OpenConnection(network.DirInbound, true, addr)
		if err != nil {
			refused = true
			break
		}
		scope.Done()
	}
	if !refused {
		t.Fatal("100 connections from one address at once were all admitted")
	}
}
