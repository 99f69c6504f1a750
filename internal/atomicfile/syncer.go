package atomicfile

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
)

// Syncer makes writes durable in groups: every caller of Sync waits for one
// syncfs(2) of the filesystem that starts after its call, and all callers
// that arrive while one runs share the next. A node that commits many
// agents' checkpoints at once (blocks, HardStates, pins) thus pays one
// flush per batch instead of two fsyncs per file (docs/DECISIONS.md D43).
//
// A nil *Syncer is valid: writes through it fall back to fsyncing each
// file and its directory (platforms without syncfs).
type Syncer struct {
	f *os.File // any directory on the filesystem

	mu      sync.Mutex // guards waiting, running
	waiting []chan error
	running bool

	flushes atomic.Int64 // syncfs calls made
}

// Flushes is the number of filesystem flushes made so far.
func (s *Syncer) Flushes() int64 {
	if s == nil {
		return 0
	}
	return s.flushes.Load()
}

// NewSyncer returns a Syncer for the filesystem holding dir, or nil (and
// no error) where the platform has no syncfs.
func NewSyncer(dir string) (*Syncer, error) {
	if !haveSyncfs {
		return nil, nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("atomicfile: syncer for %s: %w", dir, err)
	}
	return &Syncer{f: f}, nil
}

// For returns s if path lies on the filesystem s flushes, else nil (the
// caller then fsyncs each file): a syncfs of one filesystem makes nothing
// on another durable.
func (s *Syncer) For(path string) *Syncer {
	if s == nil || !sameDevice(s.f, path) {
		return nil
	}
	return s
}

// Close releases the directory handle; pending Syncs still complete.
func (s *Syncer) Close() error {
	if s == nil {
		return nil
	}
	return s.f.Close()
}

// Sync returns once everything written to the filesystem before the call
// is durable (or the flush failed: the error is every waiter's).
func (s *Syncer) Sync() error {
	ch := make(chan error, 1)
	s.mu.Lock()
	s.waiting = append(s.waiting, ch)
	if !s.running {
		s.running = true
		go s.loop()
	}
	s.mu.Unlock()
	return <-ch
}

// loop flushes batch after batch until nobody waits. A waiter is taken into
// a batch only after its call, and the batch's syncfs starts after it is
// taken, so the flush covers everything the waiter wrote before calling.
func (s *Syncer) loop() {
	for {
		s.mu.Lock()
		batch := s.waiting
		s.waiting = nil
		if len(batch) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		s.flushes.Add(1)
		err := syncfs(s.f)
		if err != nil {
			err = fmt.Errorf("atomicfile: syncfs %s: %w", s.f.Name(), err)
		}
		for _, ch := range batch {
			ch <- err
		}
	}
}

// WriteSynced is Write made durable through s: the temporary file is
// flushed by a group sync before the rename (so the name never points at
// unwritten data after a crash) and the rename by another one before it
// returns. With a nil s it is Write with sync=true.
func WriteSynced(path string, data []byte, perm os.FileMode, s *Syncer) error {
	if s == nil {
		return Write(path, data, perm, true)
	}
	fill := func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	}
	return write(path, perm, fill, nil, s.Sync, func(string) error { return s.Sync() })
}

// SyncDirWith makes changes to dir's entries durable: one group sync, or
// an fsync of dir with a nil s.
func SyncDirWith(dir string, s *Syncer) error {
	if s == nil {
		return SyncDir(dir)
	}
	return s.Sync()
}
