package contentstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ipfs/go-cid"
)

// CheckReport is what Check found. A store is consistent (Clean) when no
// block is damaged and every pinned DAG is complete; leftover temporary
// files are reported but do not make a store unclean: they are the normal
// trace of a crash during a write, and Open removes them.
type CheckReport struct {
	Blocks int   `json:"blocks"` // block files re-hashed
	Bytes  int64 `json:"bytes"`  // their total size
	Pins   int   `json:"pins"`
	// Corrupt: block files whose content does not hash to their name, that
	// are larger than MaxBlockSize, or (DAG-CBOR) do not decode.
	Corrupt []string `json:"corrupt,omitempty"`
	// ZeroLength: empty block files that are not the empty block (a write
	// torn by a crash on a filesystem without ordered data writes).
	ZeroLength []string `json:"zero_length,omitempty"`
	// MissingPinned: blocks reachable from a pin (the pinned root included)
	// that are absent, damaged or not a kind this store holds; each entry
	// names the block and what links to it. GC refuses to run while any exist.
	MissingPinned []string `json:"missing_pinned,omitempty"`
	// TempFiles: leftover *.tmp files (paths relative to the store
	// directory). Safe to delete; Open deletes them.
	TempFiles []string `json:"temp_files,omitempty"`
	// Stray: files in blocks/ or pins/ that are neither blocks, pins nor
	// temporary files. The store ignores them.
	Stray []string `json:"stray,omitempty"`
}

// Clean reports whether the store is consistent.
func (r *CheckReport) Clean() bool {
	return len(r.Corrupt) == 0 && len(r.ZeroLength) == 0 && len(r.MissingPinned) == 0
}

// Problems lists every finding that makes the store unclean, one line each.
func (r *CheckReport) Problems() []string {
	var out []string
	for _, s := range r.Corrupt {
		out = append(out, "corrupt block: "+s)
	}
	for _, s := range r.ZeroLength {
		out = append(out, "zero-length block: "+s)
	}
	for _, s := range r.MissingPinned {
		out = append(out, "pinned DAG incomplete: "+s)
	}
	return out
}

// OpenForCheck opens an existing store like Open, but creates nothing and
// does not remove leftover temporary files, so Check can report them. Use
// it for offline checks (igor-node fsck); the next Open cleans up. It fails
// with ErrInUse while another Store has the directory open, with
// ErrUninitialized if Open was interrupted while creating it (a subdirectory
// missing and the other one empty or missing: nothing was ever stored), and
// with ErrNotFound if dir holds no store.
func OpenForCheck(dir string) (*Store, error) {
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("%w: %q is not a content store directory", ErrNotFound, dir)
	}
	var missing []string
	empty := true
	for _, d := range []string{filepath.Join(dir, "blocks"), filepath.Join(dir, "pins")} {
		ents, err := os.ReadDir(d)
		if errors.Is(err, fs.ErrNotExist) {
			missing = append(missing, d)
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %q is not a content store directory (%s: %v)", ErrNotFound, dir, d, err)
		}
		empty = empty && len(ents) == 0
	}
	if len(missing) > 0 {
		if empty {
			return nil, fmt.Errorf("%w: %q lacks %v and holds no data (an interrupted first start; the next start completes it)", ErrUninitialized, dir, missing)
		}
		return nil, fmt.Errorf("%w: %q is not a content store directory (no %v, but data in the other)", ErrNotFound, dir, missing)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	var cfg config
	_ = defaults(&cfg)
	// The pack is opened read-only: a check writes nothing (Pebble would
	// otherwise replay its log into new files).
	pk, err := openPack(dir, false, true, cfg.packMemTable, cfg.logger)
	if err != nil {
		return nil, errors.Join(err, unlockDir(lock))
	}
	return &Store{dir: dir, blocksDir: filepath.Join(dir, "blocks"), pinsDir: filepath.Join(dir, "pins"), cfg: cfg, lock: lock, pack: pk}, nil
}

