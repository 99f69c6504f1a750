package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/node"
)

type tnode struct {
	Index int    `json:"index"`
	Peer  string `json:"peer"`
	API   string `json:"api"`
	Home  string `json:"home"`
	PID   int    `json:"pid"`
}

// testnet runs testnet/up.sh and returns the nodes; down.sh runs at cleanup.
func testnet(t *testing.T, n int, env ...string) (string, []tnode) {
	t.Helper()
	dir := t.TempDir()
	if os.Getenv("IGOR_KEEP_TESTNET") != "" {
		// Kept for a post-mortem of the daemons' logs (removed by hand).
		var err error
		if dir, err = os.MkdirTemp("", "igor-testnet-*"); err != nil {
			t.Fatal(err)
		}
		t.Logf("testnet kept in %s", dir)
	}
	env = append(append(os.Environ(), "BIN="+binPath, "IGOR_HOME=", "IGOR_API="), env...)
	script := func(name string, args ...string) {
		cmd := exec.Command(filepath.Join("..", "..", "testnet", name), args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	script("up.sh", strconv.Itoa(n), dir)
	t.Cleanup(func() { script("down.sh", dir) })
	var nodes []tnode
	data, err := os.ReadFile(filepath.Join(dir, "nodes.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &nodes); err != nil || len(nodes) != n {
		t.Fatalf("nodes.json: %v %s", err, data)
	}
	return dir, nodes
}

// restart starts node i again with up.sh's command line (plus extra
// arguments), logging to daemon-<k>.log, and waits for its API.
func restart(t *testing.T, nd *tnode, boot, tick string, k int, extra ...string) {
	t.Helper()
	os.Remove(filepath.Join(nd.Home, "api.addr"))
	out, _ := os.Create(filepath.Join(nd.Home, "daemon.out"))
	logf, _ := os.Create(filepath.Join(nd.Home, fmt.Sprintf("daemon-%d.log", k)))
	args := append([]string{"--home", nd.Home, "daemon", "--api", "127.0.0.1:0", "--slots", "4",
		"--tick-interval", tick, "--drain-timeout", "3s", "--bootstrap", boot}, extra...)
	args = append(args, strings.Fields(os.Getenv("DAEMON_ARGS"))...) // as testnet/up.sh takes them
	cmd := exec.Command(binPath, args...)
	cmd.Stdout, cmd.Stderr = out, logf
	cmd.Env = append(os.Environ(), "IGOR_HOME=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	nd.PID = cmd.Process.Pid
	os.WriteFile(filepath.Join(nd.Home, "pid"), []byte(strconv.Itoa(nd.PID)), 0o644)
	waitUntil(t, 30*time.Second, "restarted node's API", func() error {
		data, err := os.ReadFile(filepath.Join(nd.Home, "api.addr"))
		if err != nil {
			return err
		}
		nd.API = strings.TrimSpace(string(data))
		return nil
	})
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func getJSON(api, path string, v any) error {
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + api + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var e struct{ Error string }
		json.NewDecoder(resp.Body).Decode(&e)
		return fmt.Errorf("GET %s: HTTP %d %s", path, resp.StatusCode, e.Error)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// runner returns the node that runs did (by its own custody status).
func runner(nodes []tnode, alive func(tnode) bool, did string) (tnode, custody.Status, bool) {
	for _, n := range nodes {
		if !alive(n) {
			continue
		}
		var sts []custody.Status
		if getJSON(n.API, "/v1/custody", &sts) != nil {
			continue
		}
		for _, s := range sts {
			if s.DID == did && s.Running {
				return n, s, true
			}
		}
	}
	return tnode{}, custody.Status{}, false
}

// tickEvent is one "tick=N" line an agent logged on a node.
type tickEvent struct {
	at   time.Time
	node int
	tick uint64
}

var logTick = regexp.MustCompile(`^time=(\S+) .*msg="tick=(\d+) .*agent=(\S+)`)

// tickEvents reads every daemon log of every node for did's tick lines.
func tickEvents(t *testing.T, nodes []tnode, did string) []tickEvent {
	t.Helper()
	short := agents.ShortDID(did)
	var evs []tickEvent
	for _, n := range nodes {
		logs, _ := filepath.Glob(filepath.Join(n.Home, "daemon*.log"))
		for _, lf := range logs {
			f, err := os.Open(lf)
			if err != nil {
				t.Fatal(err)
			}
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				m := logTick.FindStringSubmatch(sc.Text())
				if m == nil || m[3] != short {
					continue
				}
				at, err := time.Parse(time.RFC3339Nano, m[1])
				if err != nil {
					continue
				}
				tick, _ := strconv.ParseUint(m[2], 10, 64)
				evs = append(evs, tickEvent{at, n.Index, tick})
			}
			f.Close()
		}
	}
	sort.SliceStable(evs, func(i, j int) bool {
		if !evs[i].at.Equal(evs[j].at) {
			return evs[i].at.Before(evs[j].at)
		}
		return evs[i].tick < evs[j].tick
	})
	return evs
}

// transition is a change of the node that ticks the agent.
type transition struct {
	from, to       int
	lastOld, first uint64
	pause          time.Duration
}

func transitions(evs []tickEvent) []transition {
	var out []transition
	for i := 1; i < len(evs); i++ {
		if evs[i].node != evs[i-1].node {
			out = append(out, transition{evs[i-1].node, evs[i].node, evs[i-1].tick, evs[i].tick, evs[i].at.Sub(evs[i-1].at)})
		}
	}
	return out
}

// The custody group end to end, as separate processes on a 5-node testnet:
// kill -9 of the holder (a standby takes over from the last committed
// checkpoint, verify passes with no fork), the killed node's return (the
// holder hands the agent back at its lease-term end without losing a
// tick), and `igor-node drain` (the agent moves off, no tick lost).
func TestCustodyKillHandoffDrain(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end testnet")
	}
	const tick = "100ms"
	dir, nodes := testnet(t, 5, "TICK="+tick, "DRAIN=3s")
	_ = dir
	down := map[int]bool{}
	alive := func(n tnode) bool { return !down[n.Index] }

	wasm, _ := testagents.Path(t, "heartbeat")
	manPath := filepath.Join(t.TempDir(), "manifest.json")
	os.WriteFile(manPath, []byte(`{"name":"heartbeat","capabilities":{"clock":{"version":1},"rand":{"version":1},"log":{"version":1}},
		"resource_limits":{"max_state_bytes":4096},"lease":{"term_seconds":3}}`), 0o644)
	r := mustOK(t, igor(t, nodes[0].Home, "publish", "--json", "--manifest", manPath, wasm), "publish")
	var pub node.PublishResult
	if err := json.Unmarshal([]byte(r.stdout), &pub); err != nil || pub.DID == "" || len(pub.Members) != 3 {
		t.Fatalf("publish --json: %v %s", err, r.stdout)
	}
	idx := func(peer string) int {
		for _, n := range nodes {
			if n.Peer == peer {
				return n.Index
			}
		}
		t.Fatalf("peer %s is no testnet node", peer)
		return -1
	}
	first := idx(pub.Holder)
	var observer tnode
	for _, n := range nodes {
		if !slices.Contains(pub.Members, n.Peer) {
			observer = n // queries from a node outside the custody group
		}
	}
	var before node.AgentStatus
	waitUntil(t, 60*time.Second, "the agent to commit tick ≥ 10", func() error {
		if err := getJSON(observer.API, "/v1/agents/"+pub.DID, &before); err != nil {
			return err
		}
		if before.Tick < 10 || before.Holder != pub.Holder {
			return fmt.Errorf("%+v", before)
		}
		return nil
	})

	// 1. kill -9 the holder.
	if err := syscall.Kill(nodes[first].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	down[first] = true
	var next tnode
	var st custody.Status
	waitUntil(t, 30*time.Second, "a standby to run the agent", func() error {
		var ok bool
		if next, st, ok = runner(nodes, alive, pub.DID); !ok {
			return fmt.Errorf("nobody runs it")
		}
		return nil
	})
	t.Logf("failover: %s runs the agent at epoch %d, %v after kill -9", next.Peer, st.Epoch, time.Since(killed).Round(time.Millisecond))
	if !slices.Contains(pub.Members, next.Peer) || st.Epoch < 2 {
		t.Fatalf("taken over by %s at epoch %d; members %v", next.Peer, st.Epoch, pub.Members)
	}
	var lin node.LineageReport
	waitUntil(t, 30*time.Second, "the new holder's checkpoints in the lineage", func() error {
		if err := getJSON(observer.API, "/v1/agents/"+pub.DID+"/lineage", &lin); err != nil {
			return err
		}
		if !lin.Valid || lin.Entries[len(lin.Entries)-1].Epoch < 2 {
			return fmt.Errorf("lineage valid=%v %s, head epoch %d", lin.Valid, lin.Error, lin.Entries[len(lin.Entries)-1].Epoch)
		}
		return nil
	})
	// Committed progress survives: the checkpoint observed before the kill
	// is in the lineage, and the new epoch resumes at or after it.
	if lin.Entries[before.Seq].CID != before.Head {
		t.Fatalf("committed checkpoint seq %d %s lost: lineage has %s", before.Seq, before.Head, lin.Entries[before.Seq].CID)
	}
	var resume node.LineageEntry
	for i, e := range lin.Entries {
		if e.Epoch >= 2 {
			resume = lin.Entries[i-1]
			break
		}
	}
	if resume.Seq < before.Seq {
		t.Fatalf("the new holder resumed from seq %d, below the committed seq %d", resume.Seq, before.Seq)
	}
	r = mustOK(t, igor(t, observer.Home, "verify", pub.DID), "verify after failover")
	if !strings.Contains(r.stdout, "VALID") || strings.Contains(strings.ToLower(r.stdout), "fork") {
		t.Fatalf("verify: %s", r.stdout)
	}

	// 2. The killed node returns; being the best-ranked member it gets the
	// agent back at the holder's next lease-term end (3 s), by handoff.
	boot := ""
	if out, err := os.ReadFile(filepath.Join(observer.Home, "daemon.out")); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "addr /ip4/127.0.0.1/tcp/") {
				boot = strings.TrimPrefix(l, "addr ")
			}
		}
	}
	restart(t, &nodes[first], boot, tick, 2)
	down[first] = false
	waitUntil(t, 60*time.Second, "the agent handed back to the restarted best-ranked node", func() error {
		n, _, ok := runner(nodes, alive, pub.DID)
		if !ok || n.Index != first {
			return fmt.Errorf("runs on %d (ok=%v)", n.Index, ok)
		}
		return nil
	})
	waitUntil(t, 10*time.Second, "a tick on the restarted node", func() error {
		trs := transitions(tickEvents(t, nodes, pub.DID))
		if len(trs) < 2 || trs[len(trs)-1].to != first {
			return fmt.Errorf("transitions %+v", trs)
		}
		return nil
	})

	// 3. Drain the holder: the agent moves to another member.
	r = mustOK(t, igor(t, nodes[first].Home, "drain", "--timeout", "30s"), "drain")
	if !strings.Contains(r.stdout, "drained") {
		t.Fatalf("drain: %s", r.stdout)
	}
	var after tnode
	waitUntil(t, 30*time.Second, "another member to run the agent after drain", func() error {
		n, _, ok := runner(nodes, alive, pub.DID)
		if !ok || n.Index == first {
			return fmt.Errorf("runs on %d (ok=%v)", n.Index, ok)
		}
		after = n
		return nil
	})
	waitUntil(t, 10*time.Second, "a tick after the drain", func() error {
		trs := transitions(tickEvents(t, nodes, pub.DID))
		if trs[len(trs)-1].from != first || trs[len(trs)-1].to != after.Index {
			return fmt.Errorf("transitions %+v", trs)
		}
		return nil
	})

	// Tick accounting over all three moves, from the agents' own log lines
	// on every node: the crash may redo uncommitted ticks (reported); the
	// handoff and the drain lose none and redo none.
	trs := transitions(tickEvents(t, nodes, pub.DID))
	crash := trs[0]
	if crash.from != first || crash.first > crash.lastOld+1 || crash.first <= resume.Tick {
		t.Fatalf("failover: old holder's last tick %d, new holder's first %d, resumed from checkpoint tick %d", crash.lastOld, crash.first, resume.Tick)
	}
	t.Logf("failover redid %d uncommitted tick(s); pause %v", crash.lastOld+1-crash.first, crash.pause)
	// Then: possibly a move to a better-ranked live member, the hand-back
	// to the restarted node, and the drain — all planned handoffs.
	if len(trs) < 3 || len(trs) > 4 {
		t.Fatalf("want 3 or 4 moves (kill, [better member], hand back, drain), got %+v", trs)
	}
	for _, tr := range trs[1:] {
		if tr.first != tr.lastOld+1 {
			t.Fatalf("handoff %d→%d: last tick %d, next tick %d — a tick was lost or redone", tr.from, tr.to, tr.lastOld, tr.first)
		}
		t.Logf("handoff %d→%d: ticks %d→%d, pause %v", tr.from, tr.to, tr.lastOld, tr.first, tr.pause)
	}
	r = mustOK(t, igor(t, observer.Home, "verify", pub.DID), "verify at the end")
	if !strings.Contains(r.stdout, "VALID") {
		t.Fatalf("verify: %s", r.stdout)
	}
}

// caughtUp waits until node n stores did's checkpoints within slack seqs of
// the holder's: a restarted member takes a while to fetch a long lineage
// (a journaled agent makes a checkpoint per tick), and killing the holder
// before that leaves no majority that can take over quickly.
func caughtUp(t *testing.T, nodes []tnode, alive func(tnode) bool, n tnode, did string, slack uint64) {
	t.Helper()
	waitUntil(t, 60*time.Second, fmt.Sprintf("node %d to catch up with the holder", n.Index), func() error {
		_, hs, ok := runner(nodes, alive, did)
		if !ok {
			return fmt.Errorf("nobody runs it")
		}
		var sts []custody.Status
		if err := getJSON(n.API, "/v1/custody", &sts); err != nil {
			return err
		}
		for _, s := range sts {
			if s.DID == did {
				if s.AcceptedSeq+slack < hs.AcceptedSeq {
					return fmt.Errorf("at seq %d, the holder at %d", s.AcceptedSeq, hs.AcceptedSeq)
				}
				return nil
			}
		}
		return fmt.Errorf("not in the group yet")
	})
}

// bootAddr returns the TCP address of a live node other than not, for a
// restarted node to bootstrap from.
func bootAddr(t *testing.T, nodes []tnode, down map[int]bool, not int) string {
	t.Helper()
	for _, n := range nodes {
		if n.Index == not || down[n.Index] {
			continue
		}
		out, _ := os.ReadFile(filepath.Join(n.Home, "daemon.out"))
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "addr /ip4/127.0.0.1/tcp/") {
				return strings.TrimPrefix(l, "addr ")
			}
		}
	}
	t.Fatal("no live node's address")
	return ""
}
