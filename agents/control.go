package agents

import (
	"crypto/ed25519"
	"fmt"
	"math"
	"slices"

	"github.com/ipfs/go-cid"
)

// TypeControl is the signing domain of an owner's control record.
const TypeControl = "igor/control/v1"

// ControlKind is what an owner's control record asks of the agent.
type ControlKind string

// The kinds of control record (docs/CHECKPOINT-FORMAT.md, "Control records").
const (
	// ControlStop: the agent stops ticking after its final checkpoint, which
	// carries the record; it stays in custody, resumable with ControlStart.
	ControlStop ControlKind = "stop"
	// ControlStart: a stopped agent ticks again.
	ControlStart ControlKind = "start"
	// ControlTopUp: the budget grows by Amount µc — the only way it grows.
	ControlTopUp ControlKind = "topup"
	// ControlDelete: the agent's life ends: it stops for good (no
	// checkpoint may follow) and its custodians release it.
	ControlDelete ControlKind = "delete"
	// ControlUpgrade: the agent runs Module under Manifest from here on; its
	// state passes through the new module's agent_resume (and
	// agent_checkpoint) in the checkpoint applying the record.
	ControlUpgrade ControlKind = "upgrade"
)

var controlKinds = []ControlKind{ControlStop, ControlStart, ControlTopUp, ControlDelete, ControlUpgrade}

// Deleted reports whether cp is the checkpoint of the owner's delete
// record: the last of the lineage.
func (c *Checkpoint) Deleted() bool { return c.Control != nil && c.Control.Kind == ControlDelete }

// MaxTopUp bounds one top-up (µc), so a budget never overflows.
const MaxTopUp = int64(1) << 53

// Control is an owner's signed instruction to an agent. A checkpoint that
// applies it carries it inline (Checkpoint.Control), so the lineage proves
// who asked for every stop, start, top-up, deletion and upgrade; VerifyLineage checks it
// against the genesis's Owner.
type Control struct {
	Kind  ControlKind
	Agent string // did:key of the agent it is for
	// Seq numbers the owner's records for this agent: 1, 2, 3, ... The
	// checkpoint applying it has Controls = Seq, so a record is applied at
	// most once and in order (a replayed or skipped one is refused).
	Seq    uint64
	Amount int64 // ControlTopUp: µc added, > 0; otherwise 0
	// Module and Manifest: ControlUpgrade's new module and manifest block
	// (the bytes of Manifest.Canonical); otherwise undefined.
	Module   cid.Cid
	Manifest cid.Cid
	Issued   int64 // unix ns by the owner's clock; informational
	Sig      []byte
}

type controlWire struct {
	Kind     string `cbor:"kind"`
	Agent    string `cbor:"agent"`
	Seq      uint64 `cbor:"seq"`
	Amount   int64  `cbor:"amount,omitempty"`
	Module   *link  `cbor:"module,omitempty"`
	Manifest *link  `cbor:"manifest,omitempty"`
	Issued   int64  `cbor:"issued"`
	Sig      []byte `cbor:"sig,omitempty"`
}

func (c *Control) wire(withSig bool) *controlWire {
	w := &controlWire{Kind: string(c.Kind), Agent: c.Agent, Seq: c.Seq, Amount: c.Amount, Issued: c.Issued}
	if c.Module.Defined() {
		w.Module = &link{c.Module}
	}
	if c.Manifest.Defined() {
		w.Manifest = &link{c.Manifest}
	}
	if withSig {
		w.Sig = c.Sig
	}
	return w
}

func (w *controlWire) control() *Control {
	c := &Control{Kind: ControlKind(w.Kind), Agent: w.Agent, Seq: w.Seq, Amount: w.Amount, Issued: w.Issued, Sig: w.Sig}
	if w.Module != nil {
		c.Module = w.Module.c
	}
	if w.Manifest != nil {
		c.Manifest = w.Manifest.c
	}
	return c
}

// validate checks every field except the signature's validity.
func (c *Control) validate(signed bool) error {
	if !slices.Contains(controlKinds, c.Kind) {
		return errf(ErrMalformed, "control kind %q is unknown (known: stop, start, topup, delete, upgrade)", c.Kind)
	}
	if _, err := ParseDID(c.Agent); err != nil {
		return errf(ErrMalformed, "control agent: %v", err)
	}
	if c.Seq == 0 || c.Seq > math.MaxInt64 {
		return errf(ErrMalformed, "control seq %d: must be 1 or more", c.Seq)
	}
	switch {
	case c.Kind == ControlTopUp && (c.Amount <= 0 || c.Amount > MaxTopUp):
		return errf(ErrMalformed, "top-up amount %d µc: must be between 1 and %d", c.Amount, MaxTopUp)
	case c.Kind != ControlTopUp && c.Amount != 0:
		return errf(ErrMalformed, "a %s record carries no amount (got %d)", c.Kind, c.Amount)
	case c.Kind != ControlUpgrade && (c.Module.Defined() || c.Manifest.Defined()):
		return errf(ErrMalformed, "a %s record names no module or manifest", c.Kind)
	}
	if c.Kind == ControlUpgrade {
		if err := checkLink("upgrade module", c.Module, false); err != nil {
			return err
		}
		if err := checkLink("upgrade manifest", c.Manifest, false); err != nil {
			return err
		}
	}
	if signed && len(c.Sig) != ed25519.SignatureSize {
		return errf(ErrMalformed, "control sig is %d bytes, want %d", len(c.Sig), ed25519.SignatureSize)
	}
	return nil
}

