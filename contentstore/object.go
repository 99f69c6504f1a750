package contentstore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
)

// ChunkedType is the "type" field of a chunked object's root node.
//
// Root node (DAG-CBOR, keys in canonical order):
//
//	{"size": <total bytes>, "type": "igor/chunked/v1",
//	 "chunks": [{"cid": <link to raw chunk>, "size": <chunk bytes>}, ...]}
//
// Every chunk is a raw block of 1..ChunkSize bytes (PutObject writes
// ChunkSize for all but the last); sizes add up to "size".
const ChunkedType = "igor/chunked/v1"

// maxChunks is how many chunk entries fit in one root node of at most
// MaxBlockSize: each entry encodes to 56 bytes (map header 1, "cid" 4, link
// 2+2+37, "size" 5, size 5) and the rest of the node to at most 48 bytes.
// TestMaxObjectRootFits checks this against the real encoder.
const maxChunks = (MaxBlockSize - 48) / 56

// MaxObjectSize is the largest object PutObject accepts (about 18.3 GiB):
// its root node must itself fit in one block.
const MaxObjectSize = int64(maxChunks) * ChunkSize

type chunkRef struct {
	c    cid.Cid
	size int64
}

type chunkRoot struct {
	size   int64
	chunks []chunkRef
}

func encodeChunkRoot(r chunkRoot) ([]byte, error) {
	n, err := qp.BuildMap(basicnode.Prototype.Any, 3, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "type", qp.String(ChunkedType))
		qp.MapEntry(ma, "size", qp.Int(r.size))
		qp.MapEntry(ma, "chunks", qp.List(int64(len(r.chunks)), func(la datamodel.ListAssembler) {
			for _, ch := range r.chunks {
				qp.ListEntry(la, qp.Map(2, func(ma datamodel.MapAssembler) {
					qp.MapEntry(ma, "cid", qp.Link(cidlink.Link{Cid: ch.c}))
					qp.MapEntry(ma, "size", qp.Int(ch.size))
				}))
			}
		}))
	})
	if err != nil {
		return nil, fmt.Errorf("contentstore: building object root: %w", err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(n, &buf); err != nil {
		return nil, fmt.Errorf("contentstore: encoding object root: %w", err)
	}
	return buf.Bytes(), nil
}

// decodeChunkRoot parses and strictly validates a chunked-object root node.
// Errors wrap ErrNotObject.
func decodeChunkRoot(data []byte) (chunkRoot, error) {
	bad := func(format string, a ...any) (chunkRoot, error) {
		return chunkRoot{}, fmt.Errorf("%w: %s", ErrNotObject, fmt.Sprintf(format, a...))
	}
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := (dagcbor.DecodeOptions{AllowLinks: true}).Decode(nb, bytes.NewReader(data)); err != nil {
		return bad("not DAG-CBOR: %v", err)
	}
	n := nb.Build()
	if n.Kind() != datamodel.Kind_Map || n.Length() != 3 {
		return bad("want a map with keys type, size, chunks")
	}
	typ, err := lookupString(n, "type")
	if err != nil || typ != ChunkedType {
		return bad("type is not %q", ChunkedType)
	}
	size, err := lookupInt(n, "size")
	if err != nil || size < 0 || size > MaxObjectSize {
		return bad("size missing or out of range")
	}
	list, err := n.LookupByString("chunks")
	if err != nil || list.Kind() != datamodel.Kind_List {
		return bad("chunks is not a list")
	}
	if l := list.Length(); l < 1 || l > maxChunks {
		return bad("%d chunks; want 1..%d", l, maxChunks)
	}
	r := chunkRoot{size: size, chunks: make([]chunkRef, 0, list.Length())}
	var sum int64
	for it := list.ListIterator(); !it.Done(); {
		i, e, err := it.Next()
		if err != nil {
			return bad("chunk list: %v", err)
		}
		if e.Kind() != datamodel.Kind_Map || e.Length() != 2 {
			return bad("chunk %d: want a map with keys cid, size", i)
		}
		ln, err := e.LookupByString("cid")
		if err != nil {
			return bad("chunk %d: no cid", i)
		}
		lnk, err := ln.AsLink()
		if err != nil {
			return bad("chunk %d: cid is not a link", i)
		}
		cl, ok := lnk.(cidlink.Link)
		if !ok || checkCID(cl.Cid) != nil || cl.Cid.Type() != cid.Raw {
			return bad("chunk %d: %v is not a raw CIDv1 sha2-256 link", i, lnk)
		}
		cs, err := lookupInt(e, "size")
		if err != nil || cs < 1 || cs > ChunkSize {
			return bad("chunk %d: size missing or not in 1..%d", i, ChunkSize)
		}
		sum += cs
		r.chunks = append(r.chunks, chunkRef{c: cl.Cid, size: cs})
	}
	if sum != size {
		return bad("chunk sizes add up to %d, root says %d", sum, size)
	}
	return r, nil
}

func lookupString(n datamodel.Node, key string) (string, error) {
	v, err := n.LookupByString(key)
	if err != nil {
		return "", err
	}
	return v.AsString()
}

func lookupInt(n datamodel.Node, key string) (int64, error) {
	v, err := n.LookupByString(key)
	if err != nil {
		return 0, err
	}
	return v.AsInt()
}

// PutObject stores the bytes read from r until EOF. An object of at most
// ChunkSize bytes (including an empty one) becomes a single raw block, whose
// CID is the object CID; a larger one becomes raw chunks of ChunkSize plus a
// DAG-CBOR root node (see ChunkedType), whose CID is returned. It holds at
// most one chunk in memory. Blocks already written when an error occurs stay
// until GC removes them.
//
// Errors: ErrTooLarge (> MaxObjectSize), ErrClosed, read errors from r.
func (s *Store) PutObject(r io.Reader) (root cid.Cid, size int64, err error) {
	bp := chunkPool.Get().(*[]byte)
	defer chunkPool.Put(bp)
	buf := *bp
	var (
		chunks  []chunkRef
		peek    [1]byte
		hasPeek bool
	)
	for {
		off := 0
		if hasPeek {
			buf[0], off = peek[0], 1
		}
		n, err := io.ReadFull(r, buf[off:])
		n += off
		last := false
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			last = true
		case err != nil:
			return cid.Undef, 0, fmt.Errorf("contentstore: reading object: %w", err)
		default:
			// A full chunk: peek one byte to learn whether it is the last,
			// so an object of exactly ChunkSize stays a single raw block.
			_, perr := io.ReadFull(r, peek[:])
			switch {
			case perr == io.EOF:
				last = true
			case perr != nil:
				return cid.Undef, 0, fmt.Errorf("contentstore: reading object: %w", perr)
			}
			hasPeek = !last
		}
		if last && len(chunks) == 0 {
			c, err := s.Put(cid.Raw, buf[:n])
			return c, int64(n), err
		}
		if len(chunks) == maxChunks {
			return cid.Undef, 0, fmt.Errorf("%w: object exceeds MaxObjectSize (%d bytes)", ErrTooLarge, MaxObjectSize)
		}
		c, err := s.Put(cid.Raw, buf[:n])
		if err != nil {
			return cid.Undef, 0, err
		}
		chunks = append(chunks, chunkRef{c: c, size: int64(n)})
		size += int64(n)
		if last {
			break
		}
	}
	data, err := encodeChunkRoot(chunkRoot{size: size, chunks: chunks})
	if err != nil {
		return cid.Undef, 0, err
	}
	root, err = s.Put(cid.DagCBOR, data)
	return root, size, err
}

