package custody

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting/lease"
	"github.com/igor-mesh/igor-node/internal/atomicfile"
)

// Group is what a member persists about one custody group when it joins
// (a record in the node's log, Meta key custody/group/<agent id>; an older
// node wrote HOME/custody/<agent id>/group.json, still read, and moved
// into the log on restore). It never changes while the group
// lives: Members are the founding members, which with the other fields
// identify the group (ID). The current members are replicated with the
// lease state (lease.HardState.Conf), changed in place by the holder.
type Group struct {
	Version int      `json:"version"`
	Agent   string   `json:"agent"`   // the agent's DID
	Members []string `json:"members"` // peer IDs, sorted
	Genesis string   `json:"genesis"` // CID of the checkpoint the group started from
	TermMs  int64    `json:"term_ms"` // lease term: placement is reviewed this often
	// Publisher is the peer that formed the group; before the group's first
	// epoch it (and afterwards only the holder) may ask a member to leave.
	Publisher string `json:"publisher,omitempty"`
	// StartEpoch is the epoch the group started at (0, or the revived
	// lineage's epoch): the publisher may undo the group while no member
	// has moved past it.
	StartEpoch uint64 `json:"start_epoch,omitempty"`
}

// GroupID identifies one incarnation of an agent's custody group: its
// members, where it started and at which epoch. Frames carry it, so a
// member restored with the state of a group the others have left (a
// regroup, a revive) cannot take part in a newer group of the same agent
// that happens to have the same members.
type GroupID [8]byte

func (id GroupID) String() string { return hex.EncodeToString(id[:]) }

// ID computes the group's ID.
func (g *Group) ID() GroupID {
	h := sha256.New()
	fmt.Fprintf(h, "igor-custody-group/v1\x00%s\x00%s\x00%d", g.Agent, g.Genesis, g.StartEpoch)
	for _, m := range g.Members {
		fmt.Fprintf(h, "\x00%s", m)
	}
	var id GroupID
	copy(id[:], h.Sum(nil))
	return id
}

func (g *Group) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s", ErrBadGroup, fmt.Sprintf(format, a...))
	}
	if g.Version != 1 {
		return bad("version %d, this node reads 1", g.Version)
	}
	if _, err := agents.ParseDID(g.Agent); err != nil {
		return bad("agent: %v", err)
	}
	if len(g.Members) == 0 || len(g.Members) > maxMembers {
		return bad("%d members, want 1..%d", len(g.Members), maxMembers)
	}
	if !slices.IsSorted(g.Members) || len(slices.Compact(slices.Clone(g.Members))) != len(g.Members) {
		return bad("members must be sorted and distinct")
	}
	for _, m := range g.Members {
		if m == "" || len(m) > 128 {
			return bad("member %q is not a peer ID", m)
		}
	}
	if _, err := cid.Decode(g.Genesis); err != nil {
		return bad("genesis %q: %v", g.Genesis, err)
	}
	if g.TermMs <= 0 {
		return bad("term %d ms must be positive", g.TermMs)
	}
	return nil
}

// maxMembers: the manifest allows up to 6 standbys.
const maxMembers = 7

// store keeps the custody state of every agent this node is a member for.
// Each write is atomic and durable before it returns (internal/atomicfile;
// with a Syncer, the HardStates of many groups written at once share one
// flush); every read is validated, and a member whose state cannot be read
// does not take part (it could otherwise promise an epoch twice).
type store struct {
	dir  string
	sync *atomicfile.Syncer // nil: fsync each file
	meta Meta               // nil: HardStates are files
}

// Meta is a durable key-value space for the HardStates of all groups (the
// node's content store pack, contentstore.Store.PutMeta): one log whose
// appends share flushes, instead of a file, a rename and a flush per
// group per commit (DECISIONS D52); the group records too. GetMeta of an
// absent key returns an error wrapping fs.ErrNotExist. A synced record
// makes every earlier write to the log durable with it: the genesis a
// group names, whose blocks a member may just have fetched into the log
// without a flush of their own (contentstore.WithDeferredPackSync).
type Meta interface {
	PutMeta(key string, value []byte) error
	// PutMetaDeferred writes a record the next PutMeta makes durable.
	PutMetaDeferred(key string, value []byte) error
	GetMeta(key string) ([]byte, error)
	DeleteMeta(key string) error
	MetaKeys(prefix string) ([]string, error)
}

