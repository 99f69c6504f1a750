package agents

import (
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
)

// countingStore counts Gets, to see where a walk stopped.
type countingStore struct {
	memStore
	gets map[cid.Cid]int
}

func (s *countingStore) Get(c cid.Cid) ([]byte, error) {
	s.gets[c]++
	return s.memStore.Get(c)
}

// With a trusted checkpoint, the walk stops there: nothing below it is
// read (even a damaged block), the result starts at it and is Partial, and
// every rule still applies above it.
func TestVerifyLineageTrusted(t *testing.T) {
	f := newFixture(t, 10)
	base := f.entries[6].CID
	trusted := func(c cid.Cid) bool { return c.Equals(base) }

	// Damage a checkpoint below the trusted one: a full walk fails on it,
	// a trusted one never reads it.
	below := f.entries[3].CID
	good := f.store[below]
	f.store[below] = append([]byte(nil), good[:len(good)-1]...)
	if _, err := VerifyLineage(f.head(), f.store, VerifyOptions{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("full walk over a damaged block: %v, want ErrMalformed", err)
	}
	cs := &countingStore{memStore: f.store, gets: map[cid.Cid]int{}}
	lin, err := VerifyLineage(f.head(), cs, VerifyOptions{Trusted: trusted, ExpectDID: f.did()})
	if err != nil {
		t.Fatal(err)
	}
	if !lin.Partial || len(lin.Entries) != 4 || !lin.Entries[0].CID.Equals(base) || !lin.Head().CID.Equals(f.head()) {
		t.Fatalf("partial lineage: partial %v, %d entries from %v", lin.Partial, len(lin.Entries), lin.Entries[0].CID)
	}
	for i := 0; i < 6; i++ {
		if n := cs.gets[f.entries[i].CID]; n != 0 {
			t.Fatalf("checkpoint seq %d below the trusted one was read %d times", i, n)
		}
	}
	f.store[below] = good

	// A trusted head: one entry.
	lin, err = VerifyLineage(f.head(), f.store, VerifyOptions{Trusted: func(c cid.Cid) bool { return c.Equals(f.head()) }})
	if err != nil || len(lin.Entries) != 1 || !lin.Partial {
		t.Fatalf("trusted head: %v, %+v", err, lin)
	}

	// Rules still hold above the trusted base: a budget that rises, and a
	// bad signature, right after it.
	f.truncate(7)
	cp := f.next()
	cp.Budget = f.cp(6).Budget + 1
	f.append(t, cp)
	if _, err := VerifyLineage(f.head(), f.store, VerifyOptions{Trusted: trusted}); !errors.Is(err, ErrBudgetIncreased) {
		t.Fatalf("budget rising after a trusted base: %v, want ErrBudgetIncreased", err)
	}
	f.truncate(7)
	cp = f.next()
	if err := cp.Sign(f.agentKey, f.holderFor(t, cp)); err != nil {
		t.Fatal(err)
	}
	cp.AgentSig[0] ^= 1
	f.appendSigned(t, cp)
	if _, err := VerifyLineage(f.head(), f.store, VerifyOptions{Trusted: trusted}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad signature after a trusted base: %v, want ErrBadSignature", err)
	}
	// A lineage of another agent is refused even at a trusted head.
	if _, err := VerifyLineage(base, f.store, VerifyOptions{Trusted: trusted, ExpectDID: DID(pubOf(keyFromLabel("other")))}); !errors.Is(err, ErrIdentityChanged) {
		t.Fatalf("trusted head of another agent: %v, want ErrIdentityChanged", err)
	}
}

// SignaturesChecked skips only the signatures of the checkpoints it names
// (the caller checked them); every other rule still applies to them, and
// the others' signatures are checked.
func TestVerifyLineageSignaturesChecked(t *testing.T) {
	f := newFixture(t, 8)
	base := f.entries[6].CID
	trusted := func(c cid.Cid) bool { return c.Equals(base) }
	f.truncate(7)
	cp := f.next()
	if err := cp.Sign(f.agentKey, f.holderFor(t, cp)); err != nil {
		t.Fatal(err)
	}
	cp.AgentSig[0] ^= 1
	f.appendSigned(t, cp)
	bad := f.head()
	if _, err := VerifyLineage(bad, f.store, VerifyOptions{Trusted: trusted}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad signature: %v, want ErrBadSignature", err)
	}
	if _, err := VerifyLineage(bad, f.store, VerifyOptions{Trusted: trusted, SignaturesChecked: func(c cid.Cid) bool { return c.Equals(bad) }}); err != nil {
		t.Fatalf("the caller said it checked this one's signatures: %v", err)
	}
	// Named, but another rule fails: still refused.
	f.truncate(7)
	cp = f.next()
	cp.Budget = f.cp(6).Budget + 1
	f.append(t, cp)
	rising := f.head()
	if _, err := VerifyLineage(rising, f.store, VerifyOptions{Trusted: trusted, SignaturesChecked: func(c cid.Cid) bool { return c.Equals(rising) }}); !errors.Is(err, ErrBudgetIncreased) {
		t.Fatalf("budget rising on a checkpoint whose signatures were checked: %v, want ErrBudgetIncreased", err)
	}
	// Naming another checkpoint does not excuse a bad one.
	f.truncate(7)
	cp = f.next()
	if err := cp.Sign(f.agentKey, f.holderFor(t, cp)); err != nil {
		t.Fatal(err)
	}
	cp.HolderSig[0] ^= 1
	f.appendSigned(t, cp)
	if _, err := VerifyLineage(f.head(), f.store, VerifyOptions{Trusted: trusted, SignaturesChecked: func(c cid.Cid) bool { return c.Equals(base) }}); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("bad holder signature: %v, want ErrBadSignature", err)
	}
}
