package dht

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	kb "github.com/libp2p/go-libp2p-kbucket"
	record "github.com/libp2p/go-libp2p-record"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
)

// ProtocolPrefix is the kad-dht protocol prefix: the DHT speaks
// /igor/kad/1.0.0, so it never mixes with the public IPFS DHT.
const ProtocolPrefix = "/igor"

// MaxRecordSize caps a record value, for local puts and for records received
// from peers. Head and host records are well under 1 KiB; IPNS uses the same
// 10 KiB cap.
const MaxRecordSize = 10 << 10

// MaxKeySize caps a record key.
const MaxKeySize = 512

var (
	// ErrNotFound: no record (GetValue) or no provider (FindProviders) was found.
	// From GetValue it also matches routing.ErrNotFound.
	ErrNotFound = errors.New("dht: not found")
	// ErrNoPeers: the routing table is empty, so a record or provider record
	// was stored only locally. Peers that join later find it through us.
	ErrNoPeers = errors.New("dht: no peers in the routing table")
	// ErrClosed: the DHT has been closed.
	ErrClosed = errors.New("dht: closed")
	// ErrBadOption: an option passed to New is invalid.
	ErrBadOption = errors.New("dht: bad option")
	// ErrBadArgument: a key, CID or count is malformed, or the key's namespace
	// has no validator.
	ErrBadArgument = errors.New("dht: bad argument")
	// ErrInvalidRecord: the namespace's validator rejected the value, or the
	// value is larger than MaxRecordSize.
	ErrInvalidRecord = errors.New("dht: invalid record")
	// ErrStale: this node already stores a record the validator's Select
	// prefers to the one being put.
	ErrStale = errors.New("dht: a better record is already stored")
)

// DHT is a Kademlia DHT node in server mode on the /igor protocol. It is safe
// for concurrent use. It does not own the libp2p host: Close leaves it open.
type DHT struct {
	kad    *kaddht.IpfsDHT
	host   host.Host
	cfg    config
	ctx    context.Context // cancelled by Close; aborts in-flight calls
	cancel context.CancelFunc

	closeOnce sync.Once
}

