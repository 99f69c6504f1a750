package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/dht"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/buildinfo"
	"github.com/igor-mesh/igor-node/internal/p2phost"
	"github.com/igor-mesh/igor-node/node/exchange"
)

// Version is the software version advertised in host records
// (buildinfo.Release; `igor-node version` adds the revision).
const Version = "igor-node/" + buildinfo.Release

// HostingCID is the well-known CID every hosting node provides, so hosts
// can be enumerated with FindProviders.
var HostingCID = func() cid.Cid {
	c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("igor/hosting/v1"))
	if err != nil {
		panic(err)
	}
	return c
}()

// MeshConfig configures a mesh node (igor-node daemon).
type MeshConfig struct {
	Home string
	// Listen: multiaddrs; default the addresses this home listened on last
	// time (HOME/listen), else DefaultListen (OS-chosen ports).
	Listen    []string
	Bootstrap []string // multiaddrs with /p2p/<peer id>
	Slots     int      // agents this node hosts at once; 0 = does not host
	// Announce: the addresses peers are told to reach this node at, instead
	// of the listen addresses (behind a NAT or a port mapping); none: the
	// listen addresses.
	Announce []string
	// GCGrace: a garbage collection (after an agent is deleted) spares
	// unreferenced blocks younger than this; 0 = contentstore's default.
	GCGrace time.Duration
	Price   int64  // µc per second of tick time
	Memory  uint64 // bytes offered to agents; default Slots × 64 MiB
	Logger  *slog.Logger
	// Run is the tick loop configuration of hosted agents (tests shorten it).
	Run hosting.RunOptions
	// MaxConns bounds this node's libp2p connections; 0 keeps the default
	// (256). It scales the connection limits with it: half may be inbound,
	// and the connection manager trims from MaxConns/2 down to MaxConns/4
	// (docs/PROTOCOL.md "Limits"). At least 16.
	MaxConns int
	// AdvertiseEvery is how often the host record is refreshed; default 30s.
	AdvertiseEvery time.Duration
	// Custody is the lease timing of custody groups; zero: custody.DefaultTiming.
	Custody custody.Timing
	// HostView configures the gossiped view of the mesh's hosts (hostview.go);
	// zero fields: DefaultHostViewOptions.
	HostView HostViewOptions
	// OnTick and OnCommitted, if set, observe every tick of a hosted agent
	// and every checkpoint committed at a majority with its commit latency
	// (propose → majority). Tests and benchmarks use them; they must not block.
	OnTick      func(did string, tick uint64)
	OnCommitted func(did string, seq uint64, latency time.Duration)
}

// verifiedRecords bounds Mesh.recSigs: 2 × 8,192 hashes (about 1 MB), a few
// times the head and host records a node meets within a refresh.
const verifiedRecords = 8192

// cachedManifests bounds Mesh.manifests (agents share manifests: one per
// published module and configuration).
const cachedManifests = 1024

