package sdk_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

func TestEncoderLayout(t *testing.T) {
	got := sdk.NewEncoder(0).
		Uint64(0x0102030405060708).Int64(-1).Uint32(0xA0B0C0D0).Int32(-2).
		Uint8(0x7F).Bool(true).Bool(false).
		Bytes([]byte{0xAA}).String("hi").Raw([]byte{1, 2}).Finish()
	want := []byte{
		8, 7, 6, 5, 4, 3, 2, 1,
		0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
		0xD0, 0xC0, 0xB0, 0xA0,
		0xFE, 0xFF, 0xFF, 0xFF,
		0x7F, 1, 0,
		1, 0, 0, 0, 0xAA,
		2, 0, 0, 0, 'h', 'i',
		1, 2,
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoding:\n got %x\nwant %x", got, want)
	}
}

func TestRoundTrip(t *testing.T) {
	e := sdk.NewEncoder(64).
		Uint64(math.MaxUint64).Int64(math.MinInt64).Uint32(7).Int32(math.MinInt32).
		Uint8(200).Bool(true).Bool(false).Bytes(nil).Bytes([]byte("state")).
		String("").String("héllo").Raw([]byte{9, 8, 7})
	if e.Len() != len(e.Finish()) {
		t.Fatalf("Len %d != len(Finish) %d", e.Len(), len(e.Finish()))
	}
	d := sdk.NewDecoder(e.Finish())
	if v := d.Uint64(); v != math.MaxUint64 {
		t.Errorf("Uint64 = %d", v)
	}
	if v := d.Int64(); v != math.MinInt64 {
		t.Errorf("Int64 = %d", v)
	}
	if v := d.Uint32(); v != 7 {
		t.Errorf("Uint32 = %d", v)
	}
	if v := d.Int32(); v != math.MinInt32 {
		t.Errorf("Int32 = %d", v)
	}
	if v := d.Uint8(); v != 200 {
		t.Errorf("Uint8 = %d", v)
	}
	if !d.Bool() || d.Bool() {
		t.Errorf("Bool round trip failed")
	}
	if v := d.Bytes(); v == nil || len(v) != 0 {
		t.Errorf("empty Bytes = %#v, want non-nil empty", v)
	}
	if v := d.Bytes(); string(v) != "state" {
		t.Errorf("Bytes = %q", v)
	}
	if v := d.String(); v != "" {
		t.Errorf("String = %q", v)
	}
	if v := d.String(); v != "héllo" {
		t.Errorf("String = %q", v)
	}
	if d.Remaining() != 3 {
		t.Errorf("Remaining = %d, want 3", d.Remaining())
	}
	dst := make([]byte, 2)
	d.ReadInto(dst)
	if !bytes.Equal(dst, []byte{9, 8}) {
		t.Errorf("ReadInto = %v", dst)
	}
	if v := d.FixedBytes(1); !bytes.Equal(v, []byte{7}) {
		t.Errorf("FixedBytes = %v", v)
	}
	if err := d.Finish(); err != nil {
		t.Fatalf("Finish: %v", err)
	}
}

// Floats round-trip bit for bit — signed zero, infinities, subnormals and
// NaN payloads too — in a fixed little-endian layout; a short input is an
// error, not a zero that looks like a value.
func TestFloatRoundTrip(t *testing.T) {
	f64s := []float64{0, math.Copysign(0, -1), 1.5, -math.Pi, math.MaxFloat64, math.SmallestNonzeroFloat64,
		math.Inf(1), math.Inf(-1), math.NaN(), math.Float64frombits(0x7ff8_dead_beef_0001)}
	f32s := []float32{0, float32(math.Copysign(0, -1)), 1.5, -math.Pi, math.MaxFloat32, math.SmallestNonzeroFloat32,
		float32(math.Inf(1)), math.Float32frombits(0x7fc0_0abc)}
	e := sdk.NewEncoder(0)
	for _, v := range f64s {
		e.Float64(v)
	}
	for _, v := range f32s {
		e.Float32(v)
	}
	b := e.Finish()
	if len(b) != 8*len(f64s)+4*len(f32s) {
		t.Fatalf("%d bytes, want 8 per float64 and 4 per float32", len(b))
	}
	if got := sdk.NewEncoder(0).Float64(1).Float32(-2).Finish(); !bytes.Equal(got, []byte{0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0xc0}) {
		t.Fatalf("layout of 1.0 and -2.0: %x", got)
	}
	d := sdk.NewDecoder(b)
	for _, want := range f64s {
		if got := d.Float64(); math.Float64bits(got) != math.Float64bits(want) {
			t.Errorf("Float64: got bits %x, want %x (%v)", math.Float64bits(got), math.Float64bits(want), want)
		}
	}
	for _, want := range f32s {
		if got := d.Float32(); math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("Float32: got bits %x, want %x (%v)", math.Float32bits(got), math.Float32bits(want), want)
		}
	}
	if err := d.Finish(); err != nil {
		t.Fatal(err)
	}
	short := sdk.NewDecoder([]byte{1, 2, 3, 4, 5, 6, 7})
	if short.Float64(); !errors.Is(short.Err(), sdk.ErrShortInput) || !strings.Contains(short.Err().Error(), "float64") {
		t.Fatalf("Float64 of 7 bytes: %v, want ErrShortInput", short.Err())
	}
}

