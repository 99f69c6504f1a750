package agents

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

func TestVerifyLineageValid(t *testing.T) {
	f := newFixture(t, 10)
	lin, err := VerifyLineage(f.head(), f.store, VerifyOptions{ExpectDID: f.did()})
	if err != nil {
		t.Fatal(err)
	}
	if lin.DID != f.did() || !lin.GenesisCID.Equals(f.gcid) || lin.Genesis.Budget != f.genesis.Budget {
		t.Fatalf("lineage header %s %s", lin.DID, lin.GenesisCID)
	}
	if len(lin.Entries) != 10 {
		t.Fatalf("%d entries, want 10", len(lin.Entries))
	}
	for i, e := range lin.Entries {
		if !e.CID.Equals(f.entries[i].CID) || e.Checkpoint.Seq != uint64(i) {
			t.Fatalf("entry %d is %s seq %d", i, e.CID, e.Checkpoint.Seq)
		}
	}
	if !lin.Head().CID.Equals(f.head()) {
		t.Fatal("Head() is not the head")
	}
	// Any checkpoint is a head of its own prefix.
	lin, err = VerifyLineage(f.entries[0].CID, f.store, VerifyOptions{})
	if err != nil || len(lin.Entries) != 1 {
		t.Fatalf("seq-0 head: %v", err)
	}
}

func TestVerifyLineageCheckBlock(t *testing.T) {
	f := newFixture(t, 5)
	present := map[cid.Cid]bool{testModule: true, testManifest: true}
	for _, e := range f.entries {
		present[e.Checkpoint.State] = true
	}
	var checked []cid.Cid
	check := func(c cid.Cid) error {
		checked = append(checked, c)
		if !present[c] {
			return fmt.Errorf("block %s: %w", c, errNoBlock)
		}
		return nil
	}
	if _, err := VerifyLineage(f.head(), f.store, VerifyOptions{CheckBlock: check}); err != nil {
		t.Fatal(err)
	}
	if len(checked) != 2+5 {
		t.Fatalf("CheckBlock called %d times, want 7", len(checked))
	}
	missing := f.entries[3].Checkpoint.State
	delete(present, missing)
	_, err := VerifyLineage(f.head(), f.store, VerifyOptions{CheckBlock: check})
	wantVerifyErr(t, err, ErrMissingBlock, f.entries[3].CID, 3)
	if !errors.Is(err, errNoBlock) || !strings.Contains(err.Error(), missing.String()) {
		t.Fatalf("error %v does not carry the cause and the state CID", err)
	}
	delete(present, testModule)
	_, err = VerifyLineage(f.head(), f.store, VerifyOptions{CheckBlock: check})
	var ve *VerifyError
	if !errors.As(err, &ve) || !ve.Genesis || !ve.CID.Equals(f.gcid) || !strings.Contains(err.Error(), testModule.String()) {
		t.Fatalf("missing module: %v", err)
	}
}

// wantVerifyErr checks that err is a *VerifyError wrapping sentinel and
// naming culprit at seq.
func wantVerifyErr(t *testing.T, err, sentinel error, culprit cid.Cid, seq uint64) *VerifyError {
	t.Helper()
	var ve *VerifyError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T) is not a *VerifyError", err, err)
	}
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %q does not wrap %v", err, sentinel)
	}
	if !ve.CID.Equals(culprit) {
		t.Fatalf("error %q names %s, want culprit %s", err, ve.CID, culprit)
	}
	if !ve.Genesis && (!ve.SeqKnown || ve.Seq != seq) {
		t.Fatalf("error %q has seq %d (known %v), want %d", err, ve.Seq, ve.SeqKnown, seq)
	}
	if !strings.Contains(err.Error(), culprit.String()) {
		t.Fatalf("error text %q does not name %s", err, culprit)
	}
	return ve
}

