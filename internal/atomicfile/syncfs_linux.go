package atomicfile

import (
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

const haveSyncfs = true

// syncfs flushes the whole filesystem holding f. Since Linux 5.8 it
// reports writeback errors of any file on it since f was opened.
func syncfs(f *os.File) error { return unix.Syncfs(int(f.Fd())) }

// sameDevice reports whether path is on the filesystem holding f.
func sameDevice(f *os.File, path string) bool {
	a, err := f.Stat()
	if err != nil {
		return false
	}
	b, err := os.Stat(path)
	if err != nil {
		return false
	}
	sa, ok1 := a.Sys().(*syscall.Stat_t)
	sb, ok2 := b.Sys().(*syscall.Stat_t)
	return ok1 && ok2 && sa.Dev == sb.Dev
}
