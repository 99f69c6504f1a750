package agents

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"strings"

	"github.com/mr-tron/base58"
)

// didPrefix is a did:key with a base58btc ("z") multibase value.
const didPrefix = "did:key:z"

// ed25519PubCodec is the multicodec varint for ed25519-pub (0xed), which
// prefixes the raw key inside a did:key.
var ed25519PubCodec = []byte{0xed, 0x01}

// GenerateKey makes a new Ed25519 key pair from 32 bytes of r (crypto/rand
// when r is nil). It returns an error only when r fails.
func GenerateKey(r io.Reader) (ed25519.PublicKey, ed25519.PrivateKey, error) {
	if r == nil {
		r = rand.Reader
	}
	seed := make([]byte, ed25519.SeedSize)
	if _, err := io.ReadFull(r, seed); err != nil {
		return nil, nil, fmt.Errorf("agents: generate key: %w", err)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	return priv.Public().(ed25519.PublicKey), priv, nil
}

// DID returns the did:key of an Ed25519 public key:
// "did:key:z" + base58btc(0xed 0x01 ‖ 32-byte key). It always starts with
// "did:key:z6Mk". pub must be 32 bytes (ed25519.PublicKeySize).
func DID(pub ed25519.PublicKey) string {
	b := make([]byte, 0, 2+len(pub))
	b = append(append(b, ed25519PubCodec...), pub...)
	return didPrefix + base58.Encode(b)
}

// ParseDID returns the public key named by an Ed25519 did:key. Only the
// canonical form DID produces is accepted. Errors wrap ErrBadDID.
func ParseDID(s string) (ed25519.PublicKey, error) {
	if !strings.HasPrefix(s, didPrefix) {
		if strings.HasPrefix(s, "did:key:") {
			return nil, fmt.Errorf("%w: %q: only base58btc (\"z\") did:key values are supported", ErrBadDID, s)
		}
		return nil, fmt.Errorf("%w: %q does not start with %q", ErrBadDID, s, didPrefix)
	}
	if len(s) > 128 {
		return nil, fmt.Errorf("%w: %d characters is too long for an Ed25519 did:key", ErrBadDID, len(s))
	}
	if pub, ok := parsedDIDs.get(s); ok {
		return append(ed25519.PublicKey(nil), pub[:]...), nil // the caller's own copy
	}
	raw, err := base58.Decode(s[len(didPrefix):])
	if err != nil {
		return nil, fmt.Errorf("%w: %q: bad base58btc: %v", ErrBadDID, s, err)
	}
	if len(raw) != 2+ed25519.PublicKeySize || !bytes.HasPrefix(raw, ed25519PubCodec) {
		return nil, fmt.Errorf("%w: %q is not an Ed25519 key (want multicodec 0xed01 and 32 key bytes)", ErrBadDID, s)
	}
	pub := ed25519.PublicKey(raw[2:])
	// base58 has no alternative spellings for the same bytes except leading
	// zero handling; re-encoding closes that door for good.
	if DID(pub) != s {
		return nil, fmt.Errorf("%w: %q is not in canonical form", ErrBadDID, s)
	}
	parsedDIDs.put(s, [ed25519.PublicKeySize]byte(pub))
	return pub, nil
}

// parsedDIDs remembers valid DIDs' keys: every checkpoint a node decodes,
// signs or verifies names its agent's DID, and the base58 decode and the
// canonical re-encode were ~1 % of a custody node's CPU and 5 % of its
// allocations. Only valid DIDs are kept, in two generations of 4,096.
var parsedDIDs = newMemo[string, [ed25519.PublicKeySize]byte](4096)

// AgentID returns the part of a did:key after "did:key:" ("z6Mk..."), which
// is safe in file names and DHT keys (base58 alphabet only). It returns ""
// for anything that is not a valid Ed25519 did:key, so an unchecked string
// can never become a path.
func AgentID(did string) string {
	if _, err := ParseDID(did); err != nil {
		return ""
	}
	return did[len("did:key:"):]
}

// ShortDID abbreviates a DID for log prefixes: the first 8 and last 4
// characters of its agent ID, e.g. "z6MkhaXg…2doK". The "z6Mk" prefix is the
// same for every Ed25519 key, so 8 leading characters carry 4 that differ.
// It is for display only: it is not unique. Strings that are too short are
// returned unchanged.
func ShortDID(did string) string {
	id := strings.TrimPrefix(did, "did:key:")
	if len(id) <= 13 {
		return id
	}
	return id[:8] + "…" + id[len(id)-4:]
}

// libp2p peer IDs for Ed25519 keys are the identity multihash of the
// protobuf-encoded public key:
//
//	0x00 0x24                 identity multihash, 36-byte digest
//	0x08 0x01                 field 1 (Type), varint 1 = Ed25519
//	0x12 0x20 <32 key bytes>  field 2 (Data), 32 bytes
//
// base58btc-encoded without a multibase prefix ("12D3KooW...").
var peerIDPrefix = []byte{0x00, 0x24, 0x08, 0x01, 0x12, 0x20}

// PeerID returns the libp2p peer ID string of an Ed25519 public key, as
// go-libp2p prints it. pub must be 32 bytes.
func PeerID(pub ed25519.PublicKey) string {
	b := make([]byte, 0, len(peerIDPrefix)+len(pub))
	b = append(append(b, peerIDPrefix...), pub...)
	return base58.Encode(b)
}

// PeerIDPublicKey returns the Ed25519 public key embedded in a peer ID. Only
// the base58btc identity-multihash form of an Ed25519 key is accepted (which
// is what PeerID produces); RSA/secp256k1 peer IDs and the CIDv1 form are
// rejected. Errors wrap ErrBadPeerID.
func PeerIDPublicKey(peerID string) (ed25519.PublicKey, error) {
	if len(peerID) > 128 {
		return nil, fmt.Errorf("%w: %d characters is too long", ErrBadPeerID, len(peerID))
	}
	raw, err := base58.Decode(peerID)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: bad base58btc: %v", ErrBadPeerID, peerID, err)
	}
	if len(raw) != len(peerIDPrefix)+ed25519.PublicKeySize || !bytes.HasPrefix(raw, peerIDPrefix) {
		return nil, fmt.Errorf("%w: %q is not the peer ID of an Ed25519 key (want 12D3KooW...)", ErrBadPeerID, peerID)
	}
	pub := ed25519.PublicKey(raw[len(peerIDPrefix):])
	if PeerID(pub) != peerID {
		return nil, fmt.Errorf("%w: %q is not in canonical form", ErrBadPeerID, peerID)
	}
	return pub, nil
}