// rebuild replaces checkpoint i with mut applied (re-signed unless
// resign is false, in which case the old signatures are kept), then
// re-links and re-signs every later checkpoint with the real keys, the way
// a holder of both keys would rewrite history. It returns the new CID of
// checkpoint i.
func rebuild(t *testing.T, f *fixture, i int, resign bool, mut func(*Checkpoint)) cid.Cid {
	t.Helper()
	old := f.entries
	f.truncate(i)
	cp := *old[i].Checkpoint
	mut(&cp)
	var c cid.Cid
	if resign {
		c = f.append(t, &cp)
	} else {
		c = f.appendSigned(t, &cp)
	}
	for j := i + 1; j < len(old); j++ {
		n := *old[j].Checkpoint
		n.Prev = f.head()
		f.append(t, &n)
	}
	return c
}

// tamperLen is the length of the lineages tamperCases tamper with.
const tamperLen = 8

type tamperCase struct {
	name     string
	sentinel error
	// tamper changes f and returns the culprit's CID and seq.
	tamper func(t *testing.T, f *fixture) (cid.Cid, uint64)
}

// tamperCases are rewrites of a valid lineage of tamperLen checkpoints
// that verification must refuse, with the culprit it must name.
func tamperCases() []tamperCase {
	const n = tamperLen
	other := keyFromLabel("intruder")
	otherCID := contentCID([]byte("another module"))

	return []tamperCase{
		{"flipped field in the head", ErrBadSignature, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			cp := f.cp(n - 1)
			f.truncate(n - 1)
			cp.Budget--
			return f.appendSigned(t, cp), n - 1
		}},
		{"flipped field mid-chain", ErrBadSignature, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 3, false, func(c *Checkpoint) { c.Tick += 1 }), 3
		}},
		{"substituted block bytes", ErrMalformed, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			c := f.entries[4].CID
			f.store[c] = f.store[f.entries[5].CID]
			return c, 4
		}},
		{"forged agent signature", ErrBadSignature, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 2, false, func(c *Checkpoint) {
				c.Budget -= 5
				msg, _ := c.signingBytes()
				c.AgentSig = signWith(other, msg)
				c.HolderSig = signWith(f.holderFor(t, c), msg)
			}), 2
		}},
		{"forged holder signature", ErrBadSignature, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 5, false, func(c *Checkpoint) {
				c.Budget -= 5
				msg, _ := c.signingBytes()
				c.AgentSig = signWith(f.agentKey, msg)
				c.HolderSig = signWith(other, msg)
			}), 5
		}},
		{"swapped module", ErrModuleMismatch, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 4, true, func(c *Checkpoint) { c.Module = otherCID }), 4
		}},
		{"swapped manifest", ErrManifestMismatch, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 6, true, func(c *Checkpoint) { c.Manifest = otherCID }), 6
		}},
		{"swapped module at seq 0", ErrModuleMismatch, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 0, true, func(c *Checkpoint) { c.Module = otherCID }), 0
		}},
		{"missing middle block", ErrMissingBlock, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			c := f.entries[3].CID
			delete(f.store, c)
			return c, 3
		}},
		{"missing head", ErrMissingBlock, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			c := f.head()
			delete(f.store, c)
			return c, 0 // seq unknown; checked separately below
		}},
		{"seq gap", ErrOrder, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return shiftSeq(t, f, 4, +1), 5
		}},
		{"seq repeat", ErrOrder, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return shiftSeq(t, f, 4, -1), 3
		}},
		{"tick not increasing", ErrOrder, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 5, true, func(c *Checkpoint) { c.Tick = f.entries[4].Checkpoint.Tick }), 5
		}},
		{"epoch decreasing", ErrOrder, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 7, true, func(c *Checkpoint) { c.Epoch = 0 }), 7
		}},
		{"budget increase", ErrBudgetIncreased, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 3, true, func(c *Checkpoint) { c.Budget = f.entries[2].Checkpoint.Budget + 1 }), 3
		}},
		{"budget step larger than metered", ErrMetering, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 3, true, func(c *Checkpoint) { c.Budget-- }), 3
		}},
		{"budget step smaller than metered", ErrMetering, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 3, true, func(c *Checkpoint) { c.Metered += 1e6 }), 3
		}},
		{"fewer calls than ticks", ErrMetering, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 4, true, func(c *Checkpoint) { c.Calls = 9 }), 4
		}},
		{"metered beyond the tick timeout", ErrMetering, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			// 10 calls may bill at most 10 × 1000 ms; 10 s + 1 ns at price 0
			// keeps the budget step itself exact.
			return rebuild(t, f, 2, true, func(c *Checkpoint) {
				c.Price, c.Metered, c.Budget = 0, 10*1e9+1, f.entries[1].Checkpoint.Budget
			}), 2
		}},
		{"free seq 0 charged", ErrMetering, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 0, true, func(c *Checkpoint) { c.Budget = f.genesis.Budget - 1 }), 0
		}},
		{"seq 0 budget above genesis", ErrBudgetIncreased, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 0, true, func(c *Checkpoint) { c.Budget = f.genesis.Budget + 1 }), 0
		}},
		{"different DID mid-chain", ErrIdentityChanged, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			// From seq 4 on, an intruder signs with its own key and DID,
			// continuing the real history.
			old := f.entries
			f.truncate(4)
			real := f.agentKey
			f.agentKey = other
			var culprit cid.Cid
			for j := 4; j < len(old); j++ {
				cp := *old[j].Checkpoint
				cp.Agent, cp.Prev = f.did(), f.head()
				c := f.append(t, &cp)
				if j == 4 {
					culprit = c
				}
			}
			f.agentKey = real
			return culprit, 4
		}},
		{"other genesis mid-chain", ErrBrokenLink, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			g2 := *f.genesis
			g2.Created++
			if err := g2.Sign(f.agentKey); err != nil {
				t.Fatal(err)
			}
			data, gc2, _ := g2.Encode()
			f.store[gc2] = data
			return rebuild(t, f, 2, true, func(c *Checkpoint) { c.Genesis = gc2 }), 2
		}},
		{"prev links the genesis", ErrBrokenLink, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			return rebuild(t, f, 1, true, func(c *Checkpoint) { c.Prev = f.gcid }), 1
		}},
		{"genesis link to a checkpoint", ErrNotGenesis, func(t *testing.T, f *fixture) (cid.Cid, uint64) {
			// A seq-0 checkpoint whose "genesis" is a checkpoint of
			// another chain.
			g := newFixture(t, 1)
			for c, b := range g.store {
				f.store[c] = b
			}
			return rebuild(t, f, 0, true, func(c *Checkpoint) { c.Genesis = g.entries[0].CID }), 0
		}},
	}
}

