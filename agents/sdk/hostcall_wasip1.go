//go:build wasip1

package sdk

import (
	"strconv"
	"unsafe"
)

// The igor host imports (docs/ABI.md). Each is called from exactly one
// small function below, so the linker keeps an import only when the agent
// reaches its wrapper; an agent that never calls RandBytes does not import
// igor.rand_bytes and needs no "rand" capability.
//
// Pointers passed to the host point into Go-owned memory that stays live for
// the duration of the call (the argument itself keeps it reachable, and the
// single-threaded wasm runtime cannot collect during a host call).

//go:wasmimport igor clock_now
func igorClockNow() int64

//go:wasmimport igor rand_bytes
func igorRandBytes(ptr unsafe.Pointer, n uint32) int32

//go:wasmimport igor log_emit
func igorLogEmit(ptr unsafe.Pointer, n uint32)

//go:wasmimport igor args_get
func igorArgsGet(ptr unsafe.Pointer, n uint32) int32

func clockNow() int64 { return igorClockNow() }

func randBytes(b []byte) int32 {
	return igorRandBytes(unsafe.Pointer(unsafe.SliceData(b)), uint32(len(b)))
}

func logEmit(msg string) {
	igorLogEmit(unsafe.Pointer(unsafe.StringData(msg)), uint32(len(msg)))
}

// argsCache holds the args after the first read: they are fixed by the
// signed manifest for the life of the instance.
var argsCache *string

func argsGet() string {
	if argsCache != nil {
		return *argsCache
	}
	n := igorArgsGet(nil, 0) // size query: returns the full length
	buf := []byte{}
	for n > int32(len(buf)) {
		buf = make([]byte, n)
		n = igorArgsGet(unsafe.Pointer(unsafe.SliceData(buf)), uint32(len(buf)))
	}
	if n < 0 {
		panic("sdk: igor.args_get failed with code " + strconv.Itoa(int(n)))
	}
	s := string(buf[:n])
	argsCache = &s
	return s
}
