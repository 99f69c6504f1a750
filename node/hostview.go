package node

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/igor-mesh/igor-node/agents"
)

// The host view (docs/PROTOCOL.md "Host view", DECISIONS D51): every node
// keeps the mesh's valid host records in memory, fed by the records
// themselves, which hosting nodes gossip on every change and every
// HostViewOptions.Republish. Placement (publish, review, regroup, member
// replacement) reads it instead of enumerating the DHT — a provider walk
// plus one record read per host, which at 50 daemons saturated the CPU and
// in a failover waited on reads from the dead peer. The DHT host records
// stay as they are; the view is seeded from one enumeration and read from
// the DHT only while it is cold.

// HostTopic is the GossipSub topic host records travel on.
const HostTopic = "/igor/hosts/1"

// HostGossipProtocol is the GossipSub protocol of the mesh: GossipSub v1.2
// under the mesh's own prefix, so that igor nodes gossip only with igor
// nodes (as the DHT speaks /igor/kad/1.0.0).
const HostGossipProtocol = protocol.ID("/igor/meshsub/1.2.0")

// HostRecordProtocol carries one host record straight to a peer that just
// joined the host topic: the sender writes its own signed record and
// closes. GossipSub sends a newcomer nothing published before it joined;
// re-gossiping every host's record to the whole mesh on every join (as
// until session 15) cost N broadcasts per join, each delivered to every
// node several times — N³ messages for a mesh of N starting up.
const HostRecordProtocol = protocol.ID("/igor/hostrecord/1.0.0")

// hostRecordTimeout bounds a direct record's send and its receipt.
const hostRecordTimeout = 5 * time.Second

// directRecordEvery: a peer's direct records closer together than this
// are refused unread.
const directRecordEvery = time.Second

// maxHostGossipRPC bounds one GossipSub RPC read from a peer: a host record
// is at most agents.MaxRecordBytes, and larger RPCs are split by the sender.
const maxHostGossipRPC = 64 << 10

// HostViewOptions configures the host view. Zero fields take the defaults.
type HostViewOptions struct {
	// Republish is how often a hosting node gossips its record when nothing
	// changed (a change is gossiped at once). Default 10 s.
	Republish time.Duration
	// TTL: an entry not refreshed by a newer record within TTL leaves the
	// view (a node that died without closing its connections). Default
	// 3.5 × Republish. At least 2 × Republish, so one lost message does not
	// drop a live host.
	TTL time.Duration
	// MaxAge: a record issued longer ago than this (by its signer's clock)
	// is refused, so a message replayed after GossipSub's seen-message
	// cache forgot it cannot bring back a host that is gone. Default 2 min;
	// the seen-message cache is kept for MaxAge + 1 min.
	MaxAge time.Duration
	// MaxEntries bounds the view (memory). A record of a peer not in a full
	// view is dropped until an entry expires. Default 4096.
	MaxEntries int
	// PerHost stretches Republish (and TTL with it) in a large mesh: a
	// node whose view holds n hosts gossips its unchanged record every
	// max(Republish, n × PerHost), at most MaxAge, and keeps entries for
	// 3.5 times that (or TTL, if longer). The mesh then carries about one
	// unchanged record per PerHost whatever its size, where a fixed
	// Republish made each node's share grow with the mesh (30 idle
	// daemons: 2.0 % of a core each, 1.3 % with 30 s rounds). Default 1 s;
	// negative: a fixed Republish.
	PerHost time.Duration
}

// ErrBadHostViewOptions: a HostViewOptions field out of range.
var ErrBadHostViewOptions = errors.New("node: bad host view options")

// DefaultHostViewOptions are the host view's defaults.
func DefaultHostViewOptions() HostViewOptions {
	return HostViewOptions{Republish: 10 * time.Second, TTL: 35 * time.Second, MaxAge: 2 * time.Minute, MaxEntries: 4096, PerHost: time.Second}
}