func TestVerifyLineageTamper(t *testing.T) {
	for _, tc := range tamperCases() {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tamperLen)
			culprit, seq := tc.tamper(t, f)
			_, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
			if tc.name == "missing head" {
				var ve *VerifyError
				if !errors.As(err, &ve) || !errors.Is(err, ErrMissingBlock) || !ve.CID.Equals(culprit) || ve.SeqKnown {
					t.Fatalf("missing head: %v", err)
				}
				return
			}
			wantVerifyErr(t, err, tc.sentinel, culprit, seq)
		})
	}
}

func signWith(k ed25519.PrivateKey, msg []byte) []byte { return ed25519.Sign(k, msg) }

// shiftSeq rewrites history from index i on with seq numbers moved by
// delta (properly signed), and returns the new CID at index i.
func shiftSeq(t *testing.T, f *fixture, i int, delta int64) cid.Cid {
	t.Helper()
	old := f.entries
	f.truncate(i)
	var first cid.Cid
	for j := i; j < len(old); j++ {
		cp := *old[j].Checkpoint
		cp.Seq = uint64(int64(cp.Seq) + delta)
		cp.Prev = f.head()
		c := f.append(t, &cp)
		if j == i {
			first = c
		}
	}
	return first
}

func TestVerifyLineageGenesisProblems(t *testing.T) {
	f := newFixture(t, 3)
	delete(f.store, f.gcid)
	_, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
	ve := wantVerifyErr(t, err, ErrMissingBlock, f.gcid, 0)
	if !ve.Genesis || !strings.HasPrefix(err.Error(), "genesis ") || !errors.Is(err, errNoBlock) {
		t.Fatalf("missing genesis: %v", err)
	}

	f = newFixture(t, 3)
	g := *f.genesis
	g.Budget++ // signature no longer valid
	data, err := encodeCanonical(g.wire(true))
	if err != nil {
		t.Fatal(err)
	}
	// Store the forged genesis under its own CID and rebuild the chain on it.
	gc2 := blockCID(data)
	f.store[gc2] = data
	rebuild(t, f, 0, true, func(c *Checkpoint) { c.Genesis = gc2 })
	for i := 1; i < len(f.entries); i++ {
		rebuild(t, f, i, true, func(c *Checkpoint) { c.Genesis = gc2 })
	}
	_, err = VerifyLineage(f.head(), f.store, VerifyOptions{})
	ve = wantVerifyErr(t, err, ErrBadSignature, gc2, 0)
	if !ve.Genesis {
		t.Fatal("forged genesis not reported as the genesis")
	}
}

