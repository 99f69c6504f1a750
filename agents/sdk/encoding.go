package sdk

import (
	"encoding/binary"
	"errors"
	"math"
	"strconv"
)

// Errors reported by Decoder.Err and Decoder.Finish (wrapped, with the
// offset where decoding stopped).
var (
	ErrShortInput = errors.New("sdk: state truncated")
	ErrBadBool    = errors.New("sdk: bool byte is neither 0 nor 1")
	ErrBadLength  = errors.New("sdk: negative length")
	ErrTrailing   = errors.New("sdk: unread bytes after the state")
)

// Encoder appends little-endian fields to a buffer. Methods chain:
//
//	b := sdk.NewEncoder(32).Uint8(1).Uint64(n).String(name).Finish()
//
// Bytes and String write a u32 length prefix; Raw writes no prefix.
type Encoder struct {
	buf []byte
}

// NewEncoder returns an Encoder with room for capacity bytes.
func NewEncoder(capacity int) *Encoder {
	return &Encoder{buf: make([]byte, 0, max(capacity, 0))}
}

func (e *Encoder) Uint64(v uint64) *Encoder {
	e.buf = binary.LittleEndian.AppendUint64(e.buf, v)
	return e
}

func (e *Encoder) Int64(v int64) *Encoder { return e.Uint64(uint64(v)) }

func (e *Encoder) Uint32(v uint32) *Encoder {
	e.buf = binary.LittleEndian.AppendUint32(e.buf, v)
	return e
}

func (e *Encoder) Int32(v int32) *Encoder { return e.Uint32(uint32(v)) }

// Float64 writes the IEEE 754 bits of v (8 bytes): every value, -0, the
// infinities and each NaN payload included, reads back bit for bit.
func (e *Encoder) Float64(v float64) *Encoder { return e.Uint64(math.Float64bits(v)) }

// Float32 writes the IEEE 754 bits of v (4 bytes), like Float64.
func (e *Encoder) Float32(v float32) *Encoder { return e.Uint32(math.Float32bits(v)) }

func (e *Encoder) Uint8(v uint8) *Encoder {
	e.buf = append(e.buf, v)
	return e
}

// Bool writes 1 or 0.
func (e *Encoder) Bool(v bool) *Encoder {
	if v {
		return e.Uint8(1)
	}
	return e.Uint8(0)
}

// Bytes writes a u32 length prefix and b. It panics if b is 4 GiB or more,
// which no agent state can be.
func (e *Encoder) Bytes(b []byte) *Encoder {
	if uint64(len(b)) > math.MaxUint32 {
		panic("sdk: Encoder.Bytes: " + strconv.Itoa(len(b)) + " bytes do not fit a u32 length")
	}
	e.Uint32(uint32(len(b)))
	e.buf = append(e.buf, b...)
	return e
}

// String writes a u32 length prefix and the bytes of s.
func (e *Encoder) String(s string) *Encoder {
	if uint64(len(s)) > math.MaxUint32 {
		panic("sdk: Encoder.String: " + strconv.Itoa(len(s)) + " bytes do not fit a u32 length")
	}
	e.Uint32(uint32(len(s)))
	e.buf = append(e.buf, s...)
	return e
}

// Raw writes b with no length prefix (read it back with FixedBytes).
func (e *Encoder) Raw(b []byte) *Encoder {
	e.buf = append(e.buf, b...)
	return e
}

// Len returns the number of bytes written so far.
func (e *Encoder) Len() int { return len(e.buf) }

// Finish returns the encoded bytes. The Encoder may still be appended to,
// which may or may not reuse the returned slice's array.
func (e *Encoder) Finish() []byte { return e.buf }

// Decoder reads what Encoder wrote. Errors are sticky: after the first
// failure every read returns the zero value and Err reports the failure, so
// a sequence of reads needs one check at the end. It never panics and never
// allocates more than the remaining input, whatever the input.
type Decoder struct {
	buf []byte
	off int
	err error
}

// NewDecoder returns a Decoder over b. Returned slices are copies, so b may
// be reused afterwards.
func NewDecoder(b []byte) *Decoder { return &Decoder{buf: b} }

// Err returns the first error (wrapping ErrShortInput, ErrBadBool or
// ErrBadLength), or nil.
func (d *Decoder) Err() error { return d.err }

