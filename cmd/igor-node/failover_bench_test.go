package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/node"
)

// BenchmarkFailover measures the custody group's failover with default
// settings (1 s agent tick, checkpoint every 5 ticks, 60 s lease term,
// custody.DefaultTiming) on a 5-node testnet of real daemons: over
// IGOR_FAILOVER_TRIALS trials (default 20) it kills the holder with
// SIGKILL, times the first tick logged on another node, counts the ticks
// the new holder redoes, and checks that every checkpoint committed before
// a kill stays in the final lineage. The whole run happens once, whatever
// b.N; the timer covers the trials. IGOR_FAILOVER_LOG_LEVEL=debug runs the
// daemons with --log-level debug (to diagnose; the logs stay in the
// testnet's temporary directory, removed at the end).
//
//	go test ./cmd/igor-node/ -run '^$' -bench BenchmarkFailover -benchtime 1x -timeout 30m -v
//
// (-v: without it, Go keeps only the first 10 lines of a benchmark's log.)
func BenchmarkFailover(b *testing.B) {
	if testing.Short() {
		b.Skip("end-to-end testnet")
	}
	trials := 20
	if s := os.Getenv("IGOR_FAILOVER_TRIALS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("IGOR_FAILOVER_TRIALS=%q: want a positive number", s)
		}
		trials = n
	}
	b.StopTimer()
	bin := binPath
	lvl := os.Getenv("IGOR_FAILOVER_LOG_LEVEL")
	if lvl != "" {
		bin = filepath.Join(b.TempDir(), "igor-node")
		script := fmt.Sprintf("#!/bin/sh\nexec %s --log-level %s \"$@\"\n", strconv.Quote(binPath), strconv.Quote(lvl))
		if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
			b.Fatal(err)
		}
	}
	const tick = "1s" // the daemon's default --tick-interval
	_, nodes := tbTestnet(b, bin, 5, "TICK="+tick, "DRAIN=2s")
	down := map[int]bool{}
	alive := func(n tnode) bool { return !down[n.Index] }

	wasm, manPath := testagents.Path(b, "heartbeat") // no lease policy: the default 60 s term
	r := tbMustOK(b, tbIgor(b, nodes[0].Home, "publish", "--json", "--manifest", manPath, wasm), "publish")
	var pub node.PublishResult
	if err := json.Unmarshal([]byte(r.stdout), &pub); err != nil || pub.DID == "" || len(pub.Members) != 3 {
		b.Fatalf("publish --json: %v %s", err, r.stdout)
	}
	did := pub.DID
	byPeer := map[string]int{}
	for _, n := range nodes {
		byPeer[n.Peer] = n.Index
	}
	ranked := hosting.Rank(agents.AgentID(did), pub.Members)
	rankOf := func(i int) int { return slices.Index(ranked, nodes[i].Peer) }
	var observer tnode // outside the custody group: never killed
	for _, n := range nodes {
		if !slices.Contains(pub.Members, n.Peer) {
			observer = n
		}
	}
	boot := ""
	if out, err := os.ReadFile(filepath.Join(observer.Home, "daemon.out")); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(l, "addr /ip4/127.0.0.1/tcp/") {
				boot = strings.TrimPrefix(l, "addr ")
			}
		}
	}
	if boot == "" {
		b.Fatal("observer printed no TCP address")
	}

	// healthy: a member runs the agent, every member follows it at its
	// epoch with an accepted seq close to the holder's, and the observer
	// sees a head record from this holder.
	healthy := func() (tnode, custody.Status, error) {
		h, hs, ok := runner(nodes, alive, did)
		if !ok {
			return tnode{}, hs, fmt.Errorf("nobody runs the agent")
		}
		for _, p := range pub.Members {
			n := nodes[byPeer[p]]
			if n.Index == h.Index {
				continue
			}
			if down[n.Index] {
				return h, hs, fmt.Errorf("member %d is down", n.Index)
			}
			var sts []custody.Status
			if err := getJSON(n.API, "/v1/custody", &sts); err != nil {
				return h, hs, err
			}
			i := slices.IndexFunc(sts, func(s custody.Status) bool { return s.DID == did })
			if i < 0 {
				return h, hs, fmt.Errorf("member %d has no custody of the agent", n.Index)
			}
			s := sts[i]
			if s.Role != "follower" || s.Epoch != hs.Epoch || s.Holder != h.Peer || s.AcceptedSeq+2 < hs.AcceptedSeq {
				return h, hs, fmt.Errorf("member %d: %s epoch %d holder %s seq %d; holder %d epoch %d seq %d",
					n.Index, s.Role, s.Epoch, s.Holder, s.AcceptedSeq, h.Index, hs.Epoch, hs.AcceptedSeq)
			}
		}
		var st node.AgentStatus
		if err := getJSON(observer.API, "/v1/agents/"+did, &st); err != nil {
			return h, hs, err
		}
		if st.Holder != h.Peer || st.Seq == 0 {
			return h, hs, fmt.Errorf("head record names holder %s at seq %d, runner is %s", st.Holder, st.Seq, h.Peer)
		}
		return h, hs, nil
	}

	type trial struct {
		killed, next         int
		killedRank, nextRank int
		epoch                uint64
		before               node.AgentStatus
		failover             time.Duration // kill → first tick logged elsewhere
		holder, apiRunning   time.Duration // kill → the new holder first seen so in /v1/custody (0: not seen)
		roles                string        // every live member's role changes, as seen in /v1/custody
		rejoin               time.Duration // restart of the killed node → healthy group
		runLog               time.Duration // kill → "custody: running agent" elsewhere
		takeovers            int           // "running agent" lines elsewhere in the failover window
		lastOld, first       uint64
	}
	var done []trial
	lost := 0
	b.ResetTimer()
	b.StartTimer()
	start := time.Now()
	for k := 1; k <= trials; k++ {
		var h tnode
		var hs custody.Status
		var before node.AgentStatus
		for {
			tbWaitUntil(b, 120*time.Second, fmt.Sprintf("trial %d: a healthy custody group", k), func() error {
				var err error
				h, hs, err = healthy()
				return err
			})
			// Kill at a random phase of the 5-tick checkpoint cycle, so the
			// ticks redone are a fair sample (not a wait for a condition).
			time.Sleep(rand.N(5 * time.Second))
			if err := getJSON(observer.API, "/v1/agents/"+did, &before); err != nil {
				b.Fatal(err)
			}
			// A hand-back at the term end may have moved the agent meanwhile.
			if n, _, ok := runner(nodes, alive, did); ok && n.Index == h.Index && before.Holder == h.Peer {
				break
			}
		}
		tr := trial{killed: h.Index, killedRank: rankOf(h.Index), epoch: hs.Epoch, before: before}

		// Poll the live members' custody status during the failover.
		type seen struct {
			holder, running time.Time
			role            string
			changes         []string
		}
		obs := map[int]*seen{}
		var mu sync.Mutex
		stop := make(chan struct{})
		var wg sync.WaitGroup
		killAt := time.Now()
		if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
			b.Fatal(err)
		}
		down[h.Index] = true
		var live []tnode
		for _, p := range pub.Members {
			if n := nodes[byPeer[p]]; n.Index != h.Index {
				live = append(live, n)
				obs[n.Index] = &seen{}
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				for _, n := range live {
					var sts []custody.Status
					if getJSON(n.API, "/v1/custody", &sts) != nil {
						continue
					}
					now := time.Now()
					for _, s := range sts {
						if s.DID != did {
							continue
						}
						mu.Lock()
						o := obs[n.Index]
						if r := s.Role + map[bool]string{true: "+run"}[s.Running]; r != o.role {
							o.role = r
							o.changes = append(o.changes, fmt.Sprintf("%s@%.2f", r, now.Sub(killAt).Seconds()))
						}
						if s.Role == "holder" && o.holder.IsZero() {
							o.holder = now
						}
						if s.Running && o.running.IsZero() {
							o.running = now
						}
						mu.Unlock()
					}
				}
			}
		}()
		var firstEv tickEvent
		tbWaitUntil(b, 30*time.Second, fmt.Sprintf("trial %d: a tick on another node after kill -9 of node %d", k, h.Index), func() error {
			for _, ev := range tbTickEvents(b, nodes, did) {
				if ev.at.After(killAt) && ev.node != h.Index {
					firstEv = ev
					return nil
				}
			}
			return fmt.Errorf("no tick elsewhere yet")
		})
		tbWaitUntil(b, 10*time.Second, fmt.Sprintf("trial %d: /v1/custody of the new holder to show it running", k), func() error {
			mu.Lock()
			defer mu.Unlock()
			if obs[firstEv.node].running.IsZero() {
				return fmt.Errorf("node %d not seen running", firstEv.node)
			}
			return nil
		})
		close(stop)
		wg.Wait()
		for _, ev := range tbTickEvents(b, nodes, did) {
			if ev.node == h.Index && !ev.at.After(killAt) {
				tr.lastOld = ev.tick
			}
		}
		tr.next, tr.nextRank, tr.first = firstEv.node, rankOf(firstEv.node), firstEv.tick
		tr.failover = firstEv.at.Sub(killAt)
		since := func(t time.Time) time.Duration {
			if t.IsZero() {
				return 0
			}
			return t.Sub(killAt)
		}
		o := obs[firstEv.node]
		tr.holder, tr.apiRunning = since(o.holder), since(o.running)
		for _, n := range live {
			tr.roles += fmt.Sprintf(" n%d(rank %d):%s", n.Index, rankOf(n.Index), strings.Join(obs[n.Index].changes, ","))
		}
		for _, ev := range tbLogEvents(b, nodes, `custody: running agent`, did) {
			if ev.node != h.Index && ev.at.After(killAt) && !ev.at.After(firstEv.at) {
				tr.takeovers++
				if ev.node == firstEv.node {
					tr.runLog = ev.at.Sub(killAt)
				}
			}
		}
		if lvl != "" { // the custody lines of the failover window, to diagnose
			tbScanLogs(b, nodes, func(n tnode, line string) {
				ev, ok := parseLogLine(n, line)
				if ok && strings.HasPrefix(ev.msg, "custody:") && !ev.at.Before(killAt.Add(-time.Second)) && !ev.at.After(firstEv.at) {
					b.Logf("  n%d %+.3f %s %s%s", n.Index, ev.at.Sub(killAt).Seconds(), ev.level, ev.msg, ev.rest)
				}
			})
		}
		if tr.first > tr.lastOld+1 {
			b.Errorf("trial %d: old holder's last tick %d, new holder's first %d: ticks skipped", k, tr.lastOld, tr.first)
		}
		if tr.first <= before.Tick {
			lost++
			b.Errorf("trial %d: new holder's first tick %d, but tick %d was committed (seq %d) before the kill", k, tr.first, before.Tick, before.Seq)
		}
		tbRestart(b, bin, &nodes[h.Index], boot, tick, k)
		down[h.Index] = false
		restarted := time.Now()
		tbWaitUntil(b, 120*time.Second, fmt.Sprintf("trial %d: the restarted node back in a healthy group", k), func() error {
			_, _, err := healthy()
			return err
		})
		tr.rejoin = time.Since(restarted)
		b.Logf("trial %2d: kill n%d(rank %d) epoch %d -> n%d(rank %d): failover %.3fs [holder %.3f running-log %.3f api-running %.3f] takeovers %d; ticks old-last %d new-first %d redone %d; committed seq %d tick %d; rejoin %.1fs; roles%s",
			k, tr.killed, tr.killedRank, tr.epoch, tr.next, tr.nextRank, tr.failover.Seconds(),
			tr.holder.Seconds(), tr.runLog.Seconds(), tr.apiRunning.Seconds(), tr.takeovers,
			tr.lastOld, tr.first, int64(tr.lastOld)+1-int64(tr.first), before.Seq, before.Tick, tr.rejoin.Seconds(), tr.roles)
		done = append(done, tr)
	}
	b.StopTimer()
	elapsed := time.Since(start)

	// Committed progress: every head observed before a kill is in the final
	// lineage, at its seq.
	var lin node.LineageReport
	tbWaitUntil(b, 60*time.Second, "a valid lineage from the observer", func() error {
		if err := getJSON(observer.API, "/v1/agents/"+did+"/lineage", &lin); err != nil {
			return err
		}
		if !lin.Valid {
			return fmt.Errorf("lineage invalid: %s", lin.Error)
		}
		return nil
	})
	bySeq := map[uint64]string{}
	for _, e := range lin.Entries {
		bySeq[e.Seq] = e.CID
	}
	for i, tr := range done {
		if bySeq[tr.before.Seq] != tr.before.Head {
			lost++
			b.Errorf("trial %d: committed checkpoint seq %d %s lost: the lineage has %q", i+1, tr.before.Seq, tr.before.Head, bySeq[tr.before.Seq])
		}
	}

	fo := make([]float64, len(done))
	redone := 0.0
	for i, tr := range done {
		fo[i] = tr.failover.Seconds()
		redone += float64(int64(tr.lastOld) + 1 - int64(tr.first))
	}
	sort.Float64s(fo)
	p50 := fo[len(fo)/2]
	if len(fo)%2 == 0 {
		p50 = (fo[len(fo)/2-1] + fo[len(fo)/2]) / 2
	}
	b.ReportMetric(p50, "s-p50")
	b.ReportMetric(fo[len(fo)-1], "s-max")
	b.ReportMetric(redone/float64(len(done)), "ticks-redone/failover")
	b.ReportMetric(float64(lost), "committed-lost")
	b.Logf("%d failovers in %v: p50 %.3fs max %.3fs; %.2f ticks redone per failover; %d committed checkpoints lost; lineage %d entries",
		len(done), elapsed.Round(time.Second), p50, fo[len(fo)-1], redone/float64(len(done)), lost, len(lin.Entries))
	tbLogAnomalies(b, nodes, did)

	r = tbMustOK(b, tbIgor(b, observer.Home, "verify", did), "verify at the end")
	if !strings.Contains(r.stdout, "VALID ") || strings.Contains(r.stdout, "INVALID") || strings.Contains(r.stdout, "FORK") {
		b.Fatalf("verify: %s", r.stdout)
	}
	if lost > 0 {
		b.Fatalf("%d committed checkpoint(s) lost", lost)
	}
}

