// Package testagents gives tests of other packages the real agent modules
// built from agents/examples, so they run against what users run.
//
// Modules live in bin/agents/<name>.wasm under the repository root, each
// with its sidecar manifest bin/agents/<name>.manifest.json, exactly as
// scripts/build-agents.sh lays them out. Path reuses a module that is newer
// than its sources and rebuilds it otherwise; builders in parallel test
// processes serialise on a lock file, so each module is built once.
package testagents

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// BuildFlags are the go build flags for every agent module, shared with
// scripts/build-agents.sh (tested to give identical bytes): -trimpath and
// -buildvcs=false make the bytes, and so the module CID, independent of the
// checkout path and git state.
var BuildFlags = []string{"build", "-buildmode=c-shared", "-trimpath", "-buildvcs=false"}

// buildTimeout bounds one go build; a cold build of one agent takes seconds.
const buildTimeout = 5 * time.Minute

// mu serialises builders within this process; the file lock does it across
// processes (go test runs packages in parallel).
var mu sync.Mutex

// Path returns the paths of the example agent's module and sidecar
// manifest, building them first if they are missing or older than any
// source they depend on (agents/sdk, agents/examples/<name>, go.mod,
// go.sum). It fails the test with the build output if the build fails.
func Path(t testing.TB, name string) (wasmPath, manifestPath string) {
	t.Helper()
	wasmPath, manifestPath, err := ensure(t.Context(), name)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	return wasmPath, manifestPath
}

// Bytes returns the example agent's module and manifest JSON (see Path).
func Bytes(t testing.TB, name string) (wasm, manifest []byte) {
	t.Helper()
	wp, mp := Path(t, name)
	return read(t, wp, mp)
}

func read(t testing.TB, wasmPath, manifestPath string) (wasm, manifest []byte) {
	t.Helper()
	wasm, err := os.ReadFile(wasmPath)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	manifest, err = os.ReadFile(manifestPath)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	return wasm, manifest
}

// Names lists the example agents (the directories of agents/examples).
func Names(t testing.TB) []string {
	t.Helper()
	root, err := RepoRoot()
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	names, err := exampleNames(root)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	return names
}

// RepoRoot returns the nearest directory at or above the working directory
// that holds go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod found above the working directory; run tests inside the igor-node repository")
		}
		dir = parent
	}
}

func exampleNames(root string) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(root, "agents", "examples"))
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			names = append(names, e.Name())
		}
	}
	sort.Strings(names)
	return names, nil
}

// Variant returns the paths of a build of the example agent with its
// misbehaviour (or other behaviour) chosen at link time:
// go build -ldflags "-X main.mode=MODE". It is cached as
// bin/agents/<name>@<mode>.wasm with the sidecar <name>@<mode>.manifest.json
// (the example's manifest), rebuilt under the same lock and staleness rules
// as Path. mode must be non-empty lower-case letters, digits and dashes.
func Variant(t testing.TB, name, mode string) (wasmPath, manifestPath string) {
	t.Helper()
	if !validMode(mode) {
		t.Fatalf("testagents: bad mode %q for agent %q: want lower-case letters, digits and dashes", mode, name)
	}
	wasmPath, manifestPath, err := ensureMode(t.Context(), name, mode)
	if err != nil {
		t.Fatalf("testagents: %v", err)
	}
	return wasmPath, manifestPath
}

// VariantBytes returns the variant's module and manifest JSON (see Variant).
func VariantBytes(t testing.TB, name, mode string) (wasm, manifest []byte) {
	t.Helper()
	wp, mp := Variant(t, name, mode)
	return read(t, wp, mp)
}

