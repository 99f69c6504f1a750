package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
)

// The local testnet, end to end: testnet/up.sh starts 5 real daemons, the
// heartbeat agent is published, every node answers for it by DID, and
// testnet/down.sh leaves no process behind.
func TestTestnetPublishAndQueryEverywhere(t *testing.T) {
	dir := t.TempDir()
	script := func(name string, args ...string) {
		t.Helper()
		cmd := exec.Command(filepath.Join("..", "..", "testnet", name), args...)
		cmd.Env = append(os.Environ(), "BIN="+binPath, "TICK=50ms", "IGOR_HOME=", "IGOR_API=")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	script("up.sh", "5", dir)
	var nodes []struct {
		Peer string `json:"peer"`
		API  string `json:"api"`
		Home string `json:"home"`
		PID  int    `json:"pid"`
	}
	data, err := os.ReadFile(filepath.Join(dir, "nodes.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &nodes); err != nil || len(nodes) != 5 {
		t.Fatalf("nodes.json: %v %s", err, data)
	}
	down := func() {
		script("down.sh", dir)
		for _, n := range nodes {
			if err := syscall.Kill(n.PID, 0); err == nil {
				t.Errorf("daemon pid %d still running after down.sh", n.PID)
			}
		}
	}
	stopped := false
	defer func() {
		if !stopped {
			down()
		}
	}()

	wasm, _ := testagents.Path(t, "heartbeat")
	r := mustOK(t, igor(t, nodes[0].Home, "publish", "--json", wasm), "publish")
	var pub struct{ DID, Holder string }
	if err := json.Unmarshal([]byte(r.stdout), &pub); err != nil || pub.DID == "" || pub.Holder == "" {
		t.Fatalf("publish --json: %v %s", err, r.stdout)
	}
	for i, n := range nodes {
		deadline := time.Now().Add(60 * time.Second)
		for {
			r := igor(t, n.Home, "agent", "--json", pub.DID)
			var st struct {
				Holder string
				Tick   uint64
				Epoch  uint64
			}
			if r.code == 0 && json.Unmarshal([]byte(r.stdout), &st) == nil && st.Tick > 0 {
				if st.Holder != pub.Holder || st.Epoch != 1 {
					t.Fatalf("node %d sees %+v, publish said holder %s", i, st, pub.Holder)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d cannot resolve %s: %s %s", i, pub.DID, r.stdout, r.stderr)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// Bad input through the API: an unknown DID is a clear 404 message.
	r = igor(t, nodes[1].Home, "agent", "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK")
	if r.code != 1 || !strings.Contains(r.stderr, "no head record") || !strings.Contains(r.stderr, "404") {
		t.Fatalf("unknown DID: %d %s", r.code, r.stderr)
	}
	var lastTick uint64
	{
		var st struct{ Tick uint64 }
		r := mustOK(t, igor(t, nodes[2].Home, "agent", "--json", pub.DID), "agent")
		json.Unmarshal([]byte(r.stdout), &st)
		lastTick = st.Tick
	}
	defer func() {
		// Graceful shutdown checkpointed the agent on its holder: the
		// holder's home has a head at least as new as anything observed.
		for _, n := range nodes {
			if n.Peer == pub.Holder {
				h := inspect(t, n.Home, pub.DID)
				if h.Tick < lastTick || !h.SignatureOK {
					t.Fatalf("holder's final checkpoint at tick %d, but tick %d was observed", h.Tick, lastTick)
				}
			}
		}
	}()
	defer func() { down(); stopped = true }()
	// verify over the mesh from a node that does not host the agent
	for _, n := range nodes {
		if n.Peer != pub.Holder {
			r := mustOK(t, igor(t, n.Home, "verify", pub.DID), "verify over the mesh")
			if !strings.Contains(r.stdout, "VALID") {
				t.Fatalf("verify: %s", r.stdout)
			}
			break
		}
	}
}

// A daemon with an unreachable bootstrap peer warns and runs alone; one
// whose listen port is taken fails with a clear message.
func TestDaemonStartupFaults(t *testing.T) {
	home := t.TempDir()
	cmd := exec.Command(binPath, "--home", home, "daemon", "--api", "127.0.0.1:0",
		"--listen", "/ip4/127.0.0.1/tcp/0",
		"--bootstrap", "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq")
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "api ") {
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("daemon did not start with an unreachable bootstrap peer:\n%s\n%s", out.String(), errb.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(errb.String(), "bootstrap") {
		t.Errorf("no warning about the unreachable bootstrap peer:\n%s", errb.String())
	}
	// The same TCP port for a second daemon.
	var port string
	for _, l := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(l, "addr /ip4/127.0.0.1/tcp/") {
			port = strings.Split(l, "/")[4]
		}
	}
	r := igor(t, t.TempDir(), "daemon", "--api", "127.0.0.1:0", "--listen", "/ip4/127.0.0.1/tcp/"+port)
	if r.code != 1 || !strings.Contains(r.stderr, "cannot listen") {
		t.Errorf("port in use: exit %d %s", r.code, r.stderr)
	}
	// So is an API port in use, and a non-loopback API without opt-in.
	r = igor(t, t.TempDir(), "daemon", "--api", "0.0.0.0:0")
	if r.code != 1 || !strings.Contains(r.stderr, "loopback") {
		t.Errorf("non-loopback API: exit %d %s", r.code, r.stderr)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("daemon exit after SIGTERM: %v\n%s", err, errb.String())
	}
}
