package agents

import (
	"errors"
	"testing"
	"time"
)

func TestVerifiedRecordsSparesOnlySuccesses(t *testing.T) {
	c := NewVerifiedRecords(2)
	calls := 0
	ok := func() error { calls++; return nil }
	bad := func() error { calls++; return ErrBadSignature }

	for range 3 {
		if err := c.Check([]byte("a"), ok); err != nil {
			t.Fatal(err)
		}
	}
	if calls != 1 {
		t.Fatalf("same bytes verified %d times, want once", calls)
	}
	for range 2 {
		if err := c.Check([]byte("b"), bad); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("failed check: %v", err)
		}
	}
	if calls != 3 {
		t.Fatalf("a failure was remembered: %d checks, want 3", calls)
	}
	// Two generations of n = 2: "a" survives one rotation, not two.
	for _, v := range []string{"c", "d", "e"} { // cur {a,c} → old {a,c}, cur {d,e}
		_ = c.Check([]byte(v), ok)
	}
	calls = 0
	_ = c.Check([]byte("a"), ok)
	if calls != 0 {
		t.Fatal("forgot a value after one rotation")
	}
	_ = c.Check([]byte("f"), ok) // old {d,e}, cur {f}: "a" is gone
	calls = 0
	_ = c.Check([]byte("a"), ok)
	if calls != 1 {
		t.Fatal("the cache holds more than two generations")
	}
	var none *VerifiedRecords
	calls = 0
	_ = none.Check([]byte("a"), ok)
	_ = none.Check([]byte("a"), ok)
	if calls != 2 {
		t.Fatal("a nil cache remembered")
	}
}

// A remembered signature spares the signature only: the key, and expiry
// by the validator's clock, are judged every time.
func TestValidatorsWithVerifiedRecords(t *testing.T) {
	f := newFixture(t, 3)
	other := newFixtureFor(t, "other agent")
	cache := NewVerifiedRecords(16)
	v := HeadValidator{Now: fixedNow, Verified: cache}
	data := encodeHead(t, headAt(t, f, 1, 2, time.Hour))
	otherData := encodeHead(t, headAt(t, other, 9, 9, time.Hour))
	for range 2 {
		if err := v.Validate(HeadRecordKey(f.did()), data); err != nil {
			t.Fatal(err)
		}
		if err := v.Validate(HeadRecordKey(other.did()), otherData); err != nil {
			t.Fatal(err)
		}
	}
	if err := v.Validate(HeadRecordKey(f.did()), otherData); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("a verified record under another agent's key: %v", err)
	}
	later := HeadValidator{Now: func() time.Time { return testNow.Add(2 * time.Hour) }, Verified: cache}
	if err := later.Validate(HeadRecordKey(f.did()), data); !errors.Is(err, ErrExpired) {
		t.Fatalf("a verified record past its expiry: %v", err)
	}
	h := headAt(t, f, 1, 2, time.Hour)
	h.Seq = 3 // signed for seq 2
	forged, err := encodeCanonical(h.wire(true))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := v.Validate(HeadRecordKey(f.did()), forged); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("forged record beside a verified one: %v", err)
		}
	}
	if i, err := v.Select(HeadRecordKey(f.did()), [][]byte{forged, data}); i != 1 || err != nil {
		t.Fatalf("Select = %d, %v; want the verified record", i, err)
	}

	hostRec, hostKey := testHost("host-a")
	hostData := signedHost(t, hostRec, hostKey)
	hv := HostValidator{Now: fixedNow, Verified: cache}
	for range 2 {
		if err := hv.Validate(HostRecordKey(hostRec.Peer), hostData); err != nil {
			t.Fatal(err)
		}
		if r, err := cache.VerifyHostRecord(hostData); err != nil || r.Peer != hostRec.Peer {
			t.Fatalf("VerifyHostRecord = %v, %v", r, err)
		}
	}
	if _, err := cache.VerifyHostRecord(data); !errors.Is(err, ErrMalformed) {
		t.Fatalf("a head record as a host record: %v", err)
	}
}

// ParseDID remembers valid DIDs; each caller still gets its own key, and
// an invalid DID is refused every time.
func TestParseDIDRemembers(t *testing.T) {
	did := DID(pubOf(keyFromLabel("memo")))
	a, err := ParseDID(did)
	if err != nil {
		t.Fatal(err)
	}
	a[0] ^= 0xff // the caller's copy
	b, err := ParseDID(did)
	if err != nil || !b.Equal(pubOf(keyFromLabel("memo"))) {
		t.Fatalf("second parse: %x, %v", b, err)
	}
	bad := did[:len(did)-3] // too short for a key
	for range 2 {
		if _, err := ParseDID(bad); !errors.Is(err, ErrBadDID) {
			t.Fatalf("invalid DID: %v", err)
		}
	}
}
