package agents

import (
	"crypto/ed25519"
	"errors"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

// ownedFixture is a lineage of an agent with an owner: ticks (seq 0-2),
// stop (3), top-up while stopped (4), start (5), ticks (6-7).
func ownedFixture(t *testing.T) (*fixture, ed25519.PrivateKey) {
	t.Helper()
	owner := keyFromLabel("owner")
	f := &fixture{agentKey: keyFromLabel("agent"), store: memStore{}}
	for i := 0; i < 3; i++ {
		f.holderKeys = append(f.holderKeys, keyFromLabel("node-"+string(rune('a'+i))))
	}
	f.genesis = &Genesis{Agent: f.did(), Module: testModule, Manifest: testManifest, Budget: 1_000_000,
		Created: 1_700_000_000_000_000_000, Owner: DID(pubOf(owner))}
	if err := f.genesis.Sign(f.agentKey); err != nil {
		t.Fatal(err)
	}
	data, c, err := f.genesis.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f.gcid = c
	f.store[c] = data
	f.store[testManifest] = testManifestBytes
	for range 3 {
		f.appendTick(t)
	}
	f.appendControl(t, owner, ControlStop, 0)
	f.appendControl(t, owner, ControlTopUp, 5_000)
	f.appendControl(t, owner, ControlStart, 0)
	for range 2 {
		f.appendTick(t)
	}
	return f, owner
}

// appendTick appends a checkpoint 10 ticks (10 calls, 100 µc) on.
func (f *fixture) appendTick(t *testing.T) cid.Cid {
	cp := f.next()
	if len(f.entries) > 0 {
		prev := f.entries[len(f.entries)-1].Checkpoint
		cp.Tick, cp.Budget, cp.Epoch = prev.Tick+10, prev.Budget-100, prev.Epoch
		cp.Controls = prev.Controls
	}
	return f.append(t, cp)
}

// control returns the owner's signed record numbered after the head.
func (f *fixture) control(t *testing.T, owner ed25519.PrivateKey, kind ControlKind, amount int64) *Control {
	ctl := &Control{Kind: kind, Agent: f.did(), Seq: f.entries[len(f.entries)-1].Checkpoint.Controls + 1, Amount: amount, Issued: 1}
	if err := ctl.Sign(owner); err != nil {
		t.Fatal(err)
	}
	return ctl
}

// controlStep returns the unsigned checkpoint applying ctl to the head
// between ticks, as a holder makes it.
func (f *fixture) controlStep(ctl *Control) *Checkpoint {
	prev := f.entries[len(f.entries)-1].Checkpoint
	cp := f.next()
	cp.Tick, cp.State, cp.StateSize, cp.Epoch, cp.Calls, cp.Metered = prev.Tick, prev.State, prev.StateSize, prev.Epoch, 0, 0
	cp.Controls, cp.Stopped, cp.Budget = ControlledNext(prev, prev.Budget, ctl)
	cp.Control = ctl
	return cp
}

func (f *fixture) appendControl(t *testing.T, owner ed25519.PrivateKey, kind ControlKind, amount int64) cid.Cid {
	return f.append(t, f.controlStep(f.control(t, owner, kind, amount)))
}

func TestControlLineageVerifies(t *testing.T) {
	f, _ := ownedFixture(t)
	lin, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := lin.Head().Checkpoint
	if h.Controls != 3 || h.Stopped {
		t.Fatalf("head counts %d records, stopped=%t; want 3, false", h.Controls, h.Stopped)
	}
	// 1,000,000 less 4 charged tick steps of 100 (seq 0 is free), plus 5,000.
	if want := int64(1_000_000 - 400 + 5_000); h.Budget != want {
		t.Fatalf("head budget %d, want %d", h.Budget, want)
	}
	if st := lin.Entries[3].Checkpoint; !st.Stopped || st.Control.Kind != ControlStop {
		t.Fatalf("seq 3 is not the stop: %+v", st)
	}
}

// TestControlTamper: every way a holder or a stranger might misapply an
// owner's records is refused with ErrControl (or the named sentinel) at the
// culprit, by VerifyLineage and by VerifyNext alike.
func TestControlTamper(t *testing.T) {
	stranger := keyFromLabel("stranger")
	cases := []struct {
		name     string
		sentinel error
		// build extends a fixture cut to its first cut entries and returns the culprit.
		cut   int
		build func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid
	}{
		{"not the owner's signature", ErrControl, 3, func(t *testing.T, f *fixture, _ ed25519.PrivateKey) cid.Cid {
			return f.append(t, f.controlStep(f.control(t, stranger, ControlStop, 0)))
		}},
		{"top-up not signed by the owner", ErrControl, 3, func(t *testing.T, f *fixture, _ ed25519.PrivateKey) cid.Cid {
			return f.append(t, f.controlStep(f.control(t, stranger, ControlTopUp, 1_000_000)))
		}},
		{"replayed record", ErrControl, 4, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			// The stop of seq 3, applied again after a start.
			stop := f.entries[3].Checkpoint.Control
			f.appendControl(t, owner, ControlStart, 0)
			cp := f.controlStep(stop)
			cp.Controls, cp.Stopped = stop.Seq, true
			return f.append(t, cp)
		}},
		{"record out of order", ErrControl, 3, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			ctl := &Control{Kind: ControlStop, Agent: f.did(), Seq: 2, Issued: 1}
			if err := ctl.Sign(owner); err != nil {
				t.Fatal(err)
			}
			return f.append(t, f.controlStep(ctl))
		}},
		{"ticks while stopped", ErrControl, 4, func(t *testing.T, f *fixture, _ ed25519.PrivateKey) cid.Cid {
			return f.appendTickStopped(t)
		}},
		{"top-up larger than the record", ErrControl, 4, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			cp := f.controlStep(f.control(t, owner, ControlTopUp, 5_000))
			cp.Budget++
			return f.append(t, cp)
		}},
		{"budget grows without a top-up", ErrBudgetIncreased, 4, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			cp := f.controlStep(f.control(t, owner, ControlStart, 0))
			cp.Budget += 5_000
			return f.append(t, cp)
		}},
		{"stopped flag dropped without a start", ErrControl, 4, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			cp := f.controlStep(f.control(t, owner, ControlTopUp, 10))
			cp.Stopped = false
			return f.append(t, cp)
		}},
		{"stopped without a record", ErrControl, 3, func(t *testing.T, f *fixture, _ ed25519.PrivateKey) cid.Cid {
			prev := f.entries[2].Checkpoint
			cp := f.next()
			cp.Tick, cp.Budget, cp.Controls, cp.Stopped = prev.Tick+10, prev.Budget-100, 0, true
			return f.append(t, cp)
		}},
		{"start of a running agent", ErrControl, 3, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			return f.append(t, f.controlStep(f.control(t, owner, ControlStart, 0)))
		}},
		{"a tick after the deletion", ErrControl, 5, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			f.appendControl(t, owner, ControlDelete, 0)
			prev := f.entries[len(f.entries)-1].Checkpoint
			cp := f.next()
			cp.Tick, cp.Budget, cp.Epoch, cp.Controls, cp.Stopped = prev.Tick, prev.Budget, prev.Epoch, prev.Controls, true
			cp.State, cp.Calls, cp.Metered = prev.State, 0, 0
			return f.append(t, cp)
		}},
		{"a record after the deletion", ErrControl, 4, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			f.appendControl(t, owner, ControlDelete, 0)
			return f.appendControl(t, owner, ControlStart, 0)
		}},
		{"same tick, other state", ErrOrder, 3, func(t *testing.T, f *fixture, owner ed25519.PrivateKey) cid.Cid {
			cp := f.controlStep(f.control(t, owner, ControlStop, 0))
			cp.State = contentCID([]byte("other state"))
			return f.append(t, cp)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, owner := ownedFixture(t)
			f.truncate(tc.cut)
			culprit := tc.build(t, f, owner)
			_, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
			var ve *VerifyError
			if !errors.Is(err, tc.sentinel) || !errors.As(err, &ve) || !ve.CID.Equals(culprit) {
				t.Fatalf("VerifyLineage: %v; want %v at %s", err, tc.sentinel, culprit)
			}
			// VerifyNext from the verified prefix refuses the same step.
			l0, perr := VerifyLineage(f.entries[len(f.entries)-2].CID, f.store, VerifyOptions{})
			if perr != nil {
				t.Fatal(perr)
			}
			if _, err := VerifyNext(l0.Base(), f.head(), f.entries[len(f.entries)-1].Checkpoint, false, f.store); !errors.Is(err, tc.sentinel) {
				t.Fatalf("VerifyNext: %v; want %v", err, tc.sentinel)
			}
		})
	}
}

