package agents

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// TypeHost is the "type" field and signing domain of a host record.
const TypeHost = "igor/host/v1"

// HostNamespace is the DHT namespace of host records: their keys are
// "/igor/host/<peer id>" (HostRecordKey), validated by HostValidator.
const HostNamespace = "host"

// HostRecordKeyPrefix starts the DHT key of every host record.
const HostRecordKeyPrefix = "/" + KeyRoot + "/" + HostNamespace + "/"

// MaxRecordBytes bounds every DHT record this package defines (head and
// host records). IPNS uses the same 10 KiB cap.
const MaxRecordBytes = 10 << 10

// MaxRecordValidity bounds how long a DHT record may claim to be valid
// (Expires − Issued for host records; Expires − now for every record the
// validators accept). kad-dht drops values after 48 h anyway; a shorter
// bound means a record from a node that died stops being believed within
// a day, and nobody can park a record that outlives its signer's intent.
const MaxRecordValidity = 24 * time.Hour

// MaxClockSkew is how far ahead of the validating node's clock a record's
// clock may run before its expiry counts as too far in the future.
const MaxClockSkew = 5 * time.Minute

// Limits on the fields of a host record.
const (
	MaxHostAddrs       = 16
	MaxHostAddrBytes   = 256
	MaxHostVersionLen  = 64
	maxCapabilityNames = 16 // also the decoder's array limit
	maxCapabilityLen   = 32
)

// HostRecord advertises a node's capacity for hosting agents in the DHT
// under HostRecordKey(Peer). It is signed by the node key (the key inside
// the peer ID). Like a head record it is advisory: placement uses it to
// choose candidates, and the chosen node still decides for itself whether
// it takes an agent.
type HostRecord struct {
	Peer            string   `json:"peer"`                        // libp2p peer ID (Ed25519) of the node; the signer
	Addrs           []string `json:"addrs"`                       // multiaddrs, so others can dial without a peer-routing lookup
	Slots           uint32   `json:"slots"`                       // agents the node will run at most
	FreeSlots       uint32   `json:"free_slots"`                  // of which free now (≤ Slots)
	MemoryBytes     uint64   `json:"memory_bytes"`                // total memory the node offers agents
	FreeMemoryBytes uint64   `json:"free_memory_bytes"`           // of which free now (≤ MemoryBytes)
	Price           int64    `json:"price_microcents_per_second"` // µc per second, ≥ 0
	Capabilities    []string `json:"capabilities"`                // sorted, unique
	Version         string   `json:"version"`                     // software version, 1..64 printable ASCII bytes
	Seq             uint64   `json:"seq"`                         // increases with every new record from this node
	Issued          int64    `json:"issued_unix_ns"`              // unix ns
	Expires         int64    `json:"expires_unix_ns"`             // unix ns; Issued < Expires ≤ Issued + MaxRecordValidity
	Sig             []byte   `json:"sig"`                         // Ed25519 signature by the node key (base64 in JSON)
}

type hostWire struct {
	Type       string   `cbor:"type"`
	Peer       string   `cbor:"peer"`
	Addrs      []string `cbor:"addrs,omitempty"`
	Slots      uint32   `cbor:"slots"`
	FreeSlots  uint32   `cbor:"freeSlots"`
	Memory     uint64   `cbor:"memory"`
	FreeMemory uint64   `cbor:"freeMemory"`
	Price      int64    `cbor:"price"`
	Caps       []string `cbor:"caps,omitempty"`
	Version    string   `cbor:"version"`
	Seq        uint64   `cbor:"seq"`
	Issued     int64    `cbor:"issued"`
	Expires    int64    `cbor:"expires"`
	Sig        []byte   `cbor:"sig,omitempty"`
}

func (h *HostRecord) wire(withSig bool) *hostWire {
	w := &hostWire{Type: TypeHost, Peer: h.Peer, Addrs: h.Addrs, Slots: h.Slots, FreeSlots: h.FreeSlots,
		Memory: h.MemoryBytes, FreeMemory: h.FreeMemoryBytes, Price: h.Price, Caps: h.Capabilities,
		Version: h.Version, Seq: h.Seq, Issued: h.Issued, Expires: h.Expires}
	if withSig {
		w.Sig = h.Sig
	}
	return w
}

