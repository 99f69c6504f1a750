package exchange

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/igor-mesh/igor-node/contentstore"
)

// Sentinel errors. Compare with errors.Is; one error may wrap several (a
// block nobody delivered because its only provider lied wraps ErrNotFound
// and ErrBadPeer).
var (
	// ErrNotFound: no provider delivered the block (none known, all said
	// they do not have it, or all failed).
	ErrNotFound = errors.New("exchange: block not found")
	// ErrTooLarge: a peer announced a block larger than MaxBlockSize, or a
	// DAG exceeds FetchOptions.MaxBlocks or MaxBytes.
	ErrTooLarge = errors.New("exchange: too large")
	// ErrBadPeer: a peer sent bytes that do not hash to the CID asked for, an
	// oversized block or a malformed message. It is not asked again during
	// the same fetch.
	ErrBadPeer = errors.New("exchange: bad peer")
	// ErrClosed: the Exchange was closed.
	ErrClosed = errors.New("exchange: closed")
	// ErrBadArgument: an invalid option or argument (the message says which).
	ErrBadArgument = errors.New("exchange: bad argument")
)

// MaxBlockSize is the largest block sent or accepted: the content store's limit.
const MaxBlockSize = contentstore.MaxBlockSize

// Defaults.
const (
	DefaultMaxInFlight    = 16
	DefaultConnectTimeout = 10 * time.Second
	DefaultIdleTimeout    = 30 * time.Second
	DefaultStreamsPerPeer = 4
	DefaultStreamsTotal   = 64
	DefaultMaxBlocks      = 100_000
)

// Blockstore is what the exchange needs from a block store;
// *contentstore.Store implements it. PutBlock must re-hash data against c.
type Blockstore interface {
	Has(c cid.Cid) (bool, error)
	Get(c cid.Cid) ([]byte, error)
	PutBlock(c cid.Cid, data []byte) error
}

// Providers finds peers that claim to hold a block; the DHT implements it.
// Claims are not trusted: every block is verified on arrival.
type Providers interface {
	FindProviders(ctx context.Context, c cid.Cid, max int) ([]peer.AddrInfo, error)
}

// LinksFunc returns the CIDs a block links to. It is only called on bytes
// already verified against c.
type LinksFunc func(c cid.Cid, data []byte) ([]cid.Cid, error)

// Timeouts bound the network waits of both the client and the server side.
type Timeouts struct {
	// Connect bounds dialling a peer and opening a stream to it.
	Connect time.Duration
	// Idle bounds each single wait on a stream: for a whole response (one
	// block) once it is due, for a whole request, for the next request on
	// an idle server stream, and for each write. A peer that stalls longer
	// is cut off.
	Idle time.Duration
}

// Option configures New. Options are applied in order after the defaults;
// the result is then validated as a whole.
type Option func(*config) error

type config struct {
	providers      Providers
	log            *slog.Logger
	maxInFlight    int
	timeouts       Timeouts
	links          LinksFunc
	streamsPerPeer int
	streamsTotal   int
}

func defaults(c *config) error {
	c.log = slog.Default()
	c.maxInFlight = DefaultMaxInFlight
	c.timeouts = Timeouts{Connect: DefaultConnectTimeout, Idle: DefaultIdleTimeout}
	c.links = contentstore.Links
	c.streamsPerPeer = DefaultStreamsPerPeer
	c.streamsTotal = DefaultStreamsTotal
	return nil
}

func (c *config) validate() error {
	switch {
	case c.log == nil:
		return fmt.Errorf("%w: logger is nil", ErrBadArgument)
	case c.links == nil:
		return fmt.Errorf("%w: links function is nil", ErrBadArgument)
	case c.maxInFlight < 1 || c.maxInFlight > 4096:
		return fmt.Errorf("%w: max in flight %d; want 1..4096", ErrBadArgument, c.maxInFlight)
	case c.timeouts.Connect <= 0 || c.timeouts.Idle <= 0:
		return fmt.Errorf("%w: timeouts %+v must be positive", ErrBadArgument, c.timeouts)
	case c.streamsPerPeer < 1 || c.streamsTotal < c.streamsPerPeer:
		return fmt.Errorf("%w: stream limits %d per peer, %d in total; want 1 ≤ per peer ≤ total", ErrBadArgument, c.streamsPerPeer, c.streamsTotal)
	}
	return nil
}

// WithProviders sets where to look for blocks that no peer given to Fetch or
// FetchDAG has. Without it only those peers are asked.
func WithProviders(p Providers) Option {
	return func(c *config) error {
		if p == nil {
			return fmt.Errorf("%w: providers is nil", ErrBadArgument)
		}
		c.providers = p
		return nil
	}
}

// WithLogger sets the logger (default slog.Default()). Peers that send wrong
// blocks are logged at Warn with their peer ID and the CID.
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error { c.log = l; return nil }
}

// WithMaxInFlight sets how many blocks one fetch may have requested and not
// yet stored, across all its providers (default 16, at most 4096). Each costs
// up to MaxBlockSize of memory while it is being received.
func WithMaxInFlight(n int) Option {
	return func(c *config) error { c.maxInFlight = n; return nil }
}