// appendTickStopped appends a tick after a stop (which a holder must not make).
func (f *fixture) appendTickStopped(t *testing.T) cid.Cid {
	prev := f.entries[len(f.entries)-1].Checkpoint
	cp := f.next()
	cp.Tick, cp.Budget, cp.Epoch, cp.Controls, cp.Stopped = prev.Tick+10, prev.Budget-100, prev.Epoch, prev.Controls, true
	return f.append(t, cp)
}

func TestControlWithoutOwner(t *testing.T) {
	f := newFixture(t, 3)
	anyone := keyFromLabel("anyone")
	ctl := &Control{Kind: ControlStop, Agent: f.did(), Seq: 1, Issued: 1}
	if err := ctl.Sign(anyone); err != nil {
		t.Fatal(err)
	}
	err := CheckControl(f.genesis, f.entries[2].Checkpoint, ctl)
	if !errors.Is(err, ErrControl) || !strings.Contains(err.Error(), "no owner") {
		t.Fatalf("CheckControl on an ownerless agent: %v", err)
	}
	f.append(t, f.controlStep(ctl))
	if _, err := VerifyLineage(f.head(), f.store, VerifyOptions{}); !errors.Is(err, ErrControl) {
		t.Fatalf("VerifyLineage: %v, want ErrControl", err)
	}
}

