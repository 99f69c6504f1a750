package node

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/internal/atomicfile"
)

// Sentinel errors of the node's home directory.
var (
	// ErrUnknownAgent: no agent with that DID has a head in this home.
	ErrUnknownAgent = errors.New("node: unknown agent")
	// ErrHomeUnusable: the home directory cannot be created or written.
	ErrHomeUnusable = errors.New("node: home directory unusable")
	// ErrCorruptHead: a head pointer file is damaged.
	ErrCorruptHead = errors.New("node: corrupt head pointer")
)

// Home is the on-disk layout of one node (see docs/DECISIONS.md):
//
//	DIR/node.key          node identity (Ed25519, 0600)
//	DIR/owner.key         owner of the agents created here (Ed25519, 0600)
//	DIR/store/            content store (blocks, pins)
//	DIR/keys/             agent keystore (0700, files 0600)
//	DIR/heads/<agent id>  CID of each local agent's committed head (nodes
//	                      before the store's pack; now a Meta record
//	                      heads/<agent id> in the store's pack)
//	DIR/cache/wasm/       wazero compilation cache
type Home struct {
	Dir string
	// sync, if set, makes head writes durable in groups with the store's
	// (Local sets it to the content store's Syncer).
	sync *atomicfile.Syncer
	// meta, if set, keeps the heads in the store's pack: a head moves at
	// every commit, and an append to the pack's log costs far less than a
	// file, a rename and a flush (DECISIONS D52). Heads in files (older
	// nodes) are still read; a record wins over a file.
	meta HeadStore
}

// HeadStore is where a Home keeps heads (the content store's Meta).
type HeadStore interface {
	PutMeta(key string, value []byte) error
	GetMeta(key string) ([]byte, error)
	DeleteMeta(key string) error
	MetaKeys(prefix string) ([]string, error)
}

// UseHeadStore keeps heads in hs from now on (fsck sets the store it opened).
func (h *Home) UseHeadStore(hs HeadStore) { h.meta = hs }

const headPrefix = "heads/"

// OpenHome creates the layout under dir if needed and checks that it is
// writable, so a bad --home fails before any work is done.
func OpenHome(dir string) (*Home, error) {
	if dir == "" {
		return nil, fmt.Errorf("%w: empty path", ErrHomeUnusable)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHomeUnusable, err)
	}
	h := &Home{Dir: abs}
	for _, d := range []string{abs, h.path("heads"), h.path("cache", "wasm")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("%w: %s: %v (choose another with --home or IGOR_HOME)", ErrHomeUnusable, d, err)
		}
	}
	probe := h.path(".write-probe")
	if err := os.WriteFile(probe, nil, 0o600); err != nil {
		return nil, fmt.Errorf("%w: %s is not writable: %v (choose another with --home or IGOR_HOME)", ErrHomeUnusable, abs, err)
	}
	os.Remove(probe)
	_, _ = atomicfile.RemoveStale(h.path("heads")) // a crash's leftovers
	return h, nil
}

func (h *Home) path(parts ...string) string {
	return filepath.Join(append([]string{h.Dir}, parts...)...)
}

// StoreDir, KeysDir, CacheDir and NodeKeyPath name the parts of the home.
func (h *Home) StoreDir() string    { return h.path("store") }
func (h *Home) KeysDir() string     { return h.path("keys") }
func (h *Home) CacheDir() string    { return h.path("cache", "wasm") }
func (h *Home) NodeKeyPath() string { return h.path("node.key") }

// OwnerKeyPath is the key owning the agents this home creates.
func (h *Home) OwnerKeyPath() string { return h.path("owner.key") }

func (h *Home) headPath(did string) (string, error) {
	if _, err := agents.ParseDID(did); err != nil {
		return "", err
	}
	return h.path("heads", agents.AgentID(did)), nil
}

// Head returns the committed head of a local agent, or ErrUnknownAgent.
func (h *Home) Head(did string) (cid.Cid, error) {
	p, err := h.headPath(did)
	if err != nil {
		return cid.Undef, err
	}
	var data []byte
	if h.meta != nil {
		data, err = h.meta.GetMeta(headPrefix + agents.AgentID(did))
		if err == nil {
			p = "head record " + headPrefix + agents.AgentID(did)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return cid.Undef, err
		}
	}
	if data == nil {
		data, err = os.ReadFile(p)
	}
	if errors.Is(err, fs.ErrNotExist) {
		return cid.Undef, fmt.Errorf("%w: %s has no checkpoint in %s (run 'igor-node import FILE.car' to bring it here)", ErrUnknownAgent, did, h.Dir)
	}
	if err != nil {
		return cid.Undef, err
	}
	c, err := cid.Decode(strings.TrimSpace(string(data)))
	if err != nil {
		return cid.Undef, fmt.Errorf("%w: %s: %v", ErrCorruptHead, p, err)
	}
	return c, nil
}

// SetHead durably records c as the agent's head: the commit point of a checkpoint.
func (h *Home) SetHead(did string, c cid.Cid) error {
	p, err := h.headPath(did)
	if err != nil {
		return err
	}
	if h.meta != nil {
		return h.meta.PutMeta(headPrefix+agents.AgentID(did), []byte(c.String()+"\n"))
	}
	return atomicfile.WriteSynced(p, []byte(c.String()+"\n"), 0o600, h.sync)
}

// DeferredHeads is a Home whose SetHead does not flush on its own when
// heads are records in the store's pack (HeadStore with PutMetaDeferred):
// the daemon's runner uses it for agents run under custody, whose every
// checkpoint is followed by a durable lease-state write in the same log
// (the holder accepting its own proposal). A crash before that loses at
// most the head's last move — never a committed checkpoint, which custody
// resumes from.
type DeferredHeads struct{ *Home }

// SetHead records c as the agent's head, durable with the next flush.
func (h DeferredHeads) SetHead(did string, c cid.Cid) error {
	d, ok := h.meta.(interface {
		PutMetaDeferred(key string, value []byte) error
	})
	if !ok {
		return h.Home.SetHead(did, c)
	}
	if _, err := h.headPath(did); err != nil {
		return err
	}
	return d.PutMetaDeferred(headPrefix+agents.AgentID(did), []byte(c.String()+"\n"))
}

// RemoveHead forgets a local agent's head (its blocks stay until GC).
func (h *Home) RemoveHead(did string) error {
	p, err := h.headPath(did)
	if err != nil {
		return err
	}
	if h.meta != nil {
		if err := h.meta.DeleteMeta(headPrefix + agents.AgentID(did)); err != nil {
			return err
		}
	}
	if err := os.Remove(p); errors.Is(err, fs.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	return atomicfile.SyncDir(filepath.Dir(p))
}

// Agents lists the DIDs with a head in this home, sorted.
func (h *Home) Agents() ([]string, error) {
	ents, err := os.ReadDir(h.path("heads"))
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if h.meta != nil {
		keys, err := h.meta.MetaKeys(headPrefix)
		if err != nil {
			return nil, err
		}
		for _, k := range keys {
			names = append(names, strings.TrimPrefix(k, headPrefix))
		}
	}
	sort.Strings(names)
	names = slices.Compact(names)
	var out []string
	for _, name := range names {
		if strings.HasSuffix(name, atomicfile.TempSuffix) || strings.HasPrefix(name, ".") {
			continue
		}
		did := "did:key:" + name
		if _, err := agents.ParseDID(did); err != nil {
			continue
		}
		out = append(out, did)
	}
	sort.Strings(out)
	return out, nil
}
