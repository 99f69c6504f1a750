package hosting_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/wasmexec"
	"github.com/ipfs/go-cid"
)

// createJournaled creates the example agent name with "journal" set in
// its manifest, owned by owner (if not nil).
func (f *fixture) createJournaled(t testing.TB, name string, owner ...ed25519.PublicKey) (*hosting.Loaded, ed25519.PrivateKey) {
	t.Helper()
	wasmPath, manPath := testagents.Path(t, name)
	wasm, _ := os.ReadFile(wasmPath)
	manJSON, _ := os.ReadFile(manPath)
	man, err := agents.ParseManifest(manJSON)
	if err != nil {
		t.Fatal(err)
	}
	man.Journal = true
	_, key, _ := agents.GenerateKey(rand.Reader)
	ctx := context.Background()
	p := hosting.CreateParams{Wasm: wasm, Manifest: man, Budget: 1_000_000_000, Price: 1_000_000, AgentKey: key}
	if len(owner) > 0 {
		p.Owner = agents.DID(owner[0])
	}
	head, err := hosting.Create(ctx, f.env, p)
	if err != nil {
		t.Fatal(err)
	}
	a, err := hosting.Load(ctx, f.env, head.CID, key)
	if err != nil {
		t.Fatal(err)
	}
	return a, key
}

// A journaled agent's holder writes one step per tick — its log, the state
// every CheckpointEvery ticks — and the state at the end; replaying the
// journal from the last state reaches the live instance's state exactly.
func TestJournaledRunWritesEveryTick(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, _ := f.createJournaled(t, "heartbeat")
	res, err := hosting.Run(ctx, f.env, a, fast(7, 5))
	if err != nil {
		t.Fatal(err)
	}
	lin, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{ExpectDID: a.DID})
	if err != nil {
		t.Fatal(err)
	}
	// seq 0, ticks 1..7 journaled (state at tick 5), tick 7's state written down.
	if len(lin.Entries) != 9 {
		t.Fatalf("lineage has %d checkpoints, want 9", len(lin.Entries))
	}
	for k, e := range lin.Entries {
		cp := e.Checkpoint
		journaled := k >= 1 && k <= 7
		hasState := k == 0 || k == 5 || k == 8
		if cp.Journal.Defined() != journaled || cp.State.Defined() != hasState {
			t.Fatalf("seq %d (tick %d): journal %t state %t; want %t %t", k, cp.Tick, cp.Journal.Defined(), cp.State.Defined(), journaled, hasState)
		}
	}
	want, err := f.st.ReadObject(res.Head.Checkpoint.State, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	e7 := lin.Entries[7]
	got, err := hosting.StateAt(ctx, f.env, hosting.Head{CID: e7.CID, Checkpoint: e7.Checkpoint})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("replaying ticks 6 and 7 from tick 5's state does not reach the live instance's state")
	}
	e6 := lin.Entries[6]
	if got6, err := hosting.StateAt(ctx, f.env, hosting.Head{CID: e6.CID, Checkpoint: e6.Checkpoint}); err != nil || bytes.Equal(got6, want) {
		t.Fatalf("state at tick 6 (err %v) equals tick 7's: the check proves nothing", err)
	}
}

// A new holder resuming from a journaled head (its predecessor was fenced,
// so no state was written since tick 5) replays ticks 6 and 7 with their
// recorded observations and goes on at tick 8: no tick runs twice.
func TestJournaledTakeoverRunsNoTickTwice(t *testing.T) {
	f := newFixture(t)
	a, key := f.createJournaled(t, "heartbeat")
	ctx, cancel := context.WithCancelCause(context.Background())
	opts := fast(0, 5)
	opts.OnTick = func(tick uint64) {
		if tick == 7 {
			cancel(hosting.ErrFenced) // the lease ended: no final checkpoint
		}
	}
	res, err := hosting.Run(ctx, f.env, a, opts)
	if err != nil {
		t.Fatal(err)
	}
	if h := res.Head.Checkpoint; h.Tick != 7 || h.State.Defined() {
		t.Fatalf("fenced holder's head: tick %d, state %t; want tick 7 without state", h.Tick, h.State.Defined())
	}
	b, err := hosting.Load(context.Background(), f.env, res.Head.CID, key)
	if err != nil {
		t.Fatal(err)
	}
	res, err = hosting.Run(context.Background(), f.env, b, fast(3, 5))
	if err != nil {
		t.Fatal(err)
	}
	if h := res.Head.Checkpoint; h.Tick != 10 || !h.State.Defined() {
		t.Fatalf("new holder's head: tick %d, state %t", h.Tick, h.State.Defined())
	}
	if _, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{ExpectDID: a.DID}); err != nil {
		t.Fatal(err)
	}
	f.logs.mu.Lock()
	defer f.logs.mu.Unlock()
	var ticks []string
	for _, l := range f.logs.lines {
		if i := strings.Index(l, "tick="); i >= 0 {
			ticks = append(ticks, strings.Fields(l[i:])[0])
		}
	}
	if got := strings.Join(ticks, " "); got != "tick=1 tick=2 tick=3 tick=4 tick=5 tick=6 tick=7 tick=8 tick=9 tick=10" {
		t.Fatalf("ticks run: %s (each once, in order, expected)", got)
	}
}

