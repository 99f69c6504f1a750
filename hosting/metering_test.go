package hosting_test

import (
	"context"
	"errors"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
)

// Every checkpoint records the calls and time its holder billed, and its
// budget is exactly the predecessor's less that time at its price — the step
// VerifyLineage recomputes.
func TestMeteringIsRecordedAndVerifies(t *testing.T) {
	f := newFixture(t)
	a, _ := f.create(t, "counter", 1_000_000_000)
	res, err := hosting.Run(context.Background(), f.env, a, fast(12, 3))
	if err != nil {
		t.Fatal(err)
	}
	lin, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(lin.Entries) != 5 {
		t.Fatalf("%d checkpoints, want 5 (seq 0 + 4 of 3 ticks)", len(lin.Entries))
	}
	var spent int64
	for i, e := range lin.Entries[1:] {
		prev, cp := lin.Entries[i].Checkpoint, e.Checkpoint
		if cp.Calls != cp.Tick-prev.Tick || cp.Metered == 0 {
			t.Fatalf("seq %d: %d calls, %d ns for %d ticks", cp.Seq, cp.Calls, cp.Metered, cp.Tick-prev.Tick)
		}
		if want := agents.BudgetAfter(prev.Budget, cp.Metered, cp.Price); cp.Budget != want || cp.Budget >= prev.Budget {
			t.Fatalf("seq %d: budget %d after %d, want %d", cp.Seq, cp.Budget, prev.Budget, want)
		}
		spent += prev.Budget - cp.Budget
	}
	if g := lin.Genesis.Budget; spent != g-res.Head.Checkpoint.Budget || spent <= 0 {
		t.Fatalf("steps add up to %d, the budget fell by %d", spent, g-res.Head.Checkpoint.Budget)
	}
}

// The tick that exhausts the budget completes, is charged what was left, and
// the final checkpoint records budget 0 with metering that still verifies.
func TestBudgetExhaustedMidTick(t *testing.T) {
	f := newFixture(t)
	a, _ := f.create(t, "counter", 1) // 1 µc at 1e6 µc/s buys 1 µs: less than any tick
	res, err := hosting.Run(context.Background(), f.env, a, fast(0, 1000))
	if !errors.Is(err, hosting.ErrBudgetExhausted) || res.Reason != hosting.StopBudget {
		t.Fatalf("want budget exhaustion, got %v %v", res.Reason, err)
	}
	cp := res.Head.Checkpoint
	if cp.Budget != 0 || cp.Tick != 1 || cp.Calls != 1 || agents.TickCost(cp.Metered, cp.Price) < 1 {
		t.Fatalf("final checkpoint: tick %d budget %d calls %d metered %d", cp.Tick, cp.Budget, cp.Calls, cp.Metered)
	}
	if _, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
	// A spent agent does not tick again.
	again, err := hosting.Load(context.Background(), f.env, res.Head.CID, a.Key)
	if err != nil {
		t.Fatal(err)
	}
	if r2, err := hosting.Run(context.Background(), f.env, again, fast(0, 1)); !errors.Is(err, hosting.ErrBudgetExhausted) || r2.Ticks != 0 {
		t.Fatalf("a spent agent ran: %+v %v", r2, err)
	}
}

// A holder that bills more than its signed metering says — or meters more
// time than the tick timeout allows — is caught by verify, and the culprit
// is named: both are signed by its node key.
func TestForgedBudgetStepIsRejected(t *testing.T) {
	f := newFixture(t)
	a, key := f.create(t, "counter", 1_000_000_000)
	res, err := hosting.Run(context.Background(), f.env, a, fast(3, 3))
	if err != nil {
		t.Fatal(err)
	}
	good := *res.Head.Checkpoint
	prevData, err := f.st.Get(good.Prev)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := agents.DecodeCheckpoint(prevData)
	if err != nil {
		t.Fatal(err)
	}
	for name, forge := range map[string]func(c *agents.Checkpoint){
		"overcharged":  func(c *agents.Checkpoint) { c.Budget -= 1000 },
		"undercharged": func(c *agents.Checkpoint) { c.Budget++ },
		"more time than calls": func(c *agents.Checkpoint) {
			c.Metered = c.Calls*a.Manifest.ResourceLimits.TickTimeoutMs*1e6 + 1
			c.Budget = agents.BudgetAfter(prev.Budget, c.Metered, c.Price)
		},
		"fewer calls than ticks": func(c *agents.Checkpoint) { c.Calls = c.Tick - prev.Tick - 1 },
	} {
		t.Run(name, func(t *testing.T) {
			c := good
			forge(&c)
			if err := c.Sign(key, f.env.NodeKey); err != nil {
				t.Fatal(err)
			}
			data, _, err := c.Encode()
			if err != nil {
				t.Fatal(err)
			}
			forged, err := f.st.Put(cid.DagCBOR, data)
			if err != nil {
				t.Fatal(err)
			}
			_, err = agents.VerifyLineage(forged, f.st, agents.VerifyOptions{})
			var ve *agents.VerifyError
			if !errors.Is(err, agents.ErrMetering) || !errors.As(err, &ve) || !ve.CID.Equals(forged) {
				t.Fatalf("forged step accepted or misreported: %v", err)
			}
		})
	}
}

// A host whose price is above the manifest's cap refuses to run the agent:
// every checkpoint it made would fail verify (ErrMetering).
func TestRunRefusesPriceAboveManifestCap(t *testing.T) {
	f := newFixture(t)
	a, _ := f.create(t, "counter", 1_000_000_000)
	a.Manifest.MigrationPolicy.MaxPricePerSecond = 500
	opts := fast(3, 3)
	opts.Price = 501
	if _, err := hosting.Run(context.Background(), f.env, a, opts); !errors.Is(err, hosting.ErrPriceTooHigh) {
		t.Fatalf("price 501 over a cap of 500: %v", err)
	}
	opts.Price = 500
	if _, err := hosting.Run(context.Background(), f.env, a, opts); err != nil {
		t.Fatalf("price at the cap: %v", err)
	}
}
