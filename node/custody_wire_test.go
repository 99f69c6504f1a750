package node

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

const fuzzDID = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"

func TestCustodyFrameRoundTrip(t *testing.T) {
	msg := lease.Message{Type: lease.MsgAppend, From: "12D3KooWA", To: "12D3KooWB", Epoch: 3, Round: 9, Commit: 4,
		Checkpoint: lease.Checkpoint{Seq: 5, ID: "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"}}
	gid := custody.GroupID{1, 2, 3, 4, 5, 6, 7, 8}
	fb, err := encodeFrame(fuzzDID, gid, msg)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readFrame(bufio.NewReader(bytes.NewReader(fb)))
	if err != nil || got.did != fuzzDID || !got.msg.Equal(msg) || got.gid != gid || got.blocks != nil {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	// The one-buffer encoder writes the documented layout: uvarint length,
	// then uvarint DID length, DID, group ID, lease.EncodeMessage.
	body, err := lease.EncodeMessage(msg)
	if err != nil {
		t.Fatal(err)
	}
	inner := append(binary.AppendUvarint(nil, uint64(len(fuzzDID))), fuzzDID...)
	inner = append(append(inner, gid[:]...), body...)
	if want := append(binary.AppendUvarint(nil, uint64(len(inner))), inner...); !bytes.Equal(fb, want) {
		t.Fatalf("encodeFrame wrote %x, the layout is %x", fb, want)
	}
	if maxCustodyFrame >= 1<<(7*frameLenRoom) {
		t.Fatalf("maxCustodyFrame %d needs a length prefix longer than frameLenRoom %d", maxCustodyFrame, frameLenRoom)
	}
	// One reader, many frames: a frame read does not change one read before
	// (the buffer is reused, the strings not), and repeated IDs come back
	// equal.
	var fr frameReader
	var stream []byte
	msgs := []lease.Message{msg, msg, {Type: lease.MsgAppendAck, From: "12D3KooWB", To: "12D3KooWA", Epoch: 3, Round: 9}}
	msgs[1].Round++
	for _, m := range msgs {
		f, err := encodeFrame(fuzzDID, gid, m)
		if err != nil {
			t.Fatal(err)
		}
		stream = append(stream, f...)
	}
	r := bufio.NewReader(bytes.NewReader(stream))
	var read []frame
	for range msgs {
		f, err := fr.read(r)
		if err != nil {
			t.Fatal(err)
		}
		read = append(read, f)
	}
	for i, f := range read {
		if f.did != fuzzDID || !f.msg.Equal(msgs[i]) {
			t.Fatalf("frame %d of a stream: %+v, want %+v", i, f.msg, msgs[i])
		}
	}
	bad := map[string][]byte{
		"zero length": {0},
		"too long":    binary.AppendUvarint(nil, maxCustodyFrame+1),
		"bad DID":     append([]byte{6, 4}, "abcd\x01\x01"...),
		"truncated":   fb[:len(fb)-1],
	}
	for name, b := range bad {
		if _, err := readFrame(bufio.NewReader(bytes.NewReader(b))); err == nil {
			t.Errorf("%s: accepted", name)
		} else if name != "truncated" && !errors.Is(err, ErrBadMessage) {
			t.Errorf("%s: %v, want ErrBadMessage", name, err)
		}
	}
}

func mustHash(b []byte) multihash.Multihash {
	h, err := multihash.Sum(b, multihash.SHA2_256, -1)
	if err != nil {
		panic(err)
	}
	return h
}

// TestPushFrame: pushed blocks round-trip; malformed pushes are refused
// with ErrBadMessage.
func TestPushFrame(t *testing.T) {
	gid := custody.GroupID{7}
	blocks := []pushedBlock{
		{c: cid.NewCidV1(cid.DagCBOR, mustHash([]byte{0xa0})), data: []byte{0xa0}},
		{c: cid.NewCidV1(cid.Raw, mustHash([]byte("state"))), data: []byte("state")},
	}
	fr, err := encodePush(fuzzDID, gid, blocks)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readFrame(bufio.NewReader(bytes.NewReader(fr)))
	if err != nil || got.did != fuzzDID || got.gid != gid || len(got.blocks) != 2 ||
		!got.blocks[0].c.Equals(blocks[0].c) || !bytes.Equal(got.blocks[1].data, blocks[1].data) {
		t.Fatalf("push round trip: %+v %v", got, err)
	}
	_, k := binary.Uvarint(fr) // the outer length prefix
	inner := fr[k:]
	prefix := inner[:1+len(fuzzDID)+len(gid)+1] // DID (one-byte length), group ID and the tag
	for name, body := range map[string][]byte{
		"no blocks":       {0},
		"too many blocks": binary.AppendUvarint(nil, pushMaxBlocks+1),
		"bad CID":         {1, 3, 1, 2, 3, 1, 'x'},
		"block too large": append([]byte{1, byte(blocks[1].c.ByteLen())}, append(blocks[1].c.Bytes(), binary.AppendUvarint(nil, pushLimit+1)...)...),
		"trailing":        append(append([]byte{}, inner[len(prefix):]...), 0),
	} {
		b := append(append([]byte{}, prefix...), body...)
		if _, err := decodeFrame(b); !errors.Is(err, ErrBadMessage) {
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
	push, _ := encodePush(fuzzDID, custody.GroupID{9}, []pushedBlock{{c: cid.NewCidV1(cid.Raw, mustHash([]byte("x"))), data: []byte("x")}})
	f.Add(push[1:])
	f.Fuzz(func(t *testing.T, body []byte) {
		fr, err := decodeFrame(body)
		if err != nil {
			if !errors.Is(err, ErrBadMessage) {
				t.Fatalf("error without ErrBadMessage: %v", err)
			}
			return
		}
		var again []byte
		if fr.blocks != nil {
			again, err = encodePush(fr.did, fr.gid, fr.blocks)
		} else {
			again, err = encodeFrame(fr.did, fr.gid, fr.msg)
		}
		if err != nil {
			t.Fatalf("decoded frame does not re-encode: %v", err)
		}
		if _, err := readFrame(bufio.NewReader(bytes.NewReader(again))); err != nil {
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

// A pair message travels in a frame with an empty DID; such a frame
// carrying a group's message is refused.
func TestPairFrame(t *testing.T) {
	msg := lease.Message{Type: lease.MsgPairAck, From: "a", To: "b", Round: 3, Session: 7, Gen: 1, Echo: 9, EchoGen: 2}
	b, err := encodePairFrame(msg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := readFrame(bufio.NewReader(bytes.NewReader(b)))
	if err != nil || !f.pair || !f.msg.Equal(msg) {
		t.Fatalf("pair frame: %v, pair=%t, %s", err, f.pair, lease.DescribeMessage(f.msg))
	}
	bad, err := encodePairFrame(lease.Message{Type: lease.MsgHandoff, From: "a", To: "b", Epoch: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := readFrame(bufio.NewReader(bytes.NewReader(bad))); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("a Handoff in a pair frame: %v, want ErrBadMessage", err)
	}
}
