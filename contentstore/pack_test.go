package contentstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
)

// agePacked moves packed blocks' write time into the past.
func agePacked(t testing.TB, s *Store, d time.Duration, cs ...cid.Cid) {
	t.Helper()
	for _, c := range cs {
		data, _, err := s.pack.get(c)
		if err != nil {
			t.Fatal(err)
		}
		v := make([]byte, packStamp+len(data))
		binary.BigEndian.PutUint64(v, uint64(time.Now().Add(-d).UnixNano()))
		copy(v[packStamp:], data)
		if err := s.pack.db.Set(blockKey(c), v, pebble.Sync); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPackSmallBlocksLargeFiles(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, WithPack(1024))
	small := mustPut(t, s, cid.Raw, randBytes(t, 1024))
	large := mustPut(t, s, cid.Raw, randBytes(t, 1025))
	if _, err := os.Stat(blockFile(s, small)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a block of the pack limit was written as a file too (stat: %v)", err)
	}
	if _, err := os.Stat(blockFile(s, large)); err != nil {
		t.Fatalf("a block above the pack limit is not a file: %v", err)
	}
	for _, c := range []cid.Cid{small, large} {
		if ok, err := s.Has(c); !ok || err != nil {
			t.Fatalf("Has(%s) = %v, %v", c, ok, err)
		}
	}
	if got := allBlocks(t, s); len(got) != 2 {
		t.Fatalf("ForEach lists %d blocks, want 2: %v", len(got), got)
	}

	// Durable across a reopen, and readable without the option (a node
	// started with an older configuration must not lose its blocks).
	want, _ := s.Get(small)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2 := openStore(t, dir)
	got, err := s2.Get(small)
	if err != nil || string(got) != string(want) {
		t.Fatalf("after reopen without WithPack: Get = %d bytes, %v", len(got), err)
	}
	if err := s2.PutMeta("k", []byte("v")); !errors.Is(err, ErrNoPack) {
		t.Fatalf("PutMeta on a store opened without WithPack: %v, want ErrNoPack", err)
	}
	// Without the option new small blocks are files again.
	c := mustPut(t, s2, cid.Raw, []byte("file again"))
	if _, err := os.Stat(blockFile(s2, c)); err != nil {
		t.Fatalf("without WithPack a small block is not a file: %v", err)
	}
}

func TestPackGCAndDelete(t *testing.T) {
	s := newStore(t, WithPack(0), WithGCGrace(time.Hour))
	child := mustPut(t, s, cid.Raw, []byte("child"))
	root := mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "c", lnk(child)) }))
	old := mustPut(t, s, cid.Raw, []byte("old garbage"))
	fresh := mustPut(t, s, cid.Raw, []byte("fresh garbage"))
	reput := mustPut(t, s, cid.Raw, []byte("re-put garbage"))
	if err := s.Pin(root); err != nil {
		t.Fatal(err)
	}
	agePacked(t, s, 2*time.Hour, child, root, old, reput)
	mustPut(t, s, cid.Raw, []byte("re-put garbage")) // restarts its grace
	st, err := s.GC(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 1 || st.KeptFresh != 2 {
		t.Fatalf("GC: %+v, want 1 removed (old), 2 kept fresh (fresh, re-put)", st)
	}
	for c, want := range map[cid.Cid]bool{child: true, root: true, old: false, fresh: true, reput: true} {
		if ok, err := s.Has(c); ok != want || err != nil {
			t.Fatalf("after GC Has(%s) = %v, %v; want %v", c, ok, err, want)
		}
	}
	if err := s.Delete(fresh); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(fresh); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
	}
}

