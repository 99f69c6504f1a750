package contentstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
	carv2 "github.com/ipld/go-car/v2"
	"github.com/ipld/go-car/v2/storage"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
)

// carBoundaries returns the offsets at which a CARv1 ends its header and each
// section (test oracle, parsed by hand from the spec's framing).
func carBoundaries(t *testing.T, car []byte) []int {
	t.Helper()
	var out []int
	off := 0
	for off < len(car) {
		l, n := binary.Uvarint(car[off:])
		if n <= 0 {
			t.Fatalf("bad varint at %d", off)
		}
		off += n + int(l)
		out = append(out, off)
	}
	if off != len(car) {
		t.Fatalf("sections overrun the CAR: %d > %d", off, len(car))
	}
	return out
}

func writeCAR(t *testing.T, s *Store, roots ...cid.Cid) ([]byte, int) {
	t.Helper()
	var buf bytes.Buffer
	n, err := s.WriteCAR(t.Context(), &buf, roots)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), n
}

func TestCARRoundTrip(t *testing.T) {
	src := newStore(t)
	d := buildDAG(t, src)
	extra := mustPut(t, src, cid.Raw, []byte("second root"))
	mustPut(t, src, cid.Raw, []byte("not exported"))
	car, n := writeCAR(t, src, d.head, extra)
	if n != len(d.all)+1 {
		t.Fatalf("WriteCAR wrote %d blocks, want %d", n, len(d.all)+1)
	}

	// An independent reader (go-car) sees each block once, parents first.
	br, err := carv2.NewBlockReader(bytes.NewReader(car))
	if err != nil {
		t.Fatal(err)
	}
	if br.Version != 1 || len(br.Roots) != 2 || !br.Roots[0].Equals(d.head) || !br.Roots[1].Equals(extra) {
		t.Fatalf("CAR version %d roots %v", br.Version, br.Roots)
	}
	var order []cid.Cid
	for {
		b, err := br.Next()
		if err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		order = append(order, b.Cid())
	}
	if len(order) != n {
		t.Fatalf("CAR holds %d blocks, WriteCAR said %d", len(order), n)
	}
	assertParentsFirst(t, src, order[:len(d.all)])

	dst := newStore(t)
	roots, blocks, err := dst.ImportCAR(t.Context(), bytes.NewReader(car))
	if err != nil {
		t.Fatal(err)
	}
	if blocks != n || len(roots) != 2 || !roots[0].Equals(d.head) || !roots[1].Equals(extra) {
		t.Fatalf("ImportCAR = %v, %d", roots, blocks)
	}
	want := cidStrings(append(append([]cid.Cid{}, d.all...), extra))
	got := allBlocks(t, dst)
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("imported blocks %v, want %v", got, want)
	}
	for _, c := range d.all {
		a, _ := src.Get(c)
		b, err := dst.Get(c)
		if err != nil || !bytes.Equal(a, b) {
			t.Fatalf("block %s differs after import: %v", c, err)
		}
	}
	// The imported DAG is complete and re-exports to the same bytes.
	if again, _ := writeCAR(t, dst, d.head, extra); !bytes.Equal(again, car) {
		t.Fatal("re-exported CAR differs")
	}
}

// TestWriteCARToPipe: *os.File implements WriterAt, which go-car would use
// for CARv2; a pipe cannot seek, so WriteCAR must stream.
func TestWriteCARToPipe(t *testing.T) {
	s := newStore(t, WithoutFsync())
	d := buildDAG(t, s)
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := s.WriteCAR(t.Context(), pw, []cid.Cid{d.head})
		pw.Close()
		done <- err
	}()
	dst := newStore(t, WithoutFsync())
	_, blocks, err := dst.ImportCAR(t.Context(), pr)
	if werr := <-done; werr != nil {
		t.Fatalf("WriteCAR to a pipe: %v", werr)
	}
	if err != nil || blocks != len(d.all) {
		t.Fatalf("ImportCAR from pipe = %d, %v", blocks, err)
	}
}