func TestVerifyLineageExpectDID(t *testing.T) {
	f := newFixture(t, 3)
	other := DID(pubOf(keyFromLabel("someone")))
	_, err := VerifyLineage(f.head(), f.store, VerifyOptions{ExpectDID: other})
	wantVerifyErr(t, err, ErrIdentityChanged, f.head(), 2)
	if _, err := VerifyLineage(f.head(), f.store, VerifyOptions{ExpectDID: "did:key:nope"}); !errors.Is(err, ErrBadDID) {
		t.Fatalf("bad ExpectDID: %v", err)
	}
}

func TestVerifyLineageBadArguments(t *testing.T) {
	f := newFixture(t, 1)
	if _, err := VerifyLineage(f.head(), nil, VerifyOptions{}); err == nil {
		t.Fatal("nil getter accepted")
	}
	if _, err := VerifyLineage(cid.Undef, f.store, VerifyOptions{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("undefined head: %v", err)
	}
	if _, err := VerifyLineage(testModule, f.store, VerifyOptions{}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("raw head CID: %v", err)
	}
	// The genesis is not a head.
	_, err := VerifyLineage(f.gcid, f.store, VerifyOptions{})
	var ve *VerifyError
	if !errors.As(err, &ve) || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "is a genesis") {
		t.Fatalf("genesis as head: %v", err)
	}
}

type ctxGetter struct {
	ctx context.Context
	memStore
}

func (g ctxGetter) Get(c cid.Cid) ([]byte, error) {
	if err := g.ctx.Err(); err != nil {
		return nil, err
	}
	return g.memStore.Get(c)
}

func TestVerifyLineageKeepsGetterError(t *testing.T) {
	f := newFixture(t, 2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := VerifyLineage(f.head(), ctxGetter{ctx, f.store}, VerifyOptions{})
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrMissingBlock) {
		t.Fatalf("cancelled getter: %v", err)
	}
}

func TestVerifyLineageLong(t *testing.T) {
	if testing.Short() {
		t.Skip("long chain")
	}
	f := newFixture(t, 3000)
	lin, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(lin.Entries) != 3000 {
		t.Fatalf("%d entries", len(lin.Entries))
	}
}