// chunkPool recycles PutObject's chunk buffers: allocating and zeroing 1 MiB
// per call cost more than storing a small object. Buffers are never
// retained past PutObject (blocks are written out, not kept).
var chunkPool = sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}

// PutObjectBytes is PutObject for an in-memory payload.
func (s *Store) PutObjectBytes(b []byte) (cid.Cid, error) {
	c, _, err := s.PutObject(bytes.NewReader(b))
	return c, err
}

// loadObject returns the root's chunk list; a raw root is its own only chunk.
func (s *Store) loadObject(root cid.Cid) (chunkRoot, []byte, error) {
	if err := checkCID(root); err != nil {
		return chunkRoot{}, nil, err
	}
	data, err := s.Get(root)
	if err != nil {
		return chunkRoot{}, nil, err
	}
	if root.Type() == cid.Raw {
		return chunkRoot{size: int64(len(data))}, data, nil
	}
	cr, err := decodeChunkRoot(data)
	if err != nil {
		return chunkRoot{}, nil, fmt.Errorf("object %s: %w", root, err)
	}
	return cr, nil, nil
}

// OpenObject opens the object rooted at root for streaming and returns its
// size. Every chunk is read whole and verified against its CID before any of
// its bytes are returned, and its length is checked against the root; a
// damaged chunk makes Read fail with ErrCorrupt naming that chunk. OpenObject
// checks up front that every chunk is present.
//
// Errors: ErrNotFound (root or a chunk missing), ErrCorrupt, ErrNotObject,
// ErrBadCID, ErrClosed; Read may return ErrCorrupt, ErrNotFound, ErrClosed.
func (s *Store) OpenObject(root cid.Cid) (io.ReadCloser, int64, error) {
	cr, data, err := s.loadObject(root)
	if err != nil {
		return nil, 0, err
	}
	if data != nil {
		return io.NopCloser(bytes.NewReader(data)), cr.size, nil
	}
	for _, ch := range cr.chunks {
		ok, err := s.Has(ch.c)
		if err != nil {
			return nil, 0, err
		}
		if !ok {
			return nil, 0, fmt.Errorf("%w: chunk %s of object %s", ErrNotFound, ch.c, root)
		}
	}
	return &objectReader{s: s, root: root, chunks: cr.chunks}, cr.size, nil
}