func TestImportCARv2(t *testing.T) {
	src := newStore(t, WithoutFsync())
	d := buildDAG(t, src)
	order, err := src.Reachable(t.Context(), []cid.Cid{d.head})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(t.TempDir(), "v2.car"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w, err := storage.NewWritable(f, []cid.Cid{d.head})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range order {
		b, _ := src.Get(c)
		if err := w.Put(t.Context(), c.KeyString(), b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Finalize(); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	dst := newStore(t, WithoutFsync())
	roots, blocks, err := dst.ImportCAR(t.Context(), f)
	if err != nil || blocks != len(d.all) || len(roots) != 1 || !roots[0].Equals(d.head) {
		t.Fatalf("ImportCAR(v2) = %v, %d, %v", roots, blocks, err)
	}
	if _, err := dst.Reachable(t.Context(), roots); err != nil {
		t.Fatal(err)
	}
}

// TestImportCARTruncatedEverywhere cuts a small CAR at every byte offset: a
// cut exactly at a section boundary is a shorter valid CAR (CARv1 has no
// block count) and imports exactly the blocks before it; any other cut is
// an ErrCorrupt error that says what was wrong.
func TestImportCARTruncatedEverywhere(t *testing.T) {
	src := newStore(t, WithoutFsync())
	leaf := mustPut(t, src, cid.Raw, []byte("a small leaf"))
	empty := mustPut(t, src, cid.Raw, nil)
	root := mustPut(t, src, cid.DagCBOR, cborNode(t, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "leaf", lnk(leaf))
		qp.MapEntry(ma, "empty", lnk(empty))
	}))
	car, _ := writeCAR(t, src, root)
	bounds := carBoundaries(t, car)
	blocksAt := map[int]int{}
	for i, b := range bounds {
		blocksAt[b] = i // bounds[0] is the header: 0 blocks
	}
	dst := newStore(t, WithoutFsync())
	for cut := 0; cut < len(car); cut++ {
		for _, c := range []cid.Cid{root, leaf, empty} {
			if err := dst.Delete(c); err != nil {
				t.Fatal(err)
			}
		}
		_, n, err := dst.ImportCAR(t.Context(), bytes.NewReader(car[:cut]))
		if want, ok := blocksAt[cut]; ok {
			if err != nil || n != want {
				t.Fatalf("cut at boundary %d: ImportCAR = %d blocks, %v; want %d, nil", cut, n, err, want)
			}
			if got := len(allBlocks(t, dst)); got != want {
				t.Fatalf("cut at boundary %d: %d blocks stored, want %d", cut, got, want)
			}
			continue
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("cut at %d of %d: ImportCAR = %d blocks, %v; want ErrCorrupt", cut, len(car), n, err)
		}
		if cut > bounds[0] && !strings.Contains(err.Error(), "truncated CAR after") {
			t.Fatalf("cut at %d: error %q does not say the CAR is truncated", cut, err)
		}
		if cut > 0 && cut < bounds[0] && !strings.Contains(err.Error(), "CAR header") {
			t.Fatalf("cut at %d: error %q does not blame the header", cut, err)
		}
	}
}

func TestImportCARTruncatedLarge(t *testing.T) {
	src := newStore(t, WithoutFsync())
	obj, err := src.PutObjectBytes(randBytes(t, 2*ChunkSize+3))
	if err != nil {
		t.Fatal(err)
	}
	car, _ := writeCAR(t, src, obj)
	bounds := carBoundaries(t, car)
	for _, cut := range []int{bounds[1] + 1, bounds[1] + 40, bounds[1] + ChunkSize/2, bounds[2] - 1, len(car) - 1} {
		dst := newStore(t, WithoutFsync())
		_, n, err := dst.ImportCAR(t.Context(), bytes.NewReader(car[:cut]))
		wantErr(t, err, ErrCorrupt, "truncated CAR after")
		whole := 0
		for _, b := range bounds[1:] {
			if b <= cut {
				whole++
			}
		}
		if n != whole {
			t.Fatalf("cut at %d: %d blocks imported, want the %d whole ones", cut, n, whole)
		}
	}
}

func TestImportCARTamperedBlock(t *testing.T) {
	src := newStore(t, WithoutFsync())
	d := buildDAG(t, src)
	car, _ := writeCAR(t, src, d.head)
	bounds := carBoundaries(t, car)
	// Flip the last byte of the third section (its data, not its CID).
	bad := bytes.Clone(car)
	bad[bounds[3]-1] ^= 0xff
	br, _ := carv2.NewBlockReader(bytes.NewReader(car))
	br.Next()
	br.Next()
	third, _ := br.Next()

	dst := newStore(t, WithoutFsync())
	_, n, err := dst.ImportCAR(t.Context(), bytes.NewReader(bad))
	wantErr(t, err, ErrCorrupt, third.Cid().String())
	if n != 2 {
		t.Fatalf("%d blocks imported before the tampered one, want 2", n)
	}
	if ok, _ := dst.Has(third.Cid()); ok {
		t.Fatal("tampered block was stored")
	}
}

func TestImportCARLimitsAndGarbage(t *testing.T) {
	dst := newStore(t, WithoutFsync())
	imp := func(b []byte) error {
		_, _, err := dst.ImportCAR(t.Context(), bytes.NewReader(b))
		return err
	}
	// A block larger than MaxBlockSize (go-car itself would write it).
	big := make([]byte, MaxBlockSize+1)
	bigCID, _ := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: 0x12, MhLength: -1}.Sum(big)
	var buf bytes.Buffer
	w, err := storage.NewWritable(&buf, []cid.Cid{bigCID}, carv2.WriteAsCarV1(true))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Put(t.Context(), bigCID.KeyString(), big); err != nil {
		t.Fatal(err)
	}
	wantErr(t, imp(buf.Bytes()), ErrTooLarge, bigCID.String())

	// A header claiming 2 MiB.
	hdr := binary.AppendUvarint(nil, 2<<20)
	wantErr(t, imp(append(hdr, make([]byte, 100)...)), ErrTooLarge, "header")

	// A dag-pb block: valid CAR, but not a block this store holds.
	pb, _ := cid.Prefix{Version: 1, Codec: cid.DagProtobuf, MhType: 0x12, MhLength: -1}.Sum([]byte("pb"))
	buf.Reset()
	w, _ = storage.NewWritable(&buf, []cid.Cid{pb}, carv2.WriteAsCarV1(true))
	if err := w.Put(t.Context(), pb.KeyString(), []byte("pb")); err != nil {
		t.Fatal(err)
	}
	wantErr(t, imp(buf.Bytes()), ErrBadCID, pb.String())

	for name, b := range map[string][]byte{
		"empty":       nil,
		"text":        []byte("this is not a CAR file at all"),
		"zero header": {0},
		"bad version": append(binary.AppendUvarint(nil, 11), []byte("\xa2eroots\x80gversion\x03")...),
	} {
		if err := imp(b); !errors.Is(err, ErrCorrupt) {
			t.Errorf("%s: ImportCAR = %v, want ErrCorrupt", name, err)
		}
	}
}

func TestWriteCARMissingBlock(t *testing.T) {
	s := newStore(t, WithoutFsync())
	d := buildDAG(t, s)
	if err := s.Delete(d.leaf); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, err := s.WriteCAR(t.Context(), &buf, []cid.Cid{d.head})
	wantErr(t, err, ErrNotFound, d.leaf.String())
	if buf.Len() != 0 {
		t.Fatalf("%d bytes written before the missing block was reported", buf.Len())
	}
	_, err = s.WriteCAR(t.Context(), &buf, nil)
	if err == nil {
		t.Fatal("WriteCAR with no roots succeeded")
	}
}
