package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/multiformats/go-multiaddr"
	msmux "github.com/multiformats/go-multistream"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/hosting/lease"
	"github.com/igor-mesh/igor-node/node/exchange"
)

// CustodyProtocol carries lease messages between custody-group members
// (docs/PROTOCOL.md "Custody transport"): one long-lived stream per
// direction and peer, frames of uvarint length + uvarint-prefixed agent DID
// + the 8-byte custody group ID + lease.EncodeMessage. A sender batches
// every frame queued for a peer into one write.
const CustodyProtocol = protocol.ID("/igor/custody/1.0.0")

const (
	// A frame: DID, group ID and a lease message (naming a whole
	// configuration at most) or pushed blocks (pushLimit).
	maxCustodyFrame = 256 + max(lease.MaxMessageBytes, pushLimit+pushMaxBlocks*80)
	custodyQueue    = 1024
	custodyDial     = 3 * time.Second
	custodyIdle     = 2 * time.Minute  // an inbound stream silent this long is closed
	custodyFrame    = 10 * time.Second // a frame, once begun, must arrive whole within this
	custodySilence  = 3 * time.Second  // nothing heard from a peer we write to: reopen
	ensureMaxDepth  = 100_000
)

// custodyNet implements custody.Net over libp2p.
type custodyNet struct {
	m  *Mesh
	mu sync.Mutex // guards out, stale, corks, held
	// out: one sender goroutine per peer, created on first use.
	out map[peer.ID]chan []byte
	// stale: set when a peer (re)connects or disconnects; its sender then
	// drops its stream and opens a new one. A stream on the connection to
	// a killed peer can otherwise swallow frames until QUIC's idle timeout
	// (~30 s) — in the failover benchmark that lost exactly the promise
	// requests of the next takeover.
	stale map[peer.ID]*atomic.Bool
	// heard: when a frame last arrived from each peer (unix ns). A member
	// answers every heartbeat; a peer we keep writing to without hearing
	// back for custodySilence gets a fresh stream, since a dead QUIC
	// connection accepts writes until its idle timeout.
	heard map[peer.ID]*atomic.Int64
	// corks, peerCorks, held: while corked (custody.Batcher, by the
	// engine's tick pass) or while the peer's stream reader works through
	// a burst of frames (corkPeer), frames to a peer wait here and go to
	// its sender as one write: the heartbeat rounds of all groups, and the
	// acknowledgements of a burst.
	corks     int
	peerCorks map[peer.ID]int
	held      map[peer.ID][]byte
}

// Cork holds frames back until the matching Uncork (custody.Batcher).
func (n *custodyNet) Cork() {
	n.mu.Lock()
	n.corks++
	n.mu.Unlock()
}

// Uncork releases the frames held since the first Cork, one batch per
// peer (but not to a peer whose reader still holds them: corkPeer).
func (n *custodyNet) Uncork() {
	n.mu.Lock()
	n.corks--
	var out map[peer.ID][]byte
	if n.corks == 0 {
		for to, b := range n.held {
			if n.peerCorks[to] == 0 {
				if out == nil {
					out = map[peer.ID][]byte{}
				}
				out[to] = b
				delete(n.held, to)
			}
		}
	}
	n.mu.Unlock()
	for to, b := range out {
		n.push(to, b)
	}
}

// corkPeer holds frames to one peer back until uncorkPeer.
func (n *custodyNet) corkPeer(to peer.ID) {
	n.mu.Lock()
	if n.peerCorks == nil {
		n.peerCorks = map[peer.ID]int{}
	}
	n.peerCorks[to]++
	n.mu.Unlock()
}

func (n *custodyNet) uncorkPeer(to peer.ID) {
	n.mu.Lock()
	if n.peerCorks[to]--; n.peerCorks[to] <= 0 {
		delete(n.peerCorks, to)
	}
	b, release := n.held[to]
	release = release && n.corks == 0 && n.peerCorks[to] == 0
	if release {
		delete(n.held, to)
	}
	n.mu.Unlock()
	if release {
		n.push(to, b)
	}
}

func newCustodyNet(m *Mesh) *custodyNet {
	n := &custodyNet{m: m, out: map[peer.ID]chan []byte{}, stale: map[peer.ID]*atomic.Bool{}, heard: map[peer.ID]*atomic.Int64{}}
	mark := func(_ network.Network, c network.Conn) {
		n.mu.Lock()
		if f, ok := n.stale[c.RemotePeer()]; ok {
			f.Store(true)
		}
		n.mu.Unlock()
	}
	m.Host.Network().Notify(&network.NotifyBundle{ConnectedF: mark, DisconnectedF: mark})
	return n
}

// Pushed checkpoint blocks (custody.Net.Push) travel as a frame whose body
// starts with pushTag instead of a lease message's version byte (1 or 2):
// then a uvarint count and, per block, its CID and data (uvarint-length
// prefixed). Only checkpoints whose blocks total pushLimit or less are
// pushed; larger ones are fetched as before.
const (
	pushTag       = 0xB1
	pushLimit     = 64 << 10
	pushMaxBlocks = 16
)

// pushedBlock is one block of a push frame, not yet verified.
type pushedBlock struct {
	c    cid.Cid
	data []byte
}

// frame is one decoded custody frame: a lease message, or pushed blocks.
type frame struct {
	did    string
	gid    custody.GroupID
	msg    lease.Message
	blocks []pushedBlock // a push frame
}

func encodeFrame(did string, gid custody.GroupID, msg lease.Message) ([]byte, error) {
	body, err := lease.EncodeMessage(msg)
	if err != nil {
		return nil, err
	}
	return wrapFrame(did, gid, body)
}

func encodePush(did string, gid custody.GroupID, blocks []pushedBlock) ([]byte, error) {
	body := []byte{pushTag}
	body = binary.AppendUvarint(body, uint64(len(blocks)))
	for _, b := range blocks {
		body = binary.AppendUvarint(body, uint64(b.c.ByteLen()))
		body = append(body, b.c.Bytes()...)
		body = binary.AppendUvarint(body, uint64(len(b.data)))
		body = append(body, b.data...)
	}
	return wrapFrame(did, gid, body)
}

func decodePush(body []byte) ([]pushedBlock, error) {
	n, k := binary.Uvarint(body)
	if k <= 0 || n == 0 || n > pushMaxBlocks {
		return nil, fmt.Errorf("%w: push frame: %d blocks (1..%d)", ErrBadMessage, n, pushMaxBlocks)
	}
	body = body[k:]
	next := func(limit uint64) ([]byte, bool) {
		l, k := binary.Uvarint(body)
		if k <= 0 || l > limit || uint64(len(body)-k) < l {
			return nil, false
		}
		v := body[k : k+int(l)]
		body = body[k+int(l):]
		return v, true
	}
	out := make([]pushedBlock, 0, n)
	for range n {
		cb, ok := next(128)
		if !ok {
			return nil, fmt.Errorf("%w: push frame: bad CID length", ErrBadMessage)
		}
		c, err := cid.Cast(cb)
		if err != nil {
			return nil, fmt.Errorf("%w: push frame: %v", ErrBadMessage, err)
		}
		data, ok := next(pushLimit)
		if !ok {
			return nil, fmt.Errorf("%w: push frame: bad block length", ErrBadMessage)
		}
		out = append(out, pushedBlock{c: c, data: data})
	}
	if len(body) != 0 {
		return nil, fmt.Errorf("%w: push frame: %d trailing bytes", ErrBadMessage, len(body))
	}
	return out, nil
}

