package agents

import (
	"bytes"
	"crypto/ed25519"
	"math"

	"github.com/ipfs/go-cid"
)

// Checkpoint is one step of an agent's life: its state after Tick, linked to
// its predecessor and its genesis, signed by the agent key and by the node
// (Holder) that ran it, so every step is attributable to a host.
type Checkpoint struct {
	Agent   string  // did:key of the agent; equals the genesis's
	Genesis cid.Cid // the agent's genesis block
	Prev    cid.Cid // predecessor checkpoint; cid.Undef exactly when Seq is 0
	Seq     uint64  // position in the lineage: 0, 1, 2, ...
	Tick    uint64  // ticks executed so far; strictly increases along the lineage
	Epoch   uint64  // lease epoch under which it was made; never decreases
	Holder  string  // libp2p peer ID of the node that made it
	// State is the agent's serialised state after Tick. A journaled step
	// (Journal set) may leave it undefined: its state is its predecessor's
	// advanced by replaying Journal (docs/CHECKPOINT-FORMAT.md, "Journal").
	State     cid.Cid
	StateSize uint64  // bytes of state (0 without State)
	Module    cid.Cid // equals the genesis's
	Manifest  cid.Cid // equals the genesis's
	Budget    int64   // µc remaining, ≥ 0; never increases
	Price     int64   // µc per second charged by the holder, ≥ 0
	// Calls and Metered are the holder's metering since the predecessor
	// (since the genesis for seq 0): how many agent_tick calls it billed
	// (completed, failed and rolled-back ones) and their wall time in ns,
	// each call's time capped at the manifest's tick timeout. Budget must
	// equal the predecessor's budget minus TickCost(Metered, Price),
	// floored at 0 — VerifyLineage recomputes it. Signed like every field,
	// so a holder's charge is attributable to it.
	Calls   uint64
	Metered uint64
	Time    int64 // unix ns by the holder's clock; informational, not checked
	// Controls counts the owner's control records applied in the lineage up
	// to this checkpoint; Control is the one this checkpoint applies (nil
	// for most); Stopped says the owner stopped the agent (no tick may
	// follow until a start record). VerifyLineage checks all three.
	Controls uint64
	Control  *Control
	Stopped  bool
	// Journal links the tick log (wasmexec's encoding, stored as an
	// object like State) of tick Tick, made by the holder of a journaled
	// agent (manifest "journal") for every tick, so that a new holder
	// replays the tick instead of running it again with new observations.
	// Partial: the log ends at the intent of an effect (http_request,
	// wallet_pay) whose result is not known yet; the next checkpoint
	// finishes the same tick.
	Journal cid.Cid
	Partial bool
	// Paid is what the agent paid (wallet_pay) since its predecessor, in
	// µc, on top of the metering: Budget = BudgetAfter(…) − Paid, at least 0.
	Paid int64
	// Receipts links a snapshot of the agent's latest payment receipts (at
	// most MaxReceipts, oldest first: what wallet_receipt reads) as of the
	// latest checkpoint with a state: written with a state when payments
	// changed them, carried forward otherwise. A journaled step's own
	// payments are in its journal; resuming replays them on top.
	Receipts  cid.Cid
	AgentSig  []byte // Ed25519 signature by the agent key
	HolderSig []byte // Ed25519 signature by the holder's node key
}

type checkpointWire struct {
	Type      string       `cbor:"type"`
	Agent     string       `cbor:"agent"`
	Genesis   link         `cbor:"genesis"`
	Prev      *link        `cbor:"prev,omitempty"`
	Seq       uint64       `cbor:"seq"`
	Tick      uint64       `cbor:"tick"`
	Epoch     uint64       `cbor:"epoch"`
	Holder    string       `cbor:"holder"`
	State     *link        `cbor:"state,omitempty"`
	StateSize uint64       `cbor:"stateSize"`
	Module    link         `cbor:"module"`
	Manifest  link         `cbor:"manifest"`
	Budget    int64        `cbor:"budget"`
	Price     int64        `cbor:"price"`
	Calls     uint64       `cbor:"calls"`
	Metered   uint64       `cbor:"metered"`
	Time      int64        `cbor:"time"`
	Controls  uint64       `cbor:"controls,omitempty"`
	Control   *controlWire `cbor:"control,omitempty"`
	Stopped   bool         `cbor:"stopped,omitempty"`
	Journal   *link        `cbor:"journal,omitempty"`
	Partial   bool         `cbor:"partial,omitempty"`
	Paid      int64        `cbor:"paid,omitempty"`
	Receipts  *link        `cbor:"receipts,omitempty"`
	AgentSig  []byte       `cbor:"agentSig,omitempty"`
	HolderSig []byte       `cbor:"holderSig,omitempty"`
}

