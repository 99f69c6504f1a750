package main

// End-to-end tests: the real igor-node binary, run as separate processes, on
// real agents built from agents/examples.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
)

var binPath, demoPath string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "igor-e2e-bin-*")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "igor-node")
	build := exec.Command("go", "build", "-buildvcs=auto", "-o", binPath, ".") // stamped like `make build` (TestVersion)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build igor-node:", err)
		os.Exit(1)
	}
	// The demo server (paywall, counting server) the effect tests act on.
	demoPath = filepath.Join(dir, "igor-demo-server")
	build = exec.Command("go", "build", "-o", demoPath, "../../testnet/demoserver")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build igor-demo-server:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type result struct {
	stdout, stderr string
	code           int
}

// igor runs the binary to completion.
func igor(t *testing.T, home string, args ...string) result {
	t.Helper()
	if home != "" {
		args = append([]string{"--home", home}, args...)
	}
	cmd := exec.Command(binPath, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "IGOR_HOME=") // never touch the real ~/.igor
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		t.Fatalf("igor-node %v hung; stderr:\n%s", args, errb.String())
	}
	return result{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
}

func mustOK(t *testing.T, r result, what string) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

type inspectJSON struct {
	DID         string `json:"did"`
	CID         string `json:"cid"`
	Seq         uint64 `json:"seq"`
	Tick        uint64 `json:"tick"`
	Budget      int64  `json:"budget_microcents"`
	Module      string `json:"module"`
	State       string `json:"state"`
	Prev        string `json:"prev"`
	SignatureOK bool   `json:"signatures_valid"`
}

func inspect(t *testing.T, home, ref string) inspectJSON {
	t.Helper()
	r := mustOK(t, igor(t, home, "inspect", ref, "--json"), "inspect")
	var v inspectJSON
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("inspect --json output %q: %v", r.stdout, err)
	}
	return v
}

var tickLine = regexp.MustCompile(`(?m)^\[z6Mk[^\]]*\] tick=(\d+)`)

// newAgent runs heartbeat for n ticks in home and returns its DID.
func newAgent(t *testing.T, home string, n int) string {
	t.Helper()
	wasm, _ := testagents.Path(t, "heartbeat")
	r := mustOK(t, igor(t, home, "run", "--tick-interval", "5ms", "--checkpoint-every", "3", "--max-ticks", fmt.Sprint(n), wasm), "run")
	did := firstLine(r.stdout)
	if !strings.HasPrefix(did, "did:key:z6Mk") {
		t.Fatalf("run must print the DID first, got %q", did)
	}
	if got := len(tickLine.FindAllString(r.stdout, -1)); got != n {
		t.Fatalf("want %d tick log lines prefixed with the short DID, got %d:\n%s", n, got, r.stdout)
	}
	return did
}

