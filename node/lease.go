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
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/dht"
	"github.com/igor-mesh/igor-node/hosting"
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
	// ErrGroupTooSmall: fewer hosts are eligible for (or accepted) custody
	// than the smallest group the publisher allows — 1 + the manifest's
	// lease.replicas unless it passed a lower min_replicas. Nothing is left
	// behind.
	ErrGroupTooSmall = errors.New("node: custody group would be smaller than allowed")
)

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

// handleLease serves one custody offer (join a group, or leave it when the
// publisher undoes a placement). Any failure is a refusal with the reason;
// nothing is pinned or started for a bad offer.
func (m *Mesh) handleLease(s network.Stream) {
	defer s.Close()
	remote := s.Conn().RemotePeer()
	s.SetReadDeadline(time.Now().Add(leaseReadTimeout))
	var offer custodyOffer
	reply := func(err error) {
		s.SetWriteDeadline(time.Now().Add(leaseReadTimeout))
		r := leaseReply{OK: err == nil, Holder: m.PeerID()}
		if err != nil {
			r.Error = err.Error()
			m.Logger.Info("custody offer refused", "from", remote, "agent", offer.DID, "err", err)
		}
		_ = writeMsg(s, r)
	}
	if err := readMsg(bufio.NewReader(s), &offer); err != nil {
		s.Reset()
		m.Logger.Debug("bad custody offer", "from", remote, "err", err)
		return
	}
	s.SetReadDeadline(time.Time{})
	if offer.Version != 2 {
		reply(fmt.Errorf("%w: offer version %d; this node speaks 2 (custody groups replaced single-holder leases)", ErrBadMessage, offer.Version))
		return
	}
	reply(m.acceptCustody(m.ctx, offer, remote))
}

// Hosts enumerates the mesh's hosting nodes with their valid host records
// through the DHT: a provider walk for HostingCID plus one record read per
// host. Placement reads the host view instead (hostview.go); Hosts seeds
// a cold view, and serves `igor-node hosts` and tests.
func (m *Mesh) Hosts(ctx context.Context) ([]*agents.HostRecord, error) {
	m.walks.Add(1)
	provs, err := m.DHT.FindProviders(ctx, HostingCID, 200)
	if err != nil && !errors.Is(err, dht.ErrNotFound) {
		return nil, err
	}
	var out []*agents.HostRecord
	if m.cfg.Slots > 0 {
		if r, err := m.HostRecord(); err == nil {
			out = append(out, r)
		}
	}
	// The records are read in parallel: one read that waits on a dead
	// peer (a stale routing-table entry) must not hold up the others — a
	// review or regroup waits for this enumeration.
	seen := map[peer.ID]bool{m.Host.ID(): true}
	var ids []peer.ID
	for _, p := range provs {
		if !seen[p.ID] {
			seen[p.ID] = true
			ids = append(ids, p.ID)
		}
	}
	recs := make([]*agents.HostRecord, len(ids))
	sem := make(chan struct{}, hostsParallel)
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			data, err := m.DHT.GetValue(ctx, agents.HostRecordKey(id.String()))
			if err != nil {
				return
			}
			r, err := m.recSigs.VerifyHostRecord(data)
			if err != nil || r.Peer != id.String() {
				return
			}
			recs[i] = r
		}()
	}
	wg.Wait()
	for _, r := range recs {
		if r != nil {
			out = append(out, r)
		}
	}
	if m.view != nil {
		m.view.seed(out)
	}
	return out, nil
}

// hostsParallel bounds the host-record reads of one enumeration in flight.
const hostsParallel = 16

// publishHostsTTL: while the host view is cold, publications within this
// long of each other share one enumeration of the mesh's hosts (a DHT walk
// plus a record read per host), so a bulk publish does not walk the DHT per
// agent; and a warm view is checked against the DHT at most this often when
// it has too few eligible hosts. A host whose record went stale refuses the
// offer and the next eligible one is asked.
const publishHostsTTL = 2 * time.Second