// Mesh is a running mesh node: libp2p host, DHT, block exchange, hosting
// service and the agents it hosts. Create with StartMesh, stop with Close.
type Mesh struct {
	*Local
	cfg  MeshConfig
	Host host.Host
	DHT  *dht.DHT
	Ex   *exchange.Exchange
	Svc  *hosting.Service
	// Custody runs the lease protocol of every agent this node is a
	// custody-group member for.
	Custody *custody.Manager
	cnet    *custodyNet
	gate    *partitionGate // test partitions (POST /v1/debug/partition)
	view    *hostView      // the mesh's host records, gossiped (hostview.go)
	// recSigs spares repeated signature checks of the same head and host
	// record bytes (the DHT's validators, gossip, reads).
	recSigs *agents.VerifiedRecords
	// custodyShed counts per-group custody frames dropped because their
	// stream's worker queue was full (handleCustody).
	custodyShed atomic.Uint64
	// manifests caches parsed manifests by CID (a block never changes):
	// every holder's review at each term end reads its agent's.
	manifests *lru.Cache[cid.Cid, *agents.Manifest]
	walks     atomic.Int64    // DHT enumerations of the hosts (Hosts), for tests and metrics
	boot      []peer.AddrInfo // bootstrap peers, dialled again while isolated (bootstrap.go)

	ticks         prometheus.Counter   // ticks of hosted agents
	pushed        prometheus.Counter   // checkpoint blocks pushed to custody members
	commitLatency prometheus.Histogram // custody commit latency

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	gcKick chan struct{} // runGC: collect garbage (gcSoon)
	logs   *logHub       // recent log lines of the agents run here (logs.go)

	mu        sync.Mutex // guards hostSeq and selfRec
	hostSeq   uint64
	selfRec   *agents.HostRecord // the last localHostRecord
	advertise chan struct{}

	// reviewHosts caches the host records term-end reviews read, so that a
	// node holding many agents scans the DHT once per reviewHostsTTL, not
	// once per agent. A one-slot semaphore held while fetching, so that
	// concurrent reviews share one fetch and waiters honour their context.
	reviewSem   chan struct{}
	reviewAt    time.Time
	reviewHosts []*agents.HostRecord

	pubMu      sync.Mutex // guards pubHosts, pubHostsAt, provided, providedEpoch
	pubHosts   []*agents.HostRecord
	pubHostsAt time.Time
	provided   map[string]time.Time // module CIDs announced by publications
	// providedEpoch: per agent, the highest epoch whose head this node
	// provided (publishHead provides once per epoch, not per refresh).
	providedEpoch map[string]uint64
	heads         *headQueue // head records' DHT work (headqueue.go)

	moveMu    sync.Mutex              // guards moveFails
	moveFails map[[2]string]time.Time // (agent, target) → when a move there failed

	seenMu      sync.Mutex            // guards seenHeads, holderHints
	seenHeads   map[string][]byte     // DID → best head record read (resolveHeadRecord)
	holderHints map[string]holderHint // DID → the holder that last answered a query, and its group

	closeOnce sync.Once
	closeErr  error
}

// ErrBadBootstrap: a bootstrap address that is not a multiaddr with /p2p/.
var ErrBadBootstrap = errors.New("node: bad bootstrap address")

