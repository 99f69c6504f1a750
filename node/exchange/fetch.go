package exchange

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	// providerLookups is how many FindProviders calls one fetch runs at once.
	providerLookups = 4
	// providersPerLookup is the max passed to FindProviders.
	providersPerLookup = 8
	// A peer that refuses a stream at its stream limit is busy, not broken:
	// it is asked again after busyBackoff, doubling, up to busyRetries times.
	busyBackoff = 50 * time.Millisecond
	busyRetries = 5
	storers     = 4
)

// FetchOptions configures FetchDAG.
type FetchOptions struct {
	// From lists peers to ask first. Blocks none of them delivers are looked
	// up with the Providers given to New, if any.
	From []peer.AddrInfo
	// MaxBlocks caps the number of distinct blocks in the DAG, present or
	// not (0: DefaultMaxBlocks). A larger DAG fails with ErrTooLarge.
	MaxBlocks int
	// MaxBytes caps the bytes received in this fetch (0: no cap beyond
	// MaxBlocks × MaxBlockSize). A block that would exceed it is not stored,
	// and the fetch fails with ErrTooLarge.
	MaxBytes int64
	// Progress, if set, is called after every block that is found in the
	// store or received: done blocks out of known blocks (known grows as the
	// DAG is discovered), bytes received so far. It runs on the fetch's own
	// goroutine: keep it short.
	Progress func(done, known int, bytes int64)
}

// FetchStats reports what a FetchDAG did (also on error, up to the error).
type FetchStats struct {
	Blocks   int             // distinct blocks known in the DAG
	Present  int             // blocks that were already in the store
	Fetched  int             // blocks received, verified and stored
	Bytes    int64           // bytes of the fetched blocks
	Peers    map[peer.ID]int // blocks received per peer
	BadPeers []peer.ID       // peers that sent wrong, oversized or malformed data
	Elapsed  time.Duration
}

// Fetch returns block c. A block already in the store is read from it
// (verified by Get); otherwise it is requested from the peers in from, then
// from the Providers set with WithProviders, verified against c, stored with
// PutBlock and returned.
//
// Errors: ErrNotFound (no peer delivered it; the message names c and what
// each peer did, and also wraps ErrBadPeer / ErrTooLarge if a peer lied),
// ErrBadArgument, ErrClosed, the context's error, errors from the store.
func (e *Exchange) Fetch(ctx context.Context, c cid.Cid, from ...peer.AddrInfo) ([]byte, error) {
	if !c.Defined() {
		return nil, fmt.Errorf("%w: Fetch of an undefined CID", ErrBadArgument)
	}
	if err := e.enter(); err != nil {
		return nil, err
	}
	defer e.wg.Done()
	if has, err := e.bs.Has(c); err != nil {
		return nil, fmt.Errorf("exchange: checking the store for %s: %w", c, err)
	} else if has {
		return e.bs.Get(c)
	}
	s, err := e.newSession(ctx, c, false, FetchOptions{From: from, MaxBlocks: 1})
	if err != nil {
		return nil, err
	}
	if err := s.run(); err != nil {
		return nil, err
	}
	if s.rootData == nil {
		// Stored by someone else (a push, another fetch) between the Has
		// above and the session's own look: nothing was fetched, so read
		// it here. (Returning nil handed callers an empty block: a custody
		// member's lineage walk failed on "empty input" after a restart.)
		return e.bs.Get(c)
	}
	return s.rootData, nil
}

