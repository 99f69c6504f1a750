//go:build wasip1

// Command bigstate is a hostile fixture written without the SDK: its
// agent_checkpoint claims a 1 GiB state, far beyond max_state_bytes, so the
// host must refuse the checkpoint with an error naming the export (and must
// not try to allocate or copy 1 GiB).
package main

import "unsafe"

var buf [16]byte

//go:wasmexport agent_init
func agentInit() {}

//go:wasmexport agent_tick
func agentTick() int32 { return 0 }

//go:wasmexport agent_checkpoint
func agentCheckpoint() int32 { return 1 << 30 }

//go:wasmexport agent_checkpoint_ptr
func agentCheckpointPtr() unsafe.Pointer { return unsafe.Pointer(&buf[0]) }

//go:wasmexport agent_resume
func agentResume(ptr unsafe.Pointer, size uint32) {}

func main() {}
