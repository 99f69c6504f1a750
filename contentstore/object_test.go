package contentstore

import (
	"bytes"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
	mh "github.com/multiformats/go-multihash"
)

func readAllObject(t *testing.T, s *Store, root cid.Cid) ([]byte, int64) {
	t.Helper()
	rc, size, err := s.OpenObject(root)
	if err != nil {
		t.Fatalf("OpenObject(%s): %v", root, err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading object %s: %v", root, err)
	}
	return got, size
}

func TestObjectMultiChunkRoundTrip(t *testing.T) {
	s := newStore(t)
	data := randBytes(t, 3*ChunkSize+ChunkSize/2) // 3.5 MiB
	// HalfReader: PutObject must cope with short reads.
	root, size, err := s.PutObject(iotest.HalfReader(bytes.NewReader(data)))
	if err != nil {
		t.Fatal(err)
	}
	if size != int64(len(data)) || root.Type() != cid.DagCBOR {
		t.Fatalf("PutObject = %s, %d; want a dag-cbor root and size %d", root, size, len(data))
	}
	got, gotSize := readAllObject(t, s, root)
	if gotSize != size || !bytes.Equal(got, data) {
		t.Fatalf("object round trip differs (size %d, %d bytes read)", gotSize, len(got))
	}

	cids, err := s.ObjectCIDs(root)
	if err != nil {
		t.Fatal(err)
	}
	if len(cids) != 5 || !cids[0].Equals(root) {
		t.Fatalf("ObjectCIDs = %v, want root + 4 chunks", cids)
	}
	for i, c := range cids {
		b, err := s.Get(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) > MaxBlockSize {
			t.Fatalf("block %s is %d bytes", c, len(b))
		}
		if i == 0 {
			continue
		}
		if c.Type() != cid.Raw {
			t.Fatalf("chunk %s is not raw", c)
		}
		want := data[(i-1)*ChunkSize : min(i*ChunkSize, len(data))]
		if !bytes.Equal(b, want) {
			t.Fatalf("chunk %d content differs", i)
		}
	}
	// The root's links are exactly its chunks (GC and CAR rely on Links).
	rootData, _ := s.Get(root)
	links, err := Links(root, rootData)
	if err != nil || len(links) != 4 {
		t.Fatalf("Links(root) = %v, %v", links, err)
	}

	// Deterministic: the same bytes give the same root, in memory or streamed.
	if c2, err := s.PutObjectBytes(data); err != nil || !c2.Equals(root) {
		t.Fatalf("PutObjectBytes = %s, %v; want %s", c2, err, root)
	}
	if b, err := s.ReadObject(root, size); err != nil || !bytes.Equal(b, data) {
		t.Fatalf("ReadObject: %v", err)
	}
	_, err = s.ReadObject(root, size-1)
	wantErr(t, err, ErrTooLarge, root.String())
}

func TestObjectEdgeSizes(t *testing.T) {
	s := newStore(t, WithoutFsync())
	for _, tc := range []struct {
		size   int
		chunks int // 0: a single raw block
	}{{0, 0}, {1, 0}, {ChunkSize - 1, 0}, {ChunkSize, 0}, {ChunkSize + 1, 2}, {2 * ChunkSize, 2}, {2*ChunkSize + 1, 3}} {
		data := randBytes(t, tc.size)
		root, size, err := s.PutObject(bytes.NewReader(data))
		if err != nil || size != int64(tc.size) {
			t.Fatalf("size %d: PutObject = %d, %v", tc.size, size, err)
		}
		if tc.chunks == 0 {
			want, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(data)
			if !root.Equals(want) {
				t.Fatalf("size %d: root %s, want the raw block CID %s", tc.size, root, want)
			}
		} else {
			cids, err := s.ObjectCIDs(root)
			if err != nil || len(cids) != tc.chunks+1 {
				t.Fatalf("size %d: ObjectCIDs = %v, %v; want %d chunks", tc.size, cids, err, tc.chunks)
			}
		}
		got, gotSize := readAllObject(t, s, root)
		if gotSize != int64(tc.size) || !bytes.Equal(got, data) {
			t.Fatalf("size %d: round trip differs", tc.size)
		}
	}
}

// TestObjectRepeatedChunks: identical chunks are one block, listed once by
// ObjectCIDs, and read back in every position.
func TestObjectRepeatedChunks(t *testing.T) {
	s := newStore(t, WithoutFsync())
	data := make([]byte, 3*ChunkSize)
	root, err := s.PutObjectBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	cids, err := s.ObjectCIDs(root)
	if err != nil || len(cids) != 2 {
		t.Fatalf("ObjectCIDs = %v, %v; want root + 1 distinct chunk", cids, err)
	}
	if got, _ := readAllObject(t, s, root); !bytes.Equal(got, data) {
		t.Fatal("round trip differs")
	}
}

func TestObjectCorruptSecondChunk(t *testing.T) {
	s := newStore(t)
	data := randBytes(t, 3*ChunkSize)
	root, err := s.PutObjectBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	cids, _ := s.ObjectCIDs(root)
	second := cids[2]
	path := blockFile(s, second)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-1] ^= 0x80 // the very last byte: only a full verification sees it
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}

	rc, _, err := s.OpenObject(root)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	wantErr(t, err, ErrCorrupt, second.String(), "chunk 2 of 3")
	if !bytes.Equal(got, data[:ChunkSize]) {
		t.Fatalf("read %d bytes before the error, want exactly the verified first chunk", len(got))
	}
	if n, err := rc.Read(make([]byte, 10)); n != 0 || err == nil {
		t.Fatalf("Read after error = %d, %v; want a sticky error", n, err)
	}
	rc.Close()
	_, err = s.ReadObject(root, 1<<30)
	wantErr(t, err, ErrCorrupt, second.String())
}

