//go:build !linux

package atomicfile

import "os"

const haveSyncfs = false

func syncfs(f *os.File) error { return f.Sync() }

func sameDevice(*os.File, string) bool { return false }
