package node

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestHeadQueueCoalesces: while the workers are busy, newer records of an
// agent replace its pending one (which keeps its place); every agent's
// latest record is put exactly once; the workers stop with their context.
func TestHeadQueueCoalesces(t *testing.T) {
	release := make(chan struct{})
	var mu sync.Mutex
	var done []string
	q := newHeadQueue(func(ctx context.Context, j headJob) {
		<-release
		mu.Lock()
		done = append(done, j.did+"@"+string(j.data))
		mu.Unlock()
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range headWorkers {
		wg.Go(func() { q.work(ctx) })
	}
	// headWorkers jobs occupy every worker; the rest wait in the queue.
	for i := range headWorkers {
		q.add(headJob{did: string(rune('a' + i)), data: []byte("1")})
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.len() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("the workers did not take the first %d jobs", headWorkers)
		}
		time.Sleep(time.Millisecond)
	}
	for v := 1; v <= 5; v++ {
		q.add(headJob{did: "x", data: []byte{byte('0' + v)}})
		q.add(headJob{did: "y", data: []byte{byte('0' + v)}})
	}
	if n := q.len(); n != 2 {
		t.Fatalf("%d pending jobs after 10 records of 2 agents, want 2", n)
	}
	close(release)
	for {
		mu.Lock()
		n := len(done)
		mu.Unlock()
		if n == headWorkers+2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("done %v", done)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	if !slices.Contains(done, "x@5") || !slices.Contains(done, "y@5") || slices.Contains(done, "x@1") {
		t.Fatalf("put %v: want only the latest record of x and y", done)
	}
}