// The next tick waits until the group holds the previous one.
func TestJournaledTickWaitsForCommit(t *testing.T) {
	f := newFixture(t)
	a, _ := f.createJournaled(t, "counter")
	var mu sync.Mutex
	var seqs []uint64
	var ticks uint64
	release := make(chan struct{})
	blocked := make(chan struct{})
	opts := fast(5, 100)
	opts.OnTick = func(tick uint64) { mu.Lock(); ticks = tick; mu.Unlock() }
	opts.AwaitCommit = func(ctx context.Context, seq uint64) error {
		mu.Lock()
		seqs = append(seqs, seq)
		mu.Unlock()
		if seq == 3 {
			close(blocked)
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
	done := make(chan error, 1)
	go func() {
		_, err := hosting.Run(context.Background(), f.env, a, opts)
		done <- err
	}()
	<-blocked
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	during := ticks
	mu.Unlock()
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if during != 3 {
		t.Fatalf("%d ticks ran while tick 3's step was not committed; want 3", during)
	}
	if got := seqs; len(got) != 5 || got[0] != 1 || got[4] != 5 {
		t.Fatalf("awaited seqs %v, want 1..5", got)
	}
}

// verify --replay's core: every journaled tick re-executed reaches every
// stored state; a holder that re-signed a tick with a changed observation
// is caught at the first state that no longer follows.
func TestReplayLineage(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a, key := f.createJournaled(t, "heartbeat")
	res, err := hosting.Run(ctx, f.env, a, fast(12, 5))
	if err != nil {
		t.Fatal(err)
	}
	lin, err := agents.VerifyLineage(res.Head.CID, f.st, agents.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := hosting.ReplayLineage(ctx, f.env.Runtime, f.st, lin)
	if err != nil {
		t.Fatal(err)
	}
	// States at ticks 5 and 10 (journaled steps with state) and 12 (written down).
	if rep.Divergence != nil || rep.Ticks != 12 || rep.Compared != 3 || rep.Unjournaled != 0 {
		t.Fatalf("replay of a true lineage: %+v (divergence %+v)", rep, rep.Divergence)
	}

	// A holder with both keys rewrites tick 7's random bytes and re-signs
	// everything above: the lineage verifies, the replay does not.
	entries := lin.Entries
	log7, err := f.st.ReadObject(entries[7].Checkpoint.Journal, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	tl, err := wasmexec.DecodeTickLog(log7)
	if err != nil {
		t.Fatal(err)
	}
	for k := range tl.Entries {
		if tl.Entries[k].Kind == wasmexec.Rand {
			tl.Entries[k].Data[0] ^= 0xff
		}
	}
	forged, err := f.st.PutObjectBytes(tl.Encode())
	if err != nil {
		t.Fatal(err)
	}
	prev := entries[6].CID
	for _, e := range entries[7:] {
		cp := *e.Checkpoint
		cp.Prev = prev
		if cp.Seq == 7 {
			cp.Journal = forged
		}
		if err := cp.Sign(key, f.env.NodeKey); err != nil {
			t.Fatal(err)
		}
		data, c, err := cp.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.st.Put(cid.DagCBOR, data); err != nil {
			t.Fatal(err)
		}
		prev = c
	}
	lin2, err := agents.VerifyLineage(prev, f.st, agents.VerifyOptions{})
	if err != nil {
		t.Fatalf("the forged lineage should pass the signature rules: %v", err)
	}
	rep, err = hosting.ReplayLineage(ctx, f.env.Runtime, f.st, lin2)
	if err != nil {
		t.Fatal(err)
	}
	if d := rep.Divergence; d == nil || d.Seq != 10 || !strings.Contains(d.Reason, "first difference at byte") {
		t.Fatalf("forged observation at tick 7: divergence %+v, want one at seq 10 (the next stored state)", d)
	}
}

// An owner's record on a journaled head without state (its holder was
// fenced): the state is replayed and written down first, then the record
// applies to it; a head inside a tick refuses records.
func TestControlOnJournaledHead(t *testing.T) {
	f := newFixture(t)
	ownerPub, owner, _ := agents.GenerateKey(rand.Reader)
	a, key := f.createJournaled(t, "heartbeat", ownerPub)
	ctx, cancel := context.WithCancelCause(context.Background())
	opts := fast(0, 5)
	opts.OnTick = func(tick uint64) {
		if tick == 7 {
			cancel(hosting.ErrFenced)
		}
	}
	res, err := hosting.Run(ctx, f.env, a, opts)
	if err != nil {
		t.Fatal(err)
	}
	head := res.Head
	want, err := hosting.StateAt(context.Background(), f.env, head)
	if err != nil {
		t.Fatal(err)
	}
	ctl := &agents.Control{Kind: agents.ControlStop, Agent: a.DID, Seq: 1, Issued: 1}
	if err := ctl.Sign(owner); err != nil {
		t.Fatal(err)
	}
	stopped, err := hosting.ApplyControl(context.Background(), f.env, head, key, head.Checkpoint.Epoch, ctl)
	if err != nil {
		t.Fatal(err)
	}
	c := stopped.Checkpoint
	if !c.Stopped || c.Tick != 7 || c.Seq != head.Checkpoint.Seq+2 {
		t.Fatalf("stop on a journaled head: %+v (head seq %d)", c, head.Checkpoint.Seq)
	}
	got, err := f.st.ReadObject(c.State, 1<<20)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the stopped agent's state is not the replayed one (err %v)", err)
	}
	if _, err := agents.VerifyLineage(stopped.CID, f.st, agents.VerifyOptions{}); err != nil {
		t.Fatal(err)
	}

	// A partial head (an intent) refuses the record.
	partial := *head.Checkpoint
	partial.Prev, partial.Seq, partial.Tick, partial.Partial = head.CID, head.Checkpoint.Seq+1, head.Checkpoint.Tick+1, true
	partial.Calls, partial.Metered = 0, 0
	if err := partial.Sign(key, f.env.NodeKey); err != nil {
		t.Fatal(err)
	}
	data, pc, err := partial.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.st.Put(cid.DagCBOR, data); err != nil {
		t.Fatal(err)
	}
	_, err = hosting.ApplyControl(context.Background(), f.env, hosting.Head{CID: pc, Checkpoint: &partial}, key, partial.Epoch, ctl)
	if !errors.Is(err, hosting.ErrInsideTick) {
		t.Fatalf("record on a partial head: %v, want ErrInsideTick", err)
	}
}

// An agent this host's price could never run is refused before anything
// is stored (it used to leave a genesis and a checkpoint 0 that verify
// calls INVALID).
func TestCreateRefusesPriceAboveLimitFirst(t *testing.T) {
	f := newFixture(t)
	wasmPath, manPath := testagents.Path(t, "counter")
	wasm, _ := os.ReadFile(wasmPath)
	manJSON, _ := os.ReadFile(manPath)
	man, err := agents.ParseManifest(manJSON)
	if err != nil {
		t.Fatal(err)
	}
	man.MigrationPolicy.MaxPricePerSecond = 10
	_, key, _ := agents.GenerateKey(rand.Reader)
	_, err = hosting.Create(context.Background(), f.env, hosting.CreateParams{Wasm: wasm, Manifest: man, Budget: 1000, Price: 11, AgentKey: key})
	if !errors.Is(err, hosting.ErrPriceTooHigh) {
		t.Fatalf("err = %v, want ErrPriceTooHigh", err)
	}
	if n := len(f.heads.m); n != 0 {
		t.Fatalf("%d heads written", n)
	}
	var blocks int
	if err := f.st.ForEach(func(cid.Cid) error { blocks++; return nil }); err != nil {
		t.Fatal(err)
	}
	if blocks != 0 {
		t.Fatalf("%d blocks stored for a refused agent", blocks)
	}
}
