package wasmexec

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Host pauses (DECISIONS D54). A guest call's deadline is wall time, so a
// pause of the whole process — SIGSTOP, a VM stalled by its hypervisor, a
// machine so loaded that the process does not run — lands on whatever call
// is in flight: the deadline fires at the resume and the agent is blamed
// ("ran longer than its deadline"), its instance killed, a failure counted
// against it, its ticks since the last checkpoint run again.
//
// The pause watch tells the two apart. One goroutine per process wakes
// every pauseBeat; a wake later than pauseBeat+pauseSlack means the process
// did not run meanwhile, and the excess is counted as paused time. When a
// call's deadline fires, the paused time since the call began (including a
// pause still being noticed: the watch may not have run yet after the
// resume) is granted to it as extra time — only while the instance's fence
// (its lease end) allows, and at most maxPauseGrant in all — so the agent is
// charged for its own running time only. A call stopped at its deadline
// after a pause it could not be granted fails with ErrHostPaused, which the
// runner does not count as the agent's failure.

const (
	pauseBeat     = 50 * time.Millisecond
	pauseSlack    = 150 * time.Millisecond
	maxPauseGrant = time.Minute
)

// ErrHostPaused: a guest call was stopped at its deadline, but the host
// itself did not run for part of the call (a pause) and the extra time
// could not be granted (the lease fence, or maxPauseGrant). Not the agent's
// fault: the runner does not count it as a failure. The instance is dead
// (the call was cut), like after any failed call.
var ErrHostPaused = errors.New("wasmexec: the host paused during the call")

// pauseWatch accumulates the time the process did not run.
type pauseWatch struct {
	start  time.Time
	last   atomic.Int64 // monotonic ns since start of the latest beat
	paused atomic.Int64 // ns counted as paused so far (beats that came late)
}

var (
	watchOnce sync.Once
	watch     *pauseWatch
)

// pauses returns the process's pause watch, starting it on first use.
func pauses() *pauseWatch {
	watchOnce.Do(func() {
		watch = &pauseWatch{start: time.Now()}
		go watch.run()
	})
	return watch
}

func (w *pauseWatch) run() {
	t := time.NewTicker(pauseBeat)
	defer t.Stop()
	for range t.C {
		w.beat(time.Since(w.start))
	}
}

// beat records a wake at now (monotonic, since start).
func (w *pauseWatch) beat(now time.Duration) {
	gap := now - time.Duration(w.last.Swap(int64(now)))
	if gap > pauseBeat+pauseSlack {
		w.paused.Add(int64(gap - pauseBeat))
	}
}

// total is the paused time so far, including a pause the watch has not
// yet woken from (the caller ran first after the resume).
func (w *pauseWatch) total() time.Duration {
	now := time.Since(w.start)
	p := time.Duration(w.paused.Load())
	if gap := now - time.Duration(w.last.Load()); gap > pauseBeat+pauseSlack {
		p += gap - pauseBeat
	}
	return p
}

// pauseClock is what a deadline consults; tests replace it.
var pauseClock = func() time.Duration { return pauses().total() }