// StartMesh opens the home and joins the mesh. Unreachable bootstrap peers
// are warnings, not errors: a node with none still runs as a one-node mesh.
func StartMesh(ctx context.Context, cfg MeshConfig) (_ *Mesh, err error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Slots < 0 {
		return nil, fmt.Errorf("node: slots must not be negative, got %d", cfg.Slots)
	}
	if cfg.Price < 0 {
		return nil, fmt.Errorf("node: price must not be negative, got %d", cfg.Price)
	}
	if cfg.Memory == 0 {
		cfg.Memory = uint64(cfg.Slots) * agents.MaxMemoryBytes
	}
	hostOpts := p2phost.DefaultOptions()
	gate := newPartitionGate()
	hostOpts.Gater = gate
	if cfg.MaxConns != 0 {
		if cfg.MaxConns < 16 {
			return nil, fmt.Errorf("node: max connections must be at least 16 (a DHT node needs its neighbours), got %d", cfg.MaxConns)
		}
		hostOpts.Conns, hostOpts.ConnsInbound = cfg.MaxConns, cfg.MaxConns/2
		hostOpts.HighWater, hostOpts.LowWater = cfg.MaxConns/2, cfg.MaxConns/4
	}
	for _, a := range cfg.Announce {
		ma, err := multiaddr.NewMultiaddr(a)
		if err != nil {
			return nil, fmt.Errorf("%w: announce address %q is not a multiaddr (%v); example: /ip4/203.0.113.7/tcp/4001", ErrListen, a, err)
		}
		if _, err := ma.ValueForProtocol(multiaddr.P_P2P); err == nil {
			return nil, fmt.Errorf("%w: announce address %q names a peer; give the address alone (the node adds its own /p2p/ID)", ErrListen, a)
		}
		hostOpts.Announce = append(hostOpts.Announce, ma)
	}
	if cfg.AdvertiseEvery <= 0 {
		cfg.AdvertiseEvery = 30 * time.Second
	}
	var boot []peer.AddrInfo
	for _, a := range cfg.Bootstrap {
		ai, err := ParsePeerAddr(a)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadBootstrap, err)
		}
		boot = append(boot, ai)
	}
	l, err := openLocal(cfg.Home, cfg.Logger, cfg.GCGrace)
	if err != nil {
		return nil, err
	}
	m := &Mesh{Local: l, cfg: cfg, advertise: make(chan struct{}, 1), gcKick: make(chan struct{}, 1), logs: newLogHub(), reviewSem: make(chan struct{}, 1), gate: gate,
		ticks: prometheus.NewCounter(prometheus.CounterOpts{Name: "igor_agent_ticks_total", Help: "Successful ticks of agents hosted here."}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{Name: "igor_custody_pushed_blocks_total",
			Help: "Checkpoint blocks sent to custody members with their proposal (one per block and member), instead of fetched by each."}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "igor_custody_commit_seconds",
			Help: "Time from proposing a checkpoint to a majority of its custody group storing it.", Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)}),
	}
	m.ctx, m.cancel = context.WithCancel(context.Background())
	m.heads = newHeadQueue(m.putHead)
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Close())
		}
	}()
	if m.Host, err = m.listen(cfg.Listen, hostOpts); err != nil {
		return nil, err
	}
	now := func() time.Time { return time.Now() }
	m.recSigs = agents.NewVerifiedRecords(verifiedRecords)
	if m.manifests, err = lru.New[cid.Cid, *agents.Manifest](cachedManifests); err != nil {
		return nil, err
	}
	if m.DHT, err = dht.New(m.Host,
		dht.WithValidator(agents.HeadNamespace, agents.HeadValidator{Now: now, Verified: m.recSigs}),
		dht.WithValidator(agents.HostNamespace, agents.HostValidator{Now: now, Verified: m.recSigs}),
		dht.WithBootstrapPeers(boot...),
		dht.WithLogger(cfg.Logger),
		dht.WithQuorum(3),
	); err != nil {
		return nil, err
	}
	// The view exists before anything that reads it (custody reviews).
	if m.view, err = newHostView(m.Host, cfg.HostView, m.recSigs, cfg.Logger); err != nil {
		return nil, err
	}
	if m.Ex, err = exchange.New(m.Host, l.Store, exchange.WithProviders(m.DHT), exchange.WithLogger(cfg.Logger)); err != nil {
		return nil, err
	}
	env, err := l.Env(ctx, func(short, msg string) { cfg.Logger.Info(msg, "agent", short) })
	if err != nil {
		return nil, err
	}
	self := l.PeerID()
	env.OnAgentLog = func(did, msg string) { m.logs.add(self, did, msg) }
	env.Heads = DeferredHeads{l.Home} // one flush per holder commit, not two (DeferredHeads)
	if m.Svc, err = hosting.NewService(env, hosting.ServiceConfig{Slots: max(cfg.Slots, 1), Run: cfg.Run, OnCheckpoint: m.publishHead, OnTick: m.onTick}); err != nil {
		return nil, err
	}
	m.cnet = newCustodyNet(m)
	timing, err := custodyTiming(cfg.Custody)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(m.Home.path("custody"), 0o700); err != nil {
		return nil, err
	}
	if m.Custody, err = custody.NewManager(custody.Config{
		Dir: m.Home.path("custody"), Self: m.PeerID(), Service: m.Svc, Blocks: l.Store, Keys: l.Keys, Net: m.cnet,
		Hooks:  custody.Hooks{Committed: m.custodyCommitted, Review: m.custodyReview, Regroup: m.custodyRegroup, Replace: m.custodyReplace, Deleted: m.custodyDeleted},
		Timing: timing, Logger: cfg.Logger, Syncer: l.Store.Syncer().For(m.Home.path("custody")), Meta: l.Store,
	}); err != nil {
		return nil, err
	}
	if err := m.Custody.Restore(); err != nil {
		cfg.Logger.Error("custody: some groups could not be resumed", "err", err)
	}
	m.Host.SetStreamHandler(LeaseProtocol, m.handleLease)
	m.Host.SetStreamHandler(CustodyProtocol, m.handleCustody)
	m.Host.SetStreamHandler(StatusProtocol, m.handleStatus)
	m.Host.SetStreamHandler(ControlProtocol, m.handleControl)
	m.Host.SetStreamHandler(AgentsProtocol, m.handleAgents)
	m.Host.SetStreamHandler(LogsProtocol, m.handleLogs)
	n, err := m.DHT.Bootstrap(ctx)
	if err != nil {
		return nil, err
	}
	m.boot = slices.DeleteFunc(boot, func(ai peer.AddrInfo) bool { return ai.ID == m.Host.ID() })
	if len(m.boot) > 0 {
		if n == 0 {
			cfg.Logger.Warn("no bootstrap peer reachable; retrying in the background (every few seconds, backing off to 20 s)", "tried", len(m.boot))
		}
		m.wg.Add(1)
		go m.rebootstrapLoop(n > 0)
	}
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		m.greetMembers()
	}()
	m.wg.Add(1)
	go m.evictLoop()
	for range headWorkers {
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.heads.work(m.ctx)
		}()
	}
	m.wg.Add(1)
	go m.runGC()
	m.wg.Add(1)
	go m.seedHostView()
	if cfg.Slots > 0 {
		m.view.startGossip(m.HostRecord)
		m.wg.Add(1)
		go m.advertiseLoop()
	}
	return m, nil
}

