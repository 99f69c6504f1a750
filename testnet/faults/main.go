// Command igor-faults is the fault suite with real network faults: it
// runs N real igor-node daemons, each in a network namespace of its own on
// one Linux bridge, publishes heartbeat and slowtick agents with custody
// groups of 3, and then injects a seeded sequence of faults — silent
// isolation of a holder's node (3 s and 30 s), one-way loss in each
// direction, link flaps, SIGSTOP of a holder inside a tick, kill -9 of a
// holder right after a commit and restart — while it reads every daemon's
// GET /v1/custody every 250 ms. Per fault it reports: two runners of one
// agent (never), a committed seq going backwards (never), takeover times,
// the time until the healed node is heard by its groups again (goal ≤ 2 s),
// membership changes and whether they were needed, custody groups and
// agent keys left on nodes that are no longer members. At the end every
// agent is verified with `igor-node verify`. It always removes the
// namespaces, the bridge and the daemons (and --cleanup removes what a
// crashed run left).
//
// Like testnet/chaos and testnet/scale it reads the API's JSON with its
// own small types: it checks what the daemons say.
//
// Usage: see usageText, or testnet/faults.sh --help.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/igor-mesh/igor-node/testnet/internal/daemonapi"
)

const usageText = `usage: testnet/faults.sh [--minutes M] [--seed S] [--agents A] [--slowtick K] [--dir DIR] [--json FILE]
       testnet/faults.sh --cleanup

Real network faults on a mesh of N daemons, each in a network namespace
(igorf-1 … igorf-N, 10.77.0.i/24) on one bridge (igorf-br, 10.77.0.254).
Needs root and working 'ip netns' (exit 2 otherwise). Publishes A agents
(K of them slowtick with spin_ms=300, the rest heartbeat; custody groups of
3), waits until each runs exactly once, then for M minutes runs a seeded
sequence of faults in rounds (each short kind once per round, and one long
cut: isolate-30s in odd rounds, isolate-45s in even ones):
  isolate-3s   the bridge port of a holder's node is disabled for 3 s
  isolate-30s  the same for --long-cut (default 30 s: the daemons'
               RegroupAfter; the group should keep its members)
  isolate-45s  the same for --evict-cut (default 45 s: past RegroupAfter,
               the node is replaced; it must then leave and delete the key)
  loss-out     the node's packets to every other node vanish (3-8 s)
  loss-in      every other node's packets to the node vanish (3-8 s)
  flap         the node's link goes down and up 2-3 times (down 1-6 s, up 1-3 s)
  sigstop      SIGSTOP of a slowtick agent's holder inside a tick, 1-2 s
  kill9        SIGKILL of a holder right after a commit; restart 2-5 s later
After each heal it measures how long until the node is heard by its groups
again, lets the mesh settle, and reads every node's custody and agent keys.
After the faults it waits --final-settle (the members' orphan check runs
after 1 min without a holder), reads the census again and runs
'igor-node verify' for every agent. It prints a table per fault and a
summary per fault kind, writes DIR/faults-report.json (or --json FILE), and
removes the namespaces, the bridge and the daemons.

  --minutes M        fault time (default 6); --seconds S instead
  --seed S           schedule seed (default: from the clock; printed)
  --nodes N          daemons (default 5, 3 to 9)
  --agents A         agents (default 15, at most 30)
  --slowtick K       of them slowtick agents (default 2)
  --long-cut D       the long isolation (default 30s)
  --evict-cut D      the isolation past RegroupAfter (default 45s)
  --final-settle D   wait before the final census (default 75s)
  --dir DIR          run directory (default testnet/faults-run; cleared first)
  --json FILE        the report (default DIR/faults-report.json)
  --bin PATH         igor-node binary (default bin/igor-node)
  --agents-dir DIR   example agents (default bin/agents)
  --term S           the agents' lease.term_seconds (default 10: a dead member
                     is replaced at the holder's first term end after 30 s)
  --kinds K,K        run only these kinds of fault
  --log-level L      the daemons' log level (default info)
  --cleanup          only remove what an earlier run left (processes in
                     igorf-* namespaces, the namespaces, the bridge)
Exit status: 0 every check passed, 1 a check failed or the run broke,
2 bad usage, not root, or no network namespaces; 130 interrupted.
`

