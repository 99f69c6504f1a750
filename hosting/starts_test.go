package hosting_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/hosting"
)

// TestServiceBoundsStarts: Accept verifies a lineage only in a start slot
// (ServiceConfig.Starts); an offer waiting for one ends with its context,
// and a queued one starts the agent once a slot frees.
func TestServiceBoundsStarts(t *testing.T) {
	f := newFixture(t)
	if _, err := hosting.NewService(f.env, hosting.ServiceConfig{Starts: -1}); err == nil || !strings.Contains(err.Error(), "Starts is -1") {
		t.Fatalf("Starts -1: want an error naming the option, got %v", err)
	}
	svc, err := hosting.NewService(f.env, hosting.ServiceConfig{Slots: 4, Starts: 1,
		Run: hosting.RunOptions{TickInterval: time.Millisecond, CheckpointEvery: 2, Price: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close(context.Background())
	a, keyA := f.create(t, "heartbeat", 1_000_000)
	b, keyB := f.create(t, "heartbeat", 1_000_000)

	release := hosting.HoldStartSlot(svc)
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
	defer cancel()
	if _, err := svc.Accept(ctx, hosting.Lease{Head: a.Head.CID, Key: keyA, Epoch: 1}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("accept while every start slot is taken, context ending: want DeadlineExceeded, got %v", err)
	}
	if _, ok := svc.Status(a.DID); ok {
		t.Fatal("an offer that never got a start slot left the agent in the table")
	}
	done := make(chan error, 1)
	go func() {
		_, err := svc.Accept(context.Background(), hosting.Lease{Head: b.Head.CID, Key: keyB, Epoch: 1})
		done <- err
	}()
	waitFor(t, "the second offer queued for a start slot", func() bool { w, _ := svc.StartStats(); return w == 1 })
	select {
	case err := <-done:
		t.Fatalf("accept returned (%v) while the only start slot was taken", err)
	case <-time.After(100 * time.Millisecond):
	}
	release()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the queued agent ticking", func() bool { st, _ := svc.Status(b.DID); return st.Tick >= 3 })
	if w, peak := svc.StartStats(); w != 0 || peak != 1 {
		t.Fatalf("start stats: %d waiting, peak %d; want 0 and 1", w, peak)
	}
}

// TestRunStartGate: the runner instantiates the agent only inside its
// StartGate and releases it after; a stop while it waits ends the run at
// once; and a lease that ended during the wait is judged again after the
// start: no tick runs past the fence.
func TestRunStartGate(t *testing.T) {
	f := newFixture(t)
	a, _ := f.create(t, "heartbeat", 1_000_000)

	t.Run("waits, then releases", func(t *testing.T) {
		open := make(chan struct{})
		var held, released, ticks atomic.Int32
		opts := fast(3, 3)
		opts.StartGate = func(ctx context.Context) (func(), error) {
			select {
			case <-open:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			held.Add(1)
			return func() { released.Add(1) }, nil
		}
		opts.OnTick = func(uint64) { ticks.Add(1) }
		res := make(chan hosting.Result, 1)
		go func() {
			r, err := hosting.Run(context.Background(), f.env, a, opts)
			if err != nil {
				t.Error(err)
			}
			res <- r
		}()
		time.Sleep(100 * time.Millisecond)
		if n := ticks.Load(); n != 0 {
			t.Fatalf("%d ticks before the start gate opened", n)
		}
		close(open)
		r := <-res
		if r.Ticks != 3 || held.Load() != 1 || released.Load() != 1 {
			t.Fatalf("%d ticks, gate taken %d times and released %d; want 3, 1, 1", r.Ticks, held.Load(), released.Load())
		}
	})

	t.Run("a stop while waiting", func(t *testing.T) {
		stopWhileWaiting(t, f, a, "a start slot", func(o *hosting.RunOptions, g gate) { o.StartGate = g })
	})

	t.Run("the lease ended during the wait", func(t *testing.T) {
		// A tick starts only if its timeout ends before the fence.
		horizon := time.Duration(a.Manifest.ResourceLimits.TickTimeoutMs) * time.Millisecond
		fence := time.Now().Add(horizon + 200*time.Millisecond)
		var ticks atomic.Int32
		opts := fast(0, 3)
		opts.Fence = func() time.Time { return fence }
		opts.OnTick = func(uint64) { ticks.Add(1) }
		opts.StartGate = func(ctx context.Context) (func(), error) {
			time.Sleep(time.Until(fence) - horizon + 100*time.Millisecond) // a queue longer than what the lease allows
			return func() {}, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Until(fence)+300*time.Millisecond)
		defer cancel()
		r, err := hosting.Run(ctx, f.env, a, opts)
		if err != nil {
			t.Fatal(err)
		}
		if n := ticks.Load(); n != 0 || r.Ticks != 0 {
			t.Fatalf("%d ticks after a start that ended past the lease's fence (result %+v)", n, r)
		}
	})
}

// TestRunWorkGate: every tick and checkpoint runs inside a slot of the
// run's WorkGate, released after it; a tick whose wait for a slot took
// the lease past its end does not run; a stop while waiting ends the run.
func TestRunWorkGate(t *testing.T) {
	f := newFixture(t)
	a, _ := f.create(t, "heartbeat", 1_000_000)

	t.Run("each tick and checkpoint in a slot", func(t *testing.T) {
		var inSlot, held, released, outside atomic.Int32
		opts := fast(6, 3)
		opts.WorkGate = func(ctx context.Context) (func(), error) {
			held.Add(1)
			inSlot.Add(1)
			return func() { inSlot.Add(-1); released.Add(1) }, nil
		}
		opts.OnTick = func(uint64) {
			if inSlot.Load() != 0 {
				outside.Add(1) // OnTick runs after the tick's slot is released
			}
		}
		r, err := hosting.Run(context.Background(), f.env, a, opts)
		if err != nil {
			t.Fatal(err)
		}
		// 6 ticks and 2 checkpoints (every 3 ticks) in the loop.
		if r.Ticks != 6 || held.Load() != 8 || released.Load() != 8 || outside.Load() != 0 {
			t.Fatalf("%d ticks; gate taken %d times, released %d, held across OnTick %d; want 6, 8, 8, 0", r.Ticks, held.Load(), released.Load(), outside.Load())
		}
	})

	t.Run("the lease ended during the wait", func(t *testing.T) {
		horizon := time.Duration(a.Manifest.ResourceLimits.TickTimeoutMs) * time.Millisecond
		fence := time.Now().Add(horizon + 200*time.Millisecond)
		var ticks, released atomic.Int32
		opts := fast(0, 3)
		opts.Fence = func() time.Time { return fence }
		opts.OnTick = func(uint64) { ticks.Add(1) }
		opts.WorkGate = func(ctx context.Context) (func(), error) {
			time.Sleep(time.Until(fence) - horizon + 100*time.Millisecond) // a queue longer than what the lease allows
			return func() { released.Add(1) }, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Until(fence)+300*time.Millisecond)
		defer cancel()
		r, err := hosting.Run(ctx, f.env, a, opts)
		if err != nil {
			t.Fatal(err)
		}
		if n := ticks.Load(); n != 0 || r.Ticks != 0 || released.Load() == 0 {
			t.Fatalf("%d ticks after a wait for a slot that ended past the lease's fence, %d slots released (result %+v); want 0 ticks, the slot released", n, released.Load(), r)
		}
	})

	t.Run("a stop while waiting", func(t *testing.T) {
		stopWhileWaiting(t, f, a, "a work slot", func(o *hosting.RunOptions, g gate) { o.WorkGate = g })
	})

	// A stop while waiting ends the run as a stop between ticks does: with
	// a final checkpoint of the ticks since the last, unless the lease
	// ended (ErrFenced) — then nothing more is written.
	for _, fenced := range []bool{false, true} {
		t.Run(fmt.Sprintf("a stop after ticks, fenced %v", fenced), func(t *testing.T) {
			opts := fast(0, 100) // no checkpoint of its own: the ticks stay unwritten
			var taken atomic.Int32
			waiting := make(chan struct{})
			opts.WorkGate = func(ctx context.Context) (func(), error) {
				if taken.Add(1) <= 3 {
					return func() {}, nil
				}
				close(waiting)
				<-ctx.Done()
				return nil, context.Cause(ctx)
			}
			ctx, cancel := context.WithCancelCause(context.Background())
			res := runAsync(t, ctx, f, a, opts)
			<-waiting
			if fenced {
				cancel(hosting.ErrFenced)
			} else {
				cancel(nil)
			}
			r := <-res
			wrote := r.Head.Checkpoint.Seq != a.Head.Checkpoint.Seq
			if r.Ticks != 3 || wrote == fenced {
				t.Fatalf("fenced %v: %d ticks, head seq %d (was %d); want 3 ticks and a final checkpoint only when not fenced", fenced, r.Ticks, r.Head.Checkpoint.Seq, a.Head.Checkpoint.Seq)
			}
		})
	}
}

// TestServiceWorkSlots: ServiceConfig.Work bounds the slots WorkGate
// hands out; a waiter gets one when one is released, or its context's
// error; a negative Work is refused with the option named.
func TestServiceWorkSlots(t *testing.T) {
	f := newFixture(t)
	if _, err := hosting.NewService(f.env, hosting.ServiceConfig{Work: -1}); err == nil || !strings.Contains(err.Error(), "Work is -1") {
		t.Fatalf("Work -1: want an error naming the option, got %v", err)
	}
	svc, err := hosting.NewService(f.env, hosting.ServiceConfig{Slots: 4, Work: 2})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	defer svc.Close(ctx)
	r1, err1 := svc.WorkGate(ctx)
	_, err2 := svc.WorkGate(ctx)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := svc.WorkGate(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a third slot of 2: %v, want the context's deadline", err)
	}
	got := make(chan error, 1)
	go func() { _, err := svc.WorkGate(ctx); got <- err }()
	select {
	case err := <-got:
		t.Fatalf("a waiter got a slot while both were held (%v)", err)
	case <-time.After(50 * time.Millisecond):
	}
	r1()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a released slot did not reach its waiter")
	}
}

type gate = func(ctx context.Context) (func(), error)

// stopWhileWaiting: a run whose gate (set by set) never opens ends with
// its context, with no tick.
func stopWhileWaiting(t *testing.T, f *fixture, a *hosting.Loaded, what string, set func(*hosting.RunOptions, gate)) {
	t.Helper()
	opts := fast(0, 3)
	set(&opts, func(ctx context.Context) (func(), error) {
		<-ctx.Done()
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	res := runAsync(t, ctx, f, a, opts)
	time.Sleep(50 * time.Millisecond)
	cancel()
	select {
	case r := <-res:
		if r.Reason != hosting.StopContext || r.Ticks != 0 {
			t.Fatalf("stopped while waiting for %s: %+v", what, r)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Run did not end within 5 s of its stop while waiting for %s", what)
	}
}

// runAsync runs a in the background; the result arrives on the channel.
func runAsync(t *testing.T, ctx context.Context, f *fixture, a *hosting.Loaded, opts hosting.RunOptions) <-chan hosting.Result {
	res := make(chan hosting.Result, 1)
	go func() {
		r, err := hosting.Run(ctx, f.env, a, opts)
		if err != nil {
			t.Error(err)
		}
		res <- r
	}()
	return res
}
