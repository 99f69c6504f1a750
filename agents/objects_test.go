package agents

import (
	"bytes"
	"errors"
	"math"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

func TestGenesisRoundTrip(t *testing.T) {
	f := newFixture(t, 0)
	data, c, err := f.genesis.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !c.Equals(f.gcid) || c.Prefix().Codec != cid.DagCBOR || c.Prefix().Version != 1 {
		t.Fatalf("genesis CID %s is not the dag-cbor CIDv1 of its bytes", c)
	}
	g, err := DecodeGenesis(data)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, f.genesis) {
		t.Fatalf("decoded %+v, want %+v", g, f.genesis)
	}
	if err := g.Verify(); err != nil {
		t.Fatal(err)
	}
	if k, err := Kind(data); err != nil || k != "genesis" {
		t.Fatalf("Kind = %q, %v", k, err)
	}
}

func TestCheckpointRoundTrip(t *testing.T) {
	f := newFixture(t, 3)
	for i, e := range f.entries {
		data, c, err := e.Checkpoint.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if !c.Equals(e.CID) || !bytes.Equal(f.store[c], data) {
			t.Fatalf("entry %d: Encode is not deterministic", i)
		}
		cp, err := DecodeCheckpoint(data)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cp, e.Checkpoint) {
			t.Fatalf("entry %d: decoded %+v, want %+v", i, cp, e.Checkpoint)
		}
		if err := cp.Verify(); err != nil {
			t.Fatal(err)
		}
		if k, err := Kind(data); err != nil || k != "checkpoint" {
			t.Fatalf("Kind = %q, %v", k, err)
		}
	}
	// seq 0 has no "prev" key at all; later ones do.
	var m map[string]any
	if err := cbor.Unmarshal(f.store[f.entries[0].CID], &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["prev"]; ok {
		t.Fatal("seq 0 checkpoint encodes a prev field")
	}
	if err := cbor.Unmarshal(f.store[f.entries[1].CID], &m); err != nil {
		t.Fatal(err)
	}
	if tag, ok := m["prev"].(cbor.Tag); !ok || tag.Number != 42 {
		t.Fatalf("prev is %#v, want a tag-42 link", m["prev"])
	}
}

func TestSignRejectsWrongKeys(t *testing.T) {
	f := newFixture(t, 1)
	other := keyFromLabel("other")
	g := *f.genesis
	if err := g.Sign(other); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("genesis signed with another key: %v", err)
	}
	if err := g.Sign(other[:10]); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("genesis signed with a short key: %v", err)
	}
	cp := f.cp(0)
	if err := cp.Sign(other, f.holderKeys[0]); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("checkpoint signed with another agent key: %v", err)
	}
	if err := cp.Sign(f.agentKey, other); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("checkpoint signed with another holder key: %v", err)
	}
	h := testHead(t, f)
	if err := h.Sign(other); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("head record signed with another key: %v", err)
	}
}

func TestEncodeRequiresSignatures(t *testing.T) {
	f := newFixture(t, 1)
	g := *f.genesis
	g.Sig = nil
	if _, _, err := g.Encode(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unsigned genesis encoded: %v", err)
	}
	cp := f.cp(0)
	cp.HolderSig = cp.HolderSig[:10]
	if _, _, err := cp.Encode(); !errors.Is(err, ErrMalformed) {
		t.Fatalf("checkpoint with a short holder sig encoded: %v", err)
	}
}