var (
	errUsage     = errors.New("usage")
	errPreflight = errors.New("cannot run")
)

// regroupAfter is the daemons' custody.Timing.RegroupAfter: a member
// unheard for this long is replaced, so a cut at least this long may
// change the membership; a shorter one should not.
const regroupAfter = 30 * time.Second

// rejoinGoal is the bound for a healed node to hear its groups.
const rejoinGoal = 2 * time.Second

type config struct {
	Dir, JSON, Bin, AgentsDir string
	Duration                  time.Duration
	Seed                      uint64
	Nodes, Agents, Slow       int
	LongCut, EvictCut         time.Duration
	FinalSettle               time.Duration
	Tick                      string
	Slots                     int
	SpinMs                    int
	TermS                     int // the agents' lease.term_seconds
	Cleanup                   bool
	Kinds                     []string // only these kinds (default all)
	LogLevel                  string   // the daemons' --log-level
}

func parseArgs(args []string) (config, error) {
	cfg := config{Dir: "testnet/faults-run", Bin: "bin/igor-node", AgentsDir: "bin/agents", Nodes: 5, Agents: 15, Slow: 2,
		Tick: "1s", SpinMs: 300, TermS: 10}
	fs := flag.NewFlagSet("igor-faults", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	minutes := fs.Float64("minutes", 6, "")
	seconds := fs.Float64("seconds", 0, "")
	seed := fs.String("seed", "", "")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "")
	fs.IntVar(&cfg.Agents, "agents", cfg.Agents, "")
	fs.IntVar(&cfg.Slow, "slowtick", cfg.Slow, "")
	fs.DurationVar(&cfg.LongCut, "long-cut", 30*time.Second, "")
	fs.DurationVar(&cfg.EvictCut, "evict-cut", 45*time.Second, "")
	fs.DurationVar(&cfg.FinalSettle, "final-settle", 75*time.Second, "")
	fs.StringVar(&cfg.Dir, "dir", cfg.Dir, "")
	fs.StringVar(&cfg.JSON, "json", "", "")
	fs.StringVar(&cfg.Bin, "bin", cfg.Bin, "")
	fs.StringVar(&cfg.AgentsDir, "agents-dir", cfg.AgentsDir, "")
	fs.BoolVar(&cfg.Cleanup, "cleanup", false, "")
	fs.IntVar(&cfg.TermS, "term", cfg.TermS, "")
	only := fs.String("kinds", "", "")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case set["minutes"] && set["seconds"]:
		return cfg, fmt.Errorf("%w: give --minutes or --seconds, not both", errUsage)
	case set["seconds"]:
		cfg.Duration = time.Duration(*seconds * float64(time.Second))
	default:
		cfg.Duration = time.Duration(*minutes * float64(time.Minute))
	}
	switch {
	case cfg.Duration < 10*time.Second || cfg.Duration > 2*time.Hour:
		return cfg, fmt.Errorf("%w: the fault time must be from 10 s to 2 h, got %v", errUsage, cfg.Duration)
	case cfg.Nodes < 3 || cfg.Nodes > 9:
		return cfg, fmt.Errorf("%w: --nodes must be from 3 to 9, got %d", errUsage, cfg.Nodes)
	case cfg.Agents < 1 || cfg.Agents > 30:
		return cfg, fmt.Errorf("%w: --agents must be from 1 to 30, got %d", errUsage, cfg.Agents)
	case cfg.Slow < 0 || cfg.Slow > cfg.Agents:
		return cfg, fmt.Errorf("%w: --slowtick must be from 0 to --agents, got %d", errUsage, cfg.Slow)
	case cfg.LongCut < time.Second || cfg.LongCut > 5*time.Minute:
		return cfg, fmt.Errorf("%w: --long-cut must be from 1s to 5m, got %v", errUsage, cfg.LongCut)
	case cfg.EvictCut < time.Second || cfg.EvictCut > 5*time.Minute:
		return cfg, fmt.Errorf("%w: --evict-cut must be from 1s to 5m, got %v", errUsage, cfg.EvictCut)
	case cfg.TermS < 2 || cfg.TermS > 3600:
		return cfg, fmt.Errorf("%w: --term must be from 2 to 3600 seconds, got %d", errUsage, cfg.TermS)
	case cfg.FinalSettle < 0 || cfg.FinalSettle > 10*time.Minute:
		return cfg, fmt.Errorf("%w: --final-settle must be from 0 to 10m, got %v", errUsage, cfg.FinalSettle)
	}
	if *only != "" {
		for _, k := range strings.Split(*only, ",") {
			if !slices.Contains(kinds, k) {
				return cfg, fmt.Errorf("%w: --kinds: unknown kind %q (kinds: %s)", errUsage, k, strings.Join(kinds, ","))
			}
			cfg.Kinds = append(cfg.Kinds, k)
		}
	}
	if *seed == "" {
		cfg.Seed = uint64(time.Now().UnixNano()) % 1_000_000
	} else {
		s, err := strconv.ParseUint(*seed, 10, 64)
		if err != nil {
			return cfg, fmt.Errorf("%w: --seed must be a non-negative integer, got %q", errUsage, *seed)
		}
		cfg.Seed = s
	}
	// A node's share of the agents, and the share of a node cut off.
	cfg.Slots = (cfg.Agents+cfg.Nodes-1)/cfg.Nodes*2 + 4
	return cfg, nil
}

