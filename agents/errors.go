package agents

import (
	"errors"
	"fmt"

	"github.com/ipfs/go-cid"
)

// Sentinel errors. Every error this package returns wraps one of them (or
// ErrBadManifest); compare with errors.Is.
var (
	ErrBadDID          = errors.New("agents: invalid DID")
	ErrBadPeerID       = errors.New("agents: invalid peer ID")
	ErrWrongKey        = errors.New("agents: key does not match")
	ErrBadSignature    = errors.New("agents: bad signature")
	ErrMalformed       = errors.New("agents: malformed object")
	ErrMissingBlock    = errors.New("agents: missing block")
	ErrBrokenLink      = errors.New("agents: broken link")
	ErrNotGenesis      = errors.New("agents: not a genesis")
	ErrOrder           = errors.New("agents: out of order")
	ErrBudgetIncreased = errors.New("agents: budget increased")
	// ErrMetering: a checkpoint's budget step does not match its signed
	// metering (calls, metered time, price) and the manifest's bounds.
	ErrMetering         = errors.New("agents: budget step does not match the metering")
	ErrModuleMismatch   = errors.New("agents: module mismatch")
	ErrManifestMismatch = errors.New("agents: manifest mismatch")
	ErrIdentityChanged  = errors.New("agents: agent identity changed")
	ErrFork             = errors.New("agents: fork")
	ErrExpired          = errors.New("agents: record expired")
	// ErrControl: an owner's control record that may not be applied (not
	// the owner's signature, another agent's, replayed, out of order, or
	// meaningless in the agent's state), or a checkpoint that misapplies one.
	ErrControl = errors.New("agents: control record refused")

	// DHT records (host.go, validator.go).
	ErrBadKey          = errors.New("agents: bad DHT key")
	ErrKeyMismatch     = errors.New("agents: record does not match its DHT key")
	ErrRecordTooLarge  = errors.New("agents: record too large")
	ErrValidityTooLong = errors.New("agents: record validity too long")
	ErrNotAdmitted     = errors.New("agents: host does not admit agent")
)

// objErr is an error about one object: the sentinel it belongs to and a
// human reason. VerifyLineage lifts it into a VerifyError naming the culprit.
type objErr struct {
	sentinel error
	reason   string
}

func (e *objErr) Error() string { return e.sentinel.Error() + ": " + e.reason }
func (e *objErr) Unwrap() error { return e.sentinel }

func errf(sentinel error, format string, args ...any) error {
	return &objErr{sentinel: sentinel, reason: fmt.Sprintf(format, args...)}
}

// VerifyError reports the object that broke a lineage rule. CID always
// names the culprit; for a missing block it is the missing block itself.
type VerifyError struct {
	CID cid.Cid
	// Seq is the culprit checkpoint's sequence number (for a missing or
	// undecodable block: the sequence number its successor implies). It is
	// meaningful only when SeqKnown is true.
	Seq      uint64
	SeqKnown bool
	// Genesis is true when the culprit is the genesis block, not a checkpoint.
	Genesis bool
	Reason  string
	// Err is the sentinel (ErrMissingBlock, ErrBadSignature, ...).
	Err error
	// cause is the underlying error, if any (e.g. the block getter's), kept
	// so that errors.Is also sees it.
	cause error
}

func (e *VerifyError) Error() string {
	switch {
	case e.Genesis:
		return fmt.Sprintf("genesis %s: %s", e.CID, e.Reason)
	case e.SeqKnown:
		return fmt.Sprintf("checkpoint %s (seq %d): %s", e.CID, e.Seq, e.Reason)
	default:
		return fmt.Sprintf("checkpoint %s (seq unknown): %s", e.CID, e.Reason)
	}
}

// Unwrap returns the sentinel and the underlying cause.
func (e *VerifyError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Err, e.cause}
	}
	return []error{e.Err}
}

// verifyErr turns err (an objErr or any other error) into a VerifyError
// about c; fallback is the sentinel used when err is not an objErr.
func verifyErr(c cid.Cid, seq uint64, seqKnown bool, fallback, err error) *VerifyError {
	ve := &VerifyError{CID: c, Seq: seq, SeqKnown: seqKnown, Err: fallback, Reason: err.Error()}
	var oe *objErr
	if errors.As(err, &oe) {
		ve.Err, ve.Reason = oe.sentinel, oe.reason
	} else {
		ve.cause = err
	}
	return ve
}
