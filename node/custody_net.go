// The custody transport: custody.Net (and custody.Batcher) over libp2p —
// frames, per-peer senders and corks, stream choice, the reader that steps
// messages into the custody engine, and the members' checkpoint fetch
// (Ensure). The hooks the drivers call are in custody.go.

package node

import (
	"bufio"
	"bytes"
	"context"
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
	"github.com/igor-mesh/igor-node/contentstore"
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
)

// custodyNet implements custody.Net over libp2p.
type custodyNet struct {
	m  *Mesh
	mu sync.Mutex // guards out, stale, corks, held
	// out: one sender goroutine per peer, created on first use; each item
	// is frames to write together.
	out map[peer.ID]chan [][]byte
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
	held      map[peer.ID][][]byte
	// ids caches peer.Decode of the recipients' IDs (a handful of peers,
	// a message to one of them in every heartbeat round of every group).
	ids map[string]peer.ID
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
	out := map[peer.ID][][]byte{}
	for to := range n.held {
		if b, ok := n.releaseLocked(to); ok {
			out[to] = b
		}
	}
	n.mu.Unlock()
	for to, b := range out {
		n.push(to, b)
	}
}

// releaseLocked takes the frames held for a peer once no cork holds them.
func (n *custodyNet) releaseLocked(to peer.ID) ([][]byte, bool) {
	b, ok := n.held[to]
	if !ok || n.corks > 0 || n.peerCorks[to] > 0 {
		return nil, false
	}
	delete(n.held, to)
	return b, true
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
	b, release := n.releaseLocked(to)
	n.mu.Unlock()
	if release {
		n.push(to, b)
	}
}

