package agents

import (
	"bytes"
	"errors"
	"math/rand"
	"strings"
	"testing"
	"testing/quick"
	"time"
)

// recordValidator is go-libp2p-record's record.Validator, restated so the
// test proves the validators fit it without importing libp2p.
type recordValidator interface {
	Validate(key string, value []byte) error
	Select(key string, values [][]byte) (int, error)
}

var (
	_ recordValidator = HeadValidator{}
	_ recordValidator = HostValidator{}
	_ recordValidator = (*HeadValidator)(nil)
	_ recordValidator = (*HostValidator)(nil)
)

func fixedNow() time.Time { return testNow }

// headAt returns a signed head record of f's agent at (epoch, seq), issued a
// minute before testNow and valid for validFor.
func headAt(t testing.TB, f *fixture, epoch, seq uint64, validFor time.Duration) *HeadRecord {
	t.Helper()
	h := &HeadRecord{
		Agent: f.did(), Head: f.head(), Seq: seq, Epoch: epoch, Holder: PeerID(pubOf(f.holderKeys[0])),
		LeaseExpiry: testNow.Add(time.Minute).UnixNano(),
		Issued:      testNow.Add(-time.Minute).UnixNano(),
	}
	h.Expires = h.Issued + int64(validFor)
	if err := h.Sign(f.agentKey); err != nil {
		t.Fatal(err)
	}
	return h
}