func TestControlEncoding(t *testing.T) {
	owner := keyFromLabel("owner")
	ctl := &Control{Kind: ControlTopUp, Agent: DID(pubOf(keyFromLabel("another agent"))), Seq: 7, Amount: 42, Issued: 3}
	if err := ctl.Sign(owner); err != nil {
		t.Fatal(err)
	}
	data, err := ctl.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeControl(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(DID(pubOf(owner))); err != nil || got.Amount != 42 || got.Seq != 7 || got.Kind != ControlTopUp {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if err := got.Verify(DID(pubOf(keyFromLabel("else")))); !errors.Is(err, ErrControl) {
		t.Fatalf("verify against another key: %v", err)
	}
	bad := []struct {
		name string
		ctl  Control
		want string
	}{
		{"unknown kind", Control{Kind: "pause", Agent: ctl.Agent, Seq: 1}, "unknown"},
		{"seq 0", Control{Kind: ControlStop, Agent: ctl.Agent}, "seq 0"},
		{"top-up of nothing", Control{Kind: ControlTopUp, Agent: ctl.Agent, Seq: 1}, "amount 0"},
		{"stop with an amount", Control{Kind: ControlStop, Agent: ctl.Agent, Seq: 1, Amount: 5}, "no amount"},
		{"not a DID", Control{Kind: ControlStop, Agent: "bob", Seq: 1}, "agent"},
	}
	for _, b := range bad {
		if err := b.ctl.Sign(owner); !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), b.want) {
			t.Errorf("%s: %v, want ErrMalformed mentioning %q", b.name, err, b.want)
		}
	}
	for _, in := range [][]byte{nil, []byte("{}"), data[:len(data)-1]} {
		if _, err := DecodeControl(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("DecodeControl(%q): %v, want ErrMalformed", in, err)
		}
	}
	// A checkpoint whose record names another agent does not encode.
	f := newFixture(t, 2)
	cp := f.controlStep(ctl)
	if err := cp.Sign(f.agentKey, f.holderFor(t, cp)); !errors.Is(err, ErrMalformed) {
		t.Fatalf("checkpoint carrying another agent's record: %v", err)
	}
}

// upgradedFixture: ownedFixture, then an upgrade (seq 8) to a new module
// and a manifest whose tick timeout is 50 ms, then ticks (seq 9, 10) that
// bill 10 calls of at most 5 ms each.
func upgradedFixture(t *testing.T) (*fixture, ed25519.PrivateKey, *Control) {
	f, owner := ownedFixture(t)
	newMan := []byte(`{"resource_limits":{"tick_timeout_ms":50}}`)
	manCID := contentCID(newMan)
	f.store[manCID] = newMan
	ctl := &Control{Kind: ControlUpgrade, Agent: f.did(), Seq: 4, Module: contentCID([]byte("module v2")), Manifest: manCID, Issued: 1}
	if err := ctl.Sign(owner); err != nil {
		t.Fatal(err)
	}
	cp := f.controlStep(ctl)
	cp.Module, cp.Manifest, cp.State = ctl.Module, ctl.Manifest, contentCID([]byte("state through v2's resume"))
	f.append(t, cp)
	for range 2 {
		f.appendUpgradedTick(t, 5e7)
	}
	return f, owner, ctl
}

// appendUpgradedTick appends 10 ticks billed metered ns in all, keeping
// the module and manifest in force.
func (f *fixture) appendUpgradedTick(t *testing.T, metered uint64) cid.Cid {
	prev := f.entries[len(f.entries)-1].Checkpoint
	cp := f.next()
	cp.Tick, cp.Epoch, cp.Controls, cp.Module, cp.Manifest = prev.Tick+10, prev.Epoch, prev.Controls, prev.Module, prev.Manifest
	cp.Calls, cp.Metered = 10, metered
	cp.Budget = BudgetAfter(prev.Budget, metered, cp.Price)
	return f.append(t, cp)
}

