// Command igor-scale is the steady-state scale harness of the local
// testnet. It starts N real daemons with testnet/up.sh, publishes A
// heartbeat agents through their HTTP API, waits until every agent runs on
// exactly one node, lets the mesh settle, and then measures what the
// steady state costs: CPU time and resident memory (RSS, and PSS, which
// counts the pages the agents share once) of every daemon over a window,
// per agent-second and per custody-group membership. It checks at
// the window's end that every agent still runs exactly once and that the
// agents' ticks advanced, and always stops the testnet unless --keep.
//
// Like testnet/chaos it reads the API's JSON with its own small types and
// imports only the standard library: it measures what the daemons do, and
// stays buildable while package node changes.
//
// Usage: see usageText, or testnet/scale.sh --help.
package main

import (
	"bytes"
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
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/igor-mesh/igor-node/testnet/internal/daemonapi"
)

const usageText = `usage: testnet/scale.sh [--nodes N] [--agents A] [--window S] [--settle S] [--parallel P]
                        [--slots K] [--dir DIR] [--keep] [--json FILE] [--bin PATH]
                        [--kill K [--observe S] [--seed X] [--burn] [--spread]]

The steady-state scale harness. Starts N daemons (testnet/up.sh N DIR, with
SLOTS=K, TICK=1s and IGOR_DEBUG_PPROF=1), publishes A heartbeat agents through
the daemons' API (POST /v1/agents, round-robin over the nodes, P at a time, a
failed publish retried up to 3 times), waits until every agent runs on exactly
one node (GET /v1/custody of every node), settles, then measures every daemon
over the window: CPU time (utime+stime of /proc/PID/stat), RSS at the end
(VmRSS), PSS at the end (Pss of /proc/PID/smaps_rollup; "-" when unknown),
custody memberships and agents running. RSS counts a page once per mapping, so
the WASM data image every agent maps copy-on-write counts once per agent; PSS
divides a shared page among its mappings and is the memory actually used. At
the window's end it checks again that every agent runs exactly once, and that
the ticks of a few sampled agents advanced by about the window's length. It
prints one row per node and the totals (CPU ms per agent-second, RSS and PSS
per group membership), and stops the testnet (testnet/down.sh DIR) unless
--keep.

  --nodes N      daemons (default 3)
  --agents A     heartbeat agents (default 300)
  --window S     measurement window in seconds (default 60)
  --settle S     seconds from all-running to the window (default 15)
  --parallel P   concurrent publishes (default 16)
  --upload-each  send the module with every publish (default: upload it once per node,
                 then publish by its CID)
  --slots K      agent slots per daemon (default ceil(A/N)*2+8: a node's share
                 plus the share of a dead node)
  --wait S       how long to wait for every agent to run (default 60 + A/5)
  --dir DIR      run directory, new or empty (default a temporary directory,
                 removed at the end unless --keep or a check failed)
  --keep         leave the testnet running (the daemons serve /debug/pprof/ on
                 their API, see DIR/nodes.json) and print how to stop it
  --json FILE    also write the results as JSON
  --bin PATH     igor-node binary (default bin/igor-node)
  --agent PATH   agent module, manifest beside it (default bin/agents/heartbeat.wasm)
  --budget B     budget per agent in whole currency units (default 1000)
  --tick D       the daemons' tick interval (default 1s)
  --testnet DIR  where up.sh and down.sh are (default testnet)

Mass failover (--kill K > 0), after the window: the harness records which node
runs every agent at which epoch (GET /v1/custody, GET /v1/agents of every
node), SIGKILLs K nodes at once (chosen from n1..n(N-1) by --seed; n0 always
survives), then reads GET /v1/custody of every survivor every 250 ms for
--observe seconds and reports: how long each agent of the killed nodes took to
run on a survivor (p50/p99/max, and how many never did); survivor stops (an
agent running on a survivor at the kill that a survivor later stops or moves:
expected 0); agents seen running on 2+ nodes; a 5 s time series (running,
running nowhere, recoveries, holder changes among survivors, stops, CPU % of
each survivor); the survivors' log lines about regroups, hand-offs and stops
since the kill; and GET /v1/agents/DID/verify of 10 random agents (up to 5 of
the killed nodes') on survivors.
  --kill K       nodes to SIGKILL at once (default 0: no failover; at most N-1)
  --observe S    seconds to observe the survivors after the kill (default 180)
  --seed X       picks the killed nodes and the verified agents (default 1)
  --burn         a busy loop in the harness occupies one core from the kill to
                 the end of the observation (a loaded machine)
  --spread       kill K nodes no two of which share a custody group (picked by
                 --seed from the census at the kill; fails if there are none):
                 nodes in different failure domains, the loss a group of 3
                 survives
Failover failures (exit 1): an agent running on 2+ nodes in two consecutive
samples or at the same epoch, an agent of a killed node not running on a
survivor by the end of --observe, a verify that is not valid or shows a fork.
Survivor stops and slow recoveries are reported, not failures.
Progress goes to stderr, the report to stdout.
Exit status: 0 every check passed, 1 a check failed or the run broke,
2 bad usage, 130 interrupted.
`

// errUsage marks command-line errors (exit 2).
var errUsage = errors.New("usage")

// maxPublishTries is one publish and its 3 retries.
const maxPublishTries = 4

type config struct {
	Nodes    int
	Agents   int
	Parallel int
	// UploadEach sends the module with every publish; by default the
	// first publish through each node uploads it and the others name it
	// by CID ({"module": CID}), as a bulk publisher does.
	UploadEach bool
	Slots      int
	Window     time.Duration
	Settle     time.Duration
	Wait       time.Duration // for all agents to run
	Tick       time.Duration
	Dir        string
	TempDir    bool // Dir was created by the harness
	Keep       bool
	JSON       string
	Bin        string
	Wasm       string
	Testnet    string
	Budget     int64 // microcents
	// Mass failover (--kill K > 0): after the window, SIGKILL K nodes at
	// once and observe the survivors.
	Kill    int
	Observe time.Duration
	Seed    uint64
	Burn    bool
	Spread  bool // victims that share no custody group
}

// defaultSlots is enough slots for a node's share of the agents plus the
// share of a node that died: ceil(A/N)*2 + 8.
func defaultSlots(agents, nodes int) int {
	return (agents+nodes-1)/nodes*2 + 8
}

// defaultWait scales the all-running timeout with the agents: 60 s + A/5 s.
func defaultWait(agents int) time.Duration {
	return 60*time.Second + time.Duration(agents)*time.Second/5
}

