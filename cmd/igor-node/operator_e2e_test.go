package main

// End-to-end tests of running a daemon (issue #11 item 4): re-bootstrap,
// connect, version, unknown commands, and stopping on signals.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// daemon is an igor-node daemon process started by startDaemon.
type daemon struct {
	*proc
	home, peer, api string
	addrs           []string
}

// startDaemon starts `igor-node daemon` in home (API on a free port, fast
// ticks, plus args) and waits until it printed its peer, API and addresses.
func startDaemon(t *testing.T, home string, args ...string) *daemon {
	t.Helper()
	p := start(t, home, append([]string{"daemon", "--api", "127.0.0.1:0", "--tick-interval", "100ms"}, args...)...)
	d := &daemon{proc: p, home: home}
	waitUntil(t, 60*time.Second, "the daemon's start-up lines", func() error {
		if p.exited() {
			t.Fatalf("daemon exited at start-up:\n%s\n%s", p.stdout(), p.stderr())
		}
		out := p.stdout()
		if !strings.Contains(out, "\naddr ") {
			return fmt.Errorf("stdout so far: %q", out)
		}
		d.addrs = nil
		for _, l := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(l, "peer "); ok {
				d.peer = v
			} else if v, ok := strings.CutPrefix(l, "api  "); ok {
				d.api = v
			} else if v, ok := strings.CutPrefix(l, "addr "); ok {
				d.addrs = append(d.addrs, v)
			}
		}
		return nil
	})
	return d
}