func TestPortableAgentLifecycle(t *testing.T) {
	a, b, work := t.TempDir(), t.TempDir(), t.TempDir()
	did := newAgent(t, a, 7)

	h := inspect(t, a, did)
	if h.DID != did || h.Tick != 7 || !h.SignatureOK || h.Budget <= 0 || h.Budget >= 1_000_000 {
		t.Fatalf("after 7 ticks: %+v", h)
	}
	// checkpoints at ticks 3, 6 and the final one at 7, after checkpoint 0
	if h.Seq != 3 {
		t.Fatalf("seq %d, want 3 (ticks 0,3,6,7)", h.Seq)
	}
	mustOK(t, igor(t, a, "verify", did), "verify")

	// resume continues the tick count with the same DID
	r := mustOK(t, igor(t, a, "resume", "--tick-interval", "5ms", "--max-ticks", "3", did), "resume")
	if firstLine(r.stdout) != did || !strings.Contains(r.stdout, "tick=10") {
		t.Fatalf("resume output:\n%s", r.stdout)
	}
	if got := inspect(t, a, did).Tick; got != 10 {
		t.Fatalf("tick after resume = %d, want 10", got)
	}

	// export the DAG and the key; import both into a second home
	car, key := filepath.Join(work, "agent.car"), filepath.Join(work, "agent.key")
	mustOK(t, igor(t, a, "export", did, "-o", car), "export")
	r = mustOK(t, igor(t, a, "keys", "export", did, "-o", key), "keys export")
	if !strings.Contains(r.stderr, "private key") {
		t.Fatalf("keys export must warn about the private key, stderr: %s", r.stderr)
	}
	if st, _ := os.Stat(key); st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, want 0600", st.Mode().Perm())
	}
	if r := igor(t, a, "keys", "export", did, "-o", key); r.code == 0 {
		t.Fatal("keys export must refuse to overwrite an existing file")
	}
	mustOK(t, igor(t, "", "verify", car), "verify CAR")

	r = mustOK(t, igor(t, b, "import", car), "import")
	if !strings.Contains(r.stderr, "keys import") {
		t.Fatalf("import without key must say how to import it, stderr: %s", r.stderr)
	}
	r = igor(t, b, "resume", "--max-ticks", "1", did)
	if r.code == 0 || !strings.Contains(r.stderr, "keys import") {
		t.Fatalf("resume without the key must fail and say how to import it: %d %s", r.code, r.stderr)
	}
	mustOK(t, igor(t, b, "keys", "import", key), "keys import")
	r = mustOK(t, igor(t, b, "resume", "--tick-interval", "5ms", "--max-ticks", "2", did), "resume on B")
	if !strings.Contains(r.stdout, "tick=12") {
		t.Fatalf("resume on B must continue at tick 11..12:\n%s", r.stdout)
	}
	hb := inspect(t, b, did)
	if hb.Tick != 12 || hb.DID != did {
		t.Fatalf("B head %+v", hb)
	}
	mustOK(t, igor(t, b, "verify", did), "verify on B")
	// importing the older CAR again keeps B's newer head
	r = mustOK(t, igor(t, b, "import", car, "--json"), "re-import")
	if !strings.Contains(r.stdout, "kept-newer-local") {
		t.Fatalf("re-import of an older CAR: %s", r.stdout)
	}
	// list shows the agent
	r = mustOK(t, igor(t, b, "list"), "list")
	if !strings.Contains(r.stdout, did) {
		t.Fatalf("list: %s", r.stdout)
	}
}

func TestSIGINTCommitsFinalCheckpoint(t *testing.T) {
	home := t.TempDir()
	wasm, _ := testagents.Path(t, "heartbeat")
	cmd := exec.Command(binPath, "--home", home, "run", "--tick-interval", "20ms", "--checkpoint-every", "1000", wasm)
	var out, errb syncBuffer // read while the process writes
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for len(tickLine.FindAllString(out.String(), -1)) < 5 {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("agent did not tick:\n%s\n%s", out.String(), errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run after SIGINT: %v\n%s", err, errb.String())
	}
	did := firstLine(out.String())
	ticks := tickLine.FindAllStringSubmatch(out.String(), -1)
	last := ticks[len(ticks)-1][1]
	if got := inspect(t, home, did).Tick; fmt.Sprint(got) != last {
		t.Fatalf("final checkpoint at tick %d, but the agent logged tick %s before SIGINT", got, last)
	}
}

func TestBudgetExhaustion(t *testing.T) {
	home := t.TempDir()
	wasm, _ := testagents.Path(t, "heartbeat")
	// 0.000050 = 50 µc at 1,000,000 µc/s: a few ticks at most (each costs ≥ 1 µc).
	r := mustOK(t, igor(t, home, "run", "--budget", "0.000050", "--tick-interval", "1ms", wasm), "run to exhaustion")
	if !strings.Contains(r.stderr, "budget exhausted") {
		t.Fatalf("want a clear budget message, stderr:\n%s", r.stderr)
	}
	did := firstLine(r.stdout)
	h := inspect(t, home, did)
	if h.Budget != 0 || h.Tick == 0 {
		t.Fatalf("final checkpoint must record budget 0 after some ticks: %+v", h)
	}
	mustOK(t, igor(t, home, "verify", did), "verify exhausted agent")
	r = igor(t, home, "resume", did)
	if r.code == 0 || !strings.Contains(r.stderr, "budget") {
		t.Fatalf("resume of an exhausted agent must fail clearly: %d %s", r.code, r.stderr)
	}
}

// cliCase is a command line that must fail with an exit status and a
// message that mentions want.
type cliCase struct {
	name string
	args []string
	want string
	code int
}

// cliCases runs each case in home as a subtest.
func cliCases(t *testing.T, home string, cases []cliCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := igor(t, home, c.args...)
			if r.code != c.code || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d (want %d), stderr %q (want it to mention %q)", r.code, c.code, r.stderr, c.want)
			}
		})
	}
}