// parseArgs reads the command line. Errors wrap errUsage, or are
// flag.ErrHelp for --help.
func parseArgs(args []string) (config, error) {
	cfg := config{Nodes: 3, Agents: 300, Parallel: 16, Bin: "bin/igor-node",
		Wasm: "bin/agents/heartbeat.wasm", Testnet: "testnet"}
	fs := flag.NewFlagSet("igor-scale", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "")
	fs.IntVar(&cfg.Agents, "agents", cfg.Agents, "")
	fs.IntVar(&cfg.Parallel, "parallel", cfg.Parallel, "")
	fs.BoolVar(&cfg.UploadEach, "upload-each", false, "")
	slots := fs.Int("slots", 0, "")
	window := fs.Float64("window", 60, "")
	settle := fs.Float64("settle", 15, "")
	wait := fs.Float64("wait", 0, "")
	fs.DurationVar(&cfg.Tick, "tick", time.Second, "")
	fs.StringVar(&cfg.Dir, "dir", "", "")
	fs.BoolVar(&cfg.Keep, "keep", false, "")
	fs.StringVar(&cfg.JSON, "json", "", "")
	fs.StringVar(&cfg.Bin, "bin", cfg.Bin, "")
	fs.StringVar(&cfg.Wasm, "agent", cfg.Wasm, "")
	fs.StringVar(&cfg.Testnet, "testnet", cfg.Testnet, "")
	budget := fs.Int64("budget", 1000, "")
	fs.IntVar(&cfg.Kill, "kill", 0, "")
	observe := fs.Float64("observe", 180, "")
	fs.Uint64Var(&cfg.Seed, "seed", 1, "")
	fs.BoolVar(&cfg.Burn, "burn", false, "")
	fs.BoolVar(&cfg.Spread, "spread", false, "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, err
		}
		return cfg, fmt.Errorf("%w: %v", errUsage, err)
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("%w: unexpected argument %q (every option is a flag, e.g. --dir DIR)", errUsage, fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	switch {
	case cfg.Nodes < 1 || cfg.Nodes > 64:
		return cfg, fmt.Errorf("%w: --nodes must be from 1 to 64, got %d", errUsage, cfg.Nodes)
	case cfg.Agents < 1 || cfg.Agents > 100_000:
		return cfg, fmt.Errorf("%w: --agents must be from 1 to 100000, got %d", errUsage, cfg.Agents)
	case cfg.Parallel < 1 || cfg.Parallel > 256:
		return cfg, fmt.Errorf("%w: --parallel must be from 1 to 256, got %d", errUsage, cfg.Parallel)
	case *window < 1 || *window > 86400:
		return cfg, fmt.Errorf("%w: --window must be from 1 to 86400 seconds, got %v", errUsage, *window)
	case *settle < 0 || *settle > 3600:
		return cfg, fmt.Errorf("%w: --settle must be from 0 to 3600 seconds, got %v", errUsage, *settle)
	case set["wait"] && (*wait < 1 || *wait > 86400):
		return cfg, fmt.Errorf("%w: --wait must be from 1 to 86400 seconds, got %v", errUsage, *wait)
	case cfg.Tick < 10*time.Millisecond || cfg.Tick > time.Minute:
		return cfg, fmt.Errorf("%w: --tick must be from 10ms to 1m, got %v", errUsage, cfg.Tick)
	case *budget < 1 || *budget > 1_000_000_000:
		return cfg, fmt.Errorf("%w: --budget must be from 1 to 1000000000 currency units, got %d", errUsage, *budget)
	case cfg.Kill < 0 || cfg.Kill > cfg.Nodes-1:
		return cfg, fmt.Errorf("%w: --kill must be from 0 to nodes-1 = %d (one node at least survives), got %d", errUsage, cfg.Nodes-1, cfg.Kill)
	case *observe < 1 || *observe > 86400:
		return cfg, fmt.Errorf("%w: --observe must be from 1 to 86400 seconds, got %v", errUsage, *observe)
	case cfg.Spread && cfg.Kill == 0:
		return cfg, fmt.Errorf("%w: --spread picks the nodes to kill: it needs --kill", errUsage)
	case cfg.Burn && cfg.Kill == 0:
		return cfg, fmt.Errorf("%w: --burn burns a core during the failover observation: it needs --kill", errUsage)
	case set["dir"] && strings.TrimSpace(cfg.Dir) == "":
		return cfg, fmt.Errorf("%w: --dir must not be empty", errUsage)
	case set["json"] && strings.TrimSpace(cfg.JSON) == "":
		return cfg, fmt.Errorf("%w: --json must not be empty", errUsage)
	}
	cfg.Window = time.Duration(*window * float64(time.Second))
	cfg.Settle = time.Duration(*settle * float64(time.Second))
	cfg.Budget = *budget * 1_000_000
	cfg.Observe = time.Duration(*observe * float64(time.Second))
	cfg.Wait = defaultWait(cfg.Agents)
	if set["wait"] {
		cfg.Wait = time.Duration(*wait * float64(time.Second))
	}
	cfg.Slots = defaultSlots(cfg.Agents, cfg.Nodes)
	if set["slots"] {
		if *slots < 1 {
			return cfg, fmt.Errorf("%w: --slots must be a positive number, got %d", errUsage, *slots)
		}
		if *slots*cfg.Nodes < cfg.Agents {
			return cfg, fmt.Errorf("%w: --slots %d is too few: %d nodes × %d slots cannot run %d agents", errUsage, *slots, cfg.Nodes, *slots, cfg.Agents)
		}
		cfg.Slots = *slots
	}
	return cfg, nil
}

// ---------------------------------------------------------------------------
// /proc parsing (pure; unit-tested).

// parseStat reads utime+stime (clock ticks) of a /proc/PID/stat line. The
// command name (field 2) is in parentheses and may itself hold spaces and
// parentheses, so the fields are counted after the last ')'.
func parseStat(data []byte) (uint64, error) {
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, errors.New("stat: no ')' after the command name")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): utime (field 14) is f[11], stime f[12].
	if len(f) < 13 {
		return 0, fmt.Errorf("stat: %d fields after the command name, want at least 13", len(f))
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: utime/stime: %w", err)
	}
	return ut + st, nil
}

// parseVmRSS reads VmRSS (KiB) from /proc/PID/status.
func parseVmRSS(data []byte) (uint64, error) {
	n, found, err := parseKiBLine(data, "status", "VmRSS")
	if err == nil && !found {
		err = errors.New("status: no VmRSS line (a kernel thread or a zombie?)")
	}
	return n, err
}

// parseSmapsRollupPss reads Pss (KiB) from /proc/PID/smaps_rollup. Unlike
// VmRSS it splits a page mapped n times into n parts: the agents' shared
// WASM data image counts once, not once per agent. The Pss_Anon, Pss_File,
// ... lines are its parts, not it.
func parseSmapsRollupPss(data []byte) (uint64, error) {
	n, found, err := parseKiBLine(data, "smaps_rollup", "Pss")
	if err == nil && !found {
		err = errors.New("smaps_rollup: no Pss line")
	}
	return n, err
}

// parseKiBLine reads the first "key: N kB" line of a /proc file.
func parseKiBLine(data []byte, file, key string) (n uint64, found bool, err error) {
	for line := range strings.Lines(string(data)) {
		v, ok := strings.CutPrefix(line, key+":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			return 0, true, fmt.Errorf("%s: %s line %q is not 'N kB'", file, key, strings.TrimSpace(line))
		}
		if n, err = strconv.ParseUint(f[0], 10, 64); err != nil {
			return 0, true, fmt.Errorf("%s: %s: %w", file, key, err)
		}
		return n, true, nil
	}
	return 0, false, nil
}

// parseCPUStat reads the aggregate "cpu" line of /proc/stat: busy and total
// jiffies of all cores (idle and iowait are not busy).
func parseCPUStat(data []byte) (busy, total uint64, err error) {
	for line := range strings.Lines(string(data)) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		if len(f) < 5 {
			return 0, 0, fmt.Errorf("/proc/stat: short cpu line %q", strings.TrimSpace(line))
		}
		var idle uint64
		for i, v := range f[1:] {
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("/proc/stat: cpu field %d: %w", i+1, err)
			}
			// user nice system idle iowait irq softirq steal guest guest_nice:
			// guest time is already counted in user and nice.
			if i >= 8 {
				continue
			}
			total += n
			if i == 3 || i == 4 {
				idle += n
			}
		}
		return total - idle, total, nil
	}
	return 0, 0, errors.New("/proc/stat: no aggregate cpu line")
}

