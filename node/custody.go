// The custody hooks (custody.Hooks) and offers: commits and head records,
// placement review, membership change in place, regroup, and joining a
// group offered by a publisher or holder. The transport is in
// custody_net.go.

package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/peerstore"
	"github.com/multiformats/go-multiaddr"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/hosting/lease"
	"github.com/igor-mesh/igor-node/node/exchange"
)

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
	m.publishHead(hosting.Head{CID: c.CID, Checkpoint: cp}, c.Key, c.Until)
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
	cached, _ := m.cachedHosts(ctx) // the host view: a draining holder must not wait on DHT reads
	warm := m.view.warm()
	read := map[string]*agents.HostRecord{}
	lookup := func(p string) *agents.HostRecord {
		if i := slices.IndexFunc(cached, func(h *agents.HostRecord) bool { return h.Peer == p }); i >= 0 {
			return cached[i]
		}
		if warm {
			return nil // not in a warm view: gone, unreachable, or not hosting
		}
		if r, ok := read[p]; ok {
			return r
		}
		read[p] = nil
		data, err := m.DHT.GetValue(ctx, agents.HostRecordKey(p))
		if err != nil {
			return nil
		}
		r, err := m.recSigs.VerifyHostRecord(data)
		if err != nil || r.Peer != p {
			return nil
		}
		read[p] = r
		return r
	}
	if p := hosting.ReviewMember(agents.AgentID(did), members, m.PeerID(), draining, time.Now(), lookup); p != "" {
		if id, err := peer.Decode(p); err == nil {
			m.Host.Peerstore().AddAddrs(id, recordAddrs(lookup(p), id), peerstore.TempAddrTTL)
			return p
		}
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
	// A group below its replica count (placed when too few hosts were
	// eligible) is filled by the first eligible outsider that answers: the
	// regroup toward it forms a group of full size. Durability, not rank,
	// decides; and it does not wait for the outsider to settle.
	short := hosting.ShortGroup(man, members)
	anyHost := draining || short
	if short && !draining {
		// Filling: from this holder's ring neighbourhood first (D70).
		ranked = hosting.NearFirst(ranked, m.PeerID(), append(hosting.HostPeers(hosts), members...), int(man.Lease.Replicas))
	}
	for _, h := range hosting.OutsiderCandidates(agents.AgentID(did), ranked, members, m.PeerID(), anyHost) {
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
	if man, ok := m.manifests.Get(cp.Manifest); ok {
		return cp, man, nil
	}
	mdata, err := m.Store.Get(cp.Manifest)
	if err != nil {
		return nil, nil, err
	}
	man, err := agents.ParseManifest(mdata)
	if err != nil {
		return nil, nil, err
	}
	m.manifests.Add(cp.Manifest, man)
	return cp, man, nil
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
	// Deleted (with Leave): the agent was deleted by its owner; the CID of
	// the committed checkpoint carrying the delete record, as proof. The
	// member then drops the agent's key too.
	Deleted string `json:"deleted,omitempty"`
	Kick    bool   `json:"kick,omitempty"`  // a member: campaign now
	Probe   bool   `json:"probe,omitempty"` // would this host take the agent now? (joins nothing)
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

// offerKind is what a custody offer asks: the wire form sets at most one
// of kick, leave, probe and add (none: a join); kind decodes it in one place.
type offerKind int

const (
	offerJoin  offerKind = iota // join a new group (publish, regroup, revive)
	offerAdd                    // join a running group in place (a membership change)
	offerProbe                  // would this host take the agent now? (prewarms; joins nothing)
	offerLeave                  // leave the group (undo a placement; a regroup)
	offerKick                   // a member: campaign for the first lease now
)

// kind returns what o asks, or ErrBadMessage for an offer that asks two
// things at once, or carries a join's options on another kind.
func (o custodyOffer) kind() (offerKind, error) {
	var kinds []string
	k := offerJoin
	for _, f := range []struct {
		set  bool
		kind offerKind
		name string
	}{{o.Kick, offerKick, "kick"}, {o.Leave, offerLeave, "leave"}, {o.Probe, offerProbe, "probe"}, {o.Add, offerAdd, "add"}} {
		if f.set {
			k = f.kind
			kinds = append(kinds, f.name)
		}
	}
	switch {
	case len(kinds) > 1:
		return 0, fmt.Errorf("%w: an offer asks one thing; this one sets %s", ErrBadMessage, strings.Join(kinds, " and "))
	case o.Deleted != "" && k != offerLeave:
		return 0, fmt.Errorf("%w: deleted is an option of a leave offer, not of a %s", ErrBadMessage, strings.Join(append(kinds, "join")[:1], ""))
	case k != offerJoin && (o.Campaign || o.Released):
		return 0, fmt.Errorf("%w: campaign and released are options of a join, not of an offer to %s", ErrBadMessage, kinds[0])
	case o.DID == "":
		return 0, fmt.Errorf("%w: the offer names no agent (did)", ErrBadMessage)
	}
	return k, nil
}

// acceptCustody serves a custody offer: fetch the agent's DAG from the
// offerer, verify its whole lineage and compile its module (so this member
// could run it), then join the group.
func (m *Mesh) acceptCustody(ctx context.Context, o custodyOffer, from peer.ID) error {
	kind, err := o.kind()
	if err != nil {
		return err
	}
	switch kind {
	case offerKick:
		return m.Custody.Campaign(o.DID)
	case offerLeave:
		if o.Deleted != "" {
			return m.leaveDeleted(ctx, o.DID, o.Deleted, from.String())
		}
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
	if kind == offerProbe {
		if m.Svc.FreeSlots() <= 0 {
			return fmt.Errorf("%w: no free slot", hosting.ErrNoCapacity)
		}
		if o.Head != "" {
			return m.prewarm(ctx, o, from)
		}
		return nil
	}
	if kind == offerAdd {
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
	if kind == offerAdd {
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
	all, err := m.cachedHosts(ctx)
	if err != nil {
		return nil, err
	}
	hosts := slices.DeleteFunc(slices.Clone(all), func(h *agents.HostRecord) bool {
		return slices.Contains(p.Members, h.Peer) || slices.Contains(p.Dead, h.Peer)
	})
	ranked, err := hosting.Place(agents.AgentID(p.DID), man, hosts, time.Now())
	if err == nil {
		// New members from this holder's ring neighbourhood first (D70).
		ranked = hosting.NearFirst(ranked, m.PeerID(), append(hosting.HostPeers(all), p.Members...), int(man.Lease.Replicas))
	}
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
	ranked, err := placeNear(did, man, hosts)
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
		err = m.place(ctx, res, h, epoch, true, ranked, int(man.Lease.Replicas), 0, int64(man.Lease.TermSeconds)*1000, key, func(string) {})
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
			if r, perr := placeNear(did, man, hs); perr == nil {
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

// placeNear is the order a new group of did takes its members from: the
// agent's best host by rendezvous, then its ring neighbourhood (copysets,
// D70), then the rest.
func placeNear(did string, man *agents.Manifest, hosts []*agents.HostRecord) ([]*agents.HostRecord, error) {
	ranked, err := hosting.Place(agents.AgentID(did), man, hosts, time.Now())
	if err != nil {
		return nil, err
	}
	return hosting.NearFirst(ranked, ranked[0].Peer, hosting.HostPeers(hosts), int(man.Lease.Replicas)), nil
}
