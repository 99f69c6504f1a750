package node

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// TestQueryAsksTheHolder: head records follow custody changes, not
// commits, and a query by DID asks the holder itself. With the default
// 30 s refresh the record lags many commits behind while queries from a
// node outside the group see every commit; when the holder dies, queries
// never call it running, and name the new holder (from a member, and from
// the record the new holder publishes at its epoch) within seconds.
func TestQueryAsksTheHolder(t *testing.T) {
	observer := startMeshes(t, 1, 0)[0] // hosts nothing: it only asks
	var hosts []*Mesh
	for i := 0; i < 3; i++ {
		m, err := StartMesh(context.Background(), MeshConfig{Home: t.TempDir(), Slots: 2, Price: 1000, Logger: quietLogger(),
			Bootstrap: []string{observer.PeerAddrs()[0]}, Custody: custody.DefaultTiming(),
			Run: hosting.RunOptions{TickInterval: 20 * time.Millisecond, CheckpointEvery: 3, Price: -1}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		hosts = append(hosts, m)
	}
	waitHosts(t, append([]*Mesh{observer}, hosts...), 3)
	wasm, man := testagents.Bytes(t, "counter")
	ctx := context.Background()
	res, err := observer.Publish(ctx, wasm, man, 1_000_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	var first *AgentStatus
	eventually(t, "the holder's answer at seq ≥ 20", 30*time.Second, func() error {
		st, err := observer.QueryAgent(ctx, res.DID)
		if err != nil {
			return err
		}
		if st.Source != "holder" || st.Status != "running" || st.Seq < 20 {
			return fmt.Errorf("%s/%s seq %d", st.Source, st.Status, st.Seq)
		}
		first = st
		return nil
	})
	if first.LeaseEpoch != first.Epoch {
		t.Fatalf("a holder that committed at its epoch: lease epoch %d, checkpoint epoch %d", first.LeaseEpoch, first.Epoch)
	}
	holder := meshByPeer(t, hosts, first.Holder)
	if hs, ok := holder.Svc.Status(res.DID); !ok || !hs.Running {
		t.Fatalf("the query names %s as the running holder; its service says %+v", first.Holder, hs)
	}
	data, err := observer.DHT.GetValue(ctx, agents.HeadRecordKey(res.DID))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := agents.ValidateHeadRecord(agents.HeadRecordKey(res.DID), data, time.Now().UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	// ~17 commits a second: per-commit publication would keep the record
	// within a few seqs of the holder.
	if rec.Seq+10 > first.Seq || rec.Holder != first.Holder {
		t.Fatalf("head record at seq %d (holder %s) while the holder committed seq %d: records must follow custody changes, not commits",
			rec.Seq, rec.Holder, first.Seq)
	}

	dead := first.Holder
	holder.Close()
	killed := time.Now()
	var (
		after *AgentStatus
		last  string
	)
	eventually(t, "a query to name the new running holder", 15*time.Second, func() error {
		st, err := observer.QueryAgent(ctx, res.DID)
		if err != nil {
			return err
		}
		if st.Holder == dead && st.Status == "running" {
			t.Fatalf("%v after the kill the query calls the dead holder running: %+v", time.Since(killed), st)
		}
		if seen := st.Source + "/" + st.Status + " " + st.Holder; seen != last {
			last = seen
			t.Logf("%v after the kill: %s", time.Since(killed).Round(time.Millisecond), seen)
		}
		if st.Source == "holder" && st.Holder != dead && st.LeaseEpoch <= first.Epoch {
			t.Fatalf("the new holder %s answers with lease epoch %d, not above the dead holder's %d", st.Holder, st.LeaseEpoch, first.Epoch)
		}
		if st.Holder == dead || st.Status != "running" || st.Source != "holder" {
			return fmt.Errorf("%s/%s holder %s", st.Source, st.Status, st.Holder)
		}
		// The answer's epoch is its checkpoint's: until the new holder's
		// first commit it is the one it took over from.
		if st.Epoch <= first.Epoch {
			return fmt.Errorf("the new holder %s runs, its checkpoint still of epoch %d", st.Holder, st.Epoch)
		}
		after = st
		return nil
	})
	t.Logf("new holder named by queries %v after the kill", time.Since(killed).Round(time.Millisecond))
	if after.Epoch <= first.Epoch || after.Seq < first.Seq {
		t.Fatalf("after failover: epoch %d seq %d; before: epoch %d seq %d", after.Epoch, after.Seq, first.Epoch, first.Seq)
	}
	eventually(t, "the new holder's head record", 10*time.Second, func() error {
		r, err := observer.resolveHeadRecord(ctx, res.DID)
		if err != nil {
			return err
		}
		if r.Holder == dead || r.Holder != after.Holder {
			return fmt.Errorf("record names %s at epoch %d", r.Holder, r.Epoch)
		}
		return nil
	})
}

func meshByPeer(tb testing.TB, ms []*Mesh, id string) *Mesh {
	tb.Helper()
	for _, m := range ms {
		if m.PeerID() == id {
			return m
		}
	}
	tb.Fatalf("no mesh is %s", id)
	return nil
}
