package main

// Crash consistency (DESIGN-BRIEF invariant 6, "nothing half-written"): the
// real binary is killed with SIGKILL at random instants while it
// checkpoints, receives replicated blocks, and writes keys; after every
// kill `igor-node fsck` must find the home clean, and the node must come
// back with nothing committed lost. The seed is printed; replay a failure
// with IGOR_CRASH_SEED=<seed>. IGOR_CRASH_TRIALS=N scales every part
// (default: a fast run for `make test`; `make crash` runs many more).

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/node"
)

// crashRand returns the run's random source and logs its seed.
func crashRand(t *testing.T) *rand.Rand {
	t.Helper()
	seed := time.Now().UnixNano()
	if s := os.Getenv("IGOR_CRASH_SEED"); s != "" {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			t.Fatalf("IGOR_CRASH_SEED=%q: %v", s, err)
		}
		seed = v
	}
	t.Logf("seed %d (replay with IGOR_CRASH_SEED=%d)", seed, seed)
	return rand.New(rand.NewSource(seed))
}

// crashTrials scales a default trial count by IGOR_CRASH_TRIALS (the count
// of the checkpointing part; the others keep their ratio to it).
func crashTrials(t *testing.T, def int) int {
	t.Helper()
	s := os.Getenv("IGOR_CRASH_TRIALS")
	if s == "" {
		return def
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("IGOR_CRASH_TRIALS=%q: want a positive number", s)
	}
	return max(1, def*n/20)
}

// proc is a background igor-node process.
type proc struct {
	cmd      *exec.Cmd
	mu       sync.Mutex
	out, err bytes.Buffer
	done     chan struct{}
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func start(t *testing.T, home string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan struct{})}
	p.cmd = exec.Command(binPath, append([]string{"--home", home}, args...)...)
	p.cmd.Stdout, p.cmd.Stderr = lockedWriter{&p.mu, &p.out}, lockedWriter{&p.mu, &p.err}
	p.cmd.Env = append(os.Environ(), "IGOR_HOME=")
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { p.kill() })
	return p
}

func (p *proc) stdout() string { p.mu.Lock(); defer p.mu.Unlock(); return p.out.String() }
func (p *proc) stderr() string { p.mu.Lock(); defer p.mu.Unlock(); return p.err.String() }

// kill sends SIGKILL and waits until the process is gone (its flock on
// the store is released only then).
func (p *proc) kill() {
	p.cmd.Process.Kill()
	<-p.done
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// fsckOK runs fsck on a stopped node's home and fails the test unless it
// is clean. Leftover temporary files are allowed (they are reported).
func fsckOK(t *testing.T, home, when string) node.FsckReport {
	t.Helper()
	r := igor(t, home, "fsck", "--json")
	var rep node.FsckReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%s: fsck --json: exit %d, %v\nstdout:\n%s\nstderr:\n%s", when, r.code, err, r.stdout, r.stderr)
	}
	if r.code != 0 || !rep.Clean {
		t.Fatalf("%s: fsck found damage (exit %d):\n%s\n%s", when, r.code, strings.Join(rep.Problems, "\n"), r.stderr)
	}
	return rep
}

// copyDir copies the regular files of src into dst (a warm wazero
// compilation cache, so a trial does not pay a cold compile).
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		data, err := os.ReadFile(p)
		if err == nil {
			err = os.WriteFile(filepath.Join(dst, rel), data, 0o600)
		}
		return err
	})
}

// headFile returns the content of the only head pointer in home, if any.
func headFile(home string) string {
	ents, _ := os.ReadDir(filepath.Join(home, "heads"))
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), ".") && !strings.HasSuffix(e.Name(), ".tmp") {
			data, _ := os.ReadFile(filepath.Join(home, "heads", e.Name()))
			return strings.TrimSpace(string(data))
		}
	}
	return ""
}

