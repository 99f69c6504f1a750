package contentstore

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	mh "github.com/multiformats/go-multihash"
)

func rawCID(data string) cid.Cid {
	c, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte(data))
	return c
}

func TestLinksNested(t *testing.T) {
	a, b, c, d := rawCID("a"), rawCID("b"), rawCID("c"), rawCID("d")
	node := cborNode(t, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "a", lnk(a))
		qp.MapEntry(ma, "deep", qp.Map(1, func(ma datamodel.MapAssembler) {
			qp.MapEntry(ma, "list", qp.List(3, func(la datamodel.ListAssembler) {
				qp.ListEntry(la, lnk(b))
				qp.ListEntry(la, qp.List(1, func(la datamodel.ListAssembler) { qp.ListEntry(la, lnk(c)) }))
				qp.ListEntry(la, lnk(a)) // duplicate: reported once
			}))
		}))
		qp.MapEntry(ma, "not a link", qp.Bytes(d.Bytes())) // bytes without tag 42
	})
	nc, _ := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum(node)
	got, err := Links(nc, node)
	if err != nil {
		t.Fatal(err)
	}
	want := []cid.Cid{a, b, c}
	if len(got) != len(want) {
		t.Fatalf("Links = %v, want %v", got, want)
	}
	for i := range want {
		if !got[i].Equals(want[i]) {
			t.Fatalf("Links = %v, want %v", got, want)
		}
	}

	// The same structure written by an independent encoder (fxamacker/cbor,
	// tag 42 by hand) gives the same links.
	tag := func(c cid.Cid) cbor.Tag { return cbor.Tag{Number: 42, Content: append([]byte{0}, c.Bytes()...)} }
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	other, err := em.Marshal(map[string]any{"x": []any{tag(d), map[string]any{"y": tag(a)}}})
	if err != nil {
		t.Fatal(err)
	}
	got, err = Links(nc, other)
	if err != nil || len(got) != 2 || !got[0].Equals(d) || !got[1].Equals(a) {
		t.Fatalf("Links(fxamacker node) = %v, %v", got, err)
	}

	if got, err := Links(a, []byte("raw bytes \xd8\x2a")); err != nil || got != nil {
		t.Fatalf("Links(raw) = %v, %v", got, err)
	}
	_, err = Links(nc, []byte{0xa1, 0x61})
	wantErr(t, err, ErrCorrupt, nc.String())
	pb, _ := cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: mh.SHA2_256, MhLength: -1}.Sum(nil)
	_, err = Links(pb, nil)
	wantErr(t, err, ErrBadCID)
}

// testDAG is a small checkpoint-like DAG:
//
//	head ─► mid ─► leaf (raw)
//	 │       └──► obj (chunked object: root + 3 chunks)
//	 └──► shared ◄── mid   (a block with two parents)
type testDAG struct {
	head, mid, shared, leaf, obj cid.Cid
	all                          []cid.Cid // every block of the DAG
}

func buildDAG(t *testing.T, s *Store) testDAG {
	t.Helper()
	var d testDAG
	d.leaf = mustPut(t, s, cid.Raw, []byte("leaf state"))
	var err error
	d.obj, err = s.PutObjectBytes(randBytes(t, 2*ChunkSize+17))
	if err != nil {
		t.Fatal(err)
	}
	objBlocks, err := s.ObjectCIDs(d.obj)
	if err != nil {
		t.Fatal(err)
	}
	d.shared = mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "note", qp.String("shared"))
	}))
	d.mid = mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "state", lnk(d.leaf))
		qp.MapEntry(ma, "module", lnk(d.obj))
		qp.MapEntry(ma, "refs", qp.List(1, func(la datamodel.ListAssembler) { qp.ListEntry(la, lnk(d.shared)) }))
	}))
	d.head = mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "prev", lnk(d.mid))
		qp.MapEntry(ma, "shared", lnk(d.shared))
		qp.MapEntry(ma, "seq", qp.Int(2))
	}))
	d.all = append([]cid.Cid{d.head, d.mid, d.shared, d.leaf}, objBlocks...)
	return d
}