func (c *Control) signingBytes() ([]byte, error) {
	unsigned, err := encodeCanonical(c.wire(false))
	if err != nil {
		return nil, err
	}
	return signingBytes(TypeControl, unsigned), nil
}

// Sign validates c and signs it with the owner's key.
func (c *Control) Sign(owner ed25519.PrivateKey) error {
	if err := c.validate(false); err != nil {
		return err
	}
	if len(owner) != ed25519.PrivateKeySize {
		return errf(ErrWrongKey, "owner key is %d bytes, want %d", len(owner), ed25519.PrivateKeySize)
	}
	msg, err := c.signingBytes()
	if err != nil {
		return err
	}
	c.Sig = signMsg(owner, msg)
	return nil
}

// Verify checks the fields and that owner (a did:key) signed c. Errors wrap
// ErrMalformed, ErrBadDID or ErrControl.
func (c *Control) Verify(owner string) error {
	if err := c.validate(true); err != nil {
		return err
	}
	pub, err := ParseDID(owner)
	if err != nil {
		return err
	}
	msg, err := c.signingBytes()
	if err != nil {
		return err
	}
	if !verifySig(pub, msg, c.Sig) {
		return errf(ErrControl, "the %s record (seq %d) is not signed by the agent's owner %s", c.Kind, c.Seq, owner)
	}
	return nil
}

// Encode returns the canonical DAG-CBOR bytes of a signed record (the form
// the API and CLI exchange). Errors wrap ErrMalformed.
func (c *Control) Encode() ([]byte, error) {
	if err := c.validate(true); err != nil {
		return nil, err
	}
	return encodeCanonical(c.wire(true))
}

// DecodeControl strictly decodes a signed record and checks its fields (not
// its signature: Verify needs the owner). Errors wrap ErrMalformed.
func DecodeControl(data []byte) (*Control, error) {
	var w controlWire
	if err := decodeCanonical("control record", data, 1024, &w); err != nil {
		return nil, err
	}
	c := w.control()
	if err := c.validate(true); err != nil {
		return nil, err
	}
	return c, nil
}

// CheckControl reports whether ctl may be applied next to an agent whose
// genesis is g and whose head is head: signed by the genesis's owner, for
// this agent, numbered one above the head's Controls, and meaningful in the
// head's state (no stop of a stopped agent, no start of a running one).
// Errors wrap ErrControl, ErrMalformed or ErrBadDID.
func CheckControl(g *Genesis, head *Checkpoint, ctl *Control) error {
	if g.Owner == "" {
		return errf(ErrControl, "agent %s has no owner in its genesis: nobody may stop, start, top up, delete or upgrade it", g.Agent)
	}
	if ctl.Agent != g.Agent {
		return errf(ErrControl, "the %s record is for %s, not %s", ctl.Kind, ctl.Agent, g.Agent)
	}
	if err := ctl.Verify(g.Owner); err != nil {
		return err
	}
	if head.Deleted() {
		return errf(ErrControl, "agent %s was deleted by its owner", g.Agent)
	}
	if want := head.Controls + 1; ctl.Seq != want {
		return errf(ErrControl, "the %s record has seq %d, but the agent has applied %d record(s): the next must be %d (replayed or out of order)",
			ctl.Kind, ctl.Seq, head.Controls, want)
	}
	if err := checkTopUp(head.Budget, ctl); err != nil {
		return err
	}
	switch {
	case ctl.Kind == ControlStop && head.Stopped:
		return errf(ErrControl, "agent %s is already stopped", g.Agent)
	case ctl.Kind == ControlStart && !head.Stopped:
		return errf(ErrControl, "agent %s is not stopped", g.Agent)
	}
	return nil
}

// checkTopUp refuses a top-up that would take budget past math.MaxInt64.
func checkTopUp(budget int64, ctl *Control) error {
	if ctl.Kind == ControlTopUp && budget > math.MaxInt64-ctl.Amount {
		return errf(ErrControl, "a top-up of %d µc on a budget of %d µc would overflow", ctl.Amount, budget)
	}
	return nil
}

// ControlledNext returns the checkpoint fields a control record sets on
// the step after prev (whose own step left budget budgetAfter): Controls,
// Stopped and Budget. The step rules (checkStep) require exactly these.
func ControlledNext(prev *Checkpoint, budgetAfter int64, ctl *Control) (controls uint64, stopped bool, budget int64) {
	controls, stopped, budget = prev.Controls, prev.Stopped, budgetAfter
	if ctl == nil {
		return
	}
	controls = ctl.Seq
	switch ctl.Kind {
	case ControlStop, ControlDelete:
		stopped = true
	case ControlStart:
		stopped = false
	case ControlTopUp:
		budget = budgetAfter + ctl.Amount // checkTopUp refused an overflow
	}
	return
}

// String describes the record in one line.
func (c *Control) String() string {
	switch c.Kind {
	case ControlTopUp:
		return fmt.Sprintf("%s #%d of %d µc", c.Kind, c.Seq, c.Amount)
	case ControlUpgrade:
		return fmt.Sprintf("%s #%d to module %s", c.Kind, c.Seq, c.Module)
	}
	return fmt.Sprintf("%s #%d", c.Kind, c.Seq)
}

// current returns the module and manifest in force after prev's step
// with record ctl: the genesis's until an upgrade, then the latest
// upgrade's.
func current(g *Genesis, prev *Checkpoint, ctl *Control) (module, manifest cid.Cid) {
	switch {
	case ctl != nil && ctl.Kind == ControlUpgrade:
		return ctl.Module, ctl.Manifest
	case prev != nil:
		return prev.Module, prev.Manifest
	}
	return g.Module, g.Manifest
}
