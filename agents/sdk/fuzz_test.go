package sdk_test

import (
	"bytes"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

// FuzzDecoder runs a read program (one op per byte of ops) over arbitrary
// data. Invariants: no panic; the error is sticky; Remaining never grows;
// and whatever was decoded before the first error re-encodes to exactly the
// bytes consumed (the encoding is canonical).
func FuzzDecoder(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, sdk.NewEncoder(0).Uint64(1).Int64(-1).Uint32(2).Int32(-2).
		Uint8(3).Bool(true).Bytes([]byte("ab")).String("cd").Raw([]byte{1, 2, 3, 4, 5, 6, 7}).Finish())
	f.Add([]byte{6}, []byte{0xFF, 0xFF, 0xFF, 0xFF})
	f.Add([]byte{5, 5}, []byte{1, 2})
	f.Add([]byte{}, []byte{})
	f.Fuzz(func(t *testing.T, ops, data []byte) {
		d := sdk.NewDecoder(data)
		e := sdk.NewEncoder(len(data))
		prevRemaining := d.Remaining()
		var firstErr error
		for _, op := range ops {
			switch op % 10 {
			case 0:
				v := d.Uint64()
				if d.Err() == nil {
					e.Uint64(v)
				}
			case 1:
				v := d.Int64()
				if d.Err() == nil {
					e.Int64(v)
				}
			case 2:
				v := d.Uint32()
				if d.Err() == nil {
					e.Uint32(v)
				}
			case 3:
				v := d.Int32()
				if d.Err() == nil {
					e.Int32(v)
				}
			case 4:
				v := d.Uint8()
				if d.Err() == nil {
					e.Uint8(v)
				}
			case 5:
				v := d.Bool()
				if d.Err() == nil {
					e.Bool(v)
				}
			case 6:
				v := d.Bytes()
				if d.Err() == nil {
					e.Bytes(v)
				}
			case 7:
				v := d.String()
				if d.Err() == nil {
					e.String(v)
				}
			case 8:
				n := int(op/10) - 5 // includes negative lengths
				v := d.FixedBytes(n)
				if d.Err() == nil {
					if len(v) != n {
						t.Fatalf("FixedBytes(%d) returned %d bytes", n, len(v))
					}
					e.Raw(v)
				}
			case 9:
				buf := make([]byte, op/10)
				d.ReadInto(buf)
				if d.Err() == nil {
					e.Raw(buf)
				}
			}
			if firstErr != nil && d.Err() != firstErr {
				t.Fatalf("error changed from %v to %v", firstErr, d.Err())
			}
			firstErr = d.Err()
			if r := d.Remaining(); r > prevRemaining {
				t.Fatalf("Remaining grew from %d to %d", prevRemaining, r)
			} else {
				prevRemaining = r
			}
		}
		if firstErr == nil {
			consumed := len(data) - d.Remaining()
			if !bytes.Equal(e.Finish(), data[:consumed]) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", e.Finish(), data[:consumed])
			}
		}
	})
}
