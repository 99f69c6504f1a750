package lease

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
	"testing/quick"
)

func TestMessageRoundTrip(t *testing.T) {
	f := func(typ uint8, from, to, id string, epoch, round, commit, seq, at, hint uint64, reject bool) bool {
		m := Message{Type: MsgType(typ%6 + 1), From: clipID(from), To: clipID(to), Epoch: epoch, Round: round,
			Commit: commit, Checkpoint: Checkpoint{Seq: seq, ID: clipID(id)}, AcceptedAt: at, Reject: reject, Hint: hint}
		if round%3 == 1 && m.checkConf() == "" { // a changed configuration (joint every other time)
			m.Conf = Conf{Index: 1 + commit%5, Members: []string{clipID(from + "m"), clipID(to + "n")}}
			slices.Sort(m.Conf.Members)
			m.Conf.Members = slices.Compact(m.Conf.Members)
			if seq%2 == 0 {
				m.Conf.Joint = []string{"x", "y", "z"}
			}
			if m.checkConf() != "" { // only the index, or nothing, on this type
				m.Conf = Conf{Index: m.Conf.Index}
				if m.checkConf() != "" {
					m.Conf = Conf{}
				}
			}
		}
		data, err := EncodeMessage(m)
		if err != nil {
			return false
		}
		got, err := DecodeMessage(data)
		return err == nil && reflect.DeepEqual(got, m)
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
}

func clipID(s string) string {
	if len(s) > maxIDLen {
		return s[:maxIDLen]
	}
	return s
}

func TestDecodeMessageRejects(t *testing.T) {
	good, _ := EncodeMessage(Message{Type: MsgPromise, From: "a", To: "b", Epoch: 3, Checkpoint: Checkpoint{Seq: 2, ID: "cp2"}, AcceptedAt: 2})
	nonCanonical := append([]byte{}, good...)
	// epoch 3 as a two-byte varint (0x83 0x00) instead of 0x03
	i := bytes.IndexByte(nonCanonical[6:], 3) + 6
	nonCanonical = append(nonCanonical[:i], append([]byte{0x83, 0x00}, nonCanonical[i+1:]...)...)
	cases := map[string][]byte{
		"empty":                       {},
		"version 2, no configuration": append([]byte{2}, good[1:]...),
		"version 3":                   append([]byte{3}, good[1:]...),
		"unknown type":                append([]byte{1, 9}, good[2:]...),
		"truncated":                   good[:len(good)-1],
		"trailing":                    append(append([]byte{}, good...), 0),
		"bad flags":                   append(append([]byte{}, good[:len(good)-1]...), 2),
		"long id":                     append([]byte{1, 1, 0xff, 0x01}, bytes.Repeat([]byte{'x'}, 255)...),
		"non-canonical":               nonCanonical,
		"oversized blob":              bytes.Repeat([]byte{1}, maxWireBytes+1),
	}
	for name, data := range cases {
		if _, err := DecodeMessage(data); !errors.Is(err, ErrBadEncoding) {
			t.Errorf("%s: want ErrBadEncoding, got %v", name, err)
		}
	}
	confMsg := func(c Conf) []byte {
		// Encoded by hand: EncodeMessage refuses what the decoder must refuse.
		w := &wbuf{b: append([]byte{}, good...)}
		w.b[0] = wireConf
		w.conf(c)
		return w.b
	}
	for name, c := range map[string]Conf{
		"configuration 0 with lists": {Members: []string{"a"}},
		"no members":                 {Index: 2},
		"unsorted members":           {Index: 2, Members: []string{"b", "a"}},
		"duplicate joint member":     {Index: 2, Members: []string{"a"}, Joint: []string{"a", "a"}},
		"too many members":           {Index: 2, Members: strings.Split("a b c d e f g h i j", " ")},
	} {
		if _, err := DecodeMessage(confMsg(c)); !errors.Is(err, ErrBadEncoding) {
			t.Errorf("%s: want ErrBadEncoding, got %v", name, err)
		}
	}
	if _, err := DecodeMessage(confMsg(Conf{Index: 2, Members: []string{"a", "b"}, Joint: []string{"a", "c"}})); err != nil {
		t.Errorf("a valid configuration is refused: %v", err)
	}
	if _, err := EncodeMessage(Message{Type: MsgAppend, Conf: Conf{Index: 1}}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("a configuration without members encodes: %v", err)
	}
	if _, err := EncodeMessage(Message{Type: 0}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("unknown type encodes: %v", err)
	}
	if _, err := EncodeMessage(Message{Type: MsgAppend, From: strings.Repeat("p", maxIDLen+1)}); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("long ID encodes: %v", err)
	}
}

