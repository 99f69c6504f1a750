package node

// Hostile peers against real mesh nodes on loopback (issue #5): floods of
// connections and streams, stalled and oversize frames, replayed DHT
// records, custody frames from outsiders and old epochs. Tampered,
// oversize and endless blocks are covered in node/exchange (hostile_test.go:
// TestTamperingPeer, TestOversizeBlock, TestStallingPeer, TestStreamLimits,
// TestServerRejectsGarbage) and are not repeated here.

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dhtpb "github.com/libp2p/go-libp2p-kad-dht/pb"
	recpb "github.com/libp2p/go-libp2p-record/pb"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/dht"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/hosting/lease"
	"github.com/igor-mesh/igor-node/internal/p2phost"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/node/exchange"
)

// rawHost is an attacker: a plain libp2p host without limits of its own,
// dialling over TCP only and listening nowhere.
func rawHost(tb testing.TB) host.Host {
	tb.Helper()
	h, err := libp2p.New(libp2p.NoListenAddrs, libp2p.Transport(tcp.NewTCPTransport, tcp.DisableReuseport()),
		libp2p.DisableRelay(), libp2p.ResourceManager(&network.NullResourceManager{}))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

func meshInfo(m *Mesh) peer.AddrInfo { return peer.AddrInfo{ID: m.Host.ID(), Addrs: m.Host.Addrs()} }

// openHeld opens n streams of proto from h to m, writes prefix on each and
// returns them. A stream the node refuses is reset at once; one it serves
// stays open while its handler waits for the rest.
func openHeld(tb testing.TB, h host.Host, m *Mesh, proto protocol.ID, n int, prefix []byte) []network.Stream {
	tb.Helper()
	if err := h.Connect(context.Background(), meshInfo(m)); err != nil {
		tb.Fatal(err)
	}
	var out []network.Stream
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		s, err := h.NewStream(ctx, m.Host.ID(), proto)
		cancel()
		if err != nil {
			continue // refused during negotiation
		}
		_, _ = s.Write(prefix)
		out = append(out, s)
	}
	return out
}

// countOpen reads from every stream until a shared deadline: a stream
// reset by the node fails before it, a held one times out.
func countOpen(streams []network.Stream, wait time.Duration) (open []network.Stream, refused int) {
	dl := time.Now().Add(wait)
	for _, s := range streams {
		s.SetReadDeadline(dl)
		_, err := s.Read(make([]byte, 1))
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			open = append(open, s)
		} else {
			refused++
		}
	}
	return open, refused
}

// settle polls until the goroutine count is at most want.
func settle(tb testing.TB, what string, want int) {
	tb.Helper()
	eventually(tb, what, 20*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > want {
			return fmt.Errorf("%d goroutines, want ≤ %d", n, want)
		}
		return nil
	})
}

// kadCall sends one kad-dht message on a fresh stream and reads the answer
// (uvarint-length-delimited protobuf, as kad-dht frames it).
func kadCall(ctx context.Context, h host.Host, to peer.ID, m *dhtpb.Message) (*dhtpb.Message, error) {
	s, err := h.NewStream(ctx, to, p2phost.KadProtocol)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	s.SetDeadline(time.Now().Add(5 * time.Second))
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	if _, err := s.Write(append(binary.AppendUvarint(nil, uint64(len(b))), b...)); err != nil {
		return nil, err
	}
	r := bufio.NewReader(s)
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return nil, err
	}
	if n > network.MessageSizeMax {
		return nil, fmt.Errorf("answer of %d bytes", n)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	var out dhtpb.Message
	return &out, proto.Unmarshal(buf, &out)
}

func kadPut(ctx context.Context, h host.Host, to peer.ID, key string, value []byte) error {
	_, err := kadCall(ctx, h, to, &dhtpb.Message{Type: dhtpb.Message_PUT_VALUE, Key: []byte(key),
		Record: &recpb.Record{Key: []byte(key), Value: value}})
	return err
}

