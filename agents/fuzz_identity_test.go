package agents

import (
	"errors"
	"strings"
	"testing"
)

// FuzzParseIdentity: agent DIDs (API path parameters, frames, records,
// file names) and peer IDs (records, offers) parse only in the canonical
// form DID/PeerID print: what parses prints back to the same string, and the
// same key gives the same DID and peer ID; rejects wrap ErrBadDID or
// ErrBadPeerID. AgentID is "" exactly for what ParseDID rejects.
func FuzzParseIdentity(f *testing.F) {
	f.Add("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
	f.Add("12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA")
	f.Add("did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2do")     // truncated
	f.Add("did:key:z1116MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK") // leading zeros
	f.Add("did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme")   // secp256k1
	f.Add("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N")              // RSA-style peer ID
	f.Fuzz(func(t *testing.T, s string) {
		pub, err := ParseDID(s)
		if err != nil {
			if !errors.Is(err, ErrBadDID) || pub != nil {
				t.Fatalf("ParseDID(%q): %v", s, err)
			}
			if AgentID(s) != "" {
				t.Fatalf("AgentID of rejected %q is %q", s, AgentID(s))
			}
		} else {
			if DID(pub) != s || AgentID(s) != strings.TrimPrefix(s, "did:key:") {
				t.Fatalf("%q parses but prints as %q", s, DID(pub))
			}
			if back, err := PeerIDPublicKey(PeerID(pub)); err != nil || !back.Equal(pub) {
				t.Fatalf("peer ID of %q does not parse back: %v", s, err)
			}
		}
		pub, err = PeerIDPublicKey(s)
		if err != nil {
			if !errors.Is(err, ErrBadPeerID) || pub != nil {
				t.Fatalf("PeerIDPublicKey(%q): %v", s, err)
			}
			return
		}
		if PeerID(pub) != s {
			t.Fatalf("%q parses but prints as %q", s, PeerID(pub))
		}
		if back, err := ParseDID(DID(pub)); err != nil || !back.Equal(pub) {
			t.Fatalf("DID of peer %q does not parse back: %v", s, err)
		}
	})
}
