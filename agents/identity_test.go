package agents

import (
	"bytes"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/mr-tron/base58"
)

func TestDIDKnownVectors(t *testing.T) {
	// did:key spec test vector: the all-zero Ed25519 seed.
	seed := make([]byte, 32)
	pub := pubOf(ed25519.NewKeyFromSeed(seed))
	const want = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"
	if got := DID(pub); got != want {
		t.Fatalf("DID(zero seed) = %s, want %s", got, want)
	}
	back, err := ParseDID(want)
	if err != nil || !bytes.Equal(back, pub) {
		t.Fatalf("ParseDID(%s) = %x, %v; want %x", want, back, err, pub)
	}
	// The did:key spec's example DID must parse and re-encode to itself.
	const example = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	pub2, err := ParseDID(example)
	if err != nil {
		t.Fatalf("ParseDID(spec example): %v", err)
	}
	if DID(pub2) != example {
		t.Fatalf("spec example does not round-trip: %s", DID(pub2))
	}
}

func TestDIDRoundTrip(t *testing.T) {
	for i := 0; i < 50; i++ {
		pub, priv, err := GenerateKey(nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(pubOf(priv), pub) {
			t.Fatal("GenerateKey: public key does not match private key")
		}
		did := DID(pub)
		if !strings.HasPrefix(did, "did:key:z6Mk") {
			t.Fatalf("DID %s does not start with did:key:z6Mk", did)
		}
		back, err := ParseDID(did)
		if err != nil || !bytes.Equal(back, pub) {
			t.Fatalf("round trip of %s: %x, %v", did, back, err)
		}
		id := AgentID(did)
		if id != strings.TrimPrefix(did, "did:key:") {
			t.Fatalf("AgentID(%s) = %q", did, id)
		}
	}
}

func TestGenerateKeyDeterministicAndReaderErrors(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, 32)
	pub, priv, err := GenerateKey(bytes.NewReader(seed))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(priv, ed25519.NewKeyFromSeed(seed)) || !bytes.Equal(pub, pubOf(priv)) {
		t.Fatal("GenerateKey does not use the reader's 32 bytes as the seed")
	}
	if _, _, err := GenerateKey(bytes.NewReader(seed[:10])); err == nil {
		t.Fatal("GenerateKey with a short reader: no error")
	}
}

func TestParseDIDRejects(t *testing.T) {
	zero := ed25519.NewKeyFromSeed(make([]byte, 32))
	valid := DID(pubOf(zero))
	raw, _ := base58.Decode(strings.TrimPrefix(valid, "did:key:z"))
	enc := func(b []byte) string { return "did:key:z" + base58.Encode(b) }
	cases := map[string]string{
		"empty":                "",
		"no method value":      "did:key:",
		"other method":         "did:web:example.com",
		"base32 multibase":     "did:key:b" + strings.ToLower(valid[9:]),
		"bad base58":           "did:key:z6Mk0OIl",
		"secp256k1 key":        enc(append([]byte{0xe7, 0x01}, make([]byte, 33)...)),
		"short key":            enc(raw[:33]),
		"long key":             enc(append(append([]byte{}, raw...), 0)),
		"leading zero padding": "did:key:z1" + valid[9:],
		"trailing junk":        valid + "#frag",
		"uppercase prefix":     "DID:KEY:" + valid[8:],
		"too long":             "did:key:z" + strings.Repeat("2", 200),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseDID(s); !errors.Is(err, ErrBadDID) {
				t.Fatalf("ParseDID(%q) = %v, want ErrBadDID", s, err)
			}
			if AgentID(s) != "" {
				t.Fatalf("AgentID(%q) is not empty", s)
			}
		})
	}
}

func TestShortDID(t *testing.T) {
	const did = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	if got := ShortDID(did); got != "z6MkhaXg…2doK" {
		t.Fatalf("ShortDID = %q", got)
	}
	if got := ShortDID("did:key:z6Mk"); got != "z6Mk" {
		t.Fatalf("ShortDID(short) = %q", got)
	}
}

func TestPeerIDKnownVector(t *testing.T) {
	// libp2p peer-ids spec test vector: the Ed25519 private key
	// 080112407e08...27e (protobuf) has seed 7e08...ee7d and public key
	// 1ed1...e27e; its protobuf public key is 080112201ed1...e27e. The
	// peer ID is the identity multihash of those 36 bytes.
	seed, _ := hex.DecodeString("7e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d")
	wantPub, _ := hex.DecodeString("1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
	pub := pubOf(ed25519.NewKeyFromSeed(seed))
	if !bytes.Equal(pub, wantPub) {
		t.Fatalf("spec seed gives public key %x, want %x", pub, wantPub)
	}
	const want = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
	if got := PeerID(pub); got != want {
		t.Fatalf("PeerID = %s, want %s", got, want)
	}
	raw, _ := base58.Decode(want)
	protoPub, _ := hex.DecodeString("080112201ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
	if !bytes.Equal(raw, append([]byte{0x00, 0x24}, protoPub...)) {
		t.Fatalf("peer ID bytes %x are not identity-multihash(protobuf key)", raw)
	}
	back, err := PeerIDPublicKey(want)
	if err != nil || !bytes.Equal(back, pub) {
		t.Fatalf("PeerIDPublicKey = %x, %v", back, err)
	}
}

func TestPeerIDPublicKeyRejects(t *testing.T) {
	pub := pubOf(keyFromLabel("x"))
	raw, _ := base58.Decode(PeerID(pub))
	sha := append([]byte{0x12, 0x20}, make([]byte, 32)...)
	cases := map[string]string{
		"empty":            "",
		"not base58":       "12D3KooW0OIl",
		"sha256 multihash": base58.Encode(sha), // RSA-style "Qm..." peer ID
		"secp256k1 key":    base58.Encode(append([]byte{0x00, 0x25, 0x08, 0x02, 0x12, 0x21}, make([]byte, 33)...)),
		"truncated":        base58.Encode(raw[:len(raw)-1]),
		"leading padding":  "1" + PeerID(pub),
		"cidv1 form":       "bafzaajaiaejcb",
		"did instead":      DID(pub),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := PeerIDPublicKey(s); !errors.Is(err, ErrBadPeerID) {
				t.Fatalf("PeerIDPublicKey(%q) = %v, want ErrBadPeerID", s, err)
			}
		})
	}
}
