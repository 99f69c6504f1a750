package agents

import (
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strings"

	"github.com/ipfs/go-cid"
)

// BlockGetter returns the bytes of a block. VerifyLineage re-hashes every
// block against its CID, so the getter need not be trusted. A getter backed
// by the network should capture its own context; its errors are kept in the
// VerifyError chain (errors.Is sees context.Canceled, for example).
type BlockGetter interface {
	Get(c cid.Cid) ([]byte, error)
}

// VerifyOptions tune VerifyLineage.
type VerifyOptions struct {
	// ExpectDID, when set, is the agent the caller asked about; a lineage of
	// any other agent fails with ErrIdentityChanged.
	ExpectDID string
	// CheckBlock, when set, is called once for the module and manifest CIDs
	// and once per checkpoint for its state CID, after every other rule has
	// passed, to check that the content is present and intact. Its error is
	// reported as ErrMissingBlock (and kept in the chain).
	CheckBlock func(c cid.Cid) error
	// Trusted, when set, names checkpoints whose whole history the caller
	// verified before (a node's cache of lineages it checked). The walk
	// stops at the first trusted checkpoint it meets (the head included):
	// that checkpoint is read and must decode, but neither its signatures
	// nor anything below it is checked again, and the rules apply from it
	// upward. The Lineage then starts at it (Lineage.Partial). A caller
	// that reports or audits the whole history must not set it.
	Trusted func(c cid.Cid) bool
	// SignaturesChecked, when set, names checkpoints whose signatures the
	// caller has just checked (a custody member verifies each checkpoint
	// it fetches before it fetches the state): a CID fixes the bytes, so
	// they are not checked again. Every other rule still applies to them.
	SignaturesChecked func(c cid.Cid) bool
}

// Entry is one checkpoint of a lineage.
type Entry struct {
	CID        cid.Cid
	Checkpoint *Checkpoint
}

// Lineage is an agent's verified history.
type Lineage struct {
	DID        string
	GenesisCID cid.Cid
	Genesis    *Genesis
	Manifest   *Manifest // the manifest in force at the head (the genesis's until an upgrade)
	// Entries is seq 0 .. head (Entries[i].Checkpoint.Seq == i), or, when
	// Partial, from a trusted checkpoint (VerifyOptions.Trusted) to head.
	Entries []Entry
	Partial bool
}

// Head returns the last entry.
func (l *Lineage) Head() Entry { return l.Entries[len(l.Entries)-1] }

