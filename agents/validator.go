package agents

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// DHT validators. Both have the method set of go-libp2p-record's
// record.Validator, without this package importing libp2p. Keys are
// "/igor/agent/<agent id>" and "/igor/host/<peer id>". kad-dht dispatches
// on a key's first component, so the dht package registers one validator
// under "igor" and routes on the second component; the node wires these in
// as
//
//	dht.WithValidator(agents.HeadNamespace, agents.HeadValidator{Now: time.Now})
//	dht.WithValidator(agents.HostNamespace, agents.HostValidator{Now: time.Now})
//
// and they receive the full key. kad-dht runs Validate on every record
// before it stores or returns it, and Select to choose among several.
//
// Validation is the same for both: at most MaxRecordBytes; the key has the
// namespace's form and names a valid agent or peer; the value decodes
// strictly; it is about the agent or peer its key names (so nobody can file
// a record under another's key); its signature verifies against that key;
// it has not expired at Now; and it does not claim to stay valid longer
// than MaxRecordValidity + MaxClockSkew from Now. These validators are the
// only place the package reads a clock, and only through Now.

// HeadValidator validates head records under "/igor/agent/<agent id>".
type HeadValidator struct {
	// Now is the clock expiry is judged by; time.Now when nil.
	Now func() time.Time
	// Verified, when not nil, spares the signature check of a value that
	// passed it before (kad-dht validates a put's record four times).
	Verified *VerifiedRecords
}

// HostValidator validates host records under "/igor/host/<peer id>".
type HostValidator struct {
	// Now is the clock expiry is judged by; time.Now when nil.
	Now func() time.Time
	// Verified: as HeadValidator's.
	Verified *VerifiedRecords
}

func nowNanos(now func() time.Time) int64 {
	if now == nil {
		return time.Now().UnixNano()
	}
	return now().UnixNano()
}

// recordKeyID returns the part of key after "/igor/<ns>/", or an ErrBadKey
// error. kad-dht keys are arbitrary bytes from the network, so the key is
// clipped in the message.
func recordKeyID(key, ns, what string) (string, error) {
	id, ok := strings.CutPrefix(key, "/"+KeyRoot+"/"+ns+"/")
	if !ok || id == "" || strings.Contains(id, "/") {
		return "", errf(ErrBadKey, "DHT key %q is not of the form /%s/%s/<%s>", clip(key), KeyRoot, ns, what)
	}
	return id, nil
}

// checkTimes applies the expiry rules common to all records.
func checkTimes(what string, expires, now int64) error {
	if now >= expires {
		return errf(ErrExpired, "%s expired at %s (now %s)", what, fmtNanos(expires), fmtNanos(now))
	}
	limit := now + int64(MaxRecordValidity+MaxClockSkew)
	if limit < now { // overflow: a clock in the year 2262
		limit = math.MaxInt64
	}
	if expires > limit {
		return errf(ErrValidityTooLong, "%s expires at %s, more than %v after now (%s); sign records valid for at most %v",
			what, fmtNanos(expires), MaxRecordValidity+MaxClockSkew, fmtNanos(now), MaxRecordValidity)
	}
	return nil
}

func fmtNanos(ns int64) string {
	return time.Unix(0, ns).UTC().Format(time.RFC3339Nano)
}

