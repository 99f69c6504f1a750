package agents

import (
	"bytes"
	"crypto/ed25519"
	"math"
	"strings"

	"github.com/ipfs/go-cid"
)

// MaxHeadRecordBytes bounds an encoded head record (DHT values should stay
// small; IPNS uses the same 10 KiB cap).
const MaxHeadRecordBytes = 10 << 10

// KeyRoot is the first component of every DHT key this package defines:
// keys are "/igor/<namespace>/<id>". kad-dht hands a key to the validator
// registered for its first component, so the dht package registers one
// validator under "igor" and dispatches on the namespace itself; the
// validators here receive (and check) the full key.
const KeyRoot = "igor"

// HeadNamespace is the DHT namespace of head records: their keys are
// "/igor/agent/<agent id>" (HeadRecordKey), validated by HeadValidator.
const HeadNamespace = "agent"

// HeadRecordKeyPrefix starts the DHT key of every head record; the full key
// is HeadRecordKey(did).
const HeadRecordKeyPrefix = "/" + KeyRoot + "/" + HeadNamespace + "/"

// HeadRecord advertises an agent's latest committed checkpoint in the DHT.
// It is signed by the agent key. It is advisory, for queries: authority
// over the agent lives in its custody group, never in this record.
type HeadRecord struct {
	Agent       string  // did:key of the agent
	Head        cid.Cid // latest committed checkpoint
	Seq         uint64  // its sequence number
	Epoch       uint64  // its lease epoch
	Holder      string  // peer ID of the current holder
	LeaseExpiry int64   // unix ns by which a holder that keeps its lease publishes a newer record (its lease end + the refresh interval; holder's clock)
	Issued      int64   // unix ns when the record was made
	Expires     int64   // unix ns after which the record must not be believed
	Sig         []byte  // Ed25519 signature by the agent key
}

type headWire struct {
	Type        string `cbor:"type"`
	Agent       string `cbor:"agent"`
	Head        link   `cbor:"head"`
	Seq         uint64 `cbor:"seq"`
	Epoch       uint64 `cbor:"epoch"`
	Holder      string `cbor:"holder"`
	LeaseExpiry int64  `cbor:"leaseExpiry"`
	Issued      int64  `cbor:"issued"`
	Expires     int64  `cbor:"expires"`
	Sig         []byte `cbor:"sig,omitempty"`
}

func (h *HeadRecord) wire(withSig bool) *headWire {
	w := &headWire{Type: TypeHead, Agent: h.Agent, Head: link{h.Head}, Seq: h.Seq, Epoch: h.Epoch,
		Holder: h.Holder, LeaseExpiry: h.LeaseExpiry, Issued: h.Issued, Expires: h.Expires}
	if withSig {
		w.Sig = h.Sig
	}
	return w
}

func (h *HeadRecord) validate(signed bool) (ed25519.PublicKey, error) {
	pub, err := ParseDID(h.Agent)
	if err != nil {
		return nil, errf(ErrMalformed, "agent: %v", err)
	}
	if err := checkLink("head", h.Head, true); err != nil {
		return nil, err
	}
	if _, err := PeerIDPublicKey(h.Holder); err != nil {
		return nil, errf(ErrMalformed, "holder: %v", err)
	}
	if h.Seq > math.MaxInt64 || h.Epoch > math.MaxInt64 {
		return nil, errf(ErrMalformed, "seq %d or epoch %d exceeds 2^63-1", h.Seq, h.Epoch)
	}
	if h.Expires <= h.Issued {
		return nil, errf(ErrMalformed, "expires (%d) is not after issued (%d)", h.Expires, h.Issued)
	}
	if signed && len(h.Sig) != ed25519.SignatureSize {
		return nil, errf(ErrMalformed, "sig is %d bytes, want %d", len(h.Sig), ed25519.SignatureSize)
	}
	return pub, nil
}

func (h *HeadRecord) signingBytes() ([]byte, error) {
	unsigned, err := encodeCanonical(h.wire(false))
	if err != nil {
		return nil, err
	}
	return signingBytes(TypeHead, unsigned), nil
}

// Sign validates h and signs it with the agent key. Errors wrap
// ErrMalformed or ErrWrongKey.
func (h *HeadRecord) Sign(priv ed25519.PrivateKey) error {
	pub, err := h.validate(false)
	if err != nil {
		return err
	}
	if len(priv) != ed25519.PrivateKeySize || !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) {
		return errf(ErrWrongKey, "the signing key is not the key of %s", h.Agent)
	}
	msg, err := h.signingBytes()
	if err != nil {
		return err
	}
	h.Sig = signMsg(priv, msg)
	return nil
}

