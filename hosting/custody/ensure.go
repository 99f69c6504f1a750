package custody

import (
	"context"
	"fmt"
	"sync"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
)

// Fetch before acknowledge (docs/PROTOCOL.md): a member steps a message
// that carries a checkpoint only once the checkpoint and everything
// resuming it needs are stored here and verified. EnsureLineage is that
// walk; the node supplies where blocks come from (Fetcher: the local store
// first, then the peers, every block re-hashed) and its cache of verified
// checkpoints.

// Fetcher gets blocks into the local store: a block, or a whole DAG under
// a root, from the store if present, else from the peers given (in order).
type Fetcher interface {
	Fetch(ctx context.Context, c cid.Cid, peers []string) ([]byte, error)
	FetchDAG(ctx context.Context, root cid.Cid, peers []string) error
}

// Presence is implemented by a Fetcher that can tell cheaply whether a
// whole DAG is already stored: EnsureLineage then skips starting a fetch
// for it (a standby's pushed state usually is).
type Presence interface {
	Present(ctx context.Context, root cid.Cid) bool
}

// Gated is implemented by a Fetcher whose node bounds its CPU-bound work
// per agent (hosting.Service.WorkGate): EnsureLineage verifies inside a
// slot of it, and fetches outside.
type Gated interface {
	WorkGate(ctx context.Context) (release func(), err error)
}

// gated runs verify inside f's work gate, if f has one.
func gated(ctx context.Context, f Fetcher, verify func() error) error {
	g, ok := f.(Gated)
	if !ok {
		return verify()
	}
	release, err := g.WorkGate(ctx)
	if err != nil {
		return err
	}
	defer release()
	return verify()
}

// VerifiedSet remembers checkpoints whose whole lineage was verified here
// (hosting.Verified), so a lineage is verified once, above its last
// verified checkpoint — and, with a checkpoint's agents.Base, the next
// ones in one step each.
type VerifiedSet interface {
	Has(c cid.Cid) bool
	Base(c cid.Cid) (agents.Base, bool)
	AddBase(b agents.Base)
	// NoteSteps and NoteWalk count the verifications (metrics).
	NoteSteps(n int)
	NoteWalk(lin *agents.Lineage)
}

// ensureMaxDepth bounds the walk back (a lineage deeper than this is
// refused rather than walked forever).
const ensureMaxDepth = 100_000

// EnsureLineage makes checkpoint c of agent did present in store together
// with what resuming it needs — its state, and every predecessor with its
// state back to a checkpoint in stop (whose lineage is known complete
// here), or to seq 0 with the genesis, manifest and module — fetching what
// is missing through f from peers, and verifies the lineage by every rule
// (agents.VerifyLineage), only above a checkpoint verified before. Each
// checkpoint fetched on the way is checked to be did's, with valid
// signatures, before its state is fetched. Blocks already here are not
// fetched again, but the walk goes on through them: a fetch cut short by a
// crash leaves present blocks above missing ones. A checkpoint that fails
// is not added to verified.
func EnsureLineage(ctx context.Context, f Fetcher, store agents.BlockGetter, verified VerifiedSet, did string, c cid.Cid, peers []string, stop map[string]bool) error {
	// The checkpoints are walked one by one (each names the next), but
	// their objects — state, journal, receipts — are fetched beside the
	// walk, a few at a time: a member that missed a journaled agent's last
	// hundred ticks would otherwise wait a round trip per object.
	objs := newObjectFetches(ctx, f, peers)
	defer func() { objs.cancel(); objs.wg.Wait() }() // no fetch outlives the walk
	cur := c
	signed := map[cid.Cid]bool{} // signatures checked on the way: not again below
	var walked []agents.Entry    // c first, down to the last fetched
	for range ensureMaxDepth {
		if stop[cur.String()] {
			if err := objs.wait(); err != nil {
				return err
			}
			if base, ok := verified.Base(cur); ok {
				// The common case — a standby's next checkpoint from the
				// holder it follows — in one step per checkpoint walked.
				return gated(ctx, f, func() error { return verifyForward(store, verified, base, walked, c) })
			}
			return gated(ctx, f, func() error { return verifyLineage(store, verified, did, c, signed) })
		}
		data, err := f.Fetch(ctx, cur, peers)
		if err != nil {
			return err
		}
		cp, err := agents.DecodeCheckpoint(data)
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", cur, err)
		}
		if cp.Agent != did {
			return fmt.Errorf("checkpoint %s belongs to %s, not %s", cur, cp.Agent, did)
		}
		if err := gated(ctx, f, cp.Verify); err != nil {
			return fmt.Errorf("checkpoint %s: %w", cur, err)
		}
		signed[cur] = true
		walked = append(walked, agents.Entry{CID: cur, Checkpoint: cp})
		// A journaled step may have no state (a new holder replays its
		// journal from the state below).
		for _, o := range []struct {
			name string
			c    cid.Cid
		}{{"state", cp.State}, {"journal", cp.Journal}, {"receipts", cp.Receipts}} {
			if !o.c.Defined() {
				continue
			}
			objs.fetch(o.c, fmt.Sprintf("%s of checkpoint %s", o.name, cur))
		}
		if ctl := cp.Control; ctl != nil && ctl.Kind == agents.ControlUpgrade {
			// An owner's upgrade: the module and manifest it runs from here.
			for _, r := range []cid.Cid{ctl.Manifest, ctl.Module} {
				if err := f.FetchDAG(ctx, r, peers); err != nil {
					return fmt.Errorf("upgrade block %s of checkpoint %s: %w", r, cur, err)
				}
			}
		}
		if !cp.Prev.Defined() {
			if err := objs.wait(); err != nil {
				return err
			}
			// Seq 0: its genesis, module and manifest complete the lineage.
			for _, r := range []cid.Cid{cp.Genesis, cp.Manifest, cp.Module} {
				if err := f.FetchDAG(ctx, r, peers); err != nil {
					return fmt.Errorf("lineage root %s: %w", r, err)
				}
			}
			return gated(ctx, f, func() error { return verifyLineage(store, verified, did, c, signed) })
		}
		cur = cp.Prev
	}
	return fmt.Errorf("checkpoint %s: lineage deeper than %d while fetching", c, ensureMaxDepth)
}