// ---------------------------------------------------------------------------
// The schedule (pure; unit-tested).

const (
	kIsolateShort = "isolate-3s"
	kIsolateLong  = "isolate-30s"
	kIsolateEvict = "isolate-45s"
	kLossOut      = "loss-out"
	kLossIn       = "loss-in"
	kFlap         = "flap"
	kStop         = "sigstop"
	kKill         = "kill9"
)

var kinds = []string{kIsolateShort, kIsolateLong, kIsolateEvict, kLossOut, kLossIn, kFlap, kStop, kKill}

// faultSpec is one scheduled fault.
type faultSpec struct {
	Kind   string
	Dur    time.Duration      // how long the fault lasts (kill9: the downtime)
	Cycles [][2]time.Duration // flap: (down, up) pairs
}

// estimate is the fault's length plus a settle allowance.
func (f faultSpec) estimate() time.Duration { return f.Dur + 12*time.Second }

func (f faultSpec) describe() string {
	switch f.Kind {
	case kFlap:
		var parts []string
		for _, c := range f.Cycles {
			parts = append(parts, fmt.Sprintf("down %.1fs up %.1fs", c[0].Seconds(), c[1].Seconds()))
		}
		return strings.Join(parts, ", ")
	case kKill:
		return fmt.Sprintf("down %.1fs", f.Dur.Seconds())
	default:
		return fmt.Sprintf("%.1fs", f.Dur.Seconds())
	}
}

// schedule is a seeded list of rounds, each holding every short kind once
// and one of the long cuts (isolate-30s in odd rounds, isolate-evict in
// even ones) in a random order; the run takes from it while time remains.
func schedule(seed uint64, longCut, evictCut time.Duration, rounds int) []faultSpec {
	rng := rand.New(rand.NewPCG(seed, 0x666175))
	ms := func(lo, hi int) time.Duration { return time.Duration(lo+rng.IntN(hi-lo+1)) * time.Millisecond }
	var out []faultSpec
	for r := range rounds {
		order := slices.DeleteFunc(slices.Clone(kinds), func(k string) bool { return k == kIsolateLong || k == kIsolateEvict })
		if r%2 == 0 {
			order = append(order, kIsolateLong)
		} else {
			order = append(order, kIsolateEvict)
		}
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		for _, k := range order {
			f := faultSpec{Kind: k}
			switch k {
			case kIsolateShort:
				f.Dur = 3 * time.Second
			case kIsolateLong:
				f.Dur = longCut
			case kIsolateEvict:
				f.Dur = evictCut
			case kLossOut, kLossIn:
				f.Dur = ms(3000, 8000)
			case kFlap:
				for range 2 + rng.IntN(2) {
					c := [2]time.Duration{ms(1000, 6000), ms(1000, 3000)}
					f.Cycles = append(f.Cycles, c)
					f.Dur += c[0] + c[1]
				}
			case kStop:
				f.Dur = ms(1000, 2000)
			case kKill:
				f.Dur = ms(2000, 5000)
			}
			out = append(out, f)
		}
	}
	return out
}

