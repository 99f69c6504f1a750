package keystore

import (
	"bytes"
	"crypto/ed25519"
	"testing"
)

// FuzzDecodeKeyFile: no panic; whatever decodes is a consistent key whose
// own key file decodes to the same key.
func FuzzDecodeKeyFile(f *testing.F) {
	f.Add(EncodeKeyFile(testKey("a")))
	f.Add([]byte(`{"version":1,"type":"ed25519","did":"did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp","seed":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`))
	f.Add([]byte(`{"version":2}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		priv, err := DecodeKeyFile(data)
		if err != nil {
			if priv != nil {
				t.Fatal("key returned with an error")
			}
			return
		}
		if len(priv) != ed25519.PrivateKeySize || !bytes.Equal(ed25519.NewKeyFromSeed(priv.Seed()), priv) {
			t.Fatal("inconsistent key decoded")
		}
		back, err := DecodeKeyFile(EncodeKeyFile(priv))
		if err != nil || !bytes.Equal(back, priv) {
			t.Fatalf("re-encoded key file: %v", err)
		}
	})
}
