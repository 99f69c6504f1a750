package lease

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
)

// Wire and disk encodings of Message and HardState. Both are a version byte
// followed by fixed-order fields: uvarints for numbers, a uvarint length
// and the bytes for strings. Decoding is strict — bounded lengths, a known
// type, no trailing bytes, and only the one canonical encoding (decode,
// re-encode, compare) — because messages come from the network and
// HardState from disk, and a lenient decoder is where a fencing bug hides.

const (
	wireVersion = 1
	// wireConf: version 2 appends a configuration (index, members, joint
	// members). It is used only when the configuration index is non-zero,
	// so a group that never changed encodes exactly as before.
	wireConf     = 2
	maxIDLen     = 128 // peer IDs and checkpoint IDs (CIDs) are far shorter
	maxConfBytes = binary.MaxVarintLen64 + 2*(1+MaxMembers*(1+maxIDLen))
	maxWireBytes = 1 + 1 + 3*(1+maxIDLen) + 11*binary.MaxVarintLen64 + 1 + maxConfBytes
	// flagReject, flagPair: the flags byte. flagPair: the pair-lease
	// fields (Session, Gen, Echo) follow it; set exactly when one is
	// non-zero, so a message without them encodes as before.
	flagReject = 1
	flagPair   = 2
)

// MaxMessageBytes bounds an encoded Message (transports size frames by it).
const MaxMessageBytes = maxWireBytes

// ErrBadEncoding wraps every decoding error of this file.
var ErrBadEncoding = errors.New("lease: bad encoding")

type wbuf struct{ b []byte }

func (w *wbuf) uvarint(v uint64) { w.b = binary.AppendUvarint(w.b, v) }
func (w *wbuf) str(s string)     { w.uvarint(uint64(len(s))); w.b = append(w.b, s...) }

func (w *wbuf) conf(c Conf) {
	w.uvarint(c.Index)
	for _, set := range [][]string{c.Members, c.Joint} {
		w.b = append(w.b, byte(len(set)))
		for _, p := range set {
			w.str(p)
		}
	}
}

func (r *rbuf) conf() Conf {
	var c Conf
	c.Index = r.uvarint("configuration index")
	for i, what := range []string{"members", "joint members"} {
		n := int(r.byte1(what + " count"))
		if r.err != nil {
			break
		}
		if n > MaxMembers {
			r.fail("%d %s, the limit is %d", n, what, MaxMembers)
			break
		}
		var set []string
		for range n {
			set = append(set, r.str(what))
		}
		if i == 0 {
			c.Members = set
		} else {
			c.Joint = set
		}
	}
	return c
}

// checkConf reports what is wrong with m's configuration field ("" when
// nothing): an Append or granted Promise carries a whole configuration, an
// AppendAck only its index, other messages none.
func (m Message) checkConf() string {
	switch {
	case m.Type == MsgAppend || m.Type == MsgPromise && !m.Reject:
		return m.Conf.check()
	case m.Type == MsgAppendAck && !m.Reject:
		if len(m.Conf.Members)+len(m.Conf.Joint) > 0 {
			return "member lists on an AppendAck"
		}
		return ""
	case !m.Conf.equal(Conf{}):
		return fmt.Sprintf("a configuration on a %s", m.Type)
	}
	return ""
}

func version(c Conf) byte {
	if c.Index == 0 {
		return wireVersion
	}
	return wireConf
}

type rbuf struct {
	b   []byte
	err error
	// intern, if set, makes the strings decoded (IDs), letting a reader
	// reuse the few it meets again and again instead of allocating each.
	intern func([]byte) string
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
	if r.err != nil {
		return ""
	}
	n, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.fail("bad varint for %s length", what)
		return ""
	}
	r.b = r.b[k:]
	if n > maxIDLen || n > uint64(len(r.b)) {
		r.fail("%s is %d bytes (limit %d, %d left)", what, n, maxIDLen, len(r.b))
		return ""
	}
	var s string
	if r.intern != nil {
		s = r.intern(r.b[:n])
	} else {
		s = string(r.b[:n])
	}
	r.b = r.b[n:]
	return s
}

// EncodeMessage encodes m for the wire. It fails for an unknown type or an
// over-long ID, so nothing the decoder would refuse is ever sent.
func EncodeMessage(m Message) ([]byte, error) { return AppendMessage(make([]byte, 0, 96), m) }

