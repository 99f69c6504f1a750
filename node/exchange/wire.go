package exchange

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Wire format of /igor/blocks/1.0.0 (docs/PROTOCOL-BLOCKS.md has the full
// description). All integers are unsigned LEB128 varints in their shortest
// form.
//
//	request  = uvarint(len(body)) body        ; 1 ≤ len(body) ≤ MaxRequestSize
//	body     = version(1 byte = 1) uvarint(n) n × (uvarint(len(cid)) cid)
//	                                          ; 1 ≤ n ≤ MaxRequestCIDs, 1 ≤ len(cid) ≤ MaxCIDLen
//	response = 0x00 uvarint(len(block)) block ; "here it is", len ≤ MaxBlockSize
//	         | 0x01                           ; "I do not have it"
//
// The server answers every CID of a request, in order, before it reads the
// next request from the same stream.
const (
	// ProtocolID names the block exchange protocol. The major version changes
	// with any incompatible change to the wire format.
	ProtocolID protocol.ID = "/igor/blocks/1.0.0"
	// MaxRequestCIDs is the most CIDs one request may carry.
	MaxRequestCIDs = 64
	// MaxRequestSize bounds the body of one request, in bytes.
	MaxRequestSize = 8 << 10
	// MaxCIDLen bounds one binary CID in a request. A CIDv1 with a 64-byte
	// digest is 70 bytes; 64 CIDs of MaxCIDLen always fit in MaxRequestSize.
	MaxCIDLen = 100

	wireVersion    = 1
	statusBlock    = 0x00
	statusDontHave = 0x01
)

// errMalformed marks bytes that break the wire format. The server resets the
// stream; the client treats the sender as a bad peer.
var errMalformed = errors.New("exchange: malformed message")

// appendRequest appends the framed request for cs (1..MaxRequestCIDs CIDs of
// at most MaxCIDLen bytes each) to dst.
func appendRequest(dst []byte, cs []cid.Cid) ([]byte, error) {
	if len(cs) == 0 || len(cs) > MaxRequestCIDs {
		return dst, fmt.Errorf("%w: a request carries 1..%d CIDs, not %d", ErrBadArgument, MaxRequestCIDs, len(cs))
	}
	body := []byte{wireVersion}
	body = binary.AppendUvarint(body, uint64(len(cs)))
	for _, c := range cs {
		b := c.Bytes()
		if len(b) == 0 || len(b) > MaxCIDLen {
			return dst, fmt.Errorf("%w: CID %s is %d bytes in binary form; the protocol carries 1..%d", ErrBadArgument, c, len(b), MaxCIDLen)
		}
		body = binary.AppendUvarint(body, uint64(len(b)))
		body = append(body, b...)
	}
	dst = binary.AppendUvarint(dst, uint64(len(body)))
	return append(dst, body...), nil
}

// readRequest reads one framed request. It returns io.EOF, and only then,
// when the stream ends cleanly before the first byte of a frame.
func readRequest(r *bufio.Reader) ([]cid.Cid, error) {
	n, err := readUvarint(r, MaxRequestSize)
	switch {
	case err == io.EOF:
		return nil, io.EOF
	case errors.Is(err, ErrTooLarge):
		return nil, fmt.Errorf("%w: request body is larger than %d bytes", errMalformed, MaxRequestSize)
	case err != nil:
		return nil, fmt.Errorf("reading request length: %w", err)
	case n == 0:
		return nil, fmt.Errorf("%w: empty request body", errMalformed)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, fmt.Errorf("reading %d-byte request body: %w", n, unexpected(err))
	}
	return decodeRequest(body)
}

// decodeRequest parses a request body (without its length prefix). Every
// violation wraps errMalformed.
func decodeRequest(body []byte) ([]cid.Cid, error) {
	bad := func(format string, a ...any) ([]cid.Cid, error) {
		return nil, fmt.Errorf("%w: request: %s", errMalformed, fmt.Sprintf(format, a...))
	}
	if len(body) > MaxRequestSize {
		return bad("body of %d bytes exceeds %d", len(body), MaxRequestSize)
	}
	if len(body) < 1 {
		return bad("empty body")
	}
	if body[0] != wireVersion {
		return bad("version %d; this node speaks version %d", body[0], wireVersion)
	}
	off := 1
	n, k, err := uvarint(body[off:])
	if err != nil {
		return bad("CID count: %v", err)
	}
	off += k
	if n < 1 || n > MaxRequestCIDs {
		return bad("%d CIDs; want 1..%d", n, MaxRequestCIDs)
	}
	out := make([]cid.Cid, 0, n)
	for i := range int(n) {
		l, k, err := uvarint(body[off:])
		if err != nil {
			return bad("CID %d length: %v", i, err)
		}
		off += k
		if l < 1 || l > MaxCIDLen {
			return bad("CID %d is %d bytes; want 1..%d", i, l, MaxCIDLen)
		}
		if uint64(len(body)-off) < l {
			return bad("CID %d is cut off", i)
		}
		c, err := cid.Cast(body[off : off+int(l)])
		if err != nil {
			return bad("CID %d: %v", i, err)
		}
		off += int(l)
		out = append(out, c)
	}
	if off != len(body) {
		return bad("%d trailing bytes", len(body)-off)
	}
	return out, nil
}

// writeBlock writes a "here it is" response.
func writeBlock(w *bufio.Writer, data []byte) error {
	var hdr [1 + binary.MaxVarintLen64]byte
	hdr[0] = statusBlock
	n := binary.PutUvarint(hdr[1:], uint64(len(data)))
	if _, err := w.Write(hdr[:1+n]); err != nil {
		return err
	}
	_, err := w.Write(data)
	return err
}

// writeDontHave writes an "I do not have it" response.
func writeDontHave(w *bufio.Writer) error { return w.WriteByte(statusDontHave) }

// readResponse reads one response. A block longer than max is refused from
// its length prefix, before any of it is read (ErrTooLarge); an unknown
// status byte or a bad varint wraps errMalformed; a stream that ends mid-way
// gives io.ErrUnexpectedEOF (a response was due, so any EOF is unexpected).
func readResponse(r *bufio.Reader, max int) (data []byte, have bool, err error) {
	st, err := r.ReadByte()
	if err != nil {
		return nil, false, unexpected(err)
	}
	switch st {
	case statusDontHave:
		return nil, false, nil
	case statusBlock:
	default:
		return nil, false, fmt.Errorf("%w: response status 0x%02x", errMalformed, st)
	}
	n, err := readUvarint(r, uint64(max))
	if errors.Is(err, ErrTooLarge) {
		return nil, false, fmt.Errorf("%w: announced block is larger than %d bytes", ErrTooLarge, max)
	} else if err != nil {
		return nil, false, unexpected(err)
	}
	data = make([]byte, n)
	if _, err := io.ReadFull(r, data); err != nil {
		return nil, false, unexpected(err)
	}
	return data, true, nil
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

var (
	errVarintOverlong = errors.New("varint is not in its shortest form")
	errVarintOverflow = errors.New("varint overflows 64 bits")
	errVarintShort    = errors.New("varint is cut off")
)

// uvarint decodes a shortest-form uvarint from the start of b. Shortest form
// only, so every message has exactly one encoding.
func uvarint(b []byte) (v uint64, n int, err error) {
	v, n = binary.Uvarint(b)
	switch {
	case n == 0:
		return 0, 0, errVarintShort
	case n < 0:
		return 0, 0, errVarintOverflow
	case n > 1 && b[n-1] == 0:
		return 0, 0, errVarintOverlong
	}
	return v, n, nil
}

// readUvarint reads a shortest-form uvarint and fails with ErrTooLarge as
// soon as the value is known to exceed max, so a hostile length never makes
// us wait for (or allocate) more. io.EOF means no byte was read.
func readUvarint(r io.ByteReader, max uint64) (uint64, error) {
	var v uint64
	for i := 0; ; i++ {
		b, err := r.ReadByte()
		if err != nil {
			if i > 0 && err == io.EOF {
				return 0, io.ErrUnexpectedEOF
			}
			return 0, err
		}
		if i == binary.MaxVarintLen64-1 && b > 1 {
			return 0, fmt.Errorf("%w: %w", errMalformed, errVarintOverflow)
		}
		v |= uint64(b&0x7f) << (7 * i)
		if v > max {
			return 0, ErrTooLarge
		}
		if b < 0x80 {
			if i > 0 && b == 0 {
				return 0, fmt.Errorf("%w: %w", errMalformed, errVarintOverlong)
			}
			return v, nil
		}
	}
}
