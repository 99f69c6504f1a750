package custody

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

func testGroup(t *testing.T) *Group {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Group{Version: 1, Agent: agents.DID(pub), Members: []string{"12D3KooWA", "12D3KooWB", "12D3KooWC"},
		Genesis: "bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", TermMs: 60_000}
}

func TestStoreRoundTripAndCrashSafety(t *testing.T) {
	st := store{dir: t.TempDir()}
	g := testGroup(t)
	if err := st.saveGroup(g); err != nil {
		t.Fatal(err)
	}
	id := agents.AgentID(g.Agent)
	got, err := st.loadGroup(id)
	if err != nil || got.Agent != g.Agent || len(got.Members) != 3 || got.TermMs != g.TermMs {
		t.Fatalf("loadGroup: %+v %v", got, err)
	}
	// A group file without a lease state is damage (Join writes the lease
	// state first): refused, never read as the zero state.
	if _, err := st.loadHardState(g.Agent); !errors.Is(err, ErrNoLeaseState) || !strings.Contains(err.Error(), "must not take part") {
		t.Fatalf("missing hardstate: %v", err)
	}
	want := lease.HardState{Epoch: 7, Accepted: lease.Checkpoint{Seq: 12, ID: "bafy-x"}, AcceptedAt: 6}
	if err := st.saveHardState(g.Agent, want); err != nil {
		t.Fatal(err)
	}
	if hs, err := st.loadHardState(g.Agent); err != nil || !hs.Equal(want) {
		t.Fatalf("hardstate round trip: %+v %v", hs, err)
	}
	for _, f := range []string{"group.json", "hardstate"} {
		fi, err := os.Stat(filepath.Join(st.agentDir(g.Agent), f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
	}
	// A torn or corrupt hardstate is an error that says the member must
	// not take part — never a silent zero state (it could promise twice).
	os.WriteFile(filepath.Join(st.agentDir(g.Agent), "hardstate"), []byte{1, 7}, 0o600)
	if _, err := st.loadHardState(g.Agent); err == nil || !strings.Contains(err.Error(), "must not take part") {
		t.Fatalf("corrupt hardstate: %v", err)
	}
	if ids, err := st.list(); err != nil || len(ids) != 1 || ids[0] != id {
		t.Fatalf("list: %v %v", ids, err)
	}
	if err := st.remove(g.Agent); err != nil {
		t.Fatal(err)
	}
	if ids, _ := st.list(); len(ids) != 0 {
		t.Fatalf("after remove: %v", ids)
	}
}

func TestGroupValidation(t *testing.T) {
	cases := map[string]func(g *Group){
		"version":      func(g *Group) { g.Version = 2 },
		"agent":        func(g *Group) { g.Agent = "did:key:nope" },
		"no members":   func(g *Group) { g.Members = nil },
		"unsorted":     func(g *Group) { g.Members = []string{"b", "a"} },
		"duplicate":    func(g *Group) { g.Members = []string{"a", "a"} },
		"too many":     func(g *Group) { g.Members = []string{"a", "b", "c", "d", "e", "f", "g", "h"} },
		"genesis":      func(g *Group) { g.Genesis = "not-a-cid" },
		"term":         func(g *Group) { g.TermMs = 0 },
		"empty member": func(g *Group) { g.Members = []string{""} },
	}
	for name, mutate := range cases {
		g := testGroup(t)
		mutate(g)
		if err := g.validate(); !errors.Is(err, ErrBadGroup) {
			t.Errorf("%s: %v", name, err)
		}
	}
	// A group file with an unknown field, or naming another agent than its
	// directory, is refused on load.
	st := store{dir: t.TempDir()}
	g := testGroup(t)
	if err := st.saveGroup(g); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(st.agentDir(g.Agent), "group.json")
	data, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(data), `"version"`, `"extra": 1, "version"`, 1)), 0o600)
	if _, err := st.loadGroup(agents.AgentID(g.Agent)); !errors.Is(err, ErrBadGroup) {
		t.Fatalf("unknown field: %v", err)
	}
	other := testGroup(t)
	if err := st.saveGroup(other); err != nil {
		t.Fatal(err)
	}
	os.Rename(st.agentDir(other.Agent), filepath.Join(st.dir, "z6Mkwrong"))
	if _, err := st.loadGroup("z6Mkwrong"); !errors.Is(err, ErrBadGroup) {
		t.Fatalf("misfiled group: %v", err)
	}
}

