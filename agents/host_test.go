package agents

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testNow is the clock of the record tests: validators get Now = testNow.
var testNow = time.Unix(1_700_000_000, 0)

// testHost returns an unsigned host record of the node with key label,
// issued a minute before testNow and valid for an hour.
func testHost(label string) (*HostRecord, ed25519.PrivateKey) {
	key := keyFromLabel(label)
	return &HostRecord{
		Peer:            PeerID(pubOf(key)),
		Addrs:           []string{"/ip4/127.0.0.1/tcp/4001", "/ip4/127.0.0.1/udp/4001/quic-v1"},
		Slots:           8,
		FreeSlots:       3,
		MemoryBytes:     1 << 30,
		FreeMemoryBytes: 512 << 20,
		Price:           100,
		Capabilities:    KnownCapabilities(),
		Version:         "igor-node/0.1.0",
		Seq:             7,
		Issued:          testNow.Add(-time.Minute).UnixNano(),
		Expires:         testNow.Add(time.Hour).UnixNano(),
	}, key
}

// signedHost signs h with key and returns its encoding.
func signedHost(t testing.TB, h *HostRecord, key ed25519.PrivateKey) []byte {
	t.Helper()
	if err := h.Sign(key); err != nil {
		t.Fatal(err)
	}
	data, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func TestHostRecordRoundTrip(t *testing.T) {
	h, key := testHost("host-a")
	data := signedHost(t, h, key)
	back, err := DecodeHostRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, h) {
		t.Fatalf("decoded %+v\nwant %+v", back, h)
	}
	if err := back.Verify(); err != nil {
		t.Fatal(err)
	}
	if k, err := Kind(data); err != nil || k != "host" {
		t.Fatalf("Kind(host) = %q, %v", k, err)
	}
	if got := HostRecordKey(h.Peer); got != "/igor/host/"+h.Peer {
		t.Fatalf("HostRecordKey = %q", got)
	}
	for _, bad := range []string{"", "nonsense", "/igor/host/x", AgentID(DID(pubOf(key)))} {
		if got := HostRecordKey(bad); got != "" {
			t.Errorf("HostRecordKey(%q) = %q, want \"\"", bad, got)
		}
	}
	// Optional fields are absent when empty, and the record still verifies.
	bare, key := testHost("host-b")
	bare.Addrs, bare.Capabilities = nil, nil
	data = signedHost(t, bare, key)
	if bytes.Contains(data, []byte("addrs")) || bytes.Contains(data, []byte("caps")) {
		t.Fatalf("empty optional fields were encoded: %x", data)
	}
	back, err = DecodeHostRecord(data)
	if err != nil || back.Verify() != nil || !reflect.DeepEqual(back, bare) {
		t.Fatalf("bare record: %+v, %v", back, err)
	}
}

