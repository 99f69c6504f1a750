//go:build !wasip1

package sdk_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The documented way to write an agent outside this repository
// (docs/SDK.md): scripts/new-agent.sh makes a module that requires this
// one through a replace line; its unit test passes with the mock and it
// builds to a WASM reactor, offline (GOPROXY=off: nothing is fetched).
func TestNewAgentOutsideRepo(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a WASM module")
	}
	dir := filepath.Join(t.TempDir(), "myagent")
	run := func(wd string, env []string, name string, args ...string) string {
		t.Helper()
		cmd := exec.Command(name, args...)
		cmd.Dir = wd
		cmd.Env = append(os.Environ(), append([]string{"GOPROXY=off", "GOWORK=off", "GOFLAGS="}, env...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
		return string(out)
	}
	out := run(".", nil, "../../scripts/new-agent.sh", dir, "example.com/myagent")
	if !strings.Contains(out, "created "+dir) {
		t.Fatalf("new-agent.sh output:\n%s", out)
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil || !strings.Contains(string(mod), "module example.com/myagent") || !strings.Contains(string(mod), "replace github.com/igor-mesh/igor-node => ") {
		t.Fatalf("go.mod (%v):\n%s", err, mod)
	}
	run(dir, nil, "go", "test", "./...")
	run(dir, []string{"GOOS=wasip1", "GOARCH=wasm"}, "go", "build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false", "-o", "myagent.wasm", ".")
	if fi, err := os.Stat(filepath.Join(dir, "myagent.wasm")); err != nil || fi.Size() == 0 {
		t.Fatalf("myagent.wasm: %v", err)
	}
}