func (c *Checkpoint) wire(withSigs bool) *checkpointWire {
	w := &checkpointWire{
		Type: TypeCheckpoint, Agent: c.Agent, Genesis: link{c.Genesis},
		Seq: c.Seq, Tick: c.Tick, Epoch: c.Epoch, Holder: c.Holder,
		StateSize: c.StateSize, Module: link{c.Module}, Manifest: link{c.Manifest},
		Budget: c.Budget, Price: c.Price, Calls: c.Calls, Metered: c.Metered, Time: c.Time,
	}
	if c.Prev.Defined() {
		w.Prev = &link{c.Prev}
	}
	if c.State.Defined() {
		w.State = &link{c.State}
	}
	w.Controls, w.Stopped = c.Controls, c.Stopped
	if c.Journal.Defined() {
		w.Journal = &link{c.Journal}
	}
	w.Partial, w.Paid = c.Partial, c.Paid
	if c.Receipts.Defined() {
		w.Receipts = &link{c.Receipts}
	}
	if c.Control != nil {
		w.Control = c.Control.wire(true)
	}
	if withSigs {
		w.AgentSig, w.HolderSig = c.AgentSig, c.HolderSig
	}
	return w
}

// validate checks every field except the signatures' validity and returns
// the agent and holder public keys; signed says whether the signatures must
// be present.
func (c *Checkpoint) validate(signed bool) (agent, holder ed25519.PublicKey, err error) {
	agent, err = ParseDID(c.Agent)
	if err != nil {
		return nil, nil, errf(ErrMalformed, "agent: %v", err)
	}
	holder, err = PeerIDPublicKey(c.Holder)
	if err != nil {
		return nil, nil, errf(ErrMalformed, "holder: %v", err)
	}
	if err := checkLink("genesis", c.Genesis, true); err != nil {
		return nil, nil, err
	}
	if c.Seq == 0 && c.Prev.Defined() {
		return nil, nil, errf(ErrMalformed, "seq 0 must not have a prev link (it follows the genesis directly)")
	}
	if c.Seq > 0 {
		if !c.Prev.Defined() {
			return nil, nil, errf(ErrMalformed, "seq %d has no prev link (only seq 0 may lack one)", c.Seq)
		}
		if err := checkLink("prev", c.Prev, true); err != nil {
			return nil, nil, err
		}
	}
	for _, f := range []struct {
		name string
		c    cid.Cid
	}{{"module", c.Module}, {"manifest", c.Manifest}} {
		if err := checkLink(f.name, f.c, false); err != nil {
			return nil, nil, err
		}
	}
	switch {
	case c.State.Defined():
		if err := checkLink("state", c.State, false); err != nil {
			return nil, nil, err
		}
	case !c.Journal.Defined() || c.Seq == 0:
		return nil, nil, errf(ErrMalformed, "state: missing CID (only a journaled step after seq 0 may leave it out)")
	case c.StateSize != 0:
		return nil, nil, errf(ErrMalformed, "stateSize %d without a state", c.StateSize)
	}
	if c.Journal.Defined() {
		if err := checkLink("journal", c.Journal, false); err != nil {
			return nil, nil, err
		}
		if c.Seq == 0 {
			return nil, nil, errf(ErrMalformed, "seq 0 has a journal (it runs no tick)")
		}
	}
	if c.Partial && !c.Journal.Defined() {
		return nil, nil, errf(ErrMalformed, "partial without a journal")
	}
	if c.Journal.Defined() && c.Control != nil {
		return nil, nil, errf(ErrMalformed, "a journaled tick and an owner's record in one checkpoint")
	}
	if c.Receipts.Defined() {
		if err := checkLink("receipts", c.Receipts, false); err != nil {
			return nil, nil, err
		}
	}
	if c.Paid < 0 {
		return nil, nil, errf(ErrMalformed, "paid %d µc is negative", c.Paid)
	}
	// IPLD data model integers are int64: keep every counter readable by
	// standard tools.
	for _, f := range []struct {
		name string
		v    uint64
	}{{"seq", c.Seq}, {"tick", c.Tick}, {"epoch", c.Epoch}, {"stateSize", c.StateSize}, {"calls", c.Calls}, {"metered", c.Metered}, {"controls", c.Controls}} {
		if f.v > math.MaxInt64 {
			return nil, nil, errf(ErrMalformed, "%s %d exceeds 2^63-1", f.name, f.v)
		}
	}
	if c.StateSize > MaxStateBytesCap {
		return nil, nil, errf(ErrMalformed, "stateSize %d exceeds the %d-byte cap", c.StateSize, MaxStateBytesCap)
	}
	if c.Budget < 0 {
		return nil, nil, errf(ErrMalformed, "budget %d µc is negative", c.Budget)
	}
	if c.Price < 0 {
		return nil, nil, errf(ErrMalformed, "price %d µc/s is negative", c.Price)
	}
	if c.Control != nil {
		if err := c.Control.validate(true); err != nil {
			return nil, nil, err
		}
		if c.Control.Agent != c.Agent {
			return nil, nil, errf(ErrMalformed, "carries a control record for %s", c.Control.Agent)
		}
		if c.Control.Seq != c.Controls {
			return nil, nil, errf(ErrMalformed, "carries control record %d but counts %d applied", c.Control.Seq, c.Controls)
		}
	}
	if c.Seq == 0 && (c.Controls != 0 || c.Stopped) {
		return nil, nil, errf(ErrMalformed, "seq 0 applies no control record")
	}
	if signed {
		if len(c.AgentSig) != ed25519.SignatureSize {
			return nil, nil, errf(ErrMalformed, "agentSig is %d bytes, want %d", len(c.AgentSig), ed25519.SignatureSize)
		}
		if len(c.HolderSig) != ed25519.SignatureSize {
			return nil, nil, errf(ErrMalformed, "holderSig is %d bytes, want %d", len(c.HolderSig), ed25519.SignatureSize)
		}
	}
	return agent, holder, nil
}