// signal sends sig to the daemon.
func (d *daemon) signal(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if err := d.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// waitExit waits up to limit for the daemon to exit and returns how long
// that took.
func (d *daemon) waitExit(t *testing.T, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	select {
	case <-d.done:
		return time.Since(start)
	case <-time.After(limit):
		t.Fatalf("daemon still running %v after the signal; stderr:\n%s", limit, d.stderr())
		return 0
	}
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// peersOf lists the peer IDs `igor-node peers` shows in home.
func peersOf(t *testing.T, home string) ([]string, error) {
	r := igor(t, home, "peers", "--json")
	if r.code != 0 {
		return nil, fmt.Errorf("peers: exit %d %s", r.code, r.stderr)
	}
	var ps []struct{ Peer string }
	if err := json.Unmarshal([]byte(r.stdout), &ps); err != nil {
		return nil, err
	}
	var ids []string
	for _, p := range ps {
		ids = append(ids, p.Peer)
	}
	return ids, nil
}

// seesHost is nil once `igor-node hosts` in home lists peer.
func seesHost(t *testing.T, home, peer string) error {
	r := igor(t, home, "hosts", "--json")
	if r.code != 0 {
		return fmt.Errorf("hosts: exit %d %s", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, peer) {
		return fmt.Errorf("hosts lists %s", r.stdout)
	}
	return nil
}

// Re-bootstrap (issue #11 "must show"): B starts while its bootstrap peer A
// is down and joins within 30 s of A's return; when A goes away again and
// comes back, B rejoins by itself too. A keeps its identity (its home) and
// its port, as a real machine's daemon would across a restart.
func TestRebootstrapWhenBootstrapPeerReturns(t *testing.T) {
	homeA, homeB := t.TempDir(), t.TempDir()
	listen := fmt.Sprintf("/ip4/127.0.0.1/tcp/%d", freePort(t))
	// A's first run only makes its identity: its peer ID is the home's node key.
	a := startDaemon(t, homeA, "--listen", listen)
	idA := a.peer
	a.signal(t, syscall.SIGTERM)
	a.waitExit(t, 30*time.Second)
	bootA := listen + "/p2p/" + idA

	b := startDaemon(t, homeB, "--bootstrap", bootA)
	if !strings.Contains(b.stderr(), "no bootstrap peer reachable") {
		t.Fatalf("B must warn that its bootstrap peer is down:\n%s", b.stderr())
	}
	// B retries meanwhile, backing off: after 1, 2, 4, 8 s, so that when A
	// returns B's next attempt is up to 16 s away.
	time.Sleep(16 * time.Second)
	if ids, err := peersOf(t, homeB); err != nil || len(ids) != 0 {
		t.Fatalf("B has peers while A is down: %v %v", ids, err)
	}

	for round := 1; round <= 2; round++ {
		a = startDaemon(t, homeA, "--listen", listen)
		if a.peer != idA {
			t.Fatalf("A's peer ID changed across restarts: %s, then %s", idA, a.peer)
		}
		back := time.Now()
		waitUntil(t, 30*time.Second, fmt.Sprintf("round %d: B connected to A again", round), func() error {
			ids, err := peersOf(t, homeB)
			if err != nil {
				return err
			}
			if len(ids) != 1 || ids[0] != idA {
				return fmt.Errorf("B's peers: %v", ids)
			}
			return nil
		})
		waitUntil(t, 30*time.Second-time.Since(back), fmt.Sprintf("round %d: B lists A among the hosts", round), func() error {
			return seesHost(t, homeB, idA)
		})
		t.Logf("round %d: B sees A %v after A's return", round, time.Since(back).Round(time.Millisecond))
		a.signal(t, syscall.SIGTERM)
		a.waitExit(t, 30*time.Second)
		// B notices it is alone again (no peer), and dials A anew in round 2.
		waitUntil(t, 10*time.Second, "B without peers after A stopped", func() error {
			if ids, err := peersOf(t, homeB); err != nil || len(ids) != 0 {
				return fmt.Errorf("B's peers: %v %v", ids, err)
			}
			return nil
		})
	}
	if !strings.Contains(b.stderr(), "re-bootstrap: reached bootstrap peers") {
		t.Errorf("B's log does not say it re-bootstrapped:\n%s", b.stderr())
	}
}

// postJSON posts body to the daemon's API and returns the status and the
// decoded {"error"} message, if any.
func postJSON(t *testing.T, api, path, body string) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 30 * time.Second}
	resp, err := c.Post("http://"+api+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var e struct{ Error string }
	if resp.StatusCode >= 300 && json.Unmarshal(data, &e) != nil {
		t.Fatalf("POST %s: HTTP %d without a JSON error: %s", path, resp.StatusCode, data)
	}
	return resp.StatusCode, e.Error
}

// `igor-node connect` and POST /v1/peers/connect: a good address connects,
// bad input and unreachable peers are clear errors, the timeout holds.
func TestConnect(t *testing.T) {
	homeA, homeB := t.TempDir(), t.TempDir()
	a := startDaemon(t, homeA, "--slots", "0")
	b := startDaemon(t, homeB, "--slots", "0")

	r := mustOK(t, igor(t, homeB, "connect", a.addrs[0]), "connect")
	if !strings.Contains(r.stdout, "connected to "+a.peer) {
		t.Fatalf("connect output: %s", r.stdout)
	}
	ids, err := peersOf(t, homeB)
	if err != nil || len(ids) != 1 || ids[0] != a.peer {
		t.Fatalf("B's peers after connect: %v %v", ids, err)
	}
	r = mustOK(t, igor(t, homeB, "connect", "--json", a.addrs[0]), "connect again")
	var res struct {
		Peer  string
		Addrs []string
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.Peer != a.peer || len(res.Addrs) == 0 {
		t.Fatalf("connect --json: %v %s", err, r.stdout)
	}

	stranger := "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"
	cliCases(t, homeB, []cliCase{
		{"not a multiaddr", []string{"connect", "example.org:4001"}, "not a multiaddr", 2},
		{"no peer ID", []string{"connect", "/ip4/127.0.0.1/tcp/4001"}, "must end in /p2p/<peer id>", 2},
		{"no argument", []string{"connect"}, "needs MULTIADDR", 2},
		{"bad timeout", []string{"connect", "--timeout", "0s", a.addrs[0]}, "--timeout", 2},
		{"itself", []string{"connect", b.addrs[0]}, "own peer ID", 1},
		{"nobody listens", []string{"connect", fmt.Sprintf("/ip4/127.0.0.1/tcp/%d/p2p/%s", freePort(t), stranger)}, "peer unreachable", 1},
	})
	t.Run("timeout", func(t *testing.T) {
		// TEST-NET-1 is never routed: the dial either fails at once or
		// hangs until the timeout, which must hold.
		start := time.Now()
		r := igor(t, homeB, "connect", "--timeout", "1s", "/ip4/192.0.2.1/tcp/4001/p2p/"+stranger)
		if r.code != 1 || !strings.Contains(r.stderr, "peer unreachable") {
			t.Fatalf("exit %d stderr %q", r.code, r.stderr)
		}
		if d := time.Since(start); d > 8*time.Second {
			t.Fatalf("connect --timeout 1s took %v", d)
		}
	})

	t.Run("API", func(t *testing.T) {
		for _, c := range []struct {
			path, body string
			code       int
			want       string
		}{
			{"/v1/peers/connect", `{"addr": "` + a.addrs[0] + `"}`, 200, ""},
			{"/v1/peers/connect", `{"addr": "nonsense"}`, 400, "not a multiaddr"},
			{"/v1/peers/connect", `{"address": "x"}`, 400, "unknown field"},
			{"/v1/peers/connect", `{}`, 400, "addr is empty"},
			{"/v1/peers/connect", `not json`, 400, "not a connect request"},
			{"/v1/peers/connect?timeout=soon", `{"addr": "` + a.addrs[0] + `"}`, 400, "not a positive duration"},
			{"/v1/peers/connect", fmt.Sprintf(`{"addr": "/ip4/127.0.0.1/tcp/%d/p2p/%s"}`, freePort(t), stranger), 502, "peer unreachable"},
		} {
			code, msg := postJSON(t, b.api, c.path, c.body)
			if code != c.code || !strings.Contains(msg, c.want) {
				t.Errorf("POST %s %s: HTTP %d %q, want %d mentioning %q", c.path, c.body, code, msg, c.code, c.want)
			}
		}
	})
}

// `igor-node version`, `--version` and igor_build_info name the same build:
// the git revision the binary was built from and the Go version.
func TestVersion(t *testing.T) {
	r := mustOK(t, igor(t, "", "version", "--json"), "version --json")
	var v struct {
		Release, Revision string
		ModuleVersion     string `json:"module_version"`
		Go                string `json:"go_version"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("version --json: %v %s", err, r.stdout)
	}
	if v.Release == "" || v.Go != runtime.Version() || v.ModuleVersion == "" {
		t.Fatalf("version --json: %s", r.stdout)
	}
	// TestMain builds the binary from this checkout with -buildvcs=auto.
	if head, err := exec.Command("git", "rev-parse", "HEAD").Output(); err == nil {
		if want := strings.TrimSpace(string(head)); v.Revision != want {
			t.Fatalf("revision %q, want HEAD %s", v.Revision, want)
		}
	}
	long := mustOK(t, igor(t, "", "version"), "version").stdout
	short := mustOK(t, igor(t, "", "--version"), "--version").stdout
	for _, out := range []string{long, short} {
		if !strings.HasPrefix(out, "igor-node "+v.Release) || !strings.Contains(out, runtime.Version()) {
			t.Fatalf("version output lacks the release or the Go version:\n%s", out)
		}
	}
	if v.Revision != "" && (!strings.Contains(long, v.Revision) || !strings.Contains(short, v.Revision[:12])) {
		t.Fatalf("version output lacks the revision %s:\n%s\n%s", v.Revision, long, short)
	}

	d := startDaemon(t, t.TempDir(), "--slots", "0")
	resp, err := http.Get("http://" + d.api + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	line := regexp.MustCompile(`(?m)^igor_build_info\{(.*)\} 1$`).FindSubmatch(body)
	if line == nil {
		t.Fatalf("no igor_build_info 1 in /metrics:\n%s", body)
	}
	for _, label := range []string{`version="` + v.Release + `"`, `go_version="` + runtime.Version() + `"`, `module_version="` + v.ModuleVersion + `"`} {
		if !bytes.Contains(line[1], []byte(label)) {
			t.Errorf("igor_build_info lacks %s: %s", label, line[0])
		}
	}
}

// An unknown command is bad usage: exit status 2 and a hint.
func TestUnknownCommand(t *testing.T) {
	cliCases(t, t.TempDir(), []cliCase{
		{"unknown", []string{"frobnicate"}, `unknown command "frobnicate"`, 2},
		{"typo", []string{"pubish"}, `did you mean "publish"?`, 2},
		{"unknown after a flag", []string{"--log-level", "warn", "frobnicate"}, `unknown command "frobnicate"`, 2},
	})
	if r := igor(t, t.TempDir()); r.code != 0 || !strings.Contains(r.stdout, "Available Commands") {
		t.Errorf("igor-node alone prints help: exit %d %s", r.code, r.stdout)
	}
}

// Stopping a daemon: with nowhere to drain it stops at once whatever
// --drain-timeout says; while a drain waits, a second signal stops it.
func TestDaemonStopSignals(t *testing.T) {
	wasm, _ := testagents.Path(t, "heartbeat")
	running := func(d *daemon) func() error {
		return func() error {
			var sts []custody.Status
			if err := getJSON(d.api, "/v1/custody", &sts); err != nil {
				return err
			}
			if len(sts) != 1 || !sts[0].Running {
				return fmt.Errorf("custody: %+v", sts)
			}
			return nil
		}
	}

	t.Run("nowhere to drain", func(t *testing.T) {
		d := startDaemon(t, t.TempDir(), "--drain-timeout", "60s")
		mustOK(t, igor(t, d.home, "publish", "--min-replicas", "0", wasm), "publish")
		waitUntil(t, 30*time.Second, "the agent running", running(d))
		d.signal(t, syscall.SIGINT)
		took := d.waitExit(t, 15*time.Second)
		if d.cmd.ProcessState.ExitCode() != 0 || !strings.Contains(d.stderr(), "nowhere to drain") {
			t.Fatalf("exit %d after %v; stderr:\n%s", d.cmd.ProcessState.ExitCode(), took, d.stderr())
		}
		t.Logf("solo daemon with an agent stopped %v after SIGINT (drain timeout 60s)", took.Round(time.Millisecond))
	})

	t.Run("second signal", func(t *testing.T) {
		// B hosts nothing (--slots 0), so A's agent has a connected peer
		// but no host to go to: the drain waits until its timeout.
		a := startDaemon(t, t.TempDir(), "--drain-timeout", "60s")
		b := startDaemon(t, t.TempDir(), "--slots", "0", "--bootstrap", a.addrs[0])
		mustOK(t, igor(t, a.home, "publish", "--min-replicas", "0", wasm), "publish")
		waitUntil(t, 30*time.Second, "the agent running", running(a))
		waitUntil(t, 30*time.Second, "A connected to B", func() error {
			if ids, err := peersOf(t, a.home); err != nil || len(ids) != 1 || ids[0] != b.peer {
				return fmt.Errorf("A's peers: %v %v", ids, err)
			}
			return nil
		})
		a.signal(t, syscall.SIGINT)
		time.Sleep(2 * time.Second)
		if a.exited() {
			t.Fatalf("A stopped without draining; stderr:\n%s", a.stderr())
		}
		a.signal(t, syscall.SIGINT)
		took := a.waitExit(t, 10*time.Second)
		if a.cmd.ProcessState.ExitCode() != 0 || !strings.Contains(a.stderr(), "second signal") {
			t.Fatalf("exit %d; stderr:\n%s", a.cmd.ProcessState.ExitCode(), a.stderr())
		}
		t.Logf("draining daemon stopped %v after the second SIGINT", took.Round(time.Millisecond))
	})
}