// The limits p2phost sets per protocol name the protocols the node serves.
func TestHostileLimitsNameTheProtocols(t *testing.T) {
	for want, got := range map[protocol.ID]protocol.ID{
		LeaseProtocol: p2phost.LeaseProtocol, CustodyProtocol: p2phost.CustodyProtocol, StatusProtocol: p2phost.StatusProtocol,
		HostGossipProtocol: p2phost.GossipProtocol, ControlProtocol: p2phost.ControlProtocol, AgentsProtocol: p2phost.AgentsProtocol, LogsProtocol: p2phost.LogsProtocol, HostRecordProtocol: p2phost.HostRecordProtocol,
		exchange.ProtocolID: p2phost.BlocksProtocol, protocol.ID(dht.ProtocolPrefix + "/kad/1.0.0"): p2phost.KadProtocol,
	} {
		if want != got {
			t.Errorf("p2phost names %s, the node serves %s", got, want)
		}
		if _, ok := p2phost.DefaultProtocols()[want]; !ok {
			t.Errorf("no default stream limit for %s", want)
		}
	}
}

// (a) 150 fresh hosts connect at once: the node admits at most its inbound
// connection limit and refuses the rest, keeps serving an honest member's
// block fetch and DHT queries during the flood, and once the flooders are
// past the grace period the connection manager trims them, keeping the
// honest member (it is in the DHT routing table).
func TestHostileConnectionFlood(t *testing.T) {
	const flood = 150
	opts := p2phost.DefaultOptions()
	ms := startMeshes(t, 2, 0)
	target, honest := ms[0], ms[1]
	eventually(t, "the two nodes in each other's routing table", 20*time.Second, func() error {
		if target.DHT.RoutingTableSize() < 1 || honest.DHT.RoutingTableSize() < 1 {
			return errors.New("routing tables empty")
		}
		return nil
	})
	block := make([]byte, 200<<10)
	rand.Read(block)
	c, err := target.Store.Put(cid.Raw, block)
	if err != nil {
		t.Fatal(err)
	}
	inbound := func() int {
		var n int
		_ = target.Host.Network().ResourceManager().ViewSystem(func(s network.ResourceScope) error {
			n = s.Stat().NumConnsInbound
			return nil
		})
		return n
	}
	var peak atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			if n := int64(inbound()); n > peak.Load() {
				peak.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	var tcpAddr peer.AddrInfo
	tcpAddr.ID = target.Host.ID()
	for _, a := range target.Host.Addrs() {
		if _, err := a.ValueForProtocol(multiaddr.P_TCP); err == nil {
			tcpAddr.Addrs = append(tcpAddr.Addrs, a)
		}
	}
	var admitted, refused atomic.Int64
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i := 0; i < flood; i++ {
		h := rawHost(t)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if h.Connect(ctx, tcpAddr) == nil && h.Network().Connectedness(tcpAddr.ID) == network.Connected {
				admitted.Add(1)
			} else {
				refused.Add(1)
			}
		}()
	}
	wg.Wait()
	// The honest member is served while the flooders hold their connections.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	got, err := honest.Ex.Fetch(ctx, c, meshInfo(target))
	if err != nil || len(got) != len(block) {
		t.Fatalf("honest block fetch during the flood: %d bytes, %v", len(got), err)
	}
	self := []byte(honest.Host.ID())
	resp, err := kadCall(ctx, honest.Host, target.Host.ID(), &dhtpb.Message{Type: dhtpb.Message_FIND_NODE, Key: self})
	if err != nil || len(resp.CloserPeers) == 0 {
		t.Fatalf("honest DHT query during the flood: %v, %v", resp, err)
	}
	close(stop)
	sampler.Wait()
	t.Logf("flood of %d: %d admitted, %d refused; peak inbound connections %d (limit %d)", flood, admitted.Load(), refused.Load(), peak.Load(), opts.ConnsInbound)
	if p := int(peak.Load()); p > opts.ConnsInbound {
		t.Fatalf("peak inbound connections %d over the limit %d", p, opts.ConnsInbound)
	}
	if flood > opts.ConnsInbound && refused.Load() == 0 {
		t.Fatalf("all %d flooders admitted past an inbound limit of %d", flood, opts.ConnsInbound)
	}
	// Past the grace period the connection manager trims (checked every
	// 10 s) down to the low watermark, flooders first (a few connections
	// still in their grace period may stay above it).
	trimmed := time.Now()
	eventually(t, "the connection manager to trim the flooders", opts.GracePeriod+30*time.Second, func() error {
		if n := len(target.Host.Network().Conns()); n > opts.LowWater+8 {
			return fmt.Errorf("%d connections, low watermark %d", n, opts.LowWater)
		}
		return nil
	})
	t.Logf("trimmed to %d connections %v after the flood", len(target.Host.Network().Conns()), time.Since(trimmed).Round(time.Second))
	if target.Host.Network().Connectedness(honest.Host.ID()) != network.Connected {
		t.Fatal("the connection manager dropped the honest member")
	}
	late := rawHost(t)
	if err := late.Connect(context.Background(), tcpAddr); err != nil {
		t.Fatalf("a new peer cannot connect after the trim: %v", err)
	}
}