func wrapFrame(did string, gid custody.GroupID, body []byte) ([]byte, error) {
	inner := binary.AppendUvarint(nil, uint64(len(did)))
	inner = append(inner, did...)
	inner = append(inner, gid[:]...)
	inner = append(inner, body...)
	if len(inner) > maxCustodyFrame {
		return nil, fmt.Errorf("%w: custody frame of %d bytes", ErrBadMessage, len(inner))
	}
	return append(binary.AppendUvarint(nil, uint64(len(inner))), inner...), nil
}

// readFrame reads one frame; errors wrap ErrBadMessage (or are I/O errors).
func readFrame(r *bufio.Reader) (frame, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return frame{}, err
	}
	if n == 0 || n > maxCustodyFrame {
		return frame{}, fmt.Errorf("%w: custody frame length %d outside 1..%d", ErrBadMessage, n, maxCustodyFrame)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return frame{}, err
	}
	return decodeFrame(buf)
}

func decodeFrame(buf []byte) (frame, error) {
	var f frame
	l, k := binary.Uvarint(buf)
	if k <= 0 || l == 0 || l > 128 || uint64(len(buf)-k) < l+uint64(len(f.gid)) {
		return f, fmt.Errorf("%w: custody frame: bad agent DID length", ErrBadMessage)
	}
	f.did = string(buf[k : k+int(l)])
	if _, err := agents.ParseDID(f.did); err != nil {
		return f, fmt.Errorf("%w: custody frame: %v", ErrBadMessage, err)
	}
	rest := buf[k+int(l):]
	copy(f.gid[:], rest)
	body := rest[len(f.gid):]
	var err error
	if len(body) > 0 && body[0] == pushTag {
		f.blocks, err = decodePush(body[1:])
		return f, err
	}
	if f.msg, err = lease.DecodeMessage(body); err != nil {
		return f, fmt.Errorf("%w: custody frame: %v", ErrBadMessage, err)
	}
	return f, nil
}

// Send queues the message for its recipient; a full queue drops it.
func (n *custodyNet) Send(did string, gid custody.GroupID, msg lease.Message) {
	frame, err := encodeFrame(did, gid, msg)
	if err != nil {
		n.m.Logger.Warn("custody: encode message", "agent", did, "err", err)
		return
	}
	n.enqueue(msg.To, frame)
}

// Push queues checkpoint c's blocks (the checkpoint and its state) for the
// members in to, ahead of the heartbeat that proposes it on the same
// ordered stream, so their Ensure finds them here instead of fetching them
// over a new exchange stream each (custody.Net). Checkpoints above
// pushLimit are left to the fetch.
func (n *custodyNet) Push(did string, gid custody.GroupID, c cid.Cid, to []string) {
	data, err := n.m.Store.Get(c)
	if err != nil {
		return
	}
	cp, err := agents.DecodeCheckpoint(data)
	if err != nil {
		return
	}
	blocks := []pushedBlock{{c: c, data: data}}
	size := len(data)
	ids, err := n.m.Store.ObjectCIDs(cp.State)
	if err != nil || len(ids)+1 > pushMaxBlocks {
		return
	}
	for _, id := range ids {
		b, err := n.m.Store.Get(id)
		if size += len(b); err != nil || size > pushLimit {
			return
		}
		blocks = append(blocks, pushedBlock{c: id, data: b})
	}
	f, err := encodePush(did, gid, blocks)
	if err != nil {
		return
	}
	for _, p := range to {
		n.enqueue(p, f)
	}
	n.m.pushed.Add(float64(len(blocks) * len(to)))
}

// acceptPush stores blocks a member of did's group pushed (custodyNet.Push),
// each verified against its CID; it refuses pushes for groups this node is
// not in, or from a peer outside them.
func (m *Mesh) acceptPush(f frame, from string) error {
	st, err := m.Custody.Agent(f.did)
	if err != nil || !slices.Contains(st.Members, from) {
		return fmt.Errorf("%w: %s pushed blocks of %s, whose group does not include it here", custody.ErrNotMember, from, f.did)
	}
	if g, err := m.Custody.Group(f.did); err != nil || g.ID() != f.gid {
		return fmt.Errorf("%w: push for another group of %s", custody.ErrNotMember, f.did)
	}
	for _, b := range f.blocks {
		if err := m.Store.PutBlock(b.c, b.data); err != nil {
			return fmt.Errorf("%w: pushed block: %v", ErrBadMessage, err)
		}
	}
	return nil
}

