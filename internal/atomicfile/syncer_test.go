package atomicfile

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
)

// Concurrent writers through one Syncer all find their content in place,
// share flushes (two per file would be the fsync path's count), and leave
// no temporary file behind.
func TestSyncerGroupsConcurrentWrites(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSyncer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		t.Skipf("no syncfs on %s: writes fall back to fsync", runtime.GOOS)
	}
	defer s.Close()
	const n = 64
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = WriteSynced(filepath.Join(dir, fmt.Sprintf("f%d", i)), fmt.Appendf(nil, "content %d", i), 0o600, s)
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("write %d: %v", i, errs[i])
		}
		data, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("f%d", i)))
		if err != nil || string(data) != fmt.Sprintf("content %d", i) {
			t.Fatalf("file %d: %q, %v", i, data, err)
		}
	}
	if f := s.Flushes(); f >= 2*n || f < 2 {
		t.Fatalf("%d flushes for %d concurrent writes: want at least 2 and fewer than %d", f, n, 2*n)
	}
	t.Logf("%d concurrent writes, %d flushes", n, s.Flushes())
	ents, _ := os.ReadDir(dir)
	if len(ents) != n {
		t.Fatalf("%d entries in %s, want %d (temporary files left?)", len(ents), dir, n)
	}
	fi, err := os.Stat(filepath.Join(dir, "f0"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("f0 mode %v, %v; want 0600", fi.Mode(), err)
	}
}

// A Sync that arrives while a flush runs waits for the next one: it never
// returns on a flush that started before its call.
func TestSyncerSyncAfterCall(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSyncer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		t.Skipf("no syncfs on %s", runtime.GOOS)
	}
	defer s.Close()
	for i := range 20 {
		before := s.Flushes()
		if err := s.Sync(); err != nil {
			t.Fatal(err)
		}
		if s.Flushes() <= before {
			t.Fatalf("sync %d returned with %d flushes, the same as before the call", i, s.Flushes())
		}
	}
}

// For refuses another filesystem (a syncfs of one makes nothing on another
// durable) and a nil Syncer falls back to fsync.
func TestSyncerFor(t *testing.T) {
	dir := t.TempDir()
	s, err := NewSyncer(dir)
	if err != nil {
		t.Fatal(err)
	}
	if s == nil {
		t.Skipf("no syncfs on %s", runtime.GOOS)
	}
	defer s.Close()
	if s.For(dir) != s {
		t.Fatal("For(its own directory) is not the syncer")
	}
	if s.For("/proc") != nil {
		t.Fatal("For(/proc) returned a syncer: another filesystem")
	}
	if s.For(filepath.Join(dir, "missing")) != nil {
		t.Fatal("For(a missing path) returned a syncer")
	}
	var none *Syncer
	if err := WriteSynced(filepath.Join(dir, "x"), []byte("x"), 0o600, none); err != nil {
		t.Fatal(err)
	}
	if err := SyncDirWith(dir, none); err != nil {
		t.Fatal(err)
	}
}