type objectReader struct {
	s      *Store
	root   cid.Cid
	chunks []chunkRef
	next   int    // index of the next chunk to load
	cur    []byte // verified, unread part of the current chunk
	err    error  // sticky
}

func (o *objectReader) Read(p []byte) (int, error) {
	for len(o.cur) == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if o.next == len(o.chunks) {
			o.err = io.EOF
			return 0, io.EOF
		}
		ch := o.chunks[o.next]
		data, err := o.s.Get(ch.c)
		if err == nil && int64(len(data)) != ch.size {
			err = fmt.Errorf("%w: chunk %s is %d bytes, root says %d", ErrCorrupt, ch.c, len(data), ch.size)
		}
		if err != nil {
			o.err = fmt.Errorf("object %s, chunk %d of %d: %w", o.root, o.next+1, len(o.chunks), err)
			return 0, o.err
		}
		o.cur = data
		o.next++
	}
	n := copy(p, o.cur)
	o.cur = o.cur[n:]
	return n, nil
}

func (o *objectReader) Close() error {
	o.cur, o.chunks = nil, nil
	if o.err == nil || o.err == io.EOF {
		o.err = errors.New("contentstore: read from closed object reader")
	}
	return nil
}

// ReadObject reads a whole object into memory, refusing objects larger than
// max bytes before reading any chunk.
//
// Errors: ErrTooLarge, plus those of OpenObject.
func (s *Store) ReadObject(root cid.Cid, max int64) ([]byte, error) {
	rc, size, err := s.OpenObject(root)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	if size > max {
		return nil, fmt.Errorf("%w: object %s is %d bytes, limit is %d", ErrTooLarge, root, size, max)
	}
	out := make([]byte, size)
	if _, err := io.ReadFull(rc, out); err != nil {
		return nil, err
	}
	return out, nil
}

// ObjectCIDs returns the blocks making up an object: the root, then each
// distinct chunk in order (a raw root is the whole object).
//
// Errors: ErrNotFound (root missing), ErrCorrupt, ErrNotObject, ErrBadCID, ErrClosed.
func (s *Store) ObjectCIDs(root cid.Cid) ([]cid.Cid, error) {
	cr, _, err := s.loadObject(root)
	if err != nil {
		return nil, err
	}
	out := []cid.Cid{root}
	seen := map[cid.Cid]bool{root: true}
	for _, ch := range cr.chunks {
		if !seen[ch.c] {
			seen[ch.c] = true
			out = append(out, ch.c)
		}
	}
	return out, nil
}
