package node

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/dht"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/node/exchange"
)

// LeaseProtocol carries lease offers (docs/PROTOCOL.md).
const LeaseProtocol = protocol.ID("/igor/lease/1.0.0")

const (
	maxLeaseMsg      = 64 << 10
	leaseReadTimeout = 10 * time.Second
	leaseFetchLimit  = 2 * time.Minute
)

// Errors of publishing and leasing.
var (
	// ErrNoHost: no eligible host accepted the agent.
	ErrNoHost = errors.New("node: no host accepted the agent")
	// ErrLeaseRefused: the offered host refused the lease; the message says why.
	ErrLeaseRefused = errors.New("node: lease refused")
	// ErrBadMessage: a malformed or oversized wire message.
	ErrBadMessage = errors.New("node: bad wire message")
)

// leaseOffer is the request of /igor/lease/1.0.0. The agent key travels
// only on this authenticated, encrypted stream to the chosen host.
type leaseOffer struct {
	Version int      `json:"version"`
	Head    string   `json:"head"`
	Seed    []byte   `json:"seed"` // Ed25519 seed of the agent key (32 bytes)
	Epoch   uint64   `json:"epoch"`
	TermMs  int64    `json:"term_ms"`
	From    []string `json:"from"` // where to fetch the blocks (the publisher's addresses)
}

type leaseReply struct {
	OK     bool   `json:"ok"`
	Holder string `json:"holder,omitempty"`
	Error  string `json:"error,omitempty"`
}

func writeMsg(w io.Writer, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(data) > maxLeaseMsg {
		return fmt.Errorf("%w: %d bytes", ErrBadMessage, len(data))
	}
	var n [4]byte
	binary.BigEndian.PutUint32(n[:], uint32(len(data)))
	if _, err := w.Write(n[:]); err != nil {
		return err
	}
	_, err = w.Write(data)
	return err
}

func readMsg(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return fmt.Errorf("%w: reading length: %v", ErrBadMessage, err)
	}
	size := binary.BigEndian.Uint32(n[:])
	if size == 0 || size > maxLeaseMsg {
		return fmt.Errorf("%w: length %d outside 1..%d", ErrBadMessage, size, maxLeaseMsg)
	}
	data := make([]byte, size)
	if _, err := io.ReadFull(r, data); err != nil {
		return fmt.Errorf("%w: reading body: %v", ErrBadMessage, err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%w: %v", ErrBadMessage, err)
	}
	return nil
}

// handleLease serves one lease offer: check capacity, fetch the agent's DAG
// from the offerer, verify its whole lineage, start it. Any failure is a
// refusal with the reason; nothing is pinned or started for a bad offer.
func (m *Mesh) handleLease(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	s.SetReadDeadline(time.Now().Add(leaseReadTimeout))
	var offer leaseOffer
	reply := func(err error) {
		s.SetWriteDeadline(time.Now().Add(leaseReadTimeout))
		r := leaseReply{OK: err == nil, Holder: m.PeerID()}
		if err != nil {
			r.Error = err.Error()
			m.Logger.Info("lease refused", "from", remote, "head", offer.Head, "err", err)
		}
		_ = writeMsg(s, r)
	}
	if err := readMsg(bufio.NewReader(s), &offer); err != nil {
		s.Reset()
		m.Logger.Debug("bad lease offer", "from", remote, "err", err)
		return
	}
	s.SetReadDeadline(time.Time{})
	if err := m.acceptOffer(m.ctx, offer, remote); err != nil {
		reply(err)
		return
	}
	reply(nil)
}