// The helpers below are testing.TB versions of those in
// custody_e2e_test.go and e2e_test.go (which take *testing.T).

func tbTestnet(tb testing.TB, bin string, n int, env ...string) (string, []tnode) {
	tb.Helper()
	dir := tb.TempDir()
	env = append(append(os.Environ(), "BIN="+bin, "IGOR_HOME=", "IGOR_API="), env...)
	script := func(name string, args ...string) {
		cmd := exec.Command(filepath.Join("..", "..", "testnet", name), args...)
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			tb.Fatalf("%s %v: %v\n%s", name, args, err, out)
		}
	}
	script("up.sh", strconv.Itoa(n), dir)
	tb.Cleanup(func() {
		script("down.sh", dir)
		// IGOR_KEEP_LOGS=DIR keeps the daemons' logs of a failed run.
		if keep := os.Getenv("IGOR_KEEP_LOGS"); keep != "" && tb.Failed() {
			exec.Command("cp", "-r", dir, keep).Run()
		}
	})
	var nodes []tnode
	data, err := os.ReadFile(filepath.Join(dir, "nodes.json"))
	if err != nil {
		tb.Fatal(err)
	}
	if err := json.Unmarshal(data, &nodes); err != nil || len(nodes) != n {
		tb.Fatalf("nodes.json: %v %s", err, data)
	}
	return dir, nodes
}

