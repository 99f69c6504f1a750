//go:build wasip1

// Command badptr is a hostile fixture written without the SDK: its
// agent_checkpoint reports 16 bytes at 0x7fffff00, far beyond its linear
// memory, so the host must refuse the checkpoint with an error naming the
// export instead of reading out of bounds.
package main

import "unsafe"

//go:wasmexport agent_init
func agentInit() {}

//go:wasmexport agent_tick
func agentTick() int32 { return 0 }

//go:wasmexport agent_checkpoint
func agentCheckpoint() int32 { return 16 }

//go:wasmexport agent_checkpoint_ptr
func agentCheckpointPtr() uint32 { return 0x7fffff00 }

//go:wasmexport agent_resume
func agentResume(ptr unsafe.Pointer, size uint32) {}

func main() {}
