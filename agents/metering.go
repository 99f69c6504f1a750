package agents

import (
	"math"
	"math/bits"
)

// TickCost is what metered ns of tick wall time cost at price µc per
// second: ns × price / 1e9, rounded UP, so no metered time is free (the
// reference truncated, which made every tick under 1e9/price ns cost 0).
// Zero time or a non-positive price cost 0; a product too large for int64
// saturates at math.MaxInt64 (BudgetAfter clamps to the budget).
//
// It is the one formula both the runner (charging) and VerifyLineage
// (re-checking each checkpoint's budget step) use, so they cannot drift.
func TickCost(ns uint64, price int64) int64 {
	if price <= 0 || ns == 0 {
		return 0
	}
	hi, lo := bits.Mul64(ns, uint64(price))
	if hi >= 1e9 { // quotient would not fit in 64 bits
		return math.MaxInt64
	}
	q, r := bits.Div64(hi, lo, 1e9)
	if r != 0 {
		q++
	}
	if q > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(q)
}

// BudgetAfter is the budget left after metered ns at price, starting from
// before: before − TickCost(ns, price), never below 0. A checkpoint's Budget
// must equal BudgetAfter(predecessor's Budget, its Metered, its Price).
func BudgetAfter(before int64, ns uint64, price int64) int64 {
	cost := TickCost(ns, price)
	if cost >= before {
		return 0
	}
	return before - cost
}

// BuyableNs is the most tick time, in ns on top of metered ns already
// charged against before, that still leaves a positive budget — how long a
// tick may run before the budget is gone. math.MaxUint64 at price ≤ 0.
func BuyableNs(before int64, metered uint64, price int64) uint64 {
	if price <= 0 {
		return math.MaxUint64
	}
	if BudgetAfter(before, metered, price) == 0 {
		return 0
	}
	// Largest total t with TickCost(t) < before, i.e. ceil(t·p/1e9) ≤
	// before−1, i.e. t·p ≤ (before−1)·1e9: t = floor((before−1)·1e9/p).
	hi, lo := bits.Mul64(uint64(before-1), 1e9)
	if hi >= uint64(price) {
		return math.MaxUint64
	}
	total, _ := bits.Div64(hi, lo, uint64(price))
	if total <= metered {
		return 0
	}
	return total - metered
}
