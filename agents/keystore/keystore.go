// Package keystore keeps Ed25519 private keys on disk: agent keys in a
// directory, one file per DID, and the node's own identity key.
//
// Files are written crash-safely (temp file, fsync, hard link into place,
// fsync of the directory) with mode 0600, are never overwritten, and are
// verified on every read: a key file must decode, match the DID it is filed
// under, and be private to its owner. A corrupt key is reported, never
// replaced. Leftover *.tmp files from a crash are ignored, and removed by
// Open once they are a minute old (they hold key material, mode 0600).
package keystore

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/internal/atomicfile"
)

// Sentinel errors; compare with errors.Is.
var (
	ErrNotFound    = errors.New("keystore: key not found")
	ErrCorrupt     = errors.New("keystore: corrupt key file")
	ErrPermissions = errors.New("keystore: key file permissions too open")
	ErrExists      = errors.New("keystore: a different key file already exists")
)

const keySuffix = ".key"

// Keystore is a directory of agent key files named "<agent id>.key"
// (agent id = agents.AgentID). It is safe for concurrent use by several
// goroutines and processes: writes never replace a file.
type Keystore struct {
	dir string
}

// Open returns the keystore in dir, creating it with mode 0700 if needed.
// It fails with a clear error when dir cannot be created or written.
func Open(dir string) (*Keystore, error) {
	if dir == "" {
		return nil, errors.New("keystore: no directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("keystore: create directory %s: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("keystore: %s is not a directory", dir)
	}
	probe, err := os.CreateTemp(dir, ".probe-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("keystore: directory %s is not writable (check its owner and mode): %w", dir, err)
	}
	name := probe.Name()
	probe.Close()
	os.Remove(name)
	// Temp files a crash left hold key material: remove the old ones.
	_, _ = atomicfile.RemoveStale(dir)
	return &Keystore{dir: dir}, nil
}

// Dir returns the keystore's directory.
func (k *Keystore) Dir() string { return k.dir }

// Path returns the file that holds (or would hold) the key of did, or ""
// for an invalid DID.
func (k *Keystore) Path(did string) string {
	id := agents.AgentID(did)
	if id == "" {
		return ""
	}
	return filepath.Join(k.dir, id+keySuffix)
}

// Put stores priv and returns its DID. Storing a key that is already there
// is a no-op. It never replaces a file: a different or corrupt file under
// the same name fails with ErrExists or ErrCorrupt. A malformed priv fails
// with agents.ErrWrongKey.
func (k *Keystore) Put(priv ed25519.PrivateKey) (string, error) {
	if err := checkKeyPair(priv); err != nil {
		return "", err
	}
	did := agents.DID(priv.Public().(ed25519.PublicKey))
	path := k.Path(did)
	err := writeNoClobber(path, EncodeKeyFile(priv))
	if err == nil {
		return did, nil
	}
	if !errors.Is(err, fs.ErrExist) {
		return "", fmt.Errorf("keystore: write %s: %w", path, err)
	}
	have, gerr := k.Get(did)
	if gerr != nil {
		return "", fmt.Errorf("keystore: %s already exists and cannot be read; move it away and import again: %w", path, gerr)
	}
	if !bytes.Equal(have, priv) {
		return "", fmt.Errorf("%w: %s holds another key for %s; refusing to overwrite it", ErrExists, path, did)
	}
	return did, nil
}

// Get returns the private key of did. Errors wrap agents.ErrBadDID,
// ErrNotFound, ErrPermissions (the file is accessible to group or others)
// or ErrCorrupt (bad format, or a key that is not did's).
func (k *Keystore) Get(did string) (ed25519.PrivateKey, error) {
	if _, err := agents.ParseDID(did); err != nil {
		return nil, err
	}
	path := k.Path(did)
	priv, err := readKeyFile(path)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no key for %s in %s; import it with 'igor-node keys import FILE'", ErrNotFound, did, k.dir)
	}
	if err != nil {
		return nil, err
	}
	if got := agents.DID(priv.Public().(ed25519.PublicKey)); got != did {
		return nil, fmt.Errorf("%w: %s holds the key of %s, not of %s", ErrCorrupt, path, got, did)
	}
	return priv, nil
}