// verifyLineage checks the lineage of c, now complete in store, above the
// last checkpoint verified before, and remembers c as verified.
func verifyLineage(store agents.BlockGetter, verified VerifiedSet, did string, c cid.Cid, signed map[cid.Cid]bool) error {
	opts := agents.VerifyOptions{ExpectDID: did, Trusted: verified.Has, SignaturesChecked: func(c cid.Cid) bool { return signed[c] }}
	lin, err := agents.VerifyLineage(c, store, opts)
	if err != nil {
		return fmt.Errorf("checkpoint %s: %w", c, err)
	}
	verified.NoteWalk(lin)
	verified.AddBase(lin.Base())
	return nil
}

// verifyForward checks walked (head c first, signatures verified) upward
// from base, its oldest entry's predecessor, by agents.VerifyNext, and
// remembers each as verified.
func verifyForward(store agents.BlockGetter, verified VerifiedSet, base agents.Base, walked []agents.Entry, c cid.Cid) error {
	for i := len(walked) - 1; i >= 0; i-- {
		next, err := agents.VerifyNext(base, walked[i].CID, walked[i].Checkpoint, true, store)
		if err != nil {
			return fmt.Errorf("checkpoint %s: %w", c, err)
		}
		verified.AddBase(next)
		verified.NoteSteps(1)
		base = next
	}
	return nil
}

// objectFetches runs FetchDAGs of checkpoint objects beside a lineage walk,
// at most objectFetchers at once; wait returns the first error.
type objectFetches struct {
	ctx    context.Context
	cancel context.CancelFunc
	f      Fetcher
	peers  []string
	sem    chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	err    error
}

const objectFetchers = 8

func newObjectFetches(ctx context.Context, f Fetcher, peers []string) *objectFetches {
	ctx, cancel := context.WithCancel(ctx)
	return &objectFetches{ctx: ctx, cancel: cancel, f: f, peers: peers, sem: make(chan struct{}, objectFetchers)}
}

func (o *objectFetches) fetch(c cid.Cid, what string) {
	if p, ok := o.f.(Presence); ok && p.Present(o.ctx, c) {
		return
	}
	select {
	case o.sem <- struct{}{}:
	case <-o.ctx.Done():
		return
	}
	o.wg.Go(func() {
		defer func() { <-o.sem }()
		if err := o.f.FetchDAG(o.ctx, c, o.peers); err != nil {
			o.mu.Lock()
			if o.err == nil {
				o.err = fmt.Errorf("%s: %w", what, err)
				o.cancel() // the walk fails: stop the others
			}
			o.mu.Unlock()
		}
	})
}

func (o *objectFetches) wait() error {
	o.wg.Wait()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.err == nil && o.ctx.Err() != nil {
		return o.ctx.Err()
	}
	return o.err
}
