package atomicfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReplacesAndSetsMode(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	if err := Write(p, []byte("one"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	if err := Write(p, []byte("two"), 0o600, true); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || string(got) != "two" {
		t.Fatalf("content %q, err %v", got, err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), TempSuffix) {
			t.Fatalf("temporary file left behind: %s", e.Name())
		}
	}
}

// The error names the path asked for, never the hidden temporary file, and
// keeps the cause for errors.Is.
func TestWriteIntoMissingDirFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "no", "such", "f")
	err := Write(path, []byte("x"), 0o600, true)
	if err == nil || !strings.HasPrefix(err.Error(), "write "+path+": ") || strings.Contains(err.Error(), TempSuffix) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("want an error naming %s (not the temporary file) that is fs.ErrNotExist, got %v", path, err)
	}
}
