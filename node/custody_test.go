package node

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
)

// holderOf returns the mesh node running did, or nil.
func holderOf(ms []*Mesh, did string) *Mesh {
	for _, m := range ms {
		if st, err := m.Custody.Agent(did); err == nil && st.Running {
			return m
		}
	}
	return nil
}

// TestCustodyTakeoverAfterHolderDies: the holder disappears without a word;
// a standby takes over at a higher epoch from the last committed checkpoint
// within a few seconds, and the lineage stays a single chain.
func TestCustodyTakeoverAfterHolderDies(t *testing.T) {
	ms := startMeshes(t, 5, 2)
	waitHosts(t, ms, 5)
	wasm, man := testagents.Bytes(t, "counter")
	ctx := context.Background()
	res, err := ms[0].Publish(ctx, wasm, man, 10_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	var holder *Mesh
	eventually(t, "a holder runs the agent", 15*time.Second, func() error {
		if holder = holderOf(ms, res.DID); holder == nil {
			return fmt.Errorf("nobody runs it")
		}
		return nil
	})
	if holder.PeerID() != res.Holder {
		t.Fatalf("running on %s, publish chose %s", holder.PeerID(), res.Holder)
	}
	// Let it commit a few checkpoints at a majority.
	var committedSeq uint64
	eventually(t, "commits replicated to the standbys", 20*time.Second, func() error {
		for _, m := range ms {
			if m == holder || !slices.Contains(res.Members, m.PeerID()) {
				continue
			}
			st, err := m.Custody.Agent(res.DID)
			if err != nil {
				return err
			}
			if st.AcceptedSeq < 3 {
				return fmt.Errorf("standby %s accepted seq %d", m.PeerID(), st.AcceptedSeq)
			}
			committedSeq = max(committedSeq, st.AcceptedSeq)
		}
		return nil
	})
	t.Logf("standbys at seq %d", committedSeq)
	stopped := time.Now()
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("holder closed in %v", time.Since(stopped))
	rest := slices.DeleteFunc(slices.Clone(ms), func(m *Mesh) bool { return m == holder })
	var next *Mesh
	eventually(t, "a standby takes over", 20*time.Second, func() error {
		if next = holderOf(rest, res.DID); next == nil {
			return fmt.Errorf("nobody runs it")
		}
		return nil
	})
	took := time.Since(stopped)
	if !slices.Contains(res.Members, next.PeerID()) {
		t.Fatalf("took over by %s, not a member of %v", next.PeerID(), res.Members)
	}
	st, _ := next.Custody.Agent(res.DID)
	if st.Epoch < 2 {
		t.Fatalf("new holder at epoch %d, want ≥ 2", st.Epoch)
	}
	t.Logf("takeover by %s at epoch %d after %v", next.PeerID(), st.Epoch, took)
	// The new holder's checkpoints follow the committed ones: the lineage
	// seen from an observer verifies, with no fork and both holders in it.
	var observer *Mesh
	for _, m := range rest {
		if m != next {
			observer = m
		}
	}
	eventually(t, "the new holder's head record", 30*time.Second, func() error {
		q, err := observer.QueryAgent(ctx, res.DID)
		if err != nil {
			return err
		}
		if q.Holder != next.PeerID() || q.Seq <= committedSeq {
			return fmt.Errorf("head record: holder %s seq %d (committed before the crash: %d)", q.Holder, q.Seq, committedSeq)
		}
		return nil
	})
	rep, err := observer.VerifyRemote(ctx, res.DID)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Valid || len(rep.Forks) != 0 || rep.MaxEpoch < 2 {
		t.Fatalf("verify after takeover: %+v", rep)
	}
	if !slices.Contains(rep.Holders, holder.PeerID()) || !slices.Contains(rep.Holders, next.PeerID()) {
		t.Fatalf("lineage holders %v lack the old %s or new %s holder", rep.Holders, holder.PeerID(), next.PeerID())
	}
}
