//go:build wasip1

// Command noexport is a hostile fixture written without the SDK: it has
// every lifecycle export except agent_tick, so the host must reject it at
// load with "missing required export: agent_tick".
package main

import "unsafe"

//go:wasmexport agent_init
func agentInit() {}

//go:wasmexport agent_checkpoint
func agentCheckpoint() int32 { return 0 }

//go:wasmexport agent_checkpoint_ptr
func agentCheckpointPtr() int32 { return 0 }

//go:wasmexport agent_resume
func agentResume(ptr unsafe.Pointer, size uint32) {}

func main() {}