// validate returns the decoded record or the reason it is refused.
func (v HeadValidator) validate(key string, value []byte, now int64) (*HeadRecord, error) {
	if len(value) > MaxRecordBytes {
		return nil, errf(ErrRecordTooLarge, "head record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
	}
	id, err := recordKeyID(key, HeadNamespace, "agent id")
	if err != nil {
		return nil, err
	}
	if AgentID("did:key:"+id) != id {
		return nil, errf(ErrBadKey, "DHT key %q does not name an agent (want %sz6Mk…)", clip(key), HeadRecordKeyPrefix)
	}
	h, err := DecodeHeadRecord(value)
	if err != nil {
		return nil, err
	}
	if AgentID(h.Agent) != id {
		return nil, errf(ErrKeyMismatch, "head record of %s stored under key %q", h.Agent, clip(key))
	}
	if err := v.Verified.Check(value, h.Verify); err != nil {
		return nil, err
	}
	if err := checkTimes("head record of "+h.Agent, h.Expires, now); err != nil {
		return nil, err
	}
	return h, nil
}

// Validate accepts a head record stored under key, or says why not. Errors
// wrap ErrRecordTooLarge, ErrBadKey, ErrMalformed, ErrKeyMismatch,
// ErrBadSignature, ErrExpired or ErrValidityTooLong.
func (v HeadValidator) Validate(key string, value []byte) error {
	_, err := v.validate(key, value, nowNanos(v.Now))
	return err
}

// Select returns the index of the best valid value by SelectHead's order
// (highest epoch, then seq, then a fixed tie-break), so every node picks the
// same one whatever order the values arrive in. Values that fail Validate
// are never selected; when none is valid the error wraps the first value's
// reason (ErrMalformed for no values at all).
func (v HeadValidator) Select(key string, values [][]byte) (int, error) {
	now := nowNanos(v.Now)
	return selectValid(key, values, func(val []byte) (*HeadRecord, error) { return v.validate(key, val, now) }, SelectHead)
}

func noneValid(key string, n int, first error) error {
	if n == 0 {
		return errf(ErrMalformed, "no values to select from for %q", clip(key))
	}
	return fmt.Errorf("agents: none of the %d values for %q is valid: %w", n, clip(key), first)
}

// validate returns the decoded record or the reason it is refused.
func (v HostValidator) validate(key string, value []byte, now int64) (*HostRecord, error) {
	if len(value) > MaxRecordBytes {
		return nil, errf(ErrRecordTooLarge, "host record is %d bytes, the limit is %d", len(value), MaxRecordBytes)
	}
	id, err := recordKeyID(key, HostNamespace, "peer id")
	if err != nil {
		return nil, err
	}
	if _, err := PeerIDPublicKey(id); err != nil {
		return nil, errf(ErrBadKey, "DHT key %q does not name an Ed25519 peer (want %s12D3KooW…)", clip(key), HostRecordKeyPrefix)
	}
	h, err := DecodeHostRecord(value)
	if err != nil {
		return nil, err
	}
	if h.Peer != id {
		return nil, errf(ErrKeyMismatch, "host record of peer %s stored under key %q", h.Peer, clip(key))
	}
	if err := v.Verified.Check(value, h.Verify); err != nil {
		return nil, err
	}
	if err := checkTimes("host record of peer "+h.Peer, h.Expires, now); err != nil {
		return nil, err
	}
	return h, nil
}

// Validate accepts a host record stored under key, or says why not. Errors
// wrap ErrRecordTooLarge, ErrBadKey, ErrMalformed, ErrKeyMismatch,
// ErrBadSignature, ErrExpired or ErrValidityTooLong.
func (v HostValidator) Validate(key string, value []byte) error {
	_, err := v.validate(key, value, nowNanos(v.Now))
	return err
}

// Select returns the index of the best valid value by SelectHost's order
// (highest seq, then latest issued, then smallest encoding), so every node
// picks the same one whatever order the values arrive in. Values that fail
// Validate are never selected; when none is valid the error wraps the first
// value's reason (ErrMalformed for no values at all).
func (v HostValidator) Select(key string, values [][]byte) (int, error) {
	now := nowNanos(v.Now)
	return selectValid(key, values, func(val []byte) (*HostRecord, error) { return v.validate(key, val, now) }, SelectHost)
}

// selectValid validates every value, then lets pick choose among the valid
// ones (invalid values are passed to pick as nil, so indexes line up).
func selectValid[T any](key string, values [][]byte, validate func([]byte) (*T, error), pick func([]*T) int) (int, error) {
	recs := make([]*T, len(values))
	var first error
	for i, val := range values {
		r, err := validate(val)
		if err != nil {
			if first == nil {
				first = fmt.Errorf("value %d: %w", i, err)
			}
			continue
		}
		recs[i] = r
	}
	if i := pick(recs); i >= 0 {
		return i, nil
	}
	return -1, noneValid(key, len(values), first)
}