// VerifyLineage walks from head back to seq 0 and its genesis and checks
// the whole history. Per block: it is fetched, re-hashed against its CID,
// decoded canonically, and both signatures verify. Along the chain, from
// seq 0 upward:
//   - every checkpoint names the genesis's agent DID (and ExpectDID if set)
//     and the same genesis CID;
//   - seq 0 has no prev and links the genesis; seq rises by exactly 1
//     (checked during the walk, which bounds it);
//   - tick strictly increases (seq 0 may have tick 0);
//   - epoch never decreases;
//   - budget never increases (seq 0 ≤ the genesis budget), and each step is
//     exactly what the holder's signed metering says: Budget equals
//     BudgetAfter(the predecessor's (or genesis's) budget, Metered, Price);
//     Calls covers at least the ticks made since the predecessor; Metered
//     is at most Calls × the manifest's tick timeout; Price is at most the
//     manifest's max_price_per_second when one is set (ErrMetering);
//   - module and manifest CIDs equal the genesis's.
//
// Time fields are not checked: hosts' clocks differ.
//
// The walk is iterative and linear in the number of checkpoints. Failures
// are *VerifyError values naming the culprit's CID and seq and wrapping a
// sentinel: ErrMissingBlock (getter error or CheckBlock failure), ErrMalformed
// (undecodable, non-canonical, or hash mismatch), ErrBadSignature,
// ErrBrokenLink, ErrNotGenesis, ErrOrder, ErrBudgetIncreased, ErrMetering,
// ErrModuleMismatch, ErrManifestMismatch, ErrIdentityChanged. Block-level
// failures and seq breaks are reported as the walk meets them (head first);
// other rule failures name the earliest checkpoint in history that breaks a
// rule. Bad arguments
// return a plain error wrapping ErrMalformed or ErrBadDID.
//
// A single chain cannot show a fork; see DetectForks.
func VerifyLineage(head cid.Cid, get BlockGetter, opts VerifyOptions) (*Lineage, error) {
	if get == nil {
		return nil, errors.New("agents: VerifyLineage: nil BlockGetter")
	}
	if err := checkLink("head", head, true); err != nil {
		return nil, fmt.Errorf("agents: VerifyLineage: %w", err)
	}
	if opts.ExpectDID != "" {
		if _, err := ParseDID(opts.ExpectDID); err != nil {
			return nil, fmt.Errorf("agents: VerifyLineage: expected DID: %w", err)
		}
	}

	// Walk head → seq 0, block by block.
	var rev []Entry
	partial := false
	cur, seq, seqKnown := head, uint64(0), false
	for {
		data, err := get.Get(cur)
		if err != nil {
			ve := &VerifyError{CID: cur, Seq: seq, SeqKnown: seqKnown, Err: ErrMissingBlock, cause: err,
				Reason: fmt.Sprintf("block not available: %v", err)}
			return nil, ve
		}
		if err := checkBlockCID(cur, data); err != nil {
			return nil, verifyErr(cur, seq, seqKnown, ErrMalformed, err)
		}
		cp, err := DecodeCheckpoint(data)
		if err != nil {
			if k, kerr := Kind(data); kerr == nil && k != "checkpoint" {
				if seqKnown {
					return nil, &VerifyError{CID: rev[len(rev)-1].CID, Seq: seq + 1, SeqKnown: true, Err: ErrBrokenLink,
						Reason: fmt.Sprintf("prev links %s, which is a %s, not a checkpoint", cur, k)}
				}
				return nil, &VerifyError{CID: cur, Err: ErrMalformed, Reason: fmt.Sprintf("is a %s, not a checkpoint", k)}
			}
			return nil, verifyErr(cur, seq, seqKnown, ErrMalformed, err)
		}
		if !seqKnown && opts.ExpectDID != "" && cp.Agent != opts.ExpectDID {
			return nil, &VerifyError{CID: cur, Seq: cp.Seq, SeqKnown: true, Err: ErrIdentityChanged,
				Reason: fmt.Sprintf("is a checkpoint of %s, not of the expected %s", cp.Agent, opts.ExpectDID)}
		}
		if seqKnown && cp.Seq != seq {
			// Checked during the walk, so a chain is never longer than the
			// head's seq + 1, whatever the getter serves.
			child := rev[len(rev)-1]
			return nil, &VerifyError{CID: child.CID, Seq: child.Checkpoint.Seq, SeqKnown: true, Err: ErrOrder,
				Reason: fmt.Sprintf("seq %d follows %s with seq %d (a gap or a repeat; want %d)", child.Checkpoint.Seq, cur, cp.Seq, seq)}
		}
		if opts.Trusted != nil && opts.Trusted(cur) {
			rev = append(rev, Entry{CID: cur, Checkpoint: cp})
			partial = true
			break // verified before, with everything below it
		}
		if opts.SignaturesChecked == nil || !opts.SignaturesChecked(cur) {
			if err := cp.Verify(); err != nil {
				return nil, verifyErr(cur, cp.Seq, true, ErrBadSignature, err)
			}
		}
		rev = append(rev, Entry{CID: cur, Checkpoint: cp})
		if !cp.Prev.Defined() {
			break // seq 0 (Verify guarantees it)
		}
		cur, seq, seqKnown = cp.Prev, cp.Seq-1, true
	}
	entries := make([]Entry, len(rev))
	for i, e := range rev {
		entries[len(rev)-1-i] = e
	}

	// The genesis, as seq 0 names it.
	first := entries[0]
	gc := first.Checkpoint.Genesis
	gdata, err := get.Get(gc)
	if err != nil {
		return nil, &VerifyError{CID: gc, Genesis: true, Err: ErrMissingBlock, cause: err,
			Reason: fmt.Sprintf("block not available (linked from checkpoint %s): %v", first.CID, err)}
	}
	if err := checkBlockCID(gc, gdata); err != nil {
		ve := verifyErr(gc, 0, false, ErrMalformed, err)
		ve.Genesis = true
		return nil, ve
	}
	if k, kerr := Kind(gdata); kerr != nil || k != "genesis" {
		what := "not a genesis"
		if kerr == nil {
			what = "a " + k + ", not a genesis"
		}
		return nil, &VerifyError{CID: first.CID, Seq: 0, SeqKnown: true, Err: ErrNotGenesis,
			Reason: fmt.Sprintf("genesis link %s points to %s", gc, what)}
	}
	g, err := DecodeGenesis(gdata)
	if err == nil && !partial {
		// A trusted base was verified with its genesis (the one it names).
		err = g.Verify()
	}
	if err != nil {
		ve := verifyErr(gc, 0, false, ErrMalformed, err)
		ve.Genesis = true
		return nil, ve
	}

	// The manifest in force bounds the metering: each call's time by the
	// tick timeout, the price by max_price_per_second. It is the genesis's
	// until an owner's upgrade record names another.
	mans := map[cid.Cid]*Manifest{}
	manifestAt := func(c cid.Cid, culprit Entry) (*Manifest, error) {
		if m, ok := mans[c]; ok {
			return m, nil
		}
		m, err := loadManifest(c, get)
		if err != nil {
			if culprit.Checkpoint == nil {
				err.CID, err.Genesis = gc, true
			} else {
				err.CID, err.Seq, err.SeqKnown = culprit.CID, culprit.Checkpoint.Seq, true
			}
			return nil, err
		}
		mans[c] = m
		return m, nil
	}
	var man *Manifest
	if partial {
		if man, err = manifestAt(entries[0].Checkpoint.Manifest, entries[0]); err != nil {
			return nil, err
		}
	} else if man, err = manifestAt(g.Manifest, Entry{}); err != nil {
		return nil, err
	}

	// The rules, in history order, so the first culprit is reported.
	for i, e := range entries {
		if i == 0 && partial {
			continue // trusted: the base the rules above it start from
		}
		var prev *Checkpoint
		if i > 0 {
			prev = entries[i-1].Checkpoint
		}
		if _, want := upgradedTo(g, prev, e.Checkpoint.Control); !want.Equals(man.cid) {
			if man, err = manifestAt(want, e); err != nil {
				return nil, err
			}
		}
		if err := checkStep(g, gc, man, prev, e); err != nil {
			return nil, err
		}
	}

	if opts.CheckBlock != nil {
		for _, f := range []struct {
			name string
			c    cid.Cid
		}{{"module", g.Module}, {"manifest", g.Manifest}} {
			if err := opts.CheckBlock(f.c); err != nil {
				return nil, &VerifyError{CID: gc, Genesis: true, Err: ErrMissingBlock, cause: err,
					Reason: fmt.Sprintf("%s %s: %v", f.name, f.c, err)}
			}
		}
		for _, e := range entries {
			if ctl := e.Checkpoint.Control; ctl != nil && ctl.Kind == ControlUpgrade {
				for _, c := range []cid.Cid{ctl.Module, ctl.Manifest} {
					if err := opts.CheckBlock(c); err != nil {
						return nil, &VerifyError{CID: e.CID, Seq: e.Checkpoint.Seq, SeqKnown: true, Err: ErrMissingBlock, cause: err,
							Reason: fmt.Sprintf("upgrade block %s: %v", c, err)}
					}
				}
			}
			for _, f := range []struct {
				name string
				c    cid.Cid
			}{{"state", e.Checkpoint.State}, {"journal", e.Checkpoint.Journal}, {"receipts", e.Checkpoint.Receipts}} {
				if !f.c.Defined() {
					continue
				}
				if err := opts.CheckBlock(f.c); err != nil {
					return nil, &VerifyError{CID: e.CID, Seq: e.Checkpoint.Seq, SeqKnown: true, Err: ErrMissingBlock, cause: err,
						Reason: fmt.Sprintf("%s %s: %v", f.name, f.c, err)}
				}
			}
		}
	}
	return &Lineage{DID: g.Agent, GenesisCID: gc, Genesis: g, Manifest: man, Entries: entries, Partial: partial}, nil
}