// (b, c) One peer floods /igor/blocks and /igor/lease with streams that
// send half a request and stall. The node serves at most its per-peer
// limits, resets the rest at once, resets the stalled lease streams at the
// lease read deadline (10 s), and keeps serving an honest member meanwhile;
// afterwards no goroutine is left behind.
func TestHostileStreamFlood(t *testing.T) {
	ms := startMeshes(t, 2, 0)
	target, honest := ms[0], ms[1]
	var cs [2]cid.Cid
	for i := range cs {
		block := make([]byte, 64<<10)
		rand.Read(block)
		var err error
		if cs[i], err = target.Store.Put(cid.Raw, block); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := honest.Ex.Fetch(context.Background(), cs[0], meshInfo(target)); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	attacker := rawHost(t)
	lim := p2phost.DefaultProtocols()

	blocks := openHeld(t, attacker, target, exchange.ProtocolID, 40, []byte{0x05})
	heldBlocks, refusedBlocks := countOpen(blocks, 300*time.Millisecond)
	// node/exchange serves DefaultStreamsPerPeer itself; libp2p's
	// per-protocol limit is the backstop above it.
	if len(heldBlocks) > exchange.DefaultStreamsPerPeer || refusedBlocks < 40-lim[exchange.ProtocolID].InboundPerPeer {
		t.Fatalf("blocks: %d streams held, %d refused; want ≤ %d held", len(heldBlocks), refusedBlocks, exchange.DefaultStreamsPerPeer)
	}
	stalled := time.Now()
	leases := openHeld(t, attacker, target, LeaseProtocol, 40, []byte{0, 0}) // half a length prefix
	heldLeases, refusedLeases := countOpen(leases, 300*time.Millisecond)
	if want := lim[LeaseProtocol].InboundPerPeer; len(heldLeases) != want || refusedLeases != 40-want {
		t.Fatalf("lease: %d streams held, %d refused; want %d held", len(heldLeases), refusedLeases, want)
	}
	// The honest member is served while the attacker holds its streams.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := honest.Ex.Fetch(ctx, cs[1], meshInfo(target)); err != nil {
		t.Fatalf("honest block fetch during the stream flood: %v", err)
	}
	err := honest.offer(ctx, &agents.HostRecord{Peer: target.PeerID(), Addrs: target.PeerAddrs()}, custodyOffer{Version: 1})
	if !errors.Is(err, ErrLeaseRefused) {
		t.Fatalf("honest lease stream during the flood: %v, want an answer (a refusal of version 1)", err)
	}
	// The stalled lease streams are reset at the read deadline.
	for _, s := range heldLeases {
		s.SetReadDeadline(time.Now().Add(leaseReadTimeout + 5*time.Second))
		_, err := s.Read(make([]byte, 1))
		var te interface{ Timeout() bool }
		if errors.As(err, &te) && te.Timeout() {
			t.Fatalf("a stalled lease stream is still open %v after it stalled (deadline %v)", time.Since(stalled), leaseReadTimeout)
		}
	}
	t.Logf("stalled lease streams reset after %v (deadline %v)", time.Since(stalled).Round(100*time.Millisecond), leaseReadTimeout)
	for _, s := range append(blocks, leases...) {
		s.Reset()
	}
	attacker.Close()
	settle(t, "the goroutines of the flood to end", before+10)
}