func TestCheckpointFieldSanity(t *testing.T) {
	f := newFixture(t, 2)
	v0 := cid.NewCidV0(mustHash([]byte("x")))
	rawPrev := contentCID([]byte("not dag-cbor"))
	blake := func() cid.Cid {
		h, _ := multihash.Sum([]byte("x"), multihash.BLAKE2B_MIN+31, -1)
		return cid.NewCidV1(cid.Raw, h)
	}()
	cases := map[string]struct {
		seq int
		mut func(*Checkpoint)
	}{
		"negative budget":   {1, func(c *Checkpoint) { c.Budget = -1 }},
		"negative price":    {1, func(c *Checkpoint) { c.Price = -5 }},
		"seq 0 with prev":   {0, func(c *Checkpoint) { c.Prev = f.entries[1].CID }},
		"seq 1 no prev":     {1, func(c *Checkpoint) { c.Prev = cid.Undef }},
		"prev raw codec":    {1, func(c *Checkpoint) { c.Prev = rawPrev }},
		"genesis raw codec": {1, func(c *Checkpoint) { c.Genesis = rawPrev }},
		"state CIDv0":       {1, func(c *Checkpoint) { c.State = v0 }},
		"module not sha256": {1, func(c *Checkpoint) { c.Module = blake }},
		"no manifest":       {1, func(c *Checkpoint) { c.Manifest = cid.Undef }},
		"bad agent":         {1, func(c *Checkpoint) { c.Agent = "did:key:zzz" }},
		"seq over int64":    {1, func(c *Checkpoint) { c.Seq = math.MaxInt64 + 1 }},
		"tick over int64":   {1, func(c *Checkpoint) { c.Tick = math.MaxUint64 }},
		"huge state":        {1, func(c *Checkpoint) { c.StateSize = MaxStateBytesCap + 1 }},
		"bad holder":        {1, func(c *Checkpoint) { c.Holder = f.did() }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			cp := f.cp(tc.seq)
			tc.mut(cp)
			if err := cp.Sign(f.agentKey, f.holderKeys[0]); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Sign: %v, want ErrMalformed", err)
			}
			if err := cp.Verify(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Verify: %v, want ErrMalformed", err)
			}
			if _, _, err := cp.Encode(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Encode: %v, want ErrMalformed", err)
			}
		})
	}
}

func mustHash(b []byte) multihash.Multihash {
	h, err := multihash.Sum(b, multihash.SHA2_256, -1)
	if err != nil {
		panic(err)
	}
	return h
}

// Every field of a signed checkpoint is covered by both signatures.
func TestCheckpointEveryFieldSigned(t *testing.T) {
	f := newFixture(t, 2)
	other := contentCID([]byte("other"))
	muts := map[string]func(*Checkpoint){
		"agent":     func(c *Checkpoint) { c.Agent = DID(pubOf(keyFromLabel("other"))) },
		"genesis":   func(c *Checkpoint) { c.Genesis = f.entries[0].CID },
		"prev":      func(c *Checkpoint) { c.Prev = f.gcid },
		"seq":       func(c *Checkpoint) { c.Seq++ },
		"tick":      func(c *Checkpoint) { c.Tick++ },
		"epoch":     func(c *Checkpoint) { c.Epoch++ },
		"holder":    func(c *Checkpoint) { c.Holder = PeerID(pubOf(f.holderKeys[2])) },
		"state":     func(c *Checkpoint) { c.State = other },
		"stateSize": func(c *Checkpoint) { c.StateSize++ },
		"module":    func(c *Checkpoint) { c.Module = other },
		"manifest":  func(c *Checkpoint) { c.Manifest = other },
		"budget":    func(c *Checkpoint) { c.Budget-- },
		"price":     func(c *Checkpoint) { c.Price++ },
		"calls":     func(c *Checkpoint) { c.Calls++ },
		"metered":   func(c *Checkpoint) { c.Metered++ },
		"time":      func(c *Checkpoint) { c.Time++ },
		"controls":  func(c *Checkpoint) { c.Controls++ },
		"stopped":   func(c *Checkpoint) { c.Stopped = true },
		"journal":   func(c *Checkpoint) { c.Journal = other },
		"partial":   func(c *Checkpoint) { c.Journal, c.Partial = other, true },
		"paid":      func(c *Checkpoint) { c.Paid++ },
		"receipts":  func(c *Checkpoint) { c.Receipts = other },
		"control": func(c *Checkpoint) {
			ctl := &Control{Kind: ControlStop, Agent: c.Agent, Seq: 1, Issued: 1}
			if err := ctl.Sign(keyFromLabel("owner")); err != nil {
				panic(err)
			}
			c.Control, c.Controls = ctl, 1
		},
	}
	if n := reflect.TypeOf(Checkpoint{}).NumField() - 2; len(muts) != n {
		t.Fatalf("test covers %d fields, Checkpoint has %d signed fields", len(muts), n)
	}
	for name, mut := range muts {
		t.Run(name, func(t *testing.T) {
			cp := f.cp(1)
			mut(cp)
			data, _, err := cp.Encode()
			if err != nil {
				t.Fatal(err)
			}
			dec, err := DecodeCheckpoint(data)
			if err != nil {
				t.Fatal(err)
			}
			if err := dec.Verify(); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("Verify after changing %s: %v, want ErrBadSignature", name, err)
			}
		})
	}
}