func hardStateKey(did string) string { return "custody/hardstate/" + agents.AgentID(did) }

// LeaseStateKey is the Meta key of did's lease state (for tools and tests
// that inspect or damage a home).
func LeaseStateKey(did string) string { return hardStateKey(did) }

func (s store) agentDir(did string) string { return filepath.Join(s.dir, agents.AgentID(did)) }

func groupKey(agentID string) string { return groupPrefix + agentID }

// groupPrefix is the Meta key prefix of group records.
const groupPrefix = "custody/group/"

// saveGroup persists g durably. With Meta it is one synced record in the
// log, which also makes the blocks fetched into the log before it durable
// (the genesis it names); without, HOME/custody/<agent id>/group.json.
func (s store) saveGroup(g *Group) error {
	if err := g.validate(); err != nil {
		return err
	}
	data, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		return err
	}
	if s.meta != nil {
		return s.meta.PutMeta(groupKey(agents.AgentID(g.Agent)), data)
	}
	dir := s.agentDir(g.Agent)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := atomicfile.SyncDir(s.dir); err != nil {
		return err
	}
	return atomicfile.Write(filepath.Join(dir, "group.json"), data, 0o600, true)
}

// loadGroup reads the group of agentID: its Meta record, else the file an
// older node (or a node without Meta) wrote.
func (s store) loadGroup(agentID string) (*Group, error) {
	data, path, err := s.read("group record", groupKey(agentID), filepath.Join(s.dir, agentID, "group.json"))
	if err != nil {
		return nil, err
	}
	var g Group
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&g); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadGroup, path, err)
	}
	if err := g.validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if agents.AgentID(g.Agent) != agentID {
		return nil, fmt.Errorf("%w: %s names agent %s", ErrBadGroup, path, g.Agent)
	}
	return &g, nil
}

func (s store) saveHardState(did string, hs lease.HardState) error {
	return s.putHardState(did, hs, false)
}

// saveHardStateDeferred writes a lease state that the next durable write
// to Meta makes durable (Join: the group record that follows it).
// Without Meta it is a durable file, as saveHardState.
func (s store) saveHardStateDeferred(did string, hs lease.HardState) error {
	return s.putHardState(did, hs, true)
}