// PeerAddrs are this node's dialable addresses, each with /p2p/<id>.
func (m *Mesh) PeerAddrs() []string {
	info := peer.AddrInfo{ID: m.Host.ID(), Addrs: m.Host.Addrs()}
	mas, _ := peer.AddrInfoToP2pAddrs(&info)
	out := make([]string, 0, len(mas))
	for _, a := range mas {
		out = append(out, a.String())
	}
	sort.Strings(out)
	return out
}

// Close checkpoints every hosted agent, then closes the exchange, DHT, host
// and home. Records are left to expire. It is idempotent. Fields stay set
// (a stream handler still running sees closed components, never nil ones).
func (m *Mesh) Close() error {
	m.closeOnce.Do(func() { m.closeErr = m.close() })
	return m.closeErr
}

func (m *Mesh) close() error {
	var errs []error
	if m.Host != nil {
		m.Host.RemoveStreamHandler(LeaseProtocol)
		m.Host.RemoveStreamHandler(CustodyProtocol)
	}
	// Custody first: it stops the agents it runs without a final checkpoint
	// (an uncommitted one would look like a successor of the committed head).
	if m.Custody != nil {
		errs = append(errs, m.Custody.Close())
	}
	if m.cancel != nil {
		m.cancel()
	}
	if m.Svc != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		errs = append(errs, m.Svc.Close(ctx))
		cancel()
	}
	m.wg.Wait()
	if m.view != nil {
		m.view.close()
	}
	if m.Ex != nil {
		errs = append(errs, m.Ex.Close())
	}
	if m.DHT != nil {
		errs = append(errs, m.DHT.Close())
	}
	if m.Host != nil {
		errs = append(errs, m.Host.Close())
	}
	if m.Local != nil {
		errs = append(errs, m.Local.Close())
	}
	return errors.Join(errs...)
}

// advertiseLoop publishes this node's host record: at start, every
// AdvertiseEvery, when it becomes or stops being full or drained, and —
// checked every second — when the routing table gets its first peers or
// the last attempt failed (a node that starts before its peers must
// advertise as soon as it has any). It provides HostingCID with the first
// record and then every ProvideHostingEvery (provider records live 48 h).
// Every other change of its free slots (checked every second, and at once
// when kicked) is only gossiped to the peers' host views (D51): a DHT put
// and provide per change cost two DHT walks per node per second during a
// bulk publish. Nor does a change of the table's size trigger a walk any
// more: on a loaded 50-node mesh the table changes all the time (peers
// that time out are dropped, and come back), and two walks per change
// per node fed the load that caused it (D71).
func (m *Mesh) advertiseLoop() {
	defer m.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last, lastReprovide, lastProvide time.Time
	lastTable, lastFree, failed := -1, -1, true
	// After a failure with peers in the table, retry after a backoff that
	// doubles up to AdvertiseEvery (not every second: a walk that failed
	// on a loaded mesh would otherwise add one more walk a second).
	retry := time.Second
	for {
		// Provider records expire after 48 h at their receivers: re-announce
		// every pinned root (agent heads) well before that.
		if table := m.DHT.RoutingTableSize(); table > 0 && time.Since(lastReprovide) > ReprovideEvery {
			lastReprovide = time.Now()
			m.reprovide()
		}
		table := m.DHT.RoutingTableSize()
		free := m.advertisedFree()
		switch {
		case (failed && time.Since(last) >= retry) || (lastTable <= 0 && table != lastTable) || (free == 0) != (lastFree == 0) || time.Since(last) >= m.cfg.AdvertiseEvery:
			if failed {
				retry = min(2*retry, m.cfg.AdvertiseEvery)
			}
			lastTable, last = table, time.Now()
			failed = false
			if err := m.publishHostRecord(m.ctx); err != nil && m.ctx.Err() == nil {
				m.Logger.Debug("publish host record", "err", err)
				failed = table > 0 // alone, retry only when the table changes
			}
			if lastProvide.IsZero() || time.Since(lastProvide) >= ProvideHostingEvery {
				if err := m.DHT.Provide(m.ctx, HostingCID); err != nil && m.ctx.Err() == nil {
					m.Logger.Debug("provide hosting CID", "err", err)
					failed = failed || table > 0
				} else if err == nil && table > 0 {
					lastProvide = time.Now()
				}
			}
			if !failed {
				retry = time.Second
			}
		case free != lastFree:
			if r, err := m.HostRecord(); err == nil {
				err = m.view.publish(m.ctx, r)
				if err != nil && m.ctx.Err() == nil {
					m.Logger.Debug("gossip host record", "err", err)
				}
			}
		}
		lastFree = free
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		case <-m.advertise: // look now (a join, a drain)
		}
	}
}