func (n *custodyNet) enqueue(peerID string, frame []byte) {
	to, err := peer.Decode(peerID)
	if err != nil {
		return
	}
	if to == n.m.Host.ID() {
		return
	}
	n.mu.Lock()
	if n.corks > 0 || n.peerCorks[to] > 0 {
		if n.held == nil {
			n.held = map[peer.ID][]byte{}
		}
		n.held[to] = append(n.held[to], frame...)
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	n.push(to, frame)
}

// push queues frames (one or more, whole) for the peer's sender, starting
// it on first use.
func (n *custodyNet) push(to peer.ID, frames []byte) {
	n.mu.Lock()
	q, ok := n.out[to]
	if !ok {
		if n.m.ctx.Err() != nil {
			n.mu.Unlock()
			return
		}
		q = make(chan []byte, custodyQueue)
		n.out[to] = q
		n.stale[to] = &atomic.Bool{}
		if n.heard[to] == nil {
			n.heard[to] = &atomic.Int64{}
		}
		n.m.wg.Add(1)
		go n.sender(to, q, n.stale[to], n.heard[to])
	}
	n.mu.Unlock()
	select {
	case q <- frames:
	default:
		n.m.Logger.Debug("custody: send queue full; message dropped", "to", to)
	}
}

// sender owns the outbound stream to one peer. It writes every queued
// frame, flushing when the queue is empty (batching under load). After a
// failed write it reopens the stream and tries the batch once more; frames
// that fail twice are lost (the protocol tolerates loss).
func (n *custodyNet) sender(to peer.ID, q chan []byte, stale *atomic.Bool, heard *atomic.Int64) {
	defer n.m.wg.Done()
	var (
		s      network.Stream
		opened time.Time
	)
	closeStream := func(reset bool) {
		if s != nil {
			if reset {
				s.Reset()
			} else {
				s.Close()
			}
			s = nil
		}
	}
	defer closeStream(false)
	var batch bytes.Buffer
	for {
		var frame []byte
		select {
		case <-n.m.ctx.Done():
			return
		case frame = <-q:
		}
		batch.Reset()
		batch.Write(frame)
		for len(q) > 0 && batch.Len() < 64<<10 {
			batch.Write(<-q)
		}
		if stale.Swap(false) {
			closeStream(true)
		}
		if s != nil && time.Since(opened) > custodySilence && time.Since(time.Unix(0, heard.Load())) > custodySilence {
			closeStream(true) // writing into the void: reconnect
		}
		for attempt := 0; attempt < 2; attempt++ {
			if s == nil {
				var err error
				if s, err = n.open(to); err != nil {
					n.m.Logger.Debug("custody: open stream", "to", to, "err", err)
					break
				}
				opened = time.Now()
			}
			s.SetWriteDeadline(time.Now().Add(custodyDial))
			if _, err := s.Write(batch.Bytes()); err != nil {
				n.m.Logger.Debug("custody: write", "to", to, "attempt", attempt, "err", err)
				closeStream(true)
				continue
			}
			break
		}
	}
}

// open returns a stream to the peer: on one of its connections, newest
// first, if one answers (onConn), else by dialling it, learning its
// addresses from its host record when the peerstore has none that work (a
// restarted node listens on new ports). Each step has its own deadline: a
// dial to a killed peer's old QUIC address hangs until its timeout and must
// not eat the lookup's time.
func (n *custodyNet) open(to peer.ID) (network.Stream, error) {
	conns := n.m.Host.Network().ConnsToPeer(to)
	slices.SortFunc(conns, func(a, b network.Conn) int { return b.Stat().Opened.Compare(a.Stat().Opened) })
	for i, c := range conns {
		s, err := n.onConn(c, time.Second)
		if err != nil {
			n.m.Logger.Debug("custody: connection does not answer", "to", to, "addr", c.RemoteMultiaddr(), "err", err)
			continue
		}
		if i == 0 && len(conns) > 1 {
			n.m.wg.Add(1)
			go n.closeDead(conns[1:])
		}
		return s, nil
	}
	try := func(d time.Duration) (network.Stream, error) {
		ctx, cancel := context.WithTimeout(n.m.ctx, d)
		defer cancel()
		return n.m.Host.NewStream(ctx, to, CustodyProtocol)
	}
	s, err := try(time.Second)
	if err == nil {
		return s, nil
	}
	lctx, cancel := context.WithTimeout(n.m.ctx, 2*time.Second)
	addrs := n.m.lookupAddrs(lctx, to)
	cancel()
	if len(addrs) == 0 {
		return nil, err
	}
	n.m.Host.Peerstore().AddAddrs(to, addrs, peerstore.TempAddrTTL)
	if sw, ok := n.m.Host.Network().(*swarm.Swarm); ok {
		sw.Backoff().Clear(to) // the new addresses deserve a dial now
	}
	return try(custodyDial)
}

// onConn opens a custody stream on connection c and negotiates the protocol
// at once, which takes a round trip: a connection that does not answer
// within d fails. Host.NewStream cannot be used for this. It picks the
// connection with the most streams and negotiates lazily, so after a member
// was killed and restarted on new ports, the holder kept opening streams
// on its QUIC connection to the dead process (which libp2p keeps until
// QUIC's 30 s idle timeout, and on which hung streams pile up) although the
// member had connected again: the member received nothing for those 30 s.
// The holder did not notice either: it heard the member on the new
// connection, so its silence check (custodySilence) did not fire.
func (n *custodyNet) onConn(c network.Conn, d time.Duration) (network.Stream, error) {
	ctx, cancel := context.WithTimeout(n.m.ctx, d)
	defer cancel()
	s, err := c.NewStream(ctx)
	if err != nil {
		return nil, err
	}
	if err := s.SetProtocol(CustodyProtocol); err != nil {
		s.Reset()
		return nil, err
	}
	s.SetDeadline(time.Now().Add(d))
	if err := msmux.SelectProtoOrFail(CustodyProtocol, s); err != nil {
		s.Reset()
		return nil, err
	}
	s.SetDeadline(time.Time{})
	return s, nil
}

// closeDead closes those of a peer's older connections that do not answer
// within custodyDial (its newest answered within a second): what remains of
// a previous incarnation of the peer, which the DHT and the block exchange
// would otherwise go on using too until QUIC's idle timeout.
func (n *custodyNet) closeDead(conns []network.Conn) {
	defer n.m.wg.Done()
	for _, c := range conns {
		if c.IsClosed() {
			continue
		}
		s, err := n.onConn(c, custodyDial)
		if err == nil {
			s.Reset()
			continue
		}
		if n.m.ctx.Err() != nil {
			return
		}
		// Only silence condemns it: a refusal (say, a resource limit) is
		// an answer.
		var ne net.Error
		if !errors.Is(err, context.DeadlineExceeded) && !(errors.As(err, &ne) && ne.Timeout()) {
			continue
		}
		n.m.Logger.Debug("custody: closing a connection that does not answer", "to", c.RemotePeer(), "addr", c.RemoteMultiaddr(), "err", err)
		c.Close()
	}
}

// lookupAddrs finds a peer's addresses in its host record.
func (m *Mesh) lookupAddrs(ctx context.Context, id peer.ID) []multiaddr.Multiaddr {
	data, err := m.DHT.GetValue(ctx, agents.HostRecordKey(id.String()))
	if err != nil {
		return nil
	}
	r, err := agents.DecodeHostRecord(data)
	if err != nil || r.Verify() != nil || r.Peer != id.String() {
		return nil
	}
	return recordAddrs(r, id)
}

func recordAddrs(r *agents.HostRecord, id peer.ID) []multiaddr.Multiaddr {
	var out []multiaddr.Multiaddr
	for _, a := range r.Addrs {
		if ma, err := multiaddr.NewMultiaddr(a); err == nil {
			if ai, err := peer.AddrInfoFromP2pAddr(ma); err == nil && ai.ID == id {
				out = append(out, ai.Addrs...)
			}
		}
	}
	return out
}

// handleCustody reads frames from one member until the stream ends. The
// sender is the stream's authenticated peer; a frame claiming another
// sender, or a malformed frame, ends the stream.
func (m *Mesh) handleCustody(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	from := remote.String()
	heard := m.cnet.heardFrom(remote)
	r := bufio.NewReader(s)
	// While whole frames are already read, the replies they cause to the
	// peer are held (corkPeer) and leave together once the reader has
	// caught up, or after corkFrames frames. It never waits for the
	// network while corked.
	corked, n := false, 0
	uncork := func() {
		if corked {
			m.cnet.uncorkPeer(remote)
			corked = false
		}
	}
	defer uncork()
	for {
		if corked && (n >= corkFrames || !wholeFrame(r)) {
			uncork()
		}
		// Idle between frames for up to custodyIdle, but once a frame has
		// begun it must arrive whole within custodyFrame: a peer that
		// stalls mid-frame does not hold the stream (and its slot) for
		// minutes.
		s.SetReadDeadline(time.Now().Add(custodyIdle))
		if _, err := r.Peek(1); err != nil {
			return
		}
		s.SetReadDeadline(time.Now().Add(custodyFrame))
		f, err := readFrame(r)
		if err != nil {
			if errors.Is(err, ErrBadMessage) {
				m.Logger.Info("custody: bad frame; closing the stream", "from", from, "err", err)
				s.Reset()
			}
			return
		}
		heard.Store(time.Now().UnixNano())
		if !corked && wholeFrame(r) {
			m.cnet.corkPeer(remote)
			corked, n = true, 0
		}
		n++
		if f.blocks != nil {
			if err := m.acceptPush(f, from); err != nil {
				if errors.Is(err, ErrBadMessage) {
					m.Logger.Info("custody: bad push; closing the stream", "from", from, "err", err)
					s.Reset()
					return
				}
				m.Logger.Debug("custody: push not stored", "from", from, "agent", f.did, "err", err)
			}
			continue
		}
		did, gid, msg := f.did, f.gid, f.msg
		if err := m.Custody.Deliver(did, gid, from, msg); err != nil {
			if errors.Is(err, lease.ErrInvalidMessage) {
				m.Logger.Info("custody: forged message; closing the stream", "from", from, "err", err)
				s.Reset()
				return
			}
			m.Logger.Debug("custody: message not delivered", "from", from, "agent", did, "err", err)
		}
	}
}

// corkFrames bounds the frames whose replies a stream reader holds back.
const corkFrames = 256

// wholeFrame reports whether r's buffer holds a whole frame (reading it
// cannot block).
func wholeFrame(r *bufio.Reader) bool {
	b, _ := r.Peek(r.Buffered())
	l, k := binary.Uvarint(b)
	return k > 0 && uint64(len(b)-k) >= l
}

// Ensure makes checkpoint c of did present here with its state and every
// predecessor back to one in stop (custody.Net). Blocks already here are
// not fetched again, but the walk goes on through them: a fetch cut short
// by a crash leaves present blocks above missing ones.
func (n *custodyNet) Ensure(ctx context.Context, did string, c cid.Cid, peers []string, stop map[string]bool) error {
	var from []peer.AddrInfo
	for _, p := range peers {
		if id, err := peer.Decode(p); err == nil && id != n.m.Host.ID() {
			from = append(from, peer.AddrInfo{ID: id})
		}
	}
	cur := c
	signed := map[cid.Cid]bool{} // signatures checked below: verify need not check them again
	for depth := 0; depth < ensureMaxDepth; depth++ {
		if stop[cur.String()] {
			return n.verify(did, c, signed)
		}
		data, err := n.m.Ex.Fetch(ctx, cur, from...)
		if err != nil {
			return err
		}
		cp, err := agents.DecodeCheckpoint(data)
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", cur, err)
		}
		if cp.Agent != did {
			return fmt.Errorf("checkpoint %s belongs to %s, not %s", cur, cp.Agent, did)
		}
		if err := cp.Verify(); err != nil {
			return fmt.Errorf("checkpoint %s: %w", cur, err)
		}
		signed[cur] = true
		if _, err := n.m.Ex.FetchDAG(ctx, cp.State, exchange.FetchOptions{From: from}); err != nil {
			return fmt.Errorf("state of checkpoint %s: %w", cur, err)
		}
		if !cp.Prev.Defined() {
			// Seq 0: its genesis, module and manifest complete the lineage.
			for _, r := range []cid.Cid{cp.Genesis, cp.Manifest, cp.Module} {
				if _, err := n.m.Ex.FetchDAG(ctx, r, exchange.FetchOptions{From: from}); err != nil {
					return fmt.Errorf("lineage root %s: %w", r, err)
				}
			}
			return n.verify(did, c, signed)
		}
		cur = cp.Prev
	}
	return fmt.Errorf("checkpoint %s: lineage deeper than %d while fetching", c, ensureMaxDepth)
}