// (a) `igor-node run` of a counter with a 1.1 MiB state (two chunks per
// checkpoint), checkpointing every tick, killed at a random instant. The
// test watches the head pointer file while the process runs: every head it
// saw was committed. After the kill fsck is clean, the newest head seen is
// intact and not newer than the head on disk, and resume continues from it.
func TestCrashCheckpointing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash trials")
	}
	rng := crashRand(t)
	trials := crashTrials(t, 20)
	wasm, _ := testagents.Path(t, "counter")
	man := filepath.Join(t.TempDir(), "counter.json")
	os.WriteFile(man, []byte(`{"name":"counter","capabilities":{"args":{"version":1},"log":{"version":1}},"args":"state_size=1150000"}`), 0o644)
	tmpl := t.TempDir()
	mustOK(t, igor(t, tmpl, "run", "--manifest", man, "--max-ticks", "1", wasm), "warm the compilation cache")

	var seen, noHead, noDID int
	for i := range trials {
		home := filepath.Join(t.TempDir(), fmt.Sprint(i))
		copyDir(t, filepath.Join(tmpl, "cache"), filepath.Join(home, "cache"))
		delay := time.Duration(rng.Int63n(int64(700 * time.Millisecond)))
		p := start(t, home, "run", "--manifest", man, "--tick-interval", "2ms", "--checkpoint-every", "1", wasm)
		var last string // the newest committed head the test saw
		deadline := time.Now().Add(delay)
		for time.Now().Before(deadline) && !p.exited() {
			if h := headFile(home); h != "" {
				last = h
			}
			time.Sleep(time.Millisecond)
		}
		p.kill()
		if p.exited() && p.cmd.ProcessState.ExitCode() != -1 {
			t.Fatalf("trial %d: run exited by itself before the kill: %s", i, p.stderr())
		}
		rep := fsckOK(t, home, fmt.Sprintf("trial %d (killed after %v)", i, delay))
		did := firstLine(p.stdout())
		if len(rep.Agents) == 0 {
			// Killed before checkpoint 0 was committed: nothing may claim
			// otherwise, and a key, if written, is complete (fsck).
			noHead++
			if last != "" || strings.HasPrefix(did, "did:key:") {
				t.Fatalf("trial %d: head %q / DID %q seen, but no agent after the kill", i, last, did)
			}
			continue
		}
		a := rep.Agents[0]
		if !strings.HasPrefix(did, "did:key:") {
			noDID++ // killed between the first commit and printing the DID
			did = a.DID
		}
		if a.DID != did {
			t.Fatalf("trial %d: agent %s after the kill, run printed %s", i, a.DID, did)
		}
		if !slices.Contains(rep.Keys, did) {
			t.Fatalf("trial %d (killed after %v): agent %s has a committed head but no key in the keystore: it can never run again (node.Local.CreateAgent commits the agent before it stores its key)", i, delay, did)
		}
		if last != "" {
			seen++
			committed := inspect(t, home, last)
			if committed.DID != did || committed.Tick > a.Tick {
				t.Fatalf("trial %d: head %s at tick %d was committed before the kill, but the head after it is tick %d", i, last, committed.Tick, a.Tick)
			}
		}
		r := mustOK(t, igor(t, home, "resume", "--tick-interval", "2ms", "--max-ticks", "2", did), fmt.Sprintf("trial %d: resume after the kill", i))
		if got := inspect(t, home, did).Tick; got != a.Tick+2 {
			t.Fatalf("trial %d: resumed from tick %d, head now at tick %d, want %d\n%s", i, a.Tick, got, a.Tick+2, r.stderr)
		}
		os.RemoveAll(home)
	}
	t.Logf("%d trials: %d killed before the first commit, %d before the DID was printed, %d with a committed head observed", trials, noHead, noDID, seen)
}