// (c, d) Custody and lease streams: a stalled half frame holds at most the
// per-peer custody stream limit; an oversize length prefix is refused at
// once, before its body is sent (the node never waits for it).
func TestHostileCustodyAndLeaseFrames(t *testing.T) {
	ms := startMeshes(t, 1, 0)
	target := ms[0]
	before := runtime.NumGoroutine()
	attacker := rawHost(t)
	// Half a uvarint length (continuation bit set): the frame never completes.
	custodies := openHeld(t, attacker, target, CustodyProtocol, 12, []byte{0x80})
	held, refused := countOpen(custodies, 300*time.Millisecond)
	if want := p2phost.DefaultProtocols()[CustodyProtocol].InboundPerPeer; len(held) != want || refused != 12-want {
		t.Fatalf("custody: %d stalled streams held, %d refused; want %d held", len(held), refused, want)
	}
	// A frame once begun must arrive whole within custodyFrame.
	start := time.Now()
	if open, _ := countOpen(held, custodyFrame+5*time.Second); len(open) != 0 {
		t.Fatalf("custody: %d streams stalled mid-frame still held after %v", len(open), time.Since(start))
	}
	t.Logf("custody: streams stalled mid-frame closed after %v", time.Since(start).Round(time.Millisecond))
	for _, s := range custodies {
		s.Reset()
	}
	oversize := map[protocol.ID][]byte{
		LeaseProtocol:   binary.BigEndian.AppendUint32(nil, 1<<30),
		CustodyProtocol: binary.AppendUvarint(nil, 1<<30),
	}
	for proto, prefix := range oversize {
		start := time.Now()
		ss := openHeld(t, attacker, target, proto, 1, prefix)
		if len(ss) != 1 {
			t.Fatalf("%s: stream not opened", proto)
		}
		if open, _ := countOpen(ss, 3*time.Second); len(open) != 0 {
			t.Fatalf("%s: a 1 GiB length prefix was not refused within 3 s", proto)
		}
		t.Logf("%s: 1 GiB frame refused after %v", proto, time.Since(start).Round(time.Millisecond))
	}
	attacker.Close()
	settle(t, "the goroutines of the stalled streams to end", before+10)
}