// publishHosts returns the hosts a publication places among: the host
// view's, or — when the view is cold, or fresh is asked for — an
// enumeration of the DHT shared by the publications of publishHostsTTL.
func (m *Mesh) publishHosts(ctx context.Context, fresh bool) ([]*agents.HostRecord, error) {
	if !fresh {
		if hosts, ok := m.viewHosts(); ok {
			return hosts, nil
		}
	}
	m.pubMu.Lock()
	if !fresh && time.Since(m.pubHostsAt) < publishHostsTTL {
		hosts := m.pubHosts
		m.pubMu.Unlock()
		return hosts, nil
	}
	m.pubMu.Unlock()
	hosts, err := m.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	m.pubMu.Lock()
	m.pubHosts, m.pubHostsAt = hosts, time.Now()
	m.pubMu.Unlock()
	return hosts, nil
}

// firstProvide reports whether c was not provided by a publication here in
// the last hour (and marks it), so a module shared by many agents is
// announced once, not once per agent.
func (m *Mesh) firstProvide(c cid.Cid) bool {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	k := c.KeyString()
	if at, ok := m.provided[k]; ok && time.Since(at) < time.Hour {
		return false
	}
	if m.provided == nil || len(m.provided) >= 1024 {
		m.provided = map[string]time.Time{} // bounded: start over rather than grow
	}
	m.provided[k] = time.Now()
	return true
}

// firstProvideOfEpoch reports whether this node has not yet provided a
// head of did at epoch (and records that it now does).
func (m *Mesh) firstProvideOfEpoch(did string, epoch uint64) bool {
	m.pubMu.Lock()
	defer m.pubMu.Unlock()
	if e, ok := m.providedEpoch[did]; ok && e >= epoch {
		return false
	}
	if m.providedEpoch == nil || len(m.providedEpoch) >= 4096 {
		m.providedEpoch = map[string]uint64{} // bounded: start over rather than grow
	}
	m.providedEpoch[did] = epoch
	return true
}

// PublishResult is what publish reports.
type PublishResult struct {
	DID     string   `json:"did"`
	Holder  string   `json:"holder"`
	Head    string   `json:"head"`
	Genesis string   `json:"genesis"`
	Module  string   `json:"module"`
	Epoch   uint64   `json:"epoch"`
	Members []string `json:"members"`
	Refused []string `json:"refused,omitempty"`
	// Price is what the agent is charged, in µc per second of tick time:
	// the price in its checkpoint, which every holder keeps.
	Price int64 `json:"price_microcents_per_second"`
	// BudgetSeconds is the tick time the budget buys at Price (budget ÷
	// price); nil when Price is 0 (unbounded). An agent pays only while it
	// ticks, so its wall-clock life is longer by its duty cycle.
	BudgetSeconds *float64 `json:"budget_seconds"`
}

// budgetSeconds is budget ÷ price in seconds, nil for price 0 (unbounded).
func budgetSeconds(budget, price int64) *float64 {
	if price <= 0 {
		return nil
	}
	s := float64(budget) / float64(price)
	return &s
}

// Publish creates an agent (its key in this node's keystore) and places it
// with a custody group: the 1+R best eligible hosts by rendezvous hashing
// (R = manifest lease.replicas), the best of them asked to take the first
// lease. Members are offered standbys first, so the first holder finds a
// majority ready. A member that refuses is replaced by the next eligible
// host (all accepted members leave and the group is offered afresh). With
// fewer than 1+R eligible hosts it fails with ErrGroupTooSmall before
// creating anything; PublishAgent with MinReplicas allows a smaller group.
// When a placement fails, nothing is left behind: the members leave, and
// the new agent's head and key are removed again.
func (m *Mesh) Publish(ctx context.Context, wasm, manifestJSON []byte, budget int64, progress func(string)) (*PublishResult, error) {
	return m.PublishAgent(ctx, PublishRequest{Wasm: wasm, Manifest: manifestJSON, Budget: budget}, progress)
}

// PublishModule is Publish of a module already stored on this node (the
// Module of an earlier PublishResult): nothing is read back or stored
// again, and a module compiled before is not compiled again.
func (m *Mesh) PublishModule(ctx context.Context, module cid.Cid, manifestJSON []byte, budget int64, progress func(string)) (*PublishResult, error) {
	return m.PublishAgent(ctx, PublishRequest{Module: module.String(), Manifest: manifestJSON, Budget: budget}, progress)
}