func tbRestart(tb testing.TB, bin string, nd *tnode, boot, tick string, k int) {
	tb.Helper()
	os.Remove(filepath.Join(nd.Home, "api.addr"))
	out, _ := os.Create(filepath.Join(nd.Home, "daemon.out"))
	logf, _ := os.Create(filepath.Join(nd.Home, fmt.Sprintf("daemon-%d.log", k)))
	cmd := exec.Command(bin, "--home", nd.Home, "daemon", "--api", "127.0.0.1:0", "--slots", "4",
		"--tick-interval", tick, "--drain-timeout", "2s", "--bootstrap", boot)
	cmd.Stdout, cmd.Stderr = out, logf
	cmd.Env = append(os.Environ(), "IGOR_HOME=")
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go cmd.Wait()
	nd.PID = cmd.Process.Pid
	os.WriteFile(filepath.Join(nd.Home, "pid"), []byte(strconv.Itoa(nd.PID)), 0o644)
	tbWaitUntil(tb, 30*time.Second, "restarted node's API", func() error {
		data, err := os.ReadFile(filepath.Join(nd.Home, "api.addr"))
		if err != nil {
			return err
		}
		nd.API = strings.TrimSpace(string(data))
		return nil
	})
}

func tbWaitUntil(tb testing.TB, d time.Duration, what string, cond func() error) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s: %v", d, what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tbIgor(tb testing.TB, home string, args ...string) result {
	tb.Helper()
	if home != "" {
		args = append([]string{"--home", home}, args...)
	}
	cmd := exec.Command(binPath, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	cmd.Env = append(os.Environ(), "IGOR_HOME=")
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		cmd.Process.Kill()
		tb.Fatalf("igor-node %v hung; stderr:\n%s", args, errb.String())
	}
	return result{out.String(), errb.String(), cmd.ProcessState.ExitCode()}
}