// cpuModel is the first "model name" of /proc/cpuinfo.
func cpuModel(data []byte) string {
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

// ---------------------------------------------------------------------------
// Custody census and the totals (pure; unit-tested).

// custodyStatus is the part of GET /v1/custody (custody.Status) we use.
type custodyStatus struct {
	DID     string   `json:"did"`
	Role    string   `json:"role"`
	Running bool     `json:"running"`
	Moving  bool     `json:"moving"`
	Epoch   uint64   `json:"epoch"`
	Holder  string   `json:"holder"`
	Members []string `json:"members"`
}

// tallyResult is how many of the published agents run exactly once.
type tallyResult struct {
	Published   int      `json:"published"`
	ExactlyOnce int      `json:"exactly_once"`
	Missing     int      `json:"missing"`            // running nowhere
	Moving      int      `json:"moving"`             // missing, but a holder reports it is moving it
	Duplicated  int      `json:"duplicated"`         // running on 2+ nodes
	Unknown     int      `json:"unknown"`            // running, but not one of the published DIDs
	Unreachable int      `json:"unreachable"`        // nodes whose custody could not be read
	Examples    []string `json:"examples,omitempty"` // a few missing or duplicated DIDs
}

func (t tallyResult) ok() bool { return t.ExactlyOnce == t.Published && t.Unreachable == 0 }

func (t tallyResult) String() string {
	s := fmt.Sprintf("%d/%d run exactly once (%d missing", t.ExactlyOnce, t.Published, t.Missing)
	if t.Moving > 0 {
		s += fmt.Sprintf(", %d of them moving", t.Moving)
	}
	s += fmt.Sprintf(", %d on 2+ nodes, %d unknown running", t.Duplicated, t.Unknown)
	if t.Unreachable > 0 {
		s += fmt.Sprintf(", %d nodes unreachable", t.Unreachable)
	}
	return s + ")"
}

// tally counts, over every node's custody statuses (nil: the node could
// not be read), on how many nodes each published DID runs.
func tally(published []string, perNode [][]custodyStatus) tallyResult {
	t := tallyResult{Published: len(published)}
	running := map[string]int{}
	moving := map[string]bool{}
	for _, sts := range perNode {
		if sts == nil {
			t.Unreachable++
			continue
		}
		for _, s := range sts {
			if s.Running {
				running[s.DID]++
			}
			if s.Moving {
				moving[s.DID] = true
			}
		}
	}
	pub := make(map[string]bool, len(published))
	for _, d := range published {
		pub[d] = true
		switch n := running[d]; {
		case n == 1:
			t.ExactlyOnce++
		case n == 0:
			t.Missing++
			if moving[d] {
				t.Moving++
			}
		default:
			t.Duplicated++
		}
		if running[d] != 1 && len(t.Examples) < 5 {
			t.Examples = append(t.Examples, fmt.Sprintf("%s on %d nodes", d, running[d]))
		}
	}
	for d := range running {
		if !pub[d] {
			t.Unknown++
		}
	}
	return t
}

// nodeMeasure is what was measured of one daemon over the window.
type nodeMeasure struct {
	Name        string
	PID         int
	CPUTicks    uint64 // utime+stime at the end minus at the start
	RSSKiB      uint64 // at the end
	PSSKiB      uint64 // at the end, when PSSKnown
	PSSKnown    bool
	PSSError    string // smaps_rollup read but malformed
	Memberships int    // custody statuses at the end
	Running     int
}

// nodeRow is one daemon's line of the report.
type nodeRow struct {
	Node        string  `json:"node"`
	PID         int     `json:"pid"`
	CPUPct      float64 `json:"cpu_pct_one_core"`
	CPUSec      float64 `json:"cpu_s"`
	RSSMiB      float64 `json:"rss_mib"`
	PSSMiB      float64 `json:"pss_mib"` // 0 unless pss_known
	PSSKnown    bool    `json:"pss_known"`
	PSSError    string  `json:"pss_error,omitempty"`
	Memberships int     `json:"memberships"`
	Running     int     `json:"running"`
}

// totals are the sums and the per-unit costs.
type totals struct {
	CPUPct              float64 `json:"cpu_pct_one_core"`
	CPUms               float64 `json:"cpu_ms"`
	CPUmsPerAgentSecond float64 `json:"cpu_ms_per_agent_second"`
	RSSMiB              float64 `json:"rss_mib"`
	RSSMiBPerMembership float64 `json:"rss_mib_per_membership"`
	// PSS of every node, or unknown (0, pss_known false) when one node's
	// is: a sum over some nodes is no total.
	PSSMiB              float64 `json:"pss_mib"`
	PSSMiBPerMembership float64 `json:"pss_mib_per_membership"`
	PSSKnown            bool    `json:"pss_known"`
	Memberships         int     `json:"memberships"`
	Running             int     `json:"running"`
	// Peers a node shares a custody group with (from the census at the
	// window's end): what pair leases beat and keep connected.
	PartnersMean float64 `json:"partners_mean"`
	PartnersMax  int     `json:"partners_max"`
}

// computeTotals turns the measures into rows and totals: CPU % of one core
// = ticks/hz ÷ wall × 100; CPU ms per agent-second = total CPU ms ÷
// (agents × wall seconds); RSS (PSS) per membership = total RSS (PSS) MiB
// ÷ total memberships (0 when there are none).
func computeTotals(ms []nodeMeasure, hz int64, wall time.Duration, agents int) ([]nodeRow, totals, error) {
	if hz <= 0 || wall <= 0 || agents <= 0 {
		return nil, totals{}, fmt.Errorf("totals need a positive clock rate, window and agent count (got %d Hz, %v, %d agents)", hz, wall, agents)
	}
	var t totals
	var ticks, rss, pss uint64
	t.PSSKnown = len(ms) > 0
	rows := make([]nodeRow, len(ms))
	for i, m := range ms {
		cpuS := float64(m.CPUTicks) / float64(hz)
		rows[i] = nodeRow{Node: m.Name, PID: m.PID, CPUPct: cpuS / wall.Seconds() * 100, CPUSec: cpuS,
			RSSMiB: float64(m.RSSKiB) / 1024, PSSKnown: m.PSSKnown, PSSError: m.PSSError,
			Memberships: m.Memberships, Running: m.Running}
		if m.PSSKnown {
			rows[i].PSSMiB = float64(m.PSSKiB) / 1024
		}
		ticks += m.CPUTicks
		rss += m.RSSKiB
		pss += m.PSSKiB
		t.PSSKnown = t.PSSKnown && m.PSSKnown
		t.Memberships += m.Memberships
		t.Running += m.Running
	}
	t.CPUms = float64(ticks) * 1000 / float64(hz)
	t.CPUPct = t.CPUms / 1000 / wall.Seconds() * 100
	t.CPUmsPerAgentSecond = t.CPUms / (float64(agents) * wall.Seconds())
	t.RSSMiB = float64(rss) / 1024
	if t.Memberships > 0 {
		t.RSSMiBPerMembership = t.RSSMiB / float64(t.Memberships)
	}
	if t.PSSKnown {
		t.PSSMiB = float64(pss) / 1024
		if t.Memberships > 0 {
			t.PSSMiBPerMembership = t.PSSMiB / float64(t.Memberships)
		}
	}
	return rows, t, nil
}

// tickSample is one sampled agent's tick at the window's start and end.
type tickSample struct {
	DID    string  `json:"did"`
	Node   string  `json:"asked"`
	Start  uint64  `json:"tick_start"`
	End    uint64  `json:"tick_end"`
	Delta  int64   `json:"delta"`
	Secs   float64 `json:"seconds"`
	RateHz float64 `json:"rate_hz"`
	Error  string  `json:"error,omitempty"`
}

// tickVerdict: every sample advanced (ok), and the mean rate.
func tickVerdict(samples []tickSample) (ok bool, meanHz float64) {
	n := 0
	ok = len(samples) > 0
	for _, s := range samples {
		if s.Error != "" || s.Delta <= 0 {
			ok = false
			continue
		}
		meanHz += s.RateHz
		n++
	}
	if n > 0 {
		meanHz /= float64(n)
	}
	return ok, meanHz
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
		fmt.Fprintf(stderr, "igor-scale: %v\n(run with --help for usage)\n", err)
		return 2
	}
	if err := prepare(&cfg); err != nil {
		fmt.Fprintf(stderr, "igor-scale: %v\n", err)
		return 1
	}
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	h := newHarness(cfg, stdout, stderr)
	code := h.run(ctx)
	if cfg.JSON != "" {
		if err := h.writeJSON(cfg.JSON); err != nil {
			h.logf("cannot write %s: %v", cfg.JSON, err)
			code = max(code, 1)
		}
	}
	h.finish(code)
	return code
}

