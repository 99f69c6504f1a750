package contentstore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/ipfs/go-cid"
)

// Links returns every CID linked from the block (c, data), in document
// order, each once. A raw block links nothing; a DAG-CBOR block's links are
// its tag-42 CIDs anywhere in the node, found by one pass over the bytes
// that accepts what go-ipld-prime's strict DAG-CBOR decoder accepts
// (scanLinks). Links does not check data against c.
//
// Errors: ErrCorrupt (not valid DAG-CBOR; names c), ErrBadCID (other codec).
func Links(c cid.Cid, data []byte) ([]cid.Cid, error) {
	if !c.Defined() {
		return nil, fmt.Errorf("%w: undefined CID", ErrBadCID)
	}
	switch c.Type() {
	case cid.Raw:
		return nil, nil
	case cid.DagCBOR:
	default:
		return nil, fmt.Errorf("%w: %s has codec 0x%x; links are known only for raw and dag-cbor", ErrBadCID, c, c.Type())
	}
	out, err := scanLinks(data)
	if err != nil {
		return nil, fmt.Errorf("%w: block %s is not valid DAG-CBOR: %v", ErrCorrupt, c, err)
	}
	return out, nil
}

// walk visits the DAG below roots depth-first, preorder, in link order, each
// block once, and returns the visit order. Raw blocks are only checked for
// presence (they link nothing); DAG-CBOR blocks are read, verified and
// decoded. A block that is absent, corrupt or of an unsupported kind is
// passed to onMissing: a nil return skips it (its links stay unknown),
// an error aborts the walk.
func (s *Store) walk(ctx context.Context, roots []cid.Cid, onMissing func(c, parent cid.Cid, err error) error) ([]cid.Cid, error) {
	type item struct{ c, parent cid.Cid }
	stack := make([]item, 0, len(roots))
	for i := len(roots) - 1; i >= 0; i-- {
		stack = append(stack, item{c: roots[i]})
	}
	seen := make(map[cid.Cid]bool)
	var order []cid.Cid
	for len(stack) > 0 {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[it.c] {
			continue
		}
		seen[it.c] = true
		var links []cid.Cid
		err := checkCID(it.c)
		if err == nil && it.c.Type() == cid.Raw {
			var ok bool
			ok, err = s.Has(it.c)
			if err == nil && !ok {
				err = fmt.Errorf("%w: %s", ErrNotFound, it.c)
			}
		} else if err == nil {
			var data []byte
			if data, err = s.Get(it.c); err == nil {
				links, err = Links(it.c, data)
			}
		}
		if err != nil {
			if !errors.Is(err, ErrNotFound) && !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrBadCID) {
				return nil, err // I/O trouble or closed store: nothing is proven
			}
			if err := onMissing(it.c, it.parent, err); err != nil {
				return nil, err
			}
			continue
		}
		order = append(order, it.c)
		for i := len(links) - 1; i >= 0; i-- {
			if !seen[links[i]] {
				stack = append(stack, item{c: links[i], parent: it.c})
			}
		}
	}
	return order, nil
}

func describeMissing(c, parent cid.Cid, err error) error {
	if parent.Defined() {
		return fmt.Errorf("%w (linked from %s)", err, parent)
	}
	return fmt.Errorf("%w (a root)", err)
}

// Reachable returns every block reachable from roots (the roots included),
// each once, parents before their children (depth-first preorder). Raw
// blocks are checked for presence only; DAG-CBOR blocks are read and verified.
//
// Errors: ErrNotFound (a block is missing or cannot be held here; names it
// and the block linking to it), ErrCorrupt, ErrClosed, ctx.Err().
func (s *Store) Reachable(ctx context.Context, roots []cid.Cid) ([]cid.Cid, error) {
	return s.walk(ctx, roots, func(c, parent cid.Cid, err error) error {
		if errors.Is(err, ErrBadCID) {
			err = fmt.Errorf("%w: %w", ErrNotFound, err) // it cannot be stored here
		}
		return describeMissing(c, parent, err)
	})
}