// WithTimeouts sets the timeouts; zero fields keep their defaults
// (DefaultConnectTimeout, DefaultIdleTimeout).
func WithTimeouts(t Timeouts) Option {
	return func(c *config) error {
		if t.Connect < 0 || t.Idle < 0 {
			return fmt.Errorf("%w: timeouts %+v must not be negative", ErrBadArgument, t)
		}
		if t.Connect != 0 {
			c.timeouts.Connect = t.Connect
		}
		if t.Idle != 0 {
			c.timeouts.Idle = t.Idle
		}
		return nil
	}
}

// WithLinks sets how FetchDAG finds the links of a block (default
// contentstore.Links: tag-42 links of DAG-CBOR blocks, none for raw).
func WithLinks(f LinksFunc) Option {
	return func(c *config) error { c.links = f; return nil }
}

// WithStreamLimits sets how many inbound streams the server serves at once
// from one peer and in total (defaults 4 and 64); a stream beyond either is
// reset at once. perPeer is also the most streams this Exchange opens to one
// peer at a time, so nodes with equal settings never refuse each other.
func WithStreamLimits(perPeer, total int) Option {
	return func(c *config) error { c.streamsPerPeer, c.streamsTotal = perPeer, total; return nil }
}

// Exchange serves blocks from a Blockstore to peers over ProtocolID and
// fetches blocks and DAGs from peers into it. It is safe for concurrent use.
type Exchange struct {
	h   host.Host
	bs  Blockstore
	cfg config // immutable after New
	log *slog.Logger

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup // server streams and running fetches

	// mu guards closed and the server's accounting.
	mu      sync.Mutex
	closed  bool
	active  int
	perPeer map[peer.ID]int
	streams map[network.Stream]struct{}

	// cmu guards outbound, the client's per-peer stream semaphores, and
	// failed, when each peer last went down in a session (not for being
	// busy): later sessions ask it last for failedMemory, so a walk of
	// many small fetches does not wait on a dead peer once per fetch.
	cmu      sync.Mutex
	outbound map[peer.ID]*peerSem
	failed   map[peer.ID]time.Time
}

// failedMemory is how long a peer that went down in one session is asked
// last by the next ones (it stays a candidate: it may be the only source).
const failedMemory = 30 * time.Second

func (e *Exchange) noteFailed(p peer.ID) {
	e.cmu.Lock()
	defer e.cmu.Unlock()
	if e.failed == nil {
		e.failed = make(map[peer.ID]time.Time)
	}
	now := time.Now()
	e.failed[p] = now
	for q, t := range e.failed { // bounded by the peers that failed lately
		if now.Sub(t) > failedMemory {
			delete(e.failed, q)
		}
	}
}

// failedLately reports whether p went down in a session within failedMemory.
func (e *Exchange) failedLately(p peer.ID) bool {
	e.cmu.Lock()
	defer e.cmu.Unlock()
	t, ok := e.failed[p]
	return ok && time.Since(t) <= failedMemory
}

type peerSem struct {
	ch   chan struct{}
	refs int
}

// New creates an Exchange on h over bs and registers the ProtocolID stream
// handler on h, so h starts serving bs's blocks to every peer that asks.
//
// Errors: ErrBadArgument (nil host or store, invalid option).
func New(h host.Host, bs Blockstore, opts ...Option) (*Exchange, error) {
	if h == nil || bs == nil {
		return nil, fmt.Errorf("%w: New needs a host and a block store", ErrBadArgument)
	}
	var cfg config
	for _, o := range append([]Option{defaults}, opts...) {
		if o == nil {
			return nil, fmt.Errorf("%w: nil Option", ErrBadArgument)
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	e := &Exchange{
		h: h, bs: bs, cfg: cfg, log: cfg.log.With("component", "exchange"),
		ctx: ctx, cancel: cancel,
		perPeer:  make(map[peer.ID]int),
		streams:  make(map[network.Stream]struct{}),
		outbound: make(map[peer.ID]*peerSem),
	}
	h.SetStreamHandler(ProtocolID, e.serve)
	return e, nil
}

// Close stops serving (removes the stream handler and resets the streams
// being served), cancels running fetches (they return ErrClosed) and waits
// for every goroutine of the Exchange to end. It does not close the host or
// the block store. Idempotent.
func (e *Exchange) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	streams := make([]network.Stream, 0, len(e.streams))
	for s := range e.streams {
		streams = append(streams, s)
	}
	e.mu.Unlock()
	e.h.RemoveStreamHandler(ProtocolID)
	e.cancel()
	for _, s := range streams {
		s.ResetWithError(network.StreamShutdown)
	}
	e.wg.Wait()
	return nil
}

// enter registers a fetch; the caller must call e.wg.Done when it ends.
func (e *Exchange) enter() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	e.wg.Add(1)
	return nil
}

// ---- server ----