func TestBadInput(t *testing.T) {
	home := t.TempDir()
	wasm, manifest := testagents.Path(t, "heartbeat")
	tmp := t.TempDir()

	cliCases(t, home, []cliCase{
		{"unknown DID", []string{"inspect", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"}, "unknown agent", 1},
		{"garbage ref", []string{"inspect", "not-a-thing"}, "neither a DID", 1},
		{"bad DID verify", []string{"verify", "did:key:zzz"}, "neither a DID nor a CAR", 2},
		{"missing module", []string{"run", filepath.Join(tmp, "nope.wasm")}, "read module", 1},
		{"bad budget", []string{"run", "--budget", "-1", wasm}, "--budget", 2},
		{"too many decimals", []string{"run", "--budget", "0.0000001", wasm}, "6 decimals", 2},
		{"no args", []string{"run"}, "needs AGENT.wasm", 2},
		{"unknown flag", []string{"run", "--bogus", wasm}, "unknown flag", 2},
		{"export without -o", []string{"export", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"}, "-o", 2},
	})

	t.Run("malformed manifest creates nothing", func(t *testing.T) {
		bad := filepath.Join(tmp, "bad.json")
		os.WriteFile(bad, []byte(`{"capabilities":{"clock":{"version":1},"teleport":{"version":1}}}`), 0o644)
		r := igor(t, home, "run", "--manifest", bad, wasm)
		if r.code == 0 || !strings.Contains(r.stderr, `unknown capability "teleport"`) {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
		if r := mustOK(t, igor(t, home, "list", "--json"), "list"); strings.TrimSpace(r.stdout) != "[]" {
			t.Fatalf("a failed run must not leave an agent: %s", r.stdout)
		}
	})

	t.Run("missing sidecar manifest", func(t *testing.T) {
		lone := filepath.Join(tmp, "lone.wasm")
		data, _ := os.ReadFile(wasm)
		os.WriteFile(lone, data, 0o644)
		r := igor(t, home, "run", lone)
		if r.code == 0 || !strings.Contains(r.stderr, "lone.manifest.json does not exist") {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
	})

	t.Run("ungranted import is named", func(t *testing.T) {
		w, m := testagents.Path(t, "ungranted")
		r := igor(t, home, "run", "--manifest", m, w)
		if r.code == 0 || !strings.Contains(r.stderr, "rand_bytes") || !strings.Contains(r.stderr, `"rand"`) {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
	})

	t.Run("unwritable home", func(t *testing.T) {
		file := filepath.Join(tmp, "a-file")
		os.WriteFile(file, []byte("x"), 0o644)
		r := igor(t, filepath.Join(file, "home"), "run", "--manifest", manifest, wasm)
		if r.code == 0 || !strings.Contains(r.stderr, "home directory unusable") {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
	})

	t.Run("corrupt key is an error and is not overwritten", func(t *testing.T) {
		h := t.TempDir()
		did := newAgent(t, h, 1)
		keys, _ := filepath.Glob(filepath.Join(h, "keys", "*"))
		if len(keys) != 1 {
			t.Fatalf("keystore files: %v", keys)
		}
		os.WriteFile(keys[0], []byte("garbage"), 0o600)
		r := igor(t, h, "resume", "--max-ticks", "1", did)
		if r.code == 0 || !strings.Contains(strings.ToLower(r.stderr), "corrupt") {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
		if got, _ := os.ReadFile(keys[0]); string(got) != "garbage" {
			t.Fatal("corrupt key file was rewritten")
		}
	})

	t.Run("truncated CAR changes nothing", func(t *testing.T) {
		h, h2 := t.TempDir(), t.TempDir()
		did := newAgent(t, h, 2)
		car := filepath.Join(tmp, "full.car")
		mustOK(t, igor(t, h, "export", did, "-o", car), "export")
		data, _ := os.ReadFile(car)
		for _, cut := range []int{len(data) / 3, len(data) - 7} {
			short := filepath.Join(tmp, fmt.Sprintf("cut%d.car", cut))
			os.WriteFile(short, data[:cut], 0o644)
			r := igor(t, h2, "import", short)
			if r.code == 0 || !strings.Contains(r.stderr, "import") {
				t.Fatalf("truncated CAR at %d: exit %d stderr %q", cut, r.code, r.stderr)
			}
			if r := igor(t, "", "verify", short); r.code == 0 {
				t.Fatalf("verify of a truncated CAR must fail")
			}
		}
		if r := mustOK(t, igor(t, h2, "list", "--json"), "list"); strings.TrimSpace(r.stdout) != "[]" {
			t.Fatalf("a failed import must not adopt a head: %s", r.stdout)
		}
	})
}
