package exchange

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

func testCIDs(n int) []cid.Cid {
	out := make([]cid.Cid, n)
	for i := range out {
		codec := uint64(cid.Raw)
		if i%2 == 1 {
			codec = cid.DagCBOR
		}
		c, _ := cid.Prefix{Version: 1, Codec: codec, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte{byte(i), byte(i >> 8)})
		out[i] = c
	}
	return out
}

func TestRequestRoundTrip(t *testing.T) {
	for _, n := range []int{1, 2, MaxRequestCIDs} {
		cs := testCIDs(n)
		frame, err := appendRequest(nil, cs)
		if err != nil {
			t.Fatal(err)
		}
		got, err := readRequest(bufio.NewReader(bytes.NewReader(frame)))
		if err != nil || len(got) != n {
			t.Fatalf("%d CIDs: got %d, %v", n, len(got), err)
		}
		for i := range cs {
			if !got[i].Equals(cs[i]) {
				t.Fatalf("CID %d: %s, want %s", i, got[i], cs[i])
			}
		}
	}
	// The largest legal request fits the size cap.
	big := make([]cid.Cid, MaxRequestCIDs)
	d := bytes.Repeat([]byte{7}, 64)
	h, err := mh.Encode(d, mh.SHA2_512)
	if err != nil {
		t.Fatal(err)
	}
	for i := range big {
		big[i] = cid.NewCidV1(cid.DagCBOR, h)
	}
	frame, err := appendRequest(nil, big)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readRequest(bufio.NewReader(bytes.NewReader(frame))); err != nil {
		t.Fatalf("64 sha2-512 CIDs: %v", err)
	}
	if _, err := appendRequest(nil, testCIDs(MaxRequestCIDs+1)); !errors.Is(err, ErrBadArgument) {
		t.Errorf("65 CIDs: %v", err)
	}
	if _, err := appendRequest(nil, nil); !errors.Is(err, ErrBadArgument) {
		t.Errorf("no CIDs: %v", err)
	}
	// Clean end of stream between frames is io.EOF, inside one is not.
	if _, err := readRequest(bufio.NewReader(bytes.NewReader(nil))); err != io.EOF {
		t.Errorf("empty stream: %v, want io.EOF", err)
	}
	if _, err := readRequest(bufio.NewReader(bytes.NewReader(frame[:10]))); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut frame: %v, want io.ErrUnexpectedEOF", err)
	}
}

func TestResponses(t *testing.T) {
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	blocks := [][]byte{[]byte("hello"), {}, bytes.Repeat([]byte{1}, MaxBlockSize)}
	for _, b := range blocks {
		writeBlock(bw, b)
		writeDontHave(bw)
	}
	bw.Flush()
	br := bufio.NewReader(&buf)
	for i, b := range blocks {
		got, have, err := readResponse(br, MaxBlockSize)
		if err != nil || !have || !bytes.Equal(got, b) {
			t.Fatalf("block %d: have %v, %v", i, have, err)
		}
		if _, have, err := readResponse(br, MaxBlockSize); err != nil || have {
			t.Fatalf("don't-have %d: have %v, %v", i, have, err)
		}
	}
	if _, _, err := readResponse(br, MaxBlockSize); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("end of stream where a response is due: %v", err)
	}
	for name, c := range map[string]struct {
		in   []byte
		want error
	}{
		"too large":       {append([]byte{statusBlock}, binary.AppendUvarint(nil, MaxBlockSize+1)...), ErrTooLarge},
		"huge varint":     {[]byte{statusBlock, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01}, ErrTooLarge},
		"overlong varint": {[]byte{statusBlock, 0x85, 0x00}, errMalformed},
		"bad status":      {[]byte{7}, errMalformed},
		"cut block":       {[]byte{statusBlock, 5, 'a'}, io.ErrUnexpectedEOF},
		"cut length":      {[]byte{statusBlock, 0x80}, io.ErrUnexpectedEOF},
	} {
		if _, _, err := readResponse(bufio.NewReader(bytes.NewReader(c.in)), MaxBlockSize); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", name, err, c.want)
		}
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, n := range []int{1, 3} {
		frame, _ := appendRequest(nil, testCIDs(n))
		_, k := binary.Uvarint(frame)
		f.Add(frame[k:])
	}
	f.Add([]byte{wireVersion, 0})
	f.Add([]byte{2, 1, 1, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		cs, err := decodeRequest(body)
		if err != nil {
			if !errors.Is(err, errMalformed) {
				t.Fatalf("error %v does not wrap errMalformed", err)
			}
			return
		}
		if len(cs) < 1 || len(cs) > MaxRequestCIDs {
			t.Fatalf("%d CIDs accepted", len(cs))
		}
		// One encoding per request: re-encoding gives the same bytes.
		frame, err := appendRequest(nil, cs)
		if err != nil {
			t.Fatalf("accepted request does not re-encode: %v", err)
		}
		_, k := binary.Uvarint(frame)
		if !bytes.Equal(frame[k:], body) {
			t.Fatalf("re-encoded %x, decoded from %x", frame[k:], body)
		}
	})
}

// FuzzReadStream feeds arbitrary bytes to both readers, as a hostile peer
// would: they must never panic, never accept more than the caps, and end
// with an error rather than loop.
func FuzzReadStream(f *testing.F) {
	frame, _ := appendRequest(nil, testCIDs(2))
	f.Add(append(frame, frame...))
	var buf bytes.Buffer
	bw := bufio.NewWriter(&buf)
	writeBlock(bw, []byte("block"))
	writeDontHave(bw)
	bw.Flush()
	f.Add(buf.Bytes())
	f.Add([]byte{statusBlock, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, in []byte) {
		br := bufio.NewReader(bytes.NewReader(in))
		for i := 0; ; i++ {
			cs, err := readRequest(br)
			if err != nil {
				break
			}
			if len(cs) < 1 || len(cs) > MaxRequestCIDs || i > len(in) {
				t.Fatalf("request %d: %d CIDs", i, len(cs))
			}
		}
		const max = 1 << 10
		br = bufio.NewReader(bytes.NewReader(in))
		for i := 0; ; i++ {
			data, have, err := readResponse(br, max)
			if err != nil {
				break
			}
			if len(data) > max || (!have && data != nil) || i > len(in) {
				t.Fatalf("response %d: %d bytes, have %v", i, len(data), have)
			}
		}
	})
}