// FetchDAG fetches every block reachable from root that is not in the store
// yet, breadth first, with up to WithMaxInFlight blocks requested at once,
// spread over the peers that have them and batched per peer.
//
// Blocks already in the store are not fetched again, but their links are
// still followed: holding a block says nothing about holding its children
// (an interrupted fetch leaves exactly that). A present DAG-CBOR block is
// read from the store to learn its links; a present raw block has none and
// completes its branch. So FetchDAG on a complete DAG sends nothing over
// the network and costs one local read per DAG-CBOR block.
//
// Every received block is re-hashed against its CID before it is stored; a
// peer whose block does not match is a bad peer for the rest of this fetch
// (logged with its peer ID and the CID), and the block is requested from
// another provider. A peer that times out or fails is likewise dropped.
//
// Errors: ErrNotFound (a block nobody delivered; names it), ErrTooLarge
// (MaxBlocks, MaxBytes), ErrBadArgument, ErrClosed, the context's error,
// errors from the store and from WithLinks' function (a block that hashes
// correctly but does not decode).
func (e *Exchange) FetchDAG(ctx context.Context, root cid.Cid, opts FetchOptions) (FetchStats, error) {
	if !root.Defined() {
		return FetchStats{}, fmt.Errorf("%w: FetchDAG of an undefined CID", ErrBadArgument)
	}
	if err := e.enter(); err != nil {
		return FetchStats{}, err
	}
	defer e.wg.Done()
	s, err := e.newSession(ctx, root, true, opts)
	if err != nil {
		return FetchStats{}, err
	}
	err = s.run()
	s.stats.Blocks = len(s.seen)
	s.stats.Elapsed = time.Since(s.start)
	return s.stats, err
}

// ---- session: the state of one fetch, owned by its run loop ----

type eventKind int

const (
	evBlock     eventKind = iota // c arrived from peer, verified and stored
	evDontHave                   // peer does not have c
	evPeerDown                   // peer failed (err; bad: it lied)
	evFatal                      // the fetch cannot go on (err)
	evProviders                  // FindProviders(c) answered (infos, err)
)

type event struct {
	kind  eventKind
	peer  peer.ID
	c     cid.Cid
	data  []byte
	links []cid.Cid
	err   error
	bad   bool
	busy  bool
	w     *peerWorker // evPeerDown: the worker that failed
	infos []peer.AddrInfo
}

type wantState int

const (
	wantPending  wantState = iota // in s.pending
	wantAssigned                  // requested from a peer
	wantLookup                    // waiting for FindProviders
)

type want struct {
	state  wantState
	tried  map[peer.ID]bool // peers that did not deliver it
	why    []error          // what each of them did
	looked bool             // FindProviders was asked for it
	peer   *peerState       // when assigned
}

type peerState struct {
	info     peer.AddrInfo
	inflight int
	down     error // non-nil: not asked again in this fetch
	w        *peerWorker
	busy     int       // busy refusals so far
	until    time.Time // busy: not asked before then
}

type session struct {
	e         *Exchange
	ctx       context.Context // cancelled when the fetch fails or the Exchange closes
	cancel    context.CancelFunc
	done      chan struct{} // closed when run returns; senders give up
	events    chan event
	jobs      chan storeJob // verified blocks for the storers
	wg        sync.WaitGroup
	root      cid.Cid
	walk      bool
	maxBlocks int
	maxBytes  int64
	progress  func(done, known int, bytes int64)
	start     time.Time
	received  atomic.Int64 // bytes reserved by readers against maxBytes

	// Owned by run.
	peers    map[peer.ID]*peerState
	order    []*peerState // From first, then as discovered
	seen     map[cid.Cid]struct{}
	check    []cid.Cid // discovered, not yet looked up in the store
	pending  []cid.Cid // missing, waiting for a peer
	wants    map[cid.Cid]*want
	inflight int
	lookupQ  []cid.Cid
	lookups  int
	rootData []byte
	stats    FetchStats
}

func (e *Exchange) newSession(ctx context.Context, root cid.Cid, walk bool, o FetchOptions) (*session, error) {
	if o.MaxBlocks < 0 || o.MaxBytes < 0 {
		return nil, fmt.Errorf("%w: MaxBlocks %d and MaxBytes %d must not be negative", ErrBadArgument, o.MaxBlocks, o.MaxBytes)
	}
	if o.MaxBlocks == 0 {
		o.MaxBlocks = DefaultMaxBlocks
	}
	sctx, cancel := context.WithCancel(ctx)
	s := &session{
		e: e, ctx: sctx, cancel: cancel,
		done:   make(chan struct{}),
		events: make(chan event, e.cfg.maxInFlight),
		jobs:   make(chan storeJob, e.cfg.maxInFlight),
		root:   root, walk: walk,
		maxBlocks: o.MaxBlocks, maxBytes: o.MaxBytes, progress: o.Progress,
		start: time.Now(),
		peers: make(map[peer.ID]*peerState),
		seen:  make(map[cid.Cid]struct{}),
		wants: make(map[cid.Cid]*want),
		stats: FetchStats{Peers: make(map[peer.ID]int)},
	}
	var later []peer.AddrInfo // failed lately: asked after the others
	for i, ai := range o.From {
		if ai.ID == "" {
			cancel()
			return nil, fmt.Errorf("%w: From[%d] has no peer ID", ErrBadArgument, i)
		}
		if e.failedLately(ai.ID) {
			later = append(later, ai)
			continue
		}
		s.addPeer(ai)
	}
	for _, ai := range later {
		s.addPeer(ai)
	}
	return s, nil
}

