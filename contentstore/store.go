package contentstore

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/igor-mesh/igor-node/internal/atomicfile"
)

// Sentinel errors. Every error returned by this package wraps at most one of
// them (plus, where relevant, the underlying OS error); compare with errors.Is.
var (
	// ErrNotFound: the block (or a block a DAG links to) is not in the store.
	ErrNotFound = errors.New("contentstore: block not found")
	// ErrCorrupt: bytes do not hash to their CID, a DAG-CBOR block does not
	// decode, or a CAR stream is malformed or truncated.
	ErrCorrupt = errors.New("contentstore: corrupt data")
	// ErrTooLarge: a block exceeds MaxBlockSize, an object exceeds
	// MaxObjectSize or the caller's limit, or a CAR header exceeds 1 MiB.
	ErrTooLarge = errors.New("contentstore: too large")
	// ErrClosed: the Store was closed.
	ErrClosed = errors.New("contentstore: store is closed")
	// ErrBadCID: the CID is not a CIDv1 with a sha2-256 multihash and the raw
	// or dag-cbor codec, the only kind this store holds.
	ErrBadCID = errors.New("contentstore: unsupported CID")
	// ErrNotObject: OpenObject/ReadObject/ObjectCIDs was given a DAG-CBOR
	// block that is not a valid igor/chunked/v1 root node.
	ErrNotObject = errors.New("contentstore: not an object root")
	// ErrInUse: another Store (in this or another process) has the directory open.
	ErrInUse = errors.New("contentstore: store directory in use")
	// ErrUninitialized: OpenForCheck found a store directory whose
	// creation was interrupted (blocks/ or pins/ missing, nothing stored):
	// not damage — the next Open completes it.
	ErrUninitialized = errors.New("contentstore: store directory not initialised")
	// ErrNoPack: a Meta record was written to a store opened without WithPack.
	ErrNoPack = errors.New("contentstore: the store has no pack (open it with WithPack)")
)

const (
	// MaxBlockSize bounds every stored block, raw or DAG-CBOR.
	MaxBlockSize = 1 << 20
	// ChunkSize is the size of every chunk of a large object but the last.
	ChunkSize = 1 << 20
	// DefaultGCGrace is how long GC leaves unpinned blocks alone after they
	// were written (or re-Put).
	DefaultGCGrace = 10 * time.Minute
)

// Option configures Open.
type Option func(*config) error

type config struct {
	fsync   bool
	gcGrace time.Duration
	packMax int // blocks up to this size go to the pack; 0: none
	// deferPack: packed blocks are not flushed on their own (WithDeferredPackSync).
	deferPack    bool
	packMemTable uint64 // the pack's largest memtable (packMemTable; tests set others)
	logger       *slog.Logger
}

func defaults(c *config) error {
	c.fsync = true
	c.gcGrace = DefaultGCGrace
	c.packMemTable = packMemTable
	c.logger = slog.Default()
	return nil
}

func (c *config) validate() error {
	if c.gcGrace < 0 {
		return fmt.Errorf("contentstore: GC grace period %v is negative", c.gcGrace)
	}
	if c.deferPack && c.packMax == 0 {
		return errors.New("contentstore: WithDeferredPackSync needs WithPack")
	}
	return nil
}

// WithLogger sends what the store has to say — the pack's errors, write
// stalls and slow disk operations — to l (default: slog.Default()).
func WithLogger(l *slog.Logger) Option {
	return func(c *config) error {
		if l == nil {
			return errors.New("contentstore: WithLogger(nil): pass a logger, or leave the option out for the default")
		}
		c.logger = l
		return nil
	}
}

// WithoutFsync skips every fsync. Benchmarks and throwaway test stores only:
// it DROPS CRASH SAFETY (a power loss can leave empty or partial blocks and
// lose pins; reads would still detect damaged blocks as ErrCorrupt).
func WithoutFsync() Option {
	return func(c *config) error { c.fsync = false; return nil }
}

// WithGCGrace sets how long GC spares blocks that are not reachable from a
// pin, counted from when they were last written or re-Put (default 10m). It
// protects DAGs that are being written and are not pinned yet: pin a root
// within this period after writing its blocks.
func WithGCGrace(d time.Duration) Option {
	return func(c *config) error { c.gcGrace = d; return nil }
}