// (b, d) A 3-node testnet hosts a counter with a 1.5 MiB state, so every
// replicated checkpoint is several blocks. A standby (a member that is not
// the holder) is killed with SIGKILL at a random instant, several times:
// while it is down fsck must find its home clean (temp files allowed), the
// restarted daemon (on new ports in even rounds, on its old ones in odd
// rounds) must load its custody files without error, report an epoch no
// lower than before (d), and receive checkpoints again; the agent's
// lineage must verify with no fork at the end.
func TestCrashBlockReceipt(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end testnet")
	}
	rng := crashRand(t)
	rounds := crashTrials(t, 5)
	t0 := time.Now()
	const tick = "50ms"
	_, nodes := testnet(t, 3, "TICK="+tick, "DRAIN=1s")
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range nodes {
			logs, _ := filepath.Glob(filepath.Join(n.Home, "daemon*.log"))
			for _, lf := range logs {
				data, _ := os.ReadFile(lf)
				lines := strings.Split(strings.TrimSpace(string(data)), "\n")
				t.Logf("--- %s (%s), last lines:\n%s", lf, n.Peer, strings.Join(lines[max(0, len(lines)-15):], "\n"))
			}
		}
	})
	wasm, _ := testagents.Path(t, "counter")
	man := filepath.Join(t.TempDir(), "counter.json")
	os.WriteFile(man, []byte(`{"name":"counter","capabilities":{"args":{"version":1},"log":{"version":1}},"args":"state_size=1500000"}`), 0o644)
	t.Logf("testnet up in %v", time.Since(t0).Round(time.Millisecond))
	r := mustOK(t, igor(t, nodes[0].Home, "publish", "--json", "--manifest", man, wasm), "publish")
	t.Logf("published in %v", time.Since(t0).Round(time.Millisecond))
	var pub node.PublishResult
	if err := json.Unmarshal([]byte(r.stdout), &pub); err != nil || len(pub.Members) != 3 {
		t.Fatalf("publish --json: %v %s", err, r.stdout)
	}
	status := func(n tnode) (custody.Status, error) {
		var sts []custody.Status
		if err := getJSON(n.API, "/v1/custody", &sts); err != nil {
			return custody.Status{}, err
		}
		for _, s := range sts {
			if s.DID == pub.DID {
				return s, nil
			}
		}
		return custody.Status{}, fmt.Errorf("%s is not a member for %s", n.Peer, pub.DID)
	}
	var tempsSeen, restarts int
	for round := range rounds {
		// Pick a standby that is receiving checkpoints.
		var victim *tnode
		var before custody.Status
		waitUntil(t, 30*time.Second, "a standby that accepted a checkpoint", func() error {
			for i := range nodes {
				s, err := status(nodes[i])
				if err != nil {
					return err
				}
				if !s.Running && s.Role == "follower" && s.AcceptedSeq > 0 {
					victim, before = &nodes[i], s
					return nil
				}
			}
			return fmt.Errorf("no standby with an accepted checkpoint yet")
		})
		delay := time.Duration(rng.Int63n(int64(1500 * time.Millisecond)))
		time.Sleep(delay)
		if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		waitUntil(t, 10*time.Second, "the killed daemon to be gone", func() error {
			if err := syscall.Kill(victim.PID, 0); err == nil {
				return fmt.Errorf("pid %d still alive", victim.PID)
			}
			return nil
		})
		rep := fsckOK(t, victim.Home, fmt.Sprintf("round %d: standby %s killed %v after accepting seq %d", round, victim.Peer, delay, before.AcceptedSeq))
		if rep.Store != nil {
			tempsSeen += len(rep.Store.TempFiles)
		}
		var disk *node.FsckCustody
		for i := range rep.Custody {
			if rep.Custody[i].DID == pub.DID {
				disk = &rep.Custody[i]
			}
		}
		if disk == nil || disk.Epoch < before.Epoch || disk.AcceptedSeq < before.AcceptedSeq {
			t.Fatalf("round %d: custody state on disk %+v, before the kill the API reported epoch %d accepted seq %d", round, disk, before.Epoch, before.AcceptedSeq)
		}
		restarts++
		// Even rounds restart on new ports (as --listen's defaults do): the
		// holder must find the standby's new address although its QUIC
		// connection to the killed process lingers; odd rounds on the same
		// ports.
		if round%2 == 0 {
			restart(t, victim, bootAddr(t, nodes, nil, victim.Index), tick, 10+round)
		} else {
			restartOnSamePorts(t, victim, bootAddr(t, nodes, nil, victim.Index), tick, 10+round)
		}
		after := custody.Status{}
		waitUntil(t, 30*time.Second, "the restarted standby to receive checkpoints again", func() error {
			s, err := status(*victim)
			if err != nil {
				return err
			}
			if s.AcceptedSeq <= disk.AcceptedSeq {
				return fmt.Errorf("accepted seq %d, %d on disk at restart", s.AcceptedSeq, disk.AcceptedSeq)
			}
			after = s
			return nil
		})
		t.Logf("round %d: standby %d killed %v after its pick, back at seq %d, %v", round, victim.Index, delay.Round(time.Millisecond), after.AcceptedSeq, time.Since(t0).Round(time.Millisecond))
		if after.Epoch < before.Epoch {
			t.Fatalf("round %d: epoch went back from %d to %d across the restart", round, before.Epoch, after.Epoch)
		}
		logData, _ := os.ReadFile(filepath.Join(victim.Home, fmt.Sprintf("daemon-%d.log", 10+round)))
		if bytes.Contains(logData, []byte("could not be resumed")) {
			t.Fatalf("round %d: the restarted daemon could not load its custody state:\n%s", round, logData)
		}
		// The content store removed the kill's leftovers when it opened.
		for _, tf := range rep.Store.TempFiles {
			if _, err := os.Stat(filepath.Join(victim.Home, "store", tf)); err == nil {
				t.Fatalf("round %d: %s survived the restart", round, tf)
			}
		}
	}
	r = mustOK(t, igor(t, nodes[0].Home, "verify", pub.DID), "verify after the kills")
	if !strings.Contains(r.stdout, "VALID") || strings.Contains(r.stdout, "FORK") {
		t.Fatalf("verify: %s", r.stdout)
	}
	t.Logf("%d standby kills and restarts; %d leftover temp file(s) found by fsck and removed on restart", restarts, tempsSeen)
}