func validMode(mode string) bool {
	if mode == "" || len(mode) > 64 {
		return false
	}
	for _, c := range mode {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func ensure(ctx context.Context, name string) (wasmPath, manifestPath string, err error) {
	return ensureMode(ctx, name, "")
}

// ensureMode builds agent name ("" mode: the plain example) if its module
// or manifest is missing or stale.
func ensureMode(ctx context.Context, name, mode string) (wasmPath, manifestPath string, err error) {
	root, err := RepoRoot()
	if err != nil {
		return "", "", err
	}
	if name == "" || strings.ContainsAny(name, `/\.`) {
		return "", "", fmt.Errorf("bad agent name %q: want a directory name under agents/examples", name)
	}
	src := filepath.Join(root, "agents", "examples", name)
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		have, _ := exampleNames(root)
		return "", "", fmt.Errorf("no example agent %q in agents/examples (have: %s)", name, strings.Join(have, ", "))
	}
	out := filepath.Join(root, "bin", "agents")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return "", "", err
	}
	base := name
	if mode != "" {
		base = name + "@" + mode
	}
	wasmPath = filepath.Join(out, base+".wasm")
	manifestPath = filepath.Join(out, base+".manifest.json")

	mu.Lock()
	defer mu.Unlock()
	unlock, err := lockFile(ctx, filepath.Join(out, ".lock"))
	if err != nil {
		return "", "", err
	}
	defer unlock()

	newest, err := newestSource(filepath.Join(root, "agents", "sdk"), src,
		filepath.Join(root, "go.mod"), filepath.Join(root, "go.sum"))
	if err != nil {
		return "", "", err
	}
	if !newerThan(wasmPath, newest) {
		if err := build(ctx, root, name, mode, wasmPath); err != nil {
			return "", "", err
		}
	}
	if !newerThan(manifestPath, newest) {
		data, err := os.ReadFile(filepath.Join(src, "manifest.json"))
		if err != nil {
			return "", "", fmt.Errorf("agent %q: %w", name, err)
		}
		if err := writeFileAtomic(manifestPath, data); err != nil {
			return "", "", err
		}
	}
	return wasmPath, manifestPath, nil
}

// newestSource returns the latest modification time among the build inputs
// under paths: non-test .go files, manifest.json, go.mod and go.sum.
func newestSource(paths ...string) (time.Time, error) {
	var newest time.Time
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				if errors.Is(err, fs.ErrNotExist) && path == p && filepath.Ext(p) == ".sum" {
					return nil // a module without dependencies has no go.sum
				}
				return err
			}
			if d.IsDir() {
				return nil
			}
			base := d.Name()
			relevant := (strings.HasSuffix(base, ".go") && !strings.HasSuffix(base, "_test.go")) ||
				base == "manifest.json" || base == "go.mod" || base == "go.sum"
			if !relevant {
				return nil
			}
			info, err := d.Info()
			if err != nil {
				return err
			}
			if info.ModTime().After(newest) {
				newest = info.ModTime()
			}
			return nil
		})
		if err != nil {
			return time.Time{}, err
		}
	}
	return newest, nil
}

func newerThan(path string, t time.Time) bool {
	st, err := os.Stat(path)
	return err == nil && st.Mode().IsRegular() && st.ModTime().After(t)
}

// build compiles the agent to a temp file in the output directory and
// renames it into place, so no reader ever sees a half-written module.
func build(ctx context.Context, root, name, mode, dst string) error {
	goTool, err := exec.LookPath("go")
	if err != nil {
		return fmt.Errorf("building agent %q needs the go tool in PATH: %w", name, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+strings.TrimSuffix(filepath.Base(dst), ".wasm")+".*.wasm.tmp")
	if err != nil {
		return err
	}
	tmpPath := tmp.Name()
	tmp.Close()
	defer os.Remove(tmpPath) // no-op after a successful rename

	ctx, cancel := context.WithTimeout(ctx, buildTimeout)
	defer cancel()
	args := append([]string{}, BuildFlags...)
	if mode != "" {
		args = append(args, "-ldflags", "-X main.mode="+mode)
	}
	args = append(args, "-o", tmpPath, "./agents/examples/"+name)
	cmd := exec.CommandContext(ctx, goTool, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building agent %q (go %s): %w\n%s", name, strings.Join(args, " "), err, out)
	}
	return syncRename(tmpPath, dst)
}

func writeFileAtomic(dst string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(dst), "."+filepath.Base(dst)+".*.tmp")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil { // CreateTemp makes 0600
		return err
	}
	return syncRename(tmp.Name(), dst)
}

// syncRename fsyncs src, renames it to dst and fsyncs the directory.
func syncRename(src, dst string) error {
	f, err := os.OpenFile(src, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(src, dst); err != nil {
		return err
	}
	d, err := os.Open(filepath.Dir(dst))
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