func TestHostRecordSignRefuses(t *testing.T) {
	long := make([]string, MaxHostAddrs+1)
	for i := range long {
		long[i] = fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", 4000+i)
	}
	cases := []struct {
		name  string
		mut   func(h *HostRecord)
		wants error
	}{
		{"bad peer", func(h *HostRecord) { h.Peer = "12D3KooWnope" }, ErrMalformed},
		{"agent DID as peer", func(h *HostRecord) { h.Peer = DID(pubOf(keyFromLabel("host-a"))) }, ErrMalformed},
		{"too many addrs", func(h *HostRecord) { h.Addrs = long }, ErrMalformed},
		{"addr too long", func(h *HostRecord) { h.Addrs = []string{"/" + strings.Repeat("a", MaxHostAddrBytes)} }, ErrMalformed},
		{"addr without slash", func(h *HostRecord) { h.Addrs = []string{"ip4/127.0.0.1"} }, ErrMalformed},
		{"empty addr", func(h *HostRecord) { h.Addrs = []string{""} }, ErrMalformed},
		{"addr with newline", func(h *HostRecord) { h.Addrs = []string{"/ip4/1.2.3.4\n"} }, ErrMalformed},
		{"duplicate addr", func(h *HostRecord) { h.Addrs = []string{"/ip4/1.2.3.4", "/ip4/1.2.3.4"} }, ErrMalformed},
		{"free slots > slots", func(h *HostRecord) { h.FreeSlots = h.Slots + 1 }, ErrMalformed},
		{"free memory > memory", func(h *HostRecord) { h.FreeMemoryBytes = h.MemoryBytes + 1 }, ErrMalformed},
		{"memory > int64", func(h *HostRecord) { h.MemoryBytes, h.FreeMemoryBytes = math.MaxInt64+1, 0 }, ErrMalformed},
		{"negative price", func(h *HostRecord) { h.Price = -1 }, ErrMalformed},
		{"unsorted caps", func(h *HostRecord) { h.Capabilities = []string{"rand", "clock"} }, ErrMalformed},
		{"duplicate caps", func(h *HostRecord) { h.Capabilities = []string{"clock", "clock"} }, ErrMalformed},
		{"unknown cap", func(h *HostRecord) { h.Capabilities = []string{"clock", "net"} }, ErrMalformed},
		{"bad cap name", func(h *HostRecord) { h.Capabilities = []string{"Clock"} }, ErrMalformed},
		{"empty version", func(h *HostRecord) { h.Version = "" }, ErrMalformed},
		{"long version", func(h *HostRecord) { h.Version = strings.Repeat("v", MaxHostVersionLen+1) }, ErrMalformed},
		{"seq > int64", func(h *HostRecord) { h.Seq = math.MaxInt64 + 1 }, ErrMalformed},
		{"expires == issued", func(h *HostRecord) { h.Expires = h.Issued }, ErrMalformed},
		{"valid 24h+1ns", func(h *HostRecord) { h.Expires = h.Issued + int64(MaxRecordValidity) + 1 }, ErrValidityTooLong},
		{"valid forever", func(h *HostRecord) { h.Issued, h.Expires = math.MinInt64, math.MaxInt64 }, ErrValidityTooLong},
	}
	for _, tc := range cases {
		h, key := testHost("host-a")
		tc.mut(h)
		if err := h.Sign(key); !errors.Is(err, tc.wants) {
			t.Errorf("%s: Sign = %v, want %v", tc.name, err, tc.wants)
		}
	}
	// Exactly 24 h is allowed.
	h, key := testHost("host-a")
	h.Expires = h.Issued + int64(MaxRecordValidity)
	if err := h.Sign(key); err != nil {
		t.Fatalf("24 h validity: %v", err)
	}
	h, _ = testHost("host-a")
	if err := h.Sign(keyFromLabel("host-b")); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("Sign with another node's key = %v, want ErrWrongKey", err)
	}
	if _, err := h.Encode(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("Encode unsigned = %v, want ErrMalformed", err)
	}
}

func TestHostRecordTamperedFails(t *testing.T) {
	h, key := testHost("host-a")
	signedHost(t, h, key)
	for name, mut := range map[string]func(h *HostRecord){
		"free slots": func(h *HostRecord) { h.FreeSlots++ },
		"price":      func(h *HostRecord) { h.Price = 0 },
		"addrs":      func(h *HostRecord) { h.Addrs = []string{"/ip4/10.0.0.1/tcp/1"} },
		"caps":       func(h *HostRecord) { h.Capabilities = []string{"clock"} },
		"seq":        func(h *HostRecord) { h.Seq++ },
		"expires":    func(h *HostRecord) { h.Expires++ },
		"peer":       func(h *HostRecord) { h.Peer = PeerID(pubOf(keyFromLabel("host-b"))) },
	} {
		c := *h
		mut(&c)
		if err := c.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("%s changed: Verify = %v, want ErrBadSignature", name, err)
		}
	}
	// A head-record signature over the same bytes is not a host signature:
	// the domains differ.
	c := *h
	msg, _ := c.signingBytes()
	c.Sig = ed25519.Sign(key, append([]byte(TypeHead+"\x00"), msg[len(TypeHost)+1:]...))
	if err := c.Verify(); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("signature in another domain: Verify = %v", err)
	}
}

// A newer node may advertise capabilities this version does not know; its
// record must still decode, verify and validate (or old nodes would refuse
// to store new nodes' records), and simply never match such a capability.
func TestHostRecordUnknownCapabilityFromNewerNode(t *testing.T) {
	h, key := testHost("host-a")
	h.Capabilities = []string{"clock", "gpu.v2", "log"}
	msg, err := h.signingBytes()
	if err != nil {
		t.Fatal(err)
	}
	h.Sig = ed25519.Sign(key, msg) // Sign itself refuses unknown names
	data, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := (HostValidator{Now: func() time.Time { return testNow }}).Validate(HostRecordKey(h.Peer), data); err != nil {
		t.Fatalf("validator refuses a newer node's record: %v", err)
	}
	m := &Manifest{Capabilities: map[string]CapabilitySpec{"clock": {Version: 1}}}
	if err := h.Admits(m); err != nil {
		t.Fatal(err)
	}
	m.Capabilities["rand"] = CapabilitySpec{Version: 1}
	if err := h.Admits(m); !errors.Is(err, ErrNotAdmitted) || !strings.Contains(err.Error(), `"rand"`) {
		t.Fatalf("Admits = %v, want ErrNotAdmitted naming rand", err)
	}
}