func (c *Checkpoint) signingBytes() ([]byte, error) {
	unsigned, err := encodeCanonical(c.wire(false))
	if err != nil {
		return nil, err
	}
	return signingBytes(TypeCheckpoint, unsigned), nil
}

// Sign validates c and signs it with the agent key (which must be the key
// of c.Agent) and the holder's node key (whose peer ID must be c.Holder).
// Both sign the same bytes. Errors wrap ErrMalformed or ErrWrongKey.
func (c *Checkpoint) Sign(agentKey, holderKey ed25519.PrivateKey) error {
	agent, holder, err := c.validate(false)
	if err != nil {
		return err
	}
	if len(agentKey) != ed25519.PrivateKeySize || !bytes.Equal(agentKey.Public().(ed25519.PublicKey), agent) {
		return errf(ErrWrongKey, "the agent signing key is not the key of %s", c.Agent)
	}
	if len(holderKey) != ed25519.PrivateKeySize || !bytes.Equal(holderKey.Public().(ed25519.PublicKey), holder) {
		return errf(ErrWrongKey, "the holder signing key is not the key of peer %s", c.Holder)
	}
	msg, err := c.signingBytes()
	if err != nil {
		return err
	}
	c.AgentSig = signMsg(agentKey, msg)
	c.HolderSig = signMsg(holderKey, msg)
	return nil
}

// Verify checks the fields (budget ≥ 0, seq 0 ⇔ no prev, CID kinds, ...)
// and both signatures. It does not look at other blocks; VerifyLineage
// does. Errors wrap ErrMalformed or ErrBadSignature.
func (c *Checkpoint) Verify() error {
	agent, holder, err := c.validate(true)
	if err != nil {
		return err
	}
	msg, err := c.signingBytes()
	if err != nil {
		return err
	}
	if !verifySig(agent, msg, c.AgentSig) {
		return errf(ErrBadSignature, "agent signature does not verify against %s", c.Agent)
	}
	if !verifySig(holder, msg, c.HolderSig) {
		return errf(ErrBadSignature, "holder signature does not verify against peer %s", c.Holder)
	}
	return nil
}

// Encode returns the canonical DAG-CBOR bytes of a signed checkpoint and
// their CID. It checks the fields, not the signatures. Errors wrap
// ErrMalformed.
func (c *Checkpoint) Encode() ([]byte, cid.Cid, error) {
	if _, _, err := c.validate(true); err != nil {
		return nil, cid.Undef, err
	}
	data, err := encodeCanonical(c.wire(true))
	if err != nil {
		return nil, cid.Undef, err
	}
	return data, blockCID(data), nil
}

// DecodeCheckpoint strictly decodes a checkpoint block and checks its
// fields (not its signatures: call Verify). Errors wrap ErrMalformed.
func DecodeCheckpoint(data []byte) (*Checkpoint, error) {
	var w checkpointWire
	if err := decodeCanonical("checkpoint", data, MaxObjectBytes, &w); err != nil {
		return nil, err
	}
	if w.Type != TypeCheckpoint {
		return nil, errf(ErrMalformed, "type is %q, want %q", w.Type, TypeCheckpoint)
	}
	c := &Checkpoint{
		Agent: w.Agent, Genesis: w.Genesis.c, Seq: w.Seq, Tick: w.Tick, Epoch: w.Epoch,
		Holder: w.Holder, StateSize: w.StateSize, Module: w.Module.c,
		Manifest: w.Manifest.c, Budget: w.Budget, Price: w.Price, Calls: w.Calls, Metered: w.Metered, Time: w.Time,
		AgentSig: w.AgentSig, HolderSig: w.HolderSig,
	}
	if w.Prev != nil {
		c.Prev = w.Prev.c
	}
	if w.State != nil {
		c.State = w.State.c
	}
	c.Controls, c.Stopped = w.Controls, w.Stopped
	if w.Journal != nil {
		c.Journal = w.Journal.c
	}
	c.Partial, c.Paid = w.Partial, w.Paid
	if w.Receipts != nil {
		c.Receipts = w.Receipts.c
	}
	if w.Control != nil {
		c.Control = w.Control.control()
	}
	if _, _, err := c.validate(true); err != nil {
		return nil, err
	}
	return c, nil
}
