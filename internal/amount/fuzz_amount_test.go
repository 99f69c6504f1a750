package amount

import (
	"errors"
	"math"
	"strings"
	"testing"
)

// FuzzParse: a typed amount (--budget, --price) parses to a non-negative
// number of microcents that prints back (Format) to text parsing to the
// same number, or fails with ErrBadAmount; and every int64 a checkpoint or
// host record can carry prints to text that parses back to it (with its
// sign split off).
func FuzzParse(f *testing.F) {
	f.Add("1.5", int64(1_500_000))
	f.Add("0.000001", int64(1))
	f.Add(" 3 ", int64(0))
	f.Add("1.0000001", int64(-1))
	f.Add("9223372036854.775807", int64(math.MaxInt64))
	f.Add("-1", int64(math.MinInt64))
	f.Add("1e6", int64(-1_000_001))
	f.Fuzz(func(t *testing.T, s string, uc int64) {
		v, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrBadAmount) {
				t.Fatalf("error without ErrBadAmount: %v", err)
			}
		} else {
			if v < 0 {
				t.Fatalf("%q parsed to negative %d", s, v)
			}
			if back, err := Parse(Format(v)); err != nil || back != v {
				t.Fatalf("%q = %d prints as %q, which parses to %d, %v", s, v, Format(v), back, err)
			}
		}
		txt := Format(uc)
		if uc == math.MinInt64 { // its magnitude is one above MaxInt64
			if txt != "-9223372036854.775808" {
				t.Fatalf("Format(MinInt64) = %q", txt)
			}
			return
		}
		neg := strings.HasPrefix(txt, "-")
		if neg != (uc < 0) {
			t.Fatalf("Format(%d) = %q: wrong sign", uc, txt)
		}
		back, err := Parse(strings.TrimPrefix(txt, "-"))
		if err != nil {
			t.Fatalf("Format(%d) = %q does not parse: %v", uc, txt, err)
		}
		if neg {
			back = -back
		}
		if back != uc {
			t.Fatalf("Format(%d) = %q parses back to %d", uc, txt, back)
		}
	})
}