// ProvideHostingEvery is how often a host re-announces HostingCID once it
// has (its record is re-put every AdvertiseEvery; provider records live
// 48 h at their receivers, and host views learn hosts by gossip).
const ProvideHostingEvery = 10 * time.Minute

// ReprovideEvery is how often pinned roots are re-announced in the DHT.
const ReprovideEvery = 12 * time.Hour

func (m *Mesh) reprovide() {
	pins, err := m.Store.Pins()
	if err != nil {
		m.Logger.Warn("reprovide: list pins", "err", err)
		return
	}
	for _, c := range pins {
		if m.ctx.Err() != nil {
			return
		}
		if err := m.DHT.Provide(m.ctx, c); err != nil {
			m.Logger.Debug("reprovide", "cid", c, "err", err)
		}
	}
}

func (m *Mesh) kickAdvertise() {
	select {
	case m.advertise <- struct{}{}:
	default:
	}
}

// HostRecord builds and signs this node's current host record.
func (m *Mesh) HostRecord() (*agents.HostRecord, error) {
	m.mu.Lock()
	m.hostSeq++
	seq := m.hostSeq
	m.mu.Unlock()
	now := time.Now()
	free := m.advertisedFree()
	perSlot := m.cfg.Memory / uint64(max(m.cfg.Slots, 1))
	addrs := m.PeerAddrs()
	if len(addrs) > agents.MaxHostAddrs {
		addrs = addrs[:agents.MaxHostAddrs]
	}
	r := &agents.HostRecord{
		Peer: m.PeerID(), Addrs: addrs, Slots: uint32(m.cfg.Slots), FreeSlots: uint32(max(free, 0)),
		MemoryBytes: m.cfg.Memory, FreeMemoryBytes: perSlot * uint64(max(free, 0)),
		Price: m.cfg.Price, Capabilities: agents.KnownCapabilities(), Version: Version,
		Seq: uint64(now.UnixNano()) + seq, Issued: now.UnixNano(), Expires: now.Add(5 * time.Minute).UnixNano(),
	}
	if err := r.Sign(m.NodeKey); err != nil {
		return nil, err
	}
	return r, nil
}

// localHostRecord is this node's host record for its own placement
// decisions: the one made for the last call is reused while it is younger
// than selfRecordFresh and shows the same free slots. A review or a
// placement asks for it once per agent, and each HostRecord is a
// signature.
func (m *Mesh) localHostRecord() (*agents.HostRecord, error) {
	free := uint32(max(m.advertisedFree(), 0))
	m.mu.Lock()
	r := m.selfRec
	m.mu.Unlock()
	if r != nil && r.FreeSlots == free && time.Since(time.Unix(0, r.Issued)) < selfRecordFresh {
		return r, nil
	}
	r, err := m.HostRecord()
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	m.selfRec = r
	m.mu.Unlock()
	return r, nil
}

// selfRecordFresh bounds how old a reused localHostRecord is.
const selfRecordFresh = time.Second

// advertisedFree is the free-slot count the host record shows.
func (m *Mesh) advertisedFree() int {
	if m.cfg.Slots == 0 || (m.Custody != nil && m.Custody.Draining()) {
		return 0 // a draining node takes nothing new
	}
	return max(m.Svc.FreeSlots(), 0)
}

