package agents

import (
	"math"
	"math/big"
	"testing"
	"testing/quick"
	"time"
)

func TestTickCostRoundsUp(t *testing.T) {
	cases := []struct {
		ns    uint64
		price int64
		want  int64
	}{
		{uint64(time.Microsecond), 1_000_000, 1},     // exactly 1 µc
		{uint64(time.Microsecond) + 1, 1_000_000, 2}, // a hair more rounds up
		{1, 1000, 1},                      // reference: free; here 1 µc
		{0, 1000, 0},                      // nothing metered, nothing charged
		{uint64(time.Second), 1000, 1000}, // a full second at the price
		{uint64(time.Hour), 1_000_000, 3_600_000_000},  // large but exact
		{uint64(time.Second), 0, 0},                    // free hosting
		{math.MaxUint64, math.MaxInt64, math.MaxInt64}, // saturates, no overflow
		{math.MaxInt64, math.MaxInt64, math.MaxInt64},  // saturates, no overflow
		{uint64(time.Second), -5, 0},                   // a negative price is free, not a refund
	}
	for _, c := range cases {
		if got := TickCost(c.ns, c.price); got != c.want {
			t.Errorf("TickCost(%d, %d) = %d, want %d", c.ns, c.price, got, c.want)
		}
	}
}

// The fast path agrees with exact rational arithmetic on random inputs.
func TestTickCostMatchesNaive(t *testing.T) {
	f := func(ns uint64, price uint32) bool {
		p := int64(price) + 1
		num := new(big.Int).Mul(new(big.Int).SetUint64(ns), big.NewInt(p))
		num.Add(num, big.NewInt(1e9-1))
		exact := num.Div(num, big.NewInt(1e9))
		if !exact.IsInt64() {
			return TickCost(ns, p) == math.MaxInt64
		}
		return TickCost(ns, p) == exact.Int64()
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
}

func TestBudgetAfterNeverNegative(t *testing.T) {
	f := func(before int64, ns uint64, price int64) bool {
		if before < 0 {
			before = -(before + 1)
		}
		left := BudgetAfter(before, ns, price)
		return left >= 0 && left <= before
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
}

// BuyableNs is exact: running that long leaves budget, one ns more does not.
func TestBuyableNsIsTheBoundary(t *testing.T) {
	f := func(before uint32, metered uint32, price uint16) bool {
		b, m, p := int64(before)+1, uint64(metered), int64(price)+1
		n := BuyableNs(b, m, p)
		if BudgetAfter(b, m, p) == 0 {
			return n == 0
		}
		return BudgetAfter(b, m+n, p) > 0 && BudgetAfter(b, m+n+1, p) == 0
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
	if BuyableNs(10, 0, 0) != math.MaxUint64 {
		t.Fatal("free hosting must not limit a tick")
	}
}