// Finish returns Err, or an error wrapping ErrTrailing if input is left
// over: a state with extra bytes is not the state that was written.
func (d *Decoder) Finish() error {
	if d.err == nil && d.off != len(d.buf) {
		return wrap(ErrTrailing, itoa(len(d.buf)-d.off)+" of "+itoa(len(d.buf))+" bytes unread")
	}
	return d.err
}

// Remaining returns the number of unread bytes (0 after an error).
func (d *Decoder) Remaining() int {
	if d.err != nil {
		return 0
	}
	return len(d.buf) - d.off
}

// take returns the next n bytes without copying, or nil after recording
// an error.
func (d *Decoder) take(n int, what string) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 {
		d.err = wrap(ErrBadLength, what+" length "+itoa(n)+" at offset "+itoa(d.off))
		return nil
	}
	if n > len(d.buf)-d.off {
		d.err = wrap(ErrShortInput, what+" needs "+itoa(n)+" bytes at offset "+itoa(d.off)+", "+itoa(len(d.buf)-d.off)+" left")
		return nil
	}
	b := d.buf[d.off : d.off+n : d.off+n]
	d.off += n
	return b
}

func (d *Decoder) Uint64() uint64 {
	if b := d.take(8, "uint64"); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

func (d *Decoder) Int64() int64 { return int64(d.Uint64()) }

func (d *Decoder) Uint32() uint32 {
	if b := d.take(4, "uint32"); b != nil {
		return binary.LittleEndian.Uint32(b)
	}
	return 0
}

func (d *Decoder) Int32() int32 { return int32(d.Uint32()) }

// Float64 reads what Encoder.Float64 wrote, bit for bit.
func (d *Decoder) Float64() float64 {
	if b := d.take(8, "float64"); b != nil {
		return math.Float64frombits(binary.LittleEndian.Uint64(b))
	}
	return 0
}

// Float32 reads what Encoder.Float32 wrote, bit for bit.
func (d *Decoder) Float32() float32 {
	if b := d.take(4, "float32"); b != nil {
		return math.Float32frombits(binary.LittleEndian.Uint32(b))
	}
	return 0
}

func (d *Decoder) Uint8() uint8 {
	if b := d.take(1, "uint8"); b != nil {
		return b[0]
	}
	return 0
}

// Bool reads one byte, which must be 0 or 1 (so every state has exactly
// one encoding).
func (d *Decoder) Bool() bool {
	off := d.off
	b := d.take(1, "bool")
	if b == nil {
		return false
	}
	if b[0] > 1 {
		d.err = wrap(ErrBadBool, "byte "+itoa(int(b[0]))+" at offset "+itoa(off))
		return false
	}
	return b[0] == 1
}

// Bytes reads a u32 length prefix and that many bytes (a copy; non-nil,
// possibly empty). A length beyond the remaining input is ErrShortInput,
// checked before anything is allocated.
func (d *Decoder) Bytes() []byte {
	n := d.Uint32()
	if d.err != nil {
		return nil
	}
	if uint64(n) > uint64(len(d.buf)-d.off) {
		d.err = wrap(ErrShortInput, "bytes length prefix "+itoa(int(n))+" at offset "+itoa(d.off-4)+", "+itoa(len(d.buf)-d.off)+" left")
		return nil
	}
	return append([]byte{}, d.take(int(n), "bytes")...)
}

// String reads what Encoder.String wrote.
func (d *Decoder) String() string {
	n := d.Uint32()
	if d.err != nil {
		return ""
	}
	if uint64(n) > uint64(len(d.buf)-d.off) {
		d.err = wrap(ErrShortInput, "string length prefix "+itoa(int(n))+" at offset "+itoa(d.off-4)+", "+itoa(len(d.buf)-d.off)+" left")
		return ""
	}
	return string(d.take(int(n), "string"))
}

// FixedBytes reads exactly n bytes with no prefix (a copy), e.g. what
// Encoder.Raw wrote.
func (d *Decoder) FixedBytes(n int) []byte {
	b := d.take(n, "fixed bytes")
	if b == nil {
		return nil
	}
	return append([]byte{}, b...)
}

// ReadInto fills dst from the input without allocating.
func (d *Decoder) ReadInto(dst []byte) {
	if b := d.take(len(dst), "fixed bytes"); b != nil {
		copy(dst, b)
	}
}