func newCustodyNet(m *Mesh) *custodyNet {
	n := &custodyNet{m: m, out: map[peer.ID]chan [][]byte{}, ids: map[string]peer.ID{}, stale: map[peer.ID]*atomic.Bool{}, heard: map[peer.ID]*atomic.Int64{}}
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

// frame is one decoded custody frame: a lease message, pushed blocks, or
// a pair message (a frame whose DID is empty: no group, no group ID).
type frame struct {
	did    string
	gid    custody.GroupID
	msg    lease.Message
	blocks []pushedBlock // a push frame
	pair   bool          // a pair message (MsgPairBeat, MsgPairAck)
}

// encodePairFrame frames a pair message: an empty DID, then the message.
func encodePairFrame(msg lease.Message) ([]byte, error) {
	b := make([]byte, frameLenRoom, frameLenRoom+1+96)
	b = append(b, 0)
	b, err := lease.AppendMessage(b, msg)
	if err != nil {
		return nil, err
	}
	return finishFrame(b)
}

func encodeFrame(did string, gid custody.GroupID, msg lease.Message) ([]byte, error) {
	b, err := lease.AppendMessage(frameHeader(did, gid, 128), msg)
	if err != nil {
		return nil, err
	}
	return finishFrame(b)
}

// A frame is built in one buffer: frameHeader leaves room for the length
// prefix and writes the DID and group ID, the caller appends the body, and
// finishFrame writes the prefix right-aligned in that room.
func frameHeader(did string, gid custody.GroupID, bodyHint int) []byte {
	b := make([]byte, frameLenRoom, frameLenRoom+1+len(did)+len(gid)+bodyHint)
	b = binary.AppendUvarint(b, uint64(len(did)))
	b = append(b, did...)
	return append(b, gid[:]...)
}

func finishFrame(b []byte) ([]byte, error) {
	inner := len(b) - frameLenRoom
	if inner > maxCustodyFrame {
		return nil, fmt.Errorf("%w: custody frame of %d bytes", ErrBadMessage, inner)
	}
	var l [binary.MaxVarintLen64]byte
	prefix := binary.PutUvarint(l[:], uint64(inner))
	start := frameLenRoom - prefix
	copy(b[start:], l[:prefix])
	return b[start:], nil
}

// frameLenRoom is the most bytes a frame's length prefix takes
// (maxCustodyFrame < 1<<21).
const frameLenRoom = 3

func encodePush(did string, gid custody.GroupID, blocks []pushedBlock) ([]byte, error) {
	size := 1 + binary.MaxVarintLen64
	for _, b := range blocks {
		size += 2*binary.MaxVarintLen64 + b.c.ByteLen() + len(b.data)
	}
	body := append(frameHeader(did, gid, size), pushTag)
	body = binary.AppendUvarint(body, uint64(len(blocks)))
	for _, b := range blocks {
		body = binary.AppendUvarint(body, uint64(b.c.ByteLen()))
		body = append(body, b.c.Bytes()...)
		body = binary.AppendUvarint(body, uint64(len(b.data)))
		body = append(body, b.data...)
	}
	return finishFrame(body)
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

// readFrame reads one frame; errors wrap ErrBadMessage (or are I/O errors).
func readFrame(r *bufio.Reader) (frame, error) {
	var fr frameReader
	return fr.read(r)
}

// frameReader reads the frames of one stream. It reuses its buffer, and
// the strings the frames repeat — the agent DIDs (parsed once), the peer
// IDs, the checkpoint IDs of the heartbeats between two commits — so that
// a heartbeat costs no allocation for them (a stream carries the rounds
// of every group two nodes share). The zero value works.
type frameReader struct {
	buf  []byte
	strs map[string]string // interned; cleared when it reaches maxInterned
	dids map[string]bool   // interned DIDs that parsed
}

// maxInterned bounds a frameReader's strings.
const maxInterned = 4096

func (fr *frameReader) read(r *bufio.Reader) (frame, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return frame{}, err
	}
	if n == 0 || n > maxCustodyFrame {
		return frame{}, fmt.Errorf("%w: custody frame length %d outside 1..%d", ErrBadMessage, n, maxCustodyFrame)
	}
	if uint64(cap(fr.buf)) < n {
		fr.buf = make([]byte, n)
	}
	buf := fr.buf[:n]
	if _, err := io.ReadFull(r, buf); err != nil {
		return frame{}, err
	}
	return fr.decode(buf)
}

func (fr *frameReader) intern(b []byte) string {
	if s, ok := fr.strs[string(b)]; ok {
		return s
	}
	if fr.strs == nil || len(fr.strs) >= maxInterned {
		fr.strs, fr.dids = make(map[string]string), make(map[string]bool)
	}
	s := string(b)
	fr.strs[s] = s
	return s
}

func decodeFrame(buf []byte) (frame, error) {
	var fr frameReader
	return fr.decode(buf)
}

// decode decodes buf, which it does not keep: a push frame's blocks are
// copied out.
func (fr *frameReader) decode(buf []byte) (frame, error) {
	var f frame
	l, k := binary.Uvarint(buf)
	if k > 0 && l == 0 {
		var err error
		if f.msg, err = lease.DecodeMessageInterned(buf[k:], fr.intern); err != nil {
			return f, fmt.Errorf("%w: custody pair frame: %v", ErrBadMessage, err)
		}
		if f.msg.Type != lease.MsgPairBeat && f.msg.Type != lease.MsgPairAck {
			return f, fmt.Errorf("%w: custody pair frame carries a %s", ErrBadMessage, f.msg.Type)
		}
		f.pair = true
		return f, nil
	}
	if k <= 0 || l == 0 || l > 128 || uint64(len(buf)-k) < l+uint64(len(f.gid)) {
		return f, fmt.Errorf("%w: custody frame: bad agent DID length", ErrBadMessage)
	}
	f.did = fr.intern(buf[k : k+int(l)])
	if !fr.dids[f.did] {
		if _, err := agents.ParseDID(f.did); err != nil {
			return f, fmt.Errorf("%w: custody frame: %v", ErrBadMessage, err)
		}
		fr.dids[f.did] = true
	}
	rest := buf[k+int(l):]
	copy(f.gid[:], rest)
	body := rest[len(f.gid):]
	var err error
	if len(body) > 0 && body[0] == pushTag {
		f.blocks, err = decodePush(bytes.Clone(body[1:]))
		return f, err
	}
	if f.msg, err = lease.DecodeMessageInterned(body, fr.intern); err != nil {
		return f, fmt.Errorf("%w: custody frame: %v", ErrBadMessage, err)
	}
	return f, nil
}

// SendPair queues a pair message (custody.PairNet); a full queue drops it.
func (n *custodyNet) SendPair(msg lease.Message) {
	frame, err := encodePairFrame(msg)
	if err != nil {
		n.m.Logger.Warn("custody: encode pair message", "err", err)
		return
	}
	n.enqueue(msg.To, frame)
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
func (n *custodyNet) Push(did string, gid custody.GroupID, head hosting.Head, to []string) {
	c, cp := head.CID, head.Checkpoint
	data, err := n.m.Store.Get(c)
	if err != nil || cp == nil {
		return
	}
	blocks := []pushedBlock{{c: c, data: data}}
	size := len(data)
	ids, err := objectsOf(n.m.Store, cp)
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
	if gid, err := m.Custody.GroupID(f.did); err != nil || gid != f.gid {
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
	n.mu.Lock()
	to, ok := n.ids[peerID]
	if !ok {
		var err error
		if to, err = peer.Decode(peerID); err != nil {
			n.mu.Unlock()
			return
		}
		if len(n.ids) >= maxPeerIDs {
			clear(n.ids)
		}
		n.ids[peerID] = to
	}
	if to == n.m.Host.ID() {
		n.mu.Unlock()
		return
	}
	if n.corks > 0 || n.peerCorks[to] > 0 {
		if n.held == nil {
			n.held = map[peer.ID][][]byte{}
		}
		n.held[to] = append(n.held[to], frame)
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	n.push(to, [][]byte{frame})
}

// maxPeerIDs bounds custodyNet.ids (cleared when full).
const maxPeerIDs = 4096

// push queues frames (whole) for the peer's sender, starting it on first
// use.
func (n *custodyNet) push(to peer.ID, frames [][]byte) {
	n.mu.Lock()
	q, ok := n.out[to]
	if !ok {
		if n.m.ctx.Err() != nil {
			n.mu.Unlock()
			return
		}
		q = make(chan [][]byte, custodyQueue)
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
func (n *custodyNet) sender(to peer.ID, q chan [][]byte, stale *atomic.Bool, heard *atomic.Int64) {
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
		var frames [][]byte
		select {
		case <-n.m.ctx.Done():
			return
		case frames = <-q:
		}
		batch.Reset()
		for _, f := range frames {
			batch.Write(f)
		}
		for len(q) > 0 && batch.Len() < 64<<10 {
			for _, f := range <-q {
				batch.Write(f)
			}
		}
		if stale.Swap(false) {
			closeStream(true)
		}
		// silent: we heard the peer once, but not for custodySilence.
		silent := heard.Load() != 0 && time.Since(time.Unix(0, heard.Load())) > custodySilence
		if s != nil && time.Since(opened) > custodySilence && silent {
			closeStream(true) // writing into the void: reconnect
		}
		for attempt := 0; attempt < 2; attempt++ {
			if s == nil {
				var err error
				if s, err = n.open(to, silent); err != nil {
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
//
// silent says the peer has not been heard for custodySilence: then a
// connection that does not answer is closed, not kept, and the peer is
// dialled afresh. After a network cut heals, the old TCP and QUIC
// connections stay mute until their retransmission timers fire — seconds
// after a cut of a few seconds, tens after a longer one — and Host.NewStream
// would go on opening streams on them (its negotiation is lazy), so a node
// healed after a 30 s cut stayed deaf for ~10 s (make faults, DECISIONS
// D57). A new connection answers in a round trip. The dial backoff the
// failed dials of the cut left is cleared too.
func (n *custodyNet) open(to peer.ID, silent bool) (network.Stream, error) {
	conns := n.m.Host.Network().ConnsToPeer(to)
	slices.SortFunc(conns, func(a, b network.Conn) int { return b.Stat().Opened.Compare(a.Stat().Opened) })
	closed := false
	for i, c := range conns {
		s, err := n.onConn(c, time.Second)
		if err != nil {
			n.m.Logger.Debug("custody: connection does not answer", "to", to, "addr", c.RemoteMultiaddr(), "err", err)
			if silent && isTimeout(err) {
				n.m.Logger.Debug("custody: closing a silent connection", "to", to, "addr", c.RemoteMultiaddr())
				c.Close()
				closed = true
			}
			continue
		}
		if i == 0 && len(conns) > 1 {
			n.m.wg.Add(1)
			go n.closeDead(conns[1:])
		}
		return s, nil
	}
	if closed || silent {
		if sw, ok := n.m.Host.Network().(*swarm.Swarm); ok {
			sw.Backoff().Clear(to)
		}
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
		if !isTimeout(err) {
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
	r, err := m.recSigs.VerifyHostRecord(data)
	if err != nil || r.Peer != id.String() {
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

// isTimeout: err is a deadline passing (silence), not a refusal.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout())
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
	var fr frameReader
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
	// Pair frames are stepped here; per-group frames and pushes go, in
	// order, to a worker. A push is stored durably (the pack's fsync:
	// seconds when the disk is busy), and the pair beats and
	// acknowledgements behind it carry the lease of every group this node
	// shares with the peer: stepped after it, they arrived late, and a
	// node whose writes stalled for a moment lost the leases of all its
	// holdings at once (head-of-line blocking; DECISIONS D75). The lease
	// protocol allows any reordering between the two. A full queue sheds
	// the frame (a lost message, or a push the standby then fetches).
	work := make(chan frame, custodyWork)
	workDone := make(chan struct{})
	go func() {
		defer close(workDone)
		for f := range work {
			if !m.groupFrame(s, f, from) {
				for range work { // the stream is reset: drain
				}
				return
			}
		}
	}()
	defer func() { close(work); <-workDone }()
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
		f, err := fr.read(r)
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
		if f.pair {
			if err := m.Custody.DeliverPair(from, f.msg); err != nil {
				if errors.Is(err, lease.ErrInvalidMessage) {
					m.Logger.Info("custody: forged pair message; closing the stream", "from", from, "err", err)
					s.Reset()
					return
				}
				m.Logger.Debug("custody: pair message not delivered", "from", from, "err", err)
			}
			continue
		}
		select {
		case work <- f:
		default:
			m.custodyShed.Add(1)
			m.Logger.Debug("custody: frame shed (the per-group queue is full)", "from", from, "agent", f.did)
		}
	}
}

// custodyWork bounds the per-group frames and pushes a custody stream
// holds for its worker: ~5 s of one peer's pushes and rounds at 1,000
// shared groups checkpointing every 5 s.
const custodyWork = 1024

// groupFrame handles one per-group frame or push from the stream's
// worker; false when it reset the stream (a bad frame).
func (m *Mesh) groupFrame(s network.Stream, f frame, from string) bool {
	if f.blocks != nil {
		if err := m.acceptPush(f, from); err != nil {
			if errors.Is(err, ErrBadMessage) {
				m.Logger.Info("custody: bad push; closing the stream", "from", from, "err", err)
				s.Reset()
				return false
			}
			m.Logger.Debug("custody: push not stored", "from", from, "agent", f.did, "err", err)
		}
		return true
	}
	if err := m.Custody.Deliver(f.did, f.gid, from, f.msg); err != nil {
		if errors.Is(err, lease.ErrInvalidMessage) {
			m.Logger.Info("custody: forged message; closing the stream", "from", from, "err", err)
			s.Reset()
			return false
		}
		m.Logger.Debug("custody: message not delivered", "from", from, "agent", f.did, "err", err)
	}
	return true
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

// Ensure implements custody.Net: the lineage walk is custody.EnsureLineage,
// over the block exchange (the local store first, then the peers given).
func (n *custodyNet) Ensure(ctx context.Context, did string, c cid.Cid, peers []string, stop map[string]bool) error {
	return custody.EnsureLineage(ctx, exchangeFetcher{n.m}, n.m.Store, n.m.verified, did, c, n.live(peers), stop)
}

// live keeps, of the members given, those whose custody frames arrived
// within custodySilence — unless none did, then all. The exchange spreads
// a fetch's blocks over every peer it is given, and a block asked of a
// member killed a moment ago waits on the dead connection for the block
// timeout: a restarted member's catch-up (and so a takeover needing its
// acknowledgement) stalled ~6 s on it, several times in a row.
func (n *custodyNet) live(peers []string) []string {
	var heard []string
	for _, p := range peers {
		id, err := peer.Decode(p)
		if err != nil {
			continue
		}
		if t := n.heardFrom(id).Load(); t != 0 && time.Since(time.Unix(0, t)) <= custodySilence {
			heard = append(heard, p)
		}
	}
	if len(heard) == 0 {
		return peers
	}
	return heard
}

// exchangeFetcher is custody.Fetcher over the block exchange.
type exchangeFetcher struct{ m *Mesh }

// WorkGate: a standby's verifications share the agents' work slots
// (custody.Gated, hosting.ServiceConfig.Work).
func (f exchangeFetcher) WorkGate(ctx context.Context) (func(), error) { return f.m.Svc.WorkGate(ctx) }

func (f exchangeFetcher) from(peers []string) []peer.AddrInfo {
	var out []peer.AddrInfo
	for _, p := range peers {
		if id, err := peer.Decode(p); err == nil && id != f.m.Host.ID() {
			out = append(out, peer.AddrInfo{ID: id})
		}
	}
	return out
}

// Fetch reads the store first, in one lookup (the exchange asks Has, then
// Get): a standby's walk usually finds its checkpoint pushed ahead.
func (f exchangeFetcher) Fetch(ctx context.Context, c cid.Cid, peers []string) ([]byte, error) {
	if data, err := f.m.Store.Get(c); err == nil || !errors.Is(err, contentstore.ErrNotFound) {
		return data, err
	}
	return f.m.Ex.Fetch(ctx, c, f.from(peers)...)
}

// Present implements custody.Presence.
func (f exchangeFetcher) Present(ctx context.Context, root cid.Cid) bool {
	_, err := f.m.Store.Reachable(ctx, []cid.Cid{root})
	return err == nil
}

// FetchDAG looks in the store first: a standby usually has the blocks
// already (pushed ahead of the proposal), and the exchange would open a
// fetch session to find that out, for every checkpoint of every group.
func (f exchangeFetcher) FetchDAG(ctx context.Context, root cid.Cid, peers []string) error {
	if _, err := f.m.Store.Reachable(ctx, []cid.Cid{root}); err == nil {
		return nil
	}
	_, err := f.m.Ex.FetchDAG(ctx, root, exchange.FetchOptions{From: f.from(peers)})
	return err
}

// heardFrom is when p was last heard from (its frames), for the silence rule.
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

// objectsOf lists the blocks of cp's state, journal and receipts objects
// (each is optional: a journaled step may have no state; most checkpoints
// have no journal and no receipts).
func objectsOf(st *contentstore.Store, cp *agents.Checkpoint) ([]cid.Cid, error) {
	var out []cid.Cid
	for _, c := range []cid.Cid{cp.State, cp.Journal, cp.Receipts} {
		if !c.Defined() {
			continue
		}
		ids, err := st.ObjectCIDs(c)
		if err != nil {
			return nil, err
		}
		out = append(out, ids...)
	}
	return out, nil
}
