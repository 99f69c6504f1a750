//go:build unix

package contentstore

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockDir takes an exclusive flock on dir/LOCK. The kernel drops it when the
// process dies, so a crash never leaves the store locked; it makes Open's
// removal of *.tmp files safe (no other writer can own them).
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, "LOCK")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("contentstore: store directory %q is not writable: %w", dir, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%w: %q is open in another Store (is another igor-node using this directory?)", ErrInUse, dir)
		}
		return nil, fmt.Errorf("contentstore: locking %q: %w", path, err)
	}
	return f, nil
}

func unlockDir(f *os.File) error {
	// Closing the descriptor releases the flock.
	if err := f.Close(); err != nil {
		return fmt.Errorf("contentstore: releasing store lock: %w", err)
	}
	return nil
}
