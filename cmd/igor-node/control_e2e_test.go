package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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

// TestOwnerControl: the owner stops an agent (it stays stopped, also
// across a kill -9 of its holder), tops it up (the budget grows by exactly
// the amount) and starts it again, each through the real binary on a mesh
// of daemons; a daemon whose owner key is not the agent's is refused; the
// lineage with the owner's records verifies. Then the owner deletes it:
// every custodian releases it (membership, key, head) and collects its
// blocks.
func TestOwnerControl(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end testnet")
	}
	_, nodes := testnet(t, 4, "TICK=100ms", "DRAIN=3s", "DAEMON_ARGS=--gc-grace 1ms")
	down := map[int]bool{}
	alive := func(n tnode) bool { return !down[n.Index] }

	pub := publishHeartbeat(t, nodes[0])
	// The owner key is the publishing home's; copied, it lets other homes
	// act as the owner too. nodes[1] keeps a key of its own.
	key, err := os.ReadFile(filepath.Join(nodes[0].Home, "owner.key"))
	if err != nil {
		t.Fatalf("the publishing home has no owner key: %v", err)
	}
	for _, n := range nodes[2:] {
		if err := os.WriteFile(filepath.Join(n.Home, "owner.key"), key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	status := func(from tnode) node.AgentStatus {
		t.Helper()
		var st node.AgentStatus
		waitUntil(t, 20*time.Second, "the agent's status", func() error { return getJSON(from.API, "/v1/agents/"+pub.DID, &st) })
		return st
	}
	waitUntil(t, 60*time.Second, "the agent to commit tick ≥ 5", func() error {
		if st := status(nodes[3]); st.Tick < 5 || st.Status != "running" {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})

	// ps from a fifth daemon that hosts nothing lists the agent with its holder.
	var boot string
	if out, err := os.ReadFile(filepath.Join(nodes[0].Home, "daemon.out")); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if a, ok := strings.CutPrefix(l, "addr /ip4/127.0.0.1/tcp/"); ok {
				boot = "/ip4/127.0.0.1/tcp/" + a
			}
		}
	}
	watcher := tnode{Index: len(nodes), Home: t.TempDir()}
	restart(t, &watcher, boot, "100ms", 1, "--slots", "0")
	t.Cleanup(func() { syscall.Kill(watcher.PID, syscall.SIGKILL) })
	waitUntil(t, 30*time.Second, "ps from the node that hosts nothing to list the agent", func() error {
		r := igor(t, watcher.Home, "ps", "--json")
		var list node.MeshAgents
		if err := json.Unmarshal([]byte(r.stdout), &list); err != nil {
			return fmt.Errorf("ps --json: %v %s%s", err, r.stdout, r.stderr)
		}
		if len(list.Agents) != 1 || list.Agents[0].DID != pub.DID || list.Agents[0].Status != "running" || list.Agents[0].Holder == "" || list.Asked != 5 {
			return fmt.Errorf("%+v", list)
		}
		return nil
	})

	// A daemon whose owner key is not the genesis's owner is refused.
	r := igor(t, nodes[1].Home, "stop", pub.DID)
	if r.code == 0 || !strings.Contains(r.stderr, "not signed by the agent's owner") {
		t.Fatalf("stop by a stranger: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// Stop: the holder stops it; nobody runs it and its tick stands still.
	mustOK(t, igor(t, nodes[0].Home, "stop", pub.DID), "stop")
	st := status(nodes[3])
	if st.Status != "stopped" || st.StopReason != "owner" || st.Controls != 1 || st.Source != "holder" {
		t.Fatalf("after stop: %+v", st)
	}
	stoppedAt, stoppedHead := st.Tick, st.Head
	time.Sleep(1500 * time.Millisecond)
	if n, _, ok := runner(nodes, alive, pub.DID); ok {
		t.Fatalf("node %d runs the stopped agent", n.Index)
	}
	if st := status(nodes[3]); st.Tick != stoppedAt || st.Status != "stopped" {
		t.Fatalf("the stopped agent moved on: tick %d → %+v", stoppedAt, st)
	}
	r = igor(t, nodes[0].Home, "stop", pub.DID)
	if r.code == 0 || !strings.Contains(r.stderr, "already stopped") {
		t.Fatalf("second stop: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}

	// kill -9 the holder: the next holder holds it stopped too.
	holder := slices.IndexFunc(nodes, func(n tnode) bool { return n.Peer == st.Holder })
	if holder < 0 {
		t.Fatalf("holder %s is no testnet node", st.Holder)
	}
	if err := syscall.Kill(nodes[holder].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	down[holder] = true
	owner := nodes[0]
	if holder == 0 {
		owner = nodes[2]
	}
	observer := nodes[3]
	if holder == 3 {
		observer = nodes[2]
	}
	waitUntil(t, 30*time.Second, "a new holder", func() error {
		var st node.AgentStatus
		if err := getJSON(observer.API, "/v1/agents/"+pub.DID, &st); err != nil {
			return err
		}
		if st.Source != "holder" || st.Holder == nodes[holder].Peer {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	time.Sleep(time.Second)
	st = status(observer)
	if st.Status != "stopped" || st.Tick != stoppedAt {
		t.Fatalf("after failover the stopped agent is %s at tick %d (stopped at %d)", st.Status, st.Tick, stoppedAt)
	}
	if n, _, ok := runner(nodes, alive, pub.DID); ok {
		t.Fatalf("node %d runs the stopped agent after the failover", n.Index)
	}

	// Top up while stopped: exactly the amount, still stopped.
	before := st.Budget
	mustOK(t, igor(t, owner.Home, "topup", pub.DID, "0.5"), "topup")
	st = status(observer)
	if st.Budget != before+500_000 || st.Status != "stopped" || st.Controls != 2 {
		t.Fatalf("after a top-up of 0.5 from %d µc: %+v", before, st)
	}

	// Start: it ticks again from where it stopped.
	mustOK(t, igor(t, owner.Home, "start", pub.DID), "start")
	waitUntil(t, 30*time.Second, "the agent to tick past its stop, with the budget's expected lifetime", func() error {
		if st := status(observer); st.Status != "running" || st.Tick <= stoppedAt || st.BudgetLeftS <= 0 {
			return fmt.Errorf("%+v", st)
		}
		return nil
	})
	r = mustOK(t, igor(t, observer.Home, "verify", pub.DID), "verify")
	if !strings.Contains(r.stdout, "VALID") || strings.Contains(r.stdout, "INVALID") {
		t.Fatalf("verify: %s", r.stdout)
	}
	members := status(observer).Members

	// Delete: every custodian releases the agent.
	r = mustOK(t, igor(t, owner.Home, "delete", "--json", pub.DID), "delete")
	var del node.ControlResult
	if err := json.Unmarshal([]byte(r.stdout), &del); err != nil || del.Checkpoint == "" || del.Kind != "delete" {
		t.Fatalf("delete --json: %v %s", err, r.stdout)
	}
	var custodians []tnode
	waitUntil(t, 60*time.Second, "every custodian to release the deleted agent", func() error {
		custodians = custodians[:0]
		for _, n := range nodes {
			if !alive(n) {
				continue
			}
			var sts []custody.Status
			if err := getJSON(n.API, "/v1/custody", &sts); err != nil {
				return err
			}
			if slices.ContainsFunc(sts, func(s custody.Status) bool { return s.DID == pub.DID }) {
				return fmt.Errorf("node %d still in the group", n.Index)
			}
			if slices.Contains(members, n.Peer) {
				custodians = append(custodians, n)
				if _, err := os.Stat(filepath.Join(n.Home, "keys", agents.AgentID(pub.DID)+".key")); !os.IsNotExist(err) {
					return fmt.Errorf("node %d still has the agent key (%v)", n.Index, err)
				}
			}
		}
		return nil
	})
	r = igor(t, owner.Home, "start", pub.DID)
	if r.code == 0 {
		t.Fatalf("start after delete succeeded: %s", r.stdout)
	}
	// Stopped, no custodian's home has the agent or its blocks.
	if len(custodians) < 2 {
		t.Fatalf("custodians alive after the delete: %v (members %v)", custodians, members)
	}
	for _, c := range custodians {
		if err := syscall.Kill(c.PID, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
	}
	for _, custodian := range custodians {
		waitUntil(t, 20*time.Second, "the custodian to stop", func() error {
			if syscall.Kill(custodian.PID, 0) == nil {
				return fmt.Errorf("pid %d still runs", custodian.PID)
			}
			return nil
		})
		down[custodian.Index] = true
		if r := mustOK(t, igor(t, custodian.Home, "list"), "list"); strings.Contains(r.stdout, pub.DID) {
			t.Fatalf("list on custodian %d after delete: %s", custodian.Index, r.stdout)
		}
		for _, c := range []string{del.Checkpoint, stoppedHead} {
			if r := igor(t, custodian.Home, "inspect", c); r.code == 0 || !strings.Contains(r.stderr, "block not found") {
				t.Fatalf("checkpoint %s still stored on custodian %d after delete and GC: %s", c, custodian.Index, r.stdout)
			}
		}
	}
}

// TestOwnerUpgrade: the owner upgrades a running heartbeat agent to the
// counter module through the real binary on a mesh of daemons. A counter
// configured for another state size cannot resume the heartbeat's state:
// the upgrade is refused and the heartbeat runs on (rolled back). One
// configured for the heartbeat's 33-byte state takes it over; after a kill
// -9 of the holder the next holder runs the counter from the upgrade, and
// the lineage verifies.
func TestOwnerUpgrade(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end testnet")
	}
	_, nodes := testnet(t, 4, "TICK=100ms", "DRAIN=3s")
	dir := t.TempDir()
	pub := publishHeartbeat(t, nodes[0])
	observer := nodes[3]
	status := func() node.AgentStatus {
		t.Helper()
		var st node.AgentStatus
		waitUntil(t, 20*time.Second, "the agent's status", func() error { return getJSON(observer.API, "/v1/agents/"+pub.DID, &st) })
		return st
	}
	ticksPast := func(what string, tick uint64) node.AgentStatus {
		t.Helper()
		var st node.AgentStatus
		waitUntil(t, 30*time.Second, what, func() error {
			if st = status(); st.Status != "running" || st.Tick <= tick {
				return fmt.Errorf("%+v", st)
			}
			return nil
		})
		return st
	}
	st := ticksPast("the heartbeat to tick", 4)

	counter, _ := testagents.Path(t, "counter")
	counterMan := func(size int) string {
		p := filepath.Join(dir, fmt.Sprintf("counter-%d.json", size))
		os.WriteFile(p, []byte(fmt.Sprintf(`{"name":"counter","capabilities":{"args":{"version":1},"log":{"version":1}},
			"resource_limits":{"max_state_bytes":4096},"lease":{"term_seconds":3},"args":"state_size=%d"}`, size)), 0o644)
		return p
	}
	r := igor(t, nodes[0].Home, "upgrade", pub.DID, counter, "--manifest", counterMan(64))
	if r.code == 0 || !strings.Contains(r.stderr, "agent_resume") || !strings.Contains(r.stderr, "keeps its module") {
		t.Fatalf("upgrade to a counter that cannot resume the state: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	st = ticksPast("the heartbeat to run on after the refused upgrade", st.Tick)
	if st.Controls != 0 {
		t.Fatalf("a refused upgrade was recorded: %+v", st)
	}

	r = mustOK(t, igor(t, nodes[0].Home, "upgrade", "--json", pub.DID, counter, "--manifest", counterMan(33)), "upgrade")
	var up node.ControlResult
	if err := json.Unmarshal([]byte(r.stdout), &up); err != nil || up.Kind != "upgrade" {
		t.Fatalf("upgrade --json: %v %s", err, r.stdout)
	}
	st = ticksPast("the counter to tick after the upgrade", status().Tick)
	holder := slices.IndexFunc(nodes, func(n tnode) bool { return n.Peer == st.Holder })
	if holder < 0 {
		t.Fatalf("holder %s is no testnet node", st.Holder)
	}
	if holder == 3 {
		observer = nodes[2]
	}
	if err := syscall.Kill(nodes[holder].PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 30*time.Second, "a new holder to run the upgraded agent", func() error {
		var s node.AgentStatus
		if err := getJSON(observer.API, "/v1/agents/"+pub.DID, &s); err != nil {
			return err
		}
		if s.Source != "holder" || s.Holder == nodes[holder].Peer || s.Status != "running" || s.Tick <= st.Tick {
			return fmt.Errorf("%+v", s)
		}
		return nil
	})
	var lin node.LineageReport
	if err := getJSON(observer.API, "/v1/agents/"+pub.DID+"/lineage", &lin); err != nil || !lin.Valid {
		t.Fatalf("lineage after upgrade and failover: %v %+v", err, lin)
	}
	r = mustOK(t, igor(t, observer.Home, "verify", pub.DID), "verify")
	if !strings.Contains(r.stdout, "VALID") || strings.Contains(r.stdout, "INVALID") {
		t.Fatalf("verify: %s", r.stdout)
	}
	// Export from the home of the running holder (its daemon writes the
	// CAR), import into a fresh home: the lineage with its upgrade verifies
	// offline.
	var now node.AgentStatus
	if err := getJSON(observer.API, "/v1/agents/"+pub.DID, &now); err != nil {
		t.Fatal(err)
	}
	holderHome := nodes[slices.IndexFunc(nodes, func(n tnode) bool { return n.Peer == now.Holder })].Home
	car := filepath.Join(dir, "agent.car")
	mustOK(t, igor(t, holderHome, "export", pub.DID, "-o", car), "export on a running daemon's home")
	if r := mustOK(t, igor(t, holderHome, "inspect", "--json", now.Head), "inspect on a running daemon's home"); !strings.Contains(r.stdout, pub.DID) {
		t.Fatalf("inspect %s through the daemon: %s", now.Head, r.stdout)
	}
	mustOK(t, igor(t, holderHome, "keys", "export", pub.DID, "-o", filepath.Join(dir, "agent.key")), "keys export on a running daemon's home")
	if r := mustOK(t, igor(t, nodes[0].Home, "list"), "list on a running daemon's home"); !strings.Contains(r.stdout, pub.DID) {
		t.Fatalf("list on the publisher's running daemon: %s", r.stdout)
	}
	fresh := t.TempDir()
	mustOK(t, igor(t, fresh, "import", car), "import")
	if r := mustOK(t, igor(t, fresh, "verify", pub.DID), "verify offline"); !strings.Contains(r.stdout, "VALID") || strings.Contains(r.stdout, "INVALID") {
		t.Fatalf("verify of the exported agent: %s", r.stdout)
	}
}

// TestLogsFollowAcrossMoves: `igor-node logs -f` started on a node outside
// the custody group keeps streaming the agent's lines through a kill -9 of
// its holder and a drain of the next one: lines from three nodes, ticks
// going on, one process.
func TestLogsFollowAcrossMoves(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end testnet")
	}
	_, nodes := testnet(t, 4, "TICK=100ms", "DRAIN=3s")
	pub := publishHeartbeat(t, nodes[0])
	var observer tnode
	for _, n := range nodes {
		if !slices.Contains(pub.Members, n.Peer) {
			observer = n
		}
	}
	outPath := filepath.Join(t.TempDir(), "logs.out")
	out, _ := os.Create(outPath)
	defer out.Close()
	cmd := exec.Command(binPath, "--home", observer.Home, "logs", "-f", "--json", pub.DID)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Env = append(os.Environ(), "IGOR_HOME=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	lines := func() []node.LogLine {
		data, _ := os.ReadFile(outPath)
		var ls []node.LogLine
		for _, s := range strings.Split(strings.TrimSpace(string(data)), "\n") {
			var l node.LogLine
			if json.Unmarshal([]byte(s), &l) == nil && l.Node != "" {
				ls = append(ls, l)
			}
		}
		return ls
	}
	from := func(peer string) int {
		n := 0
		for _, l := range lines() {
			if l.Node == peer {
				n++
			}
		}
		return n
	}
	holderNow := func(not ...string) tnode {
		var h tnode
		waitUntil(t, 30*time.Second, "a holder other than "+strings.Join(not, ","), func() error {
			var st node.AgentStatus
			if err := getJSON(observer.API, "/v1/agents/"+pub.DID, &st); err != nil {
				return err
			}
			if st.Source != "holder" || st.Status != "running" || slices.Contains(not, st.Holder) {
				return fmt.Errorf("%+v", st)
			}
			h = nodes[slices.IndexFunc(nodes, func(n tnode) bool { return n.Peer == st.Holder })]
			return nil
		})
		return h
	}
	first := holderNow()
	waitUntil(t, 30*time.Second, "lines from the first holder", func() error {
		if n := from(first.Peer); n < 5 {
			return fmt.Errorf("%d lines from %s; output %d lines", n, first.Peer, len(lines()))
		}
		return nil
	})
	if err := syscall.Kill(first.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	second := holderNow(first.Peer)
	waitUntil(t, 30*time.Second, "lines from the holder after the failover", func() error {
		if n := from(second.Peer); n < 5 {
			return fmt.Errorf("%d lines from %s", n, second.Peer)
		}
		return nil
	})
	mustOK(t, igor(t, second.Home, "drain", "--timeout", "30s"), "drain")
	third := holderNow(first.Peer, second.Peer)
	waitUntil(t, 30*time.Second, "lines from the holder after the drain", func() error {
		if n := from(third.Peer); n < 5 {
			return fmt.Errorf("%d lines from %s", n, third.Peer)
		}
		return nil
	})
	select {
	case err := <-exited:
		data, _ := os.ReadFile(outPath)
		t.Fatalf("logs -f exited: %v\n%s", err, data)
	default:
	}
	// Lines arrive in the order they were logged on each node, and ticks go on.
	ls := lines()
	if !strings.Contains(ls[len(ls)-1].Msg, "tick=") {
		t.Fatalf("last line %+v", ls[len(ls)-1])
	}
}

// publishHeartbeat publishes a heartbeat agent (3 s lease terms) through
// the daemon of n.
func publishHeartbeat(t *testing.T, n tnode) node.PublishResult {
	t.Helper()
	wasm, _ := testagents.Path(t, "heartbeat")
	manPath := filepath.Join(t.TempDir(), "manifest.json")
	os.WriteFile(manPath, []byte(`{"name":"heartbeat","capabilities":{"clock":{"version":1},"rand":{"version":1},"log":{"version":1}},
		"resource_limits":{"max_state_bytes":4096},"lease":{"term_seconds":3}}`), 0o644)
	r := mustOK(t, igor(t, n.Home, "publish", "--json", "--manifest", manPath, wasm), "publish")
	var pub node.PublishResult
	if err := json.Unmarshal([]byte(r.stdout), &pub); err != nil || pub.DID == "" {
		t.Fatalf("publish --json: %v %s", err, r.stdout)
	}
	return pub
}

// TestDaemonConfigAndStablePorts: a daemon takes its flags from
// HOME/config.json (the command line winning), comes back on the same
// addresses after a restart without --listen, and refuses a config key
// that is no flag with exit status 2.
func TestDaemonConfigAndStablePorts(t *testing.T) {
	home := t.TempDir()
	os.WriteFile(filepath.Join(home, "config.json"), []byte(`{"api": "127.0.0.1:0", "slots": 3, "price": 7, "drain-timeout": "1s"}`), 0o644)
	start := func(args ...string) (*exec.Cmd, *syncBuffer) {
		t.Helper()
		os.Remove(filepath.Join(home, "api.addr"))
		cmd := exec.Command(binPath, append([]string{"--home", home, "daemon"}, args...)...)
		out, errb := new(syncBuffer), new(syncBuffer)
		cmd.Stdout, cmd.Stderr = out, errb
		cmd.Env = append(os.Environ(), "IGOR_HOME=")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		waitUntil(t, 30*time.Second, "the daemon's API", func() error {
			if !strings.Contains(out.String(), "api ") {
				return fmt.Errorf("stdout %q stderr %q", out.String(), errb.String())
			}
			return nil
		})
		return cmd, out
	}
	node := func(out *syncBuffer) (info struct {
		Slots int   `json:"slots"`
		Price int64 `json:"price_microcents_per_second"`
	}, addrs []string) {
		t.Helper()
		var api string
		for _, l := range strings.Split(out.String(), "\n") {
			if a, ok := strings.CutPrefix(l, "api "); ok {
				api = strings.TrimSpace(a)
			}
			if a, ok := strings.CutPrefix(l, "addr "); ok {
				addrs = append(addrs, a)
			}
		}
		if err := getJSON(api, "/v1/node", &info); err != nil {
			t.Fatal(err)
		}
		return info, addrs
	}
	cmd, out := start()
	info, addrs := node(out)
	if info.Slots != 3 || info.Price != 7 || len(addrs) == 0 {
		t.Fatalf("from the config file: %+v, addrs %v", info, addrs)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	cmd, out = start("--slots", "2")
	info2, addrs2 := node(out)
	if info2.Slots != 2 || info2.Price != 7 {
		t.Fatalf("the command line must win over the file: %+v", info2)
	}
	if !slices.Equal(addrs, addrs2) {
		t.Fatalf("restarted on other addresses: %v, then %v", addrs, addrs2)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	os.WriteFile(filepath.Join(home, "config.json"), []byte(`{"slot": 3}`), 0o644)
	if r := igor(t, home, "daemon"); r.code != 2 || !strings.Contains(r.stderr, `unknown key "slot"`) {
		t.Fatalf("a config key that is no flag: exit %d %s", r.code, r.stderr)
	}
}

// TestSoloDaemonCheckpointsOnExit: a daemon stopped with nowhere to hand
// its agent (alone, a group of one) stops it with a final checkpoint, so
// after a restart the agent goes on from the tick it logged last — no tick
// is redone.
func TestSoloDaemonCheckpointsOnExit(t *testing.T) {
	home := t.TempDir()
	logPath := filepath.Join(home, "daemon.log")
	start := func() *exec.Cmd {
		t.Helper()
		os.Remove(filepath.Join(home, "api.addr"))
		logf, _ := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		cmd := exec.Command(binPath, "--home", home, "daemon", "--api", "127.0.0.1:0", "--tick-interval", "100ms")
		cmd.Stdout, cmd.Stderr = io.Discard, logf
		cmd.Env = append(os.Environ(), "IGOR_HOME=")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill() })
		waitUntil(t, 30*time.Second, "the daemon's API", func() error {
			_, err := os.Stat(filepath.Join(home, "api.addr"))
			return err
		})
		return cmd
	}
	ticks := func() []int {
		data, _ := os.ReadFile(logPath)
		var out []int
		for _, m := range regexp.MustCompile(`msg="tick=(\d+) `).FindAllSubmatch(data, -1) {
			n, _ := strconv.Atoi(string(m[1]))
			out = append(out, n)
		}
		return out
	}
	cmd := start()
	wasm, _ := testagents.Path(t, "heartbeat")
	mustOK(t, igor(t, home, "publish", "--min-replicas", "0", wasm), "publish alone")
	waitUntil(t, 30*time.Second, "7 ticks", func() error {
		if n := len(ticks()); n < 7 {
			return fmt.Errorf("%d ticks", n)
		}
		return nil
	})
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	before := ticks()
	last := before[len(before)-1]
	start()
	waitUntil(t, 30*time.Second, "ticks after the restart", func() error {
		if n := len(ticks()); n < len(before)+3 {
			return fmt.Errorf("%d ticks", n)
		}
		return nil
	})
	if next := ticks()[len(before)]; next != last+1 {
		t.Fatalf("stopped at tick %d, went on at tick %d after the restart (want %d: no tick redone)", last, next, last+1)
	}
}