// prepare checks the inputs, makes paths absolute and creates the run
// directory (a temporary one unless --dir).
func prepare(cfg *config) error {
	for _, p := range []*string{&cfg.Bin, &cfg.Wasm, &cfg.Testnet} {
		if a, err := filepath.Abs(*p); err == nil {
			*p = a
		}
	}
	if cfg.JSON != "" {
		if a, err := filepath.Abs(cfg.JSON); err == nil {
			cfg.JSON = a
		}
	}
	if fi, err := os.Stat(cfg.Bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("missing %s: run 'make build' (or testnet/scale.sh, which builds it)", cfg.Bin)
	}
	if !fileExists(cfg.Wasm) {
		return fmt.Errorf("missing agent module %s: run 'make agents'", cfg.Wasm)
	}
	if man := manifestPath(cfg.Wasm); !fileExists(man) {
		return fmt.Errorf("missing manifest %s beside the agent module: run 'make agents'", man)
	}
	for _, s := range []string{"up.sh", "down.sh"} {
		if !fileExists(filepath.Join(cfg.Testnet, s)) {
			return fmt.Errorf("missing %s: run from the repository root or pass --testnet DIR", filepath.Join(cfg.Testnet, s))
		}
	}
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		return errors.New("igor-scale needs Linux /proc to measure the daemons")
	}
	if cfg.Dir == "" {
		d, err := os.MkdirTemp("", "igor-scale.")
		if err != nil {
			return err
		}
		cfg.Dir, cfg.TempDir = d, true
		return nil
	}
	a, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return err
	}
	cfg.Dir = a
	entries, err := os.ReadDir(cfg.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(cfg.Dir, 0o755)
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 {
		// Old homes would bring their agents back and skew the measure.
		return fmt.Errorf("--dir %s is not empty: pick a new directory (stop a testnet there with testnet/down.sh %s)", cfg.Dir, cfg.Dir)
	}
	return nil
}

func manifestPath(wasm string) string { return strings.TrimSuffix(wasm, ".wasm") + ".manifest.json" }

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// node is one daemon, from DIR/nodes.json.
type node struct {
	Index int    `json:"index"`
	Peer  string `json:"peer"`
	API   string `json:"api"`
	Home  string `json:"home"`
	PID   int    `json:"pid"`
}

func (n *node) name() string { return fmt.Sprintf("n%d", n.Index) }

// publishStats is the publish phase.
type publishStats struct {
	Requested      int     `json:"requested"`
	Published      int     `json:"published"`
	FailedAttempts int     `json:"failed_attempts"` // each retried
	FailedAgents   int     `json:"failed_agents"`   // gave up after maxPublishTries
	Seconds        float64 `json:"seconds"`
	RatePerSec     float64 `json:"agents_per_second"`
	// WarmSeconds: the first publish through each node, all at once (the
	// module uploaded and compiled there); BulkRatePerSec: the rest, by CID.
	WarmSeconds    float64  `json:"warm_seconds"`
	BulkRatePerSec float64  `json:"bulk_agents_per_second"`
	Parallel       int      `json:"parallel"`
	Errors         []string `json:"errors,omitempty"` // the first few
}

type machineInfo struct {
	NProc  int    `json:"nproc"`
	Model  string `json:"cpu_model"`
	ClkTck int64  `json:"clk_tck"`
	Date   string `json:"date"`
	GoOS   string `json:"os"`
}

// report is everything the run found; --json writes it.
type report struct {
	OK     bool     `json:"ok"`
	Errors []string `json:"errors"`
	Config struct {
		Nodes    int     `json:"nodes"`
		Agents   int     `json:"agents"`
		Slots    int     `json:"slots"`
		Tick     string  `json:"tick_interval"`
		WindowS  float64 `json:"window_s"`
		SettleS  float64 `json:"settle_s"`
		Parallel int     `json:"parallel"`
		Dir      string  `json:"dir"`
		Bin      string  `json:"bin"`
		Agent    string  `json:"agent"`
	} `json:"config"`
	Machine            machineInfo     `json:"machine"`
	Pprof              bool            `json:"pprof_served"`
	Publish            publishStats    `json:"publish"`
	AllRunningS        *float64        `json:"all_running_after_first_publish_s"`
	AllRunningAfterPub *float64        `json:"all_running_after_last_publish_s"`
	WindowWallS        float64         `json:"window_wall_s"`
	Nodes              []nodeRow       `json:"nodes"`
	Totals             *totals         `json:"totals"`
	MachineBusyPct     float64         `json:"machine_busy_pct_all_cores"`
	HarnessCPUPct      float64         `json:"harness_cpu_pct_one_core"`
	EndTally           *tallyResult    `json:"end_tally"`
	Failover           *failoverReport `json:"failover,omitempty"`
	FirstEndTally      *tallyResult    `json:"first_end_tally,omitempty"` // when the first look at the end differed
	Ticks              []tickSample    `json:"tick_samples"`
	TicksOK            bool            `json:"ticks_ok"`
	MeanTickHz         float64         `json:"mean_tick_hz"`
}

type harness struct {
	modMu   sync.Mutex        // guards modules
	modules map[string]string // node API → module CID it stored (publish by CID)
	cfg     config
	out     io.Writer // the report
	logw    io.Writer // progress
	t0      time.Time
	http    *http.Client
	nodes   []*node
	dids    []string // published, in publish order
	rep     report
	logMu   sync.Mutex
	failed  bool
}

func newHarness(cfg config, stdout, stderr io.Writer) *harness {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = cfg.Parallel + 4
	h := &harness{cfg: cfg, out: stdout, logw: stderr, t0: time.Now(), http: &http.Client{Transport: tr}}
	c := &h.rep.Config
	c.Nodes, c.Agents, c.Slots, c.Tick = cfg.Nodes, cfg.Agents, cfg.Slots, cfg.Tick.String()
	c.WindowS, c.SettleS, c.Parallel = cfg.Window.Seconds(), cfg.Settle.Seconds(), cfg.Parallel
	c.Dir, c.Bin, c.Agent = cfg.Dir, cfg.Bin, cfg.Wasm
	h.rep.Errors = []string{}
	return h
}