func TestReachable(t *testing.T) {
	s := newStore(t, WithoutFsync())
	d := buildDAG(t, s)
	got, err := s.Reachable(t.Context(), []cid.Cid{d.head})
	if err != nil {
		t.Fatal(err)
	}
	if g, w := cidStrings(got), cidStrings(d.all); len(g) != len(w) {
		t.Fatalf("Reachable = %v, want %v", g, w)
	} else {
		for i := range g {
			if g[i] != w[i] {
				t.Fatalf("Reachable = %v, want %v", g, w)
			}
		}
	}
	// Parents first: every block after the first is linked from an earlier one.
	assertParentsFirst(t, s, got)

	if err := s.Delete(d.shared); err != nil {
		t.Fatal(err)
	}
	_, err = s.Reachable(t.Context(), []cid.Cid{d.head})
	wantErr(t, err, ErrNotFound, d.shared.String(), "linked from "+d.mid.String())

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Reachable(ctx, []cid.Cid{d.head}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Reachable with cancelled ctx = %v", err)
	}
}

func assertParentsFirst(t *testing.T, s *Store, order []cid.Cid) {
	t.Helper()
	seen := map[cid.Cid]bool{order[0]: true}
	linked := map[cid.Cid]bool{}
	for i, c := range order {
		if i > 0 && !linked[c] {
			t.Fatalf("block %d (%s) comes before any block linking to it", i, c)
		}
		seen[c] = true
		data, err := s.Get(c)
		if err != nil {
			t.Fatal(err)
		}
		ls, err := Links(c, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			linked[l] = true
		}
	}
}