func (s *session) addPeer(ai peer.AddrInfo) bool {
	if ai.ID == "" || ai.ID == s.e.h.ID() {
		return false
	}
	if ps := s.peers[ai.ID]; ps != nil {
		if ps.w == nil {
			// Clip: a worker that is still shutting down may hold the old slice.
			ps.info.Addrs = append(slices.Clip(ps.info.Addrs), ai.Addrs...)
		}
		return false
	}
	ps := &peerState{info: ai}
	s.peers[ai.ID] = ps
	s.order = append(s.order, ps)
	return true
}

// run drives the fetch until every block is stored or one cannot be.
func (s *session) run() (err error) {
	stopOnClose := context.AfterFunc(s.e.ctx, s.cancel)
	defer func() {
		stopOnClose()
		close(s.done)
		if err == nil {
			// Close the streams cleanly (nothing is outstanding on them)
			// before cancelling, which would reset them.
			for _, ps := range s.order {
				if ps.w != nil {
					ps.w.finish()
				}
			}
			s.wg.Wait()
		}
		s.cancel()
		s.wg.Wait()
	}()
	for range min(storers, s.e.cfg.maxInFlight) {
		s.wg.Go(s.storer)
	}
	wake := time.NewTimer(time.Hour)
	defer wake.Stop()
	if err := s.discover(s.root); err != nil {
		return err
	}
	for {
		if err := s.checkLocal(); err != nil {
			return err
		}
		if err := s.dispatch(); err != nil {
			return err
		}
		if len(s.check) == 0 && len(s.pending) == 0 && s.inflight == 0 && s.lookups == 0 && len(s.lookupQ) == 0 {
			return nil
		}
		var wakeC <-chan time.Time
		if t, ok := s.nextWake(); ok {
			wake.Reset(time.Until(t))
			wakeC = wake.C
		}
		select {
		case <-s.ctx.Done():
			return s.ctxErr()
		case <-wakeC:
		case ev := <-s.events:
			if err := s.handle(ev); err != nil {
				return err
			}
		}
	}
}

func (s *session) ctxErr() error {
	if s.e.ctx.Err() != nil {
		return ErrClosed
	}
	return fmt.Errorf("exchange: fetching %s: %w", s.root, s.ctx.Err())
}

// send delivers an event to run unless the fetch is over.
func (s *session) send(ev event) {
	select {
	case s.events <- ev:
	case <-s.done:
	}
}

func (s *session) discover(c cid.Cid) error {
	if _, ok := s.seen[c]; ok {
		return nil
	}
	if len(s.seen) >= s.maxBlocks {
		return fmt.Errorf("%w: the DAG under %s has more than %d blocks (FetchOptions.MaxBlocks)", ErrTooLarge, s.root, s.maxBlocks)
	}
	s.seen[c] = struct{}{}
	s.check = append(s.check, c)
	return nil
}

// checkLocal looks up discovered blocks in the store: missing ones become
// wants, present DAG-CBOR ones are read for their links.
func (s *session) checkLocal() error {
	for i := 0; len(s.check) > 0; i++ {
		if i%256 == 255 && s.ctx.Err() != nil {
			return s.ctxErr()
		}
		c := s.check[0]
		s.check = s.check[1:]
		has, err := s.e.bs.Has(c)
		if err != nil {
			return fmt.Errorf("exchange: checking the store for %s: %w", c, err)
		}
		if !has {
			s.wants[c] = &want{state: wantPending, tried: make(map[peer.ID]bool)}
			s.pending = append(s.pending, c)
			continue
		}
		s.stats.Present++
		if s.walk && c.Type() != cid.Raw {
			data, err := s.e.bs.Get(c)
			if err != nil {
				return fmt.Errorf("exchange: reading stored block %s to follow its links: %w", c, err)
			}
			links, err := s.e.cfg.links(c, data)
			if err != nil {
				return fmt.Errorf("exchange: links of stored block %s: %w", c, err)
			}
			for _, l := range links {
				if err := s.discover(l); err != nil {
					return err
				}
			}
		}
		s.report()
	}
	return nil
}