// PublishAgent publishes what req describes (POST /v1/agents): the module
// itself or one stored here, and — with MinReplicas — the smallest custody
// group it accepts. Errors wrap ErrBadRequest for a bad module CID or
// min_replicas.
func (m *Mesh) PublishAgent(ctx context.Context, req PublishRequest, progress func(string)) (*PublishResult, error) {
	module := cid.Undef
	if req.Module != "" {
		c, err := cid.Decode(req.Module)
		if err != nil {
			return nil, fmt.Errorf("%w: module %q is not a CID: %v", ErrBadRequest, req.Module, err)
		}
		if have, err := m.Store.Has(c); err != nil || !have {
			return nil, fmt.Errorf("%w: module %s is not stored on this node (%v): publish the module itself once", ErrBadRequest, c, err)
		}
		module = c
	}
	return m.publish(ctx, req.Wasm, module, req.Manifest, req.Budget, req.MinReplicas, progress)
}

func (m *Mesh) publish(ctx context.Context, wasm []byte, module cid.Cid, manifestJSON []byte, budget int64, minReplicas *int, progress func(string)) (*PublishResult, error) {
	if progress == nil {
		progress = func(string) {}
	}
	man, err := agents.ParseManifest(manifestJSON)
	if err != nil {
		return nil, err
	}
	if err := m.Custody.CheckManifest(man); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	size := 1 + int(man.Lease.Replicas)
	minSize := size
	if minReplicas != nil {
		if *minReplicas < 0 || *minReplicas > int(man.Lease.Replicas) {
			return nil, fmt.Errorf("%w: min_replicas %d is outside 0..%d (the manifest's lease.replicas)", ErrBadRequest, *minReplicas, man.Lease.Replicas)
		}
		minSize = 1 + *minReplicas
	}
	hosts, err := m.publishHosts(ctx, false)
	if err != nil {
		return nil, err
	}
	// The agent ID is not known before the key exists; check eligibility
	// first so a mesh without capacity creates nothing.
	eligible, rejected := hosting.Eligible(man, hosts, time.Now())
	if len(eligible) < size {
		// The view may lack hosts that joined since (their first record
		// not gossiped to us yet): look in the DHT too.
		fresh, err := m.publishHosts(ctx, true)
		if err != nil {
			return nil, err
		}
		if hosts, _ = m.viewHosts(); hosts == nil {
			hosts = fresh // no view: the enumeration alone
		}
		eligible, rejected = hosting.Eligible(man, hosts, time.Now())
	}
	if len(eligible) == 0 {
		why := make([]string, 0, len(rejected))
		for p, err := range rejected {
			why = append(why, fmt.Sprintf("%s: %v", p, err))
		}
		sort.Strings(why)
		return nil, fmt.Errorf("%w: %d host(s) known, none eligible %v", ErrNoHost, len(hosts), why)
	}
	// Checked before the agent exists: a refused publish leaves no key,
	// genesis or head behind.
	if len(eligible) < minSize {
		return nil, fmt.Errorf("%w: %d eligible host(s) of %d known, and the manifest asks for a holder and %d standby(s) (%d hosts); start more hosts, or allow a smaller group with --min-replicas %d (API: \"min_replicas\")",
			ErrGroupTooSmall, len(eligible), len(hosts), man.Lease.Replicas, size, len(eligible)-1)
	}
	progress(fmt.Sprintf("%d eligible host(s) of %d", len(eligible), len(hosts)))
	if len(eligible) < size {
		progress(fmt.Sprintf("custody group smaller than asked: %d of %d hosts (allowed: at least %d)", len(eligible), size, minSize))
	}
	did, head, err := m.createAgent(ctx, wasm, module, manifestJSON, budget, m.cfg.Price, nil)
	if err != nil {
		return nil, err
	}
	progress("agent created: " + did)
	// undo takes the agent away again when it cannot be placed: its head,
	// key, and the two blocks only it has (checkpoint 0 and the genesis,
	// which name it; module, manifest and state may be shared).
	undo := func() {
		if err := m.Home.RemoveHead(did); err != nil {
			m.Logger.Warn("remove unplaced agent's head", "agent", did, "err", err)
		}
		_ = m.Store.Unpin(head.CID)
		_ = m.Keys.Delete(did)
		for _, c := range []cid.Cid{head.CID, head.Checkpoint.Genesis} {
			if err := m.Store.Delete(c); err != nil {
				m.Logger.Warn("remove unplaced agent's block", "agent", did, "cid", c, "err", err)
			}
		}
	}
	// Announce the agent's roots so any node can fetch them (best effort;
	// the members fetch from us directly either way).
	roots := []cid.Cid{head.CID, head.Checkpoint.Genesis}
	if m.firstProvide(head.Checkpoint.Module) {
		roots = append(roots, head.Checkpoint.Module) // many agents share one module
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		pctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
		defer cancel()
		for _, c := range roots {
			if err := m.DHT.Provide(pctx, c); err != nil && pctx.Err() == nil {
				m.Logger.Debug("provide", "cid", c, "err", err)
			}
		}
	}()
	key, err := m.Keys.Get(did)
	if err != nil {
		undo()
		return nil, err
	}
	ranked, err := hosting.Place(agents.AgentID(did), man, hosts, time.Now())
	if err != nil {
		undo()
		return nil, fmt.Errorf("%w: %v", ErrNoHost, err)
	}
	ranked = hosting.NearFirst(ranked, ranked[0].Peer, hosting.HostPeers(hosts), int(man.Lease.Replicas))
	res := &PublishResult{DID: did, Head: head.CID.String(), Genesis: head.Checkpoint.Genesis.String(), Module: head.Checkpoint.Module.String(), Epoch: 1,
		Price: head.Checkpoint.Price, BudgetSeconds: budgetSeconds(head.Checkpoint.Budget, head.Checkpoint.Price)}
	if err := m.place(ctx, res, head, 0, false, ranked, int(man.Lease.Replicas), minSize, int64(man.Lease.TermSeconds)*1000, key, progress); err != nil {
		undo()
		return res, err
	}
	return res, nil
}