// CompletedTicks is the number of ticks cp's state has finished: a partial
// checkpoint is inside its tick.
func CompletedTicks(cp *Checkpoint) uint64 {
	if cp.Partial {
		return cp.Tick - 1
	}
	return cp.Tick
}

// checkStep applies the rules of one step of a lineage to e, whose
// predecessor is prev (nil for seq 0, which steps from the genesis g, CID
// gc). Its signatures, its CID and the seq/prev link are checked by the
// caller.
func checkStep(g *Genesis, gc cid.Cid, man *Manifest, prev *Checkpoint, e Entry) error {
	cp := e.Checkpoint
	fail := func(sentinel error, format string, args ...any) error {
		return &VerifyError{CID: e.CID, Seq: cp.Seq, SeqKnown: true, Err: sentinel, Reason: fmt.Sprintf(format, args...)}
	}
	if cp.Agent != g.Agent {
		return fail(ErrIdentityChanged, "agent is %s, but the genesis is %s's", cp.Agent, g.Agent)
	}
	if !cp.Genesis.Equals(gc) {
		return fail(ErrBrokenLink, "links genesis %s, but its history starts at genesis %s", cp.Genesis, gc)
	}
	budgetBefore, before, tickBefore := g.Budget, "the genesis's", uint64(0)
	ctl := cp.Control
	if prev != nil {
		if prev.Deleted() {
			return fail(ErrControl, "follows the checkpoint that deleted the agent")
		}
		switch {
		case prev.Partial:
			// The holder journaled an effect's intent inside this tick: what
			// follows finishes the same tick, journaled.
			if !cp.Journal.Defined() || cp.Tick != prev.Tick {
				return fail(ErrOrder, "follows a partial tick %d without finishing it (tick %d, journaled %t)", prev.Tick, cp.Tick, cp.Journal.Defined())
			}
		case cp.Journal.Defined():
			if cp.Tick != prev.Tick+1 {
				return fail(ErrOrder, "journals tick %d, but its predecessor is at tick %d (a journaled step is one tick)", cp.Tick, prev.Tick)
			}
		case !prev.State.Defined():
			// A journaled step left its state to replay; a checkpoint without
			// a journal after it only writes that state down (billing any
			// failed calls since).
			if ctl != nil || cp.Tick != prev.Tick || cp.Paid != 0 {
				return fail(ErrOrder, "after a journaled step without state, only the same tick's state may follow (tick %d, control %t, paid %d µc)", cp.Tick, ctl != nil, cp.Paid)
			}
		case ctl != nil && cp.Tick == prev.Tick:
			// An owner's record applied between ticks: the state must be
			// the predecessor's (an upgrade's passed through the new module).
			if !cp.State.Equals(prev.State) && ctl.Kind != ControlUpgrade {
				return fail(ErrOrder, "tick %d repeats its predecessor's with a different state", cp.Tick)
			}
		case cp.Tick <= prev.Tick:
			return fail(ErrOrder, "tick %d does not advance past its predecessor's tick %d", cp.Tick, prev.Tick)
		}
		if cp.Epoch < prev.Epoch {
			return fail(ErrOrder, "epoch %d is lower than its predecessor's epoch %d", cp.Epoch, prev.Epoch)
		}
		if prev.Stopped && (cp.Tick != prev.Tick || cp.Calls != 0) {
			return fail(ErrControl, "ticked (tick %d, %d calls) after its owner stopped it at tick %d", cp.Tick, cp.Calls, prev.Tick)
		}
		if ctl != nil {
			if err := CheckControl(g, prev, ctl); err != nil {
				return fail(ErrControl, "%s", strings.TrimPrefix(err.Error(), ErrControl.Error()+": "))
			}
		}
		wantN, wantStopped, _ := ControlledNext(prev, 0, ctl)
		if cp.Controls != wantN || cp.Stopped != wantStopped {
			return fail(ErrControl, "counts %d control record(s) and stopped=%t, but its predecessor and its own record make %d and %t",
				cp.Controls, cp.Stopped, wantN, wantStopped)
		}
		budgetBefore, before, tickBefore = prev.Budget, "its predecessor's", CompletedTicks(prev)
	}
	if cp.Partial && (cp.Calls != 0 || cp.Metered != 0 || cp.Paid != 0) {
		return fail(ErrMetering, "a partial tick bills nothing (%d calls, %d ns, %d µc paid): its end does", cp.Calls, cp.Metered, cp.Paid)
	}
	if ctl != nil && cp.Paid != 0 {
		return fail(ErrMetering, "an owner's record pays %d µc", cp.Paid)
	}
	afterMetering := max(BudgetAfter(budgetBefore, cp.Metered, cp.Price)-cp.Paid, 0)
	if ctl != nil && ctl.Kind == ControlTopUp {
		// CheckControl refused a top-up that overflows the predecessor's budget.
		if want := afterMetering + ctl.Amount; cp.Budget != want {
			return fail(ErrControl, "budget %d µc, but %s %d µc less %d µc metered plus the top-up of %d µc makes %d µc",
				cp.Budget, before, budgetBefore, TickCost(cp.Metered, cp.Price), ctl.Amount, want)
		}
	} else {
		if cp.Budget > budgetBefore {
			return fail(ErrBudgetIncreased, "budget %d µc is higher than %s %d µc", cp.Budget, before, budgetBefore)
		}
		if cp.Budget != afterMetering {
			return fail(ErrMetering, "budget %d µc, but %s %d µc less %d ns metered at %d µc/s (%d µc) and %d µc paid leaves %d µc",
				cp.Budget, before, budgetBefore, cp.Metered, cp.Price, TickCost(cp.Metered, cp.Price), cp.Paid, afterMetering)
		}
	}
	if ticks := CompletedTicks(cp) - tickBefore; cp.Calls < ticks {
		return fail(ErrMetering, "%d ticks since its predecessor but only %d billed agent_tick calls", ticks, cp.Calls)
	}
	timeoutNs := man.ResourceLimits.TickTimeoutMs * 1e6 // ≤ MaxTickTimeoutMs: no overflow
	if hi, lo := bits.Mul64(cp.Calls, timeoutNs); hi == 0 && cp.Metered > lo {
		return fail(ErrMetering, "metered %d ns over %d calls: more than the manifest's %d ms tick timeout per call",
			cp.Metered, cp.Calls, man.ResourceLimits.TickTimeoutMs)
	}
	if limit := man.MigrationPolicy.MaxPricePerSecond; limit > 0 && cp.Price > limit {
		return fail(ErrMetering, "price %d µc/s is above the manifest's max_price_per_second %d", cp.Price, limit)
	}
	wantMod, wantMan := current(g, prev, ctl)
	if !cp.Module.Equals(wantMod) {
		return fail(ErrModuleMismatch, "module %s differs from the %s %s", cp.Module, inForce(g, wantMod, g.Module, "module"), wantMod)
	}
	if !cp.Manifest.Equals(wantMan) {
		return fail(ErrManifestMismatch, "manifest %s differs from the %s %s", cp.Manifest, inForce(g, wantMan, g.Manifest, "manifest"), wantMan)
	}
	return nil
}