func (m *Mesh) publishHostRecord(ctx context.Context) error {
	r, err := m.HostRecord()
	if err != nil {
		return err
	}
	data, err := r.Encode()
	if err != nil {
		return err
	}
	// The peers' host views hear of a change at once; the DHT record stays
	// for the cold start and for other readers.
	if err := m.view.publish(ctx, r); err != nil && ctx.Err() == nil {
		m.Logger.Debug("gossip host record", "err", err)
	}
	return m.DHT.PutValue(ctx, agents.HostRecordKey(r.Peer), data)
}

// publishHead publishes a hosted agent's head record naming checkpoint h
// and, on the first publication of the holder's epoch, provides its blocks,
// through the head queue (a few workers, one pending record per agent), so
// the tick loop never waits on the network. A custody
// holder calls it when the record is due (custody.Commit.Publish), not
// after every commit. Readers fetch from the holder the record names; the
// provider records are the fallback, and a walk per refresh (two per
// record, each ~20 peers) was most of a 50-node mesh's DHT traffic.
func (m *Mesh) publishHead(h hosting.Head, key ed25519.PrivateKey, leaseExpiry time.Time) {
	cp := h.Checkpoint
	now := time.Now()
	rec := &agents.HeadRecord{
		Agent: cp.Agent, Head: h.CID, Seq: cp.Seq, Epoch: cp.Epoch, Holder: m.PeerID(),
		LeaseExpiry: leaseExpiry.UnixNano(), Issued: now.UnixNano(), Expires: now.Add(10 * time.Minute).UnixNano(),
	}
	if err := rec.Sign(key); err != nil {
		m.Logger.Error("sign head record", "agent", cp.Agent, "err", err)
		return
	}
	data, err := rec.Encode()
	if err != nil {
		m.Logger.Error("encode head record", "agent", cp.Agent, "err", err)
		return
	}
	j := headJob{did: cp.Agent, data: data, epoch: cp.Epoch}
	for _, c := range []cid.Cid{h.CID, cp.State} {
		if c.Defined() {
			j.cids = append(j.cids, c)
		}
	}
	m.heads.add(j)
}

// putHead is the head queue's work for one record (see headQueue).
func (m *Mesh) putHead(ctx context.Context, j headJob) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := m.DHT.PutValue(ctx, agents.HeadRecordKey(j.did), j.data); err != nil && ctx.Err() == nil {
		m.Logger.Debug("publish head record", "agent", j.did, "err", err)
		if errors.Is(err, dht.ErrStale) {
			m.checkSuperseded(ctx, j.did)
		}
	}
	if !m.firstProvideOfEpoch(j.did, j.epoch) {
		return
	}
	for _, c := range j.cids {
		if err := m.DHT.Provide(ctx, c); err != nil && ctx.Err() == nil {
			m.Logger.Debug("provide", "cid", c, "err", err)
		}
	}
}

// checkSuperseded looks at the head record that beat ours: if it names a
// higher epoch than the lease this node holds the agent at, another holder
// took over and this one is stale — stop the agent at once, before the
// lease timing would.
func (m *Mesh) checkSuperseded(ctx context.Context, did string) {
	rec, err := m.resolveHeadRecord(ctx, did)
	if err != nil {
		return
	}
	if m.Custody.Superseded(did, rec.Epoch) {
		m.Logger.Warn("custody: a head record at a higher epoch exists; stopped the agent here", "agent", did, "epoch", rec.Epoch, "holder", rec.Holder)
	}
}

// custodyTiming is t (zero: custody.DefaultTiming, which has pair leases
// on) with IGOR_PAIR_LEASES applied: 0 turns pair leases off (every group
// renews its lease by its own heartbeat rounds, as before D69), 1 on.
// Nodes with either setting interoperate: a holder keeps per-group rounds
// for a member whose pair acknowledgements do not count.
// Any other non-empty value is refused: a typo must not leave the daemon
// on the setting the operator meant to change.
func custodyTiming(t custody.Timing) (custody.Timing, error) {
	v := os.Getenv("IGOR_PAIR_LEASES")
	switch v {
	case "":
		return t, nil
	case "0", "1":
	default:
		return t, fmt.Errorf("node: IGOR_PAIR_LEASES=%q: want 0 (a heartbeat round per group) or 1 (pair leases, the default), or leave it unset", v)
	}
	if t == (custody.Timing{}) {
		t = custody.DefaultTiming()
	}
	t.PairLeases = v == "1"
	return t, nil
}