// withDefaults fills zero fields and validates the result.
func (o HostViewOptions) withDefaults() (HostViewOptions, error) {
	d := DefaultHostViewOptions()
	if o.Republish == 0 {
		o.Republish = d.Republish
	}
	if o.TTL == 0 {
		o.TTL = o.Republish * 7 / 2
	}
	if o.MaxAge == 0 {
		o.MaxAge = d.MaxAge
	}
	if o.MaxEntries == 0 {
		o.MaxEntries = d.MaxEntries
	}
	if o.PerHost == 0 {
		o.PerHost = d.PerHost
	}
	switch {
	case o.Republish < 0 || o.TTL < 0 || o.MaxAge < 0 || o.MaxEntries < 0:
		return o, fmt.Errorf("%w: negative value in %+v", ErrBadHostViewOptions, o)
	case o.TTL < 2*o.Republish:
		return o, fmt.Errorf("%w: TTL %v is below twice Republish %v (one lost message would drop a live host)", ErrBadHostViewOptions, o.TTL, o.Republish)
	case o.MaxAge < o.Republish:
		return o, fmt.Errorf("%w: MaxAge %v is below Republish %v (fresh records would be refused)", ErrBadHostViewOptions, o.MaxAge, o.Republish)
	}
	return o, nil
}

// Reasons a gossiped host record is refused (checkHostGossip); each wraps
// ErrHostGossip.
var (
	// ErrHostGossip: a host-record message that is not accepted.
	ErrHostGossip = errors.New("node: host record message refused")
	// ErrHostGossipTooLarge: larger than agents.MaxRecordBytes.
	ErrHostGossipTooLarge = fmt.Errorf("%w: too large", ErrHostGossip)
	// ErrHostGossipMalformed: not a well-formed, validly signed host record.
	ErrHostGossipMalformed = fmt.Errorf("%w: not a valid host record", ErrHostGossip)
	// ErrHostGossipWrongPeer: the record is not the message author's own.
	ErrHostGossipWrongPeer = fmt.Errorf("%w: the record's peer is not the message's author", ErrHostGossip)
	// ErrHostGossipStale: expired, issued longer than MaxAge ago, or issued
	// in the future beyond agents.MaxClockSkew.
	ErrHostGossipStale = fmt.Errorf("%w: not fresh", ErrHostGossip)
)

// checkHostGossip decodes and checks a gossiped host record: at most
// agents.MaxRecordBytes, a well-formed record signed by its peer's key, the
// peer being the message's author (GossipSub signs every message with its
// author's key; so nobody can inject a record but its owner, and relays
// only forward), not expired, issued within maxAge and not ahead of now by
// more than agents.MaxClockSkew. It never panics on any input.
func checkHostGossip(data []byte, author peer.ID, now time.Time, maxAge time.Duration, verified *agents.VerifiedRecords) (*agents.HostRecord, error) {
	if len(data) > agents.MaxRecordBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrHostGossipTooLarge, len(data), agents.MaxRecordBytes)
	}
	r, err := agents.DecodeHostRecord(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHostGossipMalformed, err)
	}
	if r.Peer != author.String() {
		return nil, fmt.Errorf("%w: record of %s from %s", ErrHostGossipWrongPeer, r.Peer, author)
	}
	if err := verified.Check(data, r.Verify); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHostGossipMalformed, err)
	}
	n := now.UnixNano()
	switch {
	case r.Expires <= n:
		return nil, fmt.Errorf("%w: expired %v ago", ErrHostGossipStale, time.Duration(n-r.Expires))
	case r.Issued < n-int64(maxAge):
		return nil, fmt.Errorf("%w: issued %v ago, the limit is %v (a replay, or the signer's clock is behind)", ErrHostGossipStale, time.Duration(n-r.Issued).Round(time.Second), maxAge)
	case r.Issued > n+int64(agents.MaxClockSkew):
		return nil, fmt.Errorf("%w: issued %v in the future", ErrHostGossipStale, time.Duration(r.Issued-n).Round(time.Second))
	}
	return r, nil
}

// viewEntry is the newest record of one peer.
type viewEntry struct {
	rec *agents.HostRecord
	at  time.Time // local time the record arrived (or was seeded): TTL counts from it
	// down is when the peer was found unreachable (its last connection
	// closed, or an offer could not reach it); zero if not. Such an entry is
	// left out of placement until the peer is connected again or a record
	// issued after down arrives: a stale record must not make a placement
	// wait on dials.
	down time.Time
}

