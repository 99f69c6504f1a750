//go:build !unix

package contentstore

import (
	"fmt"
	"os"
	"path/filepath"
)

// lockDir on platforms without flock only opens dir/LOCK: exclusive use of a
// store directory is not enforced there (documented in docs/CONTENTSTORE.md).
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("contentstore: store directory %q is not writable: %w", dir, err)
	}
	return f, nil
}

func unlockDir(f *os.File) error {
	if err := f.Close(); err != nil {
		return fmt.Errorf("contentstore: releasing store lock: %w", err)
	}
	return nil
}
