// Command probe is a wasmexec test agent written directly against the ABI
// (no SDK), so that wasmexec's tests depend only on wasmexec. Its behaviour
// is chosen by the manifest args:
//
//	"wasiclock"  — every tick appends two time.Now().UnixNano() readings
//	               (WASI clock_time_get, realtime) and one monotonic
//	               reading to the state.
//	"cryptorand" — every tick reads crypto/rand (WASI random_get).
//
// agent_init stores time.Now().UnixNano() as the first 8 bytes of state.
package main

import (
	"crypto/rand"
	"encoding/binary"
	"time"
	"unsafe"
)

//go:wasmimport igor args_get
func argsGet(ptr unsafe.Pointer, n int32) int32

var (
	mode  string
	start time.Time
	state []byte
	inbuf []byte
)

func main() {}

//go:wasmexport agent_init
func agentInit() {
	buf := make([]byte, 64)
	n := argsGet(unsafe.Pointer(&buf[0]), int32(len(buf)))
	mode = string(buf[:min(int(n), len(buf))])
	start = time.Now()
	state = binary.LittleEndian.AppendUint64(nil, uint64(start.UnixNano()))
}

//go:wasmexport agent_tick
func agentTick() int32 {
	switch mode {
	case "wasiclock":
		a := time.Now()
		b := time.Now()
		state = binary.LittleEndian.AppendUint64(state, uint64(a.UnixNano()))
		state = binary.LittleEndian.AppendUint64(state, uint64(b.UnixNano()))
		state = binary.LittleEndian.AppendUint64(state, uint64(b.Sub(start)))
	case "cryptorand":
		var b [16]byte
		rand.Read(b[:])
		state = append(state, b[:]...)
	}
	return 0
}

//go:wasmexport agent_checkpoint
func agentCheckpoint() int32 { return int32(len(state)) }

//go:wasmexport agent_checkpoint_ptr
func agentCheckpointPtr() unsafe.Pointer { return unsafe.Pointer(&state[0]) }

//go:wasmexport agent_alloc
func agentAlloc(n int32) unsafe.Pointer {
	inbuf = make([]byte, n)
	return unsafe.Pointer(&inbuf[0])
}

//go:wasmexport agent_resume
func agentResume(ptr unsafe.Pointer, n int32) {
	if n > 0 {
		state = append([]byte(nil), unsafe.Slice((*byte)(ptr), n)...)
	}
	inbuf = nil
}
