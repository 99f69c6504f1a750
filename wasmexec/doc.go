// Package wasmexec is igor-node's sandbox: it compiles agent modules with
// wazero (with an on-disk compilation cache), instantiates them with the
// limits of their manifest, provides the `igor` host module, runs every
// lifecycle call under a deadline, records each tick's observations and
// replays a tick from its log. docs/ABI.md is the contract it implements;
// its last section describes how.
//
// # Usage
//
//	rt, err := wasmexec.NewRuntime(ctx, wasmexec.Config{CacheDir: dir, Logger: log})
//	defer rt.Close(ctx)
//	mod, err := rt.Compile(ctx, moduleCID, wasmBytes)     // once per module, shared
//	inst, err := rt.Instantiate(ctx, mod, wasmexec.InstanceConfig{Manifest: m, AgentDID: did})
//	err = inst.Resume(ctx, state)                         // nil/empty for a new agent
//	res, err := inst.Tick(ctx)                            // res.Log: the tick's observations
//	state, err = inst.Checkpoint(ctx)
//	post, err := rt.Replay(ctx, mod, cfg, preState, res.Log) // == state for a deterministic agent
//
// # Notes
//
//   - Any failed guest call ends its instance (Instance.Err); re-create the
//     agent from its last checkpoint.
//   - An Instance is used by one goroutine at a time; Close, Err and
//     MemoryBytes may be called from anywhere, and Close stops a running call.
//   - Hundreds of instances share one Runtime; a Go agent instance costs
//     ~0.8 MB of (proportional) resident memory, see BenchmarkInstanceMemory.
package wasmexec