// (c) Key writes. Odd trials kill `igor-node run` during agent creation
// (the agent key is written then); even trials kill a daemon during its
// first start (the node key is written then). Afterwards every key is
// absent or complete and valid (fsck), a restarted daemon keeps the node
// key it finds (same peer ID), and a corrupt node key is refused, never
// replaced.
func TestCrashKeyWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end crash trials")
	}
	rng := crashRand(t)
	trials := crashTrials(t, 20)
	wasm, man := testagents.Path(t, "heartbeat")
	tmpl := t.TempDir()
	mustOK(t, igor(t, tmpl, "run", "--max-ticks", "1", wasm), "warm the compilation cache")
	var agentKeys, nodeKeys, noKey int
	daemonArgs := []string{"daemon", "--api", "127.0.0.1:0", "--slots", "0", "--drain-timeout", "0"}
	for i := range trials {
		home := filepath.Join(t.TempDir(), fmt.Sprint(i))
		if i%2 == 1 {
			copyDir(t, filepath.Join(tmpl, "cache"), filepath.Join(home, "cache"))
			delay := time.Duration(rng.Int63n(int64(700 * time.Millisecond)))
			p := start(t, home, "run", "--manifest", man, "--tick-interval", "2ms", wasm)
			time.Sleep(delay)
			p.kill()
			rep := fsckOK(t, home, fmt.Sprintf("trial %d: run killed after %v", i, delay))
			agentKeys += len(rep.Keys)
			for _, a := range rep.Agents {
				if !slices.Contains(rep.Keys, a.DID) {
					t.Fatalf("trial %d (killed after %v): agent %s has a committed head but no key: it can never run again (node.Local.CreateAgent commits the agent before it stores its key)", i, delay, a.DID)
				}
			}
			continue
		}
		os.MkdirAll(home, 0o700) // fsck needs a home; the daemon makes the rest
		delay := time.Duration(rng.Int63n(int64(150 * time.Millisecond)))
		p := start(t, home, daemonArgs...)
		time.Sleep(delay)
		p.kill()
		rep := fsckOK(t, home, fmt.Sprintf("trial %d: daemon killed %v into its first start", i, delay))
		if rep.NodeKey == "" {
			noKey++
		} else {
			nodeKeys++
		}
		q := start(t, home, daemonArgs...)
		var peer string
		waitUntil(t, 30*time.Second, "the restarted daemon", func() error {
			if q.exited() {
				t.Fatalf("trial %d: restarted daemon exited: %s", i, q.stderr())
			}
			if l := firstLine(q.stdout()); strings.HasPrefix(l, "peer ") {
				peer = strings.TrimPrefix(l, "peer ")
				return nil
			}
			return fmt.Errorf("not ready")
		})
		q.kill()
		if rep.NodeKey != "" && peer != rep.NodeKey {
			t.Fatalf("trial %d: the node key on disk is %s, the restarted daemon is %s: it was regenerated", i, rep.NodeKey, peer)
		}
		if got := fsckOK(t, home, fmt.Sprintf("trial %d: after the restart", i)).NodeKey; got != peer {
			t.Fatalf("trial %d: daemon ran as %s, node key on disk is %s", i, peer, got)
		}
		os.RemoveAll(home)
	}
	t.Logf("%d trials: %d complete agent key(s), %d complete node key(s), %d kills before any node key", trials, agentKeys, nodeKeys, noKey)

	// A corrupt node key is refused with a clear error and left alone.
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "node.key"), []byte(`{"version":1,"type":"ed25`), 0o600)
	r := igor(t, home, daemonArgs...)
	if r.code == 0 || !strings.Contains(r.stderr, "node key") || !strings.Contains(r.stderr, "never regenerated") {
		t.Fatalf("daemon on a corrupt node key: exit %d, stderr %q", r.code, r.stderr)
	}
	if got, _ := os.ReadFile(filepath.Join(home, "node.key")); string(got) != `{"version":1,"type":"ed25` {
		t.Fatal("the corrupt node key was rewritten")
	}
	r = igor(t, home, "fsck")
	if r.code != 1 || !strings.Contains(r.stdout, "PROBLEM    node key") || !errorsIsCorrupt(r.stdout) {
		t.Fatalf("fsck on a corrupt node key: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

func errorsIsCorrupt(s string) bool { return strings.Contains(s, keystore.ErrCorrupt.Error()) }

// restartOnSamePorts is restart with the node's previous listen addresses,
// as an operator with fixed ports would run it: the other members still
// dial the addresses they know.
func restartOnSamePorts(t *testing.T, nd *tnode, boot, tick string, k int) {
	t.Helper()
	out, _ := os.ReadFile(filepath.Join(nd.Home, "daemon.out"))
	var listen []string
	for _, l := range strings.Split(string(out), "\n") {
		if a, ok := strings.CutPrefix(l, "addr "); ok {
			if i := strings.Index(a, "/p2p/"); i > 0 {
				listen = append(listen, "--listen", a[:i])
			}
		}
	}
	if len(listen) == 0 {
		t.Fatalf("%s printed no listen address", nd.Home)
	}
	restart(t, nd, boot, tick, k, listen...)
}