func TestPinsPersist(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	a, b := mustPut(t, s, cid.Raw, []byte("a")), rawCID("not stored yet")
	for _, c := range []cid.Cid{a, b, a} {
		if err := s.Pin(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Unpin(rawCID("never pinned")); err != nil {
		t.Fatalf("Unpin of an unpinned CID: %v", err)
	}
	wantErr(t, s.Pin(cid.Undef), ErrBadCID)
	s.Close()

	s = openStore(t, dir)
	pins, err := s.Pins()
	if err != nil || len(pins) != 2 {
		t.Fatalf("Pins after reopen = %v, %v", pins, err)
	}
	if err := s.Unpin(a); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openStore(t, dir)
	if pins, _ := s.Pins(); len(pins) != 1 || !pins[0].Equals(b) {
		t.Fatalf("Pins after Unpin+reopen = %v, want [%s]", pins, b)
	}
}

func TestGCKeepsReachableRemovesGarbage(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	d := buildDAG(t, s)
	if err := s.Pin(d.head); err != nil {
		t.Fatal(err)
	}
	// Garbage: an unpinned object, a loose block, and a node that links INTO
	// the pinned DAG (a parent of a pinned block is not protected by it).
	garbageObj, err := s.PutObjectBytes(randBytes(t, ChunkSize+1))
	if err != nil {
		t.Fatal(err)
	}
	garbage, _ := s.ObjectCIDs(garbageObj)
	garbage = append(garbage,
		mustPut(t, s, cid.Raw, []byte("loose")),
		mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "child", lnk(d.head)) })))

	// Everything is fresh: the grace period protects it all.
	st, err := s.GC(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 0 || st.KeptFresh != len(garbage) || st.Marked != len(d.all) || st.Pins != 1 {
		t.Fatalf("GC of fresh blocks: %+v (garbage %d, dag %d)", st, len(garbage), len(d.all))
	}

	// Age every block; then add one fresh unreachable block.
	age(t, s, time.Hour, append(append([]cid.Cid{}, d.all...), garbage...)...)
	fresh := mustPut(t, s, cid.Raw, []byte("just written, not pinned yet"))

	st, err = s.GC(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != len(garbage) || st.KeptFresh != 1 || st.Marked != len(d.all) || st.Freed <= ChunkSize {
		t.Fatalf("GC: %+v, want %d removed, 1 kept fresh", st, len(garbage))
	}
	for _, c := range d.all {
		if _, err := s.Get(c); err != nil {
			t.Fatalf("reachable block %s lost: %v", c, err)
		}
	}
	for _, c := range garbage {
		if ok, _ := s.Has(c); ok {
			t.Fatalf("unreachable old block %s survived GC", c)
		}
	}
	if ok, _ := s.Has(fresh); !ok {
		t.Fatal("fresh block removed despite the grace period")
	}

	// Pins survive a reopen and keep protecting the DAG.
	s.Close()
	s = openStore(t, dir, WithGCGrace(0))
	st, err = s.GC(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if st.Removed != 1 || st.Marked != len(d.all) { // only `fresh` goes (grace 0)
		t.Fatalf("GC after reopen: %+v", st)
	}
	if got, want := allBlocks(t, s), cidStrings(d.all); len(got) != len(want) {
		t.Fatalf("store holds %v, want exactly the pinned DAG %v", got, want)
	}

	// Unpin: everything goes.
	if err := s.Unpin(d.head); err != nil {
		t.Fatal(err)
	}
	if st, err = s.GC(t.Context()); err != nil || st.Removed != len(d.all) {
		t.Fatalf("GC after Unpin: %+v, %v", st, err)
	}
}

func TestGCRePutRestartsGrace(t *testing.T) {
	s := newStore(t)
	c := mustPut(t, s, cid.Raw, []byte("old but wanted again"))
	age(t, s, time.Hour, c)
	mustPut(t, s, cid.Raw, []byte("old but wanted again"))
	if st, err := s.GC(t.Context()); err != nil || st.Removed != 0 {
		t.Fatalf("GC = %+v, %v; the re-Put block must be spared", st, err)
	}
}

// TestGCIncompleteDAGDeletesNothing: a pinned DAG with a missing interior
// block. Its grandchild is present but only reachable through the missing
// block, so GC cannot tell it from garbage and must delete nothing.
func TestGCIncompleteDAGDeletesNothing(t *testing.T) {
	s := newStore(t)
	grandchild := mustPut(t, s, cid.Raw, []byte("grandchild"))
	child := mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "g", lnk(grandchild)) }))
	root := mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "c", lnk(child)) }))
	junk := mustPut(t, s, cid.Raw, []byte("real garbage"))
	if err := s.Pin(root); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(child); err != nil {
		t.Fatal(err)
	}
	age(t, s, time.Hour, root, grandchild, junk)

	st, err := s.GC(t.Context())
	wantErr(t, err, ErrNotFound, child.String(), root.String())
	if st.Removed != 0 || len(st.Missing) != 1 || !st.Missing[0].Equals(child) || st.Marked != 1 {
		t.Fatalf("GC stats %+v", st)
	}
	for _, c := range []cid.Cid{grandchild, junk, root} {
		if ok, _ := s.Has(c); !ok {
			t.Fatalf("GC deleted %s although the pinned DAG is incomplete", c)
		}
	}
	// A corrupt interior block counts as missing too.
	if err := s.PutBlock(child, cborNode(t, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "g", lnk(grandchild)) })); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blockFile(s, child), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err = s.GC(t.Context())
	wantErr(t, err, ErrCorrupt, child.String())
	if st.Removed != 0 {
		t.Fatalf("GC removed %d blocks with a corrupt pinned block", st.Removed)
	}
	// Repaired: GC proceeds and removes only the junk.
	if err := s.Delete(child); err != nil {
		t.Fatal(err)
	}
	if err := s.PutBlock(child, cborNode(t, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "g", lnk(grandchild)) })); err != nil {
		t.Fatal(err)
	}
	if st, err = s.GC(t.Context()); err != nil || st.Removed != 1 || st.Marked != 3 {
		t.Fatalf("GC after repair: %+v, %v", st, err)
	}
	if ok, _ := s.Has(junk); ok {
		t.Fatal("junk survived")
	}
}

func TestGCHonoursContext(t *testing.T) {
	s := newStore(t, WithoutFsync(), WithGCGrace(0))
	for i := range 10 {
		mustPut(t, s, cid.Raw, []byte{byte(i)})
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.GC(ctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("GC with cancelled ctx = %v", err)
	}
	if n := len(allBlocks(t, s)); n != 10 {
		t.Fatalf("cancelled GC removed blocks: %d left", n)
	}
}