// verify checks the lineage of checkpoint c, now complete here, against
// every rule — only the part above a checkpoint verified before, so a
// standby spreads the cost of its agent's history over the checkpoints it
// accepts, and a takeover's Load finds the accepted one already verified.
// A checkpoint that fails is not accepted.
func (n *custodyNet) verify(did string, c cid.Cid, signed map[cid.Cid]bool) error {
	opts := agents.VerifyOptions{ExpectDID: did, Trusted: n.m.verified.Has, SignaturesChecked: func(c cid.Cid) bool { return signed[c] }}
	if _, err := agents.VerifyLineage(c, n.m.Store, opts); err != nil {
		return fmt.Errorf("checkpoint %s: %w", c, err)
	}
	n.m.verified.Add(c)
	return nil
}

// custodyCommitted observes a checkpoint a majority of the group stored
// and, when the driver says the head record is due (custody.Commit.Publish:
// a new holder or epoch, or the refresh interval), publishes it.
func (m *Mesh) custodyCommitted(c custody.Commit) {
	if c.Latency > 0 {
		m.commitLatency.Observe(c.Latency.Seconds())
	}
	if m.cfg.OnCommitted != nil {
		m.cfg.OnCommitted(c.DID, c.Seq, c.Latency)
	}
	if !c.Publish {
		return
	}
	cp := c.Head
	if cp == nil { // a recovery checkpoint: not made here, read it once
		data, err := m.Store.Get(c.CID)
		if err != nil {
			m.Logger.Warn("custody: committed checkpoint not readable", "agent", c.DID, "cid", c.CID, "err", err)
			return
		}
		if cp, err = agents.DecodeCheckpoint(data); err != nil {
			m.Logger.Warn("custody: committed checkpoint", "agent", c.DID, "cid", c.CID, "err", err)
			return
		}
	}
	m.onCommit(hosting.Head{CID: c.CID, Checkpoint: cp}, c.Key, c.Until)
}

// custodyReview is the holder's term-end placement review (custody
// Hooks.Review). Within the group, the agent goes to the best-ranked live
// member above this node (any live member when it drains) that advertises
// a free slot. Otherwise, a host outside the group that ranks above this
// node by rendezvous (when draining: any) gets it through a regroup, if it
// is eligible by its host record, answers a capacity probe, and — unless
// draining — has been connected for Timing.MoveAfter (a node that restarts
// often must not pull agents back and forth). Price is not part of the
// rank: it is the manifest's eligibility filter (DECISIONS D41).
func (m *Mesh) custodyReview(ctx context.Context, did string, members []string, draining bool) string {
	self := m.PeerID()
	cached, _ := m.cachedHosts(ctx) // the host view: a draining holder must not wait on DHT reads
	warm := m.view.warm()
	for _, p := range hosting.Rank(agents.AgentID(did), members) {
		if p == self {
			if draining {
				continue
			}
			break // nobody in the group ranks above this node
		}
		id, err := peer.Decode(p)
		if err != nil {
			continue
		}
		var r *agents.HostRecord
		if i := slices.IndexFunc(cached, func(h *agents.HostRecord) bool { return h.Peer == p }); i >= 0 {
			r = cached[i]
		} else if warm {
			continue // not in a warm view: gone, unreachable, or not hosting
		} else {
			data, err := m.DHT.GetValue(ctx, agents.HostRecordKey(p))
			if err != nil {
				continue
			}
			if r, err = agents.DecodeHostRecord(data); err != nil || r.Verify() != nil || r.Peer != p {
				continue
			}
		}
		if r.Expires < time.Now().UnixNano() || r.FreeSlots == 0 {
			continue
		}
		m.Host.Peerstore().AddAddrs(id, recordAddrs(r, id), peerstore.TempAddrTTL)
		return p
	}
	return m.betterOutsider(ctx, did, draining)
}