func TestGenesisEveryFieldSigned(t *testing.T) {
	f := newFixture(t, 0)
	other := contentCID([]byte("other"))
	for name, mut := range map[string]func(*Genesis){
		"agent":    func(g *Genesis) { g.Agent = DID(pubOf(keyFromLabel("other"))) },
		"module":   func(g *Genesis) { g.Module = other },
		"manifest": func(g *Genesis) { g.Manifest = other },
		"budget":   func(g *Genesis) { g.Budget++ },
		"created":  func(g *Genesis) { g.Created++ },
	} {
		g := *f.genesis
		mut(&g)
		if err := g.Verify(); !errors.Is(err, ErrBadSignature) {
			t.Errorf("Verify after changing %s: %v, want ErrBadSignature", name, err)
		}
	}
}

// The signature covers the domain: a checkpoint signature is not a valid
// signature of the same bytes in another domain.
func TestSigningDomainSeparated(t *testing.T) {
	f := newFixture(t, 1)
	cp := f.cp(0)
	msg, err := cp.signingBytes()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(msg), TypeCheckpoint+"\x00") {
		t.Fatalf("signing bytes start %q", msg[:24])
	}
	unsigned, _ := encodeCanonical(cp.wire(false))
	if !bytes.Equal(msg[len(TypeCheckpoint)+1:], unsigned) {
		t.Fatal("signing bytes are not domain ‖ 0 ‖ unsigned encoding")
	}
	gmsg, _ := f.genesis.signingBytes()
	if !strings.HasPrefix(string(gmsg), TypeGenesis+"\x00") {
		t.Fatal("genesis signing bytes lack their domain")
	}
}

// reversedKeys re-encodes a canonical map with its entries in reverse order.
func reversedKeys(t *testing.T, data []byte) []byte {
	t.Helper()
	var m map[string]cbor.RawMessage
	if err := cbor.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { // reverse length-first order
		if len(keys[i]) != len(keys[j]) {
			return len(keys[i]) > len(keys[j])
		}
		return keys[i] > keys[j]
	})
	out := []byte{data[0]}
	for _, k := range keys {
		kb, _ := encMode.Marshal(k)
		out = append(append(out, kb...), m[k]...)
	}
	if len(out) != len(data) || bytes.Equal(out, data) {
		t.Fatal("test setup: reversing keys failed")
	}
	return out
}

