//go:build !wasip1

package sdk

import "sync"

var (
	backendMu sync.RWMutex
	backend   Backend // guarded by backendMu
)

// SetBackend installs b to answer hostcalls in native builds (nil removes
// it). The backend is process-wide, so tests that install different
// backends must not run in parallel. It exists only outside GOOS=wasip1.
func SetBackend(b Backend) {
	backendMu.Lock()
	backend = b
	backendMu.Unlock()
}

func currentBackend(call string) Backend {
	backendMu.RLock()
	b := backend
	backendMu.RUnlock()
	if b == nil {
		panic("sdk: " + call + " called in a native build with no backend installed; in tests install one first: " +
			"mock.New(seed).Install() (package github.com/igor-mesh/igor-node/agents/sdk/mock)")
	}
	return b
}

func clockNow() int64          { return currentBackend("ClockNow").ClockNow() }
func randBytes(b []byte) int32 { return currentBackend("RandBytes").RandBytes(b) }
func logEmit(msg string)       { currentBackend("Log").LogEmit(msg) }
func argsGet() string          { return currentBackend("Args").Args() }
