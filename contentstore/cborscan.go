package contentstore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/ipfs/go-cid"
)

// scanLinks is Links for a DAG-CBOR block without building it: one pass
// over the bytes that accepts what go-ipld-prime's strict DAG-CBOR decoder
// (dagcbor.DecodeOptions{AllowLinks: true}, which Links used) accepts and
// collects the tag-42 CIDs. Decoding every block into basicnode values only
// to find its links was a quarter of a custody node's allocations: every
// checkpoint is checked so when written, at its holder and at each
// standby. FuzzLinks holds it to the decoder on the same inputs.
//
// The rules, as that decoder applies them: one item and nothing after it;
// no indefinite lengths; integers and lengths in their shortest form; map
// keys are text, none twice; floats neither NaN nor infinite; undefined
// reads as null; at most one tag on an item, and a tag on a byte string
// must be 42 (a link: a 0x00 byte, then a CID) while a tag on anything else
// is ignored; at most maxScanDepth nested maps and lists.
func scanLinks(data []byte) ([]cid.Cid, error) {
	s := scanner{data: data}
	if err := s.item(0); err != nil {
		return nil, err
	}
	if s.pos != len(s.data) {
		return nil, errors.New("unexpected content after end of cbor object")
	}
	return s.links, nil
}

const maxScanDepth = 1024

// smallMap: maps with fewer keys are checked for duplicates without a set.
const smallMap = 32

type scanner struct {
	data  []byte
	pos   int
	links []cid.Cid
	seen  map[cid.Cid]struct{} // allocated at the second link
}

var errScanEOF = errors.New("unexpected end of cbor input")

// head reads an item's initial byte and argument: major type, additional
// information, and the argument's value (for ai < 28).
func (s *scanner) head() (major, ai byte, arg uint64, err error) {
	if s.pos >= len(s.data) {
		return 0, 0, 0, errScanEOF
	}
	b := s.data[s.pos]
	s.pos++
	major, ai = b>>5, b&0x1f
	var n int
	switch {
	case ai < 24:
		return major, ai, uint64(ai), nil
	case ai == 24:
		n = 1
	case ai == 25:
		n = 2
	case ai == 26:
		n = 4
	case ai == 27:
		n = 8
	case ai == 31:
		return 0, 0, 0, fmt.Errorf("indefinite-length or break item (0x%02x) at byte %d: not DAG-CBOR", b, s.pos-1)
	default:
		return 0, 0, 0, fmt.Errorf("reserved additional information %d at byte %d", ai, s.pos-1)
	}
	if len(s.data)-s.pos < n {
		return 0, 0, 0, errScanEOF
	}
	p := s.data[s.pos : s.pos+n]
	s.pos += n
	switch n {
	case 1:
		arg = uint64(p[0])
	case 2:
		arg = uint64(binary.BigEndian.Uint16(p))
	case 4:
		arg = uint64(binary.BigEndian.Uint32(p))
	default:
		arg = binary.BigEndian.Uint64(p)
	}
	return major, ai, arg, nil
}

// minimal reports whether arg, read with additional information ai, is in
// its shortest form.
func minimal(ai byte, arg uint64) bool {
	switch ai {
	case 24:
		return arg >= 24
	case 25:
		return arg > math.MaxUint8
	case 26:
		return arg > math.MaxUint16
	case 27:
		return arg > math.MaxUint32
	}
	return true
}

// checkTag applies the decoder's rules to a tag number: shortest form,
// and within int64 (it reads tags as lengths).
func checkTag(at int, ai byte, arg uint64) error {
	if !minimal(ai, arg) {
		return fmt.Errorf("tag at byte %d not in shortest form", at)
	}
	if arg > math.MaxInt64 {
		return fmt.Errorf("tag %d at byte %d out of range", arg, at)
	}
	return nil
}

// take returns the next n bytes.
func (s *scanner) take(n uint64) ([]byte, error) {
	if n > uint64(len(s.data)-s.pos) {
		return nil, errScanEOF
	}
	b := s.data[s.pos : s.pos+int(n)]
	s.pos += int(n)
	return b, nil
}

