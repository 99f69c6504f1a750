package keystore

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"

	"github.com/igor-mesh/igor-node/agents"
)

// MaxKeyFileBytes bounds a key file; real ones are about 150 bytes.
const MaxKeyFileBytes = 4 << 10

// keyFile is the on-disk format (version 1):
//
//	{"version":1,"type":"ed25519","did":"did:key:z6Mk...","seed":"<base64 of the 32-byte seed>"}
//
// The DID is redundant with the seed on purpose: a human can see whose key
// a file holds, and a file whose DID and seed disagree is detected as corrupt.
type keyFile struct {
	Version int    `json:"version"`
	Type    string `json:"type"`
	DID     string `json:"did"`
	Seed    string `json:"seed"`
}

// EncodeKeyFile returns the key file for priv (a 64-byte Ed25519 private
// key), ending in a newline. It panics on a key of the wrong length, which is
// a programming error.
func EncodeKeyFile(priv ed25519.PrivateKey) []byte {
	if len(priv) != ed25519.PrivateKeySize {
		panic(fmt.Sprintf("keystore: EncodeKeyFile: private key is %d bytes, want %d", len(priv), ed25519.PrivateKeySize))
	}
	kf := keyFile{
		Version: 1,
		Type:    "ed25519",
		DID:     agents.DID(priv.Public().(ed25519.PublicKey)),
		Seed:    base64.StdEncoding.EncodeToString(priv.Seed()),
	}
	b, err := json.Marshal(kf)
	if err != nil {
		panic(fmt.Sprintf("keystore: marshal key file: %v", err))
	}
	return append(b, '\n')
}

// DecodeKeyFile parses a key file strictly: known version and type, no
// unknown fields, no trailing data, a 32-byte seed, and a DID that matches
// the key the seed derives. The public half of the returned key is always
// derived from the seed. Errors wrap ErrCorrupt.
func DecodeKeyFile(data []byte) (ed25519.PrivateKey, error) {
	if len(data) > MaxKeyFileBytes {
		return nil, fmt.Errorf("%w: %d bytes, a key file is at most %d", ErrCorrupt, len(data), MaxKeyFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var kf keyFile
	if err := dec.Decode(&kf); err != nil {
		return nil, fmt.Errorf("%w: not a key file: %v", ErrCorrupt, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrCorrupt)
	}
	if kf.Version != 1 {
		return nil, fmt.Errorf("%w: version %d is not supported (this node reads version 1)", ErrCorrupt, kf.Version)
	}
	if kf.Type != "ed25519" {
		return nil, fmt.Errorf("%w: key type %q is not supported (want \"ed25519\")", ErrCorrupt, kf.Type)
	}
	seed, err := base64.StdEncoding.Strict().DecodeString(kf.Seed)
	if err != nil {
		return nil, fmt.Errorf("%w: seed is not valid base64: %v", ErrCorrupt, err)
	}
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("%w: seed is %d bytes, want %d", ErrCorrupt, len(seed), ed25519.SeedSize)
	}
	priv := ed25519.NewKeyFromSeed(seed)
	if did := agents.DID(priv.Public().(ed25519.PublicKey)); did != kf.DID {
		return nil, fmt.Errorf("%w: the file says %q but its seed is the key of %s", ErrCorrupt, kf.DID, did)
	}
	return priv, nil
}
