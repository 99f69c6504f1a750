//go:build !linux

package wasmexec

import (
	"errors"
	"os"
)

const canMapImage = false

// Elsewhere linear memory lives on the Go heap (see linearMemory).
func reserve(uint64) ([]byte, error)          { return nil, errors.New("no mmap reservation on this OS") }
func commit([]byte) error                     { return nil }
func release([]byte) error                    { return nil }
func mapImage([]byte, *os.File, uint64) error { return errors.New("no mmap on this OS") }
