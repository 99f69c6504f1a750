// Package amount converts between decimal currency amounts as people type
// them ("1.5") and microcents, the integer unit budgets and prices are
// kept in (1 = 0.000001), exactly and without floats.
package amount

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// ErrBadAmount: the text is not a non-negative decimal amount in range.
var ErrBadAmount = errors.New("amount: not a decimal amount")

// Parse turns a decimal amount ("1.5", "0.000001", "3") into microcents.
// Surrounding spaces are ignored. Errors wrap ErrBadAmount.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	whole, frac, _ := strings.Cut(s, ".")
	if whole == "" && frac == "" || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "+") {
		return 0, fmt.Errorf("%w: %q is not a positive decimal amount", ErrBadAmount, s)
	}
	if len(frac) > 6 {
		return 0, fmt.Errorf("%w: %q has more than 6 decimals (1 microcent = 0.000001)", ErrBadAmount, s)
	}
	w := int64(0)
	if whole != "" {
		v, err := strconv.ParseUint(whole, 10, 63)
		if err != nil || v > math.MaxInt64/1_000_000 {
			return 0, fmt.Errorf("%w: %q is not a decimal amount in range", ErrBadAmount, s)
		}
		w = int64(v)
	}
	f := int64(0)
	if frac != "" {
		v, err := strconv.ParseUint(frac+strings.Repeat("0", 6-len(frac)), 10, 32)
		if err != nil {
			return 0, fmt.Errorf("%w: %q is not a decimal amount", ErrBadAmount, s)
		}
		f = int64(v)
	}
	// w ≤ MaxInt64/1e6 still leaves w*1e6+f able to pass MaxInt64.
	if w > (math.MaxInt64-f)/1_000_000 {
		return 0, fmt.Errorf("%w: %q is above the largest amount %s", ErrBadAmount, s, Format(math.MaxInt64))
	}
	return w*1_000_000 + f, nil
}

// Format prints microcents as a decimal amount with six decimals. The
// magnitude is taken as uint64, so math.MinInt64 (whose negation overflows
// int64) prints correctly too.
func Format(uc int64) string {
	sign, mag := "", uint64(uc)
	if uc < 0 {
		sign, mag = "-", -mag
	}
	return fmt.Sprintf("%s%d.%06d", sign, mag/1_000_000, mag%1_000_000)
}
