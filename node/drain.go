package node

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrNowhereToDrain: agents run here but no other node is connected, so
// none can be handed off; waiting would only use up the drain's timeout.
var ErrNowhereToDrain = errors.New("node: nowhere to drain: no other node is connected")

// drainPeerCheck is how often a drain looks whether this node still has a
// peer to hand agents to.
const drainPeerCheck = 200 * time.Millisecond

// Drain moves every agent this node runs elsewhere (see custody.Manager.Drain)
// and waits until none runs here or ctx ends. The node advertises no free
// slot from the start, so nobody places new agents on it meanwhile.
//
// When agents run here and no other node is connected — at the start or at
// any point while draining — there is nowhere to hand them: Drain returns
// ErrNowhereToDrain at once instead of waiting for ctx. The node stays
// marked as draining either way.
//
// Errors: ErrNowhereToDrain, or ctx's error (wrapped with what still runs).
func (m *Mesh) Drain(ctx context.Context) error {
	m.Custody.BeginDrain()
	m.kickAdvertise()
	dctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		t := time.NewTicker(drainPeerCheck)
		defer t.Stop()
		for {
			if len(m.Host.Network().Peers()) == 0 {
				cancel(ErrNowhereToDrain)
				return
			}
			select {
			case <-dctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	err := m.Custody.Drain(dctx)
	if err != nil && errors.Is(context.Cause(dctx), ErrNowhereToDrain) {
		running := 0
		for _, st := range m.Custody.Status() {
			if st.Running || st.Moving {
				running++
			}
		}
		return fmt.Errorf("%w; %d agent(s) still run here", ErrNowhereToDrain, running)
	}
	return err
}