func TestDecodeHostRecordRejects(t *testing.T) {
	h, key := testHost("host-a")
	valid := signedHost(t, h, key)
	f := newFixture(t, 1)
	head, _ := testHead(t, f).Encode()
	cases := map[string][]byte{
		"empty":          nil,
		"garbage":        []byte("hello"),
		"trailing byte":  append(append([]byte{}, valid...), 0),
		"reversed keys":  reversedKeys(t, valid),
		"empty addrs":    canonicalVariant(t, valid, func(m map[string]any) { m["addrs"] = []string{} }),
		"null caps":      canonicalVariant(t, valid, func(m map[string]any) { m["caps"] = nil }),
		"unknown field":  canonicalVariant(t, valid, func(m map[string]any) { m["region"] = "eu" }),
		"missing seq":    canonicalVariant(t, valid, func(m map[string]any) { delete(m, "seq") }),
		"missing sig":    canonicalVariant(t, valid, func(m map[string]any) { delete(m, "sig") }),
		"wrong type":     canonicalVariant(t, valid, func(m map[string]any) { m["type"] = "igor/host/v2" }),
		"price as text":  canonicalVariant(t, valid, func(m map[string]any) { m["price"] = "100" }),
		"negative slots": canonicalVariant(t, valid, func(m map[string]any) { m["slots"] = -1 }),
		"slots > uint32": canonicalVariant(t, valid, func(m map[string]any) { m["slots"] = uint64(1) << 32 }),
		"head record":    head,
	}
	for name, data := range cases {
		if _, err := DecodeHostRecord(data); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeHostRecord = %v, want ErrMalformed", name, err)
		}
	}
	big := make([]byte, MaxRecordBytes+1)
	if _, err := DecodeHostRecord(big); !errors.Is(err, ErrRecordTooLarge) {
		t.Errorf("oversize: DecodeHostRecord = %v, want ErrRecordTooLarge", err)
	}
	// The error names what is wrong.
	_, err := DecodeHostRecord(cases["missing seq"])
	if err == nil || !strings.Contains(err.Error(), `"seq"`) {
		t.Errorf("missing seq: error %v does not name the field", err)
	}
}

func TestHostAdmits(t *testing.T) {
	yes, no := true, false
	base := func() (*HostRecord, *Manifest) {
		h, _ := testHost("host-a")
		m, err := ParseManifest([]byte(`{"capabilities":{"clock":{"version":1},"log":{"version":1}},"resource_limits":{"max_memory_bytes":33554432},"migration_policy":{"max_price_per_second":100}}`))
		if err != nil {
			t.Fatal(err)
		}
		return h, m
	}
	h, m := base()
	if err := h.Admits(m); err != nil {
		t.Fatalf("Admits = %v", err)
	}
	cases := []struct {
		name string
		mut  func(h *HostRecord, m *Manifest)
		want string // part of the error; "" = admitted
	}{
		{"missing capability", func(h *HostRecord, m *Manifest) { h.Capabilities = []string{"clock"} }, `lacks capability "log"`},
		{"no free slot", func(h *HostRecord, m *Manifest) { h.FreeSlots = 0 }, "no free slot (0 of 8)"},
		{"short of memory", func(h *HostRecord, m *Manifest) { h.FreeMemoryBytes = 32<<20 - 1 }, "needs 33554432"},
		{"exactly enough memory", func(h *HostRecord, m *Manifest) { h.FreeMemoryBytes = 32 << 20 }, ""},
		{"unnormalised manifest needs 64 MiB", func(h *HostRecord, m *Manifest) {
			m.ResourceLimits.MaxMemoryBytes = 0
			h.FreeMemoryBytes = 63 << 20
		}, "needs 67108864"},
		{"too expensive", func(h *HostRecord, m *Manifest) { h.Price = 101 }, "price 101 µc/s exceeds the agent's maximum 100"},
		{"price at the limit", func(h *HostRecord, m *Manifest) { h.Price = 100 }, ""},
		{"no price limit", func(h *HostRecord, m *Manifest) { h.Price = 1 << 40; m.MigrationPolicy.MaxPricePerSecond = 0 }, ""},
		{"migration disabled", func(h *HostRecord, m *Manifest) { m.MigrationPolicy.Enabled = &no }, "migration_policy.enabled is false"},
		{"migration enabled", func(h *HostRecord, m *Manifest) { m.MigrationPolicy.Enabled = &yes }, ""},
		{"grants nothing", func(h *HostRecord, m *Manifest) { h.Capabilities = nil; m.Capabilities = nil }, ""},
	}
	for _, tc := range cases {
		h, m := base()
		tc.mut(h, m)
		err := h.Admits(m)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%s: Admits = %v, want nil", tc.name, err)
		case tc.want != "" && (!errors.Is(err, ErrNotAdmitted) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: Admits = %v, want ErrNotAdmitted containing %q", tc.name, err, tc.want)
		}
	}
	// Every failing condition is named, not only the first.
	h, m = base()
	h.FreeSlots, h.Price, h.Capabilities = 0, 500, nil
	err := h.Admits(m)
	for _, part := range []string{`"clock", "log"`, "no free slot", "price 500"} {
		if err == nil || !strings.Contains(err.Error(), part) {
			t.Errorf("combined: %v does not contain %q", err, part)
		}
	}
	if err := h.Admits(nil); !errors.Is(err, ErrBadManifest) {
		t.Errorf("Admits(nil) = %v, want ErrBadManifest", err)
	}
}