// place forms a custody group for the agent at head: the 1+replicas best
// hosts of ranked. Every member fetches, verifies and compiles the agent in
// parallel; then the best-ranked one is asked to campaign. A member that
// refuses is replaced by the next eligible host (the members that joined
// leave again and the group is offered afresh). No group smaller than
// minSize is offered: when refusals leave fewer hosts, place fails with
// ErrGroupTooSmall, the members that joined having left. minSize 0 is the
// rule of regroup and revive, where the agent exists already and a small
// group beats none: any size at first, a majority of 1+replicas on retry.
// released marks a regroup's group (custodyOffer.Released).
func (m *Mesh) place(ctx context.Context, res *PublishResult, head hosting.Head, epoch uint64, released bool, ranked []*agents.HostRecord, replicas, minSize int, termMs int64, key ed25519.PrivateKey, progress func(string)) error {
	did := head.Checkpoint.Agent
	size := 1 + replicas
	refused := map[string]bool{}
	blocks := m.offerBlocks(head)
	for attempt := 0; ; attempt++ {
		var group []*agents.HostRecord
		for _, h := range ranked {
			if !refused[h.Peer] && len(group) < size {
				group = append(group, h)
			}
		}
		if minSize > 0 && len(group) < minSize {
			return fmt.Errorf("%w: %d host(s) left to offer custody after refusals, fewer than the %d allowed: %v", ErrGroupTooSmall, len(group), minSize, res.Refused)
		}
		if len(group) == 0 || (minSize == 0 && attempt > 0 && len(group) < size/2+1) {
			break
		}
		members := make([]string, len(group))
		addrs := map[string][]string{}
		for i, h := range group {
			members[i] = h.Peer
			addrs[h.Peer] = h.Addrs
		}
		offer := custodyOffer{Version: 2, DID: did, Head: head.CID.String(), Seq: head.Checkpoint.Seq, Epoch: epoch, Released: released,
			Seed: key.Seed(), TermMs: termMs, Members: members, Addrs: addrs, From: m.PeerAddrs(), Blocks: blocks}
		progress(fmt.Sprintf("custody group of %d: %v", len(group), members))
		// Every member fetches, verifies and compiles the agent at once; then
		// the best-ranked one is asked to campaign for the first lease.
		errs := make([]error, len(group))
		var wg sync.WaitGroup
		for i, h := range group {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = m.offer(ctx, h, offer)
			}()
		}
		wg.Wait()
		var joined []*agents.HostRecord
		ok := true
		for i, h := range group {
			if errs[i] != nil {
				refused[h.Peer] = true
				res.Refused = append(res.Refused, fmt.Sprintf("%s: %v", h.Peer, errs[i]))
				m.Logger.Info("host refused custody", "host", h.Peer, "err", errs[i])
				ok = false
				continue
			}
			joined = append(joined, h)
		}
		if ok {
			kick := custodyOffer{Version: 2, DID: did, Kick: true}
			for _, h := range group {
				if err := m.offer(ctx, h, kick); err != nil {
					m.Logger.Info("first holder did not campaign; asking the next member", "host", h.Peer, "err", err)
					continue
				}
				res.Holder = h.Peer
				break
			}
			res.Members = members
			progress("placed: first holder " + res.Holder)
			return nil
		}
		leave := offer
		leave.Seed, leave.Leave, leave.Blocks = nil, true, nil
		m.offerAll(ctx, joined, leave, func(h *agents.HostRecord, err error) {
			m.Logger.Warn("undo custody membership", "host", h.Peer, "err", err)
		})
	}
	return fmt.Errorf("%w: not enough eligible hosts accepted custody: %v", ErrNoHost, res.Refused)
}

