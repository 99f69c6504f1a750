package agents

import (
	"crypto/ed25519"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// verifySig reports whether sig is pub's Ed25519 signature of msg, with
// exactly crypto/ed25519's rules (curve25519-voi's VerifyOptionsStdLib:
// cofactorless, small-order and non-canonical keys and R accepted as the
// standard library accepts them, non-canonical S refused). A node's
// standbys verify every checkpoint their holders commit — two signatures
// each, the largest item of a node's CPU profile after the store — and
// curve25519-voi does it in ~0.6-0.7x the time (DECISIONS D78;
// BenchmarkVerifySig). TestVerifySigMatchesStdlib holds it to the
// standard library's answers, edge cases included: a signature valid on
// one node and invalid on another would split a lineage's verdict.
func verifySig(pub ed25519.PublicKey, msg, sig []byte) bool {
	if len(pub) != ed25519.PublicKeySize || len(sig) != ed25519.SignatureSize {
		return false // voi panics on a bad key length; the standard library too
	}
	return voi.VerifyWithOptions(voi.PublicKey(pub), msg, sig, stdlibRules)
}

var stdlibRules = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// signMsg is ed25519.Sign (RFC 8032 signatures are deterministic: the same
// bytes, TestSignMsgMatchesStdlib) by curve25519-voi, in ~0.6x the time: a
// holder signs every checkpoint twice. priv must be PrivateKeySize bytes
// (every caller checks it against the key it signs for).
func signMsg(priv ed25519.PrivateKey, msg []byte) []byte {
	return voi.Sign(voi.PrivateKey(priv), msg)
}
