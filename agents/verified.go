package agents

import "crypto/sha256"

// VerifiedRecords remembers signed record values (head and host records)
// whose signature verified, so the same bytes seen again cost a SHA-256
// instead of an Ed25519 verification. kad-dht checks one incoming record
// four times: Validate, Validate of the record it already stores, then both
// again in Select; a host record also arrives by gossip and from DHT reads.
//
// Only successes are remembered, keyed by the hash of the whole value: a
// value's decoding and signature check are functions of its bytes, so equal
// bytes verify alike. Expiry is not remembered (it depends on the clock):
// the validators check it every time. Memory is bounded by two generations
// of at most n entries: when the newer fills up it becomes the older and
// the older is dropped. The zero value and a nil *VerifiedRecords remember
// nothing.
type VerifiedRecords struct {
	m *memo[[sha256.Size]byte, struct{}]
}

// NewVerifiedRecords returns a cache of at most 2n values (n ≥ 1).
func NewVerifiedRecords(n int) *VerifiedRecords {
	return &VerifiedRecords{m: newMemo[[sha256.Size]byte, struct{}](n)}
}

// Check runs check (the Verify of the record decoded from value) unless
// value verified before, and remembers value when check passes.
func (c *VerifiedRecords) Check(value []byte, check func() error) error {
	if c == nil || c.m == nil {
		return check()
	}
	k := sha256.Sum256(value)
	if _, ok := c.m.get(k); ok {
		return nil
	}
	if err := check(); err != nil {
		return err
	}
	c.m.put(k, struct{}{})
	return nil
}

// VerifyHostRecord decodes a host record and checks its signature
// (HostRecord.Verify), skipping the check for bytes that verified before.
// Errors wrap ErrMalformed or ErrBadSignature.
func (c *VerifiedRecords) VerifyHostRecord(value []byte) (*HostRecord, error) {
	h, err := DecodeHostRecord(value)
	if err != nil {
		return nil, err
	}
	if err := c.Check(value, h.Verify); err != nil {
		return nil, err
	}
	return h, nil
}
