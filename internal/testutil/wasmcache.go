package testutil

import (
	"os"
	"testing"
)

// WasmCacheDir is the compiled-WASM cache directory a test's runtime should
// use: the one IGOR_WASM_CACHE names (make test sets it, so a run compiles
// each agent once rather than once per runtime — under the race detector
// compiling was most of hosting's test time), else a fresh one. A test that
// needs a cold cache uses its own t.TempDir().
func WasmCacheDir(tb testing.TB) string {
	if d := os.Getenv("IGOR_WASM_CACHE"); d != "" {
		return d
	}
	return tb.TempDir()
}
