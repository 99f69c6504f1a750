// Package atomicfile writes files so that a crash at any instant leaves
// either the old content or the new content, never a mix: write a temporary
// file in the same directory, fsync it, rename it over the target, then fsync
// the directory so the rename itself is durable (the step wazero's file cache
// skips and hashicorp/raft's snapshot store does not).
package atomicfile

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// TempSuffix marks files that are not yet complete. Readers that list
// directories must skip names ending in it; Open-time cleanup may delete them.
const TempSuffix = ".tmp"

// Write replaces path with data, created with perm. It is durable when it
// returns nil. sync=false skips both fsyncs (benchmarks only).
func Write(path string, data []byte, perm os.FileMode, sync bool) error {
	return WriteFrom(path, perm, sync, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFrom is Write for content produced by a function that streams into w.
// If fill fails, path is left untouched.
func WriteFrom(path string, perm os.FileMode, sync bool, fill func(w io.Writer) error) error {
	if !sync {
		return write(path, perm, fill, nil, nil, nil)
	}
	return write(path, perm, fill, (*os.File).Sync, nil, SyncDir)
}

// write is the one write protocol: temp file → fill → flushFile (before
// close) → flushData (after close, before the rename) → rename →
// flushName(dir). Nil steps are skipped.
func write(path string, perm os.FileMode, fill func(w io.Writer) error, flushFile func(*os.File) error, flushData func() error, flushName func(dir string) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*"+TempSuffix)
	if err != nil {
		return fmt.Errorf("write %s: cannot create a file in %s: %w", path, dir, bare(err))
	}
	tmp := f.Name()
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("write %s: chmod: %w", path, bare(err))
	}
	if err := fill(f); err != nil {
		return fmt.Errorf("write %s: %w", path, bare(err))
	}
	if flushFile != nil {
		if err := flushFile(f); err != nil {
			return fmt.Errorf("write %s: fsync: %w", path, bare(err))
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: close: %w", path, bare(err))
	}
	if flushData != nil {
		if err := flushData(); err != nil {
			return err
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("write %s: rename the finished temporary file over it: %w", path, bare(err))
	}
	ok = true
	if flushName != nil {
		return flushName(dir)
	}
	return nil
}

// bare strips the *os.PathError or *os.LinkError that names the temporary
// file: errors name the path the caller asked for, not a hidden temporary
// name it never saw.
func bare(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) && strings.HasSuffix(pe.Path, TempSuffix) {
		return pe.Err
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return le.Err
	}
	return err
}

// SyncDir fsyncs a directory so that entries created or renamed in it survive a crash.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open directory %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync directory %s: %w", dir, err)
	}
	return nil
}

// StaleAge is how old a temp file must be before RemoveStale deletes it: a
// writer keeps its temp file for milliseconds, so one this old was left by
// a crash, and removing it cannot race a live writer even without a lock.
const StaleAge = time.Minute

// RemoveStale deletes the temp files a crash left in dir (hidden files
// ending in TempSuffix, the pattern WriteFrom and the keystore use) that
// are older than StaleAge, and returns how many it removed. Such a file
// never holds committed data: the rename or link that commits it never
// happened.
func RemoveStale(dir string) (int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range ents {
		name := e.Name()
		if !e.Type().IsRegular() || !strings.HasPrefix(name, ".") || !strings.HasSuffix(name, TempSuffix) {
			continue
		}
		fi, err := e.Info()
		if err != nil || time.Since(fi.ModTime()) < StaleAge {
			continue
		}
		if err := os.Remove(filepath.Join(dir, name)); err == nil {
			n++
		}
	}
	return n, nil
}
