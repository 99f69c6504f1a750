//go:build wasip1

package sdk

import (
	"math"
	"strconv"
	"unsafe"
)

// The lifecycle exports of docs/ABI.md. The host runs _initialize (which
// runs every init(), hence sdk.Run) before calling any of them.

var (
	// checkpointBuf holds the last Marshal result from agent_checkpoint
	// until the host has copied it out via agent_checkpoint_ptr. It is
	// dropped at the next tick or resume so a large state is not kept twice.
	checkpointBuf []byte

	// pendingAllocs keeps every agent_alloc buffer reachable until
	// agent_resume has handed it to Unmarshal: the host holds only a raw
	// address, which the Go GC does not see, so without this reference the
	// buffer could be freed and reused before the host writes into it.
	pendingAllocs [][]byte
)

// maxAlloc bounds agent_alloc to the hard cap on state size (64 MiB).
const maxAlloc = 64 << 20

//go:wasmexport agent_init
func agentInit() {
	theAgent().Init()
}

//go:wasmexport agent_tick
func agentTick() int32 {
	checkpointBuf = nil
	if theAgent().Tick() {
		return 1
	}
	return 0
}

//go:wasmexport agent_checkpoint
func agentCheckpoint() int32 {
	b := theAgent().Marshal()
	if len(b) > math.MaxInt32 {
		panic("sdk: Marshal returned " + strconv.Itoa(len(b)) + " bytes, more than an i32 length can carry")
	}
	checkpointBuf = b
	return int32(len(b))
}

//go:wasmexport agent_checkpoint_ptr
func agentCheckpointPtr() unsafe.Pointer {
	if len(checkpointBuf) == 0 {
		return nil
	}
	return unsafe.Pointer(unsafe.SliceData(checkpointBuf))
}

//go:wasmexport agent_alloc
func agentAlloc(size uint32) unsafe.Pointer {
	if size == 0 {
		return nil
	}
	if size > maxAlloc {
		panic("sdk: agent_alloc(" + strconv.Itoa(int(size)) + "): larger than the 64 MiB state cap")
	}
	b := make([]byte, size)
	pendingAllocs = append(pendingAllocs, b)
	return unsafe.Pointer(unsafe.SliceData(b))
}

//go:wasmexport agent_resume
func agentResume(ptr unsafe.Pointer, size uint32) {
	checkpointBuf = nil
	state := []byte{}
	if size > 0 {
		if ptr == nil {
			panic("sdk: agent_resume(0, " + strconv.Itoa(int(size)) + "): null pointer for non-empty state")
		}
		state = ownedSlice(ptr, size)
		if state == nil {
			// Not from agent_alloc (e.g. the host used other memory): the
			// GC does not own it, so copy before handing it to the agent,
			// which may keep the slice.
			state = append([]byte(nil), unsafe.Slice((*byte)(ptr), size)...)
		}
	}
	// Released after Unmarshal: if the agent kept a sub-slice, that slice
	// now keeps the buffer alive on its own.
	defer func() { pendingAllocs = nil }()
	theAgent().Unmarshal(state)
}

// ownedSlice returns the [ptr, ptr+size) range as a slice of a pending
// agent_alloc buffer, or nil if no pending buffer contains it.
func ownedSlice(ptr unsafe.Pointer, size uint32) []byte {
	p := uintptr(ptr)
	for _, b := range pendingAllocs {
		base := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
		if p >= base && p-base <= uintptr(len(b)) && uintptr(size) <= uintptr(len(b))-(p-base) {
			off := p - base
			return b[off : off+uintptr(size) : off+uintptr(size)]
		}
	}
	return nil
}