// betterOutsider returns the host outside did's group it should move to
// (see custodyReview), or "".
func (m *Mesh) betterOutsider(ctx context.Context, did string, draining bool) string {
	st, err := m.Custody.Agent(did)
	if err != nil {
		return ""
	}
	members := st.Members // the current configuration, not the founding one
	head, man, err := m.agentManifest(did)
	if err != nil {
		m.Logger.Debug("custody review: manifest", "agent", did, "err", err)
		return ""
	}
	hosts, err := m.cachedHosts(ctx)
	if err != nil {
		return ""
	}
	ranked, err := hosting.Place(agents.AgentID(did), man, hosts, time.Now())
	if err != nil {
		return ""
	}
	self := m.PeerID()
	// A group below its replica count (placed when too few hosts were
	// eligible) is filled by the first eligible outsider that answers: the
	// regroup toward it forms a group of full size. Durability, not rank,
	// decides; and it does not wait for the outsider to settle.
	short := len(members) < 1+int(man.Lease.Replicas)
	anyHost := draining || short
	for _, h := range ranked {
		if h.Peer == self || slices.Contains(members, h.Peer) {
			continue
		}
		if !anyHost && hosting.Rank(agents.AgentID(did), []string{self, h.Peer})[0] != h.Peer {
			return "" // the best outsider ranks below this node: stay
		}
		if m.moveBackedOff(did, h.Peer) {
			continue // a move there failed lately
		}
		id, err := peer.Decode(h.Peer)
		if err != nil {
			continue
		}
		if !anyHost && m.connectedFor(id) < m.Custody.Timing().MoveAfter {
			// Not settled yet (or not connected): connect now, look again
			// at the next term end.
			_ = m.Host.Connect(ctx, peer.AddrInfo{ID: id, Addrs: recordAddrs(h, id)})
			return ""
		}
		// The probe names the head, so the host fetches the agent and
		// compiles its module before the agent stops here (it may take
		// longer than the review's own limit).
		pctx, cancel := context.WithTimeout(m.ctx, leaseFetchLimit)
		err = m.offer(pctx, h, custodyOffer{Version: 2, DID: did, Probe: true, Head: head, From: m.PeerAddrs()})
		cancel()
		if err != nil {
			m.Logger.Debug("custody review: better host declined", "agent", did, "host", h.Peer, "err", err)
			if anyHost {
				continue
			}
			return ""
		}
		if short {
			m.Logger.Info("custody: filling a custody group below its replica count", "agent", did, "members", len(members), "want", 1+int(man.Lease.Replicas), "with", h.Peer)
		}
		return h.Peer
	}
	return ""
}

// reviewHostsTTL bounds how stale the host records of a review may be (or
// Timing.MoveAfter, if shorter) while the host view is cold.
const reviewHostsTTL = 10 * time.Second

// cachedHosts returns the hosts reviews, regroups and replacements place
// among: the host view's (no DHT walk, and peers found unreachable are left
// out, so a placement does not wait on a dead host's record); while the
// view is cold, Hosts shared by the reviews of reviewHostsTTL.
func (m *Mesh) cachedHosts(ctx context.Context) ([]*agents.HostRecord, error) {
	if hosts, ok := m.viewHosts(); ok {
		return hosts, nil
	}
	select {
	case m.reviewSem <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-m.reviewSem }()
	if time.Since(m.reviewAt) < min(reviewHostsTTL, m.Custody.Timing().MoveAfter) {
		return m.reviewHosts, nil
	}
	hosts, err := m.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	m.reviewAt, m.reviewHosts = time.Now(), hosts
	return hosts, nil
}

// moveBackoff: after a move toward a host failed before the old group
// left, the same move is not tried again for this long (each attempt stops
// the agent briefly).
const moveBackoff = 10 * time.Minute

func (m *Mesh) moveFailed(did, to string) {
	m.moveMu.Lock()
	defer m.moveMu.Unlock()
	if m.moveFails == nil {
		m.moveFails = map[[2]string]time.Time{}
	}
	now := time.Now()
	for k, t := range m.moveFails {
		if now.Sub(t) > moveBackoff {
			delete(m.moveFails, k)
		}
	}
	m.moveFails[[2]string{did, to}] = now
}

func (m *Mesh) moveBackedOff(did, to string) bool {
	m.moveMu.Lock()
	defer m.moveMu.Unlock()
	t, ok := m.moveFails[[2]string{did, to}]
	return ok && time.Since(t) < moveBackoff
}

// connectedFor is how long this node has had a connection to id (its
// oldest open one), 0 if none.
func (m *Mesh) connectedFor(id peer.ID) time.Duration {
	var oldest time.Time
	for _, c := range m.Host.Network().ConnsToPeer(id) {
		if o := c.Stat().Opened; !o.IsZero() && (oldest.IsZero() || o.Before(oldest)) {
			oldest = o
		}
	}
	if oldest.IsZero() {
		return 0
	}
	return time.Since(oldest)
}

// agentManifest reads the accepted checkpoint (CID) and the manifest of an
// agent this node is a custody member of.
func (m *Mesh) agentManifest(did string) (string, *agents.Manifest, error) {
	st, err := m.Custody.Agent(did)
	if err != nil {
		return "", nil, err
	}
	c, err := cid.Decode(st.Accepted)
	if err != nil {
		return "", nil, fmt.Errorf("accepted checkpoint %q: %w", st.Accepted, err)
	}
	_, man, err := m.checkpointManifest(c)
	return st.Accepted, man, err
}

// checkpointManifest reads a stored checkpoint and its manifest.
func (m *Mesh) checkpointManifest(c cid.Cid) (*agents.Checkpoint, *agents.Manifest, error) {
	data, err := m.Store.Get(c)
	if err != nil {
		return nil, nil, err
	}
	cp, err := agents.DecodeCheckpoint(data)
	if err != nil {
		return nil, nil, err
	}
	mdata, err := m.Store.Get(cp.Manifest)
	if err != nil {
		return nil, nil, err
	}
	man, err := agents.ParseManifest(mdata)
	return cp, man, err
}

// custodyOffer is version 2 of the lease offer: membership of a custody
// group. The agent key travels only on this authenticated, encrypted
// stream, to the members.
type custodyOffer struct {
	Version  int                 `json:"version"`
	Head     string              `json:"head"` // the checkpoint the group starts from
	Seq      uint64              `json:"seq"`
	Epoch    uint64              `json:"epoch,omitempty"` // the head's epoch (revive); the group campaigns above it
	Seed     []byte              `json:"seed,omitempty"`
	TermMs   int64               `json:"term_ms"`
	Members  []string            `json:"members"`
	Addrs    map[string][]string `json:"addrs,omitempty"` // member → multiaddrs
	Campaign bool                `json:"campaign,omitempty"`
	Leave    bool                `json:"leave,omitempty"` // undo: the placement failed
	Kick     bool                `json:"kick,omitempty"`  // a member: campaign now
	Probe    bool                `json:"probe,omitempty"` // would this host take the agent now? (joins nothing)
	// Released: a regroup's join — the old group's holder stopped at
	// Epoch and a majority of it left, so members need not wait out a lease.
	Released bool     `json:"released,omitempty"`
	DID      string   `json:"did"`
	From     []string `json:"from"` // where to fetch the blocks
	// Add: join a running group as a member added in place. Members,
	// Genesis and StartEpoch are the group's record (its ID), Head/Seq the
	// holder's committed checkpoint, Epoch the holder's epoch and Conf the
	// joint configuration it proposes.
	Add        bool       `json:"add,omitempty"`
	Genesis    string     `json:"genesis,omitempty"`
	StartEpoch uint64     `json:"start_epoch,omitempty"`
	Conf       *offerConf `json:"conf,omitempty"`
	// Blocks: the new blocks of the head (checkpoint, genesis, manifest,
	// state) when they are small, so a join need not fetch them back from
	// the offerer over the exchange (offerBlocks). Each is re-hashed.
	Blocks []offerBlock `json:"blocks,omitempty"`
}