// Verify checks the fields and the agent's signature (not expiry: that needs
// a clock; see ValidateHeadRecord). Errors wrap ErrMalformed or
// ErrBadSignature.
func (h *HeadRecord) Verify() error {
	pub, err := h.validate(true)
	if err != nil {
		return err
	}
	msg, err := h.signingBytes()
	if err != nil {
		return err
	}
	if !verifySig(pub, msg, h.Sig) {
		return errf(ErrBadSignature, "head record signature does not verify against %s", h.Agent)
	}
	return nil
}

// Encode returns the canonical DAG-CBOR bytes of a signed head record.
// Errors wrap ErrMalformed.
func (h *HeadRecord) Encode() ([]byte, error) {
	if _, err := h.validate(true); err != nil {
		return nil, err
	}
	data, err := encodeCanonical(h.wire(true))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxHeadRecordBytes {
		return nil, errf(ErrMalformed, "head record is %d bytes, the limit is %d", len(data), MaxHeadRecordBytes)
	}
	return data, nil
}

// DecodeHeadRecord strictly decodes a head record and checks its fields
// (not its signature). Errors wrap ErrMalformed.
func DecodeHeadRecord(data []byte) (*HeadRecord, error) {
	var w headWire
	if err := decodeCanonical("head record", data, MaxHeadRecordBytes, &w); err != nil {
		return nil, err
	}
	if w.Type != TypeHead {
		return nil, errf(ErrMalformed, "type is %q, want %q", w.Type, TypeHead)
	}
	h := &HeadRecord{Agent: w.Agent, Head: w.Head.c, Seq: w.Seq, Epoch: w.Epoch, Holder: w.Holder,
		LeaseExpiry: w.LeaseExpiry, Issued: w.Issued, Expires: w.Expires, Sig: w.Sig}
	if _, err := h.validate(true); err != nil {
		return nil, err
	}
	return h, nil
}

// HeadRecordKey is the DHT key of an agent's head record,
// "/igor/agent/<agent id>". It returns "" for an invalid DID.
func HeadRecordKey(did string) string {
	id := AgentID(did)
	if id == "" {
		return ""
	}
	return HeadRecordKeyPrefix + id
}

// ValidateHeadRecord is the DHT validator for key: it decodes value,
// verifies the signature, checks that the record is about the agent the key
// names (so nobody can publish a record under another agent's key) and that
// it has not expired at now (unix ns, the caller's clock). Errors wrap
// ErrMalformed, ErrBadSignature, ErrIdentityChanged or ErrExpired.
func ValidateHeadRecord(key string, value []byte, now int64) (*HeadRecord, error) {
	id, ok := strings.CutPrefix(key, HeadRecordKeyPrefix)
	if !ok || id == "" {
		return nil, errf(ErrMalformed, "DHT key %q is not of the form %s<agent id>", key, HeadRecordKeyPrefix)
	}
	h, err := DecodeHeadRecord(value)
	if err != nil {
		return nil, err
	}
	if AgentID(h.Agent) != id {
		return nil, errf(ErrIdentityChanged, "record for %s stored under key %q", h.Agent, key)
	}
	if err := h.Verify(); err != nil {
		return nil, err
	}
	if now >= h.Expires {
		return nil, errf(ErrExpired, "head record of %s expired at %d (now %d)", h.Agent, h.Expires, now)
	}
	return h, nil
}

// SelectHead returns the index of the best record, or -1 if there is none
// (nil entries are skipped; the caller passes only valid records). The order
// is total and deterministic, so every node picks the same record:
// highest epoch, then highest seq, then the smallest head CID bytes (two
// heads at one (epoch, seq) mean a fork; any fixed choice will do, and the
// fork is for VerifyLineage/DetectForks to report), then the latest Expires
// (a refreshed record beats its older copy), then the smallest encoding.
// On a complete tie the first such record wins.
func SelectHead(records []*HeadRecord) int { return selectBest(records, headLess) }

// selectBest returns the index of the best non-nil record by better(a, b)
// ("b is strictly better than a"), the first on ties, or -1.
func selectBest[T any](records []*T, better func(a, b *T) bool) int {
	best := -1
	for i, r := range records {
		if r == nil {
			continue
		}
		if best < 0 || better(records[best], r) {
			best = i
		}
	}
	return best
}

// headLess reports whether b is strictly better than a.
func headLess(a, b *HeadRecord) bool {
	if a.Epoch != b.Epoch {
		return b.Epoch > a.Epoch
	}
	if a.Seq != b.Seq {
		return b.Seq > a.Seq
	}
	if c := bytes.Compare(a.Head.Bytes(), b.Head.Bytes()); c != 0 {
		return c > 0
	}
	if a.Expires != b.Expires {
		return b.Expires > a.Expires
	}
	ea, _ := encodeCanonical(a.wire(true))
	eb, _ := encodeCanonical(b.wire(true))
	return bytes.Compare(eb, ea) < 0
}