func TestDetectForks(t *testing.T) {
	f := newFixture(t, 6)
	if forks := DetectForks(f.entries); len(forks) != 0 {
		t.Fatalf("linear chain has forks: %v", forks)
	}
	// A second holder continues from seq 3 with other state.
	alt := *f.entries[4].Checkpoint
	alt.AgentSig, alt.HolderSig = nil, nil
	alt.State = contentCID([]byte("divergent"))
	if err := alt.Sign(f.agentKey, f.holderFor(t, &alt)); err != nil {
		t.Fatal(err)
	}
	_, altCID, err := alt.Encode()
	if err != nil {
		t.Fatal(err)
	}
	all := append(append([]Entry{}, f.entries...), Entry{CID: altCID, Checkpoint: &alt})
	all = append(all, f.entries[2], Entry{}) // a duplicate and an empty entry are ignored
	forks := DetectForks(all)
	if len(forks) != 1 {
		t.Fatalf("forks = %v, want 1", forks)
	}
	fk := forks[0]
	a, b := f.entries[4].CID, altCID
	if string(b.Bytes()) < string(a.Bytes()) {
		a, b = b, a
	}
	if !fk.Prev.Equals(f.entries[3].CID) || !fk.A.Equals(a) || !fk.B.Equals(b) || !fk.Genesis.Equals(f.gcid) {
		t.Fatalf("fork %+v", fk)
	}
	var asErr error = fk
	if !errors.Is(asErr, ErrFork) || !strings.Contains(fk.Error(), a.String()) || !strings.Contains(fk.String(), b.String()) ||
		!strings.Contains(fk.Error(), f.entries[3].CID.String()) {
		t.Fatalf("fork error %q", fk)
	}

	// Two different seq-0 checkpoints of one genesis, and a three-way split.
	zero := f.cp(0)
	zero.Tick = 1
	zero.AgentSig, zero.HolderSig = nil, nil
	if err := zero.Sign(f.agentKey, f.holderFor(t, zero)); err != nil {
		t.Fatal(err)
	}
	_, zeroCID, _ := zero.Encode()
	alt2 := alt
	alt2.State = contentCID([]byte("divergent 2"))
	if err := alt2.Sign(f.agentKey, f.holderFor(t, &alt2)); err != nil {
		t.Fatal(err)
	}
	_, alt2CID, _ := alt2.Encode()
	all = append(all, Entry{CID: zeroCID, Checkpoint: zero}, Entry{CID: alt2CID, Checkpoint: &alt2})
	forks = DetectForks(all)
	if len(forks) != 4 { // seq 0: one pair; after seq 3: three pairs of three successors
		t.Fatalf("forks = %v, want 4", forks)
	}
	var seq0 int
	for _, fk := range forks {
		if !fk.Prev.Defined() {
			seq0++
			if !strings.Contains(fk.Error(), "seq 0") || !strings.Contains(fk.Error(), zeroCID.String()) {
				t.Fatalf("seq-0 fork text %q", fk)
			}
		}
	}
	if seq0 != 1 {
		t.Fatalf("%d seq-0 forks, want 1", seq0)
	}
	// Deterministic whatever the input order.
	want := fmt.Sprint(forks)
	defer func() { testSuperseded(t, f) }()
	rng := rand.New(rand.NewSource(7))
	for i := 0; i < 50; i++ {
		rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		if got := fmt.Sprint(DetectForks(all)); got != want {
			t.Fatalf("order-dependent result:\n%s\n%s", got, want)
		}
	}
}