// Check re-hashes every stored block against its CID, walks every pinned
// DAG, and lists leftover temporary and stray files. It reads the whole
// store; blocks written while it runs may or may not be seen. Damage is
// reported in the CheckReport, not as an error.
//
// Errors: ErrClosed, ctx.Err(), OS errors that stop the scan.
func (s *Store) Check(ctx context.Context) (CheckReport, error) {
	var r CheckReport
	if s.isClosed() {
		return r, ErrClosed
	}
	rel := func(p string) string {
		if q, err := filepath.Rel(s.dir, p); err == nil {
			return q
		}
		return p
	}
	// Temporary and stray files: in the store root, pins/ and every shard.
	dirs := []string{s.dir, s.pinsDir, s.blocksDir}
	shards, err := os.ReadDir(s.blocksDir)
	if err != nil {
		return r, fmt.Errorf("contentstore: listing %q: %w", s.blocksDir, err)
	}
	for _, e := range shards {
		if e.IsDir() {
			dirs = append(dirs, filepath.Join(s.blocksDir, e.Name()))
		}
	}
	for _, d := range dirs {
		ents, err := os.ReadDir(d)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		} else if err != nil {
			return r, fmt.Errorf("contentstore: listing %q: %w", d, err)
		}
		for _, e := range ents {
			p := filepath.Join(d, e.Name())
			switch {
			case strings.HasSuffix(e.Name(), ".tmp"):
				r.TempFiles = append(r.TempFiles, rel(p))
			case d == s.dir || e.IsDir():
				// The root holds LOCK, blocks/, pins/; shards are directories.
			case d == s.pinsDir:
				if _, ok := parseName(e); !ok {
					r.Stray = append(r.Stray, rel(p))
				}
			case d == s.blocksDir:
				r.Stray = append(r.Stray, rel(p))
			default:
				if c, ok := parseName(e); !ok || shardOf(e.Name()) != filepath.Base(d) || c.String() != e.Name() {
					r.Stray = append(r.Stray, rel(p))
				}
			}
		}
	}
	// Every block, re-hashed: packed ones first.
	if s.pack != nil {
		cids, bad, err := s.pack.cids()
		if err != nil {
			return r, err
		}
		r.Stray = append(r.Stray, bad...)
		_, badPins, err := s.pack.pins()
		if err != nil {
			return r, err
		}
		r.Stray = append(r.Stray, badPins...)
		for _, c := range cids {
			if err := ctx.Err(); err != nil {
				return r, err
			}
			data, _, err := s.pack.get(c)
			if errors.Is(err, fs.ErrNotExist) {
				continue // removed while we looked
			}
			if err == nil {
				err = verify(c, data)
			}
			if err == nil && c.Type() == cid.DagCBOR {
				_, err = Links(c, data)
			}
			r.Blocks++
			r.Bytes += int64(len(data))
			switch {
			case errors.Is(err, ErrCorrupt):
				r.Corrupt = append(r.Corrupt, fmt.Sprintf("%s (packed: %v)", c, err))
			case err != nil:
				return r, err
			}
		}
	}
	err = s.forEachFile(func(c cid.Cid, path string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := checkBlockFile(c, path)
		r.Blocks++
		r.Bytes += n
		switch {
		case errors.Is(err, fs.ErrNotExist):
			r.Blocks-- // removed (GC, Delete) while we looked
		case errors.Is(err, ErrCorrupt) && n == 0:
			r.ZeroLength = append(r.ZeroLength, c.String())
		case errors.Is(err, ErrCorrupt):
			r.Corrupt = append(r.Corrupt, fmt.Sprintf("%s (%v)", c, err))
		case err != nil:
			return err
		}
		return nil
	})
	if err != nil {
		return r, err
	}
	// Every pinned DAG, complete.
	pins, err := s.Pins()
	if err != nil {
		return r, err
	}
	r.Pins = len(pins)
	_, err = s.walk(ctx, pins, func(c, parent cid.Cid, err error) error {
		if parent.Defined() {
			r.MissingPinned = append(r.MissingPinned, fmt.Sprintf("%s (linked from %s): %v", c, parent, err))
		} else {
			r.MissingPinned = append(r.MissingPinned, fmt.Sprintf("%s (pinned root): %v", c, err))
		}
		return nil
	})
	return r, err
}

// checkBlockFile reads and verifies one block file; it returns the file's
// size. Errors wrap ErrCorrupt for damage, fs.ErrNotExist if it vanished.
func checkBlockFile(c cid.Cid, path string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	if st.Size() > MaxBlockSize {
		return st.Size(), fmt.Errorf("%w: %d bytes, more than MaxBlockSize", ErrCorrupt, st.Size())
	}
	data := make([]byte, st.Size())
	if _, err := io.ReadFull(f, data); err != nil {
		return st.Size(), fmt.Errorf("reading %s: %w", path, err)
	}
	if err := verify(c, data); err != nil {
		return st.Size(), err
	}
	if c.Type() == cid.DagCBOR {
		if _, err := Links(c, data); err != nil {
			return st.Size(), err
		}
	}
	return st.Size(), nil
}