func (s *session) report() {
	if s.progress != nil {
		s.progress(s.stats.Present+s.stats.Fetched, len(s.seen), s.stats.Bytes)
	}
}

// pick returns the usable peer that has not failed c with the fewest blocks
// in flight (ties: the earliest known, so From peers go first). wait
// reports that a busy peer could take c later.
func (s *session) pick(w *want, now time.Time) (best *peerState, wait bool) {
	for _, ps := range s.order {
		if ps.down != nil || w.tried[ps.info.ID] {
			continue
		}
		if now.Before(ps.until) {
			wait = true
			continue
		}
		if best == nil || ps.inflight < best.inflight {
			best = ps
		}
	}
	return best, wait
}

// nextWake returns when the earliest busy peer may be asked again, if some
// block waits for one.
func (s *session) nextWake() (time.Time, bool) {
	var t time.Time
	if len(s.pending) == 0 {
		return t, false
	}
	now := time.Now()
	for _, ps := range s.order {
		if ps.down == nil && ps.until.After(now) && (t.IsZero() || ps.until.Before(t)) {
			t = ps.until
		}
	}
	return t, !t.IsZero()
}

// dispatch assigns pending blocks to peers up to the in-flight limit and
// sends each peer its share as one batch.
func (s *session) dispatch() error {
	var (
		batches  map[*peerState][]cid.Cid
		deferred []cid.Cid // waiting for a busy peer
		now      = time.Now()
	)
	for len(s.pending) > 0 && s.inflight < s.e.cfg.maxInFlight {
		c := s.pending[0]
		s.pending = s.pending[1:]
		w := s.wants[c]
		ps, wait := s.pick(w, now)
		if ps == nil && wait {
			deferred = append(deferred, c)
			continue
		}
		if ps == nil {
			if s.e.cfg.providers != nil && !w.looked {
				w.looked, w.state = true, wantLookup
				s.lookupQ = append(s.lookupQ, c)
				continue
			}
			return s.notFound(c, w)
		}
		w.state, w.peer = wantAssigned, ps
		ps.inflight++
		s.inflight++
		if batches == nil {
			batches = make(map[*peerState][]cid.Cid)
		}
		batches[ps] = append(batches[ps], c)
	}
	if len(deferred) > 0 {
		s.pending = append(deferred, s.pending...)
	}
	for ps, b := range batches {
		if ps.w == nil {
			ps.w = s.startWorker(ps.info)
		}
		ps.w.enqueue(b)
	}
	for s.lookups < providerLookups && len(s.lookupQ) > 0 {
		c := s.lookupQ[0]
		s.lookupQ = s.lookupQ[1:]
		s.lookups++
		s.wg.Go(func() {
			infos, err := s.e.cfg.providers.FindProviders(s.ctx, c, providersPerLookup)
			s.send(event{kind: evProviders, c: c, infos: infos, err: err})
		})
	}
	return nil
}

func (s *session) notFound(c cid.Cid, w *want) error {
	if len(w.why) == 0 {
		return fmt.Errorf("%w: block %s: no provider known (pass peers to ask, or configure WithProviders)", ErrNotFound, c)
	}
	return fmt.Errorf("%w: block %s: no provider delivered it: %w", ErrNotFound, c, joinErrs(w.why))
}

// unassign takes c back from the peer it was requested from.
func (s *session) unassign(c cid.Cid, ev event) (*want, bool) {
	w := s.wants[c]
	if w == nil || w.state != wantAssigned || w.peer.info.ID != ev.peer {
		return nil, false // a late answer from a peer already given up on
	}
	w.peer.inflight--
	s.inflight--
	w.peer = nil
	return w, true
}