// Store is a CID-keyed block store in one directory. See the package doc for
// the concurrency rules.
type Store struct {
	dir       string
	blocksDir string
	pinsDir   string
	// pinFiles: pins/ may hold pin files (a store without a pack, or one
	// written before pins moved into it); else Unpin need not look there.
	pinFiles atomic.Bool
	cfg      config // immutable after Open
	lock     *os.File

	// mu guards closed. Held shared by every block/pin operation for its
	// whole filesystem work, exclusively by Close, Delete and each single GC
	// deletion (so Put's "exists → refresh mtime" and GC's "re-check mtime →
	// remove" never interleave).
	mu     sync.RWMutex
	closed bool

	// gcMu serialises GC runs (exclusive) with Pins (shared: pins of
	// different blocks are independent, and each waits on disk flushes
	// that concurrent pins share).
	gcMu sync.RWMutex

	// pack holds small blocks and Meta records (pack.go); nil: none.
	pack *pack

	// syncer makes writes durable in groups (one syncfs per batch of
	// concurrent writers) where the platform has syncfs; nil: fsync each
	// file and directory. Nil too without fsync.
	syncer *atomicfile.Syncer
}

// Open opens (creating if needed, mode 0700) the store in dir and removes
// temporary files left by a crash. It fails with a message naming dir if dir
// cannot be created or written, and with ErrInUse if another Store holds it.
func Open(dir string, opts ...Option) (_ *Store, err error) {
	var cfg config
	for _, o := range append([]Option{defaults}, opts...) {
		if o == nil {
			return nil, errors.New("contentstore: nil Option")
		}
		if err := o(&cfg); err != nil {
			return nil, err
		}
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if dir == "" {
		return nil, errors.New("contentstore: empty store directory path")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("contentstore: cannot create store directory %q: %w (check the path and its permissions)", dir, err)
	}
	// Probe writability with a real file: MkdirAll succeeds on an existing
	// read-only directory, and we would otherwise only fail at the first Put.
	probe, err := os.CreateTemp(dir, ".probe-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("contentstore: store directory %q is not writable: %w (fix its permissions or choose another directory)", dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())

	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	s := &Store{
		dir:       dir,
		blocksDir: filepath.Join(dir, "blocks"),
		pinsDir:   filepath.Join(dir, "pins"),
		cfg:       cfg,
		lock:      lock,
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, s.Close())
		}
	}()
	if cfg.fsync {
		if s.syncer, err = atomicfile.NewSyncer(dir); err != nil {
			return nil, err
		}
	}
	for _, d := range []string{s.blocksDir, s.pinsDir} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("contentstore: creating %q: %w", d, err)
		}
	}
	if err := s.syncDir(dir); err != nil {
		return nil, err
	}
	if s.pack, err = openPack(dir, cfg.packMax > 0, false, cfg.packMemTable, cfg.logger); err != nil {
		return nil, err
	}
	// We hold the directory lock, so every *.tmp is a leftover of a crash.
	if err := s.removeStaleTmp(); err != nil {
		return nil, err
	}
	if ents, err := os.ReadDir(s.pinsDir); err != nil || len(ents) > 0 {
		s.pinFiles.Store(true) // Unpin must look there too
	}
	return s, nil
}

// Close releases the directory. It is idempotent; later calls on the Store
// return ErrClosed. Close waits for in-flight block operations to finish.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return errors.Join(s.pack.close(), s.syncer.Close(), unlockDir(s.lock))
}

// Syncer is the store's group syncer (nil without one): other files of the
// node on the same filesystem (lease state, heads) share its flushes.
func (s *Store) Syncer() *atomicfile.Syncer { return s.syncer }

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) removeStaleTmp() error {
	dirs := []string{s.dir, s.pinsDir}
	shards, err := os.ReadDir(s.blocksDir)
	if err != nil {
		return fmt.Errorf("contentstore: listing %q: %w", s.blocksDir, err)
	}
	for _, e := range shards {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(s.blocksDir, e.Name()))
		}
	}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if err != nil {
			return fmt.Errorf("contentstore: listing %q: %w", d, err)
		}
		for _, e := range ents {
			if !e.IsDir() && strings.HasSuffix(e.Name(), ".tmp") {
				if err := os.Remove(filepath.Join(d, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return fmt.Errorf("contentstore: removing stale temp file: %w", err)
				}
			}
		}
	}
	return nil
}

// checkCID accepts exactly the CIDs this store can hold.
func checkCID(c cid.Cid) error {
	if !c.Defined() {
		return fmt.Errorf("%w: undefined CID", ErrBadCID)
	}
	p := c.Prefix()
	if p.Version != 1 || p.MhType != mh.SHA2_256 || p.MhLength != 32 {
		return fmt.Errorf("%w: %s is not a CIDv1 with a sha2-256 multihash", ErrBadCID, c)
	}
	if p.Codec != cid.Raw && p.Codec != cid.DagCBOR {
		return fmt.Errorf("%w: %s has codec 0x%x; only raw (0x55) and dag-cbor (0x71) blocks are stored", ErrBadCID, c, p.Codec)
	}
	return nil
}

