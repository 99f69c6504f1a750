package node

import (
	"context"
	"crypto/ed25519"
	"io"
	"os"

	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/atomicfile"
)

// The command line's view of the packages below node. cmd/ imports node
// (and agents' data types) only, so the layers under it can change without
// touching the commands (DECISIONS D55; scripts/check.sh enforces it).
type (
	// RunOptions control a local run and the daemon's runner (hosting).
	RunOptions = hosting.RunOptions
	// RunResult is how a local run ended.
	RunResult = hosting.Result
	// CustodyStatus is one custody membership as a node reports it.
	CustodyStatus = custody.Status
)

var (
	// ErrBudgetExhausted: the agent's budget is spent; it cannot run.
	ErrBudgetExhausted = hosting.ErrBudgetExhausted
	// ErrStoreInUse: a running node holds the home's content store.
	ErrStoreInUse = contentstore.ErrInUse
)

// RunAgent runs an agent loaded by Local.LoadAgent until ctx ends, its
// budget runs out, or opts.MaxTicks (hosting.Run).
func RunAgent(ctx context.Context, env hosting.Env, a *hosting.Loaded, opts RunOptions) (RunResult, error) {
	return hosting.Run(ctx, env, a, opts)
}

// WriteFileAtomic writes data to path durably and atomically (temporary
// file, fsync, rename, directory fsync).
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return atomicfile.Write(path, data, perm, true)
}

// WriteFileAtomicFrom is WriteFileAtomic with the contents written by fill.
func WriteFileAtomicFrom(path string, perm os.FileMode, fill func(io.Writer) error) error {
	return atomicfile.WriteFrom(path, perm, true, fill)
}

// EncodeKeyFile encodes an agent key in the keystore's file format.
func EncodeKeyFile(priv ed25519.PrivateKey) []byte { return keystore.EncodeKeyFile(priv) }

// DecodeKeyFile decodes a key file written by EncodeKeyFile (or keys export).
func DecodeKeyFile(data []byte) (ed25519.PrivateKey, error) { return keystore.DecodeKeyFile(data) }

// AgentKey reads did's key from the keystore of the home at dir without
// opening its content store, so it works beside a running daemon.
func AgentKey(dir, did string) (ed25519.PrivateKey, error) {
	h, err := OpenHome(dir)
	if err != nil {
		return nil, err
	}
	ks, err := keystore.Open(h.KeysDir())
	if err != nil {
		return nil, err
	}
	return ks.Get(did)
}
