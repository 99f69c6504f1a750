package hosting_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
)

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestServiceHostsAgentsAtNewEpoch(t *testing.T) {
	f := newFixture(t)
	var mu sync.Mutex
	var commits []hosting.Head
	svc, err := hosting.NewService(f.env, hosting.ServiceConfig{
		Slots: 2,
		Run:   hosting.RunOptions{TickInterval: time.Millisecond, CheckpointEvery: 2, Price: -1},
		OnCheckpoint: func(h hosting.Head, key ed25519.PrivateKey, _ time.Time) {
			if agents.DID(key.Public().(ed25519.PublicKey)) != h.Checkpoint.Agent {
				t.Errorf("OnCheckpoint got a key that is not the agent's")
			}
			mu.Lock()
			commits = append(commits, h)
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	a, key := f.create(t, "counter", 1_000_000)
	if _, err := svc.Accept(context.Background(), hosting.Lease{Head: a.Head.CID, Key: key, Epoch: 0}); !errors.Is(err, hosting.ErrStaleEpoch) {
		t.Fatalf("epoch 0 offer on an epoch-0 head: want ErrStaleEpoch, got %v", err)
	}
	st, err := svc.Accept(context.Background(), hosting.Lease{Head: a.Head.CID, Key: key, Epoch: 1})
	if err != nil || !st.Running || st.DID != a.DID {
		t.Fatalf("accept: %+v %v", st, err)
	}
	if _, err := svc.Accept(context.Background(), hosting.Lease{Head: a.Head.CID, Key: key, Epoch: 2}); !errors.Is(err, hosting.ErrAlreadyHosted) {
		t.Fatalf("second accept: want ErrAlreadyHosted, got %v", err)
	}
	b, keyB := f.create(t, "counter", 1_000_000)
	if _, err := svc.Accept(context.Background(), hosting.Lease{Head: b.Head.CID, Key: keyB, Epoch: 1}); err != nil {
		t.Fatal(err)
	}
	c, keyC := f.create(t, "counter", 1_000_000)
	if _, err := svc.Accept(context.Background(), hosting.Lease{Head: c.Head.CID, Key: keyC, Epoch: 1}); !errors.Is(err, hosting.ErrNoCapacity) {
		t.Fatalf("third agent on 2 slots: want ErrNoCapacity, got %v", err)
	}
	if svc.FreeSlots() != 0 {
		t.Fatalf("free slots %d", svc.FreeSlots())
	}
	waitFor(t, "commits of both agents", func() bool {
		sa, _ := svc.Status(a.DID)
		sb, _ := svc.Status(b.DID)
		return sa.Tick >= 4 && sb.Tick >= 4
	})
	if err := svc.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, s := range svc.Hosted() {
		if s.Running || s.Epoch != 1 || s.StopReason != hosting.StopContext {
			t.Fatalf("after Close: %+v", s)
		}
		head := f.heads.get(s.DID)
		lin, err := agents.VerifyLineage(head, f.st, agents.VerifyOptions{ExpectDID: s.DID})
		if err != nil {
			t.Fatal(err)
		}
		if lin.Head().Checkpoint.Epoch != 1 || lin.Head().Checkpoint.Tick != s.Tick {
			t.Fatalf("final checkpoint %+v, status %+v", lin.Head().Checkpoint, s)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(commits) < 4 {
		t.Fatalf("OnCheckpoint called %d times", len(commits))
	}
	if _, err := svc.Accept(context.Background(), hosting.Lease{Head: c.Head.CID, Key: keyC, Epoch: 1}); !errors.Is(err, hosting.ErrServiceClosed) {
		t.Fatalf("accept after close: %v", err)
	}
}