// canonicalVariant re-encodes obj (decoded generically) after mut, with
// canonical options, so only what mut changes differs from a valid object.
func canonicalVariant(t *testing.T, data []byte, mut func(m map[string]any)) []byte {
	t.Helper()
	var m map[string]any
	if err := cbor.Unmarshal(data, &m); err != nil {
		t.Fatal(err)
	}
	mut(m)
	out, err := encMode.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestDecodeRejectsNonCanonical(t *testing.T) {
	f := newFixture(t, 2)
	valid := f.store[f.entries[1].CID]
	if _, err := DecodeCheckpoint(valid); err != nil {
		t.Fatal(err)
	}
	unsorted := reversedKeys(t, valid)
	// "seq": 1 is a3 73 65 71 01; the long form of 1 is 18 01.
	seqKey := []byte{0x63, 's', 'e', 'q'}
	longInt := bytes.Replace(valid, append(seqKey, 0x01), append(seqKey, 0x18, 0x01), 1)
	if bytes.Equal(longInt, valid) {
		t.Fatal("test setup: seq not found")
	}
	if valid[0] != 0xb3 { // map(19)
		t.Fatalf("test setup: checkpoint starts with %x", valid[0])
	}
	indef := append(append([]byte{0xbf}, valid[1:]...), 0xff)
	dup := append([]byte{0xb4}, valid[1:]...)
	dup = append(dup, append(seqKey, 0x01)...)

	cases := map[string][]byte{
		"empty":              {},
		"not a map":          {0x01},
		"unsorted keys":      unsorted,
		"long integer":       longInt,
		"indefinite map":     indef,
		"duplicate key":      dup,
		"trailing byte":      append(append([]byte{}, valid...), 0x00),
		"self-described tag": append([]byte{0xd9, 0xd9, 0xf7}, valid...),
		"truncated":          valid[:len(valid)-1],
		"too large":          make([]byte, MaxObjectBytes+1),
		"unknown field":      canonicalVariant(t, valid, func(m map[string]any) { m["extra"] = 1 }),
		"missing field":      canonicalVariant(t, valid, func(m map[string]any) { delete(m, "holder") }),
		"seq as text":        canonicalVariant(t, valid, func(m map[string]any) { m["seq"] = "1" }),
		"negative seq":       canonicalVariant(t, valid, func(m map[string]any) { m["seq"] = -1 }),
		"budget as float":    canonicalVariant(t, valid, func(m map[string]any) { m["budget"] = 1.5 }),
		"link without tag":   canonicalVariant(t, valid, func(m map[string]any) { m["prev"] = m["prev"].(cbor.Tag).Content }),
		"link with tag 43":   canonicalVariant(t, valid, func(m map[string]any) { tg := m["prev"].(cbor.Tag); tg.Number = 43; m["prev"] = tg }),
		"link without 0x00": canonicalVariant(t, valid, func(m map[string]any) {
			tg := m["prev"].(cbor.Tag)
			tg.Content = tg.Content.([]byte)[1:]
			m["prev"] = tg
		}),
		"link trailing byte": canonicalVariant(t, valid, func(m map[string]any) {
			tg := m["prev"].(cbor.Tag)
			tg.Content = append(tg.Content.([]byte), 0)
			m["prev"] = tg
		}),
		"null prev":        canonicalVariant(t, valid, func(m map[string]any) { m["prev"] = nil }),
		"empty agentSig":   canonicalVariant(t, valid, func(m map[string]any) { m["agentSig"] = []byte{} }),
		"tagged integer":   canonicalVariant(t, valid, func(m map[string]any) { m["tick"] = cbor.Tag{Number: 2, Content: []byte{10}} }),
		"wrong type field": canonicalVariant(t, valid, func(m map[string]any) { m["type"] = TypeGenesis }),
		"byte-string key":  append(append([]byte{0xb2}, valid[1:]...), 0x41, 'x', 0x01),
		"invalid utf-8":    canonicalVariant(t, valid, func(m map[string]any) { m["holder"] = string([]byte{0xff, 0xfe}) }),
	}
	for name, data := range cases {
		t.Run(name, func(t *testing.T) {
			cp, err := DecodeCheckpoint(data)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("DecodeCheckpoint = %+v, %v; want ErrMalformed", cp, err)
			}
		})
	}
	// The diagnosis names a missing or unknown field.
	_, err := DecodeCheckpoint(cases["missing field"])
	if err == nil || !strings.Contains(err.Error(), `missing field "holder"`) {
		t.Fatalf("missing field error = %v", err)
	}
	_, err = DecodeCheckpoint(cases["unknown field"])
	if err == nil || !strings.Contains(err.Error(), `unknown field "extra"`) {
		t.Fatalf("unknown field error = %v", err)
	}
}

func TestGenesisDecodeRejects(t *testing.T) {
	f := newFixture(t, 1)
	valid := f.store[f.gcid]
	for name, data := range map[string][]byte{
		"checkpoint":     f.store[f.entries[0].CID],
		"negative":       canonicalVariant(t, valid, func(m map[string]any) { m["budget"] = -1 }),
		"no sig":         canonicalVariant(t, valid, func(m map[string]any) { delete(m, "sig") }),
		"short sig":      canonicalVariant(t, valid, func(m map[string]any) { m["sig"] = []byte{1, 2} }),
		"trailing":       append(append([]byte{}, valid...), 0xf6),
		"unknown field":  canonicalVariant(t, valid, func(m map[string]any) { m["nonce"] = []byte{1} }),
		"bad did":        canonicalVariant(t, valid, func(m map[string]any) { m["agent"] = "did:key:z6Mk" }),
		"module as text": canonicalVariant(t, valid, func(m map[string]any) { m["module"] = testModule.String() }),
	} {
		if _, err := DecodeGenesis(data); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: DecodeGenesis = %v, want ErrMalformed", name, err)
		}
	}
}

func TestKind(t *testing.T) {
	f := newFixture(t, 1)
	h := testHead(t, f)
	hdata, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if k, err := Kind(hdata); err != nil || k != "head" {
		t.Fatalf("Kind(head) = %q, %v", k, err)
	}
	for name, data := range map[string][]byte{
		"empty":        nil,
		"int":          {0x01},
		"no type":      {0xa1, 0x61, 'a', 0x01},
		"unknown type": canonicalVariant(t, f.store[f.gcid], func(m map[string]any) { m["type"] = "igor/genesis/v2" }),
		"type not str": canonicalVariant(t, f.store[f.gcid], func(m map[string]any) { m["type"] = 1 }),
	} {
		if k, err := Kind(data); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Kind = %q, %v; want ErrMalformed", name, k, err)
		}
	}
}