// testSuperseded: a successor at a higher epoch supersedes a sibling branch
// whose checkpoints all carry lower epochs (an uncommitted tail of a holder
// that lost its lease); a sibling branch that goes on at that epoch or
// later is a fork.
func testSuperseded(t *testing.T, f *fixture) {
	t.Helper()
	sign := func(cp *Checkpoint) Entry {
		cp.AgentSig, cp.HolderSig = nil, nil
		if err := cp.Sign(f.agentKey, f.holderFor(t, cp)); err != nil {
			t.Fatal(err)
		}
		_, c, err := cp.Encode()
		if err != nil {
			t.Fatal(err)
		}
		return Entry{CID: c, Checkpoint: cp}
	}
	old := f.entries[5].Checkpoint.Epoch
	next := *f.entries[4].Checkpoint // the new holder resumes from seq 3
	next.Epoch = old + 1
	next.State = contentCID([]byte("new holder"))
	nextE := sign(&next)
	if forks := DetectForks(append(slices.Clone(f.entries), nextE)); len(forks) != 0 {
		t.Fatalf("an abandoned lower-epoch tail reported as a fork: %v", forks)
	}
	// The old branch goes on at the new epoch: two holders ran at once.
	late := *f.entries[5].Checkpoint
	late.Seq, late.Tick, late.Prev, late.Epoch = late.Seq+1, late.Tick+1, f.entries[5].CID, old+1
	lateE := sign(&late)
	forks := DetectForks(append(slices.Clone(f.entries), nextE, lateE))
	if len(forks) != 1 || !forks[0].Prev.Equals(f.entries[3].CID) {
		t.Fatalf("concurrent branches at epoch %d: forks %v, want one after seq 3", old+1, forks)
	}
}

// TestVerifyNextAgreesWithVerifyLineage steps through every lineage of
// tamperCases (and a valid one) one checkpoint at a time with VerifyNext,
// from the Base of seq 0: it must accept exactly what VerifyLineage
// accepts and name the same culprit. Cases about block bytes and the
// genesis are VerifyLineage's alone (VerifyNext's caller vouches for the
// bytes, and its base carries a verified genesis).
func TestVerifyNextAgreesWithVerifyLineage(t *testing.T) {
	cases := append([]tamperCase{{name: "valid", tamper: func(*testing.T, *fixture) (cid.Cid, uint64) { return cid.Undef, 0 }}}, tamperCases()...)
	for _, tc := range cases {
		if tc.sentinel == ErrMissingBlock || tc.sentinel == ErrMalformed || tc.sentinel == ErrNotGenesis {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, tamperLen)
			tc.tamper(t, f)
			lin, want := VerifyLineage(f.head(), f.store, VerifyOptions{})
			var got error
			var base Base
			if l0, err := VerifyLineage(f.entries[0].CID, f.store, VerifyOptions{}); err != nil {
				got = err
			} else {
				base = l0.Base()
				for _, e := range f.entries[1:] {
					cp, err := DecodeCheckpoint(f.store[e.CID])
					if err != nil {
						t.Fatal(err)
					}
					if base, got = VerifyNext(base, e.CID, cp, false, f.store); got != nil {
						break
					}
				}
			}
			if (want == nil) != (got == nil) {
				t.Fatalf("VerifyLineage: %v; stepping with VerifyNext: %v", want, got)
			}
			if want == nil {
				if h := lin.Base(); !base.Entry.CID.Equals(h.Entry.CID) || !base.GenesisCID.Equals(h.GenesisCID) || base.Manifest == nil {
					t.Fatalf("stepped to %s, VerifyLineage's head is %s", base.Entry.CID, h.Entry.CID)
				}
				return
			}
			var wv, gv *VerifyError
			if !errors.As(want, &wv) || !errors.As(got, &gv) || !errors.Is(got, wv.Err) || !gv.CID.Equals(wv.CID) {
				t.Fatalf("VerifyLineage: %v; stepping with VerifyNext: %v", want, got)
			}
		})
	}
}

func TestVerifyNextBadArguments(t *testing.T) {
	f := newFixture(t, 3)
	lin, err := VerifyLineage(f.entries[1].CID, f.store, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	next := f.cp(2)
	if _, err := VerifyNext(Base{}, f.entries[2].CID, next, false, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("empty base: %v", err)
	}
	if _, err := VerifyNext(lin.Base(), f.entries[2].CID, nil, false, nil); !errors.Is(err, ErrMalformed) {
		t.Fatalf("nil checkpoint: %v", err)
	}
	// Its own predecessor is not its successor.
	if _, err := VerifyNext(lin.Base(), f.entries[1].CID, f.cp(1), false, nil); !errors.Is(err, ErrBrokenLink) {
		t.Fatalf("a checkpoint after itself: %v", err)
	}
}