// Limits of the blocks a join offer carries (offerBlocks): well inside
// the 64 KiB offer once base64-encoded.
const (
	offerMaxBlocks = 16
	offerMaxBytes  = 24 << 10
)

// offerBlocks returns the blocks a member needs besides the module to load
// the agent at head — the checkpoint, its state, and for a new agent
// (seq 0) its genesis and manifest — if they total at most offerMaxBytes;
// else none (the members fetch them). Members used to fetch them back
// from the publisher, block by block over the exchange: at 16 concurrent
// publications, a quarter of a second per join.
func (m *Mesh) offerBlocks(head hosting.Head) []offerBlock {
	cp := head.Checkpoint
	ids := []cid.Cid{head.CID}
	if cp.Seq == 0 {
		ids = append(ids, cp.Genesis, cp.Manifest)
	}
	state, err := objectsOf(m.Store, cp)
	if err != nil {
		return nil
	}
	ids = append(ids, state...)
	if len(ids) > offerMaxBlocks {
		return nil
	}
	out := make([]offerBlock, 0, len(ids))
	size := 0
	for _, c := range ids {
		data, err := m.Store.Get(c)
		if size += len(data); err != nil || size > offerMaxBytes {
			return nil
		}
		out = append(out, offerBlock{CID: c.String(), Data: data})
	}
	return out
}

func (m *Mesh) offer(ctx context.Context, h *agents.HostRecord, offer custodyOffer) error {
	if h.Peer == m.PeerID() {
		return m.acceptCustody(ctx, offer, m.Host.ID())
	}
	id, err := peer.Decode(h.Peer)
	if err != nil {
		return err
	}
	info := peer.AddrInfo{ID: id, Addrs: recordAddrs(h, id)}
	cctx, cancel := context.WithTimeout(ctx, leaseFetchLimit+10*time.Second)
	defer cancel()
	// Reaching the host gets seconds, not the offer's minutes (which are
	// for fetching the agent): a host that died but is still advertised
	// must not hold up a placement — a regroup's agent is stopped meanwhile
	// (once 63 s, dialling such a host).
	dctx, dcancel := context.WithTimeout(cctx, offerDialLimit)
	err = m.Host.Connect(dctx, info)
	if err == nil {
		var s network.Stream
		if s, err = m.Host.NewStream(dctx, id, LeaseProtocol); err == nil {
			dcancel()
			return m.offerOn(cctx, s, offer)
		}
	}
	dcancel()
	if ctx.Err() == nil {
		// Left out of placements until it is connected again or gossips a
		// newer record: the next placement must not wait on it too.
		m.view.markDown(id, time.Now())
	}
	return fmt.Errorf("reach host %s within %v: %w", h.Peer, offerDialLimit, err)
}

// offerAll sends offer to every host of hs in parallel and waits; failed,
// if not nil, is called for each host that did not accept (concurrently).
func (m *Mesh) offerAll(ctx context.Context, hs []*agents.HostRecord, offer custodyOffer, failed func(*agents.HostRecord, error)) []error {
	errs := make([]error, len(hs))
	var wg sync.WaitGroup
	for i, h := range hs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if errs[i] = m.offer(ctx, h, offer); errs[i] != nil && failed != nil {
				failed(h, errs[i])
			}
		}()
	}
	wg.Wait()
	return errs
}

// offerDialLimit bounds connecting to a host and opening the offer stream.
const offerDialLimit = 5 * time.Second

func (m *Mesh) offerOn(cctx context.Context, s network.Stream, offer custodyOffer) error {
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