// hostView is a node's in-memory set of the mesh's host records.
type hostView struct {
	opts HostViewOptions
	self peer.ID
	log  *slog.Logger
	host host.Host
	// verified spares re-checking a record's signature (Mesh.recSigs).
	verified *agents.VerifiedRecords
	ps       *pubsub.PubSub
	topic    *pubsub.Topic
	sub      *pubsub.Subscription
	events   *pubsub.TopicEventHandler
	notify   *network.NotifyBundle
	// record returns this node's current signed host record to gossip (set
	// by startGossip; a node that hosts nothing keeps a view but sends nothing).
	record func() (*agents.HostRecord, error)
	joined chan peer.ID // peers that joined the topic: sendLoop sends them our record

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex // guards entries, lastSent, direct
	entries  map[peer.ID]*viewEntry
	lastSent time.Time
	direct   map[peer.ID]time.Time // when each peer last sent a record directly

	rejected  atomic.Int64  // messages refused by the validator
	published atomic.Uint64 // own records gossiped to the mesh
	full      atomic.Int64  // records dropped because the view was full
}

// newHostView joins the host topic on h and starts receiving records.
func newHostView(h host.Host, opts HostViewOptions, verified *agents.VerifiedRecords, logger *slog.Logger) (_ *hostView, err error) {
	if opts, err = opts.withDefaults(); err != nil {
		return nil, err
	}
	v := &hostView{opts: opts, self: h.ID(), log: logger, host: h, verified: verified, joined: make(chan peer.ID, 256), entries: map[peer.ID]*viewEntry{}, direct: map[peer.ID]time.Time{}}
	v.ctx, v.cancel = context.WithCancel(context.Background())
	defer func() {
		if err != nil {
			v.close()
		}
	}()
	// GossipSub v1.2's features under our own protocol ID.
	feature := func(f pubsub.GossipSubFeature, p protocol.ID) bool {
		return p == HostGossipProtocol && pubsub.GossipSubDefaultFeatures(f, pubsub.GossipSubID_v12)
	}
	if v.ps, err = pubsub.NewGossipSub(v.ctx, h,
		pubsub.WithGossipSubProtocols([]protocol.ID{HostGossipProtocol}, feature),
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign), // the author is signed: checkHostGossip compares it with the record
		pubsub.WithMaxMessageSize(maxHostGossipRPC),
		pubsub.WithSeenMessagesTTL(opts.MaxAge+time.Minute), // a replay is either seen or too old
		pubsub.WithLogger(slog.New(atLeast{logger.Handler(), slog.LevelWarn}).With("sub", "gossipsub")),
	); err != nil {
		return nil, fmt.Errorf("node: host view: gossipsub: %w", err)
	}
	if err = v.ps.RegisterTopicValidator(HostTopic, v.validate, pubsub.WithValidatorInline(true)); err != nil {
		return nil, fmt.Errorf("node: host view: validator: %w", err)
	}
	if v.topic, err = v.ps.Join(HostTopic); err != nil {
		return nil, fmt.Errorf("node: host view: join: %w", err)
	}
	if v.sub, err = v.topic.Subscribe(); err != nil {
		return nil, fmt.Errorf("node: host view: subscribe: %w", err)
	}
	if v.events, err = v.topic.EventHandler(); err != nil {
		return nil, fmt.Errorf("node: host view: events: %w", err)
	}
	v.notify = &network.NotifyBundle{
		ConnectedF: func(_ network.Network, c network.Conn) { v.markUp(c.RemotePeer()) },
		DisconnectedF: func(n network.Network, c network.Conn) {
			if n.Connectedness(c.RemotePeer()) != network.Connected {
				v.markDown(c.RemotePeer(), time.Now())
			}
		},
	}
	h.Network().Notify(v.notify)
	h.SetStreamHandler(HostRecordProtocol, v.handleRecord)
	v.wg.Add(2)
	go v.receiveLoop()
	go v.sweepLoop()
	return v, nil
}

