package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/node"
)

// A journaled agent (manifest "journal": true) on 3 real daemons: each
// tick is committed at its custody group before the next starts, so after
// repeated kill -9 of the holder the new holder replays the journaled
// ticks and goes on: the lineage journals every tick exactly once, in
// order, and verifies. (IGOR_JOURNAL_KILLS sets the number of kills; 3 in
// make test.)
func TestJournaledFailoverRunsNoTickTwice(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end testnet")
	}
	kills := 3
	if v, err := strconv.Atoi(os.Getenv("IGOR_JOURNAL_KILLS")); err == nil && v > 0 {
		kills = v
	}
	const tick = "100ms"
	_, nodes := testnet(t, 3, "TICK="+tick, "DRAIN=3s")
	down := map[int]bool{}
	alive := func(n tnode) bool { return !down[n.Index] }

	wasm, _ := testagents.Path(t, "heartbeat")
	manPath := filepath.Join(t.TempDir(), "manifest.json")
	os.WriteFile(manPath, []byte(`{"name":"heartbeat","capabilities":{"clock":{"version":1},"rand":{"version":1},"log":{"version":1}},
		"resource_limits":{"max_state_bytes":4096},"lease":{"term_seconds":3},"journal":true}`), 0o644)
	r := mustOK(t, igor(t, nodes[0].Home, "publish", "--json", "--manifest", manPath, wasm), "publish")
	var pub node.PublishResult
	if err := json.Unmarshal([]byte(r.stdout), &pub); err != nil || pub.DID == "" {
		t.Fatalf("publish --json: %v %s", err, r.stdout)
	}
	status := func(n tnode) (node.AgentStatus, error) {
		var st node.AgentStatus
		err := getJSON(n.API, "/v1/agents/"+pub.DID, &st)
		return st, err
	}
	var tickAt uint64
	waitUntil(t, 60*time.Second, "the agent to reach tick 10", func() error {
		h, _, ok := runner(nodes, alive, pub.DID)
		if !ok {
			return fmt.Errorf("nobody runs it")
		}
		st, err := status(h)
		if err != nil || st.Tick < 10 {
			return fmt.Errorf("tick %d, %v", st.Tick, err)
		}
		tickAt = st.Tick
		return nil
	})
	for k := 1; k <= kills; k++ {
		h, _, ok := runner(nodes, alive, pub.DID)
		if !ok {
			t.Fatal("nobody runs the agent")
		}
		if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		down[h.Index] = true
		killed := time.Now()
		var next tnode
		// Usually ~2.5 s (the pauses are logged at the end); 90 s bounds the
		// rare slow takeover seen with journaled agents (session 12's note).
		waitUntil(t, 90*time.Second, fmt.Sprintf("kill %d: a standby to run the agent", k), func() error {
			n, _, ok := runner(nodes, alive, pub.DID)
			if !ok {
				return fmt.Errorf("nobody runs it")
			}
			next = n
			return nil
		})
		found := time.Since(killed)
		// The new holder's own API answers at once: it asks itself first,
		// with no DHT walk (which waited ~7–10 s on the dead holder's dial).
		q0 := time.Now()
		if _, err := status(next); err != nil || time.Since(q0) > 2*time.Second {
			t.Errorf("kill %d: the new holder's status took %v: %v", k, time.Since(q0), err)
		}
		waitUntil(t, 30*time.Second, fmt.Sprintf("kill %d: ticks past %d on the new holder", k, tickAt+5), func() error {
			st, err := status(next)
			if err != nil || st.Tick < tickAt+5 {
				return fmt.Errorf("tick %d, %v", st.Tick, err)
			}
			tickAt = st.Tick
			return nil
		})
		t.Logf("kill %d: node %d → node %d; found running after %v, its status showed 5 more ticks after %v", k, h.Index, next.Index, found.Round(time.Millisecond), time.Since(killed).Round(time.Millisecond))
		restart(t, &nodes[h.Index], bootAddr(t, nodes, down, h.Index), tick, k+1)
		down[h.Index] = false
		caughtUp(t, nodes, alive, nodes[h.Index], pub.DID, 30)
	}

	var lin node.LineageReport
	if err := getJSON(nodes[0].API, "/v1/agents/"+pub.DID+"/lineage", &lin); err != nil {
		t.Fatal(err)
	}
	if !lin.Valid || len(lin.Entries) < 20 {
		t.Fatalf("lineage valid=%v (%s), %d entries", lin.Valid, lin.Error, len(lin.Entries))
	}
	// Every tick journaled once, in order: a journaled entry advances the
	// tick by one; an entry without a journal only writes the same tick's
	// state down (a handoff, a stop).
	epochs := map[uint64]bool{}
	for i, e := range lin.Entries[1:] {
		prev := lin.Entries[i]
		epochs[e.Epoch] = true
		switch {
		case e.Journaled && e.Tick != prev.Tick+1:
			t.Fatalf("seq %d journals tick %d after tick %d", e.Seq, e.Tick, prev.Tick)
		case !e.Journaled && (e.Tick != prev.Tick || e.Stateless):
			t.Fatalf("seq %d (tick %d after %d) is neither a journaled tick nor the state of the same tick", e.Seq, e.Tick, prev.Tick)
		}
	}
	if len(epochs) < kills+1 {
		t.Fatalf("%d epochs in the lineage after %d kills", len(epochs), kills)
	}
	// Ticks the agent logged: a tick a holder ran but had not committed
	// when it was killed runs again on the next holder (it was never part
	// of the agent's life); every committed one ran once.
	seen := map[uint64]int{}
	evs := tickEvents(t, nodes, pub.DID)
	for _, ev := range evs {
		seen[ev.tick]++
	}
	for _, tr := range transitions(evs) {
		t.Logf("holder %d → %d: last tick %d, next %d, pause %v", tr.from, tr.to, tr.lastOld, tr.first, tr.pause.Round(time.Millisecond))
	}
	twice := 0
	for _, n := range seen {
		twice += n - 1
	}
	if twice > kills {
		t.Fatalf("%d tick lines repeated after %d kills; at most the one tick in flight per kill may run again", twice, kills)
	}
	r = mustOK(t, igor(t, nodes[0].Home, "verify", "--replay", pub.DID), "verify --replay")
	m := regexp.MustCompile(`replay +(\d+) journaled ticks re-executed, (\d+) states compared`).FindStringSubmatch(r.stdout)
	if !strings.Contains(r.stdout, "VALID") || m == nil {
		t.Fatalf("verify --replay: %s", r.stdout)
	}
	if n, _ := strconv.Atoi(m[1]); n < 20 {
		t.Fatalf("verify --replay re-executed %d ticks: %s", n, r.stdout)
	}
	// Offline, from a CAR file: the same replay, no daemon involved.
	car := filepath.Join(t.TempDir(), "agent.car")
	mustOK(t, igor(t, nodes[0].Home, "export", pub.DID, "-o", car), "export")
	r = mustOK(t, igor(t, "", "verify", "--replay", car), "verify --replay CAR")
	if !strings.Contains(r.stdout, "VALID") || !strings.Contains(r.stdout, "journaled ticks re-executed") {
		t.Fatalf("verify --replay CAR: %s", r.stdout)
	}
	t.Logf("%d kills, %d checkpoints, tick %d, %d tick lines repeated", kills, len(lin.Entries), lin.Entries[len(lin.Entries)-1].Tick, twice)
}