func (s *session) handle(ev event) error {
	switch ev.kind {
	case evFatal:
		return ev.err
	case evBlock:
		if _, ok := s.unassign(ev.c, ev); !ok {
			return nil
		}
		delete(s.wants, ev.c)
		s.stats.Fetched++
		s.stats.Bytes += int64(len(ev.data))
		s.stats.Peers[ev.peer]++
		if ev.c == s.root && !s.walk {
			s.rootData = ev.data
		}
		for _, l := range ev.links {
			if err := s.discover(l); err != nil {
				return err
			}
		}
		s.report()
	case evDontHave:
		w, ok := s.unassign(ev.c, ev)
		if !ok {
			return nil
		}
		w.tried[ev.peer] = true
		w.why = append(w.why, fmt.Errorf("peer %s does not have it", ev.peer))
		w.state = wantPending
		s.pending = append(s.pending, ev.c)
	case evPeerDown:
		ps := s.peers[ev.peer]
		if ps == nil || ps.down != nil || ps.w != ev.w {
			return nil
		}
		busy := ev.busy && ps.busy < busyRetries
		if busy {
			// Ask again later on a new stream; the blocks keep this peer
			// as a candidate.
			ps.w = nil
			ps.until = time.Now().Add(busyBackoff << ps.busy)
			ps.busy++
		} else {
			ps.down = ev.err
			s.e.noteFailed(ev.peer)
		}
		if ev.bad {
			s.stats.BadPeers = append(s.stats.BadPeers, ev.peer)
		}
		for c, w := range s.wants {
			if w.state == wantAssigned && w.peer == ps {
				s.unassign(c, ev)
				if !busy {
					w.tried[ev.peer] = true
					w.why = append(w.why, ev.err)
				}
				w.state = wantPending
				s.pending = append(s.pending, c)
			}
		}
	case evProviders:
		s.lookups--
		w := s.wants[ev.c]
		if w == nil || w.state != wantLookup {
			return nil
		}
		added := 0
		for _, ai := range ev.infos {
			if s.addPeer(ai) {
				added++
			}
		}
		switch {
		case ev.err != nil && s.ctx.Err() == nil:
			s.e.log.Debug("provider lookup failed", "cid", ev.c, "err", ev.err)
			w.why = append(w.why, fmt.Errorf("provider lookup failed: %w", ev.err))
		case added == 0:
			w.why = append(w.why, errors.New("provider lookup found no other peer"))
		}
		w.state = wantPending
		s.pending = append(s.pending, ev.c)
	}
	return nil
}

// joinErrs is errors.Join on one line, so log lines and CLI messages stay readable.
type joinedErrs []error

func joinErrs(errs []error) error { return joinedErrs(append([]error(nil), errs...)) }

func (j joinedErrs) Error() string {
	parts := make([]string, len(j))
	for i, e := range j {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "; ")
}

func (j joinedErrs) Unwrap() []error { return j }

// storeJob is a received block that hashed to its CID.
type storeJob struct {
	peer peer.ID
	c    cid.Cid
	data []byte
}

// storer stores verified blocks and learns their links until the fetch ends.
func (s *session) storer() {
	for {
		select {
		case j := <-s.jobs:
			ev, err := s.store(j)
			if err != nil {
				ev = event{kind: evFatal, err: err}
			}
			s.send(ev)
		case <-s.done:
			return
		}
	}
}

func (s *session) store(j storeJob) (event, error) {
	ev := event{kind: evBlock, peer: j.peer, c: j.c, data: j.data}
	if s.maxBytes > 0 && s.received.Add(int64(len(j.data))) > s.maxBytes {
		return ev, fmt.Errorf("%w: fetching %s: more than %d bytes (FetchOptions.MaxBytes); block %s not stored", ErrTooLarge, s.root, s.maxBytes, j.c)
	}
	if s.walk {
		links, err := s.e.cfg.links(j.c, j.data)
		if err != nil {
			return ev, fmt.Errorf("exchange: links of block %s: %w", j.c, err)
		}
		ev.links = links
	}
	if err := s.e.bs.PutBlock(j.c, j.data); err != nil {
		return ev, fmt.Errorf("exchange: storing block %s: %w", j.c, err)
	}
	return ev, nil
}