// item scans one data item at the given nesting depth.
func (s *scanner) item(depth int) error {
	start := s.pos
	major, ai, arg, err := s.head()
	if err != nil {
		return err
	}
	tagged, tag := false, uint64(0)
	if major == 6 {
		if err := checkTag(start, ai, arg); err != nil {
			return err
		}
		tagged, tag = true, arg
		start = s.pos
		if major, ai, arg, err = s.head(); err != nil {
			return err
		}
		if major == 6 {
			return fmt.Errorf("several tags on the item at byte %d", start)
		}
	}
	if major < 7 && !minimal(ai, arg) {
		return fmt.Errorf("integer or length at byte %d not in shortest form", start)
	}
	switch major {
	case 0: // unsigned integer
		return nil
	case 1: // negative integer -1-arg
		// The decoder checks arg+1 ≤ 2^63 in uint64, which wraps for
		// the largest argument and lets it through: so does this.
		if arg+1 > 1<<63 {
			return fmt.Errorf("negative integer at byte %d below the int64 range", start)
		}
		return nil
	case 2: // byte string
		b, err := s.take(arg)
		if err != nil {
			return err
		}
		if !tagged {
			return nil
		}
		if tag != 42 {
			return fmt.Errorf("unhandled cbor tag %d", tag)
		}
		return s.link(b)
	case 3: // text string
		_, err := s.take(arg) // UTF-8 is not checked (nor by the decoder)
		return err
	case 4: // array
		if depth >= maxScanDepth {
			return errors.New("message structure exceeded maximum nesting depth")
		}
		if arg > uint64(len(s.data)-s.pos) {
			return errScanEOF // each element takes a byte at least
		}
		for range arg {
			if err := s.item(depth + 1); err != nil {
				return err
			}
		}
		return nil
	case 5: // map
		if depth >= maxScanDepth {
			return errors.New("message structure exceeded maximum nesting depth")
		}
		if arg > uint64(len(s.data)-s.pos)/2 {
			return errScanEOF // each entry takes two bytes at least
		}
		// Duplicates: a linear search among a small map's keys (no
		// allocation; a checkpoint has about twenty), a set beyond that.
		var small [smallMap][]byte
		keys := small[:0]
		var set map[string]struct{}
		for range arg {
			k, err := s.key()
			if err != nil {
				return err
			}
			dup := false
			if set != nil {
				_, dup = set[string(k)]
				set[string(k)] = struct{}{}
			} else {
				dup = slices.ContainsFunc(keys, func(o []byte) bool { return bytes.Equal(o, k) })
				if keys = append(keys, k); len(keys) == smallMap {
					set = make(map[string]struct{}, arg)
					for _, o := range keys {
						set[string(o)] = struct{}{}
					}
				}
			}
			if dup {
				return fmt.Errorf("duplicate map key %q", k)
			}
			if err := s.item(depth + 1); err != nil {
				return err
			}
		}
		return nil
	default: // 7: simple values and floats
		switch ai {
		case 20, 21, 22, 23: // false, true, null, undefined (read as null)
			return nil
		case 25, 26, 27:
			var f float64
			switch ai {
			case 25:
				f = float16(uint16(arg))
			case 26:
				f = float64(math.Float32frombits(uint32(arg)))
			default:
				f = math.Float64frombits(arg)
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return fmt.Errorf("NaN or infinite float at byte %d", start)
			}
			return nil
		}
		return fmt.Errorf("simple value %d at byte %d: not DAG-CBOR", arg, start)
	}
}

// key scans a map key: a text string (a tag on it is ignored, as the
// decoder does).
func (s *scanner) key() ([]byte, error) {
	start := s.pos
	major, ai, arg, err := s.head()
	if err != nil {
		return nil, err
	}
	if major == 6 {
		if err := checkTag(start, ai, arg); err != nil {
			return nil, err
		}
		start = s.pos
		if major, ai, arg, err = s.head(); err != nil {
			return nil, err
		}
	}
	if major != 3 {
		return nil, fmt.Errorf("map key at byte %d is not a text string", start)
	}
	if !minimal(ai, arg) {
		return nil, fmt.Errorf("length at byte %d not in shortest form", start)
	}
	return s.take(arg)
}

// link records a tag-42 byte string's CID, once.
func (s *scanner) link(b []byte) error {
	if len(b) < 1 || b[0] != 0 {
		return errors.New("invalid multibase on IPLD link")
	}
	c, err := cid.Cast(b[1:])
	if err != nil {
		return err
	}
	if len(s.links) > 0 {
		if s.seen == nil {
			s.seen = make(map[cid.Cid]struct{}, 4)
			for _, l := range s.links {
				s.seen[l] = struct{}{}
			}
		}
		if _, ok := s.seen[c]; ok {
			return nil
		}
		s.seen[c] = struct{}{}
	}
	s.links = append(s.links, c)
	return nil
}

// float16 converts an IEEE 754 half-precision value.
func float16(h uint16) float64 {
	sign := 1.0
	if h&0x8000 != 0 {
		sign = -1
	}
	exp, frac := int(h>>10)&0x1f, float64(h&0x3ff)
	switch exp {
	case 0:
		return sign * math.Ldexp(frac, -24)
	case 0x1f:
		if frac == 0 {
			return math.Inf(int(sign))
		}
		return math.NaN()
	}
	return sign * math.Ldexp(frac+1024, exp-25)
}
