package contentstore

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	mh "github.com/multiformats/go-multihash"
)

var fuzzCBORCID, _ = cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("fuzz"))

// fuzzSeeds builds small valid inputs from a real store: DAG-CBOR nodes, a
// chunked-object root and CARs (v1 and cut short).
func fuzzSeeds(tb testing.TB) (nodes, roots, cars [][]byte) {
	s := openStore(tb, tb.TempDir(), WithoutFsync())
	leaf := mustPut(tb, s, cid.Raw, []byte("leaf"))
	node := cborNode(tb, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "l", lnk(leaf))
		qp.MapEntry(ma, "n", qp.List(2, func(la datamodel.ListAssembler) {
			qp.ListEntry(la, qp.Map(1, func(ma datamodel.MapAssembler) { qp.MapEntry(ma, "x", lnk(leaf)) }))
			qp.ListEntry(la, qp.Int(-3))
		}))
	})
	head := mustPut(tb, s, cid.DagCBOR, node)
	chunk := rawCID("chunk")
	root, err := encodeChunkRoot(chunkRoot{size: ChunkSize + 1, chunks: []chunkRef{{chunk, ChunkSize}, {leaf, 1}}})
	if err != nil {
		tb.Fatal(err)
	}
	var car bytes.Buffer
	if _, err := s.WriteCAR(tb.Context(), &car, []cid.Cid{head}); err != nil {
		tb.Fatal(err)
	}
	nodes = [][]byte{node, {0xa0}, {0x80}, {0xd8, 0x2a, 0x41, 0x00}}
	roots = [][]byte{root}
	cars = [][]byte{car.Bytes(), car.Bytes()[:car.Len()-3], car.Bytes()[:40]}
	return nodes, roots, cars
}

func FuzzLinks(f *testing.F) {
	nodes, roots, _ := fuzzSeeds(f)
	for _, b := range slices.Concat(nodes, roots, scanCases) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkScan(t, data) // the one-pass scan agrees with the decoder
		links, err := Links(fuzzCBORCID, data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) || !strings.HasPrefix(err.Error(), "contentstore: ") {
				t.Fatalf("Links error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		seen := map[cid.Cid]bool{}
		for _, l := range links {
			if !l.Defined() || seen[l] {
				t.Fatalf("Links returned an undefined or duplicate CID: %v", links)
			}
			seen[l] = true
		}
		if raw, err := Links(rawCID("x"), data); raw != nil || err != nil {
			t.Fatalf("raw block has links %v, %v", raw, err)
		}
	})
}

func FuzzDecodeChunkRoot(f *testing.F) {
	nodes, roots, _ := fuzzSeeds(f)
	for _, b := range append(roots, nodes...) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := decodeChunkRoot(data)
		if err != nil {
			if !errors.Is(err, ErrNotObject) {
				t.Fatalf("error %v does not wrap ErrNotObject", err)
			}
			return
		}
		var sum int64
		for _, ch := range r.chunks {
			if ch.size < 1 || ch.size > ChunkSize || ch.c.Type() != cid.Raw {
				t.Fatalf("accepted a bad chunk %+v", ch)
			}
			sum += ch.size
		}
		if sum != r.size || len(r.chunks) > maxChunks {
			t.Fatalf("accepted an inconsistent root: %+v", r)
		}
		// What we accept, we can write back and read again unchanged.
		enc, err := encodeChunkRoot(r)
		if err != nil {
			t.Fatal(err)
		}
		r2, err := decodeChunkRoot(enc)
		if err != nil || r2.size != r.size || len(r2.chunks) != len(r.chunks) {
			t.Fatalf("re-encoded root does not decode the same: %v", err)
		}
	})
}

func FuzzImportCAR(f *testing.F) {
	_, _, cars := fuzzSeeds(f)
	for _, b := range cars {
		f.Add(b)
	}
	// One store per fuzzing process, emptied after every input: opening a
	// store per input made each execution ~100x slower.
	s := openStore(f, f.TempDir(), WithoutFsync())
	f.Fuzz(func(t *testing.T, data []byte) {
		roots, n, err := s.ImportCAR(t.Context(), bytes.NewReader(data))
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, ErrBadCID) {
				t.Fatalf("ImportCAR error %v wraps none of ErrCorrupt, ErrTooLarge, ErrBadCID", err)
			}
			if !strings.HasPrefix(err.Error(), "contentstore: ") {
				t.Fatalf("error %q lacks the package prefix", err)
			}
		} else if len(roots) == 0 {
			t.Fatal("ImportCAR succeeded without roots")
		}
		stored := 0
		if err := s.ForEach(func(c cid.Cid) error {
			stored++
			if _, err := s.Get(c); err != nil { // everything stored verifies
				return err
			}
			return s.Delete(c)
		}); err != nil {
			t.Fatal(err)
		}
		if stored > n {
			t.Fatalf("%d blocks stored, ImportCAR reported %d", stored, n)
		}
	})
}