func (m *Mesh) acceptOffer(ctx context.Context, offer leaseOffer, from peer.ID) error {
	if offer.Version != 1 {
		return fmt.Errorf("%w: version %d, this node speaks 1", ErrBadMessage, offer.Version)
	}
	if m.cfg.Slots == 0 {
		return fmt.Errorf("%w: this node does not host agents", hosting.ErrNoCapacity)
	}
	if m.Svc.FreeSlots() <= 0 {
		return fmt.Errorf("%w: all %d slots in use", hosting.ErrNoCapacity, m.cfg.Slots)
	}
	head, err := cid.Decode(offer.Head)
	if err != nil {
		return fmt.Errorf("%w: head %q: %v", ErrBadMessage, offer.Head, err)
	}
	if len(offer.Seed) != ed25519.SeedSize {
		return fmt.Errorf("%w: key seed is %d bytes, want %d", ErrBadMessage, len(offer.Seed), ed25519.SeedSize)
	}
	key := ed25519.NewKeyFromSeed(offer.Seed)
	var fromInfos []peer.AddrInfo
	for _, a := range offer.From {
		ma, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			continue
		}
		if ai, err := peer.AddrInfoFromP2pAddr(ma); err == nil {
			fromInfos = append(fromInfos, *ai)
		}
	}
	if len(fromInfos) == 0 {
		fromInfos = []peer.AddrInfo{{ID: from}}
	}
	fctx, cancel := context.WithTimeout(ctx, leaseFetchLimit)
	defer cancel()
	if _, err := m.Ex.FetchDAG(fctx, head, exchange.FetchOptions{From: fromInfos}); err != nil {
		return fmt.Errorf("fetch agent %s: %w", head, err)
	}
	if err := m.Store.Pin(head); err != nil {
		return err
	}
	st, err := m.Svc.Accept(ctx, hosting.Lease{Head: head, Key: key, Epoch: offer.Epoch, Term: time.Duration(offer.TermMs) * time.Millisecond})
	if err != nil {
		_ = m.Store.Unpin(head)
		return err
	}
	if err := m.Home.SetHead(st.DID, head); err != nil {
		m.Logger.Warn("record head", "agent", st.DID, "err", err)
	}
	// Keep the escrowed key (0600) so this node can resume the agent after a
	// restart once the custody protocol grants it authority again.
	if _, err := m.Keys.Put(key); err != nil {
		m.Logger.Warn("keep escrowed agent key", "agent", st.DID, "err", err)
	}
	m.kickAdvertise()
	m.Logger.Info("hosting agent", "agent", st.DID, "epoch", offer.Epoch, "head", head, "from", from)
	return nil
}

// Hosts enumerates the mesh's hosting nodes with their valid host records.
func (m *Mesh) Hosts(ctx context.Context) ([]*agents.HostRecord, error) {
	provs, err := m.DHT.FindProviders(ctx, HostingCID, 200)
	if err != nil && !errors.Is(err, dht.ErrNotFound) {
		return nil, err
	}
	seen := map[peer.ID]bool{}
	var out []*agents.HostRecord
	add := func(id peer.ID) {
		if seen[id] {
			return
		}
		seen[id] = true
		if id == m.Host.ID() {
			if m.cfg.Slots > 0 {
				if r, err := m.HostRecord(); err == nil {
					out = append(out, r)
				}
			}
			return
		}
		data, err := m.DHT.GetValue(ctx, agents.HostRecordKey(id.String()))
		if err != nil {
			return
		}
		r, err := agents.DecodeHostRecord(data)
		if err != nil || r.Verify() != nil || r.Peer != id.String() {
			return
		}
		out = append(out, r)
	}
	if m.cfg.Slots > 0 {
		add(m.Host.ID())
	}
	for _, p := range provs {
		add(p.ID)
	}
	return out, nil
}

// PublishResult is what publish reports.
type PublishResult struct {
	DID     string   `json:"did"`
	Holder  string   `json:"holder"`
	Head    string   `json:"head"`
	Genesis string   `json:"genesis"`
	Module  string   `json:"module"`
	Epoch   uint64   `json:"epoch"`
	Refused []string `json:"refused,omitempty"`
}