func tbMustOK(tb testing.TB, r result, what string) result {
	tb.Helper()
	if r.code != 0 {
		tb.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", what, r.code, r.stdout, r.stderr)
	}
	return r
}

// tbTickEvents is tickEvents for a testing.TB.
func tbTickEvents(tb testing.TB, nodes []tnode, did string) []tickEvent {
	tb.Helper()
	short := agents.ShortDID(did)
	var evs []tickEvent
	tbScanLogs(tb, nodes, func(n tnode, line string) {
		m := logTick.FindStringSubmatch(line)
		if m == nil || m[3] != short {
			return
		}
		at, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			return
		}
		tick, _ := strconv.ParseUint(m[2], 10, 64)
		evs = append(evs, tickEvent{at, n.Index, tick})
	})
	sort.SliceStable(evs, func(i, j int) bool {
		if !evs[i].at.Equal(evs[j].at) {
			return evs[i].at.Before(evs[j].at)
		}
		return evs[i].tick < evs[j].tick
	})
	return evs
}

var logLine = regexp.MustCompile(`^time=(\S+) level=(\S+) msg=("(?:[^"\\]|\\.)*"|\S+)(.*)$`)

type logEvent struct {
	at         time.Time
	node       int
	level, msg string
	rest       string
}

// tbLogEvents returns every daemon log line whose message is msg and that
// names did, in time order.
func tbLogEvents(tb testing.TB, nodes []tnode, msg, did string) []logEvent {
	tb.Helper()
	var evs []logEvent
	tbScanLogs(tb, nodes, func(n tnode, line string) {
		ev, ok := parseLogLine(n, line)
		if ok && ev.msg == msg && strings.Contains(ev.rest, did) {
			evs = append(evs, ev)
		}
	})
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].at.Before(evs[j].at) })
	return evs
}