// validate checks every field except the signature's validity. signed says
// whether Sig must be present. ownCaps says whether every capability must
// be one this node knows: true when signing (a node advertises only what it
// can grant), false when reading, so that a newer node advertising a
// capability this version has never heard of is still stored and believed
// (its unknown capability just never matches a manifest here).
func (h *HostRecord) validate(signed, ownCaps bool) (ed25519.PublicKey, error) {
	pub, err := PeerIDPublicKey(h.Peer)
	if err != nil {
		return nil, errf(ErrMalformed, "peer: %v", err)
	}
	if len(h.Addrs) > MaxHostAddrs {
		return nil, errf(ErrMalformed, "%d addrs, the limit is %d", len(h.Addrs), MaxHostAddrs)
	}
	seen := make(map[string]bool, len(h.Addrs))
	for i, a := range h.Addrs {
		if len(a) == 0 || len(a) > MaxHostAddrBytes || a[0] != '/' || !printableASCII(a) {
			return nil, errf(ErrMalformed, "addrs[%d] %q is not a multiaddr of 1..%d printable bytes starting with \"/\"", i, clip(a), MaxHostAddrBytes)
		}
		if seen[a] {
			return nil, errf(ErrMalformed, "addrs[%d] %q appears twice", i, a)
		}
		seen[a] = true
	}
	if h.FreeSlots > h.Slots {
		return nil, errf(ErrMalformed, "freeSlots %d exceeds slots %d", h.FreeSlots, h.Slots)
	}
	if h.MemoryBytes > math.MaxInt64 {
		return nil, errf(ErrMalformed, "memory %d exceeds 2^63-1", h.MemoryBytes)
	}
	if h.FreeMemoryBytes > h.MemoryBytes {
		return nil, errf(ErrMalformed, "freeMemory %d exceeds memory %d", h.FreeMemoryBytes, h.MemoryBytes)
	}
	if h.Price < 0 {
		return nil, errf(ErrMalformed, "price %d µc/s is negative", h.Price)
	}
	if len(h.Capabilities) > maxCapabilityNames {
		return nil, errf(ErrMalformed, "%d capabilities, the limit is %d", len(h.Capabilities), maxCapabilityNames)
	}
	for i, c := range h.Capabilities {
		if !capabilityName(c) {
			return nil, errf(ErrMalformed, "capabilities[%d] %q is not a capability name (1..%d of a-z 0-9 _ - .)", i, clip(c), maxCapabilityLen)
		}
		if i > 0 && h.Capabilities[i-1] >= c {
			return nil, errf(ErrMalformed, "capabilities must be sorted and unique: %q then %q", h.Capabilities[i-1], c)
		}
		if _, known := knownCapabilities[c]; ownCaps && !known {
			return nil, errf(ErrMalformed, "capability %q is unknown to this node (known: %s)", c, strings.Join(KnownCapabilities(), ", "))
		}
	}
	if len(h.Version) == 0 || len(h.Version) > MaxHostVersionLen || !printableASCII(h.Version) {
		return nil, errf(ErrMalformed, "version %q is not 1..%d printable ASCII bytes", clip(h.Version), MaxHostVersionLen)
	}
	if h.Seq > math.MaxInt64 {
		return nil, errf(ErrMalformed, "seq %d exceeds 2^63-1", h.Seq)
	}
	if h.Expires <= h.Issued {
		return nil, errf(ErrMalformed, "expires (%d) is not after issued (%d)", h.Expires, h.Issued)
	}
	// Expires > Issued, so the unsigned difference is exact even when the
	// signed one would overflow.
	if d := uint64(h.Expires) - uint64(h.Issued); d > uint64(MaxRecordValidity) {
		return nil, errf(ErrValidityTooLong, "host record is valid for %v, the limit is %v", time.Duration(min(d, math.MaxInt64)), MaxRecordValidity)
	}
	if signed && len(h.Sig) != ed25519.SignatureSize {
		return nil, errf(ErrMalformed, "sig is %d bytes, want %d", len(h.Sig), ed25519.SignatureSize)
	}
	return pub, nil
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

func capabilityName(s string) bool {
	if len(s) == 0 || len(s) > maxCapabilityLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// clip shortens a hostile string for an error message.
func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "…"
	}
	return s
}

func (h *HostRecord) signingBytes() ([]byte, error) {
	unsigned, err := encodeCanonical(h.wire(false))
	if err != nil {
		return nil, err
	}
	return signingBytes(TypeHost, unsigned), nil
}

// Sign validates h and signs it with the node key, which must be the key
// of h.Peer. Every capability must be one this node knows. Errors wrap
// ErrMalformed, ErrValidityTooLong or ErrWrongKey.
func (h *HostRecord) Sign(nodeKey ed25519.PrivateKey) error {
	pub, err := h.validate(false, true)
	if err != nil {
		return err
	}
	if len(nodeKey) != ed25519.PrivateKeySize || !bytes.Equal(nodeKey.Public().(ed25519.PublicKey), pub) {
		return errf(ErrWrongKey, "the signing key is not the key of peer %s", h.Peer)
	}
	msg, err := h.signingBytes()
	if err != nil {
		return err
	}
	h.Sig = signMsg(nodeKey, msg)
	return nil
}

// Verify checks the fields and the node's signature (not expiry: that needs
// a clock; see HostValidator). Errors wrap ErrMalformed, ErrValidityTooLong
// or ErrBadSignature.
func (h *HostRecord) Verify() error {
	pub, err := h.validate(true, false)
	if err != nil {
		return err
	}
	msg, err := h.signingBytes()
	if err != nil {
		return err
	}
	if !verifySig(pub, msg, h.Sig) {
		return errf(ErrBadSignature, "host record signature does not verify against peer %s", h.Peer)
	}
	return nil
}

