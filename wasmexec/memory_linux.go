//go:build linux

package wasmexec

import (
	"os"
	"syscall"
	"unsafe"
)

// canMapImage: data images are mapped copy-on-write (see memImage).
const canMapImage = true

// reserve maps n bytes of address space with no access and no swap
// reservation: it costs neither resident memory nor commit charge.
func reserve(n uint64) ([]byte, error) {
	if n == 0 {
		n = 1
	}
	return syscall.Mmap(-1, 0, int(n), syscall.PROT_NONE,
		syscall.MAP_PRIVATE|syscall.MAP_ANON|syscall.MAP_NORESERVE)
}

// commit makes b (page-aligned: WASM pages are 64 KiB) readable and
// writable; the kernel backs it with zero pages on first touch.
func commit(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	return syscall.Mprotect(b, syscall.PROT_READ|syscall.PROT_WRITE)
}

func release(b []byte) error { return syscall.Munmap(b) }

// mapImage maps f's first size bytes over the start of the reservation b,
// private and writable: copy-on-write, so pages the guest never writes stay
// shared with every other mapping of the image.
func mapImage(b []byte, f *os.File, size uint64) error {
	if size == 0 || size > uint64(len(b)) {
		return syscall.EINVAL
	}
	addr, _, errno := syscall.Syscall6(syscall.SYS_MMAP, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(size),
		syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_FIXED, f.Fd(), 0)
	if errno != 0 {
		return errno
	}
	if addr != uintptr(unsafe.Pointer(unsafe.SliceData(b))) {
		return syscall.EINVAL
	}
	return nil
}