// ---------------------------------------------------------------------------
// The run.

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usageText)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "igor-faults: %v\n(run with --help for usage)\n", err)
		return 2
	}
	logf := func(format string, a ...any) {
		fmt.Fprintf(stdout, "%s %s\n", time.Now().Format("15:04:05.000"), fmt.Sprintf(format, a...))
	}
	if os.Geteuid() != 0 {
		fmt.Fprintf(stderr, "igor-faults: the fault suite needs root (network namespaces, veth pairs, a bridge)\n")
		return 2
	}
	if cfg.Cleanup {
		if err := cleanupNet(logf); err != nil {
			fmt.Fprintf(stderr, "igor-faults: cleanup: %v\n", err)
			return 1
		}
		logf("cleanup done")
		return 0
	}
	if err := preflight(); err != nil {
		fmt.Fprintf(stderr, "igor-faults: %v\n", err)
		if errors.Is(err, errPreflight) {
			return 2
		}
		return 1
	}
	if err := prepare(&cfg); err != nil {
		fmt.Fprintf(stderr, "igor-faults: %v\n", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Never hang: start-up, faults, the final settle and verify end by then.
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+cfg.FinalSettle+6*time.Minute)
	defer cancel()
	h := &harness{cfg: cfg, t0: time.Now(), out: stdout}
	h.logFile, _ = os.Create(filepath.Join(cfg.Dir, "faults.log"))
	code := h.run(ctx)
	h.teardown()
	if h.logFile != nil {
		h.logFile.Close()
	}
	return code
}

