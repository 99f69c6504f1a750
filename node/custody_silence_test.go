package node

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/hosting/lease"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// muteProxy forwards TCP connections to target until mute() is called;
// from then on the connections it already carries forward nothing more,
// in either direction, and report nothing either (no reset, no close): a
// cut the kernel does not see, as a disabled bridge port or packets
// dropped on the way make. Connections accepted after mute() are
// forwarded as before (the network is healed; only the old connections
// stay mute, as TCP's backed-off retransmissions keep them for seconds).
type muteProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	muted  []chan struct{} // one per connection: closed when muted
	conns  []net.Conn
}

func newMuteProxy(t *testing.T, target string) *muteProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &muteProxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			m := make(chan struct{})
			p.mu.Lock()
			p.muted = append(p.muted, m)
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go pipeUntil(u, c, m)
			go pipeUntil(c, u, m)
		}
	}()
	return p
}

// pipeUntil copies src to dst until muted, then holds: it reads no more.
func pipeUntil(dst, src net.Conn, muted chan struct{}) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		select {
		case <-muted:
			<-make(chan struct{}) // mute: forward nothing, never close
		default:
		}
		if n > 0 {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *muteProxy) mute() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.muted {
		close(m)
	}
	p.muted = nil
}

func (p *muteProxy) addr(t *testing.T) multiaddr.Multiaddr {
	a := p.ln.Addr().(*net.TCPAddr)
	ma, err := multiaddr.NewMultiaddr("/ip4/127.0.0.1/tcp/" + strconv.Itoa(a.Port))
	if err != nil {
		t.Fatal(err)
	}
	return ma
}

// TestSilentConnectionRedialled: when the one connection between two nodes
// goes mute (packets vanish; nobody resets anything), each side's custody
// sender closes it once the peer has been silent for custodySilence and
// dials afresh, so both hear each other again within seconds although the
// old connection never recovers. Before, the sender opened its streams on
// the mute connection again (Host.NewStream negotiates lazily, so its
// writes "succeed"), and the healed node stayed deaf until the transport
// gave up on that connection — in the network-namespace fault suite,
// 9–13 s after a heal.
func TestSilentConnectionRedialled(t *testing.T) {
	var ms []*Mesh
	for range 2 {
		m, err := StartMesh(context.Background(), MeshConfig{Home: t.TempDir(), Logger: quietLogger(),
			Listen: []string{"/ip4/127.0.0.1/tcp/0"}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	a, b := ms[0], ms[1]
	var bAddr string
	for _, ad := range b.Host.Addrs() {
		if v, err := ad.ValueForProtocol(multiaddr.P_TCP); err == nil && v != "" {
			ip, _ := ad.ValueForProtocol(multiaddr.P_IP4)
			bAddr = ip + ":" + v
		}
	}
	proxy := newMuteProxy(t, bAddr)
	ctx := context.Background()
	if err := a.Host.Connect(ctx, peer.AddrInfo{ID: b.Host.ID(), Addrs: []multiaddr.Multiaddr{proxy.addr(t)}}); err != nil {
		t.Fatal(err)
	}
	// Custody frames both ways every 100 ms (for a group neither is in:
	// the receiver notes when it heard the sender, then drops them).
	var stop atomic.Bool
	var wg sync.WaitGroup
	t.Cleanup(func() { stop.Store(true); wg.Wait() })
	send := func(from, to *Mesh) {
		defer wg.Done()
		for seq := uint64(1); !stop.Load(); seq++ {
			from.cnet.Send(fuzzDID, custody.GroupID{7}, lease.Message{Type: lease.MsgAppend, From: from.PeerID(), To: to.PeerID(), Epoch: 1, Round: seq})
			time.Sleep(100 * time.Millisecond)
		}
	}
	wg.Add(2)
	go send(a, b)
	go send(b, a)
	heardSince := func(m, from *Mesh, t0 time.Time) error {
		if h := m.cnet.heardFrom(from.Host.ID()).Load(); h <= t0.UnixNano() {
			return errors.New("not heard")
		}
		return nil
	}
	start := time.Now()
	eventually(t, "a and b to hear each other", 10*time.Second, func() error {
		return errors.Join(heardSince(a, b, start), heardSince(b, a, start))
	})
	if n := len(a.Host.Network().ConnsToPeer(b.Host.ID())); n != 1 {
		t.Fatalf("a has %d connections to b, want the proxied one only", n)
	}
	proxy.mute()
	cut := time.Now()
	time.Sleep(500 * time.Millisecond) // what was in flight has arrived
	muted := time.Now()
	// custodySilence (3 s) to notice, a second to give up on the
	// connection's answer, a dial: well within 8 s.
	eventually(t, "a and b to hear each other again over a new connection", 8*time.Second, func() error {
		return errors.Join(heardSince(a, b, muted), heardSince(b, a, muted))
	})
	t.Logf("heard again %.1fs after the connection went mute", time.Since(cut).Seconds())
}
