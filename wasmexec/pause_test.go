package wasmexec

import (
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
)

// The watch counts a late beat's excess as paused time, and a pause still
// in progress (the watch has not woken since) in total.
func TestPauseWatchCounts(t *testing.T) {
	w := &pauseWatch{start: time.Now()}
	w.beat(pauseBeat)
	w.beat(2 * pauseBeat)
	if p := time.Duration(w.paused.Load()); p != 0 {
		t.Fatalf("on-time beats counted %v as paused", p)
	}
	w.beat(2*pauseBeat + time.Second) // a second late: a pause
	if p := time.Duration(w.paused.Load()); p != time.Second-pauseBeat {
		t.Fatalf("paused %v after a beat a second late, want %v", p, time.Second-pauseBeat)
	}
	// A pause the watch has not noticed yet: its last beat lies 2 s back.
	w2 := &pauseWatch{start: time.Now().Add(-2 * time.Second)}
	if p := w2.total(); p < 2*time.Second-pauseBeat-50*time.Millisecond {
		t.Fatalf("total %v with a beat 2 s overdue", p)
	}
}

// setPauses replaces the pause clock for one test.
func setPauses(t *testing.T, f func() time.Duration) {
	old := pauseClock
	pauseClock = f
	t.Cleanup(func() { pauseClock = old })
}

// A call whose deadline passes while the host was paused is given the
// paused time back and is not cut; with no pause it is cut on time.
func TestDeadlineGrantsPausedTime(t *testing.T) {
	var paused atomic.Int64
	setPauses(t, func() time.Duration { return time.Duration(paused.Load()) })
	i := &Instance{rt: &Runtime{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, timeout: 50 * time.Millisecond}
	var cancelled atomic.Bool
	d := i.deadline("test", func() { cancelled.Store(true) })
	paused.Store(int64(300 * time.Millisecond)) // the host "paused" 300 ms
	time.Sleep(150 * time.Millisecond)
	if cancelled.Load() {
		t.Fatal("the call was cut at its deadline although the host was paused for 300 ms of it")
	}
	cut, p := d.stop()
	if cut || p != 300*time.Millisecond {
		t.Fatalf("stop: cut %v, paused %v; want false, 300ms", cut, p)
	}
	// No pause: cut at the deadline, and not blamed on the host.
	paused.Store(0)
	cancelled.Store(false)
	d = i.deadline("test", func() { cancelled.Store(true) })
	time.Sleep(150 * time.Millisecond)
	if !cancelled.Load() {
		t.Fatal("a call without a pause was not cut at its deadline")
	}
	if cut, _ := d.stop(); cut {
		t.Fatal("a call cut without a pause was reported as cut by a pause")
	}
}

// Paused time is granted only within the fence (the lease end): a call
// whose extension would pass it is cut, and reported as cut by the pause.
func TestDeadlineGrantStopsAtFence(t *testing.T) {
	var paused atomic.Int64
	setPauses(t, func() time.Duration { return time.Duration(paused.Load()) })
	fence := time.Now().Add(100 * time.Millisecond)
	i := &Instance{rt: &Runtime{logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, timeout: 50 * time.Millisecond, fence: func() time.Time { return fence }}
	var cancelled atomic.Bool
	d := i.deadline("test", func() { cancelled.Store(true) })
	paused.Store(int64(time.Second))
	time.Sleep(150 * time.Millisecond)
	if !cancelled.Load() {
		t.Fatal("paused time was granted past the fence")
	}
	if cut, _ := d.stop(); !cut {
		t.Fatal("a call cut after an ungranted pause was not reported as such")
	}
}

// Through a real guest call: a runaway tick under a host that keeps
// "pausing" is granted time up to the fence, then cut with ErrHostPaused
// (not ErrDeadline: the runner does not count it as the agent's failure),
// and the paused time is not in Elapsed (not billed).
func TestRunawayUnderHostPause(t *testing.T) {
	r := newRuntime(t, Config{})
	m, man := example(t, r, "runaway")
	man = withLimits(man, func(l *agents.ResourceLimits) { l.TickTimeoutMs = 100 })
	start0 := time.Now()
	// Nine tenths of the wall time count as paused.
	setPauses(t, func() time.Duration { return time.Since(start0) * 9 / 10 })
	fence := time.Now().Add(600 * time.Millisecond)
	inst := start(t, r, m, InstanceConfig{Manifest: man, Fence: func() time.Time { return fence }}, nil)
	t0 := time.Now()
	res, err := inst.Tick(bg)
	took := time.Since(t0)
	if !errors.Is(err, ErrHostPaused) || errors.Is(err, ErrDeadline) {
		t.Fatalf("err = %v, want ErrHostPaused", err)
	}
	if took < 300*time.Millisecond || took > 2*time.Second {
		t.Fatalf("the tick ran %v; want it extended past its 100 ms deadline toward the 600 ms fence, then cut", took)
	}
	if res.Elapsed > took/2 {
		t.Fatalf("Elapsed %v of %v: the paused time was billed", res.Elapsed, took)
	}
	t.Logf("cut after %v (Elapsed %v)", took, res.Elapsed)
}
