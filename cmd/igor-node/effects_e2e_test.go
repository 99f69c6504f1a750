package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/node"
)

// countingServer applies each POST once per Idempotency-Key (a repeat is
// answered from its store) and remembers, per key, every body it got.
type countingServer struct {
	mu      sync.Mutex
	bodies  map[string][]string // key → bodies, in arrival order
	applied int
	nokey   int
}

func (s *countingServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.mu.Lock()
	defer s.mu.Unlock()
	k := r.Header.Get("Idempotency-Key")
	if k == "" {
		s.nokey++
		s.applied++
	} else if s.bodies[k] = append(s.bodies[k], string(body)); len(s.bodies[k]) == 1 {
		s.applied++
	}
	fmt.Fprintf(w, "applied=%d", s.applied)
}

// An agent that POSTs once per tick (the fetcher example, post=1, paying
// 100 µc per tick too) on 3 real daemons, against a local server that
// honours idempotency keys, through repeated kill -9 of its holder
// (IGOR_EFFECT_KILLS, 20 by default): the server applied every key once,
// every tick of the lineage posted under exactly one key with one body (no
// tick ran twice with new observations), keys sent twice are only the
// calls in doubt (at most one per kill), and verify --replay passes.
func TestEffectsSurviveKills(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end testnet")
	}
	kills := 20
	if v, err := strconv.Atoi(os.Getenv("IGOR_EFFECT_KILLS")); err == nil && v > 0 {
		kills = v
	}
	srv := &countingServer{bodies: map[string][]string{}}
	hs := httptest.NewServer(srv)
	defer hs.Close()

	const tick = "100ms"
	_, nodes := testnet(t, 3, "TICK="+tick, "DRAIN=3s")
	down := map[int]bool{}
	alive := func(n tnode) bool { return !down[n.Index] }
	wasm, manPath := testagents.Path(t, "fetcher")
	manJSON, _ := os.ReadFile(manPath)
	var man map[string]any
	if err := json.Unmarshal(manJSON, &man); err != nil {
		t.Fatal(err)
	}
	man["args"] = "url=" + hs.URL + "/count post=1 pay=100 to=paywall memo=e2e"
	man["lease"] = map[string]any{"term_seconds": 3}
	manJSON, _ = json.Marshal(man)
	manFile := filepath.Join(t.TempDir(), "manifest.json")
	os.WriteFile(manFile, manJSON, 0o644)
	r := mustOK(t, igor(t, nodes[0].Home, "publish", "--json", "--budget", "100000", "--manifest", manFile, wasm), "publish")
	var pub node.PublishResult
	if err := json.Unmarshal([]byte(r.stdout), &pub); err != nil || pub.DID == "" {
		t.Fatalf("publish --json: %v %s", err, r.stdout)
	}
	posts := func() int {
		srv.mu.Lock()
		defer srv.mu.Unlock()
		return len(srv.bodies)
	}
	waitUntil(t, 60*time.Second, "10 posts", func() error {
		if n := posts(); n < 10 {
			return fmt.Errorf("%d posts", n)
		}
		return nil
	})
	start := time.Now()
	for k := 1; k <= kills; k++ {
		h, _, ok := runner(nodes, alive, pub.DID)
		if !ok {
			waitUntil(t, 30*time.Second, "a holder", func() error {
				if h, _, ok = runner(nodes, alive, pub.DID); !ok {
					return fmt.Errorf("nobody runs it")
				}
				return nil
			})
		}
		before := posts()
		if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		down[h.Index] = true
		// Usually ~2.5 s (the pauses are logged at the end); 90 s bounds the
		// rare slow takeover seen with journaled agents (session 12's note).
		waitUntil(t, 90*time.Second, fmt.Sprintf("kill %d: posts from the next holder", k), func() error {
			if _, _, ok := runner(nodes, alive, pub.DID); !ok {
				return fmt.Errorf("nobody runs it")
			}
			if n := posts(); n < before+3 {
				return fmt.Errorf("%d posts, want %d", n, before+3)
			}
			return nil
		})
		restart(t, &nodes[h.Index], bootAddr(t, nodes, down, h.Index), tick, k+1)
		down[h.Index] = false
		caughtUp(t, nodes, alive, nodes[h.Index], pub.DID, 30)
	}
	t.Logf("%d kills in %v", kills, time.Since(start).Round(time.Second))

	// Freeze the picture: the lineage's last tick bounds what is checked
	// (later ticks may still be in flight).
	var lin node.LineageReport
	if err := getJSON(nodes[0].API, "/v1/agents/"+pub.DID+"/lineage", &lin); err != nil || !lin.Valid {
		t.Fatalf("lineage: %v %+v", err, lin.Error)
	}
	last := lin.Entries[len(lin.Entries)-1].Tick
	srv.mu.Lock()
	perTick := map[uint64][]string{}
	repeats := 0
	for key, bodies := range srv.bodies {
		for _, b := range bodies[1:] {
			if b != bodies[0] {
				t.Errorf("key %s carried two bodies: %q and %q", key, bodies[0], b)
			}
		}
		repeats += len(bodies) - 1
		n, err := strconv.ParseUint(strings.TrimPrefix(bodies[0], "tick="), 10, 64)
		if err != nil {
			t.Fatalf("body %q", bodies[0])
		}
		perTick[n] = append(perTick[n], key)
	}
	applied, nokey := srv.applied, srv.nokey
	keys := len(srv.bodies)
	srv.mu.Unlock()
	if nokey != 0 || applied != keys {
		t.Fatalf("server: %d applied for %d keys, %d requests without a key", applied, keys, nokey)
	}
	for n := uint64(1); n <= last; n++ {
		if len(perTick[n]) != 1 {
			t.Fatalf("tick %d posted under %d keys %v (each tick of the lineage posts once, under one key)", n, len(perTick[n]), perTick[n])
		}
	}
	if repeats > kills {
		t.Fatalf("%d requests repeated a key after %d kills; only calls in doubt repeat, at most one per kill", repeats, kills)
	}
	r = mustOK(t, igor(t, nodes[0].Home, "verify", "--replay", pub.DID), "verify --replay")
	m := regexp.MustCompile(`replay +(\d+) journaled ticks re-executed`).FindStringSubmatch(r.stdout)
	if !strings.Contains(r.stdout, "VALID") || m == nil {
		t.Fatalf("verify --replay: %s", r.stdout)
	}
	if !strings.Contains(r.stdout, "paid") {
		t.Fatalf("verify shows no payments: %s", r.stdout)
	}
	evs := tickEvents(t, nodes, pub.DID)
	var pauses []string
	for _, tr := range transitions(evs) {
		pauses = append(pauses, tr.pause.Round(100*time.Millisecond).String())
	}
	t.Logf("%d ticks posted under %d keys, %d repeated (calls in doubt), %s journaled ticks replayed; holder changes (pause): %s",
		last, keys, repeats, m[1], strings.Join(pauses, " "))
	if len(evs) > 1 {
		t.Logf("%d tick lines over %v", len(evs), evs[len(evs)-1].at.Sub(evs[0].at).Round(time.Second))
	}
}