// Encode returns the canonical DAG-CBOR bytes of a signed host record.
// Errors wrap ErrMalformed, ErrValidityTooLong or ErrRecordTooLarge.
func (h *HostRecord) Encode() ([]byte, error) {
	if _, err := h.validate(true, false); err != nil {
		return nil, err
	}
	data, err := encodeCanonical(h.wire(true))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxRecordBytes {
		return nil, errf(ErrRecordTooLarge, "host record is %d bytes, the limit is %d", len(data), MaxRecordBytes)
	}
	return data, nil
}

// DecodeHostRecord strictly decodes a host record and checks its fields
// (not its signature). Errors wrap ErrRecordTooLarge, ErrMalformed or
// ErrValidityTooLong.
func DecodeHostRecord(data []byte) (*HostRecord, error) {
	if len(data) > MaxRecordBytes {
		return nil, errf(ErrRecordTooLarge, "host record is %d bytes, the limit is %d", len(data), MaxRecordBytes)
	}
	var w hostWire
	if err := decodeCanonical("host record", data, MaxRecordBytes, &w); err != nil {
		return nil, err
	}
	if w.Type != TypeHost {
		return nil, errf(ErrMalformed, "type is %q, want %q", clip(w.Type), TypeHost)
	}
	h := &HostRecord{Peer: w.Peer, Addrs: w.Addrs, Slots: w.Slots, FreeSlots: w.FreeSlots,
		MemoryBytes: w.Memory, FreeMemoryBytes: w.FreeMemory, Price: w.Price, Capabilities: w.Caps,
		Version: w.Version, Seq: w.Seq, Issued: w.Issued, Expires: w.Expires, Sig: w.Sig}
	if _, err := h.validate(true, false); err != nil {
		return nil, err
	}
	return h, nil
}

// HostRecordKey is the DHT key of a node's host record, "/igor/host/<peer id>".
// It returns "" for anything but a canonical Ed25519 peer ID.
func HostRecordKey(peerID string) string {
	if _, err := PeerIDPublicKey(peerID); err != nil {
		return ""
	}
	return HostRecordKeyPrefix + peerID
}

// Admits reports whether the host, as its record describes it, can take the
// agent m describes: it has every capability m grants, a free slot, free
// memory for m's memory limit, a price within m's maximum (when that is
// > 0), and m allows migration (MigrationPolicy.Enabled nil or true). It
// does not check the signature or expiry. The error wraps ErrNotAdmitted
// and names every condition that failed; a nil m wraps ErrBadManifest.
func (h *HostRecord) Admits(m *Manifest) error {
	if m == nil {
		return fmt.Errorf("%w: no manifest to check host %s against", ErrBadManifest, h.Peer)
	}
	var why []string
	if en := m.MigrationPolicy.Enabled; en != nil && !*en {
		why = append(why, "the agent's migration policy disables placement (migration_policy.enabled is false)")
	}
	granted := make([]string, 0, len(m.Capabilities))
	for name := range m.Capabilities {
		granted = append(granted, name)
	}
	sort.Strings(granted)
	var missing []string
	for _, name := range granted {
		if !slices.Contains(h.Capabilities, name) {
			missing = append(missing, fmt.Sprintf("%q", name))
		}
	}
	if len(missing) > 0 {
		why = append(why, "lacks capability "+strings.Join(missing, ", "))
	}
	if h.FreeSlots == 0 {
		why = append(why, fmt.Sprintf("no free slot (0 of %d)", h.Slots))
	}
	need := m.ResourceLimits.MaxMemoryBytes
	if need == 0 {
		need = MaxMemoryBytes // what normalize would fill in
	}
	if h.FreeMemoryBytes < need {
		why = append(why, fmt.Sprintf("%d bytes of free memory, the agent needs %d", h.FreeMemoryBytes, need))
	}
	if limit := m.MigrationPolicy.MaxPricePerSecond; limit > 0 && h.Price > limit {
		why = append(why, fmt.Sprintf("price %d µc/s exceeds the agent's maximum %d", h.Price, limit))
	}
	if len(why) > 0 {
		return errf(ErrNotAdmitted, "%s", strings.Join(why, "; "))
	}
	return nil
}

// SelectHost returns the index of the best record, or -1 if there is none
// (nil entries are skipped; the caller passes only valid records of one
// peer). The order is total and deterministic: highest seq, then the latest
// issued, then the smallest encoding bytewise. On a complete tie (identical
// records) the first wins.
func SelectHost(records []*HostRecord) int { return selectBest(records, hostLess) }

// hostLess reports whether b is strictly better than a.
func hostLess(a, b *HostRecord) bool {
	if a.Seq != b.Seq {
		return b.Seq > a.Seq
	}
	if a.Issued != b.Issued {
		return b.Issued > a.Issued
	}
	ea, _ := encodeCanonical(a.wire(true))
	eb, _ := encodeCanonical(b.wire(true))
	return bytes.Compare(eb, ea) < 0
}