// offerBlock is one block carried by a join offer.
type offerBlock struct {
	CID  string `json:"cid"`
	Data []byte `json:"data"`
}

// offerConf is a lease configuration in an offer.
type offerConf struct {
	Index   uint64   `json:"index"`
	Members []string `json:"members"`
	Joint   []string `json:"joint,omitempty"`
}

// acceptCustody serves a custody offer: fetch the agent's DAG from the
// offerer, verify its whole lineage and compile its module (so this member
// could run it), then join the group.
func (m *Mesh) acceptCustody(ctx context.Context, o custodyOffer, from peer.ID) error {
	if o.Kick {
		return m.Custody.Campaign(o.DID)
	}
	if o.Leave {
		if err := m.Custody.Leave(o.DID, from.String()); err != nil {
			return err
		}
		m.Logger.Info("custody: left group", "agent", o.DID, "asked by", from)
		return nil
	}
	if m.cfg.Slots == 0 {
		return fmt.Errorf("%w: this node does not host agents", hosting.ErrNoCapacity)
	}
	if m.Custody.Draining() {
		return fmt.Errorf("%w: this node is draining", hosting.ErrNoCapacity)
	}
	if o.Probe {
		if m.Svc.FreeSlots() <= 0 {
			return fmt.Errorf("%w: no free slot", hosting.ErrNoCapacity)
		}
		if o.Head != "" {
			return m.prewarm(ctx, o, from)
		}
		return nil
	}
	if o.Add {
		if o.Conf == nil || !slices.Contains(o.Conf.Members, m.PeerID()) {
			return fmt.Errorf("%w: an add offer must carry a configuration that includes this node", ErrBadMessage)
		}
	} else if !slices.Contains(o.Members, m.PeerID()) {
		return fmt.Errorf("%w: this node is not in the offered group", ErrBadMessage)
	}
	head, err := cid.Decode(o.Head)
	if err != nil {
		return fmt.Errorf("%w: head %q: %v", ErrBadMessage, o.Head, err)
	}
	if len(o.Seed) != ed25519.SeedSize {
		return fmt.Errorf("%w: key seed is %d bytes, want %d", ErrBadMessage, len(o.Seed), ed25519.SeedSize)
	}
	key := ed25519.NewKeyFromSeed(o.Seed)
	for p, addrs := range o.Addrs {
		id, err := peer.Decode(p)
		if err != nil || id == m.Host.ID() {
			continue
		}
		var mas []multiaddr.Multiaddr
		for _, a := range addrs {
			if ma, err := multiaddr.NewMultiaddr(a); err == nil {
				mas = append(mas, ma)
			}
		}
		m.Host.Peerstore().AddAddrs(id, mas, peerstore.TempAddrTTL)
	}
	if from != m.Host.ID() {
		if err := m.storeOffered(o.Blocks); err != nil {
			return err
		}
		if err := m.fetchOffered(ctx, head, o, from); err != nil { // what the offer did not carry
			return err
		}
	}
	env, err := m.Env(ctx, nil)
	if err != nil {
		return err
	}
	a, err := hosting.Load(ctx, env, head, key)
	if err != nil {
		return err
	}
	if a.Head.Checkpoint.Seq != o.Seq || a.DID != o.DID {
		return fmt.Errorf("%w: offer names %s seq %d, the checkpoint is %s seq %d", ErrBadMessage, o.DID, o.Seq, a.DID, a.Head.Checkpoint.Seq)
	}
	members := slices.Sorted(slices.Values(o.Members))
	g := &custody.Group{Version: 1, Agent: a.DID, Members: members, Genesis: head.String(), TermMs: o.TermMs, Publisher: from.String()}
	if o.Add {
		g.Genesis, g.StartEpoch = o.Genesis, o.StartEpoch
		conf := lease.Conf{Index: o.Conf.Index, Members: o.Conf.Members, Joint: o.Conf.Joint}
		if err := m.Custody.Join(custody.JoinParams{Group: g, Key: key, Add: &custody.AddParams{Head: head, Seq: o.Seq, Epoch: o.Epoch, Conf: conf}}); err != nil {
			return err
		}
		m.kickAdvertise()
		m.Logger.Info("custody: added to a running group", "agent", a.DID, "configuration", conf.String(), "from", from)
		return nil
	}
	if o.Epoch < a.Head.Checkpoint.Epoch {
		return fmt.Errorf("%w: offer starts the group at epoch %d, below the checkpoint's epoch %d", ErrBadMessage, o.Epoch, a.Head.Checkpoint.Epoch)
	}
	if err := m.Custody.Join(custody.JoinParams{Group: g, Key: key, Seq: o.Seq, Epoch: o.Epoch, Campaign: o.Campaign, Released: o.Released}); err != nil {
		return err
	}
	m.kickAdvertise()
	m.Logger.Info("custody: joined group", "agent", a.DID, "members", len(members), "campaign", o.Campaign, "from", from)
	return nil
}

// prewarm serves a probe that names the agent's head: fetch its DAG and
// hosting.Prepare it (verify the lineage, compile the module) now, so that
// the join that may follow (a move or regroup to this node) finds
// everything here and the agent's pause stays short. Like a join offer it costs a fetch, a
// verification and a compilation, under the same limits.
func (m *Mesh) prewarm(ctx context.Context, o custodyOffer, from peer.ID) error {
	head, err := cid.Decode(o.Head)
	if err != nil {
		return fmt.Errorf("%w: head %q: %v", ErrBadMessage, o.Head, err)
	}
	if err := m.fetchOffered(ctx, head, o, from); err != nil {
		return err
	}
	env, err := m.Env(ctx, nil)
	if err != nil {
		return err
	}
	return hosting.Prepare(ctx, env, head, o.DID)
}

// prewarmGroup probes, with the head (prewarm), the best size hosts of
// ranked other than this node, in parallel, and returns ranked without the
// ones that declined. It fails if fewer than a majority of size remain.
func (m *Mesh) prewarmGroup(ctx context.Context, did string, head cid.Cid, ranked []*agents.HostRecord, size int) ([]*agents.HostRecord, error) {
	pctx, cancel := context.WithTimeout(ctx, leaseFetchLimit)
	defer cancel()
	n := min(size, len(ranked))
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, h := range ranked[:n] {
		if h.Peer == m.PeerID() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.offer(pctx, h, custodyOffer{Version: 2, DID: did, Probe: true, Head: head.String(), From: m.PeerAddrs()})
		}()
	}
	wg.Wait()
	var out []*agents.HostRecord
	for i, h := range ranked {
		if i < n && errs[i] != nil {
			m.Logger.Info("custody: host declined a regroup", "agent", did, "host", h.Peer, "err", errs[i])
			continue
		}
		out = append(out, h)
	}
	if len(out) < size/2+1 {
		return nil, fmt.Errorf("only %d eligible hosts answered (%d needed)", len(out), size/2+1)
	}
	return out, nil
}