// blockPath: blocks/<shard>/<cid>. The shard is the two characters before
// the last of the base32 CID string (the last carries only 3 bits), as in
// go-ds-flatfs "next-to-last/2"; the leading characters are the same for
// every CID ("bafkrei"/"bafyrei") and would not spread files.
func (s *Store) blockPath(c cid.Cid) (dir, path string) {
	name := c.String()
	dir = filepath.Join(s.blocksDir, shardOf(name))
	return dir, filepath.Join(dir, name)
}

func shardOf(name string) string { return name[len(name)-3 : len(name)-1] }

func (s *Store) syncDir(dir string) error {
	if !s.cfg.fsync {
		return nil
	}
	if s.syncer != nil {
		if err := s.syncer.Sync(); err != nil {
			return fmt.Errorf("contentstore: %w", err)
		}
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("contentstore: fsync %q: %w", dir, err)
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("contentstore: fsync %q: %w", dir, err)
	}
	return nil
}

// Put stores data as a block with the given codec (cid.Raw or cid.DagCBOR)
// and returns its CIDv1 (sha2-256). Putting a block that exists does not
// rewrite it, but restarts its GC grace period. DAG-CBOR data must decode.
//
// Errors: ErrBadCID (other codec), ErrTooLarge (> MaxBlockSize),
// ErrCorrupt (invalid DAG-CBOR), ErrClosed.
func (s *Store) Put(codec uint64, data []byte) (cid.Cid, error) {
	if codec != cid.Raw && codec != cid.DagCBOR {
		return cid.Undef, fmt.Errorf("%w: codec 0x%x; use cid.Raw or cid.DagCBOR", ErrBadCID, codec)
	}
	if len(data) > MaxBlockSize {
		return cid.Undef, fmt.Errorf("%w: block of %d bytes exceeds MaxBlockSize (%d); use PutObject for large payloads", ErrTooLarge, len(data), MaxBlockSize)
	}
	c, err := cid.Prefix{Version: 1, Codec: codec, MhType: mh.SHA2_256, MhLength: -1}.Sum(data)
	if err != nil {
		return cid.Undef, fmt.Errorf("contentstore: hashing block: %w", err)
	}
	if err := s.write(c, data); err != nil {
		return cid.Undef, err
	}
	return c, nil
}

// PutBlock stores a block received from elsewhere under c, after re-hashing
// it: data that does not hash to c is rejected.
//
// Errors: ErrBadCID (c is not CIDv1 sha2-256 raw/dag-cbor), ErrTooLarge,
// ErrCorrupt (hash mismatch or invalid DAG-CBOR; names c), ErrClosed.
func (s *Store) PutBlock(c cid.Cid, data []byte) error {
	if err := checkCID(c); err != nil {
		return err
	}
	if len(data) > MaxBlockSize {
		return fmt.Errorf("%w: block %s of %d bytes exceeds MaxBlockSize (%d)", ErrTooLarge, c, len(data), MaxBlockSize)
	}
	if err := verify(c, data); err != nil {
		return err
	}
	return s.write(c, data)
}

// verify re-hashes data and compares it with c.
func verify(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return fmt.Errorf("%w: hashing %s: %v", ErrCorrupt, c, err)
	}
	if !got.Equals(c) {
		return fmt.Errorf("%w: block %s: content hashes to %s", ErrCorrupt, c, got)
	}
	return nil
}