// startDemoServer runs the demo server (testnet/demoserver) on a free
// loopback port and returns its base URL.
func startDemoServer(t *testing.T) string {
	t.Helper()
	cmd := exec.Command(demoPath, "--addr", "127.0.0.1:0", "--name", "paywall", "--price", "1000")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening ") {
		t.Fatalf("demo server: %q %v", line, err)
	}
	go io.Copy(io.Discard, out)
	return strings.TrimSpace(strings.TrimPrefix(line, "listening "))
}

type sales struct {
	Sales    map[string]int64 `json:"sales"`
	Revenue  int64            `json:"revenue"`
	Replays  int64            `json:"replays"`
	Rejected int64            `json:"rejected"`
}

func getSales(t *testing.T, base string) sales {
	t.Helper()
	resp, err := http.Get(base + "/sales")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s sales
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// The x402-style buyer (402 → pay → retry with the receipt) against the
// demo paywall: run locally with `igor-node run`, then published to 3
// daemons and its holder killed. Every sale is a receipt the paywall
// verified, and the paywall's revenue is exactly what the lineage says
// the agent paid: no payment lost, none made twice, through the kill.
func TestX402BuyerLocalAndOnMesh(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end testnet")
	}
	base := startDemoServer(t)
	wasm, manPath := testagents.Path(t, "x402buyer")
	manifest := func(item string) string {
		manJSON, _ := os.ReadFile(manPath)
		var man map[string]any
		if err := json.Unmarshal(manJSON, &man); err != nil {
			t.Fatal(err)
		}
		man["args"] = "url=" + base + "/paid/" + item + " to=paywall max=5000"
		man["lease"] = map[string]any{"term_seconds": 3}
		b, _ := json.Marshal(man)
		p := filepath.Join(t.TempDir(), item+".json")
		os.WriteFile(p, b, 0o644)
		return p
	}
	paid := func(home, did string) int64 {
		r := mustOK(t, igor(t, home, "verify", "--json", "--replay", did), "verify --replay")
		var rep node.VerifyReport
		if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil || !rep.Valid || rep.Replay == nil || rep.Replay.Ticks == 0 {
			t.Fatalf("verify --replay: %v %s", err, r.stdout)
		}
		return rep.Paid
	}

	// Locally: 5 ticks, 5 purchases.
	home := t.TempDir()
	r := mustOK(t, igor(t, home, "run", "--manifest", manifest("local"), "--max-ticks", "5", "--price", "1", wasm), "run x402buyer")
	m := regexp.MustCompile(`did:key:z6Mk\w+`).FindString(r.stdout + r.stderr)
	if m == "" {
		t.Fatalf("no DID in run's output: %s %s", r.stdout, r.stderr)
	}
	s := getSales(t, base)
	if s.Sales["local"] != 5 || s.Rejected != 0 {
		t.Fatalf("after 5 local ticks the paywall counts %+v", s)
	}
	if got := paid(home, m); got != 5*1000 {
		t.Fatalf("the local lineage paid %d µc, the paywall sold 5 × 1000", got)
	}

	// On a mesh, through a kill -9 of the holder.
	_, nodes := testnet(t, 3, "TICK=100ms", "DRAIN=3s")
	down := map[int]bool{}
	alive := func(n tnode) bool { return !down[n.Index] }
	r = mustOK(t, igor(t, nodes[0].Home, "publish", "--json", "--budget", "100000", "--manifest", manifest("mesh"), wasm), "publish")
	var pub node.PublishResult
	if err := json.Unmarshal([]byte(r.stdout), &pub); err != nil || pub.DID == "" {
		t.Fatalf("publish --json: %v %s", err, r.stdout)
	}
	waitSales := func(n int64) {
		waitUntil(t, 60*time.Second, fmt.Sprintf("%d sales", n), func() error {
			if got := getSales(t, base).Sales["mesh"]; got < n {
				return fmt.Errorf("%d sales", got)
			}
			return nil
		})
	}
	waitSales(10)
	h, _, ok := runner(nodes, alive, pub.DID)
	if !ok {
		t.Fatal("nobody runs the buyer")
	}
	if err := syscall.Kill(h.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	down[h.Index] = true
	waitSales(getSales(t, base).Sales["mesh"] + 10)
	restart(t, &nodes[h.Index], bootAddr(t, nodes, down, h.Index), "100ms", 2)
	down[h.Index] = false
	// The owner (the publisher's home) stops it, so the lineage is final;
	// then compare.
	mustOK(t, igor(t, nodes[0].Home, "stop", pub.DID), "stop")
	s = getSales(t, base)
	lineagePaid := paid(nodes[0].Home, pub.DID)
	if s.Rejected != 0 || s.Sales["mesh"]*1000 != lineagePaid {
		t.Fatalf("the paywall sold %d (rejected %d, replays %d); the lineage paid %d µc", s.Sales["mesh"], s.Rejected, s.Replays, lineagePaid)
	}
	t.Logf("mesh: %d purchases, %d µc paid in the lineage, %d receipts presented again (replays)", s.Sales["mesh"], lineagePaid, s.Replays)
}
