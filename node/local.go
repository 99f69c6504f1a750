// Package node is the composition root: it opens a node's home (content
// store, keystore, node key, WASM runtime) and offers the operations the CLI
// and API expose. It holds no protocol logic of its own.
package node

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/wasmexec"
)

// ErrNotAgentCAR: a CAR file whose roots are not agent checkpoints.
var ErrNotAgentCAR = errors.New("node: CAR file does not hold an agent")

// ErrClosed: the node has been closed.
var ErrClosed = errors.New("node: closed")

// Local is a node's home opened for single-machine use: run, resume,
// inspect, verify, export, import. It is safe for one process at a time.
type Local struct {
	Home    *Home
	Store   *contentstore.Store
	Keys    *keystore.Keystore
	NodeKey ed25519.PrivateKey
	Logger  *slog.Logger

	rtOnce sync.Once
	rt     *wasmexec.Runtime
	rtErr  error

	// verified: checkpoints whose lineage this process verified; loads and
	// standbys' fetches re-verify only what is newer (hosting.Verified).
	verified *hosting.Verified

	ownerOnce sync.Once
	ownerKey  ed25519.PrivateKey
	ownerErr  error

	closeOnce sync.Once
	closeErr  error
}

// OwnerKey is the key that owns the agents this home creates (HOME/owner.key,
// 0600): their genesis names it, and only records it signs may stop, start
// or top them up. It is created on first use and never regenerated.
func (l *Local) OwnerKey() (ed25519.PrivateKey, error) {
	l.ownerOnce.Do(func() {
		var created bool
		l.ownerKey, created, l.ownerErr = loadOrCreateKey(l.Home.OwnerKeyPath(), "owner key", "agents nobody owns")
		if created {
			l.Logger.Info("created owner key", "path", l.Home.OwnerKeyPath(), "owner", agents.DID(l.ownerKey.Public().(ed25519.PublicKey)))
		}
	})
	return l.ownerKey, l.ownerErr
}

// Owner is the did:key of OwnerKey.
func (l *Local) Owner() (string, error) {
	k, err := l.OwnerKey()
	if err != nil {
		return "", err
	}
	return agents.DID(k.Public().(ed25519.PublicKey)), nil
}

// verifiedCheckpoints bounds the verified-lineage cache: a few per agent
// suffice (the latest loaded or accepted), ~100 bytes each.
const verifiedCheckpoints = 1 << 14

// OpenLocal opens (creating if needed) the home at dir. A node key is
// created on first use; an existing but unreadable or corrupt one is an
// error, never replaced.
func OpenLocal(dir string, logger *slog.Logger) (*Local, error) { return openLocal(dir, logger, 0) }

// openLocal is OpenLocal with the store's GC grace period (0: the default).
func openLocal(dir string, logger *slog.Logger, gcGrace time.Duration) (_ *Local, err error) {
	if logger == nil {
		logger = slog.Default()
	}
	h, err := OpenHome(dir)
	if err != nil {
		return nil, err
	}
	l := &Local{Home: h, Logger: logger, verified: hosting.NewVerified(verifiedCheckpoints)}
	defer func() {
		if err != nil {
			err = errors.Join(err, l.Close())
		}
	}()
	opts := []contentstore.Option{contentstore.WithPack(0), contentstore.WithDeferredPackSync(), contentstore.WithLogger(logger)}
	if gcGrace > 0 {
		opts = append(opts, contentstore.WithGCGrace(gcGrace))
	}
	if l.Store, err = contentstore.Open(h.StoreDir(), opts...); err != nil {
		return nil, err
	}
	h.sync = l.Store.Syncer().For(h.path("heads")) // heads share the store's group flushes
	if l.Store.HasPack() {
		h.meta = l.Store
	}

	if l.Keys, err = keystore.Open(h.KeysDir()); err != nil {
		return nil, err
	}
	if l.NodeKey, err = loadOrCreateNodeKey(h.NodeKeyPath(), logger); err != nil {
		return nil, err
	}
	return l, nil
}

func loadOrCreateNodeKey(path string, logger *slog.Logger) (ed25519.PrivateKey, error) {
	k, created, err := loadOrCreateKey(path, "node key", "a new node")
	if created {
		logger.Info("created node key", "path", path, "peer", agents.PeerID(k.Public().(ed25519.PublicKey)))
	}
	return k, err
}

// loadOrCreateKey loads the key at path, creating it only when no file is
// there: a damaged key is never regenerated.
func loadOrCreateKey(path, what, fresh string) (k ed25519.PrivateKey, created bool, err error) {
	k, err = keystore.LoadKey(path, what, fresh)
	if err == nil {
		return k, false, nil
	}
	if _, serr := os.Stat(path); !errors.Is(serr, fs.ErrNotExist) {
		return nil, false, fmt.Errorf("%s %s: %w (it is never regenerated: restore it, or move it away to start as %s)", what, path, err, fresh)
	}
	if k, err = keystore.CreateKey(path, what); err != nil {
		return nil, false, err
	}
	return k, true, nil
}