// handleRecord receives a record a peer sent straight to this node: it must
// be the sender's own, valid and fresh (checkHostGossip, as for gossip).
func (v *hostView) handleRecord(s network.Stream) {
	defer s.Close()
	from, now := s.Conn().RemotePeer(), time.Now()
	v.mu.Lock()
	last, ok := v.direct[from]
	if !ok && len(v.direct) >= v.opts.MaxEntries {
		clear(v.direct) // bounded: start over rather than grow
	}
	v.direct[from] = now
	v.mu.Unlock()
	if ok && now.Sub(last) < directRecordEvery {
		// An honest peer sends one per join: a faster sender pays for
		// no signature check here.
		s.Reset()
		v.rejected.Add(1)
		return
	}
	s.SetDeadline(now.Add(hostRecordTimeout))
	data, err := io.ReadAll(io.LimitReader(s, agents.MaxRecordBytes+1))
	if err == nil {
		var r *agents.HostRecord
		if r, err = checkHostGossip(data, from, time.Now(), v.opts.MaxAge, v.verified); err == nil {
			v.put(r, time.Now())
			return
		}
	}
	s.Reset()
	v.rejected.Add(1)
	v.log.Debug("host view: refused a host record sent directly", "from", from, "err", err)
}

// startGossip starts gossiping this node's record, which record returns
// (a hosting node; called once, after the node's hosting state exists).
func (v *hostView) startGossip(record func() (*agents.HostRecord, error)) {
	v.record = record
	v.wg.Add(3)
	go v.eventLoop()
	go v.gossipLoop()
	go v.sendLoop()
}

// sweepLoop drops expired entries (also swept on every read), so a node
// that reads nothing still frees them.
func (v *hostView) sweepLoop() {
	defer v.wg.Done()
	t := time.NewTicker(max(v.opts.TTL/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-v.ctx.Done():
			return
		case <-t.C:
			v.sweep(time.Now())
		}
	}
}

// close stops the view's loops and leaves the topic. Idempotent.
func (v *hostView) close() {
	if v.notify != nil {
		v.host.Network().StopNotify(v.notify)
	}
	if v.events != nil {
		v.events.Cancel()
	}
	if v.sub != nil {
		v.sub.Cancel()
	}
	v.host.RemoveStreamHandler(HostRecordProtocol)
	v.cancel() // stops GossipSub too
	v.wg.Wait()
}

// validate is the topic validator: it refuses (and logs why) any message
// checkHostGossip refuses, ignores a record not newer than the one held (so
// it is not forwarded again), and hands the decoded record to receiveLoop.
func (v *hostView) validate(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
	r, err := checkHostGossip(msg.GetData(), msg.GetFrom(), time.Now(), v.opts.MaxAge, v.verified)
	if err != nil {
		v.rejected.Add(1)
		v.log.Debug("host view: refused a host record message", "author", msg.GetFrom(), "via", from, "err", err)
		return pubsub.ValidationReject
	}
	v.mu.Lock()
	e := v.entries[msg.GetFrom()]
	old := e != nil && e.rec.Seq >= r.Seq
	v.mu.Unlock()
	if old {
		return pubsub.ValidationIgnore // old news: do not forward it again
	}
	msg.ValidatorData = r
	return pubsub.ValidationAccept
}

// receiveLoop puts every accepted record into the view.
func (v *hostView) receiveLoop() {
	defer v.wg.Done()
	for {
		msg, err := v.sub.Next(v.ctx)
		if err != nil {
			return // cancelled
		}
		if r, ok := msg.ValidatorData.(*agents.HostRecord); ok && msg.GetFrom() != v.self {
			v.put(r, time.Now())
		}
	}
}

// eventLoop hands every peer that joins the topic to sendLoop, so a node
// that just started learns every host within about a second (a joining
// peer is sent nothing that was published before it joined). A peer that
// does not fit in the queue (a burst of hundreds of joins) learns our
// record from the next Republish.
func (v *hostView) eventLoop() {
	defer v.wg.Done()
	for {
		ev, err := v.events.NextPeerEvent(v.ctx)
		if err != nil {
			return
		}
		if ev.Type == pubsub.PeerJoin {
			select {
			case v.joined <- ev.Peer:
			default:
			}
		}
	}
}