func TestSelectHost(t *testing.T) {
	mk := func(seq uint64, issuedMin int, slots uint32) *HostRecord {
		h, key := testHost("host-a")
		h.Seq, h.FreeSlots = seq, slots
		h.Issued = testNow.Add(time.Duration(issuedMin) * time.Minute).UnixNano()
		if err := h.Sign(key); err != nil {
			t.Fatal(err)
		}
		return h
	}
	if SelectHost(nil) != -1 || SelectHost([]*HostRecord{nil}) != -1 {
		t.Fatal("SelectHost of no records is not -1")
	}
	// Which encoding is smallest depends on the signatures (CBOR orders the
	// keys), so the expected index is computed, not hard-coded.
	same := []*HostRecord{mk(3, 0, 1), mk(3, 0, 2), mk(3, 0, 0)}
	smallest := 0
	for k, h := range same {
		e, _ := encodeCanonical(h.wire(true))
		if b, _ := encodeCanonical(same[smallest].wire(true)); bytes.Compare(e, b) < 0 {
			smallest = k
		}
	}
	cases := []struct {
		recs []*HostRecord
		want int
	}{
		{[]*HostRecord{mk(1, 0, 1), mk(2, -5, 1), nil}, 1}, // higher seq beats later issue
		{[]*HostRecord{mk(2, 0, 1), mk(2, 1, 1)}, 1},       // same seq: later issued
		{[]*HostRecord{nil, mk(3, 0, 1), mk(3, 0, 1)}, 1},  // identical: first
		{same, smallest}, // same seq and issue: smallest bytes
	}
	for i, tc := range cases {
		if got := SelectHost(tc.recs); got != tc.want {
			t.Errorf("case %d: SelectHost = %d, want %d", i, got, tc.want)
		}
	}
}

// The committed seed corpus of FuzzDecodeHostRecord stays meaningful.
func TestHostFuzzCorpusValidSeedsDecode(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecodeHostRecord", "valid-*"))
	if len(files) == 0 {
		t.Fatal("no valid-* seeds committed for FuzzDecodeHostRecord")
	}
	for _, file := range files {
		h, err := DecodeHostRecord(readCorpusFile(t, file))
		if err != nil {
			t.Errorf("%s: %v", file, err)
		} else if err := h.Verify(); err != nil {
			t.Errorf("%s: %v", file, err)
		}
	}
}

// FuzzDecodeHostRecord: whatever decodes re-encodes to the same bytes, and
// verifying, validating and selecting it never panic.
func FuzzDecodeHostRecord(f *testing.F) {
	h, key := testHost("host-a")
	if err := h.Sign(key); err != nil {
		f.Fatal(err)
	}
	data, err := h.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(data[:len(data)/2])
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHostRecord(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrRecordTooLarge) && !errors.Is(err, ErrValidityTooLong) {
				t.Fatalf("error wraps no sentinel: %v", err)
			}
			return
		}
		re, err := h.Encode()
		if err != nil {
			t.Fatalf("decoded host record does not encode: %v", err)
		}
		if !bytes.Equal(re, data) {
			t.Fatalf("decoded host record re-encodes differently:\n in %x\nout %x", data, re)
		}
		verr := h.Verify()
		v := HostValidator{Now: func() time.Time { return time.Unix(0, h.Issued) }}
		if err := v.Validate(HostRecordKey(h.Peer), data); err == nil && verr != nil {
			t.Fatalf("validator accepts a record that does not verify: %v", verr)
		}
		SelectHost([]*HostRecord{h, h})
		_ = h.Admits(&Manifest{})
	})
}
