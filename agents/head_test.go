package agents

import (
	"errors"
	"math/rand"
	"reflect"
	"strings"
	"testing"
)

// testHead returns a signed head record for f's current head.
func testHead(t testing.TB, f *fixture) *HeadRecord {
	t.Helper()
	last := f.entries[len(f.entries)-1]
	h := &HeadRecord{
		Agent: f.did(), Head: last.CID, Seq: last.Checkpoint.Seq, Epoch: last.Checkpoint.Epoch,
		Holder: last.Checkpoint.Holder, LeaseExpiry: 2_000, Issued: 1_000, Expires: 5_000,
	}
	if err := h.Sign(f.agentKey); err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHeadRecordRoundTrip(t *testing.T) {
	f := newFixture(t, 4)
	h := testHead(t, f)
	data, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if len(data) > MaxHeadRecordBytes {
		t.Fatalf("head record is %d bytes", len(data))
	}
	back, err := DecodeHeadRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, h) {
		t.Fatalf("decoded %+v, want %+v", back, h)
	}
	if err := back.Verify(); err != nil {
		t.Fatal(err)
	}
	key := HeadRecordKey(f.did())
	if key != "/igor/agent/"+AgentID(f.did()) {
		t.Fatalf("HeadRecordKey = %q", key)
	}
	if HeadRecordKey("nonsense") != "" {
		t.Fatal("HeadRecordKey of an invalid DID is not empty")
	}
	got, err := ValidateHeadRecord(key, data, 4_999)
	if err != nil || !reflect.DeepEqual(got, h) {
		t.Fatalf("ValidateHeadRecord = %+v, %v", got, err)
	}
}

func TestValidateHeadRecordRejects(t *testing.T) {
	f := newFixture(t, 2)
	h := testHead(t, f)
	data, _ := h.Encode()
	key := HeadRecordKey(f.did())

	other := keyFromLabel("other")
	otherKey := HeadRecordKey(DID(pubOf(other)))
	forged := *h
	forged.Seq = 99
	forgedData, _ := forged.Encode()
	big := canonicalVariant(t, data, func(m map[string]any) { m["holder"] = strings.Repeat("x", MaxHeadRecordBytes) })

	cases := []struct {
		name  string
		key   string
		data  []byte
		now   int64
		wants error
	}{
		{"expired", key, data, 5_000, ErrExpired},
		{"under another agent's key", otherKey, data, 0, ErrIdentityChanged},
		{"bad key form", "/igor/host/" + AgentID(f.did()), data, 0, ErrMalformed},
		{"empty id", "/igor/agent/", data, 0, ErrMalformed},
		{"forged", key, forgedData, 0, ErrBadSignature},
		{"too large", key, big, 0, ErrMalformed},
		{"garbage", key, []byte("hello"), 0, ErrMalformed},
		{"checkpoint", key, f.store[f.head()], 0, ErrMalformed},
	}
	for _, tc := range cases {
		if _, err := ValidateHeadRecord(tc.key, tc.data, tc.now); !errors.Is(err, tc.wants) {
			t.Errorf("%s: ValidateHeadRecord = %v, want %v", tc.name, err, tc.wants)
		}
	}
	bad := *h
	bad.Expires = bad.Issued
	if err := bad.Sign(f.agentKey); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Sign with expires == issued: %v", err)
	}
}

func TestSelectHead(t *testing.T) {
	f := newFixture(t, 6)
	rec := func(i int, epoch uint64, expires int64) *HeadRecord {
		e := f.entries[i]
		h := &HeadRecord{Agent: f.did(), Head: e.CID, Seq: e.Checkpoint.Seq, Epoch: epoch,
			Holder: e.Checkpoint.Holder, Issued: 0, Expires: expires}
		if err := h.Sign(f.agentKey); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if SelectHead(nil) != -1 || SelectHead([]*HeadRecord{nil, nil}) != -1 {
		t.Fatal("SelectHead of no records is not -1")
	}
	// Epoch beats seq.
	recs := []*HeadRecord{rec(5, 1, 10), rec(2, 2, 10), nil}
	if got := SelectHead(recs); got != 1 {
		t.Fatalf("epoch: picked %d", got)
	}
	// Same epoch: higher seq.
	recs = []*HeadRecord{rec(3, 1, 10), rec(4, 1, 10)}
	if got := SelectHead(recs); got != 1 {
		t.Fatalf("seq: picked %d", got)
	}
	// Same (epoch, seq), same head: the later expiry wins (a refresh).
	recs = []*HeadRecord{rec(4, 1, 10), rec(4, 1, 20)}
	if got := SelectHead(recs); got != 1 {
		t.Fatalf("refresh: picked %d", got)
	}
	// Same (epoch, seq), different heads (a fork): smallest CID bytes, in
	// any input order.
	a, b := rec(4, 1, 10), rec(5, 1, 10)
	b.Seq = a.Seq
	if err := b.Sign(f.agentKey); err != nil {
		t.Fatal(err)
	}
	want := a
	if string(b.Head.Bytes()) < string(a.Head.Bytes()) {
		want = b
	}
	for _, order := range [][]*HeadRecord{{a, b}, {b, a}} {
		if got := order[SelectHead(order)]; got != want {
			t.Fatalf("fork tie-break depends on order")
		}
	}
	// Deterministic over permutations of a mixed set.
	set := []*HeadRecord{rec(0, 0, 5), rec(1, 0, 5), rec(3, 1, 5), rec(3, 1, 9), rec(5, 1, 7), rec(4, 2, 1), a, b}
	best := set[SelectHead(set)]
	rng := rand.New(rand.NewSource(1))
	for i := 0; i < 100; i++ {
		rng.Shuffle(len(set), func(i, j int) { set[i], set[j] = set[j], set[i] })
		if got := set[SelectHead(set)]; got != best {
			t.Fatalf("permutation %d picked %+v, want %+v", i, got, best)
		}
	}
	if best.Epoch != 2 {
		t.Fatalf("best record has epoch %d, want 2", best.Epoch)
	}
}