// sendLoop sends this node's record straight to each peer that joined
// (HostRecordProtocol), one at a time.
func (v *hostView) sendLoop() {
	defer v.wg.Done()
	for {
		select {
		case <-v.ctx.Done():
			return
		case p := <-v.joined:
			if err := v.sendRecord(p); err != nil && v.ctx.Err() == nil {
				v.log.Debug("host view: send own record to a new peer", "peer", p, "err", err)
			}
		}
	}
}

func (v *hostView) sendRecord(p peer.ID) error {
	r, err := v.record()
	if err != nil {
		return err
	}
	data, err := r.Encode()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(v.ctx, hostRecordTimeout)
	defer cancel()
	s, err := v.host.NewStream(network.WithNoDial(ctx, "host record to a peer already connected"), p, HostRecordProtocol)
	if err != nil {
		return err
	}
	s.SetDeadline(time.Now().Add(hostRecordTimeout))
	if _, err := s.Write(data); err != nil {
		s.Reset()
		return err
	}
	return s.Close()
}

// gossipLoop gossips this node's record every Republish.
func (v *hostView) gossipLoop() {
	defer v.wg.Done()
	t := time.NewTicker(min(time.Second, v.opts.Republish/2))
	defer t.Stop()
	for {
		select {
		case <-v.ctx.Done():
			return
		case <-t.C:
		}
		v.mu.Lock()
		since, every := time.Since(v.lastSent), v.republishLocked()
		v.mu.Unlock()
		if since < every {
			continue
		}
		r, err := v.record()
		if err == nil {
			err = v.publish(v.ctx, r)
		}
		if err != nil && v.ctx.Err() == nil {
			v.log.Debug("host view: gossip own record", "err", err)
		}
	}
}

// republishLocked is how often this node gossips its unchanged record:
// Republish, stretched by the view's size (HostViewOptions.PerHost).
func (v *hostView) republishLocked() time.Duration {
	if v.opts.PerHost < 0 {
		return v.opts.Republish
	}
	return min(max(v.opts.Republish, time.Duration(len(v.entries))*v.opts.PerHost), v.opts.MaxAge) // withDefaults: MaxAge ≥ Republish
}

// ttlLocked is how long an entry stays without a newer record: TTL, or 3.5
// rounds of the stretched Republish when that is longer (every node of a
// mesh sees about the same number of hosts, so the others' rounds are
// about this node's).
func (v *hostView) ttlLocked() time.Duration {
	return max(v.opts.TTL, v.republishLocked()*7/2)
}

// publish gossips r (this node's own record).
func (v *hostView) publish(ctx context.Context, r *agents.HostRecord) error {
	data, err := r.Encode()
	if err != nil {
		return err
	}
	v.mu.Lock()
	v.lastSent = time.Now()
	v.mu.Unlock()
	v.published.Add(1)
	return v.topic.Publish(ctx, data)
}

