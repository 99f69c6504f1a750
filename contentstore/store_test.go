package contentstore

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	mh "github.com/multiformats/go-multihash"
)

// --- helpers shared by the package's tests ---

func openStore(t testing.TB, dir string, opts ...Option) *Store {
	t.Helper()
	s, err := Open(dir, opts...)
	if err != nil {
		t.Fatalf("Open(%q): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newStore(t testing.TB, opts ...Option) *Store {
	t.Helper()
	return openStore(t, t.TempDir(), opts...)
}

func randBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustPut(t testing.TB, s *Store, codec uint64, data []byte) cid.Cid {
	t.Helper()
	c, err := s.Put(codec, data)
	if err != nil {
		t.Fatalf("Put: %v", err)
	}
	return c
}

// cborNode encodes a DAG-CBOR map built with go-ipld-prime's qp helpers.
func cborNode(t testing.TB, fn func(ma datamodel.MapAssembler)) []byte {
	t.Helper()
	n, err := qp.BuildMap(basicnode.Prototype.Any, -1, fn)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func lnk(c cid.Cid) qp.Assemble { return qp.Link(cidlink.Link{Cid: c}) }

func blockFile(s *Store, c cid.Cid) string {
	_, p := s.blockPath(c)
	return p
}

// age sets a block's mtime into the past, as if written long ago.
func age(t testing.TB, s *Store, d time.Duration, cs ...cid.Cid) {
	t.Helper()
	old := time.Now().Add(-d)
	for _, c := range cs {
		if err := os.Chtimes(blockFile(s, c), old, old); err != nil {
			t.Fatal(err)
		}
	}
}

func allBlocks(t testing.TB, s *Store) []string {
	t.Helper()
	var out []string
	if err := s.ForEach(func(c cid.Cid) error { out = append(out, c.String()); return nil }); err != nil {
		t.Fatal(err)
	}
	sort.Strings(out)
	return out
}

func cidStrings(cs []cid.Cid) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.String()
	}
	sort.Strings(out)
	return out
}

func wantErr(t testing.TB, err, sentinel error, mentions ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v, want one wrapping %v", err, sentinel)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Fatalf("error %q does not mention %q", err, m)
		}
	}
}

// --- tests ---

func TestPutGetRoundTrip(t *testing.T) {
	s := newStore(t)
	raw := []byte("hello igor")
	node := cborNode(t, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "n", qp.Int(7)) })
	for _, tc := range []struct {
		codec uint64
		data  []byte
	}{{cid.Raw, raw}, {cid.DagCBOR, node}, {cid.Raw, nil}} {
		c := mustPut(t, s, tc.codec, tc.data)
		p := c.Prefix()
		if p.Version != 1 || p.Codec != tc.codec || p.MhType != mh.SHA2_256 {
			t.Fatalf("CID %s has prefix %+v", c, p)
		}
		want, _ := cid.Prefix{Version: 1, Codec: tc.codec, MhType: mh.SHA2_256, MhLength: -1}.Sum(tc.data)
		if !c.Equals(want) {
			t.Fatalf("CID %s, want %s", c, want)
		}
		got, err := s.Get(c)
		if err != nil || !bytes.Equal(got, tc.data) {
			t.Fatalf("Get(%s) = %q, %v; want %q", c, got, err, tc.data)
		}
		if ok, err := s.Has(c); !ok || err != nil {
			t.Fatalf("Has(%s) = %v, %v", c, ok, err)
		}
	}
	if got := allBlocks(t, s); len(got) != 3 {
		t.Fatalf("ForEach saw %d blocks, want 3: %v", len(got), got)
	}
}

func TestPutIdempotentRefreshesAge(t *testing.T) {
	s := newStore(t)
	c := mustPut(t, s, cid.Raw, []byte("same"))
	before, err := os.Stat(blockFile(s, c))
	if err != nil {
		t.Fatal(err)
	}
	age(t, s, time.Hour, c)
	if c2 := mustPut(t, s, cid.Raw, []byte("same")); !c2.Equals(c) {
		t.Fatalf("second Put gave %s, want %s", c2, c)
	}
	after, err := os.Stat(blockFile(s, c))
	if err != nil {
		t.Fatal(err)
	}
	if !os.SameFile(before, after) {
		t.Fatal("idempotent Put rewrote the block file")
	}
	if time.Since(after.ModTime()) > time.Minute {
		t.Fatalf("Put of an existing block did not refresh its mtime (%v)", after.ModTime())
	}
	if err := s.PutBlock(c, []byte("same")); err != nil {
		t.Fatal(err)
	}
}

