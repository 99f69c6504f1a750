package agents

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// MaxObjectBytes bounds an encoded genesis or checkpoint. Real ones are
// 300–700 bytes; the bound only stops a hostile block from costing more.
const MaxObjectBytes = 8 << 10

// Why fxamacker/cbor and not go-ipld-prime's bindnode: the objects are a few
// flat structs, and fxamacker maps them directly with a strict decoder
// (duplicate keys, indefinite lengths, unknown fields, trailing bytes all
// rejected) at a fraction of bindnode's reflection cost. DAG-CBOR
// compatibility comes from the options below plus the re-encode check in
// decodeCanonical, and is proven by a test that round-trips every object
// through go-ipld-prime's dagcbor codec byte for byte.
var (
	encMode cbor.EncMode
	decMode cbor.DecMode
	// kindMode reads only the "type" field of any object.
	kindMode cbor.DecMode
)

func init() {
	var err error
	encMode, err = cbor.EncOptions{
		Sort:          cbor.SortLengthFirst, // = DAG-CBOR map key order
		IndefLength:   cbor.IndefLengthForbidden,
		NilContainers: cbor.NilContainerAsNull,
		TagsMd:        cbor.TagsAllowed,
	}.EncMode()
	if err != nil {
		panic(err)
	}
	strict := cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsAllowed, // tag 42 only; anything else fails the re-encode check
		MaxNestedLevels:   4,
		MaxArrayElements:  16,
		MaxMapPairs:       32,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		FieldNameMatching: cbor.FieldNameMatchingCaseSensitive,
		UTF8:              cbor.UTF8RejectInvalid,
	}
	decMode, err = strict.DecMode()
	if err != nil {
		panic(err)
	}
	lenient := strict
	lenient.ExtraReturnErrors = cbor.ExtraDecErrorNone
	kindMode, err = lenient.DecMode()
	if err != nil {
		panic(err)
	}
}

// Object type strings: the "type" field of each object and its signing domain.
const (
	TypeGenesis    = "igor/genesis/v1"
	TypeCheckpoint = "igor/checkpoint/v1"
	TypeHead       = "igor/head/v1"
)

// Kind returns "genesis", "checkpoint", "head" or "host" for an encoded object,
// reading only its "type" field. It does not validate the rest; use the
// Decode functions for that. Errors wrap ErrMalformed.
func Kind(data []byte) (string, error) {
	var w struct {
		Type string `cbor:"type"`
	}
	if err := kindMode.Unmarshal(data, &w); err != nil {
		return "", fmt.Errorf("%w: not a DAG-CBOR object with a \"type\" field: %v", ErrMalformed, err)
	}
	switch w.Type {
	case TypeGenesis:
		return "genesis", nil
	case TypeCheckpoint:
		return "checkpoint", nil
	case TypeHead:
		return "head", nil
	case TypeHost:
		return "host", nil
	case "":
		return "", fmt.Errorf("%w: object has no \"type\" field", ErrMalformed)
	default:
		return "", fmt.Errorf("%w: unknown object type %q (known: %s, %s, %s, %s)", ErrMalformed, w.Type, TypeGenesis, TypeCheckpoint, TypeHead, TypeHost)
	}
}

// link is a CID encoded as DAG-CBOR requires: tag 42 around a byte string
// holding 0x00 (the identity multibase prefix) and the binary CID.
type link struct{ c cid.Cid }

func (l link) MarshalCBOR() ([]byte, error) {
	if !l.c.Defined() {
		return nil, fmt.Errorf("undefined CID")
	}
	cb := l.c.Bytes()
	n := len(cb) + 1
	out := make([]byte, 0, n+5)
	out = append(out, 0xd8, 42)
	switch {
	case n < 24:
		out = append(out, 0x40|byte(n))
	case n < 256:
		out = append(out, 0x58, byte(n))
	default:
		out = append(out, 0x59, byte(n>>8), byte(n))
	}
	out = append(out, 0x00)
	return append(out, cb...), nil
}

func (l *link) UnmarshalCBOR(data []byte) error {
	if len(data) < 2 || data[0] != 0xd8 || data[1] != 42 {
		return fmt.Errorf("expected a CID (CBOR tag 42)")
	}
	var b []byte
	if err := decMode.Unmarshal(data[2:], &b); err != nil {
		return fmt.Errorf("CID tag 42 must hold a byte string: %v", err)
	}
	if len(b) < 2 || b[0] != 0x00 {
		return fmt.Errorf("CID byte string must start with 0x00")
	}
	c, err := cid.Cast(b[1:])
	if err != nil {
		return fmt.Errorf("bad CID: %v", err)
	}
	l.c = c
	return nil
}

// blockPrefix is how every genesis and checkpoint is addressed.
var blockPrefix = cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: multihash.SHA2_256, MhLength: 32}