func encodeHead(t testing.TB, h *HeadRecord) []byte {
	t.Helper()
	data, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type refusal struct {
	name  string
	key   string
	value []byte
	wants error
}

// checkRefusals runs every case through v and checks the sentinel, and that
// the message carries more than the sentinel.
func checkRefusals(t *testing.T, v recordValidator, cases []refusal) {
	t.Helper()
	for _, tc := range cases {
		err := v.Validate(tc.key, tc.value)
		if !errors.Is(err, tc.wants) {
			t.Errorf("%s: Validate = %v, want %v", tc.name, err, tc.wants)
			continue
		}
		if len(err.Error()) <= len(tc.wants.Error())+2 {
			t.Errorf("%s: error %q says no more than its sentinel", tc.name, err)
		}
		if _, serr := v.Select(tc.key, [][]byte{tc.value}); !errors.Is(serr, tc.wants) {
			t.Errorf("%s: Select of only this value = %v, want %v", tc.name, serr, tc.wants)
		}
	}
}

func TestHeadValidator(t *testing.T) {
	f := newFixture(t, 3)
	v := HeadValidator{Now: fixedNow}
	h := headAt(t, f, 1, 2, time.Hour)
	data := encodeHead(t, h)
	key := HeadRecordKey(f.did())
	if key != "/igor/agent/"+AgentID(f.did()) {
		t.Fatalf("key layout changed: %q", key)
	}
	if err := v.Validate(key, data); err != nil {
		t.Fatalf("Validate = %v", err)
	}
	if i, err := v.Select(key, [][]byte{data}); i != 0 || err != nil {
		t.Fatalf("Select = %d, %v", i, err)
	}

	other := newFixtureFor(t, "other agent")
	otherData := encodeHead(t, headAt(t, other, 9, 9, time.Hour))
	forged := *h
	forged.Epoch = 99
	stale := encodeHead(t, headAt(t, f, 1, 2, time.Minute)) // expired at testNow
	farOff := encodeHead(t, headAt(t, f, 1, 2, MaxRecordValidity+MaxClockSkew+2*time.Minute))
	oversize := append(append([]byte{}, data...), make([]byte, MaxRecordBytes)...)
	hostRec, hostKey := testHost("host-a")
	hostData := signedHost(t, hostRec, hostKey)
	id := AgentID(f.did())

	checkRefusals(t, v, []refusal{
		{"forged signature", key, encodeHead(t, &forged), ErrBadSignature},
		{"record of agent B under key of agent A", key, otherData, ErrKeyMismatch},
		{"stale", key, stale, ErrExpired},
		{"expires too far ahead", key, farOff, ErrValidityTooLong},
		{"oversize", key, oversize, ErrRecordTooLarge},
		{"garbage", key, []byte("\x00garbage\xff"), ErrMalformed},
		{"empty value", key, nil, ErrMalformed},
		{"host record as head", key, hostData, ErrMalformed},
		{"wrong namespace", "/igor/host/" + id, data, ErrBadKey},
		{"without /igor root", "/agent/" + id, data, ErrBadKey},
		{"other root", "/ipns/agent/" + id, data, ErrBadKey},
		{"no leading slash", "igor/agent/" + id, data, ErrBadKey},
		{"empty key", "", data, ErrBadKey},
		{"empty id", "/igor/agent/", data, ErrBadKey},
		{"extra component", key + "/x", data, ErrBadKey},
		{"DID instead of id", "/igor/agent/" + f.did(), data, ErrBadKey},
		{"not an agent id", "/igor/agent/z6Mknope", data, ErrBadKey},
	})

	// Within the skew a record may run ahead of our clock.
	edge := encodeHead(t, headAt(t, f, 1, 2, MaxRecordValidity+MaxClockSkew+time.Minute))
	if err := v.Validate(key, edge); err != nil {
		t.Fatalf("record expiring exactly 24h+skew from now: %v", err)
	}
	// A zero validator judges by the real clock.
	now := time.Now()
	live := &HeadRecord{Agent: f.did(), Head: f.head(), Holder: h.Holder, Issued: now.UnixNano(), Expires: now.Add(time.Hour).UnixNano()}
	if err := live.Sign(f.agentKey); err != nil {
		t.Fatal(err)
	}
	if err := (HeadValidator{}).Validate(key, encodeHead(t, live)); err != nil {
		t.Fatalf("zero HeadValidator: %v", err)
	}
	if err := (HeadValidator{}).Validate(key, data); !errors.Is(err, ErrExpired) {
		t.Fatalf("zero HeadValidator accepts a 2023 record: %v", err)
	}
}

// newFixtureFor is a one-checkpoint fixture of another agent.
func newFixtureFor(t testing.TB, label string) *fixture {
	t.Helper()
	f := newFixture(t, 1)
	g := keyFromLabel(label)
	f2 := &fixture{agentKey: g, holderKeys: f.holderKeys, store: memStore{}}
	f2.genesis = &Genesis{Agent: f2.did(), Module: testModule, Manifest: testManifest, Budget: 1, Created: 1}
	if err := f2.genesis.Sign(g); err != nil {
		t.Fatal(err)
	}
	data, c, err := f2.genesis.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f2.gcid, f2.store[c] = c, data
	f2.append(t, f2.next())
	return f2
}

func TestHostValidator(t *testing.T) {
	v := HostValidator{Now: fixedNow}
	h, key := testHost("host-a")
	data := signedHost(t, h, key)
	k := HostRecordKey(h.Peer)
	if err := v.Validate(k, data); err != nil {
		t.Fatalf("Validate = %v", err)
	}

	hb, keyB := testHost("host-b")
	dataB := signedHost(t, hb, keyB)
	forged, _ := testHost("host-a")
	forged.Sig = h.Sig
	forged.FreeSlots = 8 // claims more capacity than it signed
	forgedData, err := forged.Encode()
	if err != nil {
		t.Fatal(err)
	}
	stale, _ := testHost("host-a")
	stale.Expires = testNow.UnixNano()
	staleData := signedHost(t, stale, key)
	// A record valid ≤ 24 h but issued in the future, so it would outlive
	// the bound from our clock's point of view.
	ahead, _ := testHost("host-a")
	ahead.Issued = testNow.Add(time.Hour).UnixNano()
	ahead.Expires = ahead.Issued + int64(MaxRecordValidity)
	aheadData := signedHost(t, ahead, key)
	// Validity > 24 h cannot be signed; build it by hand.
	long, _ := testHost("host-a")
	long.Expires = long.Issued + int64(MaxRecordValidity) + 1
	longData := canonicalVariant(t, data, func(m map[string]any) { m["expires"] = long.Expires })
	oversize := append(append([]byte{}, data...), make([]byte, MaxRecordBytes)...)
	f := newFixture(t, 1)
	headData := encodeHead(t, headAt(t, f, 0, 0, time.Hour))

	checkRefusals(t, v, []refusal{
		{"forged signature", k, forgedData, ErrBadSignature},
		{"record of peer B under key of peer A", k, dataB, ErrKeyMismatch},
		{"stale", k, staleData, ErrExpired},
		{"issued in the future, expires too far ahead", k, aheadData, ErrValidityTooLong},
		{"validity over 24h", k, longData, ErrValidityTooLong},
		{"oversize", k, oversize, ErrRecordTooLarge},
		{"garbage", k, []byte("not cbor at all"), ErrMalformed},
		{"head record as host", k, headData, ErrMalformed},
		{"wrong namespace", "/igor/agent/" + h.Peer, data, ErrBadKey},
		{"without /igor root", "/host/" + h.Peer, data, ErrBadKey},
		{"empty key", "", data, ErrBadKey},
		{"empty id", "/igor/host/", data, ErrBadKey},
		{"extra component", k + "/", data, ErrBadKey},
		{"not a peer id", "/igor/host/QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N", data, ErrBadKey},
	})
}

// Select picks the highest (epoch, seq) head whatever the order of the
// values, and never an invalid one, even one that would otherwise win.
func TestHeadValidatorSelectOrderIndependent(t *testing.T) {
	f := newFixture(t, 3)
	v := HeadValidator{Now: fixedNow}
	key := HeadRecordKey(f.did())
	best := encodeHead(t, headAt(t, f, 3, 2, time.Hour))
	valid := [][]byte{
		encodeHead(t, headAt(t, f, 1, 9, time.Hour)),
		encodeHead(t, headAt(t, f, 3, 1, time.Hour)),
		best,
		encodeHead(t, headAt(t, f, 3, 2, 30*time.Minute)), // same (epoch, seq), expires earlier
		encodeHead(t, headAt(t, f, 0, 0, time.Hour)),
	}
	forged := headAt(t, f, 3, 2, time.Hour)
	forged.Epoch = 50
	other := newFixtureFor(t, "other agent")
	invalid := [][]byte{
		encodeHead(t, forged),
		encodeHead(t, headAt(t, f, 60, 0, time.Minute)), // expired
		encodeHead(t, headAt(t, other, 70, 0, time.Hour)),
		[]byte("junk"),
	}
	check := func(seed int64) bool {
		r := rand.New(rand.NewSource(seed))
		n := 1 + r.Intn(len(invalid)+1)
		values := append([][]byte{best}, valid[:r.Intn(len(valid)+1)]...)
		values = append(values, invalid[:n-1]...)
		r.Shuffle(len(values), func(i, j int) { values[i], values[j] = values[j], values[i] })
		i, err := v.Select(key, values)
		if err != nil || !bytes.Equal(values[i], best) {
			t.Logf("seed %d: Select = %d, %v", seed, i, err)
			return false
		}
		return true
	}
	if err := quick.Check(check, &quick.Config{MaxCount: 300}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Select(key, invalid); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("Select of only invalid values = %v, want the first value's reason", err)
	}
	if _, err := v.Select(key, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Select of no values = %v", err)
	}
}

func TestHostValidatorSelectOrderIndependent(t *testing.T) {
	v := HostValidator{Now: fixedNow}
	mk := func(seq uint64, issuedMin int, free uint32) []byte {
		h, key := testHost("host-a")
		h.Seq, h.FreeSlots = seq, free
		h.Issued = testNow.Add(time.Duration(issuedMin) * time.Minute).UnixNano()
		return signedHost(t, h, key)
	}
	key := HostRecordKey(PeerID(pubOf(keyFromLabel("host-a"))))
	// Two records at the same seq and issue time: the smaller encoding wins.
	best, twin := mk(9, -1, 0), mk(9, -1, 1)
	if bytes.Compare(best, twin) > 0 {
		best, twin = twin, best
	}
	valid := [][]byte{mk(9, -2, 1), mk(8, 0, 2), mk(1, -1, 3), twin}
	hb, keyB := testHost("host-b")
	hb.Seq = 100
	forged, _ := testHost("host-a")
	forged.Seq = 50
	forged.Sig = make([]byte, 64)
	forgedData, _ := forged.Encode()
	expired, keyA := testHost("host-a")
	expired.Seq = 60
	expired.Expires = testNow.UnixNano()
	invalid := [][]byte{forgedData, signedHost(t, hb, keyB), signedHost(t, expired, keyA), {0xa0}}
	check := func(seed int64) bool {
		r := rand.New(rand.NewSource(seed))
		values := append([][]byte{best}, valid[:r.Intn(len(valid)+1)]...)
		values = append(values, invalid[:r.Intn(len(invalid)+1)]...)
		r.Shuffle(len(values), func(i, j int) { values[i], values[j] = values[j], values[i] })
		i, err := v.Select(key, values)
		if err != nil || !bytes.Equal(values[i], best) {
			t.Logf("seed %d: Select = %d, %v", seed, i, err)
			return false
		}
		return true
	}
	if err := quick.Check(check, &quick.Config{MaxCount: 300}); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Select(key, invalid); !errors.Is(err, ErrBadSignature) || !strings.Contains(err.Error(), "none of the 4") {
		t.Fatalf("Select of only invalid values = %v", err)
	}
}

// FuzzHeadValidator: any key and value; Validate and Select never panic,
// and whatever Validate accepts is a record about the agent its key names.
func FuzzHeadValidator(f *testing.F) {
	fx := newFixture(f, 2)
	h := headAt(f, fx, 1, 1, time.Hour)
	data := encodeHead(f, h)
	key := HeadRecordKey(fx.did())
	f.Add(key, data)
	f.Add("/igor/agent/", data)
	f.Add("/igor/host/"+AgentID(fx.did()), data)
	f.Add("/agent/"+AgentID(fx.did()), data)
	f.Add(key, []byte("junk"))
	f.Add("", []byte{})
	v := HeadValidator{Now: fixedNow}
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		err := v.Validate(key, value)
		i, serr := v.Select(key, [][]byte{value, value})
		if err != nil {
			if serr == nil {
				t.Fatalf("Select picks %d although Validate says %v", i, err)
			}
			return
		}
		if serr != nil || i != 0 {
			t.Fatalf("Select = %d, %v for a valid value", i, serr)
		}
		h, derr := DecodeHeadRecord(value)
		if derr != nil || HeadRecordKey(h.Agent) != key {
			t.Fatalf("accepted value under %q is not a head record of that agent: %v", key, derr)
		}
	})
}