// Base is a verified checkpoint with what checking its successor needs:
// the genesis it descends from and that genesis's manifest. A node keeps
// the Base of each head it verified, so the next checkpoint of a running
// agent is checked in one step (VerifyNext) instead of a walk.
type Base struct {
	Entry      Entry
	GenesisCID cid.Cid
	Genesis    *Genesis
	Manifest   *Manifest
}

// Base returns the head of l with its genesis and manifest.
func (l *Lineage) Base() Base {
	return Base{Entry: l.Head(), GenesisCID: l.GenesisCID, Genesis: l.Genesis, Manifest: l.Manifest}
}

// VerifyNext checks cp, the checkpoint with CID c, as the successor of
// base by the rules VerifyLineage applies to every step: it links base
// with seq one above it, and the step's identity, genesis, tick, epoch,
// budget, metering, module and manifest rules hold. Its signatures are
// verified unless sigChecked (the caller just verified them). The caller
// vouches that cp was decoded from the bytes of c (a store or fetch that
// re-hashes). It returns the Base of cp; failures are *VerifyError as in
// VerifyLineage.
func VerifyNext(base Base, c cid.Cid, cp *Checkpoint, sigChecked bool, get BlockGetter) (Base, error) {
	if cp == nil || base.Entry.Checkpoint == nil || base.Genesis == nil || base.Manifest == nil {
		return Base{}, fmt.Errorf("%w: VerifyNext: incomplete base or checkpoint", ErrMalformed)
	}
	prev := base.Entry.Checkpoint
	if !cp.Prev.Equals(base.Entry.CID) {
		return Base{}, &VerifyError{CID: c, Seq: cp.Seq, SeqKnown: true, Err: ErrBrokenLink,
			Reason: fmt.Sprintf("prev is %s, not %s", cp.Prev, base.Entry.CID)}
	}
	if cp.Seq != prev.Seq+1 {
		return Base{}, &VerifyError{CID: c, Seq: cp.Seq, SeqKnown: true, Err: ErrOrder,
			Reason: fmt.Sprintf("seq %d follows %s with seq %d (a gap or a repeat; want %d)", cp.Seq, base.Entry.CID, prev.Seq, prev.Seq+1)}
	}
	if !sigChecked {
		if err := cp.Verify(); err != nil {
			return Base{}, verifyErr(c, cp.Seq, true, ErrBadSignature, err)
		}
	}
	e := Entry{CID: c, Checkpoint: cp}
	man := base.Manifest
	if _, want := upgradedTo(base.Genesis, prev, cp.Control); !want.Equals(man.cid) {
		if get == nil {
			return Base{}, fmt.Errorf("%w: VerifyNext: checkpoint %s upgrades the agent to manifest %s and no block getter was given", ErrMissingBlock, c, want)
		}
		m, err := loadManifest(want, get)
		if err != nil {
			err.CID, err.Seq, err.SeqKnown = c, cp.Seq, true
			return Base{}, err
		}
		man = m
	}
	if err := checkStep(base.Genesis, base.GenesisCID, man, prev, e); err != nil {
		return Base{}, err
	}
	return Base{Entry: e, GenesisCID: base.GenesisCID, Genesis: base.Genesis, Manifest: man}, nil
}