// storeOffered stores the blocks a join offer carried, each re-hashed
// against its CID (a block that does not match refuses the offer). They
// are ordinary unpinned blocks until the join pins the head; the lineage is
// verified after the fetch, as for fetched blocks.
func (m *Mesh) storeOffered(blocks []offerBlock) error {
	if len(blocks) > offerMaxBlocks {
		return fmt.Errorf("%w: %d blocks in an offer, the limit is %d", ErrBadMessage, len(blocks), offerMaxBlocks)
	}
	for _, b := range blocks {
		c, err := cid.Decode(b.CID)
		if err != nil {
			return fmt.Errorf("%w: offered block %q: %v", ErrBadMessage, b.CID, err)
		}
		if err := m.Store.PutBlock(c, b.Data); err != nil {
			return fmt.Errorf("%w: offered block: %v", ErrBadMessage, err)
		}
	}
	return nil
}

// fetchOffered fetches the DAG under head an offer names, from the
// offer's From addresses (or the offerer), within leaseFetchLimit.
func (m *Mesh) fetchOffered(ctx context.Context, head cid.Cid, o custodyOffer, from peer.ID) error {
	fromInfos := parseAddrInfos(o.From)
	if len(fromInfos) == 0 {
		fromInfos = []peer.AddrInfo{{ID: from}}
	}
	fctx, cancel := context.WithTimeout(ctx, leaseFetchLimit)
	defer cancel()
	if _, err := m.Ex.FetchDAG(fctx, head, exchange.FetchOptions{From: fromInfos}); err != nil {
		return fmt.Errorf("fetch agent %s: %w", head, err)
	}
	return nil
}

func parseAddrInfos(addrs []string) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, a := range addrs {
		ma, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			continue
		}
		if ai, err := peer.AddrInfoFromP2pAddr(ma); err == nil {
			out = append(out, *ai)
		}
	}
	return out
}

func (m *Mesh) onTick(did string, tick uint64) {
	m.ticks.Inc()
	if m.cfg.OnTick != nil {
		m.cfg.OnTick(did, tick)
	}
}

// custodyReplace changes did's custody group in place (custody
// Hooks.Replace): the dead members out, the group filled to its replica
// count with the best-ranked eligible hosts outside it (p's toward hint
// first: a review found and prewarmed it). The would-be members are probed
// with the head in parallel (fetch, verify, compile) and those that answer
// join with the joint configuration; if one of them then fails, the others
// are asked to leave and the group stays as it is. The agent runs
// throughout.
func (m *Mesh) custodyReplace(ctx context.Context, p custody.ReplaceParams) ([]string, error) {
	_, man, err := m.checkpointManifest(p.Head)
	if err != nil {
		return nil, err
	}
	keep := slices.DeleteFunc(slices.Clone(p.Members), func(x string) bool { return slices.Contains(p.Dead, x) })
	need := 1 + int(man.Lease.Replicas) - len(keep)
	if need <= 0 {
		if len(p.Dead) == 0 {
			return nil, custody.ErrNoChange
		}
		return keep, nil
	}
	hosts, err := m.cachedHosts(ctx)
	if err != nil {
		return nil, err
	}
	hosts = slices.DeleteFunc(slices.Clone(hosts), func(h *agents.HostRecord) bool {
		return slices.Contains(p.Members, h.Peer) || slices.Contains(p.Dead, h.Peer)
	})
	ranked, err := hosting.Place(agents.AgentID(p.DID), man, hosts, time.Now())
	if err != nil || len(ranked) == 0 {
		if len(p.Dead) == 0 {
			return nil, custody.ErrNoChange
		}
		return nil, fmt.Errorf("replace %v of %s: no eligible host outside the group: %v", p.Dead, p.DID, err)
	}
	// Probe twice as many as needed at once, so one that declines or is
	// gone does not cost another round.
	n := min(len(ranked), 2*need)
	errs := make([]error, n)
	var wg sync.WaitGroup
	pctx, cancel := context.WithTimeout(ctx, leaseFetchLimit)
	for i, h := range ranked[:n] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = m.offer(pctx, h, custodyOffer{Version: 2, DID: p.DID, Probe: true, Head: p.Head.String(), From: m.PeerAddrs()})
		}()
	}
	wg.Wait()
	cancel()
	var picked []*agents.HostRecord
	for i, h := range ranked[:n] {
		if errs[i] == nil && len(picked) < need {
			picked = append(picked, h)
		}
	}
	if len(picked) == 0 {
		return nil, fmt.Errorf("replace %v of %s: no eligible host answered: %v", p.Dead, p.DID, errors.Join(errs...))
	}
	next := slices.Clone(keep)
	for _, h := range picked {
		next = append(next, h.Peer)
	}
	slices.Sort(next)
	conf, err := p.Conf(ctx, next)
	if err != nil {
		return nil, err
	}
	addrs := map[string][]string{}
	for _, x := range keep {
		if id, err := peer.Decode(x); err == nil {
			for _, a := range m.Host.Peerstore().Addrs(id) {
				addrs[x] = append(addrs[x], a.String())
			}
		}
	}
	add := custodyOffer{Version: 2, DID: p.DID, Add: true, Head: p.Head.String(), Seq: p.Seq, Epoch: p.Epoch,
		Seed: p.Key.Seed(), TermMs: p.Group.TermMs, Members: p.Group.Members, Genesis: p.Group.Genesis,
		StartEpoch: p.Group.StartEpoch, Conf: &offerConf{Index: conf.Index, Members: conf.Members, Joint: conf.Joint},
		Addrs: addrs, From: m.PeerAddrs()}
	jerrs := make([]error, len(picked))
	for i, h := range picked {
		wg.Add(1)
		go func() {
			defer wg.Done()
			jerrs[i] = m.offer(ctx, h, add)
		}()
	}
	wg.Wait()
	if err := errors.Join(jerrs...); err != nil {
		leave := custodyOffer{Version: 2, DID: p.DID, Leave: true}
		for i, h := range picked {
			if jerrs[i] == nil {
				if lerr := m.offer(ctx, h, leave); lerr != nil {
					m.Logger.Warn("custody: undo an added member", "agent", p.DID, "host", h.Peer, "err", lerr)
				}
			}
		}
		return nil, fmt.Errorf("replace %v of %s: a new member did not join: %w", p.Dead, p.DID, err)
	}
	m.Logger.Info("custody: new members joined; the holder proposes them", "agent", p.DID, "members", next, "dead", p.Dead)
	return next, nil
}

// regroupCandidates ranks the eligible hosts for a new group of did without
// the dead members, from the host view (cachedHosts): a DHT enumeration
// with the agent stopped kept it stopped for seconds (dials to the dead
// member time out); a stale record costs a declined probe. It fails below
// a majority of the group's size.
func (m *Mesh) regroupCandidates(ctx context.Context, did string, man *agents.Manifest, dead []string) ([]*agents.HostRecord, int, error) {
	hosts, err := m.cachedHosts(ctx)
	if err != nil {
		return nil, 0, err
	}
	hosts = slices.DeleteFunc(slices.Clone(hosts), func(h *agents.HostRecord) bool { return slices.Contains(dead, h.Peer) })
	ranked, err := hosting.Place(agents.AgentID(did), man, hosts, time.Now())
	size := 1 + int(man.Lease.Replicas)
	if err != nil || len(ranked) < size/2+1 {
		return nil, 0, fmt.Errorf("regroup %s: too few eligible hosts for a new group (%d of %d known, %d excluded as dead): %v", did, len(ranked), len(hosts), len(dead), err)
	}
	return ranked, size, nil
}

