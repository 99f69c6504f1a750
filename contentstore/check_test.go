package contentstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

func TestCheckCleanStore(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	d := buildDAG(t, s)
	if err := s.Pin(d.head); err != nil {
		t.Fatal(err)
	}
	empty := mustPut(t, s, cid.Raw, nil) // a legitimately empty block
	r, err := s.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Clean() || len(r.Problems()) != 0 || len(r.TempFiles) != 0 || len(r.Stray) != 0 {
		t.Fatalf("clean store reported %+v", r)
	}
	if r.Blocks != len(d.all)+1 || r.Pins != 1 || r.Bytes < 2*ChunkSize {
		t.Fatalf("counted %d blocks (want %d), %d pins, %d bytes", r.Blocks, len(d.all)+1, r.Pins, r.Bytes)
	}
	_ = empty
}

// Every kind of damage a crash (or a disk) can leave is found and named;
// leftover temporary files are listed without making the store unclean,
// survive OpenForCheck and are removed by the next Open.
func TestCheckFindsDamage(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	d := buildDAG(t, s)
	if err := s.Pin(d.head); err != nil {
		t.Fatal(err)
	}
	loose := mustPut(t, s, cid.Raw, []byte("not linked from any pin"))
	torn := mustPut(t, s, cid.Raw, []byte("will be truncated to zero"))
	ghost := rawCID("pinned but never stored")
	if err := s.Pin(ghost); err != nil {
		t.Fatal(err)
	}
	s.Close()

	path := func(c cid.Cid) string { _, p := s.blockPath(c); return p }
	// Flip a byte of a block the pinned DAG needs, and of a loose one.
	for _, c := range []cid.Cid{d.leaf, loose} {
		data, _ := os.ReadFile(path(c))
		data[0] ^= 0xff
		os.WriteFile(path(c), data, 0o600)
	}
	os.WriteFile(path(torn), nil, 0o600)
	// A block the DAG links to disappears.
	os.Remove(path(d.shared))
	// Leftovers of a write interrupted before its rename, and a stray file.
	tmp := path(d.mid) + ".123456.tmp"
	os.WriteFile(tmp, []byte("half a blo"), 0o600)
	os.WriteFile(filepath.Join(dir, "pins", "README"), []byte("x"), 0o600)

	c, err := OpenForCheck(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); !errors.Is(err, ErrInUse) {
		t.Fatalf("Open while OpenForCheck holds the store: %v, want ErrInUse", err)
	}
	r, err := c.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if r.Clean() {
		t.Fatalf("damaged store reported clean: %+v", r)
	}
	joined := func(ss []string) string { return strings.Join(ss, "\n") }
	if len(r.Corrupt) != 2 || !strings.Contains(joined(r.Corrupt), d.leaf.String()) || !strings.Contains(joined(r.Corrupt), loose.String()) {
		t.Errorf("corrupt: %q", r.Corrupt)
	}
	if len(r.ZeroLength) != 1 || r.ZeroLength[0] != torn.String() {
		t.Errorf("zero-length: %q", r.ZeroLength)
	}
	mp := joined(r.MissingPinned)
	// (The corrupt raw leaf is listed as corrupt: the walk only checks
	// that raw blocks exist, the re-hash of every file catches damage.)
	if len(r.MissingPinned) != 2 || !strings.Contains(mp, ghost.String()+" (pinned root)") ||
		!strings.Contains(mp, d.shared.String()+" (linked from ") {
		t.Errorf("missing pinned: %q", r.MissingPinned)
	}
	if len(r.TempFiles) != 1 || !strings.HasSuffix(tmp, r.TempFiles[0]) {
		t.Errorf("temp files: %q (want %s)", r.TempFiles, tmp)
	}
	if len(r.Stray) != 1 || r.Stray[0] != filepath.Join("pins", "README") {
		t.Errorf("stray: %q", r.Stray)
	}
	if n := len(r.Problems()); n != 5 {
		t.Errorf("%d problems, want 5: %q", n, r.Problems())
	}
	if _, err := os.Stat(tmp); err != nil {
		t.Fatalf("OpenForCheck/Check must not remove temp files: %v", err)
	}
	// The next Open removes the leftover; nothing else changes.
	s2 := openStore(t, dir)
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Open left the temp file: %v", err)
	}
	r2, err := s2.Check(context.Background())
	if err != nil || len(r2.TempFiles) != 0 || len(r2.Corrupt) != 2 {
		t.Fatalf("after Open: %+v %v", r2, err)
	}
}

func TestCheckErrors(t *testing.T) {
	if _, err := OpenForCheck(filepath.Join(t.TempDir(), "nope")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("OpenForCheck of a missing dir: %v", err)
	}
	// A first Open killed between its mkdirs: not damage, and the next
	// Open completes it.
	half := t.TempDir()
	if err := os.Mkdir(filepath.Join(half, "blocks"), 0o700); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenForCheck(half); !errors.Is(err, ErrUninitialized) {
		t.Fatalf("OpenForCheck of a half-created store: %v, want ErrUninitialized", err)
	}
	// Data in pins/ without blocks/ is damage, not an interrupted start.
	lost := t.TempDir()
	if err := os.Mkdir(filepath.Join(lost, "pins"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(lost, "pins", "x"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenForCheck(lost); !errors.Is(err, ErrNotFound) || errors.Is(err, ErrUninitialized) {
		t.Fatalf("OpenForCheck of a store without blocks/: %v, want ErrNotFound", err)
	}
	hs, err := Open(half)
	if err != nil {
		t.Fatal(err)
	}
	hs.Close()
	if hs, err = OpenForCheck(half); err != nil {
		t.Fatalf("OpenForCheck after Open completed the store: %v", err)
	}
	hs.Close()
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	mustPut(t, s, cid.Raw, []byte("x"))
	cancel()
	if _, err := s.Check(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("Check with a cancelled context: %v", err)
	}
	s.Close()
	if _, err := s.Check(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Check after Close: %v", err)
	}
}
