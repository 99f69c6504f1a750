package lease

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Wire and disk encodings of Message and HardState. Both are a version byte
// followed by fixed-order fields: uvarints for numbers, a uvarint length
// and the bytes for strings. Decoding is strict — bounded lengths, a known
// type, no trailing bytes, and only the one canonical encoding (decode,
// re-encode, compare) — because messages come from the network and
// HardState from disk, and a lenient decoder is where a fencing bug hides.

const (
	wireVersion  = 1
	maxIDLen     = 128 // peer IDs and checkpoint IDs (CIDs) are far shorter
	maxWireBytes = 1 + 1 + 3*(1+maxIDLen) + 7*binary.MaxVarintLen64 + 1
)

// ErrBadEncoding wraps every decoding error of this file.
var ErrBadEncoding = errors.New("lease: bad encoding")

type wbuf struct{ b []byte }

func (w *wbuf) uvarint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *wbuf) str(s string)     { w.uvarint(uint64(len(s))); w.b = append(w.b, s...) }

type rbuf struct {
	b   []byte
	err error
}

func (r *rbuf) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{ErrBadEncoding}, args...)...)
	}
}

func (r *rbuf) byte1(what string) byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("truncated before %s", what)
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *rbuf) uvarint(what string) uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint for %s", what)
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *rbuf) str(what string) string {
	n := r.uvarint(what + " length")
	if r.err != nil {
		return ""
	}
	if n > maxIDLen || n > uint64(len(r.b)) {
		r.fail("%s is %d bytes (limit %d, %d left)", what, n, maxIDLen, len(r.b))
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// EncodeMessage encodes m for the wire. It fails for an unknown type or an
// over-long ID, so nothing the decoder would refuse is ever sent.
func EncodeMessage(m Message) ([]byte, error) {
	if m.Type < MsgAppend || m.Type > MsgHandoff {
		return nil, fmt.Errorf("%w: unknown message type %d", ErrInvalidMessage, m.Type)
	}
	for _, s := range []string{m.From, m.To, m.Checkpoint.ID} {
		if len(s) > maxIDLen {
			return nil, fmt.Errorf("%w: ID of %d bytes (limit %d)", ErrInvalidMessage, len(s), maxIDLen)
		}
	}
	w := &wbuf{b: make([]byte, 0, 96)}
	w.b = append(w.b, wireVersion, byte(m.Type))
	w.str(m.From)
	w.str(m.To)
	w.uvarint(m.Epoch)
	w.uvarint(m.Round)
	w.uvarint(m.Commit)
	w.uvarint(m.Checkpoint.Seq)
	w.str(m.Checkpoint.ID)
	w.uvarint(m.AcceptedAt)
	w.uvarint(m.Hint)
	var flags byte
	if m.Reject {
		flags = 1
	}
	w.b = append(w.b, flags)
	return w.b, nil
}

// DecodeMessage decodes a wire message. Errors wrap ErrBadEncoding.
// (The driver must also check that From is the authenticated peer of the
// stream the message came on.)
func DecodeMessage(data []byte) (Message, error) {
	if len(data) > maxWireBytes {
		return Message{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrBadEncoding, len(data), maxWireBytes)
	}
	r := &rbuf{b: data}
	if v := r.byte1("version"); r.err == nil && v != wireVersion {
		r.fail("version %d, this node speaks %d", v, wireVersion)
	}
	var m Message
	m.Type = MsgType(r.byte1("type"))
	if r.err == nil && (m.Type < MsgAppend || m.Type > MsgHandoff) {
		r.fail("unknown message type %d", m.Type)
	}
	m.From = r.str("from")
	m.To = r.str("to")
	m.Epoch = r.uvarint("epoch")
	m.Round = r.uvarint("round")
	m.Commit = r.uvarint("commit")
	m.Checkpoint.Seq = r.uvarint("checkpoint seq")
	m.Checkpoint.ID = r.str("checkpoint id")
	m.AcceptedAt = r.uvarint("acceptedAt")
	m.Hint = r.uvarint("hint")
	switch f := r.byte1("flags"); {
	case r.err != nil:
	case f > 1:
		r.fail("unknown flags 0x%x", f)
	default:
		m.Reject = f == 1
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return Message{}, r.err
	}
	if again, err := EncodeMessage(m); err != nil || !bytes.Equal(again, data) {
		return Message{}, fmt.Errorf("%w: not the canonical encoding", ErrBadEncoding)
	}
	return m, nil
}

// EncodeHardState encodes the state a node persists before it sends.
func EncodeHardState(h HardState) ([]byte, error) {
	if len(h.Accepted.ID) > maxIDLen {
		return nil, fmt.Errorf("%w: checkpoint ID of %d bytes (limit %d)", ErrInvalidCheckpoint, len(h.Accepted.ID), maxIDLen)
	}
	w := &wbuf{}
	w.b = append(w.b, wireVersion)
	w.uvarint(h.Epoch)
	w.uvarint(h.Accepted.Seq)
	w.str(h.Accepted.ID)
	w.uvarint(h.AcceptedAt)
	return w.b, nil
}

// DecodeHardState decodes persisted state strictly. A node that cannot
// decode its HardState must not take part (it might promise an epoch twice):
// the error is for the operator, never a reason to start from zero.
func DecodeHardState(data []byte) (HardState, error) {
	r := &rbuf{b: data}
	if v := r.byte1("version"); r.err == nil && v != wireVersion {
		r.fail("version %d, this node reads %d", v, wireVersion)
	}
	var h HardState
	h.Epoch = r.uvarint("epoch")
	h.Accepted.Seq = r.uvarint("accepted seq")
	h.Accepted.ID = r.str("accepted id")
	h.AcceptedAt = r.uvarint("acceptedAt")
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	if r.err == nil && h.AcceptedAt > h.Epoch {
		r.fail("accepted at epoch %d, above the promised epoch %d", h.AcceptedAt, h.Epoch)
	}
	if r.err != nil {
		return HardState{}, r.err
	}
	if again, err := EncodeHardState(h); err != nil || !bytes.Equal(again, data) {
		return HardState{}, fmt.Errorf("%w: not the canonical encoding", ErrBadEncoding)
	}
	return h, nil
}
