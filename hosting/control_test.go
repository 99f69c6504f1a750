package hosting_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// TestControlThenRun: a real agent stopped, topped up and started by its
// owner's records between runs: a stopped head does not run, the records'
// checkpoints keep tick and state, and the ticks after the start make
// checkpoints whose whole lineage verifies.
func TestControlThenRun(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	head, _, owner, key := ownedCounter(t, f)
	var err error
	did := head.Checkpoint.Agent
	run := func(h hosting.Head, ticks uint64) (hosting.Head, error) {
		a, err := hosting.Load(ctx, f.env, h.CID, key)
		if err != nil {
			t.Fatal(err)
		}
		res, err := hosting.Run(ctx, f.env, a, fast(ticks, 2))
		return res.Head, err
	}
	apply := func(h hosting.Head, kind agents.ControlKind, amount int64, signer ed25519.PrivateKey) (hosting.Head, error) {
		ctl := &agents.Control{Kind: kind, Agent: did, Seq: h.Checkpoint.Controls + 1, Amount: amount, Issued: 1}
		if err := ctl.Sign(signer); err != nil {
			t.Fatal(err)
		}
		return hosting.ApplyControl(ctx, f.env, h, key, h.Checkpoint.Epoch, ctl)
	}
	if head, err = run(head, 4); err != nil {
		t.Fatal(err)
	}
	_, stranger, _ := agents.GenerateKey(rand.Reader)
	if _, err := apply(head, agents.ControlStop, 0, stranger); !errors.Is(err, agents.ErrControl) {
		t.Fatalf("a stranger's stop: %v, want ErrControl", err)
	}
	stopped, err := apply(head, agents.ControlStop, 0, owner)
	if err != nil {
		t.Fatal(err)
	}
	if c := stopped.Checkpoint; !c.Stopped || c.Tick != head.Checkpoint.Tick || !c.State.Equals(head.Checkpoint.State) || c.Seq != head.Checkpoint.Seq+1 {
		t.Fatalf("stop checkpoint %+v after %+v", c, head.Checkpoint)
	}
	if _, err := run(stopped, 2); !errors.Is(err, hosting.ErrAgentStopped) {
		t.Fatalf("running a stopped agent: %v, want ErrAgentStopped", err)
	}
	topped, err := apply(stopped, agents.ControlTopUp, 250_000, owner)
	if err != nil {
		t.Fatal(err)
	}
	if topped.Checkpoint.Budget != stopped.Checkpoint.Budget+250_000 || !topped.Checkpoint.Stopped {
		t.Fatalf("top-up: budget %d after %d, stopped %t", topped.Checkpoint.Budget, stopped.Checkpoint.Budget, topped.Checkpoint.Stopped)
	}
	started, err := apply(topped, agents.ControlStart, 0, owner)
	if err != nil {
		t.Fatal(err)
	}
	end, err := run(started, 4)
	if err != nil {
		t.Fatal(err)
	}
	if end.Checkpoint.Tick != head.Checkpoint.Tick+4 || end.Checkpoint.Controls != 3 {
		t.Fatalf("after the start: %+v", end.Checkpoint)
	}
	lin, err := agents.VerifyLineage(end.CID, f.st, agents.VerifyOptions{ExpectDID: did})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(lin.Entries); n != int(end.Checkpoint.Seq)+1 {
		t.Fatalf("lineage of %d checkpoints, head seq %d", n, end.Checkpoint.Seq)
	}
}

// TestUpgradeCarriesStateOrRollsBack: an owner's upgrade whose new module
// cannot resume the state (counter configured for another state size)
// writes nothing; one that can carries the state on, and the ticks after
// it run the new manifest — the whole lineage verifies.
func TestUpgradeCarriesStateOrRollsBack(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	head, man, owner, key := ownedCounter(t, f)
	a, err := hosting.Load(ctx, f.env, head.CID, key)
	if err != nil {
		t.Fatal(err)
	}
	res, err := hosting.Run(ctx, f.env, a, fast(4, 2))
	if err != nil {
		t.Fatal(err)
	}
	head = res.Head
	upgrade := func(args string, timeoutMs int) (hosting.Head, error) {
		m2 := *man
		m2.Args = args
		m2.ResourceLimits.TickTimeoutMs = uint64(timeoutMs)
		manCID, err := f.st.Put(cid.Raw, m2.Canonical())
		if err != nil {
			t.Fatal(err)
		}
		ctl := &agents.Control{Kind: agents.ControlUpgrade, Agent: head.Checkpoint.Agent, Seq: head.Checkpoint.Controls + 1,
			Module: head.Checkpoint.Module, Manifest: manCID, Issued: 1}
		if err := ctl.Sign(owner); err != nil {
			t.Fatal(err)
		}
		if err := hosting.PrepareUpgrade(ctx, f.env, ctl); err != nil {
			t.Fatal(err)
		}
		return hosting.ApplyControl(ctx, f.env, head, key, head.Checkpoint.Epoch, ctl)
	}
	if _, err := upgrade("state_size=128", 500); !errors.Is(err, hosting.ErrUpgradeFailed) || !strings.Contains(err.Error(), "agent_resume") {
		t.Fatalf("upgrade to a counter of another state size: %v, want ErrUpgradeFailed naming agent_resume", err)
	}
	if got := f.heads.get(head.Checkpoint.Agent); !got.Equals(head.CID) {
		t.Fatalf("a failed upgrade moved the head to %s", got)
	}
	up, err := upgrade("state_size=64", 500)
	if err != nil {
		t.Fatal(err)
	}
	if c := up.Checkpoint; c.Tick != head.Checkpoint.Tick || !c.State.Equals(head.Checkpoint.State) || c.Manifest.Equals(head.Checkpoint.Manifest) {
		t.Fatalf("upgrade checkpoint %+v after %+v: same tick and (for this module) the same state bytes, a new manifest", c, head.Checkpoint)
	}
	a, err = hosting.Load(ctx, f.env, up.CID, key)
	if err != nil {
		t.Fatal(err)
	}
	if a.Manifest.ResourceLimits.TickTimeoutMs != 500 {
		t.Fatalf("the run after the upgrade loads manifest %+v", a.Manifest.ResourceLimits)
	}
	res, err = hosting.Run(ctx, f.env, a, fast(3, 3))
	if err != nil {
		t.Fatal(err)
	}
	if res.Head.Checkpoint.Tick != head.Checkpoint.Tick+3 {
		t.Fatalf("after the upgrade: tick %d, want %d", res.Head.Checkpoint.Tick, head.Checkpoint.Tick+3)
	}
	if _, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// ownedCounter creates a counter agent owned by a fresh key.
func ownedCounter(t *testing.T, f *fixture) (head hosting.Head, man *agents.Manifest, owner, key ed25519.PrivateKey) {
	t.Helper()
	wasmPath, manPath := testagents.Path(t, "counter")
	wasm, _ := os.ReadFile(wasmPath)
	manJSON, _ := os.ReadFile(manPath)
	man, err := agents.ParseManifest(manJSON)
	if err != nil {
		t.Fatal(err)
	}
	ownerPub, owner, _ := agents.GenerateKey(rand.Reader)
	_, key, _ = agents.GenerateKey(rand.Reader)
	head, err = hosting.Create(context.Background(), f.env, hosting.CreateParams{Wasm: wasm, Manifest: man, Budget: 1_000_000, Price: 1_000_000,
		AgentKey: key, Owner: agents.DID(ownerPub)})
	if err != nil {
		t.Fatal(err)
	}
	return head, man, owner, key
}