// put keeps r if it is newer than the record held for its peer. A record
// issued after the peer was found unreachable clears that mark.
func (v *hostView) put(r *agents.HostRecord, now time.Time) bool {
	id, err := peer.Decode(r.Peer)
	if err != nil || id == v.self {
		return false
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	e := v.entries[id]
	if e == nil {
		if len(v.entries) >= v.opts.MaxEntries {
			v.sweepLocked(now)
		}
		if len(v.entries) >= v.opts.MaxEntries {
			if v.full.Add(1)%1000 == 1 {
				v.log.Warn("host view: full; dropping records of new peers until entries expire", "entries", len(v.entries))
			}
			return false
		}
		v.entries[id] = &viewEntry{rec: r, at: now}
		return true
	}
	if r.Seq <= e.rec.Seq {
		return false
	}
	e.rec, e.at = r, now
	if !e.down.IsZero() && r.Issued > e.down.UnixNano() {
		e.down = time.Time{}
	}
	return true
}

// seed puts records read from the DHT (already verified by Hosts).
func (v *hostView) seed(recs []*agents.HostRecord) {
	if v == nil {
		return
	}
	now := time.Now()
	for _, r := range recs {
		if r.Expires > now.UnixNano() {
			v.put(r, now)
		}
	}
}

// sweep drops entries not refreshed within TTL or whose record expired.
func (v *hostView) sweep(now time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.sweepLocked(now)
}

func (v *hostView) sweepLocked(now time.Time) {
	for id, e := range v.entries {
		if now.Sub(e.at) > v.ttlLocked() || e.rec.Expires <= now.UnixNano() {
			delete(v.entries, id)
		}
	}
}

// markDown records that id was found unreachable at t (if it is in the view).
func (v *hostView) markDown(id peer.ID, t time.Time) {
	if v == nil {
		return
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if e := v.entries[id]; e != nil && e.down.IsZero() {
		e.down = t
	}
}

// markUp clears id's unreachable mark (a connection to it opened).
func (v *hostView) markUp(id peer.ID) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if e := v.entries[id]; e != nil {
		e.down = time.Time{}
	}
}

// hosts returns the view's live records (not expired, not known
// unreachable; this node's own is not among them) and whether the view is
// warm: it holds an entry of at least one other peer. A cold view is not
// to be trusted as "no hosts": read the DHT instead.
func (v *hostView) hosts(now time.Time) (out []*agents.HostRecord, warm bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.sweepLocked(now)
	out = make([]*agents.HostRecord, 0, len(v.entries))
	for _, e := range v.entries {
		if e.down.IsZero() {
			out = append(out, e.rec)
		}
	}
	return out, len(v.entries) > 0
}

// warm reports whether the view holds an entry of another peer (nil: no).
func (v *hostView) warm() bool {
	if v == nil {
		return false
	}
	_, warm := v.hosts(time.Now())
	return warm
}

// size is the number of entries (for metrics and tests).
func (v *hostView) size() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return len(v.entries)
}

// viewHosts returns the mesh's hosts as the view knows them, with this
// node's own current record when it hosts; false if the view is cold (or
// absent), in which case the caller reads the DHT (Hosts).
func (m *Mesh) viewHosts() ([]*agents.HostRecord, bool) {
	if m.view == nil {
		return nil, false
	}
	hs, warm := m.view.hosts(time.Now())
	if !warm {
		return nil, false
	}
	if m.cfg.Slots > 0 {
		if r, err := m.localHostRecord(); err == nil {
			hs = append(hs, r)
		}
	}
	return hs, true
}

// seedHostView fills a cold view from one DHT enumeration: at start, as
// soon as the routing table has a peer, and again (at most every
// hostViewSeedEvery) whenever the view is empty — a node that starts
// before the others, or whose entries all expired while it was cut off.
// Gossip keeps it warm after that.
func (m *Mesh) seedHostView() {
	defer m.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last time.Time
	for {
		if _, warm := m.view.hosts(time.Now()); !warm && m.DHT.RoutingTableSize() > 0 && time.Since(last) >= hostViewSeedEvery {
			last = time.Now()
			ctx, cancel := context.WithTimeout(m.ctx, 10*time.Second)
			if _, err := m.Hosts(ctx); err != nil && m.ctx.Err() == nil {
				m.Logger.Debug("host view: seed from the DHT", "err", err)
			}
			cancel()
		}
		select {
		case <-m.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// hostViewSeedEvery spaces the DHT enumerations of a view that stays cold.
const hostViewSeedEvery = 10 * time.Second

// atLeast passes on log records at min or above: GossipSub logs routine
// events (its loop stopping, at every Close) at Info.
type atLeast struct {
	slog.Handler
	min slog.Level
}

func (h atLeast) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}
func (h atLeast) WithAttrs(a []slog.Attr) slog.Handler { return atLeast{h.Handler.WithAttrs(a), h.min} }
func (h atLeast) WithGroup(n string) slog.Handler      { return atLeast{h.Handler.WithGroup(n), h.min} }