func parseLogLine(n tnode, line string) (logEvent, bool) {
	m := logLine.FindStringSubmatch(line)
	if m == nil {
		return logEvent{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, m[1])
	if err != nil {
		return logEvent{}, false
	}
	msg := m[3]
	if s, err := strconv.Unquote(msg); err == nil {
		msg = s
	}
	return logEvent{at: at, node: n.Index, level: m[2], msg: msg, rest: m[4]}, true
}

func tbScanLogs(tb testing.TB, nodes []tnode, fn func(n tnode, line string)) {
	tb.Helper()
	for _, n := range nodes {
		logs, _ := filepath.Glob(filepath.Join(n.Home, "daemon*.log"))
		for _, lf := range logs {
			f, err := os.Open(lf)
			if err != nil {
				tb.Fatal(err)
			}
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			for sc.Scan() {
				fn(n, sc.Text())
			}
			f.Close()
		}
	}
}

// tbLogAnomalies logs a count of the custody moves and of every warning and
// error in the daemon logs, with an example of each.
func tbLogAnomalies(tb testing.TB, nodes []tnode, did string) {
	tb.Helper()
	type agg struct {
		n       int
		example string
	}
	counts := map[string]*agg{}
	tbScanLogs(tb, nodes, func(n tnode, line string) {
		ev, ok := parseLogLine(n, line)
		if !ok {
			return
		}
		interesting := ev.level == "WARN" || ev.level == "ERROR" ||
			strings.HasPrefix(ev.msg, "custody:") || strings.Contains(ev.msg, "stopped")
		if !interesting {
			return
		}
		key := ev.level + " " + ev.msg
		a := counts[key]
		if a == nil {
			a = &agg{example: fmt.Sprintf("n%d %s", n.Index, line)}
			counts[key] = a
		}
		a.n++
	})
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ex := counts[k].example
		if len(ex) > 300 {
			ex = ex[:300] + "…"
		}
		tb.Logf("log %5d × %s — e.g. %s", counts[k].n, k, ex)
	}
}