func TestObjectMissingChunkAndNotObject(t *testing.T) {
	s := newStore(t, WithoutFsync())
	root, err := s.PutObjectBytes(randBytes(t, 2*ChunkSize+5))
	if err != nil {
		t.Fatal(err)
	}
	cids, _ := s.ObjectCIDs(root)
	if err := s.Delete(cids[3]); err != nil {
		t.Fatal(err)
	}
	_, _, err = s.OpenObject(root)
	wantErr(t, err, ErrNotFound, cids[3].String())

	other := mustPut(t, s, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "type", qp.String("something/else"))
	}))
	_, _, err = s.OpenObject(other)
	wantErr(t, err, ErrNotObject, other.String())
	_, err = s.ObjectCIDs(other)
	wantErr(t, err, ErrNotObject)
}

// TestChunkRootReadableByGoIPLDPrime decodes a root with go-ipld-prime's
// standard DAG-CBOR decoder (as `ipld`/Kubo tooling would), reads its fields
// and links generically, and checks the encoding is canonical (re-encodes to
// the same bytes, so the same object always has the same root CID).
func TestChunkRootReadableByGoIPLDPrime(t *testing.T) {
	s := newStore(t, WithoutFsync())
	data := randBytes(t, 2*ChunkSize+100)
	root, err := s.PutObjectBytes(data)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := s.Get(root)
	if err != nil {
		t.Fatal(err)
	}
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(raw)); err != nil {
		t.Fatalf("go-ipld-prime rejects the root node: %v", err)
	}
	n := nb.Build()
	typ, _ := lookupString(n, "type")
	size, _ := lookupInt(n, "size")
	if typ != ChunkedType || size != int64(len(data)) {
		t.Fatalf("root type %q size %d", typ, size)
	}
	links, err := traversal.SelectLinks(n)
	if err != nil || len(links) != 3 {
		t.Fatalf("SelectLinks = %v, %v", links, err)
	}
	cids, _ := s.ObjectCIDs(root)
	for i, l := range links {
		if !l.(cidlink.Link).Cid.Equals(cids[i+1]) {
			t.Fatalf("link %d = %s, want %s", i, l, cids[i+1])
		}
	}
	var re bytes.Buffer
	if err := dagcbor.Encode(n, &re); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(re.Bytes(), raw) {
		t.Fatal("root node is not in canonical DAG-CBOR form")
	}
}

// TestMaxObjectRootFits checks maxChunks against the real encoder: a root
// listing maxChunks full chunks fits in a block, one more does not.
func TestMaxObjectRootFits(t *testing.T) {
	chunk, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("c"))
	mk := func(n int) []byte {
		r := chunkRoot{size: int64(n) * ChunkSize, chunks: make([]chunkRef, n)}
		for i := range r.chunks {
			r.chunks[i] = chunkRef{c: chunk, size: ChunkSize}
		}
		b, err := encodeChunkRoot(r)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if b := mk(maxChunks); len(b) > MaxBlockSize {
		t.Fatalf("root with maxChunks=%d entries is %d bytes > MaxBlockSize", maxChunks, len(b))
	} else if r, err := decodeChunkRoot(b); err != nil || r.size != MaxObjectSize {
		t.Fatalf("decoding the largest root: %v", err)
	}
	if b := mk(maxChunks + 1); len(b) <= MaxBlockSize {
		t.Fatalf("maxChunks=%d is not the limit: %d entries still fit (%d bytes)", maxChunks, maxChunks+1, len(b))
	}
}

func TestDecodeChunkRootRejects(t *testing.T) {
	chunk, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("c"))
	cborChunk, _ := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte("c"))
	entry := func(c cid.Cid, n int64) qp.Assemble {
		return qp.Map(2, func(ma datamodel.MapAssembler) {
			qp.MapEntry(ma, "cid", lnk(c))
			qp.MapEntry(ma, "size", qp.Int(n))
		})
	}
	root := func(typ string, size int64, extra bool, entries ...qp.Assemble) []byte {
		return cborNode(t, func(ma datamodel.MapAssembler) {
			qp.MapEntry(ma, "type", qp.String(typ))
			qp.MapEntry(ma, "size", qp.Int(size))
			qp.MapEntry(ma, "chunks", qp.List(-1, func(la datamodel.ListAssembler) {
				for _, e := range entries {
					qp.ListEntry(la, e)
				}
			}))
			if extra {
				qp.MapEntry(ma, "x", qp.Int(1))
			}
		})
	}
	if _, err := decodeChunkRoot(root(ChunkedType, 11, false, entry(chunk, 10), entry(chunk, 1))); err != nil {
		t.Fatalf("valid root rejected: %v", err)
	}
	for name, b := range map[string][]byte{
		"wrong type":     root("igor/chunked/v2", 10, false, entry(chunk, 10)),
		"size mismatch":  root(ChunkedType, 11, false, entry(chunk, 10)),
		"empty chunk":    root(ChunkedType, 0, false, entry(chunk, 0)),
		"oversize chunk": root(ChunkedType, ChunkSize+1, false, entry(chunk, ChunkSize+1)),
		"no chunks":      root(ChunkedType, 0, false),
		"cbor chunk":     root(ChunkedType, 10, false, entry(cborChunk, 10)),
		"extra key":      root(ChunkedType, 10, true, entry(chunk, 10)),
		"negative size":  root(ChunkedType, -1, false, entry(chunk, 10)),
		"not cbor":       []byte("hello"),
	} {
		_, err := decodeChunkRoot(b)
		if err == nil || !strings.HasPrefix(err.Error(), "contentstore: not an object root") {
			t.Errorf("%s: decodeChunkRoot = %v, want ErrNotObject", name, err)
		}
	}
}
