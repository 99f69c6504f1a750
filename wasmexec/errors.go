package wasmexec

import "errors"

// Sentinel errors. Every error returned by this package wraps at most one of
// them (plus context errors where a caller's context ended); compare with
// errors.Is. Messages name the export, import or limit involved.
var (
	// ErrBadModule: the bytes are not a loadable agent module (not WASM, a
	// compile or validation error, a foreign import module, a wrong signature).
	ErrBadModule = errors.New("wasmexec: bad module")
	// ErrMissingExport: a required export is absent ("missing required export: agent_tick").
	ErrMissingExport = errors.New("wasmexec: missing required export")
	// ErrImportNotGranted: the module imports an igor function whose
	// capability the manifest does not grant.
	ErrImportNotGranted = errors.New("wasmexec: import not granted")
	// ErrDeadline: a guest call ran past its deadline (tick_timeout_ms) and was stopped.
	ErrDeadline = errors.New("wasmexec: deadline exceeded")
	// ErrOutOfMemory: the guest hit its memory cap (max_memory_bytes).
	ErrOutOfMemory = errors.New("wasmexec: out of memory")
	// ErrTrap: the guest trapped, panicked or exited (proc_exit).
	ErrTrap = errors.New("wasmexec: trap")
	// ErrInstanceDead: an earlier call on this instance failed; it is never called again.
	ErrInstanceDead = errors.New("wasmexec: instance dead")
	// ErrStateTooLarge: a state exceeds max_state_bytes.
	ErrStateTooLarge = errors.New("wasmexec: state too large")
	// ErrBadPointer: a pointer/length returned by the guest lies outside its memory.
	ErrBadPointer = errors.New("wasmexec: bad pointer")
	// ErrDivergence: replay of a tick did not follow its tick log.
	ErrDivergence = errors.New("wasmexec: replay divergence")
	// ErrBadTickLog: encoded tick log bytes are malformed.
	ErrBadTickLog = errors.New("wasmexec: bad tick log")
	// ErrBadConfig: a Config field is out of range (NewRuntime).
	ErrBadConfig = errors.New("wasmexec: bad config")
	// ErrResumed: Resume was called on an instance already resumed.
	ErrResumed = errors.New("wasmexec: instance already resumed")
	// ErrClosed: the runtime or instance was closed.
	ErrClosed = errors.New("wasmexec: closed")
)
