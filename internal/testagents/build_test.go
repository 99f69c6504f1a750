package testagents_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
)

func TestPathReusesFreshModule(t *testing.T) {
	wp, mp := testagents.Path(t, "trapinit")
	st1, err := os.Stat(wp)
	if err != nil {
		t.Fatal(err)
	}
	if filepath.Base(wp) != "trapinit.wasm" || filepath.Base(mp) != "trapinit.manifest.json" || filepath.Dir(wp) != filepath.Dir(mp) {
		t.Fatalf("paths %s, %s do not follow the sidecar convention", wp, mp)
	}
	wp2, _ := testagents.Path(t, "trapinit")
	st2, err := os.Stat(wp2)
	if err != nil {
		t.Fatal(err)
	}
	if wp2 != wp || !st2.ModTime().Equal(st1.ModTime()) {
		t.Fatalf("fresh module was rebuilt (%v -> %v)", st1.ModTime(), st2.ModTime())
	}
}

// Making the module older than its sources must trigger a rebuild, and the
// rebuild must reproduce the same bytes. Concurrent callers all get a
// complete module.
func TestPathRebuildsStaleModuleOnce(t *testing.T) {
	wp, mp := testagents.Path(t, "trapinit")
	before, err := os.ReadFile(wp)
	if err != nil {
		t.Fatal(err)
	}
	old := time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, p := range []string{wp, mp} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	results := make([][]byte, 4)
	for i := range results {
		wg.Go(func() { results[i], _ = testagents.Bytes(t, "trapinit") })
	}
	wg.Wait()
	for i, b := range results {
		if !bytes.Equal(b, before) {
			t.Fatalf("caller %d got %d bytes, want the %d reproducible bytes", i, len(b), len(before))
		}
	}
	for _, p := range []string{wp, mp} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !st.ModTime().After(old) {
			t.Fatalf("%s was not rebuilt", p)
		}
	}
	leftovers, _ := filepath.Glob(filepath.Join(filepath.Dir(wp), ".trapinit.*.tmp"))
	if len(leftovers) > 0 {
		t.Fatalf("temp files left behind: %v", leftovers)
	}
}

func TestUnknownAgentFails(t *testing.T) {
	for _, name := range []string{"no-such-agent", "../sdk", ""} {
		ft := &fatalRecorder{TB: t}
		func() {
			defer func() { _ = recover() }()
			testagents.Path(ft, name)
		}()
		if !strings.Contains(ft.msg, "agent") || !strings.Contains(ft.msg, "testagents:") {
			t.Errorf("Path(%q): fatal %q, want an error naming the agent", name, ft.msg)
		}
	}
}

// fatalRecorder captures Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic("fatal") // stand-in for runtime.Goexit, recovered by the caller
}

// The script and Path must produce identical modules and sidecars.
func TestBuildScriptMatchesPath(t *testing.T) {
	root, err := testagents.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	script := filepath.Join(root, "scripts", "build-agents.sh")

	if out, err := exec.Command("bash", script).CombinedOutput(); err == nil || !strings.Contains(string(out), "usage") {
		t.Fatalf("no argument: err %v, output %q; want a usage error", err, out)
	}

	dir := t.TempDir()
	cmd := exec.CommandContext(t.Context(), "bash", script, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build-agents.sh: %v\n%s", err, out)
	}
	for _, name := range testagents.Names(t) {
		wasm, manifest := testagents.Bytes(t, name)
		got, err := os.ReadFile(filepath.Join(dir, name+".wasm"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, wasm) {
			t.Errorf("%s.wasm: script and testagents builds differ (%d vs %d bytes)", name, len(got), len(wasm))
		}
		gotM, err := os.ReadFile(filepath.Join(dir, name+".manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gotM, manifest) {
			t.Errorf("%s.manifest.json differs", name)
		}
	}
	if tmps, _ := filepath.Glob(filepath.Join(dir, ".*")); len(tmps) > 0 {
		t.Errorf("script left temp files: %v", tmps)
	}
}
