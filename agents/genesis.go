package agents

import (
	"bytes"
	"crypto/ed25519"

	"github.com/ipfs/go-cid"
)

// Genesis is an agent's birth certificate: its identity, the module it runs,
// the manifest that bounds it and its initial budget, signed by the agent
// key. Its CID is the root every checkpoint of the agent links to.
type Genesis struct {
	Agent    string  // did:key of the agent
	Module   cid.Cid // the WASM module
	Manifest cid.Cid // the canonical manifest bytes (Manifest.Canonical)
	Budget   int64   // initial budget, µc, ≥ 0
	Created  int64   // unix ns, informational (clocks differ; not checked)
	// Owner, if set, is the did:key whose signed control records may stop,
	// start, top up, delete and upgrade the agent (Control). Without one, nobody may.
	Owner string
	Sig   []byte // Ed25519 signature by the agent key
}

type genesisWire struct {
	Type     string `cbor:"type"`
	Agent    string `cbor:"agent"`
	Module   link   `cbor:"module"`
	Manifest link   `cbor:"manifest"`
	Budget   int64  `cbor:"budget"`
	Created  int64  `cbor:"created"`
	Owner    string `cbor:"owner,omitempty"`
	Sig      []byte `cbor:"sig,omitempty"`
}

func (g *Genesis) wire(withSig bool) *genesisWire {
	w := &genesisWire{Type: TypeGenesis, Agent: g.Agent, Module: link{g.Module}, Manifest: link{g.Manifest}, Budget: g.Budget, Created: g.Created, Owner: g.Owner}
	if withSig {
		w.Sig = g.Sig
	}
	return w
}

// validate checks every field except the signature's validity; signed says
// whether Sig must be present.
func (g *Genesis) validate(signed bool) (ed25519.PublicKey, error) {
	pub, err := ParseDID(g.Agent)
	if err != nil {
		return nil, errf(ErrMalformed, "agent: %v", err)
	}
	if err := checkLink("module", g.Module, false); err != nil {
		return nil, err
	}
	if err := checkLink("manifest", g.Manifest, false); err != nil {
		return nil, err
	}
	if g.Budget < 0 {
		return nil, errf(ErrMalformed, "budget %d µc is negative", g.Budget)
	}
	if g.Owner != "" {
		if _, err := ParseDID(g.Owner); err != nil {
			return nil, errf(ErrMalformed, "owner: %v", err)
		}
	}
	if signed && len(g.Sig) != ed25519.SignatureSize {
		return nil, errf(ErrMalformed, "sig is %d bytes, want %d", len(g.Sig), ed25519.SignatureSize)
	}
	return pub, nil
}

func (g *Genesis) signingBytes() ([]byte, error) {
	unsigned, err := encodeCanonical(g.wire(false))
	if err != nil {
		return nil, err
	}
	return signingBytes(TypeGenesis, unsigned), nil
}

// Sign validates g and signs it with priv, which must be the key of g.Agent.
// Errors wrap ErrMalformed or ErrWrongKey.
func (g *Genesis) Sign(priv ed25519.PrivateKey) error {
	pub, err := g.validate(false)
	if err != nil {
		return err
	}
	if len(priv) != ed25519.PrivateKeySize || !bytes.Equal(priv.Public().(ed25519.PublicKey), pub) {
		return errf(ErrWrongKey, "the signing key is not the key of %s", g.Agent)
	}
	msg, err := g.signingBytes()
	if err != nil {
		return err
	}
	g.Sig = signMsg(priv, msg)
	return nil
}

// Verify checks the fields and the agent's signature. Errors wrap
// ErrMalformed or ErrBadSignature.
func (g *Genesis) Verify() error {
	pub, err := g.validate(true)
	if err != nil {
		return err
	}
	msg, err := g.signingBytes()
	if err != nil {
		return err
	}
	if !verifySig(pub, msg, g.Sig) {
		return errf(ErrBadSignature, "genesis signature does not verify against %s", g.Agent)
	}
	return nil
}

// Encode returns the canonical DAG-CBOR bytes of a signed genesis and their
// CID. It checks the fields, not the signature. Errors wrap ErrMalformed.
func (g *Genesis) Encode() ([]byte, cid.Cid, error) {
	if _, err := g.validate(true); err != nil {
		return nil, cid.Undef, err
	}
	data, err := encodeCanonical(g.wire(true))
	if err != nil {
		return nil, cid.Undef, err
	}
	return data, blockCID(data), nil
}

// DecodeGenesis strictly decodes a genesis block and checks its fields (not
// its signature: call Verify). Errors wrap ErrMalformed.
func DecodeGenesis(data []byte) (*Genesis, error) {
	var w genesisWire
	if err := decodeCanonical("genesis", data, MaxObjectBytes, &w); err != nil {
		return nil, err
	}
	if w.Type != TypeGenesis {
		return nil, errf(ErrMalformed, "type is %q, want %q", w.Type, TypeGenesis)
	}
	g := &Genesis{Agent: w.Agent, Module: w.Module.c, Manifest: w.Manifest.c, Budget: w.Budget, Created: w.Created, Owner: w.Owner, Sig: w.Sig}
	if _, err := g.validate(true); err != nil {
		return nil, err
	}
	return g, nil
}
