// Package batchwriter coalesces many small writes (log lines) into few
// writes of the underlying writer, without delaying any of them.
//
// A daemon logging one line per agent tick made one write(2) per line: at
// 1,000 agents a node that was 1,000 system calls a second and 4 % of its
// CPU. A Writer appends each line to a buffer and wakes one goroutine,
// which writes everything that has gathered in one call. Nothing waits for
// a timer: a lone line is written as soon as the goroutine runs, and lines
// that arrive together (a node's agents tick on a shared grid) leave in one
// write. A line is lost only if the process dies in the moment between its
// Write and the flush.
package batchwriter

import (
	"io"
	"sync"
)

// MaxPending bounds the bytes waiting for the flusher: a Write that would
// exceed it waits until the flusher has taken the buffer (backpressure, no
// loss, no unbounded memory when the underlying writer is slow).
const MaxPending = 1 << 20

// Writer is an io.Writer that hands its bytes to one flushing goroutine.
// Write order is kept. Close flushes and stops; writes after Close go
// straight to the underlying writer.
type Writer struct {
	w io.Writer

	mu      sync.Mutex
	cond    *sync.Cond // signalled when the flusher takes the buffer
	buf     []byte
	closed  bool
	flushed chan struct{} // closed when the flusher exits
	wake    chan struct{}
	err     error // the first error of the underlying writer
}

// New starts a Writer over w.
func New(w io.Writer) *Writer {
	b := &Writer{w: w, flushed: make(chan struct{}), wake: make(chan struct{}, 1)}
	b.cond = sync.NewCond(&b.mu)
	go b.loop()
	return b
}

// Write queues p (copied) for the flusher. It returns an error only once the
// underlying writer has failed; that error is then returned by every Write.
func (b *Writer) Write(p []byte) (int, error) {
	b.mu.Lock()
	for len(b.buf) > 0 && len(b.buf)+len(p) > MaxPending && !b.closed {
		b.cond.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		<-b.flushed // after what was queued before Close
		return b.w.Write(p)
	}
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return 0, err
	}
	b.buf = append(b.buf, p...)
	select { // under mu: Close closes wake under mu
	case b.wake <- struct{}{}:
	default:
	}
	b.mu.Unlock()
	return len(p), nil
}

// Close writes what is pending and stops the flusher. It returns the first
// error of the underlying writer, if any.
func (b *Writer) Close() error {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.wake)
	}
	b.mu.Unlock()
	<-b.flushed
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

func (b *Writer) loop() {
	defer close(b.flushed)
	var spare []byte
	for range b.wake {
		spare = b.flush(spare)
	}
	b.flush(spare) // what came before Close
}

// flush writes the pending bytes; the buffers alternate so a steady stream
// of lines allocates nothing.
func (b *Writer) flush(spare []byte) []byte {
	b.mu.Lock()
	out := b.buf
	b.buf = spare[:0]
	b.cond.Broadcast()
	b.mu.Unlock()
	if len(out) == 0 {
		return out
	}
	if _, err := b.w.Write(out); err != nil {
		b.mu.Lock()
		if b.err == nil {
			b.err = err
		}
		b.mu.Unlock()
	}
	if cap(out) > MaxPending { // one burst grew it: do not keep it
		return nil
	}
	return out
}