// blockCID returns the CID of an encoded object.
func blockCID(data []byte) cid.Cid {
	c, err := blockPrefix.Sum(data)
	if err != nil {
		// sha2-256 with a fixed length cannot fail.
		panic(fmt.Sprintf("agents: hash block: %v", err))
	}
	return c
}

// checkLink validates a CID field. Links to genesis and checkpoints must be
// dag-cbor; content links (module, state, manifest) may use any codec the
// content store chooses (raw, or a dag-cbor root for chunked objects), but
// like every CID in the mesh they are CIDv1 with a sha2-256 multihash.
func checkLink(field string, c cid.Cid, dagCBOR bool) error {
	if !c.Defined() {
		return errf(ErrMalformed, "%s: missing CID", field)
	}
	p := c.Prefix()
	if p.Version != 1 {
		return errf(ErrMalformed, "%s: %s is CIDv%d, want CIDv1", field, c, p.Version)
	}
	if p.MhType != multihash.SHA2_256 || p.MhLength != 32 {
		return errf(ErrMalformed, "%s: %s does not use a sha2-256 multihash", field, c)
	}
	if dagCBOR && p.Codec != cid.DagCBOR {
		return errf(ErrMalformed, "%s: %s has codec 0x%x, want dag-cbor (0x71)", field, c, p.Codec)
	}
	return nil
}

// checkBlockCID validates that c addresses a DAG-CBOR object this package
// encodes and that data hashes to it.
func checkBlockCID(c cid.Cid, data []byte) error {
	if err := checkLink("CID", c, true); err != nil {
		return err
	}
	if !blockCID(data).Equals(c) {
		return errf(ErrMalformed, "block bytes do not hash to %s (corrupt or substituted block)", c)
	}
	return nil
}

// encodeCanonical encodes a wire struct.
func encodeCanonical(w any) ([]byte, error) {
	b, err := encMode.Marshal(w)
	if err != nil {
		return nil, errf(ErrMalformed, "encode: %v", err)
	}
	return b, nil
}

// decodeCanonical strictly decodes data into w (a pointer to a wire
// struct) and insists that re-encoding gives the same bytes. That single
// check rejects every non-canonical form (unsorted keys, long integers,
// null or empty where a field is omitted, stray tags), so an object has one
// encoding and one CID.
func decodeCanonical(what string, data []byte, maxLen int, w any) error {
	if len(data) == 0 {
		return errf(ErrMalformed, "%s: empty input", what)
	}
	if len(data) > maxLen {
		return errf(ErrMalformed, "%s: %d bytes, the limit is %d", what, len(data), maxLen)
	}
	if err := decMode.Unmarshal(data, w); err != nil {
		if missing := fieldProblems(data, w); missing != "" {
			return errf(ErrMalformed, "%s: %s", what, missing)
		}
		return errf(ErrMalformed, "%s: %s", what, strings.TrimPrefix(err.Error(), "cbor: "))
	}
	re, err := encMode.Marshal(w)
	if err != nil || !bytes.Equal(re, data) {
		if missing := fieldProblems(data, w); missing != "" {
			return errf(ErrMalformed, "%s: %s", what, missing)
		}
		return errf(ErrMalformed, "%s: not in canonical DAG-CBOR form (keys out of order, integers not in shortest form, null or empty values where a field must be absent, or an unexpected tag)", what)
	}
	return nil
}

// fieldProblems names the required fields (those without omitempty) that
// data lacks and the keys it has that w does not know, for a clearer error
// than "not canonical". It returns "" when there are none or data is not a
// map with text keys.
func fieldProblems(data []byte, w any) string {
	var m map[string]cbor.RawMessage
	if err := kindMode.Unmarshal(data, &m); err != nil {
		return ""
	}
	var missing, unknown []string
	known := map[string]bool{}
	t := reflect.TypeOf(w).Elem()
	for i := 0; i < t.NumField(); i++ {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("cbor"), ",")
		known[name] = true
		if _, ok := m[name]; !ok && !strings.Contains(opts, "omitempty") {
			missing = append(missing, fmt.Sprintf("%q", name))
		}
	}
	for k := range m {
		if !known[k] {
			unknown = append(unknown, fmt.Sprintf("%q", k))
		}
	}
	sort.Strings(missing)
	sort.Strings(unknown)
	var parts []string
	if len(missing) > 0 {
		parts = append(parts, "missing field "+strings.Join(missing, ", "))
	}
	if len(unknown) > 0 {
		parts = append(parts, "unknown field "+strings.Join(unknown, ", "))
	}
	return strings.Join(parts, "; ")
}

// signingBytes is what a signature covers: the domain, a zero byte and the
// canonical encoding without signature fields.
func signingBytes(domain string, unsigned []byte) []byte {
	out := make([]byte, 0, len(domain)+1+len(unsigned))
	out = append(out, domain...)
	out = append(out, 0)
	return append(out, unsigned...)
}