// EnvWasmCache names a directory of compiled WASM that every home on the
// machine shares instead of its own cache/wasm: a testnet's daemons and a
// test suite's nodes compile each module once, not once per home. wazero
// keys its entries by module and compiler version and writes each by
// rename, so homes and processes can share one.
const EnvWasmCache = "IGOR_WASM_CACHE"

// Runtime returns the node's WASM runtime, created on first use (inspect and
// verify never need one).
func (l *Local) Runtime(ctx context.Context) (*wasmexec.Runtime, error) {
	l.rtOnce.Do(func() {
		dir := l.Home.CacheDir()
		if d := os.Getenv(EnvWasmCache); d != "" {
			dir = d
		}
		l.rt, l.rtErr = wasmexec.NewRuntime(ctx, wasmexec.Config{CacheDir: dir, Logger: l.Logger})
	})
	return l.rt, l.rtErr
}

// Close releases the runtime and store. It is idempotent; the fields stay
// set, so a late caller gets a "closed" error rather than a nil pointer.
func (l *Local) Close() error {
	l.closeOnce.Do(func() {
		var errs []error
		l.rtOnce.Do(func() { l.rtErr = ErrClosed }) // no runtime may be created after Close
		if l.rt != nil {
			errs = append(errs, l.rt.Close(context.Background()))
		}
		if l.Store != nil {
			errs = append(errs, l.Store.Close())
		}
		l.closeErr = errors.Join(errs...)
	})
	return l.closeErr
}

// PeerID is this node's identity as a libp2p peer ID.
func (l *Local) PeerID() string { return agents.PeerID(l.NodeKey.Public().(ed25519.PublicKey)) }

// Env is the hosting environment of this node.
func (l *Local) Env(ctx context.Context, agentLog func(shortDID, msg string)) (hosting.Env, error) {
	rt, err := l.Runtime(ctx)
	if err != nil {
		return hosting.Env{}, err
	}
	return hosting.Env{Runtime: rt, Blocks: l.Store, Heads: l.Home, NodeKey: l.NodeKey, Logger: l.Logger, AgentLog: agentLog, Verified: l.verified}, nil
}

// CreateAgent makes a new agent: a fresh key in the keystore, its module,
// manifest, genesis and checkpoint 0 in the store, and its head here.
func (l *Local) CreateAgent(ctx context.Context, wasm, manifestJSON []byte, budget, price int64, agentLog func(string, string)) (string, hosting.Head, error) {
	return l.createAgent(ctx, wasm, cid.Undef, manifestJSON, budget, price, agentLog)
}

// createAgent is CreateAgent from the module's bytes or, when module is
// defined, from a module already in the store.
func (l *Local) createAgent(ctx context.Context, wasm []byte, module cid.Cid, manifestJSON []byte, budget, price int64, agentLog func(string, string)) (string, hosting.Head, error) {
	man, err := agents.ParseManifest(manifestJSON)
	if err != nil {
		return "", hosting.Head{}, err
	}
	env, err := l.Env(ctx, agentLog)
	if err != nil {
		return "", hosting.Head{}, err
	}
	owner, err := l.Owner()
	if err != nil {
		return "", hosting.Head{}, err
	}
	_, priv, err := agents.GenerateKey(rand.Reader)
	if err != nil {
		return "", hosting.Head{}, err
	}
	did := agents.DID(priv.Public().(ed25519.PublicKey))
	// The key is durable before the head exists: a crash in between leaves
	// an unused key (harmless), never a committed agent nobody can run. A
	// module that fails to load takes its key away again.
	if _, err := l.Keys.Put(priv); err != nil {
		return "", hosting.Head{}, fmt.Errorf("save key of %s: %w", did, err)
	}
	head, err := hosting.Create(ctx, env, hosting.CreateParams{Wasm: wasm, Module: module, Manifest: man, Budget: budget, Price: price, AgentKey: priv, Owner: owner})
	if err != nil {
		if derr := l.Keys.Delete(did); derr != nil {
			err = errors.Join(err, fmt.Errorf("remove the unused key of %s: %w", did, derr))
		}
		return "", hosting.Head{}, err
	}
	return did, head, nil
}

// LoadAgent verifies a local agent's lineage and prepares it to run.
func (l *Local) LoadAgent(ctx context.Context, did string, agentLog func(string, string)) (*hosting.Loaded, hosting.Env, error) {
	head, err := l.Home.Head(did)
	if err != nil {
		return nil, hosting.Env{}, err
	}
	key, err := l.Keys.Get(did)
	if err != nil {
		return nil, hosting.Env{}, err
	}
	env, err := l.Env(ctx, agentLog)
	if err != nil {
		return nil, hosting.Env{}, err
	}
	a, err := hosting.Load(ctx, env, head, key)
	return a, env, err
}

// Export writes the agent's whole DAG (every checkpoint, state, genesis,
// manifest and module) as a CARv1 with the head as its root.
func (l *Local) Export(ctx context.Context, did string, w io.Writer) (cid.Cid, int, error) {
	head, err := l.Home.Head(did)
	if err != nil {
		return cid.Undef, 0, err
	}
	n, err := l.Store.WriteCAR(ctx, w, []cid.Cid{head})
	return head, n, err
}
