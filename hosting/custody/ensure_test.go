package custody

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/internal/testutil"
	"github.com/igor-mesh/igor-node/wasmexec"
)

// copyFetcher fetches from another store (the "peers"), as the block
// exchange does: into the local store, re-hashed by PutBlock. It counts
// what it fetched and can refuse everything (a peer that is gone).
type copyFetcher struct {
	from, to *contentstore.Store
	fetched  int
	gone     bool
}

func (f *copyFetcher) Fetch(_ context.Context, c cid.Cid, _ []string) ([]byte, error) {
	if data, err := f.to.Get(c); err == nil {
		return data, nil
	}
	if f.gone {
		return nil, errors.New("peer gone")
	}
	data, err := f.from.Get(c)
	if err != nil {
		return nil, err
	}
	f.fetched++
	return data, f.to.PutBlock(c, data)
}

func (f *copyFetcher) FetchDAG(ctx context.Context, root cid.Cid, peers []string) error {
	data, err := f.Fetch(ctx, root, peers)
	if err != nil {
		return err
	}
	links, err := contentstore.Links(root, data)
	if err != nil {
		return err
	}
	for _, l := range links {
		if err := f.FetchDAG(ctx, l, peers); err != nil {
			return err
		}
	}
	return nil
}

// TestEnsureLineage: a standby's fetch-before-acknowledge walk over a real
// agent's lineage (checkpoint 0 from hosting.Create: genesis, manifest,
// module, state), from another node's store into an empty one.
func TestEnsureLineage(t *testing.T) {
	ctx := context.Background()
	open := func() *contentstore.Store {
		st, err := contentstore.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	remote := open()
	rt, err := wasmexec.NewRuntime(ctx, wasmexec.Config{CacheDir: testutil.WasmCacheDir(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close(ctx)
	_, nodeKey, _ := ed25519.GenerateKey(rand.Reader)
	env := hosting.Env{Runtime: rt, Blocks: remote, Heads: nopHeads{}, NodeKey: nodeKey,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError}))}
	wasm, manJSON := testagents.Bytes(t, "counter")
	man, err := agents.ParseManifest(manJSON)
	if err != nil {
		t.Fatal(err)
	}
	create := func() (hosting.Head, ed25519.PrivateKey) {
		_, key, _ := agents.GenerateKey(rand.Reader)
		head, err := hosting.Create(ctx, env, hosting.CreateParams{Wasm: wasm, Manifest: man, Budget: 1_000_000, Price: 1, AgentKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return head, key
	}
	a, aKey := create()
	b, _ := create()
	did := a.Checkpoint.Agent

	local := open()
	f := &copyFetcher{from: remote, to: local}
	verified := hosting.NewVerified(16)
	if err := EnsureLineage(ctx, f, local, verified, did, a.CID, []string{"peer"}, nil); err != nil {
		t.Fatal(err)
	}
	if !verified.Has(a.CID) {
		t.Fatal("a verified lineage is not remembered")
	}
	// Everything resuming needs is here now: the whole DAG of checkpoint 0.
	if _, err := local.Reachable(ctx, []cid.Cid{a.CID}); err != nil {
		t.Fatalf("lineage incomplete after EnsureLineage: %v", err)
	}
	// Again: nothing fetched (all here), still verified.
	n := f.fetched
	f.gone = true
	if err := EnsureLineage(ctx, f, local, verified, did, a.CID, nil, nil); err != nil || f.fetched != n {
		t.Fatalf("second walk: %v, fetched %d more", err, f.fetched-n)
	}

	// The holder's next checkpoint, its predecessor accepted here (stop):
	// checked in one step from the base kept for it — the store (genesis,
	// manifest, the checkpoint below) is not read at all.
	next := func(mut func(*agents.Checkpoint)) cid.Cid {
		cp := *a.Checkpoint
		cp.Seq, cp.Prev, cp.Tick, cp.Calls, cp.Metered = 1, a.CID, a.Checkpoint.Tick+1, 1, 0
		mut(&cp)
		if err := cp.Sign(aKey, nodeKey); err != nil {
			t.Fatal(err)
		}
		data, c, err := cp.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.PutBlock(c, data); err != nil {
			t.Fatal(err)
		}
		return c
	}
	f.gone = false
	if _, ok := verified.Base(a.CID); !ok {
		t.Fatal("no base kept for a verified checkpoint")
	}
	stop := map[string]bool{a.CID.String(): true}
	counted := &countingGetter{BlockGetter: local}
	good := next(func(*agents.Checkpoint) {})
	if err := EnsureLineage(ctx, f, counted, verified, did, good, []string{"peer"}, stop); err != nil {
		t.Fatal(err)
	}
	if _, ok := verified.Base(good); !ok || counted.n != 0 {
		t.Fatalf("next checkpoint: base kept %t, %d store reads (want one step, none)", ok, counted.n)
	}
	// A rule broken in that step is caught there: a budget that grows.
	bad := next(func(cp *agents.Checkpoint) { cp.Budget++ })
	if err := EnsureLineage(ctx, f, counted, verified, did, bad, []string{"peer"}, stop); !errors.Is(err, agents.ErrBudgetIncreased) || verified.Has(bad) {
		t.Fatalf("budget increased in one step: %v (verified %t)", err, verified.Has(bad))
	}

	// A Fetcher that tells a DAG is here starts no fetch of a state that
	// is (a standby's pushed state); a state that is not here is fetched.
	pf := &presentFetcher{copyFetcher: copyFetcher{from: remote, to: local}}
	if err := EnsureLineage(ctx, pf, local, hosting.NewVerified(16), did, a.CID, nil, nil); err != nil || slices.Contains(pf.roots, a.Checkpoint.State) {
		t.Fatalf("state present: %v; fetches of %v", err, pf.roots)
	}
	local3 := open()
	if err := local3.PutBlock(b.CID, mustGet(t, remote, b.CID)); err != nil {
		t.Fatal(err)
	}
	pf3 := &presentFetcher{copyFetcher: copyFetcher{from: remote, to: local3}}
	if err := EnsureLineage(ctx, pf3, local3, hosting.NewVerified(16), b.Checkpoint.Agent, b.CID, nil, nil); err != nil || !slices.Contains(pf3.roots, b.Checkpoint.State) {
		t.Fatalf("state absent: %v; fetches of %v", err, pf3.roots)
	}
	if _, err := local3.Reachable(ctx, []cid.Cid{b.CID}); err != nil {
		t.Fatalf("lineage incomplete after the walk: %v", err)
	}

	// Another agent's checkpoint under this agent's DID: refused, not
	// remembered.
	err = EnsureLineage(ctx, f, local, verified, did, b.CID, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "belongs to") || verified.Has(b.CID) {
		t.Fatalf("another agent's checkpoint: %v (verified %t)", err, verified.Has(b.CID))
	}
	// Its state missing everywhere: the walk fails, the checkpoint is not
	// remembered as verified.
	local2 := open()
	if err := local2.PutBlock(b.CID, mustGet(t, remote, b.CID)); err != nil {
		t.Fatal(err)
	}
	f2 := &copyFetcher{from: local2, to: local2, gone: true}
	verified2 := hosting.NewVerified(16)
	if err := EnsureLineage(ctx, f2, local2, verified2, b.Checkpoint.Agent, b.CID, nil, nil); err == nil || verified2.Has(b.CID) {
		t.Fatalf("state missing: %v (verified %t)", err, verified2.Has(b.CID))
	}
}

// presentFetcher is a copyFetcher that tells a DAG is here
// (custody.Presence) and records the roots it was asked to fetch.
type presentFetcher struct {
	copyFetcher
	roots []cid.Cid
}

func (f *presentFetcher) Present(ctx context.Context, root cid.Cid) bool {
	_, err := f.to.Reachable(ctx, []cid.Cid{root})
	return err == nil
}

func (f *presentFetcher) FetchDAG(ctx context.Context, root cid.Cid, peers []string) error {
	f.roots = append(f.roots, root)
	return f.copyFetcher.FetchDAG(ctx, root, peers)
}

type countingGetter struct {
	agents.BlockGetter
	n int
}

func (g *countingGetter) Get(c cid.Cid) ([]byte, error) {
	g.n++
	return g.BlockGetter.Get(c)
}

func mustGet(t *testing.T, st *contentstore.Store, c cid.Cid) []byte {
	t.Helper()
	data, err := st.Get(c)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

type nopHeads struct{}

func (nopHeads) SetHead(string, cid.Cid) error { return nil }