// List returns the DIDs of the key files present, sorted. It does not read
// the files (Get verifies them). Temporary files and names that are not
// "<agent id>.key" are ignored.
func (k *Keystore) List() ([]string, error) {
	ents, err := os.ReadDir(k.dir)
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	var dids []string
	for _, e := range ents {
		id, ok := strings.CutSuffix(e.Name(), keySuffix)
		if !ok || !e.Type().IsRegular() {
			continue
		}
		did := "did:key:" + id
		if agents.AgentID(did) != id {
			continue
		}
		dids = append(dids, did)
	}
	sort.Strings(dids)
	return dids, nil
}

// Delete removes the key of did (used only to undo the creation of an agent
// that was never placed). A missing key is not an error.
func (k *Keystore) Delete(did string) error {
	p := k.Path(did)
	if p == "" {
		return fmt.Errorf("%w: %q", agents.ErrBadDID, did)
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keystore: %w", err)
	}
	return syncDir(k.dir)
}

// LoadNodeKey reads the node's identity key from path. A missing file is
// ErrNotFound; an existing file that is unreadable, corrupt (ErrCorrupt) or
// too open (ErrPermissions) is an error and is NEVER replaced: the node's
// peer ID is its identity in the mesh and in every checkpoint it signed.
func LoadNodeKey(path string) (ed25519.PrivateKey, error) {
	return LoadKey(path, "node key", "a new peer ID")
}

// CreateNodeKey generates a node key and writes it to path (mode 0600,
// parent directory created 0700). It never replaces an existing file: if
// path exists it fails with ErrExists.
func CreateNodeKey(path string) (ed25519.PrivateKey, error) { return CreateKey(path, "node key") }

// LoadKey reads a key file that names an identity (what: "node key",
// "owner key"; fresh: what starting over gives) with LoadNodeKey's rules:
// it is never replaced when damaged.
func LoadKey(path, what, fresh string) (ed25519.PrivateKey, error) {
	priv, err := readKeyFile(path)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: no %s at %s", ErrNotFound, what, path)
	}
	if errors.Is(err, ErrCorrupt) {
		return nil, fmt.Errorf("%w (the %s is never regenerated automatically: restore it from a backup, or remove the file to start over with %s)", err, what, fresh)
	}
	return priv, err
}

// CreateKey generates a key and writes it to path as CreateNodeKey does.
func CreateKey(path, what string) (ed25519.PrivateKey, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("keystore: create directory for %s: %w", path, err)
	}
	_, priv, err := agents.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := writeNoClobber(path, EncodeKeyFile(priv)); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("%w: %s %s already exists; refusing to replace it", ErrExists, what, path)
		}
		return nil, fmt.Errorf("keystore: write %s %s: %w", what, path, err)
	}
	return priv, nil
}

// readKeyFile reads and verifies one key file. Errors wrap ErrNotFound,
// ErrPermissions or ErrCorrupt, and name path.
func readKeyFile(path string) (ed25519.PrivateKey, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, path)
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("keystore: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %s is not a regular file", ErrCorrupt, path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("%w: %s has mode %04o and is accessible to other users; fix it with: chmod 600 %s", ErrPermissions, path, perm, path)
	}
	data, err := io.ReadAll(io.LimitReader(f, MaxKeyFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("keystore: read %s: %w", path, err)
	}
	priv, err := DecodeKeyFile(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return priv, nil
}

// writeNoClobber writes data to path crash-safely and only if path does not
// exist: temp file in the same directory, write, fsync, then a hard link to
// path (atomic, and unlike rename it fails instead of replacing), then fsync
// of the directory. An existing path gives an error wrapping fs.ErrExist.
func writeNoClobber(path string, data []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		// After a successful link this only removes the second name.
		if rerr := os.Remove(tmp); rerr != nil && err == nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = rerr
		}
	}()
	if err := f.Chmod(0o600); err != nil && runtime.GOOS != "windows" {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Link(tmp, path); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be fsynced there; NTFS journals metadata
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// checkKeyPair rejects a private key whose public half was not derived from
// its seed: it would sign with one key and claim another.
func checkKeyPair(priv ed25519.PrivateKey) error {
	if len(priv) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: private key is %d bytes, want %d", agents.ErrWrongKey, len(priv), ed25519.PrivateKeySize)
	}
	if !bytes.Equal(ed25519.NewKeyFromSeed(priv.Seed()), priv) {
		return fmt.Errorf("%w: the private key's public half does not match its seed", agents.ErrWrongKey)
	}
	return nil
}
