package exchange

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// peerWorker talks to one peer for one fetch. Its writer goroutine (run)
// opens a stream when there is work, sends each batch as requests without
// waiting for earlier answers (pipelining), and closes the stream after
// Idle/2 without outstanding requests, so the server's idle timeout never
// cuts a stream we still count on. Its reader goroutine reads the answers
// in request order, verifies and stores each block, and reports to run.
type peerWorker struct {
	s    *session
	info peer.AddrInfo

	mu      sync.Mutex
	queue   []cid.Cid // CIDs to request, in order
	closing bool      // finish was called
	notify  chan struct{}

	outstanding atomic.Int64  // CIDs requested, not yet answered
	failOnce    sync.Once     // the first failure reports; later ones are echoes
	dead        chan struct{} // closed by fail
}

func (s *session) startWorker(info peer.AddrInfo) *peerWorker {
	w := &peerWorker{s: s, info: info, notify: make(chan struct{}, 1), dead: make(chan struct{})}
	s.wg.Go(w.run)
	return w
}

func (w *peerWorker) enqueue(cs []cid.Cid) {
	w.mu.Lock()
	w.queue = append(w.queue, cs...)
	w.mu.Unlock()
	w.wake()
}

// finish asks the worker to close its stream cleanly and exit once its
// queue is sent and answered.
func (w *peerWorker) finish() {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	w.wake()
}

func (w *peerWorker) wake() {
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

type failKind int

const (
	failTransport failKind = iota // unreachable, timed out, reset
	failBad                       // lied or broke the protocol
	failBusy                      // refused our stream at its stream limit
)

// fail reports the peer down (once) and stops the worker.
func (w *peerWorker) fail(err error, kind failKind) {
	w.failOnce.Do(func() {
		close(w.dead)
		switch {
		case kind == failBad:
			w.s.e.log.Warn("bad block peer", "peer", w.info.ID, "err", err)
		case w.s.ctx.Err() == nil:
			w.s.e.log.Debug("block peer failed", "peer", w.info.ID, "err", err)
		}
		w.s.send(event{kind: evPeerDown, peer: w.info.ID, err: err, bad: kind == failBad, busy: kind == failBusy, w: w})
	})
}

// take waits for work. With an open stream (hasConn) and nothing
// outstanding for Idle/2, it returns idle instead.
func (w *peerWorker) take(hasConn bool) (cs []cid.Cid, closing, idle bool, err error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		w.mu.Lock()
		cs, closing = w.queue, w.closing
		w.queue = nil
		w.mu.Unlock()
		if len(cs) > 0 || closing {
			return cs, closing, false, nil
		}
		var idleC <-chan time.Time
		if hasConn && w.outstanding.Load() == 0 {
			if timer == nil {
				timer = time.NewTimer(w.s.e.cfg.timeouts.Idle / 2)
			}
			idleC = timer.C
		}
		select {
		case <-w.notify:
		case <-idleC:
			return nil, false, true, nil
		case <-w.dead:
			return nil, false, false, errors.New("peer failed")
		case <-w.s.ctx.Done():
			return nil, false, false, w.s.ctx.Err()
		}
	}
}

// conn is one open stream with its reader goroutine.
type conn struct {
	st         network.Stream
	sent       chan []cid.Cid // requests written, for the reader
	readerDone chan struct{}
	release    func()
	stopReset  func() bool
	buf        []byte
	br         *bufio.Reader
	failed     atomic.Bool // the reader stopped on an error
	answered   bool        // the reader got an answer (reader only)
}

func (w *peerWorker) run() {
	var c *conn
	defer func() {
		if c != nil {
			w.closeConn(c, false)
		}
	}()
	for {
		cs, closing, idle, err := w.take(c != nil)
		if err != nil {
			// Cancelled or failed: the deferred close resets the stream.
			return
		}
		if idle {
			w.closeConn(c, true)
			c = nil
			continue
		}
		for len(cs) > 0 {
			if c == nil {
				if c, err = w.openConn(); err != nil {
					w.fail(err, failTransport)
					return
				}
			}
			n := min(len(cs), MaxRequestCIDs)
			if err := w.write(c, cs[:n]); err != nil {
				w.fail(fmt.Errorf("peer %s: sending a request: %w", w.info.ID, describeIO(err, w.s.e.cfg.timeouts.Idle)), failTransport)
				return
			}
			cs = cs[n:]
		}
		if closing {
			if c != nil {
				w.closeConn(c, true)
				c = nil
			}
			return
		}
	}
}