// Every incarnation of a group has its own ID: the same members started
// again at a higher epoch (a regroup or revive) are a different group, so a
// member restored with the old group's state cannot take part in the new one.
func TestGroupIDDistinguishesIncarnations(t *testing.T) {
	g := testGroup(t)
	base := g.ID()
	if again := g.ID(); again != base {
		t.Fatalf("ID not deterministic: %v %v", base, again)
	}
	later := *g
	later.StartEpoch = 8
	other := *g
	other.Members = []string{"12D3KooWA", "12D3KooWB", "12D3KooWD"}
	from := *g
	from.Genesis = "bafyreigwglw6flpsze4ogcs6pcuzqcvyolpeljrwr76bvy5hvbvaxw3vfe"
	for name, o := range map[string]*Group{"start epoch": &later, "members": &other, "start checkpoint": &from} {
		if o.ID() == base {
			t.Errorf("%s: same group ID %v", name, base)
		}
	}
	// The publisher and the term are not part of the identity.
	same := *g
	same.Publisher, same.TermMs = "12D3KooWZ", 1000
	if same.ID() != base {
		t.Errorf("publisher/term changed the group ID")
	}
}

// metaStore is a custody store with Meta in a content store's pack (cs), and
// one over the same directory without Meta (files: what an older node wrote).
func metaStore(t *testing.T) (dir string, files, st store, cs *contentstore.Store) {
	t.Helper()
	cs, err := contentstore.Open(t.TempDir(), contentstore.WithPack(0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	dir = t.TempDir()
	return dir, store{dir: dir}, store{dir: dir, meta: cs}, cs
}

// The node keeps lease states in its content store's pack (Meta): the same
// round trip, a file left by an older node moved in, and removal.
func TestStoreLeaseStateInMeta(t *testing.T) {
	dir, files, st, cs := metaStore(t)
	g := testGroup(t)
	if err := st.saveGroup(g); err != nil {
		t.Fatal(err)
	}
	if _, err := st.loadHardState(g.Agent); !errors.Is(err, ErrNoLeaseState) {
		t.Fatalf("no lease state: %v", err)
	}
	if _, err := LoadPersisted(dir, cs); !errors.Is(err, ErrNoLeaseState) {
		t.Fatalf("LoadPersisted of a group without its lease state: %v", err)
	}
	// An older node's file is read, then moved into the log.
	old := lease.HardState{Epoch: 3, Accepted: lease.Checkpoint{Seq: 4, ID: "bafy-old"}, AcceptedAt: 3}
	if err := files.saveHardState(g.Agent, old); err != nil {
		t.Fatal(err)
	}
	if hs, err := st.loadHardState(g.Agent); err != nil || !hs.Equal(old) {
		t.Fatalf("file of an older node: %+v %v", hs, err)
	}
	if err := st.migrate(g.Agent); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(st.agentDir(g.Agent), "hardstate")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the file stayed after migrate: %v", err)
	}
	if hs, err := st.loadHardState(g.Agent); err != nil || !hs.Equal(old) {
		t.Fatalf("after migrate: %+v %v", hs, err)
	}
	// New states go to the log only, and win.
	want := lease.HardState{Epoch: 7, Accepted: lease.Checkpoint{Seq: 12, ID: "bafy-x"}, AcceptedAt: 6}
	if err := st.saveHardState(g.Agent, want); err != nil {
		t.Fatal(err)
	}
	if hs, err := st.loadHardState(g.Agent); err != nil || !hs.Equal(want) {
		t.Fatalf("round trip: %+v %v", hs, err)
	}
	if _, err := os.Stat(filepath.Join(st.agentDir(g.Agent), "hardstate")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a lease state file was written beside the log: %v", err)
	}
	ps, err := LoadPersisted(dir, cs)
	if err != nil || len(ps) != 1 || !ps[0].HardState.Equal(want) {
		t.Fatalf("LoadPersisted: %+v %v", ps, err)
	}
	// A damaged record is refused like a damaged file.
	if err := cs.PutMeta(hardStateKey(g.Agent), []byte{1, 7}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.loadHardState(g.Agent); err == nil || !strings.Contains(err.Error(), "must not take part") {
		t.Fatalf("corrupt lease state record: %v", err)
	}
	if err := st.remove(g.Agent); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.GetMeta(hardStateKey(g.Agent)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("lease state record after remove: %v", err)
	}
}

// With Meta a group is a record in the log: no directory is created, it is
// listed and loaded from there, a group file an older node wrote is read
// and moved in by migrate (the directory goes), a damaged record is
// refused, and remove deletes the group and its lease state.
func TestStoreGroupInMeta(t *testing.T) {
	dir, files, st, cs := metaStore(t)
	hs := lease.HardState{Epoch: 2, Accepted: lease.Checkpoint{Seq: 1, ID: "bafy-y"}, AcceptedAt: 2}
	g := testGroup(t)
	if err := st.saveHardState(g.Agent, hs); err != nil {
		t.Fatal(err)
	}
	if err := st.saveGroup(g); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.agentDir(g.Agent)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a group with Meta created a directory (stat: %v)", err)
	}
	// An older node's membership: both files.
	old := testGroup(t)
	if err := files.saveHardState(old.Agent, hs); err != nil {
		t.Fatal(err)
	}
	if err := files.saveGroup(old); err != nil {
		t.Fatal(err)
	}
	ids, err := st.list()
	if want := sortedStrings(agents.AgentID(g.Agent), agents.AgentID(old.Agent)); err != nil || strings.Join(ids, " ") != strings.Join(want, " ") {
		t.Fatalf("list = %v, %v; want %v", ids, err, want)
	}
	for _, want := range []*Group{g, old} {
		if got, err := st.loadGroup(agents.AgentID(want.Agent)); err != nil || got.ID() != want.ID() {
			t.Fatalf("loadGroup(%s) = %+v, %v", want.Agent, got, err)
		}
	}
	if err := st.migrate(old.Agent); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(st.agentDir(old.Agent)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("migrate left the older node's directory (stat: %v)", err)
	}
	ps, err := LoadPersisted(dir, cs)
	if err != nil || len(ps) != 2 {
		t.Fatalf("LoadPersisted after migrate = %+v, %v; want both memberships", ps, err)
	}
	for _, p := range ps {
		if !p.HardState.Equal(hs) {
			t.Fatalf("LoadPersisted: lease state %+v, want %+v", p.HardState, hs)
		}
	}
	// A crash between migrate's writes leaves the record and the file: one membership.
	if err := files.saveGroup(old); err != nil {
		t.Fatal(err)
	}
	if ids, err := st.list(); err != nil || len(ids) != 2 {
		t.Fatalf("list with a group in both places = %v, %v; want each once", ids, err)
	}
	// A damaged record is refused, naming the record.
	if err := cs.PutMeta(groupKey(agents.AgentID(g.Agent)), []byte(`{"version":1`)); err != nil {
		t.Fatal(err)
	}
	if _, err := st.loadGroup(agents.AgentID(g.Agent)); !errors.Is(err, ErrBadGroup) || !strings.Contains(err.Error(), "group record custody/group/") {
		t.Fatalf("damaged group record: %v", err)
	}
	// An empty record is damage too, not a missing file.
	if err := cs.PutMeta(groupKey(agents.AgentID(g.Agent)), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := st.loadGroup(agents.AgentID(g.Agent)); !errors.Is(err, ErrBadGroup) {
		t.Fatalf("empty group record: %v", err)
	}
	for _, x := range []*Group{g, old} {
		if err := st.remove(x.Agent); err != nil {
			t.Fatal(err)
		}
	}
	if ids, err := st.list(); err != nil || len(ids) != 0 {
		t.Fatalf("list after remove = %v, %v", ids, err)
	}
	if keys, err := cs.MetaKeys("custody/"); err != nil || len(keys) != 0 {
		t.Fatalf("records left after remove: %v, %v", keys, err)
	}
	if _, err := os.Stat(st.agentDir(old.Agent)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("remove left the older node's directory (stat: %v)", err)
	}
}

func sortedStrings(v ...string) []string { slices.Sort(v); return v }