func TestDecodedSlicesAreCopies(t *testing.T) {
	in := sdk.NewEncoder(0).Bytes([]byte("abc")).Raw([]byte("xyz")).Finish()
	d := sdk.NewDecoder(in)
	b, f := d.Bytes(), d.FixedBytes(3)
	for i := range in {
		in[i] = 0
	}
	if string(b) != "abc" || string(f) != "xyz" {
		t.Fatalf("decoded slices alias the input: %q %q", b, f)
	}
}

func TestDecoderErrors(t *testing.T) {
	cases := []struct {
		name string
		in   []byte
		read func(d *sdk.Decoder)
		want error
	}{
		{"short uint64", []byte{1, 2, 3}, func(d *sdk.Decoder) { d.Uint64() }, sdk.ErrShortInput},
		{"short uint32", []byte{1}, func(d *sdk.Decoder) { d.Uint32() }, sdk.ErrShortInput},
		{"empty uint8", nil, func(d *sdk.Decoder) { d.Uint8() }, sdk.ErrShortInput},
		{"bad bool", []byte{2}, func(d *sdk.Decoder) { d.Bool() }, sdk.ErrBadBool},
		{"huge bytes prefix", []byte{0xFF, 0xFF, 0xFF, 0xFF, 1}, func(d *sdk.Decoder) { d.Bytes() }, sdk.ErrShortInput},
		{"huge string prefix", []byte{5, 0, 0, 0, 'a'}, func(d *sdk.Decoder) { _ = d.String() }, sdk.ErrShortInput},
		{"negative fixed", []byte{1}, func(d *sdk.Decoder) { d.FixedBytes(-1) }, sdk.ErrBadLength},
		{"short fixed", []byte{1}, func(d *sdk.Decoder) { d.FixedBytes(2) }, sdk.ErrShortInput},
		{"short ReadInto", []byte{1}, func(d *sdk.Decoder) { d.ReadInto(make([]byte, 2)) }, sdk.ErrShortInput},
		{"trailing", []byte{1, 2}, func(d *sdk.Decoder) { d.Uint8() }, sdk.ErrTrailing},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := sdk.NewDecoder(c.in)
			c.read(d)
			if err := d.Finish(); !errors.Is(err, c.want) {
				t.Fatalf("Finish() = %v, want %v", err, c.want)
			}
		})
	}
}

func TestDecoderErrorIsSticky(t *testing.T) {
	d := sdk.NewDecoder([]byte{3, 1, 2, 3, 4, 5, 6, 7, 8})
	if d.Bool() {
		t.Fatal("bad bool decoded as true")
	}
	first := d.Err()
	if !errors.Is(first, sdk.ErrBadBool) {
		t.Fatalf("Err = %v, want ErrBadBool", first)
	}
	// Enough input remains for a uint64, but reads after an error must not
	// return data or replace the first error.
	if v := d.Uint64(); v != 0 {
		t.Fatalf("read after error returned %d", v)
	}
	if d.Err() != first || d.Remaining() != 0 {
		t.Fatalf("error not sticky: %v, remaining %d", d.Err(), d.Remaining())
	}
}