// (e) Over the kad-dht wire itself (not through this node's own PutValue,
// which validates before sending): an older, validly signed head record
// replayed after a newer one, a forged one and an oversize one are not
// stored, and every node still resolves the newer record; a kad message
// over libp2p's 4 MiB cap is refused by its length alone.
func TestHostileDHTRecords(t *testing.T) {
	ms := startMeshes(t, 3, 0)
	ctx := context.Background()
	eventually(t, "full routing tables", 20*time.Second, func() error {
		for i, m := range ms {
			if m.DHT.RoutingTableSize() < 2 {
				return fmt.Errorf("node %d: routing table %d", i, m.DHT.RoutingTableSize())
			}
		}
		return nil
	})
	_, key, _ := agents.GenerateKey(rand.Reader)
	did := agents.DID(key.Public().(ed25519.PublicKey))
	k := agents.HeadRecordKey(did)
	soon := time.Now().Add(5 * time.Minute)
	older := headRecord(t, key, ms[1].PeerID(), 3, soon)
	newer := headRecord(t, key, ms[1].PeerID(), 7, soon)
	forged := headRecord(t, key, ms[1].PeerID(), 9, soon)
	forged[len(forged)-3] ^= 1
	if err := ms[1].DHT.PutValue(ctx, k, newer); err != nil {
		t.Fatal(err)
	}
	seqAt := func(m *Mesh) (uint64, error) {
		data, err := m.DHT.GetValue(ctx, k)
		if err != nil {
			return 0, err
		}
		r, err := agents.DecodeHeadRecord(data)
		if err != nil {
			return 0, err
		}
		return r.Seq, nil
	}
	for i, m := range ms {
		eventually(t, fmt.Sprintf("node %d to resolve seq 7", i), 20*time.Second, func() error {
			if s, err := seqAt(m); err != nil || s != 7 {
				return fmt.Errorf("seq %d, %v", s, err)
			}
			return nil
		})
	}
	attacker := rawHost(t)
	for _, m := range ms {
		if err := attacker.Connect(ctx, meshInfo(m)); err != nil {
			t.Fatal(err)
		}
		if err := kadPut(ctx, attacker, m.Host.ID(), k, older); err == nil {
			t.Errorf("node %s acknowledged a replayed older record", m.PeerID())
		}
		if err := kadPut(ctx, attacker, m.Host.ID(), k, forged); err == nil {
			t.Errorf("node %s acknowledged a forged record", m.PeerID())
		}
	}
	for i, m := range ms {
		if s, err := seqAt(m); err != nil || s != 7 {
			t.Fatalf("node %d resolves seq %d (%v) after the replay, want 7", i, s, err)
		}
	}
	// Oversize, under a fresh key: refused and not stored anywhere.
	_, key2, _ := agents.GenerateKey(rand.Reader)
	k2 := agents.HeadRecordKey(agents.DID(key2.Public().(ed25519.PublicKey)))
	big := make([]byte, agents.MaxRecordBytes+1)
	for _, m := range ms {
		if err := kadPut(ctx, attacker, m.Host.ID(), k2, big); err == nil {
			t.Errorf("node %s acknowledged an oversize record", m.PeerID())
		}
	}
	gctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if v, err := ms[0].DHT.GetValue(gctx, k2); !errors.Is(err, dht.ErrNotFound) {
		t.Fatalf("oversize record: GetValue gave %d bytes, %v; want ErrNotFound", len(v), err)
	}
	// A message longer than libp2p's cap: refused on its length prefix.
	s, err := attacker.NewStream(ctx, ms[0].Host.ID(), p2phost.KadProtocol)
	if err != nil {
		t.Fatal(err)
	}
	s.Write(binary.AppendUvarint(nil, 64<<20))
	if open, _ := countOpen([]network.Stream{s}, 3*time.Second); len(open) != 0 {
		t.Fatal("a 64 MiB kad message length was not refused within 3 s")
	}
}