// AppendMessage appends the encoding of m to b (EncodeMessage), so that a
// transport can build its frame around it in one buffer.
func AppendMessage(b []byte, m Message) ([]byte, error) {
	if m.Type < MsgAppend || m.Type > MsgPairAck {
		return nil, fmt.Errorf("%w: unknown message type %d", ErrInvalidMessage, m.Type)
	}
	for _, s := range []string{m.From, m.To, m.Checkpoint.ID} {
		if len(s) > maxIDLen {
			return nil, fmt.Errorf("%w: ID of %d bytes (limit %d)", ErrInvalidMessage, len(s), maxIDLen)
		}
	}
	if msg := m.checkConf(); msg != "" {
		return nil, fmt.Errorf("%w: %s", ErrInvalidMessage, msg)
	}
	w := &wbuf{b: b}
	w.b = append(w.b, version(m.Conf), byte(m.Type))
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
		flags |= flagReject
	}
	pair := m.Session != 0 || m.Gen != 0 || m.Echo != 0 || m.EchoGen != 0
	if pair {
		flags |= flagPair
	}
	w.b = append(w.b, flags)
	if pair {
		w.uvarint(m.Session)
		w.uvarint(m.Gen)
		w.uvarint(m.Echo)
		w.uvarint(m.EchoGen)
	}
	if m.Conf.Index > 0 {
		w.conf(m.Conf)
	}
	return w.b, nil
}

// encodePool holds buffers for DecodeMessage's re-encoding.
var encodePool = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// DecodeMessage decodes a wire message. Errors wrap ErrBadEncoding.
// (The driver must also check that From is the authenticated peer of the
// stream the message came on.)
func DecodeMessage(data []byte) (Message, error) { return DecodeMessageInterned(data, nil) }

// DecodeMessageInterned is DecodeMessage with the message's strings made
// by intern (given the bytes, it returns an equal string, possibly one it
// made before), so that a stream reader does not allocate the same few
// IDs for every message. A nil intern allocates each.
func DecodeMessageInterned(data []byte, intern func([]byte) string) (Message, error) {
	if len(data) > maxWireBytes {
		return Message{}, fmt.Errorf("%w: %d bytes, the limit is %d", ErrBadEncoding, len(data), maxWireBytes)
	}
	r := &rbuf{b: data, intern: intern}
	v := r.byte1("version")
	if r.err == nil && v != wireVersion && v != wireConf {
		r.fail("version %d, this node speaks %d and %d", v, wireVersion, wireConf)
	}
	var m Message
	m.Type = MsgType(r.byte1("type"))
	if r.err == nil && (m.Type < MsgAppend || m.Type > MsgPairAck) {
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
	case f&^(flagReject|flagPair) != 0:
		r.fail("unknown flags 0x%x", f)
	default:
		m.Reject = f&flagReject != 0
		if f&flagPair != 0 {
			m.Session = r.uvarint("session")
			m.Gen = r.uvarint("gen")
			m.Echo = r.uvarint("echo")
			m.EchoGen = r.uvarint("echo gen")
		}
	}
	if v == wireConf {
		m.Conf = r.conf()
		if msg := m.checkConf(); r.err == nil && msg != "" {
			r.fail("%s", msg)
		}
	}
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	if r.err != nil {
		return Message{}, r.err
	}
	bp := encodePool.Get().(*[]byte)
	again, err := AppendMessage((*bp)[:0], m)
	canonical := err == nil && bytes.Equal(again, data)
	*bp = again
	encodePool.Put(bp)
	if !canonical {
		return Message{}, fmt.Errorf("%w: not the canonical encoding", ErrBadEncoding)
	}
	return m, nil
}

// EncodeHardState encodes the state a node persists before it sends.
func EncodeHardState(h HardState) ([]byte, error) {
	if len(h.Accepted.ID) > maxIDLen {
		return nil, fmt.Errorf("%w: checkpoint ID of %d bytes (limit %d)", ErrInvalidCheckpoint, len(h.Accepted.ID), maxIDLen)
	}
	if msg := h.Conf.check(); msg != "" {
		return nil, fmt.Errorf("%w: %s", ErrInvalidConfig, msg)
	}
	w := &wbuf{}
	w.b = append(w.b, version(h.Conf))
	w.uvarint(h.Epoch)
	w.uvarint(h.Accepted.Seq)
	w.str(h.Accepted.ID)
	w.uvarint(h.AcceptedAt)
	if h.Conf.Index > 0 {
		w.conf(h.Conf)
	}
	return w.b, nil
}

// DecodeHardState decodes persisted state strictly. A node that cannot
// decode its HardState must not take part (it might promise an epoch twice):
// the error is for the operator, never a reason to start from zero.
func DecodeHardState(data []byte) (HardState, error) {
	r := &rbuf{b: data}
	v := r.byte1("version")
	if r.err == nil && v != wireVersion && v != wireConf {
		r.fail("version %d, this node reads %d and %d", v, wireVersion, wireConf)
	}
	var h HardState
	h.Epoch = r.uvarint("epoch")
	h.Accepted.Seq = r.uvarint("accepted seq")
	h.Accepted.ID = r.str("accepted id")
	h.AcceptedAt = r.uvarint("acceptedAt")
	if v == wireConf {
		h.Conf = r.conf()
		if msg := h.Conf.check(); r.err == nil && msg != "" {
			r.fail("%s", msg)
		}
	}
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