// custodyRegroup replaces a custody group that lost members (custody
// Hooks.Regroup): the agent is stopped and its final checkpoint committed.
// It checks a new placement is possible, asks the live old members to
// leave (a majority of the old group must have left before anything else
// happens, so the old group can never elect a holder again), leaves itself,
// and places the agent with a new group above epoch. A voluntary move
// (p.Toward) first checks that the target still ranks in the new group and
// answers a capacity probe; if not, the old group is kept.
func (m *Mesh) custodyRegroup(p custody.RegroupParams) (err error) {
	did, head, seq, epoch, key, members, dead := p.DID, p.Head, p.Seq, p.Epoch, p.Key, p.Members, p.Dead
	if p.Toward != "" {
		defer func() {
			if err != nil { // the move did not happen: do not retry it every term
				m.moveFailed(did, p.Toward)
			}
		}()
	}
	ctx, cancel := context.WithTimeout(m.ctx, 3*time.Minute)
	defer cancel()
	cp, man, err := m.checkpointManifest(head)
	if err != nil {
		return err
	}
	ranked, size, err := m.regroupCandidates(ctx, did, man, dead)
	if err != nil {
		return err
	}
	if p.Toward != "" {
		if i := slices.IndexFunc(ranked, func(h *agents.HostRecord) bool { return h.Peer == p.Toward }); i < 0 || i >= size {
			return fmt.Errorf("move %s: %s no longer ranks in the new group; keeping the old group", did, p.Toward)
		}
	}
	// Prewarm the would-be members (fetch, verify, compile) while the old
	// group still stands: a join after the old group left must be quick and
	// near-certain, since a placement that fails then leaves the agent to
	// revive. Hosts that decline are dropped; too few left keeps the group.
	if ranked, err = m.prewarmGroup(ctx, did, head, ranked, size); err != nil {
		return fmt.Errorf("regroup %s: %w; keeping the old group", did, err)
	}
	if p.Toward != "" && !slices.ContainsFunc(ranked[:min(size, len(ranked))], func(h *agents.HostRecord) bool { return h.Peer == p.Toward }) {
		return fmt.Errorf("move %s: %s declined; keeping the old group", did, p.Toward)
	}
	self := m.PeerID()
	leave := custodyOffer{Version: 2, DID: did, Leave: true}
	var old []*agents.HostRecord
	for _, mp := range members {
		if mp == self || slices.Contains(dead, mp) {
			continue
		}
		h := &agents.HostRecord{Peer: mp}
		if id, err := peer.Decode(mp); err == nil {
			for _, a := range m.Host.Peerstore().Addrs(id) {
				h.Addrs = append(h.Addrs, a.String()+"/p2p/"+mp)
			}
		}
		old = append(old, h)
	}
	// In parallel: the agent is stopped meanwhile, and one slow member must
	// not hold up the others.
	left := 1 // this node, below
	for _, err := range m.offerAll(ctx, old, leave, func(h *agents.HostRecord, err error) {
		m.Logger.Warn("custody: old member did not leave", "agent", did, "member", h.Peer, "err", err)
	}) {
		if err == nil {
			left++
		}
	}
	if left < len(members)/2+1 {
		return fmt.Errorf("regroup %s: only %d of %d old members could leave; keeping the old group", did, left, len(members))
	}
	isPublisher := false
	if g, err := m.Custody.Group(did); err == nil {
		isPublisher = g.Publisher == self
	}
	if err := m.Custody.Leave(did, ""); err != nil {
		m.Logger.Warn("custody: leave own membership", "agent", did, "err", err)
	}
	// Keep the key while placing: this node is the agent's last copy of it
	// outside the new group until the group exists.
	if _, err := m.Keys.Put(key); err != nil {
		m.Logger.Warn("custody: keep agent key while regrouping", "agent", did, "err", err)
	}
	res := &PublishResult{DID: did, Head: head.String(), Epoch: epoch + 1}
	h := hosting.Head{CID: head, Checkpoint: cp}
	// The old group is gone: keep trying (the agent is stopped until a
	// group forms) until the regroup's deadline, then leave it to revive.
	for attempt := 1; ; attempt++ {
		err = m.place(ctx, res, h, epoch, true, ranked, int(man.Lease.Replicas), int64(man.Lease.TermSeconds)*1000, key, func(string) {})
		if err == nil {
			break
		}
		m.Logger.Warn("custody: regroup placement failed; retrying", "agent", did, "attempt", attempt, "err", err)
		if ctx.Err() != nil {
			m.Logger.Error("custody: the old group left but no new group could be formed; revive the agent from this node or its publisher",
				"agent", did, "head", head, "seq", seq, "err", err)
			return nil // the old group is gone: nothing to resume
		}
		select {
		case <-ctx.Done():
		case <-time.After(2 * time.Second):
		}
		if hs, herr := m.cachedHosts(ctx); herr == nil {
			hs = slices.DeleteFunc(slices.Clone(hs), func(h *agents.HostRecord) bool { return slices.Contains(dead, h.Peer) })
			if r, perr := hosting.Place(agents.AgentID(did), man, hs, time.Now()); perr == nil {
				ranked = r
			}
		}
	}
	if !slices.Contains(res.Members, self) && !isPublisher {
		_ = m.Keys.Delete(did) // not a member any more, and not its publisher
	}
	m.Logger.Info("custody: agent regrouped", "agent", did, "members", res.Members, "holder", res.Holder, "from seq", seq, "toward", p.Toward)
	return nil
}

func (n *custodyNet) heardFrom(p peer.ID) *atomic.Int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	h := n.heard[p]
	if h == nil {
		h = &atomic.Int64{}
		n.heard[p] = h
	}
	return h
}

// greetMembers connects to the other members of every custody group this
// node restored, so that they learn its new addresses at once (and drop
// streams to its previous incarnation) instead of after their dead
// connection times out.
func (m *Mesh) greetMembers() {
	// Retried: right after a start the DHT may not answer yet, and a member
	// that restarted on new ports is only reachable once its fresh host
	// record is found — until someone connects, the others keep dialling
	// the addresses it had before.
	for attempt := 0; attempt < greetAttempts; attempt++ {
		missing := 0
		seen := map[string]bool{m.PeerID(): true}
		for _, st := range m.Custody.Status() {
			for _, p := range st.Members {
				if seen[p] {
					continue
				}
				seen[p] = true
				id, err := peer.Decode(p)
				if err != nil || m.Host.Network().Connectedness(id) == network.Connected {
					continue
				}
				ctx, cancel := context.WithTimeout(m.ctx, 5*time.Second)
				if addrs := m.lookupAddrs(ctx, id); len(addrs) > 0 {
					_ = m.Host.Connect(ctx, peer.AddrInfo{ID: id, Addrs: addrs})
				}
				cancel()
				if m.Host.Network().Connectedness(id) != network.Connected {
					missing++
				}
			}
		}
		if missing == 0 {
			return
		}
		select {
		case <-m.ctx.Done():
			return
		case <-time.After(greetRetry):
		}
	}
}

// greetMembers tries for about a minute; members still unreachable after
// that are dead or partitioned, which the lease protocol handles.
const (
	greetAttempts = 12
	greetRetry    = 5 * time.Second
)
