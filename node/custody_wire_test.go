package node

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

const fuzzDID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"

func TestCustodyFrameRoundTrip(t *testing.T) {
	msg := lease.Message{Type: lease.MsgAppend, From: "12D3KooWA", To: "12D3KooWB", Epoch: 3, Round: 9, Commit: 4,
		Checkpoint: lease.Checkpoint{Seq: 5, ID: "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"}}
	gid := custody.GroupID{1, 2, 3, 4, 5, 6, 7, 8}
	frame, err := encodeFrame(fuzzDID, gid, msg)
	if err != nil {
		t.Fatal(err)
	}
	did, ggot, got, err := readFrame(bufio.NewReader(bytes.NewReader(frame)))
	if err != nil || did != fuzzDID || !got.Equal(msg) || ggot != gid {
		t.Fatalf("round trip: %q %v %+v %v", did, ggot, got, err)
	}
	bad := map[string][]byte{
		"zero length": {0},
		"too long":    binary.AppendUvarint(nil, maxCustodyFrame+1),
		"bad DID":     append([]byte{6, 4}, "abcd\x01\x01"...),
		"truncated":   frame[:len(frame)-1],
	}
	for name, b := range bad {
		if _, _, _, err := readFrame(bufio.NewReader(bytes.NewReader(b))); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name != "truncated" && !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v, want ErrBadMessage", name, err)
		}
	}
}

// FuzzCustodyFrame: any bytes from a custody stream decode to a frame that
// re-encodes to the same bytes, or to an error — never a panic.
func FuzzCustodyFrame(f *testing.F) {
	msg := lease.Message{Type: lease.MsgPromise, From: "a", To: "b", Epoch: 2, Checkpoint: lease.Checkpoint{Seq: 1, ID: "x"}, AcceptedAt: 1}
	frame, _ := encodeFrame(fuzzDID, custody.GroupID{9}, msg)
	f.Add(frame[1:])
	f.Add([]byte{})
	f.Add([]byte{5, 'd', 'i', 'd', ':', 'k'})
	f.Fuzz(func(t *testing.T, body []byte) {
		did, gid, m, err := decodeFrame(body)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error without ErrBadMessage: %v", err)
			}
			return
		}
		again, err := encodeFrame(did, gid, m)
		if err != nil {
			t.Fatalf("decoded frame does not re-encode: %v", err)
		}
		if _, _, _, err := readFrame(bufio.NewReader(bytes.NewReader(again))); err != nil {
			t.Fatalf("re-encoded frame does not decode: %v", err)
		}
	})
}

// FuzzCustodyOffer: the offer decoder refuses or decodes, never panics, and
// never accepts more than maxLeaseMsg bytes.
func FuzzCustodyOffer(f *testing.F) {
	var buf bytes.Buffer
	writeMsg(&buf, custodyOffer{Version: 2, DID: fuzzDID, Head: "bafy", Members: []string{"a"}, TermMs: 1000})
	f.Add(buf.Bytes())
	f.Add([]byte{0, 0, 0, 2, '{', '}'})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		var o custodyOffer
		err := readMsg(bytes.NewReader(data), &o)
		if err != nil && !errors.Is(err, ErrBadMessage) {
			t.Fatalf("error without ErrBadMessage: %v", err)
		}
	})
}
