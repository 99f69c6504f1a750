package contentstore

import (
	"bytes"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/ipld/go-ipld-prime/traversal"
)

// decoderLinks is what Links was (FuzzLinks compares them too): go-ipld-prime's strict DAG-CBOR decoder
// builds the node, and its links are selected from it. scanLinks must
// agree with it on every input.
func decoderLinks(data []byte) ([]cid.Cid, error) {
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := (dagcbor.DecodeOptions{AllowLinks: true}).Decode(nb, bytes.NewReader(data)); err != nil {
		return nil, err
	}
	lnks, err := traversal.SelectLinks(nb.Build())
	if err != nil {
		return nil, err
	}
	var out []cid.Cid
	for _, l := range lnks {
		c := l.(cidlink.Link).Cid
		if !slices.Contains(out, c) {
			out = append(out, c)
		}
	}
	return out, nil
}

// scanCases: the edges of the rules scanLinks shares with the decoder.
var scanCases = [][]byte{
	{0xa0}, {0x80}, {0xf6}, {0xf7}, {0xf4}, {0xf5},
	{0x18, 0x17},       // 23 in two bytes: not shortest
	{0x19, 0x00, 0xff}, // 255 in three bytes
	{0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // max uint64
	{0x3b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}, // min int64
	{0x3b, 0x80, 0, 0, 0, 0, 0, 0, 0},                      // below int64
	{0x5f, 0xff}, {0x9f, 0xff}, {0xbf, 0xff}, {0xff},       // indefinite, break
	{0xa2, 0x61, 0x61, 0x01, 0x61, 0x61, 0x02},     // duplicate key
	{0xa2, 0x61, 0x62, 0x01, 0x61, 0x61, 0x02},     // keys out of order
	{0xa1, 0x01, 0x01},                             // integer key
	{0xa1, 0xc1, 0x61, 0x61, 0x01},                 // tagged key
	{0xc1, 0x01}, {0xc1, 0xa0}, {0xc1, 0xc1, 0x01}, // tags on non-bytes; two tags
	{0xc1, 0x41, 0x00}, {0xd8, 0x2a, 0x40}, {0xd8, 0x2a, 0x41, 0x01},
	{0xf9, 0x7c, 0x00}, {0xf9, 0x7e, 0x00}, {0xf9, 0x3c, 0x00}, // half floats: inf, NaN, 1.0
	{0xfa, 0x3f, 0x80, 0x00, 0x00},       // single float 1.0
	{0xfb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0}, // NaN
	{0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0}, // 1.0
	{0xf0}, {0xf8, 0x20}, {0xf8, 0x10},   // simple values
	{0x62, 0xc3, 0x28},             // text that is not UTF-8
	{0x01, 0x01},                   // trailing byte
	{0x9a, 0xff, 0xff, 0xff, 0xff}, // huge declared array
	{0xdc, 0x01}, {0x1c},           // reserved ai
	{0xd8, 0x01, 0x01}, {0xd9, 0x00, 0x2a, 0x41, 0x00}, // tags not in shortest form
}

func TestScanLinksAgreesWithTheDecoder(t *testing.T) {
	nodes, roots, _ := fuzzSeeds(t)
	big := [][]byte{bigMap(40, -1, -1), bigMap(40, 35, 3), bigMap(40, 20, 3), bigMap(40, 32, 31), bigMap(33, 32, 0)}
	for _, data := range slices.Concat(nodes, roots, scanCases, big, [][]byte{linkNode(t, 2), nested(1023), nested(1024), nested(1025)}) {
		checkScan(t, data)
	}
	for i, m := range big {
		if _, err := scanLinks(m); (err == nil) != (i == 0) {
			t.Fatalf("map %d (only the first has no duplicate key): %v", i, err)
		}
	}
	if links, err := scanLinks(linkNode(t, 2)); err != nil || len(links) != 2 {
		t.Fatalf("two distinct links, one repeated: %v, %v", links, err)
	}
}

func checkScan(t *testing.T, data []byte) {
	want, werr := decoderLinks(data)
	got, gerr := scanLinks(data)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("% x: the decoder says %v, scanLinks %v", data, werr, gerr)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("% x: links %v, the decoder's %v", data, got, want)
	}
}

// linkNode is a list of links to n distinct blocks, the first one twice.
func linkNode(tb testing.TB, n int) []byte {
	out := []byte{0x80 + byte(n+1)}
	for i := range n + 1 {
		c := rawCID(string(rune('a' + i%n)))
		b := append([]byte{0x00}, c.Bytes()...)
		out = append(out, 0xd8, 0x2a, 0x58, byte(len(b)))
		out = append(out, b...)
	}
	return out
}

// bigMap is a map of n one-letter-or-two keys with null values; when dup ≥ 0
// the key at index dup repeats the one at index of.
func bigMap(n, dup, of int) []byte {
	out := []byte{0xb8, byte(n)}
	for i := range n {
		k := i
		if i == dup {
			k = of
		}
		out = append(out, 0x62, 'a'+byte(k/26), 'a'+byte(k%26), 0xf6)
	}
	return out
}

// nested is depth lists, each inside the one before, around an empty one.
func nested(depth int) []byte {
	return append(bytes.Repeat([]byte{0x81}, depth), 0x80)
}

// checkpointShaped is a DAG-CBOR map shaped like a checkpoint: a score of
// fields, six links, two 64-byte signatures.
func checkpointShaped(tb testing.TB) []byte {
	return cborNode(tb, func(ma datamodel.MapAssembler) {
		for i, f := range []string{"genesis", "manifest", "module", "prev", "state", "receipts"} {
			qp.MapEntry(ma, f, lnk(rawCID(f+string(rune('0'+i)))))
		}
		for _, f := range []string{"seq", "tick", "epoch", "budget", "price", "calls", "metered", "time", "state_size", "controls"} {
			qp.MapEntry(ma, f, qp.Int(1_700_000_000))
		}
		qp.MapEntry(ma, "agent", qp.String("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"))
		qp.MapEntry(ma, "holder", qp.String("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"))
		qp.MapEntry(ma, "agent_sig", qp.Bytes(bytes.Repeat([]byte{7}, 64)))
		qp.MapEntry(ma, "holder_sig", qp.Bytes(bytes.Repeat([]byte{9}, 64)))
	})
}

// BenchmarkLinks: Links (the one-pass scan) on a checkpoint-shaped block,
// against the decoder it replaced, measured in the same run (x-decoder:
// the scan's time as a fraction of the decoder's).
func BenchmarkLinks(b *testing.B) {
	data := checkpointShaped(b)
	checkScanB(b, data)
	var dec time.Duration
	n := 0
	for start := time.Now(); time.Since(start) < 200*time.Millisecond || n < 100; n++ {
		t0 := time.Now()
		if _, err := decoderLinks(data); err != nil {
			b.Fatal(err)
		}
		dec += time.Since(t0)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	for b.Loop() {
		if _, err := Links(fuzzCBORCID, data); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(per/(float64(dec.Nanoseconds())/float64(n)), "x-decoder")
}

func checkScanB(b *testing.B, data []byte) {
	want, err := decoderLinks(data)
	got, gerr := scanLinks(data)
	if err != nil || gerr != nil || !slices.Equal(got, want) || len(got) != 6 {
		b.Fatalf("scan %v %v, decoder %v %v", got, gerr, want, err)
	}
}