func (h *harness) logf(format string, a ...any) {
	line := fmt.Sprintf("%s t+%6.1fs %s\n", time.Now().Format("15:04:05"), time.Since(h.t0).Seconds(), fmt.Sprintf(format, a...))
	h.logMu.Lock()
	defer h.logMu.Unlock()
	io.WriteString(h.logw, line)
}

// fail records a failed check or phase; the run goes on where it can.
func (h *harness) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	h.logf("FAIL: %s", msg)
	h.rep.Errors = append(h.rep.Errors, msg)
	h.failed = true
}

// run is the whole experiment; it returns the exit code.
func (h *harness) run(ctx context.Context) int {
	c := h.cfg
	h.rep.Machine = machine()
	h.logf("scale: %d nodes, %d agents (%s), tick %v, slots %d, settle %v, window %v, dir %s",
		c.Nodes, c.Agents, filepath.Base(c.Wasm), c.Tick, c.Slots, c.Settle, c.Window, c.Dir)
	if err := h.up(ctx); err != nil {
		return h.abort(ctx, "start the testnet", err)
	}
	h.rep.Pprof = h.pprofServed(ctx)
	if !h.rep.Pprof {
		h.logf("warning: the daemons do not serve /debug/pprof/ (a binary built before IGOR_DEBUG_PPROF? 'make build' rebuilds it)")
	}
	first, last, err := h.publish(ctx)
	if err != nil {
		return h.abort(ctx, "publish", err)
	}
	if len(h.dids) == 0 {
		return h.abort(ctx, "publish", errors.New("no agent was published"))
	}
	if err := h.waitAllRunning(ctx, first, last); err != nil {
		return h.abort(ctx, "wait for all agents to run", err)
	}
	h.logf("settling %v", c.Settle)
	if err := sleep(ctx, c.Settle); err != nil {
		return h.abort(ctx, "settle", err)
	}
	if err := h.measure(ctx); err != nil {
		return h.abort(ctx, "measure", err)
	}
	if c.Kill > 0 {
		if err := h.failover(ctx); err != nil {
			return h.abort(ctx, "failover", err)
		}
	}
	h.printReport()
	if h.failed {
		return 1
	}
	return 0
}

// abort ends a run that could not complete: 130 after SIGINT/SIGTERM, else 1
// with the tail of every daemon's log.
func (h *harness) abort(ctx context.Context, phase string, err error) int {
	if ctx.Err() != nil {
		h.logf("SCALE ABORTED: interrupted during %s", phase)
		h.rep.Errors = append(h.rep.Errors, "interrupted during "+phase)
		return 130
	}
	h.fail("%s: %v", phase, err)
	h.logTails()
	h.printReport()
	return 1
}

// logTails prints the last lines of every daemon's log.
func (h *harness) logTails() {
	homes, _ := filepath.Glob(filepath.Join(h.cfg.Dir, "n*", "daemon.log"))
	for _, f := range homes {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
		h.logf("--- last lines of %s", f)
		for _, l := range lines[max(0, len(lines)-8):] {
			h.logf("    %s", l)
		}
	}
}

// finish stops the testnet unless --keep, and removes a temporary run
// directory of a run that passed.
func (h *harness) finish(code int) {
	c := h.cfg
	if c.Keep {
		if fileExists(filepath.Join(c.Dir, "nodes.json")) {
			fmt.Fprintf(h.out, "\ntestnet left running in %s (nodes.json lists each daemon's API; profile with\n"+
				"  go tool pprof http://API/debug/pprof/profile?seconds=30)\nstop it with: testnet/down.sh %s\n", c.Dir, c.Dir)
		}
		return
	}
	h.logf("teardown: testnet/down.sh %s", c.Dir)
	tctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(tctx, filepath.Join(c.Testnet, "down.sh"), c.Dir)
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		h.logf("teardown: down.sh: %v: %s", err, strings.TrimSpace(string(out)))
	}
	for _, n := range h.nodes {
		if alive(n.PID) {
			h.logf("teardown: %s (pid %d) survived down.sh: SIGKILL", n.name(), n.PID)
			_ = syscall.Kill(n.PID, syscall.SIGKILL)
		}
	}
	switch {
	case !c.TempDir:
	case code == 0 || code == 130:
		if err := os.RemoveAll(c.Dir); err != nil {
			h.logf("teardown: cannot remove %s: %v", c.Dir, err)
		}
	default:
		h.logf("the run failed: its daemon logs are kept in %s (n*/daemon.log)", c.Dir)
	}
}

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

// machine describes where the run happens.
func machine() machineInfo {
	m := machineInfo{NProc: runtime.NumCPU(), Model: "unknown", ClkTck: 100, Date: time.Now().Format(time.RFC3339), GoOS: runtime.GOOS + "/" + runtime.GOARCH}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		m.Model = cpuModel(data)
	}
	m.ClkTck = clkTck()
	return m
}

// clkTck is getconf CLK_TCK; 100 (the Linux USER_HZ on every common
// architecture) when getconf is missing.
func clkTck() int64 {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err == nil {
		if n, err := strconv.ParseInt(strings.TrimSpace(string(out)), 10, 64); err == nil && n > 0 {
			return n
		}
	}
	fmt.Fprintln(os.Stderr, "igor-scale: warning: 'getconf CLK_TCK' failed; assuming 100 clock ticks per second")
	return 100
}

// cleanEnv keeps IGOR_HOME/IGOR_API of the caller from redirecting commands.
var cleanEnv = daemonapi.CleanEnv

// up runs testnet/up.sh and reads nodes.json. up.sh starts the daemons
// with its own environment, so IGOR_DEBUG_PPROF reaches them.
func (h *harness) up(ctx context.Context) error {
	c := h.cfg
	cmd := exec.CommandContext(ctx, filepath.Join(c.Testnet, "up.sh"), strconv.Itoa(c.Nodes), c.Dir)
	cmd.Env = append(cleanEnv(), "BIN="+c.Bin, "SLOTS="+strconv.Itoa(c.Slots), "TICK="+c.Tick.String(), "IGOR_DEBUG_PPROF=1")
	cmd.WaitDelay = 5 * time.Second
	t := time.Now()
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			h.logf("up.sh: %s", l)
		}
	}
	if err != nil {
		return fmt.Errorf("testnet/up.sh: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(c.Dir, "nodes.json"))
	if err != nil {
		return err
	}
	var nodes []*node
	if err := json.Unmarshal(data, &nodes); err != nil || len(nodes) != c.Nodes {
		return fmt.Errorf("nodes.json: want %d nodes: %v", c.Nodes, err)
	}
	h.nodes = nodes
	h.logf("mesh of %d nodes up in %.1fs", len(nodes), time.Since(t).Seconds())
	return nil
}

func (h *harness) pprofServed(ctx context.Context) bool {
	_, err := h.get(ctx, h.nodes[0].API, "/debug/pprof/", 5*time.Second)
	return err == nil
}

// httpError is a non-2xx answer of the API.
type httpError = daemonapi.HTTPError

var apiError = daemonapi.ErrorOf

func (h *harness) get(ctx context.Context, api, path string, timeout time.Duration) ([]byte, error) {
	return daemonapi.Do(ctx, h.http, "GET", "http://"+api+path, nil, timeout, 256<<20)
}

// publishBody is the POST /v1/agents request (node.PublishRequest), the
// same bytes for every agent: each publish creates a new key and DID.
func (h *harness) publishBody() ([]byte, error) {
	wasm, err := os.ReadFile(h.cfg.Wasm)
	if err != nil {
		return nil, err
	}
	man, err := os.ReadFile(manifestPath(h.cfg.Wasm))
	if err != nil {
		return nil, err
	}
	if !json.Valid(man) {
		return nil, fmt.Errorf("%s is not JSON", manifestPath(h.cfg.Wasm))
	}
	return json.Marshal(struct {
		Wasm        []byte          `json:"wasm"`
		Manifest    json.RawMessage `json:"manifest"`
		Budget      int64           `json:"budget_microcents"`
		MinReplicas *int            `json:"min_replicas,omitempty"`
	}{wasm, man, h.cfg.Budget, h.minReplicas()})
}

// minReplicas lets fewer than three daemons take the agents: publish
// refuses a custody group below the manifest's holder and 2 standbys.
func (h *harness) minReplicas() *int {
	if h.cfg.Nodes >= 3 {
		return nil
	}
	n := h.cfg.Nodes - 1
	return &n
}

// moduleBody is a publish request naming a module stored on the node.
func (h *harness) moduleBody(module string) ([]byte, error) {
	man, err := os.ReadFile(manifestPath(h.cfg.Wasm))
	if err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		Module      string          `json:"module"`
		Manifest    json.RawMessage `json:"manifest"`
		Budget      int64           `json:"budget_microcents"`
		MinReplicas *int            `json:"min_replicas,omitempty"`
	}{module, man, h.cfg.Budget, h.minReplicas()})
}

