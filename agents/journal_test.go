package agents

import (
	"errors"
	"testing"

	"github.com/ipfs/go-cid"
)

// journalSteps appends to f (3 plain checkpoints, tick 20 at seq 2) the
// steps a journaled agent's holder makes: a journaled tick without state, a
// partial tick (an effect's intent), its end with a payment, and the state
// written down. mut, if set, changes step k (0-based among these four)
// before it is signed.
func journalSteps(t *testing.T, f *fixture, k int, mut func(c, prev *Checkpoint)) {
	t.Helper()
	j1, j2, j3 := contentCID([]byte("log 21")), contentCID([]byte("log 22 intent")), contentCID([]byte("log 22 whole"))
	steps := []func(c, prev *Checkpoint){
		func(c, prev *Checkpoint) { // tick 21, journaled, no state
			c.Tick, c.Journal, c.State, c.StateSize = prev.Tick+1, j1, cid.Undef, 0
			c.Calls, c.Metered = 1, 2e6
			c.Budget = BudgetAfter(prev.Budget, c.Metered, c.Price)
		},
		func(c, prev *Checkpoint) { // tick 22 in progress: an intent
			c.Tick, c.Journal, c.Partial, c.State, c.StateSize = prev.Tick+1, j2, true, cid.Undef, 0
			c.Calls, c.Metered, c.Budget = 0, 0, prev.Budget
		},
		func(c, prev *Checkpoint) { // tick 22 ends; it paid 50 µc
			c.Tick, c.Journal, c.State, c.StateSize = prev.Tick, j3, cid.Undef, 0
			c.Calls, c.Metered, c.Paid = 1, 3e6, 50
			c.Budget = BudgetAfter(prev.Budget, c.Metered, c.Price) - 50
		},
		func(c, prev *Checkpoint) { // tick 22's state written down
			c.Tick, c.State, c.StateSize = prev.Tick, contentCID([]byte("state 22")), 9
			c.Calls, c.Metered, c.Budget = 0, 0, prev.Budget
		},
	}
	for i, step := range steps {
		prev := f.entries[len(f.entries)-1].Checkpoint
		c := f.next()
		c.Epoch = prev.Epoch
		step(c, prev)
		if i == k && mut != nil {
			mut(c, prev)
		}
		f.append(t, c)
	}
}

func TestJournalLineage(t *testing.T) {
	f := newFixture(t, 3)
	journalSteps(t, f, -1, nil)
	lin, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
	if err != nil {
		t.Fatalf("valid journaled lineage: %v", err)
	}
	if h := lin.Head().Checkpoint; h.Tick != 22 || !h.State.Defined() {
		t.Fatalf("head at tick %d", h.Tick)
	}
	// Round trip: an undefined state stays undefined, the journal and
	// payment survive.
	for _, e := range f.entries[3:] {
		dec, err := DecodeCheckpoint(f.store[e.CID])
		if err != nil {
			t.Fatal(err)
		}
		if !dec.State.Equals(e.Checkpoint.State) || !dec.Journal.Equals(e.Checkpoint.Journal) || dec.Partial != e.Checkpoint.Partial || dec.Paid != e.Checkpoint.Paid {
			t.Fatalf("seq %d: decoded %+v, encoded %+v", e.Checkpoint.Seq, dec, e.Checkpoint)
		}
	}

	for _, tc := range []struct {
		name     string
		step     int
		sentinel error
		mut      func(c, prev *Checkpoint)
	}{
		{"journal skips a tick", 0, ErrOrder, func(c, _ *Checkpoint) { c.Tick++ }},
		{"partial tick not finished", 2, ErrOrder, func(c, prev *Checkpoint) {
			c.Tick = prev.Tick + 1
			c.Budget = BudgetAfter(prev.Budget, c.Metered, c.Price) - 50
		}},
		{"partial tick followed by a plain checkpoint", 2, ErrOrder, func(c, prev *Checkpoint) {
			c.Journal, c.State, c.StateSize = cid.Undef, contentCID([]byte("s")), 1
		}},
		{"partial tick bills", 1, ErrMetering, func(c, prev *Checkpoint) {
			c.Calls, c.Metered = 1, 1e6
			c.Budget = BudgetAfter(prev.Budget, c.Metered, c.Price)
		}},
		{"payment not deducted", 2, ErrMetering, func(c, prev *Checkpoint) { c.Budget += 50 }},
		{"payment hidden", 2, ErrMetering, func(c, prev *Checkpoint) { c.Paid = 0 }},
		{"state written down with a new tick", 3, ErrOrder, func(c, prev *Checkpoint) {
			c.Tick++
			c.Calls, c.Metered = 1, 1e6
			c.Budget = BudgetAfter(prev.Budget, c.Metered, c.Price)
		}},
		{"state written down with a payment", 3, ErrOrder, func(c, prev *Checkpoint) {
			c.Paid = 5
			c.Budget = prev.Budget - 5
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, 3)
			journalSteps(t, f, tc.step, tc.mut)
			_, err := VerifyLineage(f.head(), f.store, VerifyOptions{})
			var ve *VerifyError
			if !errors.Is(err, tc.sentinel) || !errors.As(err, &ve) || ve.Seq != uint64(3+tc.step) {
				t.Fatalf("err = %v, want %v at seq %d", err, tc.sentinel, 3+tc.step)
			}
			// A standby stepping one checkpoint at a time agrees.
			l2, err := VerifyLineage(f.entries[2].CID, f.store, VerifyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			base, got := l2.Base(), error(nil)
			for _, e := range f.entries[3:] {
				if base, got = VerifyNext(base, e.CID, e.Checkpoint, false, f.store); got != nil {
					break
				}
			}
			if !errors.Is(got, tc.sentinel) {
				t.Fatalf("VerifyNext: %v, want %v", got, tc.sentinel)
			}
		})
	}

	// Malformed: a step without state and without journal, a partial step
	// without journal, a journal in seq 0's place is refused at decode.
	for name, mut := range map[string]func(c *Checkpoint){
		"no state, no journal": func(c *Checkpoint) { c.State = cid.Undef },
		"partial, no journal":  func(c *Checkpoint) { c.Partial = true },
		"negative payment":     func(c *Checkpoint) { c.Paid = -1 },
	} {
		c := f.cp(1)
		mut(c)
		if _, _, err := c.Encode(); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: encode err = %v, want ErrMalformed", name, err)
		}
	}
}