func TestPutRejects(t *testing.T) {
	s := newStore(t)
	_, err := s.Put(cid.DagProtobuf, []byte("x"))
	wantErr(t, err, ErrBadCID)
	_, err = s.Put(cid.Raw, make([]byte, MaxBlockSize+1))
	wantErr(t, err, ErrTooLarge)
	if _, err := s.Put(cid.Raw, make([]byte, MaxBlockSize)); err != nil {
		t.Fatalf("Put of exactly MaxBlockSize: %v", err)
	}
	_, err = s.Put(cid.DagCBOR, []byte{0xff, 0x00})
	wantErr(t, err, ErrCorrupt, "DAG-CBOR")
}

func TestPutBlockVerifies(t *testing.T) {
	s := newStore(t)
	good := []byte("payload")
	c, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(good)
	err := s.PutBlock(c, []byte("payloaX"))
	wantErr(t, err, ErrCorrupt, c.String())
	if ok, _ := s.Has(c); ok {
		t.Fatal("a block that failed verification was stored")
	}
	if err := s.PutBlock(c, good); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(c); err != nil || !bytes.Equal(got, good) {
		t.Fatalf("Get = %q, %v", got, err)
	}

	// Only CIDv1 sha2-256 raw/dag-cbor.
	v0, _ := cid.Prefix{Version: 0, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}.Sum(good)
	sha512, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_512, MhLength: -1}.Sum(good)
	pb, _ := cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}.Sum(good)
	for _, bad := range []cid.Cid{v0, sha512, pb, cid.Undef} {
		wantErr(t, s.PutBlock(bad, good), ErrBadCID)
		_, err := s.Get(bad)
		wantErr(t, err, ErrBadCID)
	}
}

func TestGetDetectsCorruption(t *testing.T) {
	s := newStore(t)
	data := randBytes(t, 4096)
	c := mustPut(t, s, cid.Raw, data)
	path := blockFile(s, c)

	flipped := bytes.Clone(data)
	flipped[1234] ^= 0x01
	for name, content := range map[string][]byte{
		"flipped byte": flipped,
		"zero length":  {},
		"garbage":      []byte("not the block at all"),
		"truncated":    data[:4095],
	} {
		if err := os.WriteFile(path, content, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(c)
		if got != nil {
			t.Fatalf("%s: Get returned %d bytes of corrupt data", name, len(got))
		}
		wantErr(t, err, ErrCorrupt, c.String())
	}

	// A damaged copy of the wrong size is replaced by the next Put.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, cid.Raw, data)
	if got, err := s.Get(c); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("after repair Put: %v", err)
	}

	// A flipped byte keeps the size: Delete, then Put again, repairs it.
	if err := os.WriteFile(path, flipped, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(c); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlock(c, data); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(c); err != nil {
		t.Fatal(err)
	}

	missing, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("never stored"))
	_, err := s.Get(missing)
	wantErr(t, err, ErrNotFound, missing.String())
	if ok, err := s.Has(missing); ok || err != nil {
		t.Fatalf("Has(missing) = %v, %v", ok, err)
	}
}