// Publish creates an agent (its key in this node's keystore), places it by
// rendezvous hashing over the eligible hosts and offers the first lease,
// trying the next host on refusal. With no eligible host nothing is created;
// if every host refuses, the new agent's head and key are removed again.
func (m *Mesh) Publish(ctx context.Context, wasm, manifestJSON []byte, budget int64, progress func(string)) (*PublishResult, error) {
	if progress == nil {
		progress = func(string) {}
	}
	man, err := agents.ParseManifest(manifestJSON)
	if err != nil {
		return nil, err
	}
	hosts, err := m.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	// The agent ID is not known before the key exists; check eligibility
	// first so a mesh without capacity creates nothing.
	eligible, rejected := hosting.Eligible(man, hosts, time.Now())
	if len(eligible) == 0 {
		why := make([]string, 0, len(rejected))
		for p, err := range rejected {
			why = append(why, fmt.Sprintf("%s: %v", p, err))
		}
		sort.Strings(why)
		return nil, fmt.Errorf("%w: %d host(s) known, none eligible %v", ErrNoHost, len(hosts), why)
	}
	progress(fmt.Sprintf("%d eligible host(s) of %d", len(eligible), len(hosts)))
	did, head, err := m.CreateAgent(ctx, wasm, manifestJSON, budget, m.cfg.Price, nil)
	if err != nil {
		return nil, err
	}
	progress("agent created: " + did)
	// Announce the agent's roots so any node can fetch them (best effort;
	// the chosen host fetches from us directly either way).
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		pctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
		defer cancel()
		for _, c := range []cid.Cid{head.CID, head.Checkpoint.Genesis, head.Checkpoint.Module} {
			if err := m.DHT.Provide(pctx, c); err != nil && pctx.Err() == nil {
				m.Logger.Debug("provide", "cid", c, "err", err)
			}
		}
	}()
	key, err := m.Keys.Get(did)
	if err != nil {
		return nil, err
	}
	ranked, err := hosting.Place(agents.AgentID(did), man, hosts, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoHost, err)
	}
	res := &PublishResult{DID: did, Head: head.CID.String(), Genesis: head.Checkpoint.Genesis.String(), Module: head.Checkpoint.Module.String(), Epoch: head.Checkpoint.Epoch + 1}
	offer := leaseOffer{Version: 1, Head: head.CID.String(), Seed: key.Seed(), Epoch: res.Epoch,
		TermMs: int64(man.Lease.TermSeconds) * 1000, From: m.PeerAddrs()}
	for _, h := range ranked {
		progress("offering lease to " + h.Peer)
		err := m.offer(ctx, h, offer)
		if err == nil {
			res.Holder = h.Peer
			progress("placed on " + h.Peer)
			return res, nil
		}
		res.Refused = append(res.Refused, fmt.Sprintf("%s: %v", h.Peer, err))
		m.Logger.Info("host refused lease", "host", h.Peer, "err", err)
	}
	if err := m.Home.RemoveHead(did); err != nil {
		m.Logger.Warn("remove unplaced agent's head", "agent", did, "err", err)
	}
	_ = m.Store.Unpin(head.CID)
	_ = m.Keys.Delete(did)
	return res, fmt.Errorf("%w: every eligible host refused: %v", ErrNoHost, res.Refused)
}

func (m *Mesh) offer(ctx context.Context, h *agents.HostRecord, offer leaseOffer) error {
	if h.Peer == m.PeerID() {
		return m.acceptOffer(ctx, offer, m.Host.ID())
	}
	id, err := peer.Decode(h.Peer)
	if err != nil {
		return err
	}
	info := peer.AddrInfo{ID: id}
	for _, a := range h.Addrs {
		if ma, err := multiaddr.NewMultiaddr(a); err == nil {
			if ai, err := peer.AddrInfoFromP2pAddr(ma); err == nil && ai.ID == id {
				info.Addrs = append(info.Addrs, ai.Addrs...)
			}
		}
	}
	cctx, cancel := context.WithTimeout(ctx, leaseFetchLimit+10*time.Second)
	defer cancel()
	if err := m.Host.Connect(cctx, info); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	s, err := m.Host.NewStream(cctx, id, LeaseProtocol)
	if err != nil {
		return err
	}
	defer s.Close()
	if dl, ok := cctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if err := writeMsg(s, offer); err != nil {
		s.Reset()
		return err
	}
	var r leaseReply
	if err := readMsg(bufio.NewReader(s), &r); err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("%w: %s", ErrLeaseRefused, r.Error)
	}
	return nil
}