// Fork is proof that an agent's history split: two distinct checkpoints,
// A and B (A's CID bytes sort first), with the same predecessor. Prev is
// cid.Undef when both are seq-0 checkpoints of the same Genesis.
type Fork struct {
	Genesis cid.Cid
	Prev    cid.Cid
	A, B    cid.Cid
}

// Error names both checkpoints and what they share.
func (f Fork) Error() string {
	if !f.Prev.Defined() {
		return fmt.Sprintf("fork: checkpoints %s and %s are both seq 0 of genesis %s", f.A, f.B, f.Genesis)
	}
	return fmt.Sprintf("fork: checkpoints %s and %s both follow %s", f.A, f.B, f.Prev)
}

func (f Fork) String() string { return f.Error() }

// Unwrap makes errors.Is(f, ErrFork) true.
func (f Fork) Unwrap() error { return ErrFork }

// DetectForks finds every fork among entries (any set, e.g. all checkpoints
// a node or a CAR file holds, in any order; duplicates and entries with a
// nil Checkpoint are ignored). It does not check signatures: pass verified
// checkpoints if the result is to be proof.
//
// Two distinct checkpoints with the same predecessor are a fork unless one
// branch was superseded by the custody protocol: a successor B at epoch
// e(B) means the holder of e(B) resumed from the shared predecessor, which
// it may do only if nothing after it was committed; so a sibling branch
// whose checkpoints all carry epochs below e(B) is an abandoned,
// uncommitted tail (a holder that lost its lease mid-checkpoint), not a
// fork. Siblings at the same epoch, or a sibling branch that continues at
// e(B) or later, are a fork: two holders ran concurrently. Each fork pairs
// the two checkpoints with A's CID bytes first; the result is sorted by
// (genesis, prev, A, B) bytes, so it is deterministic.
func DetectForks(entries []Entry) []Fork {
	type group struct {
		genesis, prev cid.Cid
		kids          map[string]Entry
	}
	groups := map[string]*group{}
	children := map[string][]Entry{} // prev → successors
	seen := map[string]bool{}
	for _, e := range entries {
		if e.Checkpoint == nil || !e.CID.Defined() || seen[e.CID.KeyString()] {
			continue
		}
		seen[e.CID.KeyString()] = true
		cp := e.Checkpoint
		key := cp.Genesis.KeyString() + "\x00" + cp.Prev.KeyString()
		gr := groups[key]
		if gr == nil {
			gr = &group{genesis: cp.Genesis, prev: cp.Prev, kids: map[string]Entry{}}
			groups[key] = gr
		}
		gr.kids[e.CID.KeyString()] = e
		if cp.Prev.Defined() {
			children[cp.Prev.KeyString()] = append(children[cp.Prev.KeyString()], e)
		}
	}
	// maxEpoch of the branch rooted at a checkpoint, iteratively (lineages
	// are long; no recursion).
	memo := map[string]uint64{}
	maxEpoch := func(root cid.Cid, rootCP *Checkpoint) uint64 {
		best := rootCP.Epoch
		stack := []string{root.KeyString()}
		visited := map[string]bool{}
		for len(stack) > 0 {
			k := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			if visited[k] {
				continue
			}
			visited[k] = true
			if v, ok := memo[k]; ok {
				best = max(best, v)
				continue
			}
			for _, kid := range children[k] {
				best = max(best, kid.Checkpoint.Epoch)
				stack = append(stack, kid.CID.KeyString())
			}
		}
		memo[root.KeyString()] = best
		return best
	}
	superseded := func(a, b Entry) bool { // a's branch ended before b's epoch began
		return a.Checkpoint.Epoch < b.Checkpoint.Epoch && maxEpoch(a.CID, a.Checkpoint) < b.Checkpoint.Epoch
	}
	var forks []Fork
	for _, gr := range groups {
		if len(gr.kids) < 2 {
			continue
		}
		kids := make([]Entry, 0, len(gr.kids))
		for _, e := range gr.kids {
			kids = append(kids, e)
		}
		sort.Slice(kids, func(i, j int) bool { return bytes.Compare(kids[i].CID.Bytes(), kids[j].CID.Bytes()) < 0 })
		for i := range kids {
			for j := i + 1; j < len(kids); j++ {
				if !superseded(kids[i], kids[j]) && !superseded(kids[j], kids[i]) {
					forks = append(forks, Fork{Genesis: gr.genesis, Prev: gr.prev, A: kids[i].CID, B: kids[j].CID})
				}
			}
		}
	}
	sort.Slice(forks, func(i, j int) bool {
		a, b := forks[i], forks[j]
		for _, pair := range [][2]cid.Cid{{a.Genesis, b.Genesis}, {a.Prev, b.Prev}, {a.A, b.A}, {a.B, b.B}} {
			if c := bytes.Compare(pair[0].Bytes(), pair[1].Bytes()); c != 0 {
				return c < 0
			}
		}
		return false
	})
	return forks
}