func (s store) putHardState(did string, hs lease.HardState, deferred bool) error {
	data, err := lease.EncodeHardState(hs)
	if err != nil {
		return err
	}
	if s.meta != nil && deferred {
		return s.meta.PutMetaDeferred(hardStateKey(did), data)
	}
	if s.meta != nil {
		return s.meta.PutMeta(hardStateKey(did), data)
	}
	if err := os.MkdirAll(s.agentDir(did), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteSynced(filepath.Join(s.agentDir(did), "hardstate"), data, 0o600, s.sync)
}

// loadHardState returns the persisted state of a membership whose group
// file is here. Join writes the lease state before the group file, so
// none at all is damage (ErrNoLeaseState), never the zero state: a member
// restarted from zero could promise an epoch twice. With Meta, a record
// there wins over a file (a file is what an older node wrote; migrate
// moves it).
func (s store) loadHardState(did string) (lease.HardState, error) {
	data, path, err := s.read("lease state record", hardStateKey(did), filepath.Join(s.agentDir(did), "hardstate"))
	if errors.Is(err, os.ErrNotExist) {
		return lease.HardState{}, fmt.Errorf("custody group of %s: %w: neither %s nor a lease state file; this node must not take part in the group "+
			"(it may have promised an epoch it no longer remembers): the group replaces this member; remove the membership on the stopped node with 'igor-node fsck --forget %s'",
			did, ErrNoLeaseState, hardStateKey(did), did)
	}
	if err != nil {
		return lease.HardState{}, err
	}
	hs, err := lease.DecodeHardState(data)
	if err != nil {
		return lease.HardState{}, fmt.Errorf("%s: %w (this node must not take part in the group until it is repaired or removed)", path, err)
	}
	return hs, nil
}

// read returns the Meta record under key, or else (no Meta, or no such
// record) the file an older node wrote at path, with the name of where it
// came from for errors. A record that exists wins, even empty (damage its
// decoding reports, not a missing file). Neither: an error wrapping
// os.ErrNotExist.
func (s store) read(what, key, path string) (data []byte, from string, err error) {
	if s.meta != nil {
		data, err := s.meta.GetMeta(key)
		if err == nil {
			return data, what + " " + key, nil
		}
		if !errors.Is(err, os.ErrNotExist) {
			return nil, "", err
		}
	}
	data, err = os.ReadFile(path)
	return data, path, err
}

// migrate moves the files an older node wrote (a HardState, a group file)
// into Meta: each written there durably before the files go, the lease
// state first (a group without it is damage).
func (s store) migrate(did string) error {
	if s.meta == nil {
		return nil
	}
	dir := s.agentDir(did)
	if _, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	path := filepath.Join(dir, "hardstate")
	if _, err := os.Stat(path); err == nil {
		hs, err := s.loadHardState(did)
		if err != nil {
			return err
		}
		if err := s.saveHardState(did, hs); err != nil {
			return err
		}
		if err := os.Remove(path); err != nil {
			return err
		}
		if err := atomicfile.SyncDir(dir); err != nil {
			return err
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "group.json")); err == nil {
		g, err := s.loadGroup(agents.AgentID(did))
		if err != nil {
			return err
		}
		if err := s.saveGroup(g); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return atomicfile.SyncDir(s.dir)
}

// remove forgets a membership: the group first (without it there is no
// membership), then its lease state.
func (s store) remove(did string) error {
	if s.meta != nil {
		if err := s.meta.DeleteMeta(groupKey(agents.AgentID(did))); err != nil {
			return err
		}
	}
	if _, err := os.Stat(s.agentDir(did)); err == nil {
		if err := os.RemoveAll(s.agentDir(did)); err != nil {
			return err
		}
		if err := atomicfile.SyncDir(s.dir); err != nil {
			return err
		}
	}
	if s.meta != nil {
		return s.meta.DeleteMeta(hardStateKey(did))
	}
	return nil
}

// list returns the agent IDs with a group: a Meta record, or a custody
// directory holding group.json (an older node's, or a node without Meta).
func (s store) list() ([]string, error) {
	var out []string
	if s.meta != nil {
		keys, err := s.meta.MetaKeys(groupPrefix)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			out = append(out, strings.TrimPrefix(k, groupPrefix))
		}
	}
	ents, err := os.ReadDir(s.dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	for _, e := range ents {
		if !e.IsDir() || strings.HasSuffix(e.Name(), ".tmp") {
			continue
		}
		// A directory without group.json is a Join that a crash cut short
		// before the group was durable: nothing was promised (the hard
		// state is written after the group), so it is no membership.
		if _, err := os.Stat(filepath.Join(s.dir, e.Name(), "group.json")); errors.Is(err, os.ErrNotExist) {
			continue
		}
		out = append(out, e.Name())
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// Forget removes the persisted membership of did (its group and lease
// state) under dir (HOME/custody, the records in meta if not nil), for a
// stopped node whose membership cannot be restored (igor-node fsck
// --forget). The agent key stays. Errors: ErrNotMember when none is here.
func Forget(dir string, meta Meta, did string) error {
	st := store{dir: dir, meta: meta}
	ids, err := st.list()
	if err != nil {
		return err
	}
	if !slices.Contains(ids, agents.AgentID(did)) {
		return fmt.Errorf("%w: no custody membership of %s is persisted here", ErrNotMember, did)
	}
	return st.remove(did)
}

// Persisted is one custody membership as stored under HOME/custody.
type Persisted struct {
	Group     *Group
	HardState lease.HardState
}

// LoadPersisted reads and validates every membership persisted under dir
// (HOME/custody, the lease states in meta if not nil) exactly as Restore
// does, without starting anything: it is
// for offline checks (igor-node fsck). The readable memberships are
// returned; each unreadable one is an error (naming its file, wrapping
// ErrBadGroup for a bad group) in the joined error.
func LoadPersisted(dir string, meta Meta) ([]Persisted, error) {
	st := store{dir: dir, meta: meta}
	ids, err := st.list()
	if err != nil {
		return nil, err
	}
	var out []Persisted
	var errs []error
	for _, id := range ids {
		g, err := st.loadGroup(id)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		hs, err := st.loadHardState(g.Agent)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, Persisted{Group: g, HardState: hs})
	}
	return out, errors.Join(errs...)
}