// New starts a DHT node on h: server mode (so loopback and LAN peers enter
// each other's routing tables), ProtocolPrefix, the validators given with
// WithValidator and nothing else (no /pk or /ipns records), and no public
// bootstrap peers. kad-dht dials the WithBootstrapPeers peers by itself
// whenever its routing table is empty (so already in the background after
// New, and again after losing every peer); Bootstrap is the call that bounds
// and reports those dials. If New fails it leaves nothing running.
//
// Errors wrap ErrBadOption or ErrBadArgument (nil host), or come from kad-dht.
func New(h host.Host, opts ...Option) (*DHT, error) {
	if h == nil {
		return nil, fmt.Errorf("%w: dht.New: host is nil", ErrBadArgument)
	}
	var cfg config
	for i, opt := range append([]Option{defaults}, opts...) {
		if opt == nil {
			return nil, fmt.Errorf("%w: option %d is nil", ErrBadOption, i)
		}
		if err := opt(&cfg); err != nil {
			return nil, fmt.Errorf("dht.New: %w", err)
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("dht.New: %w", err)
	}

	kadOpts := []kaddht.Option{
		kaddht.Mode(kaddht.ModeServer),
		kaddht.ProtocolPrefix(protocol.ID(ProtocolPrefix)),
		kaddht.Validator(record.NamespacedValidator{
			keyNamespace: namespaces{byName: cfg.validators, logger: cfg.logger},
		}),
	}
	// A node configured with the whole mesh's list must not dial itself.
	cfg.bootstrap = slices.DeleteFunc(cfg.bootstrap, func(ai peer.AddrInfo) bool { return ai.ID == h.ID() })
	if len(cfg.bootstrap) > 0 {
		kadOpts = append(kadOpts, kaddht.BootstrapPeers(cfg.bootstrap...))
	}
	if cfg.datastore != nil {
		kadOpts = append(kadOpts, kaddht.Datastore(cfg.datastore))
	}
	// kaddht.New tears itself down if it fails part-way; it is the last step
	// that can fail, so there is nothing else to undo here.
	kad, err := kaddht.New(h, kadOpts...)
	if err != nil {
		return nil, fmt.Errorf("dht.New: kad-dht: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &DHT{kad: kad, host: h, cfg: cfg, ctx: ctx, cancel: cancel}, nil
}

// Close stops the DHT: in-flight calls return ErrClosed, background work
// (routing-table refresh, record GC) stops and is waited for. It does not close
// the host or its connections. Idempotent; later calls return nil.
func (d *DHT) Close() error {
	var err error
	d.closeOnce.Do(func() {
		d.cancel()
		if err = d.kad.Close(); err != nil {
			err = fmt.Errorf("dht: close: %w", err)
		}
	})
	return err
}

// Bootstrap dials the WithBootstrapPeers peers concurrently, each bounded by
// the query timeout, and then starts a routing-table refresh (it does not wait
// for it; use WaitReady). An unreachable peer is logged as a warning with its
// addresses and the reason, and is not an error: connected says how many
// answered. With no bootstrap peers this node is a mesh of one, and others
// join by bootstrapping from it. A peer with this node's own ID is skipped.
// Calling it again (e.g. after a network outage) is fine.
//
// Errors: ErrClosed, or the context's error (with the count so far).
func (d *DHT) Bootstrap(ctx context.Context) (connected int, err error) {
	if err := d.live(ctx); err != nil {
		return 0, fmt.Errorf("dht: bootstrap: %w", err)
	}
	ctx, cancel := d.bound(ctx, 0)
	defer cancel()

	type result struct {
		ai  peer.AddrInfo
		err error
	}
	results := make(chan result)
	for _, ai := range d.cfg.bootstrap {
		go func() {
			dctx, dcancel := context.WithTimeout(ctx, d.cfg.queryTimeout)
			defer dcancel()
			results <- result{ai, d.host.Connect(dctx, ai)}
		}()
	}
	for range d.cfg.bootstrap {
		r := <-results
		if r.err == nil {
			connected++
			continue
		}
		if ctx.Err() != nil {
			continue // cancelled or closed: reported below, not the peer's fault
		}
		d.cfg.logger.Warn("dht: bootstrap peer unreachable",
			"peer", r.ai.ID.String(), "addrs", fmt.Sprint(r.ai.Addrs), "reason", r.err.Error())
	}
	if err := d.live(ctx); err != nil {
		return connected, fmt.Errorf("dht: bootstrap: %w", err)
	}
	if err := d.kad.Bootstrap(ctx); err != nil {
		return connected, fmt.Errorf("dht: bootstrap: %w", err)
	}
	return connected, nil
}

// WaitReady returns once the routing table holds at least minPeers peers.
// PutValue and Provide need at least one to reach anybody. While short, it
// asks for a routing-table refresh every second, so a node that bootstrapped
// before the rest of the mesh was up still finds it (kad-dht by itself would
// wait for its periodic refresh, minutes away).
//
// Errors: ErrBadArgument (minPeers < 0), ErrClosed, or the context's error
// (with the table size reached).
func (d *DHT) WaitReady(ctx context.Context, minPeers int) error {
	if minPeers < 0 {
		return fmt.Errorf("%w: WaitReady: minPeers %d is negative", ErrBadArgument, minPeers)
	}
	const (
		poll    = 10 * time.Millisecond // table changes are not observable as events
		refresh = time.Second
	)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	lastRefresh := time.Now()
	for {
		if err := d.live(ctx); err != nil {
			return fmt.Errorf("dht: wait for %d peers (have %d): %w", minPeers, d.RoutingTableSize(), err)
		}
		if d.RoutingTableSize() >= minPeers {
			return nil
		}
		if time.Since(lastRefresh) >= refresh {
			lastRefresh = time.Now()
			_ = d.kad.Bootstrap(d.ctx) // only queues a refresh; never fails
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		case <-d.ctx.Done():
		}
	}
}

// RoutingTableSize returns the number of peers in the routing table (0 after
// Close).
func (d *DHT) RoutingTableSize() int {
	if d.ctx.Err() != nil {
		return 0
	}
	return d.kad.RoutingTable().Size()
}

// PutValue validates value with its namespace's validator, stores it locally
// and sends it to the closest peers. The send is best effort: kad-dht does not
// report peers that refused or missed it, so read the record back from
// another node where that matters. If a stored record is preferred by Select,
// nothing is stored or sent.
//
// Errors: ErrBadArgument (key), ErrInvalidRecord, ErrStale, ErrNoPeers (stored
// locally only), ErrClosed, or the context's / query timeout's error (the
// value may already be stored locally and on some peers).
func (d *DHT) PutValue(ctx context.Context, key string, value []byte) error {
	if err := d.checkKey(key); err != nil {
		return fmt.Errorf("dht: put: %w", err)
	}
	if err := d.live(ctx); err != nil {
		return fmt.Errorf("dht: put %.64q: %w", key, err)
	}
	ctx, cancel := d.bound(ctx, d.cfg.queryTimeout)
	defer cancel()
	err := d.kad.PutValue(ctx, key, value)
	return d.wrap("put", key, err)
}

// GetValue returns the best record for key among this node's and those found
// by a lookup (a full one, or until the quorum: WithQuorum), as chosen by the
// namespace's Select. Once it holds a valid value it waits at most the
// settle window (WithSettle) for the rest, so dead peers cannot hold a read
// that has an answer. Every value, local or remote, is validated before it
// is considered. With an empty routing table it answers from the local store.
//
// Errors: ErrBadArgument (key), ErrNotFound (also matching routing.ErrNotFound),
// ErrClosed, or the context's / query timeout's error.
func (d *DHT) GetValue(ctx context.Context, key string) ([]byte, error) {
	if err := d.checkKey(key); err != nil {
		return nil, fmt.Errorf("dht: get: %w", err)
	}
	if err := d.live(ctx); err != nil {
		return nil, fmt.Errorf("dht: get %.64q: %w", key, err)
	}
	ctx, cancel := d.bound(ctx, d.cfg.queryTimeout)
	defer cancel() // also ends the search when the settle window closes it
	// SearchValue sends each value better than the ones before it (this
	// node's own first), and closes the channel at the quorum or the
	// lookup's end.
	values, err := d.kad.SearchValue(ctx, key, kaddht.Quorum(d.cfg.quorum))
	if err != nil {
		return nil, d.wrap("get", key, err)
	}
	var (
		best   []byte
		settle <-chan time.Time
	)
	for done := false; !done; {
		select {
		case v, ok := <-values:
			if !ok {
				done = true
				break
			}
			best = v
			if settle == nil {
				t := time.NewTimer(d.cfg.settle)
				defer t.Stop()
				settle = t.C
			}
		case <-settle:
			done = true
		case <-ctx.Done():
			done = true
		}
	}
	switch {
	case best != nil:
		return best, nil
	case ctx.Err() != nil:
		return nil, d.wrap("get", key, ctx.Err())
	}
	return nil, d.wrap("get", key, routing.ErrNotFound)
}

// Provide records this node as a provider of c, locally first, then on the
// closest peers (best effort, like PutValue). Provider records expire after
// 48 h on the peers holding them: provide again well before (e.g. every 12 h).
//
// Errors: ErrBadArgument (undefined CID), ErrNoPeers (recorded locally only:
// FindProviders here still returns this node, and peers that ask us learn it),
// ErrClosed, or the context's / query timeout's error.
func (d *DHT) Provide(ctx context.Context, c cid.Cid) error {
	if !c.Defined() {
		return fmt.Errorf("%w: provide: CID is undefined", ErrBadArgument)
	}
	if err := d.live(ctx); err != nil {
		return fmt.Errorf("dht: provide %s: %w", c, err)
	}
	ctx, cancel := d.bound(ctx, d.cfg.queryTimeout)
	defer cancel()
	return d.wrap("provide", c.String(), d.kad.Provide(ctx, c, true))
}

// FindProviders returns up to max providers of c (matched by multihash, so a
// CIDv0 and a CIDv1 of the same bytes match). It includes this node when this
// node provides c: the answer is "who has it", and callers that want only
// remote peers filter on the host's ID. It returns as soon as max are found;
// otherwise after the lookup completes. If the query timeout (not the
// caller's context) cuts the lookup short, the providers found so far are
// returned without error; none found is an error either way.
//
// Errors: ErrBadArgument (undefined CID, max < 1), ErrNotFound (no provider),
// ErrClosed, or the context's / query timeout's error (when none was found).
func (d *DHT) FindProviders(ctx context.Context, c cid.Cid, max int) ([]peer.AddrInfo, error) {
	if !c.Defined() {
		return nil, fmt.Errorf("%w: find providers: CID is undefined", ErrBadArgument)
	}
	if max < 1 {
		return nil, fmt.Errorf("%w: find providers of %s: max %d must be at least 1", ErrBadArgument, c, max)
	}
	if err := d.live(ctx); err != nil {
		return nil, fmt.Errorf("dht: find providers of %s: %w", c, err)
	}
	qctx, cancel := d.bound(ctx, d.cfg.queryTimeout)
	defer cancel()
	var found []peer.AddrInfo
	for ai := range d.kad.FindProvidersAsync(qctx, c, max) {
		found = append(found, ai)
	}
	if err := d.live(ctx); err != nil {
		return nil, fmt.Errorf("dht: find providers of %s: %w", c, err)
	}
	if len(found) > 0 {
		return found, nil
	}
	if err := qctx.Err(); err != nil {
		return nil, fmt.Errorf("dht: find providers of %s: %w", c, err)
	}
	return nil, fmt.Errorf("%w: no provider of %s", ErrNotFound, c)
}

// live returns ErrClosed after Close, else the context's error.
func (d *DHT) live(ctx context.Context) error {
	if d.ctx.Err() != nil {
		return ErrClosed
	}
	return ctx.Err()
}

// bound derives a context that ends with ctx, after timeout (if > 0), or on
// Close, whichever comes first.
func (d *DHT) bound(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	var cancel context.CancelFunc
	if timeout > 0 {
		ctx, cancel = context.WithTimeout(ctx, timeout)
	} else {
		ctx, cancel = context.WithCancel(ctx)
	}
	stop := context.AfterFunc(d.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// checkKey rejects keys with no registered namespace before any work is done.
func (d *DHT) checkKey(key string) error {
	_, err := namespaces{byName: d.cfg.validators}.validator(key)
	return err
}

// kad-dht reports a local record that beats the put one with this bare string
// (routing.go); TestOneNodeMesh pins it, so an upgrade that changes it fails.
const kadOlderValue = "can't replace a newer value with an older value"

// wrap maps kad-dht's errors to this package's sentinels.
func (d *DHT) wrap(op, what string, err error) error {
	switch {
	case err == nil:
		return nil
	case d.ctx.Err() != nil:
		return fmt.Errorf("dht: %s %.64q: %w", op, what, ErrClosed)
	case errors.Is(err, kb.ErrLookupFailure):
		return fmt.Errorf("dht: %s %.64q: %w (stored locally only)", op, what, ErrNoPeers)
	case errors.Is(err, routing.ErrNotFound):
		return fmt.Errorf("dht: %s %.64q: %w: %w", op, what, ErrNotFound, err)
	case errors.Is(err, records.ErrOldRecord) || strings.Contains(err.Error(), kadOlderValue):
		return fmt.Errorf("dht: %s %.64q: %w", op, what, ErrStale)
	}
	return fmt.Errorf("dht: %s %.64q: %w", op, what, err)
}