func TestOpenRemovesStaleTmpAndIgnoresForeignFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := mustPut(t, s, cid.Raw, []byte("keep me"))
	if err := s.Pin(c); err != nil {
		t.Fatal(err)
	}
	shard := filepath.Dir(blockFile(s, c))
	// What a crash mid-write leaves behind, in every directory we write to.
	stale := []string{
		filepath.Join(shard, c.String()+".123456.tmp"),
		filepath.Join(dir, "pins", c.String()+".9.tmp"),
		filepath.Join(dir, ".probe-1.tmp"),
	}
	for _, p := range stale {
		if err := os.WriteFile(p, []byte("half"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	foreign := filepath.Join(shard, "README")
	if err := os.WriteFile(foreign, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Listing ignores temp and foreign files even before a reopen.
	if got := allBlocks(t, s); len(got) != 1 || got[0] != c.String() {
		t.Fatalf("ForEach = %v, want only %s", got, c)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openStore(t, dir)
	for _, p := range stale {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("stale temp file %s survived Open (stat err %v)", p, err)
		}
	}
	if _, err := os.Stat(foreign); err != nil {
		t.Fatalf("Open removed a foreign file: %v", err)
	}
	if got, err := s2.Get(c); err != nil || string(got) != "keep me" {
		t.Fatalf("after reopen Get = %q, %v", got, err)
	}
	if pins, err := s2.Pins(); err != nil || len(pins) != 1 || !pins[0].Equals(c) {
		t.Fatalf("pins after reopen = %v, %v", pins, err)
	}
}

func TestOpenErrorsAndClose(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{file, filepath.Join(file, "sub"), ""} {
		if _, err := Open(bad); err == nil || !strings.HasPrefix(err.Error(), "contentstore: ") {
			t.Fatalf("Open(%q) = %v, want a contentstore error", bad, err)
		}
	}
	if runtime.GOOS == "linux" {
		// Not writable even for root: procfs.
		_, err := Open("/proc/igor-contentstore-test")
		if err == nil || !strings.Contains(err.Error(), "/proc/igor-contentstore-test") {
			t.Fatalf("Open under /proc = %v", err)
		}
		_, err = Open("/proc")
		if err == nil || !strings.Contains(err.Error(), "not writable") {
			t.Fatalf("Open(/proc) = %v, want a not-writable error", err)
		}
	}
	if _, err := Open(t.TempDir(), WithGCGrace(-time.Second)); err == nil {
		t.Fatal("negative grace accepted")
	}
	if _, err := Open(t.TempDir(), nil); err == nil {
		t.Fatal("nil option accepted")
	}
	if _, err := Open(t.TempDir(), WithPack(0), WithLogger(nil)); err == nil || !strings.Contains(err.Error(), "WithLogger(nil)") {
		t.Fatalf("a nil logger: %v, want an error naming WithLogger", err)
	}

	sdir := filepath.Join(t.TempDir(), "a", "store")
	s, err := Open(sdir)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sdir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("store dir mode = %v, %v; want 0700", fi.Mode(), err)
	}
	if runtime.GOOS != "windows" {
		_, err = Open(sdir)
		wantErr(t, err, ErrInUse, sdir)
	}
	c := mustPut(t, s, cid.Raw, []byte("x"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = s.Get(c)
	wantErr(t, err, ErrClosed)
	_, err = s.Put(cid.Raw, []byte("y"))
	wantErr(t, err, ErrClosed)
	wantErr(t, s.Pin(c), ErrClosed)
	wantErr(t, s.ForEach(func(cid.Cid) error { return nil }), ErrClosed)
	s2, err := Open(sdir) // the lock was released
	if err != nil {
		t.Fatal(err)
	}
	s2.Close()
}

func TestForEachStopsOnError(t *testing.T) {
	s := newStore(t, WithoutFsync())
	for i := range 20 {
		mustPut(t, s, cid.Raw, fmt.Appendf(nil, "block %d", i))
	}
	stop := errors.New("stop")
	n := 0
	err := s.ForEach(func(cid.Cid) error { n++; return stop })
	if err != stop || n != 1 {
		t.Fatalf("ForEach = %v after %d calls", err, n)
	}
	if got := allBlocks(t, s); len(got) != 20 {
		t.Fatalf("ForEach saw %d blocks, want 20", len(got))
	}
}

// TestConcurrentUse hammers one store from several goroutines (run with
// -race): writers of overlapping blocks, readers, and GCs that want to delete
// the old, unpinned copies of half of those blocks. A block whose Put has
// returned must be readable however Put and GC interleave.
func TestConcurrentUse(t *testing.T) {
	s := newStore(t, WithoutFsync(), WithGCGrace(time.Hour))
	pinned := mustPut(t, s, cid.Raw, []byte("pinned"))
	if err := s.Pin(pinned); err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		age(t, s, 2*time.Hour, mustPut(t, s, cid.Raw, fmt.Appendf(nil, "block %d", i)))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Go(func() {
			for i := range 50 {
				data := fmt.Appendf(nil, "block %d", (g*50+i)%80) // overlap between goroutines
				c, err := s.Put(cid.Raw, data)
				if err != nil {
					errs <- err
					return
				}
				got, err := s.Get(c)
				if err != nil || !bytes.Equal(got, data) {
					errs <- fmt.Errorf("Get(%s) = %q, %v", c, got, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := s.GC(t.Context()); err != nil {
				errs <- err
				return
			}
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := allBlocks(t, s); len(got) != 81 {
		t.Fatalf("%d blocks after hammer, want 81", len(got))
	}
	if _, err := s.Get(pinned); err != nil {
		t.Fatal(err)
	}
}