func TestHardStateRoundTripAndRejects(t *testing.T) {
	h := HardState{Epoch: math.MaxUint64, Accepted: Checkpoint{Seq: 7, ID: "bafy…"}, AcceptedAt: 5}
	data, err := EncodeHardState(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeHardState(data)
	if err != nil || !got.Equal(h) {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	if data[0] != wireVersion {
		t.Fatalf("a HardState of the founding configuration encodes as version %d; it must stay version 1 (older homes)", data[0])
	}
	hc := h
	hc.Conf = Conf{Index: 3, Members: []string{"a", "b", "n"}, Joint: []string{"a", "b", "d"}}
	dc, err := EncodeHardState(hc)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeHardState(dc); err != nil || !got.Equal(hc) {
		t.Fatalf("round trip with a configuration: %+v %v", got, err)
	}
	bad, _ := EncodeHardState(HardState{Epoch: 1, AcceptedAt: 2})
	for name, d := range map[string][]byte{
		"empty": nil, "truncated": data[:len(data)-1], "trailing": append(append([]byte{}, data...), 0),
		"accepted above promised": bad, "version": append([]byte{9}, data[1:]...),
	} {
		if _, err := DecodeHardState(d); !errors.Is(err, ErrBadEncoding) {
			t.Errorf("%s: want ErrBadEncoding, got %v", name, err)
		}
	}
}

func FuzzDecodeMessage(f *testing.F) {
	for _, m := range []Message{
		{Type: MsgAppend, From: "a", To: "b", Epoch: 1, Round: 4, Commit: 3, Checkpoint: Checkpoint{Seq: 3, ID: "cp3"}},
		{Type: MsgPromise, From: "b", To: "c", Epoch: 2, Reject: true, Hint: 5},
		{Type: MsgHandoff, From: "a", To: "c", Epoch: 9},
		{Type: MsgPairBeat, From: "a", To: "b", Round: 7, Session: 1 << 40, Gen: 2},
		{Type: MsgPairAck, From: "b", To: "a", Round: 7, Session: 99, Gen: 1, Echo: 1 << 40, EchoGen: 2},
	} {
		data, _ := EncodeMessage(m)
		f.Add(data)
	}
	f.Add([]byte{1, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeMessage(data)
		if err != nil {
			if !errors.Is(err, ErrBadEncoding) {
				t.Fatalf("error without ErrBadEncoding: %v", err)
			}
			return
		}
		again, err := EncodeMessage(m)
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("accepted bytes do not re-encode identically: %v", err)
		}
	})
}

func FuzzDecodeHardState(f *testing.F) {
	d, _ := EncodeHardState(HardState{Epoch: 4, Accepted: Checkpoint{Seq: 2, ID: "cp2"}, AcceptedAt: 3})
	f.Add(d)
	f.Add([]byte{1, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHardState(data)
		if err != nil {
			return
		}
		if h.AcceptedAt > h.Epoch {
			t.Fatalf("accepted above promised: %+v", h)
		}
		again, _ := EncodeHardState(h)
		if !bytes.Equal(again, data) {
			t.Fatal("accepted bytes do not re-encode identically")
		}
	})
}

// Pair-lease fields survive the wire, and a pair section that carries
// nothing (the flag set, every field zero) is refused: it is not the
// canonical encoding of the message without it.
func TestPairFieldsOnTheWire(t *testing.T) {
	for _, m := range []Message{
		{Type: MsgPairBeat, From: "a", To: "b", Round: 7, Session: 1 << 40, Gen: 2},
		{Type: MsgPairAck, From: "b", To: "a", Round: 7, Session: 99, Gen: 1, Echo: 1 << 40, EchoGen: 2},
		{Type: MsgAppend, From: "a", To: "b", Epoch: 3, Round: 1, Checkpoint: Checkpoint{Seq: 1, ID: "x"}, Session: 5, Gen: 1},
		{Type: MsgAppendAck, From: "b", To: "a", Epoch: 3, Round: 1, Checkpoint: Checkpoint{Seq: 1}, Session: 6, Gen: 4, Echo: 1},
	} {
		data, err := EncodeMessage(m)
		if err != nil {
			t.Fatalf("encode %s: %v", DescribeMessage(m), err)
		}
		back, err := DecodeMessage(data)
		if err != nil || !back.Equal(m) {
			t.Fatalf("%s does not survive the wire: %v, got %s", DescribeMessage(m), err, DescribeMessage(back))
		}
	}
	plain, _ := EncodeMessage(Message{Type: MsgPairBeat, From: "a", To: "b", Round: 1})
	// flags byte is right after the fixed fields; set flagPair and append
	// four zero uvarints.
	padded := append(append([]byte{}, plain[:len(plain)-1]...), plain[len(plain)-1]|flagPair, 0, 0, 0, 0)
	if _, err := DecodeMessage(padded); !errors.Is(err, ErrBadEncoding) {
		t.Fatalf("an empty pair section decoded: %v", err)
	}
}
