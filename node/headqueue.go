package node

import (
	"context"
	"sync"

	"github.com/ipfs/go-cid"
)

// headQueue runs the DHT work of head records (a put, and once per epoch the
// provides) on a few workers, with at most one pending job per agent: a
// newer record of an agent replaces the one still waiting, unsent. Before,
// every record started its own goroutine and walk; under holder churn on a
// loaded mesh those walks multiplied the load that caused the churn (each
// epoch change one more walk per agent, ~20 peers each, every receiver
// verifying a signature). Now the work in flight is bounded by the workers
// and the backlog by the agents this node holds (DECISIONS D70).
type headQueue struct {
	run func(ctx context.Context, j headJob)

	mu      sync.Mutex
	pending map[string]headJob // by agent DID
	order   []string           // agents with a pending job, oldest first
	wake    chan struct{}
}

// headWorkers is how many head-record walks one node runs at once.
const headWorkers = 4

type headJob struct {
	did   string
	data  []byte    // the encoded, signed record
	epoch uint64    // the record's epoch
	cids  []cid.Cid // to provide, once per epoch
}

func newHeadQueue(run func(ctx context.Context, j headJob)) *headQueue {
	return &headQueue{run: run, pending: map[string]headJob{}, wake: make(chan struct{}, 1)}
}

// add queues j, replacing a pending job of the same agent (which keeps its
// place in the queue).
func (q *headQueue) add(j headJob) {
	q.mu.Lock()
	if _, ok := q.pending[j.did]; !ok {
		q.order = append(q.order, j.did)
	}
	q.pending[j.did] = j
	q.mu.Unlock()
	q.signal()
}

func (q *headQueue) signal() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take pops the oldest pending job.
func (q *headQueue) take() (headJob, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.order) == 0 {
		return headJob{}, false
	}
	did := q.order[0]
	q.order = q.order[1:]
	j := q.pending[did]
	delete(q.pending, did)
	if len(q.order) > 0 {
		q.signal() // another worker may start on the next one
	}
	return j, true
}

// len is the number of pending jobs.
func (q *headQueue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.order)
}

// work runs one worker until ctx ends.
func (q *headQueue) work(ctx context.Context) {
	for {
		j, ok := q.take()
		if !ok {
			select {
			case <-ctx.Done():
				return
			case <-q.wake:
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		q.run(ctx, j)
	}
}