// admit applies the stream limits. On success the stream is registered (so
// Close can reset it) and counted in e.wg.
func (e *Exchange) admit(s network.Stream, p peer.ID) (network.StreamErrorCode, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return network.StreamShutdown, false
	case e.active >= e.cfg.streamsTotal, e.perPeer[p] >= e.cfg.streamsPerPeer:
		return network.StreamResourceLimitExceeded, false
	}
	e.active++
	e.perPeer[p]++
	e.streams[s] = struct{}{}
	e.wg.Add(1)
	return 0, true
}

// unslot releases the stream's place in the limits; the caller still owes
// e.wg.Done.
func (e *Exchange) unslot(s network.Stream, p peer.ID) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.active--
	if e.perPeer[p]--; e.perPeer[p] == 0 {
		delete(e.perPeer, p)
	}
	delete(e.streams, s)
}

// serve answers requests on one inbound stream until the client closes its
// side, stays idle longer than Timeouts.Idle, or breaks the protocol (then
// the stream is reset with StreamProtocolViolation).
func (e *Exchange) serve(s network.Stream) {
	p := s.Conn().RemotePeer()
	if code, ok := e.admit(s, p); !ok {
		e.log.Debug("refusing block stream", "peer", p, "code", code)
		s.ResetWithError(code)
		return
	}
	slotted := true
	defer func() {
		if slotted {
			e.unslot(s, p)
		}
		e.wg.Done()
	}()
	idle := e.cfg.timeouts.Idle
	br := bufio.NewReaderSize(s, 4<<10)
	bw := bufio.NewWriterSize(s, 32<<10)
	for {
		s.SetReadDeadline(time.Now().Add(idle))
		req, err := readRequest(br)
		if err == io.EOF {
			// Free the slot BEFORE the client can see our close: a client
			// that waits for it may open its next stream at once.
			e.unslot(s, p)
			slotted = false
			s.Close()
			return
		}
		if err != nil {
			if errors.Is(err, errMalformed) || errors.Is(err, io.ErrUnexpectedEOF) {
				e.log.Debug("bad block request; resetting stream", "peer", p, "err", err)
				s.ResetWithError(network.StreamProtocolViolation)
			} else {
				// Idle timeout, reset by the client, Close: nothing to report.
				s.Reset()
			}
			return
		}
		if !e.answer(s, bw, req, p) {
			s.Reset()
			return
		}
		s.SetWriteDeadline(time.Now().Add(idle))
		if err := bw.Flush(); err != nil {
			s.Reset()
			return
		}
	}
}

// answer writes the responses to one request. A loader goroutine reads the
// blocks from the store one ahead of the writes, so disk reads and hashing
// overlap with sending.
func (e *Exchange) answer(s network.Stream, bw *bufio.Writer, req []cid.Cid, p peer.ID) bool {
	type loaded struct {
		data []byte
		ok   bool
	}
	next := make(chan loaded, 1)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	wg.Go(func() {
		for _, c := range req {
			data, ok := e.local(c, p)
			select {
			case next <- loaded{data, ok}:
			case <-stop:
				return
			}
		}
	})
	idle := e.cfg.timeouts.Idle
	for range req {
		l := <-next
		s.SetWriteDeadline(time.Now().Add(idle))
		var err error
		if l.ok {
			err = writeBlock(bw, l.data)
		} else {
			err = writeDontHave(bw)
		}
		if err != nil {
			return false
		}
	}
	return true
}

// local returns a block this node can serve. A block that is present but
// cannot be read intact is not served (Get re-hashes it) and is logged: the
// store needs repair.
func (e *Exchange) local(c cid.Cid, p peer.ID) ([]byte, bool) {
	has, err := e.bs.Has(c)
	if err != nil || !has {
		return nil, false
	}
	data, err := e.bs.Get(c)
	if err != nil {
		e.log.Warn("cannot serve a stored block", "cid", c, "peer", p, "err", err)
		return nil, false
	}
	if len(data) > MaxBlockSize {
		return nil, false
	}
	return data, true
}

// ---- client-side stream semaphore ----

// acquireStream waits for one of the streamsPerPeer outbound slots for p.
func (e *Exchange) acquireStream(ctx context.Context, p peer.ID) (release func(), err error) {
	e.cmu.Lock()
	ps := e.outbound[p]
	if ps == nil {
		ps = &peerSem{ch: make(chan struct{}, e.cfg.streamsPerPeer)}
		e.outbound[p] = ps
	}
	ps.refs++
	e.cmu.Unlock()
	unref := func() {
		e.cmu.Lock()
		if ps.refs--; ps.refs == 0 {
			delete(e.outbound, p)
		}
		e.cmu.Unlock()
	}
	select {
	case ps.ch <- struct{}{}:
		return func() { <-ps.ch; unref() }, nil
	case <-ctx.Done():
		unref()
		return nil, ctx.Err()
	}
}

// openStream connects to p (bounded by Timeouts.Connect) and opens a block stream.
func (e *Exchange) openStream(ctx context.Context, p peer.AddrInfo) (network.Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.timeouts.Connect)
	defer cancel()
	if err := e.h.Connect(ctx, p); err != nil {
		return nil, err
	}
	return e.h.NewStream(ctx, p.ID, ProtocolID)
}