// (f) Custody frames over the wire from a mesh node outside the group
// (with the right group ID, a higher epoch and a bogus checkpoint, a
// promise request and a handoff) and from a member at an old epoch change
// nothing: the member keeps its epoch, accepted checkpoint and holder, and
// the holder keeps ticking. (FuzzCustodyFrame covers decoding; the lease
// state machine's own tests cover the rules on scripted transcripts.)
func TestHostileCustodyFrames(t *testing.T) {
	ms := startMeshes(t, 4, 2)
	waitHosts(t, ms, 4)
	wasm, man := testagents.Bytes(t, "heartbeat")
	res, err := ms[0].Publish(context.Background(), wasm, man, 1_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	var holder, target, member, outsider *Mesh
	for _, m := range ms {
		switch {
		case !slices.Contains(res.Members, m.PeerID()):
			outsider = m
		case m.PeerID() == res.Holder:
			holder = m
		case target == nil:
			target = m
		default:
			member = m
		}
	}
	if holder == nil || target == nil || member == nil || outsider == nil {
		t.Fatalf("members %v holder %s: want a holder, two standbys and an outsider among 4 nodes", res.Members, res.Holder)
	}
	status := func() custody.Status {
		for _, s := range target.Custody.Status() {
			if s.DID == res.DID {
				return s
			}
		}
		return custody.Status{}
	}
	eventually(t, "the standby to follow the holder at epoch 1 with a committed checkpoint", 30*time.Second, func() error {
		if s := status(); s.Epoch != 1 || s.Holder != holder.PeerID() || s.AcceptedSeq < 1 {
			return fmt.Errorf("standby status %+v", s)
		}
		return nil
	})
	g, err := target.Custody.Group(res.DID)
	if err != nil {
		t.Fatal(err)
	}
	gid := g.ID()
	send := func(from *Mesh, msgs ...lease.Message) {
		t.Helper()
		s, err := from.Host.NewStream(context.Background(), target.Host.ID(), CustodyProtocol)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for _, msg := range msgs {
			msg.From, msg.To = from.PeerID(), target.PeerID()
			frame, err := encodeFrame(res.DID, gid, msg)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Write(frame); err != nil {
				t.Fatal(err)
			}
		}
	}
	bogus := lease.Checkpoint{Seq: 1000, ID: res.Head}
	send(outsider,
		lease.Message{Type: lease.MsgAppend, Epoch: 99, Round: 1, Commit: 1000, Checkpoint: bogus},
		lease.Message{Type: lease.MsgPromiseRequest, Epoch: 99},
		lease.Message{Type: lease.MsgHandoff, Epoch: 1},
		lease.Message{Type: lease.MsgRelease, Epoch: 1})
	send(member,
		lease.Message{Type: lease.MsgAppend, Epoch: 0, Round: 1, Commit: 1000, Checkpoint: bogus},
		lease.Message{Type: lease.MsgPromiseRequest, Epoch: 1},
		lease.Message{Type: lease.MsgRelease, Epoch: 0})
	st, _ := holder.Svc.Status(res.DID)
	tick := st.Tick
	eventually(t, "the holder to tick on", 20*time.Second, func() error {
		if st, ok := holder.Svc.Status(res.DID); !ok || !st.Running || st.Tick < tick+5 {
			return fmt.Errorf("holder status %+v", st)
		}
		return nil
	})
	s := status()
	if s.Epoch != 1 || s.Holder != holder.PeerID() || s.AcceptedSeq >= 1000 || s.Role != "follower" || s.Running {
		t.Fatalf("standby changed by hostile frames: %+v", s)
	}
	if st, _ := holder.Svc.Status(res.DID); st.Epoch != 1 {
		t.Fatalf("holder at epoch %d, want 1", st.Epoch)
	}
}

// MeshConfig.MaxConns scales the connection limits; nonsense is refused.
func TestMeshMaxConns(t *testing.T) {
	_, err := StartMesh(context.Background(), MeshConfig{Home: t.TempDir(), Logger: quietLogger(), Listen: p2phost.Loopback, MaxConns: 5})
	if err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Fatalf("max conns 5: %v", err)
	}
	m, err := StartMesh(context.Background(), MeshConfig{Home: t.TempDir(), Logger: quietLogger(), Listen: p2phost.Loopback, MaxConns: 40})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// 40 connections, 20 inbound: the 21st inbound peer is refused.
	var hosts []host.Host
	admitted := 0
	for i := 0; i < 24; i++ {
		h := rawHost(t)
		hosts = append(hosts, h)
		if h.Connect(context.Background(), meshInfo(m)) == nil && h.Network().Connectedness(m.Host.ID()) == network.Connected {
			admitted++
		}
	}
	if admitted > 20 || admitted < 16 {
		t.Fatalf("%d of 24 inbound peers admitted with MaxConns 40 (inbound limit 20)", admitted)
	}
	for _, h := range hosts {
		h.Close()
	}
}
