package hosting

import (
	"math"
	"math/big"
	"testing"
	"testing/quick"
	"time"
)

func TestTickCostRoundsUp(t *testing.T) {
	cases := []struct {
		elapsed time.Duration
		price   int64
		want    int64
	}{
		{time.Microsecond, 1_000_000, 1},              // exactly 1 µc
		{time.Microsecond + 1, 1_000_000, 2},          // a hair more rounds up
		{time.Nanosecond, 1000, 1},                    // reference: free; here 1 µc
		{0, 1000, 1},                                  // zero measurement still costs
		{time.Second, 1000, 1000},                     // a full second at the price
		{time.Hour, 1_000_000, 3_600_000_000},         // large but exact
		{time.Second, 0, 0},                           // free hosting
		{math.MaxInt64, math.MaxInt64, math.MaxInt64}, // saturates, no overflow
	}
	for _, c := range cases {
		if got := TickCost(c.elapsed, c.price); got != c.want {
			t.Errorf("TickCost(%v, %d) = %d, want %d", c.elapsed, c.price, got, c.want)
		}
	}
}

// The fast path agrees with exact rational arithmetic on random inputs.
func TestTickCostMatchesNaive(t *testing.T) {
	f := func(ns uint32, price uint32) bool {
		p := int64(price) + 1
		e := time.Duration(ns) + 1
		num := new(big.Int).Mul(big.NewInt(int64(e)), big.NewInt(p))
		num.Add(num, big.NewInt(1e9-1))
		exact := num.Div(num, big.NewInt(1e9)).Int64()
		return TickCost(e, p) == exact && exact >= 1
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
}

func TestChargeNeverNegative(t *testing.T) {
	f := func(budget, cost int64) bool {
		if budget < 0 {
			budget = -budget
		}
		if budget < 0 || cost < 0 {
			return true
		}
		left, charged := Charge(budget, cost)
		return left >= 0 && charged <= cost && left+charged == budget
	}
	if err := quick.Check(f, nil); err != nil {
		t.Fatal(err)
	}
}