func prepare(cfg *config) error {
	for _, p := range []*string{&cfg.Dir, &cfg.Bin, &cfg.AgentsDir} {
		if a, err := filepath.Abs(*p); err == nil {
			*p = a
		}
	}
	if cfg.JSON == "" {
		cfg.JSON = filepath.Join(cfg.Dir, "faults-report.json")
	} else if a, err := filepath.Abs(cfg.JSON); err == nil {
		cfg.JSON = a
	}
	if fi, err := os.Stat(cfg.Bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("missing %s: run 'make build'", cfg.Bin)
	}
	for _, a := range []string{"heartbeat", "slowtick"} {
		for _, ext := range []string{".wasm", ".manifest.json"} {
			if _, err := os.Stat(filepath.Join(cfg.AgentsDir, a+ext)); err != nil {
				return fmt.Errorf("missing %s: run 'make agents'", filepath.Join(cfg.AgentsDir, a+ext))
			}
		}
	}
	entries, err := os.ReadDir(cfg.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(cfg.Dir, 0o755)
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 && !fileExists(filepath.Join(cfg.Dir, "faults.log")) {
		return fmt.Errorf("%s is not empty and holds no earlier fault run (no faults.log): pick another --dir", cfg.Dir)
	}
	// An earlier run: its homes would bring their agents back.
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(cfg.Dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// daemon is one igor-node in namespace igorf-Index.
type daemon struct {
	Index  int
	Peer   string
	Home   string
	client *http.Client
	dialer *nsDialer

	mu     sync.Mutex
	pid    int
	exited chan struct{}
	up     bool // started and not killed (a stopped one is up)
}

func (d *daemon) name() string { return "n" + strconv.Itoa(d.Index) }

func (d *daemon) addr() string {
	return fmt.Sprintf("/ip4/%s/tcp/4001/p2p/%s", nodeIP(d.Index), d.Peer)
}

type agent struct {
	DID, Kind, Publisher string // publisher: peer whose API published it
}

type harness struct {
	cfg     config
	t0      time.Time
	out     io.Writer
	logFile *os.File
	logMu   sync.Mutex
	rootNS  *os.File
	netUp   bool

	nodes  []*daemon
	agents []agent
	dids   []string

	mu        sync.Mutex // guards tr, failures
	tr        *tracker
	failures  []string
	faults    []*faultRecord
	stale     map[string]*staleSeen // by staleFinding.String()
	final     finalReport
	samplerWG sync.WaitGroup
}

// staleSeen is one stale finding's life.
type staleSeen struct {
	F         staleFinding
	First     time.Time
	Last      time.Time
	FaultID   int // the fault during which it was first seen (0: before any)
	Cleared   bool
	ClearedAt time.Time
}

func (h *harness) logf(format string, a ...any) {
	now := time.Now()
	line := fmt.Sprintf("%s t+%6.1fs %s\n", now.Format("15:04:05.000"), now.Sub(h.t0).Seconds(), fmt.Sprintf(format, a...))
	h.logMu.Lock()
	defer h.logMu.Unlock()
	io.WriteString(h.out, line)
	if h.logFile != nil {
		io.WriteString(h.logFile, line)
	}
}

func (h *harness) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	h.logf("FAIL: %s", msg)
	h.mu.Lock()
	h.failures = append(h.failures, msg)
	h.mu.Unlock()
}

func (h *harness) peerName(p string) string {
	for _, n := range h.nodes {
		if n.Peer == p {
			return n.name()
		}
	}
	return "…" + tail(p, 6)
}

func (h *harness) run(ctx context.Context) int {
	c := h.cfg
	h.logf("faults: %d nodes, %d agents (%d slowtick), %v of faults, seed %d, dir %s", c.Nodes, c.Agents, c.Slow, c.Duration, c.Seed, c.Dir)
	var err error
	if h.rootNS, err = os.Open("/proc/self/ns/net"); err != nil {
		return h.abort(ctx, "open own netns", err)
	}
	h.netUp = true
	if err := setupNet(c.Nodes); err != nil {
		return h.abort(ctx, "create namespaces", err)
	}
	h.logf("network: bridge %s %s, namespaces %s1..%d (10.77.0.1-%d)", bridge, bridgeIP, prefix, c.Nodes, c.Nodes)
	if err := h.startAll(ctx); err != nil {
		return h.abort(ctx, "start daemons", err)
	}
	h.tr = newTracker(h.t0, h.peerName)
	h.stale = map[string]*staleSeen{}
	if err := h.publish(ctx); err != nil {
		return h.abort(ctx, "publish", err)
	}
	sctx, stopSampler := context.WithCancel(ctx)
	h.samplerWG.Go(func() { h.sampler(sctx) })
	defer func() { stopSampler(); h.samplerWG.Wait() }()
	if err := h.waitStable(ctx, 90*time.Second); err != nil {
		return h.abort(ctx, "wait for every agent to run once", err)
	}
	h.logf("every agent runs exactly once; settling 10 s")
	if err := sleep(ctx, 10*time.Second); err != nil {
		return h.abort(ctx, "settle", err)
	}
	h.censusStep(ctx, 0)

	end := time.Now().Add(c.Duration)
	sched := schedule(c.Seed, c.LongCut, c.EvictCut, 50)
	rng := rand.New(rand.NewPCG(c.Seed, 0x76696374))
	for _, f := range sched {
		if ctx.Err() != nil {
			break
		}
		if len(c.Kinds) > 0 && !slices.Contains(c.Kinds, f.Kind) {
			continue
		}
		if time.Now().Add(f.estimate()).After(end) {
			continue // a shorter one may still fit
		}
		if err := h.fault(ctx, len(h.faults)+1, f, rng); err != nil {
			if ctx.Err() != nil {
				break
			}
			h.fail("fault %d (%s): %v", len(h.faults), f.Kind, err)
		}
	}
	if ctx.Err() != nil {
		return h.abort(ctx, "faults", ctx.Err())
	}
	h.logf("faults over (%d); final settle %v", len(h.faults), c.FinalSettle)
	if err := sleep(ctx, c.FinalSettle); err != nil {
		return h.abort(ctx, "final settle", err)
	}
	h.finalChecks(ctx)
	stopSampler()
	h.samplerWG.Wait()
	return h.report()
}

func (h *harness) abort(ctx context.Context, phase string, err error) int {
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		h.logf("FAULTS ABORTED: interrupted during %s", phase)
		return 130
	}
	h.fail("%s: %v", phase, err)
	h.logTails()
	return 1
}

func (h *harness) logTails() {
	for _, n := range h.nodes {
		data, err := os.ReadFile(filepath.Join(n.Home, "daemon.log"))
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		h.logf("--- last lines of %s", filepath.Join(n.Home, "daemon.log"))
		for _, l := range lines[max(0, len(lines)-6):] {
			h.logf("    %s", l)
		}
	}
}

// teardown kills the daemons (by pid), then removes the namespaces and the
// bridge. It runs after every run, passed, failed or interrupted.
func (h *harness) teardown() {
	for _, n := range h.nodes {
		n.mu.Lock()
		pid, exited := n.pid, n.exited
		n.mu.Unlock()
		if pid > 0 && alive(pid) {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		if exited != nil {
			select {
			case <-exited:
			case <-time.After(10 * time.Second):
			}
		}
		if n.dialer != nil {
			n.dialer.Close()
		}
	}
	if h.netUp {
		if err := cleanupNet(func(string, ...any) {}); err != nil {
			h.logf("teardown: %v (run with --cleanup)", err)
		} else {
			h.logf("teardown: daemons stopped, namespaces and bridge removed")
		}
	}
}

// alive reports whether pid runs (not a zombie).
var alive = daemonapi.Alive

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ---------------------------------------------------------------------------
// Daemons.

func (h *harness) startAll(ctx context.Context) error {
	for i := 1; i <= h.cfg.Nodes; i++ {
		d := &daemon{Index: i, Home: filepath.Join(h.cfg.Dir, "n"+strconv.Itoa(i))}
		if err := os.MkdirAll(d.Home, 0o700); err != nil {
			return err
		}
		var err error
		if d.dialer, err = newNSDialer(nsName(i), h.rootNS); err != nil {
			return err
		}
		d.client = nsClient(d.dialer)
		h.nodes = append(h.nodes, d)
	}
	// n1 first: the others bootstrap from it.
	if err := h.start(ctx, h.nodes[0]); err != nil {
		return err
	}
	for _, d := range h.nodes[1:] {
		if err := h.start(ctx, d); err != nil {
			return err
		}
	}
	// The mesh is formed when every node knows every host.
	deadline := time.Now().Add(60 * time.Second)
	for _, d := range h.nodes {
		for {
			var hosts []json.RawMessage
			data, err := h.get(ctx, d, "/v1/hosts", 5*time.Second)
			if err == nil && json.Unmarshal(data, &hosts) == nil && len(hosts) >= len(h.nodes) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s sees %d of %d hosts after 60 s", d.name(), len(hosts), len(h.nodes))
			}
			if err := sleep(ctx, 500*time.Millisecond); err != nil {
				return err
			}
		}
	}
	h.logf("mesh of %d daemons formed", len(h.nodes))
	return nil
}

// start runs d's daemon in its namespace and waits for its API. Its
// bootstrap peers are the other nodes whose peer IDs are known.
func (h *harness) start(ctx context.Context, d *daemon) error {
	ip := nodeIP(d.Index)
	args := []string{"--home", d.Home, "--log-level", h.cfg.LogLevel, "daemon",
		"--listen", "/ip4/" + ip + "/tcp/4001", "--listen", "/ip4/" + ip + "/udp/4001/quic-v1",
		"--api", "127.0.0.1:5001", "--slots", strconv.Itoa(h.cfg.Slots), "--tick-interval", h.cfg.Tick, "--drain-timeout", "5s"}
	for _, o := range h.nodes {
		if o != d && o.Peer != "" {
			args = append(args, "--bootstrap", o.addr())
		}
	}
	out, err := os.Create(filepath.Join(d.Home, "daemon.out"))
	if err != nil {
		return err
	}
	defer out.Close()
	logf, err := os.OpenFile(filepath.Join(d.Home, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- igor-faults: start at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command("ip", append([]string{"netns", "exec", nsName(d.Index), h.cfg.Bin}, args...)...)
	cmd.Stdout, cmd.Stderr = out, logf
	cmd.Env = daemonapi.CleanEnv()
	// Its own process group: a ^C to the harness does not reach it (the
	// harness stops it), and the stop signals of a fault hit it alone.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	d.mu.Lock()
	d.pid, d.exited, d.up = cmd.Process.Pid, exited, true
	d.mu.Unlock()
	_ = os.WriteFile(filepath.Join(d.Home, "pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-exited:
			return fmt.Errorf("%s exited at start (see %s)", d.name(), filepath.Join(d.Home, "daemon.log"))
		default:
		}
		data, err := h.get(ctx, d, "/v1/node", time.Second)
		if err == nil {
			var info struct {
				Peer string `json:"peer"`
			}
			if json.Unmarshal(data, &info) == nil && info.Peer != "" {
				if d.Peer != "" && d.Peer != info.Peer {
					return fmt.Errorf("%s came back as peer %s, was %s", d.name(), info.Peer, d.Peer)
				}
				d.Peer = info.Peer
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s's API did not answer within 30 s: %v", d.name(), err)
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func (d *daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.pid
}

// ---------------------------------------------------------------------------
// API.

func (h *harness) do(ctx context.Context, d *daemon, method, path string, body []byte, timeout time.Duration) ([]byte, error) {
	return daemonapi.Do(ctx, d.client, method, "http://127.0.0.1:5001"+path, body, timeout, 64<<20)
}

func (h *harness) get(ctx context.Context, d *daemon, path string, timeout time.Duration) ([]byte, error) {
	return h.do(ctx, d, "GET", path, nil, timeout)
}

// publish creates the agents through the nodes' APIs in turn.
func (h *harness) publish(ctx context.Context) error {
	body := func(name, args string) ([]byte, error) {
		wasm, err := os.ReadFile(filepath.Join(h.cfg.AgentsDir, name+".wasm"))
		if err != nil {
			return nil, err
		}
		raw, err := os.ReadFile(filepath.Join(h.cfg.AgentsDir, name+".manifest.json"))
		if err != nil {
			return nil, err
		}
		var man map[string]any
		if err := json.Unmarshal(raw, &man); err != nil {
			return nil, fmt.Errorf("%s manifest: %v", name, err)
		}
		if args != "" {
			man["args"] = args
		}
		// A short lease term: the holder replaces a member unheard for
		// RegroupAfter at its next term end, so the 45 s cut evicts within
		// the cut (30–40 s) and the 30 s cut never may.
		man["lease"] = map[string]any{"term_seconds": h.cfg.TermS}
		return json.Marshal(map[string]any{"wasm": wasm, "manifest": man, "budget_microcents": int64(1000) * 1_000_000})
	}
	hb, err := body("heartbeat", "")
	if err != nil {
		return err
	}
	st, err := body("slowtick", "spin_ms="+strconv.Itoa(h.cfg.SpinMs))
	if err != nil {
		return err
	}
	for i := range h.cfg.Agents {
		kind, b := "heartbeat", hb
		if i < h.cfg.Slow {
			kind, b = "slowtick", st
		}
		n := h.nodes[i%len(h.nodes)]
		var res struct {
			DID     string   `json:"did"`
			Holder  string   `json:"holder"`
			Members []string `json:"members"`
		}
		for try := 1; ; try++ {
			data, err := h.do(ctx, n, "POST", "/v1/agents", b, 2*time.Minute)
			if err == nil {
				err = json.Unmarshal(data, &res)
			}
			if err == nil && res.DID != "" {
				break
			}
			if try == 3 || ctx.Err() != nil {
				return fmt.Errorf("agent %d via %s: %v", i+1, n.name(), err)
			}
			h.logf("publish agent %d via %s failed (%v); again", i+1, n.name(), err)
			if err := sleep(ctx, 2*time.Second); err != nil {
				return err
			}
		}
		h.agents = append(h.agents, agent{res.DID, kind, n.Peer})
		h.dids = append(h.dids, res.DID)
		var ms []string
		for _, m := range res.Members {
			ms = append(ms, h.peerName(m))
		}
		h.logf("published %s …%s via %s: holder %s, members %s", kind, tail(res.DID, 6), n.name(), h.peerName(res.Holder), strings.Join(ms, ","))
	}
	return nil
}

// readAll reads every node's custody at once.
func (h *harness) readAll(ctx context.Context) sample {
	s := sample{At: time.Now(), Views: make([]nodeView, len(h.nodes))}
	var wg sync.WaitGroup
	for i, n := range h.nodes {
		wg.Go(func() {
			v := nodeView{Peer: n.Peer}
			data, err := h.get(ctx, n, "/v1/custody", 800*time.Millisecond)
			v.ReadAt = time.Now()
			var sts []custodyStatus
			if err == nil && json.Unmarshal(data, &sts) == nil {
				v.OK = true
				v.Sts = make(map[string]custodyStatus, len(sts))
				for _, st := range sts {
					v.Sts[st.DID] = st
				}
			}
			s.Views[i] = v
		})
	}
	wg.Wait()
	return s
}

// sampler reads every node every 250 ms and folds the samples.
func (h *harness) sampler(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	seen := 0
	for {
		s := h.readAll(ctx)
		if ctx.Err() != nil {
			return
		}
		h.mu.Lock()
		h.tr.add(s, h.dids)
		vs := h.tr.violations[seen:]
		seen = len(h.tr.violations)
		h.mu.Unlock()
		for _, v := range vs {
			h.logf("VIOLATION %s …%s: %s", v.Kind, tail(v.DID, 6), v.Detail)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// waitStable waits until every agent runs exactly once in a sample that
// read every node.
func (h *harness) waitStable(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		h.mu.Lock()
		n, complete := h.tr.exactlyOnce(h.dids)
		h.mu.Unlock()
		if complete && n == len(h.dids) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d agents run exactly once after %v (every node read: %v)", n, len(h.dids), d, complete)
		}
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return err
		}
	}
}

// keysOf lists the DIDs whose key file a node's home holds.
func keysOf(home string) map[string]bool {
	ents, _ := os.ReadDir(filepath.Join(home, "keys"))
	out := map[string]bool{}
	for _, e := range ents {
		if id, ok := strings.CutSuffix(e.Name(), ".key"); ok {
			out["did:key:"+id] = true
		}
	}
	return out
}

// census reads every node's custody and keys and updates the stale
// findings' lives; it returns the findings present now.
func (h *harness) censusStep(ctx context.Context, faultID int) []staleFinding {
	s := h.readAll(ctx)
	keys := map[string]map[string]bool{}
	for _, n := range h.nodes {
		keys[n.Peer] = keysOf(n.Home)
	}
	pub := map[string]string{}
	for _, a := range h.agents {
		pub[a.DID] = a.Publisher
	}
	fs := censusFindings(s, h.dids, keys, pub, h.peerName)
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	present := map[string]bool{}
	for _, f := range fs {
		k := f.String()
		present[k] = true
		if st, ok := h.stale[k]; ok && !st.Cleared {
			st.Last = now
			continue
		}
		h.stale[k] = &staleSeen{F: f, First: now, Last: now, FaultID: faultID}
	}
	// A finding counts as cleared only when the agent had a single live
	// runner to compare with and the node was read.
	for k, st := range h.stale {
		if present[k] || st.Cleared {
			continue
		}
		if live, _ := runners(s, st.F.DID); len(live) == 1 {
			st.Cleared, st.ClearedAt = true, now
		}
	}
	return fs
}