func TestPackCorruptionDetected(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, WithPack(0))
	c := mustPut(t, s, cid.Raw, []byte("the real content"))
	other := mustPut(t, s, cid.Raw, []byte("fine"))
	// Damage the entry below the store (as a disk fault would).
	v := make([]byte, packStamp+5)
	copy(v[packStamp:], "other")
	if err := s.pack.db.Set(blockKey(c), v, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if err := s.pack.db.Set([]byte{packBlock, 1, 2, 3}, []byte("junk"), pebble.Sync); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(c)
	wantErr(t, err, ErrCorrupt, c.String())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	// fsck's path: read-only, reports the damage and the stray key, writes nothing.
	before := listTree(t, filepath.Join(dir, packDirName))
	chk, err := OpenForCheck(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := chk.Check(context.Background())
	chk.Close()
	if err != nil {
		t.Fatal(err)
	}
	if r.Clean() || len(r.Corrupt) != 1 || r.Blocks != 2 || len(r.Stray) != 1 {
		t.Fatalf("Check: %+v; want 2 blocks, 1 corrupt (%s), 1 stray key", r, c)
	}
	if after := listTree(t, filepath.Join(dir, packDirName)); after != before {
		t.Fatalf("OpenForCheck changed the pack:\nbefore %s\nafter  %s", before, after)
	}
	s2 := openStore(t, dir, WithPack(0))
	if got, err := s2.Get(other); err != nil || string(got) != "fine" {
		t.Fatalf("intact block after reopen: %q, %v", got, err)
	}
}

func listTree(t testing.TB, dir string) string {
	t.Helper()
	var out string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && d.Name() != "LOCK" { // the lock file is opened, so touched
			info, err := d.Info()
			if err != nil {
				return err
			}
			out += p + ":" + info.ModTime().String() + ";"
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestPackMeta(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, WithPack(0))
	if _, err := s.GetMeta("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetMeta of nothing: %v", err)
	}
	if err := s.PutMeta("a", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMeta("a", []byte("2")); err != nil {
		t.Fatal(err)
	}
	if err := s.PutMeta("b", make([]byte, MaxMetaSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized meta: %v", err)
	}
	if err := s.PutMeta("", []byte("x")); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("empty key: %v", err)
	}
	for _, k := range []string{"heads/x", "heads/y", "headsz", "other"} {
		if err := s.PutMeta(k, []byte("v")); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.MetaKeys("heads/"); err != nil || fmt.Sprint(got) != "[heads/x heads/y]" {
		t.Fatalf("MetaKeys(heads/) = %v, %v", got, err)
	}
	if got, err := s.MetaKeys(""); err != nil || len(got) != 5 {
		t.Fatalf("MetaKeys() = %v, %v", got, err)
	}
	// Meta records are not blocks.
	if got := allBlocks(t, s); len(got) != 0 {
		t.Fatalf("ForEach lists meta records: %v", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, WithPack(0))
	if v, err := s.GetMeta("a"); err != nil || string(v) != "2" {
		t.Fatalf("after reopen GetMeta = %q, %v", v, err)
	}
	if err := s.DeleteMeta("a"); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteMeta("never"); err != nil {
		t.Fatalf("deleting an absent record: %v", err)
	}
	if _, err := s.GetMeta("a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetMeta after delete: %v", err)
	}
	s.Close()
	if err := s.PutMeta("a", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("PutMeta after Close: %v", err)
	}
}

func TestPackConcurrentWriters(t *testing.T) {
	s := newStore(t, WithPack(0))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	cids := make([][]cid.Cid, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				c, err := s.Put(cid.Raw, []byte{byte(g), byte(i), 'x'})
				if err != nil {
					errs <- err
					return
				}
				cids[g] = append(cids[g], c)
				if err := s.PutMeta(c.String(), []byte{byte(i)}); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for g := range cids {
		for i, c := range cids[g] {
			if got, err := s.Get(c); err != nil || got[0] != byte(g) || got[1] != byte(i) {
				t.Fatalf("Get(%s) = %v, %v", c, got, err)
			}
		}
	}
	if got := allBlocks(t, s); len(got) != 400 {
		t.Fatalf("%d blocks listed, want 400", len(got))
	}
}

func TestDeferredPackSync(t *testing.T) {
	if _, err := Open(t.TempDir(), WithDeferredPackSync()); err == nil {
		t.Fatal("WithDeferredPackSync without WithPack accepted")
	}
	dir := t.TempDir()
	s := openStore(t, dir, WithPack(0), WithDeferredPackSync())
	c := mustPut(t, s, cid.Raw, []byte("deferred"))
	if err := s.PutMeta("head", []byte(c.String())); err != nil {
		t.Fatal(err)
	}
	// A deferred record reads back at once, and a later durable write
	// (here Sync) makes it durable with everything before it.
	if err := s.PutMetaDeferred("head2", []byte("second")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetMeta("head2"); err != nil || string(got) != "second" {
		t.Fatalf("deferred record: %q, %v", got, err)
	}
	if err := s.PutMetaDeferred("", nil); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("empty key: %v", err)
	}
	if err := s.Sync(); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.PutMetaDeferred("late", nil); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	s = openStore(t, dir, WithPack(0))
	if got, err := s.Get(c); err != nil || string(got) != "deferred" {
		t.Fatalf("after reopen: %q, %v", got, err)
	}
	if got, err := s.GetMeta("head2"); err != nil || string(got) != "second" {
		t.Fatalf("deferred record after reopen: %q, %v", got, err)
	}
}

func TestWithPackRejectsBadLimit(t *testing.T) {
	for _, n := range []int{-1, MaxBlockSize + 1} {
		if _, err := Open(t.TempDir(), WithPack(n)); err == nil {
			t.Fatalf("WithPack(%d) accepted", n)
		}
	}
}

// A crash in the first Open can leave an empty pack directory: no damage
// for fsck (nothing was stored in it), and the next Open creates the pack.
func TestPackInterruptedCreation(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	c := mustPut(t, s, cid.Raw, []byte("a file block"))
	s.Close()
	if err := os.Mkdir(filepath.Join(dir, packDirName), 0o700); err != nil {
		t.Fatal(err)
	}
	chk, err := OpenForCheck(dir)
	if err != nil {
		t.Fatalf("OpenForCheck with an empty pack directory: %v", err)
	}
	r, err := chk.Check(context.Background())
	chk.Close()
	if err != nil || !r.Clean() || r.Blocks != 1 {
		t.Fatalf("Check: %+v, %v", r, err)
	}
	s = openStore(t, dir, WithPack(0))
	if err := s.PutMeta("k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(c); err != nil || string(got) != "a file block" {
		t.Fatalf("Get: %q, %v", got, err)
	}
}

// Pins of a store with a pack are records in its log: no file, listed with
// the pins a store written before that left in pins/, durable across a
// reopen, kept by GC, removed (from both places) by Unpin; a pin key that
// is no CID is reported by Check and pins nothing.
func TestPackPins(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir, WithPack(0), WithDeferredPackSync(), WithGCGrace(time.Hour))
	child := mustPut(t, s, cid.Raw, []byte("child"))
	root := mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "c", lnk(child)) }))
	garbage := mustPut(t, s, cid.Raw, []byte("garbage"))
	if err := s.Pin(root); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pins", root.String())); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a pin in a store with a pack was written as a file too (stat: %v)", err)
	}
	// A pin file an older store wrote.
	legacy := mustPut(t, s, cid.Raw, []byte("pinned by an older node"))
	if err := os.WriteFile(filepath.Join(dir, "pins", legacy.String()), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Pin(legacy); err != nil { // in both places now: listed once
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir, WithPack(0), WithGCGrace(time.Hour))
	pins, err := s.Pins()
	if err != nil {
		t.Fatal(err)
	}
	if want := sortedCIDs(root, legacy); fmt.Sprint(pins) != fmt.Sprint(want) {
		t.Fatalf("Pins after reopen = %v, want %v", pins, want)
	}
	agePacked(t, s, 2*time.Hour, child, root, garbage, legacy)
	if st, err := s.GC(context.Background()); err != nil || st.Removed != 1 || st.Pins != 2 {
		t.Fatalf("GC = %+v, %v; want 2 pins and garbage alone removed", st, err)
	}
	for c, want := range map[cid.Cid]bool{child: true, root: true, legacy: true, garbage: false} {
		if ok, err := s.Has(c); ok != want || err != nil {
			t.Fatalf("after GC Has(%s) = %v, %v; want %v", c, ok, err, want)
		}
	}
	for _, c := range []cid.Cid{root, legacy, root} { // the second Unpin of root: not pinned, no error
		if err := s.Unpin(c); err != nil {
			t.Fatalf("Unpin(%s): %v", c, err)
		}
	}
	if pins, err := s.Pins(); err != nil || len(pins) != 0 {
		t.Fatalf("Pins after Unpin = %v, %v; want none", pins, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "pins", legacy.String())); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Unpin left the older pin file (stat: %v)", err)
	}
	// Damage: a pin key that is no CID.
	if err := s.pack.db.Set([]byte{packPin, 1, 2, 3}, nil, pebble.Sync); err != nil {
		t.Fatal(err)
	}
	if pins, err := s.Pins(); err != nil || len(pins) != 0 {
		t.Fatalf("Pins with a damaged pin key = %v, %v; want none", pins, err)
	}
	r, err := s.Check(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Stray) != 1 || r.Stray[0] != "pack key 70010203" {
		t.Fatalf("Check stray = %q, want the damaged pin key", r.Stray)
	}
}

func sortedCIDs(cs ...cid.Cid) []cid.Cid {
	slices.SortFunc(cs, func(a, b cid.Cid) int { return strings.Compare(a.String(), b.String()) })
	return cs
}

// TestPackEventsLogStalls checks the pack's listener: a write stall is
// logged with its reason and, when writes resume, with how long they waited.
func TestPackEventsLogStalls(t *testing.T) {
	var buf bytes.Buffer
	ev := packEvents(slog.New(slog.NewTextHandler(&buf, nil)))
	ev.WriteStallEnd() // no stall began: nothing to report
	if buf.Len() != 0 {
		t.Fatalf("a resume without a stall logged %q", buf.String())
	}
	ev.WriteStallBegin(pebble.WriteStallBeginInfo{Reason: "memtable count limit reached"})
	time.Sleep(20 * time.Millisecond)
	ev.WriteStallEnd()
	out := buf.String()
	for _, want := range []string{`msg="contentstore pack: writes stalled" reason="memtable count limit reached"`, `msg="contentstore pack: writes resumed" stalled=`} {
		if !strings.Contains(out, want) {
			t.Errorf("log %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "stalled=0s") {
		t.Errorf("the stall's duration was lost: %q", out)
	}
}
