package hosting

import (
	"testing"
	"time"
)

// Ticks aligned to a grid land on its points, never fire at once, and
// keep the interval on average (the rounding does not drift).
func TestOnGrid(t *testing.T) {
	const grid, d = 100 * time.Millisecond, time.Second
	if got := onGrid(time.Unix(0, 123), d, 0); got != d {
		t.Fatalf("no grid: %v, want %v", got, d)
	}
	now := time.Unix(1000, 0).Add(37 * time.Millisecond)
	var total time.Duration
	for k := range 1000 {
		w := onGrid(now, d, grid)
		at := now.Add(w)
		if at.UnixNano()%int64(grid) != 0 {
			t.Fatalf("step %d: %v is off the grid", k, at)
		}
		if w < d-grid/2 || w > d+grid/2 {
			t.Fatalf("step %d: wait %v, want %v ± %v", k, w, d, grid/2)
		}
		total += w
		// The tick itself takes a little time before the next wait.
		now = at.Add(time.Duration(k%7) * time.Millisecond)
	}
	if mean := total / 1000; mean < d-grid/10 || mean > d+grid/10 {
		t.Fatalf("mean interval %v, want ≈ %v", mean, d)
	}
	// A tick that ran past half the grid still waits, to the next point.
	now = time.Unix(2000, 0).Add(60 * time.Millisecond)
	if w := onGrid(now, 0, grid); w != 40*time.Millisecond {
		t.Fatalf("zero wait late in the grid: %v, want 40ms", w)
	}
	if w := onGrid(time.Unix(2000, 0), 0, grid); w != grid {
		t.Fatalf("zero wait on a grid point: %v, want %v", w, grid)
	}
}