// write stores verified data under c (tmp + fsync + rename + fsync dir;
// the two flushes are group syncs where the platform has syncfs).
func (s *Store) write(c cid.Cid, data []byte) error {
	if c.Type() == cid.DagCBOR {
		// A DAG-CBOR block that does not decode would make its links
		// unknowable, and GC could never prove anything below it unreachable.
		if _, err := Links(c, data); err != nil {
			return err
		}
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.pack != nil && len(data) <= s.cfg.packMax {
		// Always rewritten: the write restarts the grace, as below.
		return s.pack.put(c, data, s.cfg.fsync && !s.cfg.deferPack)
	}
	dir, path := s.blockPath(c)
	if st, err := os.Stat(path); err == nil {
		if st.Mode().IsRegular() && st.Size() == int64(len(data)) {
			// Idempotent: keep the file, restart its grace period so a GC
			// cannot delete a block its writer believes it just stored.
			now := time.Now()
			if err := os.Chtimes(path, now, now); err != nil {
				return fmt.Errorf("contentstore: refreshing %s: %w", c, err)
			}
			return nil
		}
		// Wrong size: a damaged copy (e.g. zero-length after a crash on a
		// filesystem without ordered writes). Replace it.
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("contentstore: stat %s: %w", c, err)
	}
	return s.writeAtomic(dir, filepath.Base(path), data)
}

func (s *Store) writeAtomic(dir, name string, data []byte) (err error) {
	f, err := os.CreateTemp(dir, name+".*.tmp")
	if errors.Is(err, fs.ErrNotExist) {
		// First block in this shard: create it (shards are made lazily, on
		// demand, so a Put costs no extra syscall once its shard exists).
		// On ErrExist another Put just made it; fsync the parent anyway, as
		// that Put may not have finished doing so.
		if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("contentstore: creating %q: %w", dir, err)
		}
		if err := s.syncDir(filepath.Dir(dir)); err != nil {
			return err
		}
		f, err = os.CreateTemp(dir, name+".*.tmp")
	}
	if err != nil {
		return fmt.Errorf("contentstore: creating temp file in %q: %w", dir, err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("contentstore: writing %s: %w", name, err)
	}
	if s.cfg.fsync && s.syncer == nil {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("contentstore: fsync %s: %w", name, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("contentstore: closing %s: %w", name, err)
	}
	if s.syncer != nil {
		// The data must be durable before the name points at it; writers
		// of many blocks at once share this flush.
		if err := s.syncer.Sync(); err != nil {
			return fmt.Errorf("contentstore: %w", err)
		}
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("contentstore: renaming %s into place: %w", name, err)
	}
	return s.syncDir(dir)
}

// Get returns the block's bytes after re-hashing them against c.
//
// Errors: ErrNotFound, ErrCorrupt (content does not match c; the message
// names c — Delete it and fetch it again), ErrBadCID, ErrClosed.
func (s *Store) Get(c cid.Cid) ([]byte, error) {
	if err := checkCID(c); err != nil {
		return nil, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	if s.pack != nil {
		data, _, err := s.pack.get(c)
		if err == nil {
			if err := verify(c, data); err != nil {
				return nil, err
			}
			return data, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	_, path := s.blockPath(c)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, c)
	} else if err != nil {
		return nil, fmt.Errorf("contentstore: opening %s: %w", c, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("contentstore: stat %s: %w", c, err)
	}
	if st.Size() > MaxBlockSize {
		return nil, fmt.Errorf("%w: block %s: file is %d bytes, more than MaxBlockSize", ErrCorrupt, c, st.Size())
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return nil, fmt.Errorf("contentstore: reading %s: %w", c, err)
	}
	if err := verify(c, data); err != nil {
		return nil, err
	}
	return data, nil
}

// Has reports whether a block file for c exists. It does not read or verify
// the content (Get does).
//
// Errors: ErrBadCID, ErrClosed, OS errors other than "not exist".
func (s *Store) Has(c cid.Cid) (bool, error) {
	if err := checkCID(c); err != nil {
		return false, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return false, ErrClosed
	}
	if s.pack != nil {
		if ok, err := s.pack.has(c); ok || err != nil {
			return ok, err
		}
	}
	_, path := s.blockPath(c)
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("contentstore: stat %s: %w", c, err)
	}
	return st.Mode().IsRegular(), nil
}

// Delete removes a block; deleting an absent block is not an error. Delete
// does not consult pins: it is for repairing corrupt blocks and for tests —
// use Unpin and GC to free space.
//
// Errors: ErrBadCID, ErrClosed.
func (s *Store) Delete(c cid.Cid) error {
	if err := checkCID(c); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.pack != nil {
		if err := s.pack.delete(c); err != nil {
			return err
		}
	}
	_, path := s.blockPath(c)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("contentstore: deleting %s: %w", c, err)
	}
	return nil
}

// ForEach calls fn for every stored block's CID, in no particular order
// (sorted within a shard). Temporary and foreign files are skipped. No lock
// is held while fn runs, so fn may call other Store methods; blocks added or
// removed during the iteration may or may not be visited. An error from fn
// stops the iteration and is returned as is.
//
// Errors: ErrClosed, fn's error, OS listing errors.
func (s *Store) ForEach(fn func(cid.Cid) error) error {
	if err := s.forEachPacked(func(c cid.Cid) error { return fn(c) }); err != nil {
		return err
	}
	return s.forEachFile(func(c cid.Cid, _ string) error { return fn(c) })
}

// forEachPacked calls fn for every packed block (none without a pack).
func (s *Store) forEachPacked(fn func(cid.Cid) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	if s.pack == nil {
		return nil
	}
	cids, _, err := s.pack.cids()
	if err != nil {
		return err
	}
	for _, c := range cids {
		if err := fn(c); err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) isClosed() bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.closed
}

func (s *Store) forEachFile(fn func(c cid.Cid, path string) error) error {
	if s.isClosed() {
		return ErrClosed
	}
	shards, err := os.ReadDir(s.blocksDir)
	if err != nil {
		return fmt.Errorf("contentstore: listing blocks: %w", err)
	}
	for _, sh := range shards {
		if !sh.IsDir() {
			continue
		}
		if s.isClosed() {
			return ErrClosed
		}
		shardDir := filepath.Join(s.blocksDir, sh.Name())
		ents, err := os.ReadDir(shardDir)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return fmt.Errorf("contentstore: listing %q: %w", shardDir, err)
		}
		for _, e := range ents {
			c, ok := parseName(e)
			if !ok || shardOf(e.Name()) != sh.Name() {
				continue
			}
			if err := fn(c, filepath.Join(shardDir, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseName accepts only regular files named by the canonical string of a
// CID this store can hold (so *.tmp and stray files are never taken for blocks).
func parseName(e fs.DirEntry) (cid.Cid, bool) {
	if !e.Type().IsRegular() || strings.HasSuffix(e.Name(), ".tmp") {
		return cid.Undef, false
	}
	c, err := cid.Decode(e.Name())
	if err != nil || c.String() != e.Name() || checkCID(c) != nil {
		return cid.Undef, false
	}
	return c, true
}

// Pin marks c as a root that GC must keep, together with everything it links
// to, durably when Pin returns. With a pack (WithPack) the pin is a record in
// its log, written with one flush that also makes the blocks written before
// it durable; without, an empty file pins/<cid>. The block need not be
// present yet (pin first, then fetch, is safe). Pin waits for a running GC
// to finish.
//
// Errors: ErrBadCID, ErrClosed.
func (s *Store) Pin(c cid.Cid) error {
	if err := checkCID(c); err != nil {
		return err
	}
	s.gcMu.RLock()
	defer s.gcMu.RUnlock()
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.HasPack() {
		// One synced append: the log is sequential, so the blocks written
		// before the pin (deferred ones too) are durable with it.
		return s.pack.pin(c, s.cfg.fsync)
	}
	// Blocks written before the pin must be durable before it: a pin of
	// a block a crash loses would stop every GC (an incomplete pinned DAG).
	if err := s.syncPack(); err != nil {
		return err
	}
	// An empty file has no content to tear: creating it and fsyncing the
	// directory is enough to make it durable.
	s.pinFiles.Store(true)
	f, err := os.OpenFile(filepath.Join(s.pinsDir, c.String()), os.O_CREATE|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("contentstore: pinning %s: %w", c, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("contentstore: pinning %s: %w", c, err)
	}
	return s.syncDir(s.pinsDir)
}

// Unpin removes a pin (from the pack and, as a store written before pins
// moved there may hold one, from pins/); unpinning what is not pinned is
// not an error. It is durable on return. The blocks stay until a GC finds
// them unreachable and older than the grace.
//
// Errors: ErrBadCID, ErrClosed.
func (s *Store) Unpin(c cid.Cid) error {
	if err := checkCID(c); err != nil {
		return err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if s.pack != nil {
		if err := s.pack.unpin(c, s.cfg.fsync); err != nil {
			return err
		}
	}
	if !s.pinFiles.Load() {
		return nil
	}
	if err := os.Remove(filepath.Join(s.pinsDir, c.String())); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("contentstore: unpinning %s: %w", c, err)
	}
	return s.syncDir(s.pinsDir)
}

// Pins returns the pinned CIDs (in the pack and in pins/), sorted by their
// string form.
//
// Errors: ErrClosed, OS listing errors.
func (s *Store) Pins() ([]cid.Cid, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return nil, ErrClosed
	}
	ents, err := os.ReadDir(s.pinsDir)
	if err != nil {
		return nil, fmt.Errorf("contentstore: listing pins: %w", err)
	}
	var out []cid.Cid
	for _, e := range ents {
		if c, ok := parseName(e); ok {
			out = append(out, c)
		}
	}
	if s.pack != nil {
		// A key that is no CID is reported by Check; it pins nothing.
		packed, _, err := s.pack.pins()
		if err != nil {
			return nil, err
		}
		out = append(out, packed...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return slices.Compact(out), nil
}