// GCStats reports what a GC run did.
type GCStats struct {
	Pins      int // pinned roots walked
	Marked    int // blocks reachable from the pins (kept)
	Scanned   int // unreachable blocks examined by the sweep
	KeptFresh int // unreachable blocks kept because they are younger than the grace
	Removed   int // blocks deleted
	Freed     int64
	// Missing lists blocks reachable from a pin that are absent, corrupt or
	// unsupported. When it is non-empty GC deletes nothing (see GC).
	Missing []cid.Cid
}

// GC deletes every block that is neither reachable from a pinned root nor
// younger than the grace period (WithGCGrace).
//
// If some pinned DAG is incomplete (a reachable block is missing, corrupt,
// or not a CID this store holds), its missing parts could link to any stored
// block, so GC cannot prove anything unreachable: it marks what it can,
// deletes NOTHING, lists the missing CIDs in GCStats.Missing and returns an
// error naming the first (wrapping ErrNotFound, or ErrCorrupt if it is
// damaged). Fetch the missing blocks or unpin their root, then GC again.
//
// GC blocks Pin while it runs; Put/Get proceed. Each deletion re-checks the
// block's age under the exclusive lock, so a concurrent re-Put saves it.
//
// Errors: ErrNotFound or ErrCorrupt (incomplete pinned DAG), ErrClosed,
// ctx.Err(), OS errors.
func (s *Store) GC(ctx context.Context) (GCStats, error) {
	s.gcMu.Lock()
	defer s.gcMu.Unlock()
	var st GCStats
	if err := ctx.Err(); err != nil {
		return st, err
	}
	pins, err := s.Pins()
	if err != nil {
		return st, err
	}
	st.Pins = len(pins)
	var firstMissing error
	marked, err := s.walk(ctx, pins, func(c, parent cid.Cid, err error) error {
		st.Missing = append(st.Missing, c)
		if firstMissing == nil {
			firstMissing = describeMissing(c, parent, err)
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	st.Marked = len(marked)
	if len(st.Missing) > 0 {
		return st, fmt.Errorf("contentstore: GC deleted nothing: %d block(s) reachable from pins are unavailable, first: %w; fetch them or unpin their root",
			len(st.Missing), firstMissing)
	}
	keep := make(map[cid.Cid]bool, len(marked))
	for _, c := range marked {
		keep[c] = true
	}
	grace := s.cfg.gcGrace
	// sweep removes c (by remove) unless it is marked or young.
	sweep := func(c cid.Cid, remove func() (bool, int64, error)) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if keep[c] {
			return nil
		}
		st.Scanned++
		removed, size, err := remove()
		if err != nil {
			return fmt.Errorf("contentstore: GC of %s: %w", c, err)
		}
		if removed {
			st.Removed++
			st.Freed += size
		} else {
			st.KeptFresh++
		}
		return nil
	}
	err = s.forEachPacked(func(c cid.Cid) error {
		return sweep(c, func() (bool, int64, error) { return s.removePackedIfOld(c, grace) })
	})
	if err != nil {
		return st, err
	}
	err = s.forEachFile(func(c cid.Cid, path string) error {
		return sweep(c, func() (bool, int64, error) { return s.removeIfOld(path, grace) })
	})
	return st, err
}

// removeIfOld deletes path if its mtime is at least grace ago, deciding and
// deleting under the exclusive lock (see Store.mu).
func (s *Store) removeIfOld(path string, grace time.Duration) (bool, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, 0, ErrClosed
	}
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	} else if err != nil {
		return false, 0, err
	}
	if time.Since(fi.ModTime()) < grace {
		return false, 0, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return false, 0, err
	}
	return true, fi.Size(), nil
}

// removePackedIfOld is removeIfOld for a packed block.
func (s *Store) removePackedIfOld(c cid.Cid, grace time.Duration) (bool, int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false, 0, ErrClosed
	}
	data, at, err := s.pack.get(c)
	if errors.Is(err, fs.ErrNotExist) {
		return false, 0, nil
	} else if err != nil && !errors.Is(err, ErrCorrupt) {
		return false, 0, err
	}
	if err == nil && time.Since(at) < grace {
		return false, 0, nil
	}
	if err := s.pack.delete(c); err != nil {
		return false, 0, err
	}
	return true, int64(len(data)), nil
}