// publishOne posts one publish to api and returns the new DID.
func (h *harness) publishOne(ctx context.Context, api string, body []byte) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+api+"/v1/agents", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode >= 300 {
		return "", apiError(resp.StatusCode, data)
	}
	var res struct {
		DID    string `json:"did"`
		Module string `json:"module"`
	}
	if err := json.Unmarshal(data, &res); err != nil || res.DID == "" {
		return "", fmt.Errorf("publish answered no DID: %.200q", data)
	}
	h.modMu.Lock()
	if h.modules == nil {
		h.modules = map[string]string{}
	}
	if h.modules[api] == "" {
		h.modules[api] = res.Module
	}
	h.modMu.Unlock()
	return res.DID, nil
}

// bodyFor is the request for a publish through api: the module by CID once
// that node stored it (unless --upload-each), else the module itself.
func (h *harness) bodyFor(api string, full []byte) []byte {
	if h.cfg.UploadEach {
		return full
	}
	h.modMu.Lock()
	mod := h.modules[api]
	h.modMu.Unlock()
	if mod == "" {
		return full
	}
	b, err := h.moduleBody(mod)
	if err != nil {
		return full
	}
	return b
}

// publish creates the agents: agent i through node i mod N, P at a time,
// each tried up to maxPublishTries times. It returns when the first publish
// started and the last one ended.
func (h *harness) publish(ctx context.Context) (first, last time.Time, err error) {
	c := h.cfg
	body, err := h.publishBody()
	if err != nil {
		return first, last, err
	}
	st := &h.rep.Publish
	st.Requested, st.Parallel = c.Agents, c.Parallel
	h.logf("publishing %d agents (%d KiB request each) through %d nodes, %d at a time", c.Agents, len(body)>>10, len(h.nodes), c.Parallel)
	dids := make([]string, c.Agents)
	var done, failedAttempts, failedAgents atomic.Int64
	var errMu sync.Mutex
	publishAgent := func(i int) {
		n := h.nodes[i%len(h.nodes)]
		for try := 1; ; try++ {
			did, err := h.publishOne(ctx, n.API, h.bodyFor(n.API, body))
			if err == nil {
				dids[i] = did
				done.Add(1)
				return
			}
			if ctx.Err() != nil {
				return
			}
			failedAttempts.Add(1)
			errMu.Lock()
			if len(st.Errors) < 10 {
				st.Errors = append(st.Errors, fmt.Sprintf("agent %d via %s, try %d: %v", i+1, n.name(), try, err))
				h.logf("publish agent %d via %s, try %d failed: %v", i+1, n.name(), try, err)
			}
			errMu.Unlock()
			if try == maxPublishTries {
				failedAgents.Add(1)
				return
			}
			_ = sleep(ctx, time.Duration(try)*time.Second)
		}
	}
	first = time.Now()
	// The module's upload to a node and its compile there happen once per
	// node and module, not per agent: the first publish through each node
	// carries it, all nodes at once, before the bulk, which then names the
	// module by CID. Timed apart (BulkRatePerSec); RatePerSec covers both.
	warm := min(len(h.nodes), c.Agents)
	var wwg sync.WaitGroup
	for i := range warm {
		wwg.Go(func() { publishAgent(i) })
	}
	wwg.Wait()
	warmEnd := time.Now()
	st.WarmSeconds = warmEnd.Sub(first).Seconds()
	h.logf("the module on every node: %d publishes (one per node, the module in each) in %.1fs", warm, st.WarmSeconds)
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range c.Parallel {
		wg.Go(func() {
			for i := range jobs {
				publishAgent(i)
			}
		})
	}
	progress := time.NewTicker(5 * time.Second)
	defer progress.Stop()
	go func() {
		defer close(jobs)
		for i := warm; i < c.Agents; i++ {
			select {
			case jobs <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
wait:
	for {
		select {
		case <-finished:
			break wait
		case <-progress.C:
			el := time.Since(first).Seconds()
			h.logf("published %d/%d (%.1f/s; %d failed attempts)", done.Load(), c.Agents, float64(done.Load())/el, failedAttempts.Load())
		}
	}
	last = time.Now()
	if ctx.Err() != nil {
		return first, last, ctx.Err()
	}
	for _, d := range dids {
		if d != "" {
			h.dids = append(h.dids, d)
		}
	}
	st.Published = len(h.dids)
	st.FailedAttempts, st.FailedAgents = int(failedAttempts.Load()), int(failedAgents.Load())
	st.Seconds = last.Sub(first).Seconds()
	st.RatePerSec = float64(st.Published) / st.Seconds
	if bulk := last.Sub(warmEnd).Seconds(); c.Agents > warm && bulk > 0 {
		n := 0
		for _, d := range dids[warm:] {
			if d != "" {
				n++
			}
		}
		st.BulkRatePerSec = float64(n) / bulk
	}
	h.logf("published %d/%d in %.1fs = %.2f agents/s (%d failed attempts, %d agents given up); after the module reached every node (%.1fs): %.2f agents/s",
		st.Published, c.Agents, st.Seconds, st.RatePerSec, st.FailedAttempts, st.FailedAgents, st.WarmSeconds, st.BulkRatePerSec)
	if st.FailedAgents > 0 {
		h.fail("%d of %d publishes failed %d times each", st.FailedAgents, c.Agents, maxPublishTries)
	}
	return first, last, nil
}

// custody reads every node's GET /v1/custody (nil for a node that did not
// answer, with the error).
func (h *harness) custody(ctx context.Context) ([][]custodyStatus, []error) {
	out := make([][]custodyStatus, len(h.nodes))
	errs := make([]error, len(h.nodes))
	var wg sync.WaitGroup
	for i, n := range h.nodes {
		wg.Go(func() {
			data, err := h.get(ctx, n.API, "/v1/custody", 30*time.Second)
			if err == nil {
				var sts []custodyStatus
				if err = json.Unmarshal(data, &sts); err == nil {
					if sts == nil {
						sts = []custodyStatus{}
					}
					out[i] = sts
				}
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return out, errs
}

// waitAllRunning polls the custody of every node until every published
// agent runs on exactly one node.
func (h *harness) waitAllRunning(ctx context.Context, first, last time.Time) error {
	deadline := last.Add(h.cfg.Wait)
	h.logf("waiting up to %v for all %d agents to run exactly once", h.cfg.Wait, len(h.dids))
	lastLog := time.Time{}
	var t tallyResult
	for {
		per, errs := h.custody(ctx)
		t = tally(h.dids, per)
		if t.ok() {
			now := time.Now()
			a, b := now.Sub(first).Seconds(), now.Sub(last).Seconds()
			h.rep.AllRunningS, h.rep.AllRunningAfterPub = &a, &b
			h.logf("all %d agents run exactly once: %.1fs after the first publish, %.1fs after the last", len(h.dids), a, b)
			return nil
		}
		if time.Since(lastLog) >= 5*time.Second {
			h.logf("running: %s", t)
			for i, err := range errs {
				if err != nil {
					h.logf("  %s custody: %v", h.nodes[i].name(), err)
				}
			}
			lastLog = time.Now()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not every agent runs exactly once %v after the last publish: %s; e.g. %s", h.cfg.Wait, t, strings.Join(t.Examples, ", "))
		}
		if err := sleep(ctx, 2*time.Second); err != nil {
			return err
		}
	}
}

// procSample is a daemon's CPU ticks and RSS at one instant.
type procSample struct {
	Ticks  uint64
	RSSKiB uint64
}

func readProc(pid int) (procSample, error) {
	var s procSample
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	if s.Ticks, err = parseStat(stat); err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	if s.RSSKiB, err = parseVmRSS(status); err != nil {
		return s, fmt.Errorf("pid %d: %w", pid, err)
	}
	return s, nil
}

// readPSS reads a daemon's PSS. Unreadable (Linux before 4.14, or no ptrace
// access to the daemon) is unknown, not a failure: known false, err nil,
// why says so. Read but malformed is err, for the report. Only the window's
// end reads it: the kernel walks every page table of the daemon for it.
func readPSS(pid int) (kib uint64, known bool, why string, err error) {
	data, rerr := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if rerr != nil {
		return 0, false, rerr.Error(), nil
	}
	if kib, err = parseSmapsRollupPss(data); err != nil {
		return 0, false, "", fmt.Errorf("pid %d: %w", pid, err)
	}
	return kib, true, "", nil
}

func machineBusy() (busy, total uint64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	b, t, _ := parseCPUStat(data)
	return b, t
}

func selfTicks() uint64 {
	data, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	t, _ := parseStat(data)
	return t
}

// sampleTicks asks node i mod N for the tick of each sampled agent.
func (h *harness) sampleTicks(ctx context.Context, dids []string) ([]uint64, []time.Time, []error) {
	ticks := make([]uint64, len(dids))
	at := make([]time.Time, len(dids))
	errs := make([]error, len(dids))
	var wg sync.WaitGroup
	for i, did := range dids {
		wg.Go(func() {
			n := h.nodes[i%len(h.nodes)]
			data, err := h.get(ctx, n.API, "/v1/agents/"+did, 20*time.Second)
			at[i] = time.Now()
			if err != nil {
				errs[i] = err
				return
			}
			var st struct {
				DID  string `json:"did"`
				Tick uint64 `json:"tick"`
			}
			if err := json.Unmarshal(data, &st); err != nil || st.DID != did {
				errs[i] = fmt.Errorf("agent status is not about %s: %.200q", did, data)
				return
			}
			ticks[i] = st.Tick
		})
	}
	wg.Wait()
	return ticks, at, errs
}

// measure is the window: CPU, RSS and PSS of every daemon, the machine's and the
// harness's own CPU, the ticks of a few agents, then the custody census.
func (h *harness) measure(ctx context.Context) error {
	c := h.cfg
	k := min(5, len(h.dids))
	sample := slices.Clone(h.dids)
	rand.Shuffle(len(sample), func(i, j int) { sample[i], sample[j] = sample[j], sample[i] })
	sample = sample[:k]
	tick0, at0, errs0 := h.sampleTicks(ctx, sample)

	start := make([]procSample, len(h.nodes))
	for i, n := range h.nodes {
		s, err := readProc(n.PID)
		if err != nil {
			return fmt.Errorf("%s is not running at the window's start: %v", n.name(), err)
		}
		start[i] = s
	}
	mb0, mt0 := machineBusy()
	self0 := selfTicks()
	w0 := time.Now()
	h.logf("measuring for %v", c.Window)
	if err := sleep(ctx, c.Window); err != nil {
		return err
	}
	end := make([]procSample, len(h.nodes))
	type pssRead struct {
		kib   uint64
		known bool
		err   error
	}
	pss := make([]pssRead, len(h.nodes))
	var dead []string
	for i, n := range h.nodes {
		s, err := readProc(n.PID)
		if err != nil || !alive(n.PID) {
			dead = append(dead, fmt.Sprintf("%s (pid %d)", n.name(), n.PID))
		}
		end[i] = s
		p := &pss[i]
		var why string
		if p.kib, p.known, why, p.err = readPSS(n.PID); why != "" {
			h.logf("%s: PSS unknown, smaps_rollup unreadable: %s", n.name(), why)
		}
	}
	wall := time.Since(w0)
	mb1, mt1 := machineBusy()
	self1 := selfTicks()
	h.rep.WindowWallS = wall.Seconds()
	if len(dead) > 0 {
		return fmt.Errorf("daemons died during the window: %s (see their daemon.log)", strings.Join(dead, ", "))
	}
	if mt1 > mt0 {
		h.rep.MachineBusyPct = float64(mb1-mb0) / float64(mt1-mt0) * 100
	}
	hz := h.rep.Machine.ClkTck
	h.rep.HarnessCPUPct = float64(self1-self0) / float64(hz) / wall.Seconds() * 100

	tick1, at1, errs1 := h.sampleTicks(ctx, sample)
	for i, did := range sample {
		s := tickSample{DID: did, Node: h.nodes[i%len(h.nodes)].name(), Start: tick0[i], End: tick1[i]}
		if err := errors.Join(errs0[i], errs1[i]); err != nil {
			s.Error = err.Error()
		} else {
			s.Delta = int64(tick1[i]) - int64(tick0[i])
			s.Secs = at1[i].Sub(at0[i]).Seconds()
			if s.Secs > 0 {
				s.RateHz = float64(s.Delta) / s.Secs
			}
		}
		h.rep.Ticks = append(h.rep.Ticks, s)
	}
	h.rep.TicksOK, h.rep.MeanTickHz = tickVerdict(h.rep.Ticks)
	if !h.rep.TicksOK {
		h.fail("the ticks of the sampled agents did not all advance over the window (see the tick samples)")
	}

	// The census comes after the CPU snapshot: serving it costs the
	// daemons CPU. A look across the nodes is not atomic (an agent moving
	// between two reads may show on 0 or 2 nodes), so a mismatch is looked
	// at again a few times before it counts.
	per, errs := h.custody(ctx)
	t := tally(h.dids, per)
	for try := 0; !t.ok() && try < 5 && ctx.Err() == nil; try++ {
		if try == 0 {
			ft := t
			h.rep.FirstEndTally = &ft
			h.logf("at the window's end: %s; looking again", t)
		}
		_ = sleep(ctx, 2*time.Second)
		per, errs = h.custody(ctx)
		t = tally(h.dids, per)
	}
	h.rep.EndTally = &t
	if !t.ok() {
		h.fail("at the window's end not every agent runs exactly once: %s; e.g. %s", t, strings.Join(t.Examples, ", "))
	}
	ms := make([]nodeMeasure, len(h.nodes))
	for i, n := range h.nodes {
		ms[i] = nodeMeasure{Name: n.name(), PID: n.PID, CPUTicks: end[i].Ticks - start[i].Ticks, RSSKiB: end[i].RSSKiB,
			PSSKiB: pss[i].kib, PSSKnown: pss[i].known, Memberships: -1, Running: -1}
		if pss[i].err != nil {
			ms[i].PSSError = pss[i].err.Error()
		}
		if errs[i] != nil {
			h.logf("%s custody: %v", n.name(), errs[i])
			continue
		}
		ms[i].Memberships, ms[i].Running = 0, 0
		for _, s := range per[i] {
			ms[i].Memberships++
			if s.Running {
				ms[i].Running++
			}
		}
	}
	rows, tot, err := computeTotals(ms, hz, wall, len(h.dids))
	if err != nil {
		return err
	}
	pg := partnerGraph(h.nodes, per)
	for i := range h.nodes {
		tot.PartnersMean += float64(len(pg[i])) / float64(len(h.nodes))
		tot.PartnersMax = max(tot.PartnersMax, len(pg[i]))
	}
	h.rep.Nodes, h.rep.Totals = rows, &tot
	return nil
}

// alive reports whether pid runs (not a zombie).
var alive = daemonapi.Alive

// printReport writes what the run measured to stdout.
func (h *harness) printReport() {
	c, r := h.cfg, &h.rep
	h.rep.OK = !h.failed
	var b strings.Builder
	fmt.Fprintf(&b, "\nigor-scale: %d nodes, %d %s agents, tick %v, slots %d, settle %v, window %v\n",
		c.Nodes, c.Agents, strings.TrimSuffix(filepath.Base(c.Wasm), ".wasm"), c.Tick, c.Slots, c.Settle, c.Window)
	m := r.Machine
	fmt.Fprintf(&b, "machine: nproc %d, %s, %s, CLK_TCK %d, %s\n", m.NProc, m.Model, m.GoOS, m.ClkTck, m.Date)
	p := r.Publish
	if p.Requested > 0 {
		fmt.Fprintf(&b, "publish: %d/%d in %.1fs = %.2f agents/s (%d workers; %d failed attempts, %d agents failed)\n",
			p.Published, p.Requested, p.Seconds, p.RatePerSec, p.Parallel, p.FailedAttempts, p.FailedAgents)
	}
	if r.AllRunningS != nil {
		fmt.Fprintf(&b, "all running: %.1fs after the first publish (%.1fs after the last)\n", *r.AllRunningS, *r.AllRunningAfterPub)
	}
	if r.Totals != nil {
		fmt.Fprintf(&b, "window: %.1fs of wall time\n\n", r.WindowWallS)
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "node\tpid\tcpu % (1 core)\tcpu s\tRSS MiB\tPSS MiB\tmemberships\trunning\t")
		for _, n := range r.Nodes {
			fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.2f\t%.1f\t%s\t%s\t%s\t\n", n.Node, n.PID, n.CPUPct, n.CPUSec, n.RSSMiB, mib(n.PSSMiB, n.PSSKnown), count(n.Memberships), count(n.Running))
		}
		t := r.Totals
		fmt.Fprintf(tw, "total\t\t%.1f\t%.2f\t%.1f\t%s\t%d\t%d\t\n", t.CPUPct, t.CPUms/1000, t.RSSMiB, mib(t.PSSMiB, t.PSSKnown), t.Memberships, t.Running)
		tw.Flush()
		fmt.Fprintf(&b, "\ntotal CPU:                 %.1f%% of one core (machine busy %.1f%% of %d cores; this harness %.2f%% of one core)\n",
			t.CPUPct, r.MachineBusyPct, m.NProc, r.HarnessCPUPct)
		fmt.Fprintf(&b, "CPU ms per agent-second:   %.3f (%.0f ms / (%d agents × %.1f s))\n", t.CPUmsPerAgentSecond, t.CPUms, len(h.dids), r.WindowWallS)
		fmt.Fprintf(&b, "MiB RSS per membership:    %.3f (%.1f MiB / %d memberships)\n", t.RSSMiBPerMembership, t.RSSMiB, t.Memberships)
		if t.PSSKnown {
			fmt.Fprintf(&b, "MiB PSS per membership:    %.3f (%.1f MiB / %d memberships; PSS counts a page shared by several mappings once — the agents' shared WASM data image)\n",
				t.PSSMiBPerMembership, t.PSSMiB, t.Memberships)
		} else {
			b.WriteString("MiB PSS per membership:    unknown (a daemon's /proc/PID/smaps_rollup was unreadable, see stderr, or malformed, see below)\n")
		}
		for _, n := range r.Nodes {
			if n.PSSError != "" {
				fmt.Fprintf(&b, "WARNING: %s PSS unknown: %s\n", n.Node, n.PSSError)
			}
		}
		fmt.Fprintf(&b, "group partners per node:   mean %.1f, max %d (of %d other nodes)\n", t.PartnersMean, t.PartnersMax, len(r.Nodes)-1)
		if p.Requested > 0 {
			fmt.Fprintf(&b, "publish rate:              %.2f agents/s (%.2f once the module was on every node, after %.1fs)\n", p.RatePerSec, p.BulkRatePerSec, p.WarmSeconds)
		}
		if r.AllRunningS != nil {
			fmt.Fprintf(&b, "time to all-running:       %.1fs\n", *r.AllRunningS)
		}
	}
	if len(r.Ticks) > 0 {
		fmt.Fprintf(&b, "ticks over the window (%d sampled agents, expect ≈ %.0f each):", len(r.Ticks), r.WindowWallS/c.Tick.Seconds())
		for _, s := range r.Ticks {
			if s.Error != "" {
				fmt.Fprintf(&b, " …%s ERROR(%s)", tail(s.DID, 6), clip(s.Error, 60))
				continue
			}
			fmt.Fprintf(&b, " +%d", s.Delta)
		}
		fmt.Fprintf(&b, "; mean %.2f ticks/s\n", r.MeanTickHz)
		if want := 1 / c.Tick.Seconds(); r.TicksOK && r.MeanTickHz < 0.9*want {
			fmt.Fprintf(&b, "WARNING: agents tick at %.2f/s, below the %.2f/s the tick interval asks for: the machine is overloaded\n", r.MeanTickHz, want)
		}
	}
	if r.EndTally != nil {
		fmt.Fprintf(&b, "exactly once at the window's end: %s", r.EndTally)
		if r.FirstEndTally != nil {
			fmt.Fprintf(&b, " (first look: %s)", r.FirstEndTally)
		}
		b.WriteString("\n")
	}
	if r.Failover != nil {
		writeFailover(&b, r.Failover)
	}
	if r.OK {
		b.WriteString("SCALE OK\n")
	} else {
		fmt.Fprintf(&b, "SCALE FAIL: %s\n", strings.Join(r.Errors, "; "))
	}
	io.WriteString(h.out, b.String())
}

func count(n int) string {
	if n < 0 {
		return "?"
	}
	return strconv.Itoa(n)
}

// mib is a MiB column that may be unknown.
func mib(v float64, known bool) string {
	if !known {
		return "-"
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

func tail(s string, n int) string { return s[max(0, len(s)-n):] }

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

// writeJSON writes the report atomically.
func (h *harness) writeJSON(path string) error {
	h.rep.OK = !h.failed && len(h.rep.Errors) == 0
	data, err := json.MarshalIndent(&h.rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path+".tmp", append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}
