package hosting

import (
	"math"
	"math/bits"
	"time"
)

// TickCost is what one tick of elapsed wall time costs at price microcents
// per second: elapsed × price / 1e9, rounded UP, so no tick is free (the
// reference truncated, which made every tick under 1e9/price ns cost 0).
// A non-positive price makes ticks free; a product too large for int64
// saturates at math.MaxInt64 (the caller clamps to the remaining budget).
func TickCost(elapsed time.Duration, price int64) int64 {
	if price <= 0 {
		return 0
	}
	ns := uint64(elapsed)
	if elapsed <= 0 {
		ns = 1 // a measured zero is a clock artefact, not a free tick
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

// Charge subtracts cost from budget without ever going below zero and
// returns the new budget and what was actually charged.
func Charge(budget, cost int64) (left, charged int64) {
	if cost >= budget {
		return 0, budget
	}
	return budget - cost, cost
}