// loadManifest fetches, re-hashes and parses the manifest block c. The
// caller fills in the culprit of the *VerifyError.
func loadManifest(c cid.Cid, get BlockGetter) (*Manifest, *VerifyError) {
	data, err := get.Get(c)
	if err != nil {
		return nil, &VerifyError{Err: ErrMissingBlock, cause: err, Reason: fmt.Sprintf("manifest %s not available: %v", c, err)}
	}
	if sum, err := c.Prefix().Sum(data); err != nil || !sum.Equals(c) {
		return nil, &VerifyError{Err: ErrMalformed, Reason: fmt.Sprintf("manifest bytes do not hash to %s (corrupt or substituted block)", c)}
	}
	man, err := ParseManifest(data)
	if err != nil {
		return nil, &VerifyError{Err: ErrMalformed, cause: err, Reason: fmt.Sprintf("manifest %s: %v", c, err)}
	}
	man.cid = c
	return man, nil
}

// upgradedTo is current, trusting an upgrade record only when the owner
// signed it (the step's rules then refuse a forged one by name, instead of
// failing to find the manifest it names).
func upgradedTo(g *Genesis, prev *Checkpoint, ctl *Control) (module, manifest cid.Cid) {
	if ctl != nil && ctl.Kind == ControlUpgrade && (g.Owner == "" || ctl.Verify(g.Owner) != nil) {
		ctl = nil
	}
	return current(g, prev, ctl)
}

// inForce names what a module or manifest CID is in an error.
func inForce(g *Genesis, want, genesis cid.Cid, what string) string {
	if want.Equals(genesis) {
		return "genesis " + what
	}
	return what + " in force since the last upgrade,"
}