func (w *peerWorker) openConn() (*conn, error) {
	release, err := w.s.e.acquireStream(w.s.ctx, w.info.ID)
	if err != nil {
		return nil, err
	}
	st, err := w.s.e.openStream(w.s.ctx, w.info)
	if err != nil {
		release()
		return nil, fmt.Errorf("peer %s: cannot open a block stream: %w", w.info.ID, err)
	}
	c := &conn{
		st:         st,
		sent:       make(chan []cid.Cid, w.s.e.cfg.maxInFlight),
		readerDone: make(chan struct{}),
		release:    release,
		// Unblocks reads and writes at once when the fetch is cancelled.
		stopReset: context.AfterFunc(w.s.ctx, func() { st.Reset() }),
		br:        bufio.NewReaderSize(st, 64<<10),
	}
	w.s.wg.Go(func() {
		defer close(c.readerDone)
		w.read(c)
	})
	return c, nil
}

// closeConn closes c: gracefully (the server sees EOF between requests) or
// by reset. Either way it waits for c's reader.
func (w *peerWorker) closeConn(c *conn, graceful bool) {
	if !graceful {
		c.stopReset()
		c.st.Reset()
		close(c.sent)
		<-c.readerDone
		c.release()
		return
	}
	c.st.CloseWrite()
	close(c.sent)
	<-c.readerDone
	if !c.stopReset() || c.failed.Load() {
		// Reset meanwhile (cancelled fetch or failed reader).
		c.st.Reset()
		c.release()
		return
	}
	// Keep our stream slot until the server closes its side too: it frees
	// its own slot first, so our next stream to this peer is never refused
	// for a stream the server still counts. This wait is off the fetch's
	// path, bounded by Idle and ended by Close.
	e := w.s.e
	e.wg.Go(func() {
		defer c.release()
		stop := context.AfterFunc(e.ctx, func() { c.st.Reset() })
		defer stop()
		c.st.SetReadDeadline(time.Now().Add(e.cfg.timeouts.Idle))
		if n, err := c.br.Read(make([]byte, 1)); n > 0 || err != io.EOF {
			c.st.Reset()
			return
		}
		c.st.Close()
	})
}

func (w *peerWorker) write(c *conn, cs []cid.Cid) error {
	var err error
	if c.buf, err = appendRequest(c.buf[:0], cs); err != nil {
		return err
	}
	// Count and queue before writing, so the reader never sees an answer
	// it does not expect.
	w.outstanding.Add(int64(len(cs)))
	select {
	case c.sent <- cs:
	default:
		// Cannot happen: at most maxInFlight CIDs are outstanding.
		return errors.New("internal error: request queue full")
	}
	c.st.SetWriteDeadline(time.Now().Add(w.s.e.cfg.timeouts.Idle))
	_, err = c.st.Write(c.buf)
	return err
}

// read reads the answers to the requests in c.sent, in order, until c.sent
// is closed or something fails.
func (w *peerWorker) read(c *conn) {
	s := w.s
	br := c.br
	idle := s.e.cfg.timeouts.Idle
	for req := range c.sent {
		for _, k := range req {
			c.st.SetReadDeadline(time.Now().Add(idle))
			data, have, err := readResponse(br, MaxBlockSize)
			if err != nil {
				kind := failTransport
				var se *network.StreamError
				switch {
				case errors.Is(err, ErrTooLarge) || errors.Is(err, errMalformed):
					kind = failBad
					err = fmt.Errorf("%w: peer %s answering for block %s: %w", ErrBadPeer, w.info.ID, k, err)
				case !c.answered && errors.As(err, &se) && se.Remote && se.ErrorCode == network.StreamResourceLimitExceeded:
					kind = failBusy
					err = fmt.Errorf("peer %s is busy (it refused a stream at its stream limit): %w", w.info.ID, err)
				default:
					err = fmt.Errorf("peer %s: waiting for block %s: %w", w.info.ID, k, describeIO(err, idle))
				}
				c.failed.Store(true)
				c.st.ResetWithError(network.StreamProtocolViolation)
				w.fail(err, kind)
				return
			}
			c.answered = true
			if w.outstanding.Add(-1) == 0 {
				w.wake() // the writer may now close the stream when idle
			}
			if !have {
				s.send(event{kind: evDontHave, peer: w.info.ID, c: k})
				continue
			}
			if err := verify(k, data); err != nil {
				c.failed.Store(true)
				c.st.ResetWithError(network.StreamProtocolViolation)
				w.fail(fmt.Errorf("%w: peer %s sent %d bytes for block %s that %w", ErrBadPeer, w.info.ID, len(data), k, err), failBad)
				return
			}
			// Hand the verified block to the storers and read on: storing
			// costs more than receiving, and overlaps with it this way.
			select {
			case s.jobs <- storeJob{peer: w.info.ID, c: k, data: data}:
			case <-s.done:
				return
			}
		}
	}
}

// verify re-hashes data with c's own hash function and compares.
func verify(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("cannot be hashed as %s asks: %w", c, err)
	}
	if !got.Equals(c) {
		return fmt.Errorf("hash to %s", got)
	}
	return nil
}

// describeIO names a timeout as such: the raw yamux/QUIC errors do not say
// which deadline expired.
func describeIO(err error, idle time.Duration) error {
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return fmt.Errorf("no progress within %v (Timeouts.Idle): %w", idle, err)
	}
	return err
}