func TestUpgradeLineage(t *testing.T) {
	f, _, ctl := upgradedFixture(t)
	lin, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if h := lin.Head().Checkpoint; !h.Module.Equals(ctl.Module) || lin.Manifest.ResourceLimits.TickTimeoutMs != 50 {
		t.Fatalf("head module %s, manifest in force %+v; want the upgrade's", h.Module, lin.Manifest.ResourceLimits)
	}
	// Stepping from before the upgrade reads the new manifest through the getter.
	l0, err := VerifyLineage(f.entries[7].CID, f.store, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	base := l0.Base()
	for _, e := range f.entries[8:] {
		if base, err = VerifyNext(base, e.CID, e.Checkpoint, false, f.store); err != nil {
			t.Fatalf("VerifyNext seq %d: %v", e.Checkpoint.Seq, err)
		}
	}
	if base.Manifest.ResourceLimits.TickTimeoutMs != 50 {
		t.Fatalf("VerifyNext's manifest in force: %+v", base.Manifest.ResourceLimits)
	}
	if _, err := VerifyNext(l0.Base(), f.entries[8].CID, f.entries[8].Checkpoint, false, nil); !errors.Is(err, ErrMissingBlock) {
		t.Fatalf("VerifyNext of an upgrade without a getter: %v", err)
	}
}

func TestUpgradeTamper(t *testing.T) {
	stranger := keyFromLabel("stranger")
	cases := []struct {
		name     string
		sentinel error
		build    func(t *testing.T, f *fixture, owner ed25519.PrivateKey, ctl *Control) cid.Cid
	}{
		{"upgrade not signed by the owner", ErrControl, func(t *testing.T, f *fixture, _ ed25519.PrivateKey, ctl *Control) cid.Cid {
			f.truncate(8)
			forged := *ctl
			if err := forged.Sign(stranger); err != nil {
				t.Fatal(err)
			}
			cp := f.controlStep(&forged)
			cp.Module, cp.Manifest = forged.Module, forged.Manifest
			return f.append(t, cp)
		}},
		{"upgrade checkpoint runs another module", ErrModuleMismatch, func(t *testing.T, f *fixture, owner ed25519.PrivateKey, ctl *Control) cid.Cid {
			f.truncate(8)
			cp := f.controlStep(ctl)
			cp.Module, cp.Manifest = contentCID([]byte("module v3")), ctl.Manifest
			return f.append(t, cp)
		}},
		{"back to the genesis module after the upgrade", ErrModuleMismatch, func(t *testing.T, f *fixture, _ ed25519.PrivateKey, _ *Control) cid.Cid {
			f.truncate(10)
			prev := f.entries[9].Checkpoint
			cp := f.next()
			cp.Tick, cp.Epoch, cp.Controls, cp.Calls, cp.Metered = prev.Tick+10, prev.Epoch, prev.Controls, 10, 5e7
			cp.Budget = BudgetAfter(prev.Budget, 5e7, cp.Price)
			return f.append(t, cp) // next() names the genesis module and manifest
		}},
		{"metering past the new manifest's tick timeout", ErrMetering, func(t *testing.T, f *fixture, _ ed25519.PrivateKey, _ *Control) cid.Cid {
			f.truncate(10)
			// 10 calls of 60 ms: fine by the genesis manifest (1 s), not by v2's 50 ms.
			return f.appendUpgradedTick(t, 6e8)
		}},
		{"upgrade to a manifest nobody has", ErrMissingBlock, func(t *testing.T, f *fixture, owner ed25519.PrivateKey, ctl *Control) cid.Cid {
			f.truncate(8)
			lost := *ctl
			lost.Manifest = contentCID([]byte("lost manifest"))
			if err := lost.Sign(owner); err != nil {
				t.Fatal(err)
			}
			cp := f.controlStep(&lost)
			cp.Module, cp.Manifest = lost.Module, lost.Manifest
			return f.append(t, cp)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, owner, ctl := upgradedFixture(t)
			culprit := tc.build(t, f, owner, ctl)
			_, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
			var ve *VerifyError
			if !errors.Is(err, tc.sentinel) || !errors.As(err, &ve) || !ve.CID.Equals(culprit) {
				t.Fatalf("VerifyLineage: %v; want %v at %s", err, tc.sentinel, culprit)
			}
			l0, perr := VerifyLineage(f.entries[len(f.entries)-2].CID, f.store, VerifyOptions{})
			if perr != nil {
				t.Fatal(perr)
			}
			if _, err := VerifyNext(l0.Base(), f.head(), f.entries[len(f.entries)-1].Checkpoint, false, f.store); !errors.Is(err, tc.sentinel) {
				t.Fatalf("VerifyNext: %v; want %v", err, tc.sentinel)
			}
		})
	}
}
