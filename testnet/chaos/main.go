// Command igor-chaos is the chaos harness of the local testnet. It starts N
// real daemons with testnet/up.sh, publishes A counter agents, then kills
// (SIGKILL) and restarts one node at a time on a seeded schedule while it
// watches every agent through the HTTP API of random live nodes. At the end
// it checks, per agent, that it is still ticking, that its lineage verifies,
// that every head it saw is on the final lineage (no fork) and that no seq
// it saw was lost, and exits 1 if any of that fails.
//
// It reads the API's JSON wire format with its own small types instead of
// importing package node: the harness checks what the daemons say, and it
// stays buildable while node changes.
//
// Usage: see usageText, or testnet/chaos.sh --help.
package main

import (
	"bufio"
	"bytes"
	"cmp"
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
	"text/tabwriter"
	"time"

	"github.com/igor-mesh/igor-node/testnet/internal/daemonapi"
)

const usageText = `usage: testnet/chaos.sh [DIR] [--minutes M | --seconds S] [--nodes N] [--agents A] [--seed S] [--partitions F]

Starts N daemons (testnet/up.sh N DIR), publishes A counter agents, and for the
given time kills one random node with SIGKILL every 4-10 s, restarting it 2-8 s
later with the same home (one node down at a time; the schedule is fixed by
--seed). With --partitions F, that fraction of the steps instead cuts one node
off from all others for 10-20 s (both directions, through the daemons' debug
connection gate, POST /v1/debug/partition; the daemons run with
IGOR_DEBUG_PARTITION=1). Then, after 10 s with every node up, it checks each agent:
alive (its tick still advances), verify (GET /v1/agents/DID/verify valid, no
forks), forks (every head seen is on GET /v1/agents/DID/lineage), lost (no seq
seen above the final head) and the largest wall-clock gap between tick
increases seen by the observer (MAX GAP; it includes the observer's own delays,
e.g. queries timing out while a node is down). CP GAP is the largest gap between
consecutive checkpoints of the lineage, when its entries carry time_unix_ns.
It prints a table, writes DIR/chaos-report.json and DIR/chaos.log, stops the
testnet (testnet/down.sh DIR) and exits 0 only if every agent passed.

  DIR            run directory (default testnet/chaos-run); an earlier chaos run
                 there is cleared first, any other content is refused
  --minutes M    chaos duration in minutes (default 2)
  --seconds S    chaos duration in seconds (instead of --minutes)
  --nodes N      daemons (default 5, at least 2)
  --agents A     counter agents (default 3)
  --seed S       schedule seed (default: from the clock; printed)
  --partitions F fraction of steps that partition a node instead of killing it
                 (0 to 1, default 0)
  --bin PATH     igor-node binary (default bin/igor-node)
  --agent PATH   agent module, manifest beside it (default bin/agents/counter.wasm)
  --budget B     budget per agent in currency units (default 1000)
  --poll D       observation interval per agent (default 300ms)
  --testnet DIR  where up.sh and down.sh are (default testnet)
Environment: SLOTS and TICK as for testnet/up.sh (default 4 and 200ms).
Exit status: 0 all agents passed, 1 a check failed or the run broke, 2 bad usage.
`

var (
	// errUsage marks command-line errors (exit 2).
	errUsage = errors.New("usage")
	// errNodeLost: a killed or crashed node did not come back. The chaos
	// stops there, and the final checks still run (the run fails).
	errNodeLost = errors.New("node did not restart")
)

type config struct {
	Dir      string
	Duration time.Duration
	Nodes    int
	Agents   int
	Seed     uint64
	Bin      string
	Wasm     string
	Testnet  string // directory holding up.sh and down.sh
	Budget   string
	Poll     time.Duration
	Slots    string
	Tick     string
	Calm     time.Duration // all nodes up before the final checks
	AliveFor time.Duration // how long the final check waits for a tick to advance
	// Partitions is the fraction of chaos steps that cut a node off from
	// the others (through the daemons' debug gate) instead of killing it.
	Partitions float64
}

// parseArgs reads the command line; DIR may come before or after the flags.
// Errors wrap errUsage, or are flag.ErrHelp for --help.
func parseArgs(args []string, getenv func(string) string) (config, error) {
	cfg := config{
		Dir: "testnet/chaos-run", Nodes: 5, Agents: 3, Bin: "bin/igor-node",
		Wasm: "bin/agents/counter.wasm", Testnet: "testnet", Budget: "1000",
		Poll: 300 * time.Millisecond, Slots: "4", Tick: "200ms",
		Calm: 10 * time.Second, AliveFor: 20 * time.Second,
	}
	fs := flag.NewFlagSet("igor-chaos", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	minutes := fs.Float64("minutes", 2, "")
	seconds := fs.Float64("seconds", 0, "")
	seed := fs.String("seed", "", "")
	fs.IntVar(&cfg.Nodes, "nodes", cfg.Nodes, "")
	fs.IntVar(&cfg.Agents, "agents", cfg.Agents, "")
	fs.StringVar(&cfg.Bin, "bin", cfg.Bin, "")
	fs.StringVar(&cfg.Wasm, "agent", cfg.Wasm, "")
	fs.StringVar(&cfg.Testnet, "testnet", cfg.Testnet, "")
	fs.StringVar(&cfg.Budget, "budget", cfg.Budget, "")
	fs.DurationVar(&cfg.Poll, "poll", cfg.Poll, "")
	fs.Float64Var(&cfg.Partitions, "partitions", 0, "")
	// DIR may sit anywhere among the flags (flag stops at the first non-flag).
	var dir string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return cfg, err
			}
			return cfg, fmt.Errorf("%w: %v", errUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if dir != "" {
			return cfg, fmt.Errorf("%w: unexpected argument %q (one DIR at most)", errUsage, rest[0])
		}
		if rest[0] == "" {
			return cfg, fmt.Errorf("%w: DIR must not be empty", errUsage)
		}
		dir, args = rest[0], rest[1:]
	}
	if dir != "" {
		cfg.Dir = dir
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
	if cfg.Duration < time.Second || cfg.Duration > 24*time.Hour {
		return cfg, fmt.Errorf("%w: the duration must be from 1 s to 24 h, got %v", errUsage, cfg.Duration)
	}
	if cfg.Nodes < 2 || cfg.Nodes > 100 {
		return cfg, fmt.Errorf("%w: --nodes must be from 2 to 100 (a killed node restarts from a live one), got %d", errUsage, cfg.Nodes)
	}
	if cfg.Agents < 1 || cfg.Agents > 1000 {
		return cfg, fmt.Errorf("%w: --agents must be from 1 to 1000, got %d", errUsage, cfg.Agents)
	}
	if cfg.Partitions < 0 || cfg.Partitions > 1 {
		return cfg, fmt.Errorf("%w: --partitions must be a fraction from 0 to 1, got %v", errUsage, cfg.Partitions)
	}
	if cfg.Poll < 10*time.Millisecond {
		return cfg, fmt.Errorf("%w: --poll must be at least 10ms, got %v", errUsage, cfg.Poll)
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
	if v := getenv("SLOTS"); v != "" {
		if n, err := strconv.Atoi(v); err != nil || n < 1 {
			return cfg, fmt.Errorf("%w: SLOTS must be a positive integer, got %q", errUsage, v)
		}
		cfg.Slots = v
	}
	if v := getenv("TICK"); v != "" {
		if d, err := time.ParseDuration(v); err != nil || d < time.Millisecond {
			return cfg, fmt.Errorf("%w: TICK must be a duration of at least 1ms (e.g. 200ms), got %q", errUsage, v)
		}
		cfg.Tick = v
	}
	return cfg, nil
}

// ---------------------------------------------------------------------------
// Observations and their analysis (pure; unit-tested).

// status is the part of GET /v1/agents/{did} (node.AgentStatus) we use.
type status struct {
	DID    string `json:"did"`
	Holder string `json:"holder"`
	Epoch  uint64 `json:"epoch"`
	Seq    uint64 `json:"seq"`
	Tick   uint64 `json:"tick"`
	Head   string `json:"head"`
}

// parseStatus decodes an agent status and checks it is about did.
func parseStatus(data []byte, did string) (status, error) {
	var st status
	if err := json.Unmarshal(data, &st); err != nil {
		return st, fmt.Errorf("agent status is not JSON: %v", err)
	}
	if st.DID != did {
		return st, fmt.Errorf("agent status is about %q, asked for %q", st.DID, did)
	}
	if st.Head == "" {
		return st, errors.New("agent status has no head CID")
	}
	return st, nil
}

// tickEvent is an increase of the highest tick seen, at an offset from t0.
type tickEvent struct {
	At   time.Duration
	Tick uint64
}

// agentObs is everything seen of one agent. Safe for concurrent use.
type agentObs struct {
	Name, DID, Via, FirstHolder string

	mu        sync.Mutex
	heads     map[uint64][]string // seq -> head CIDs seen, in order first seen
	incs      []tickEvent
	maxTick   uint64
	maxSeq    uint64
	epochs    map[uint64]bool
	holders   map[string]bool
	queries   int
	errs      int
	lastErr   string
	firstSeen time.Duration
}

func newAgentObs(name, did string) *agentObs {
	return &agentObs{Name: name, DID: did, heads: map[uint64][]string{}, epochs: map[uint64]bool{}, holders: map[string]bool{}, firstSeen: -1}
}

// record adds one status seen at offset at. Only a tick above every tick
// seen counts as progress: a node answering from an older head record is
// not the agent going backwards.
func (a *agentObs) record(st status, at time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queries++
	if !slices.Contains(a.heads[st.Seq], st.Head) {
		a.heads[st.Seq] = append(a.heads[st.Seq], st.Head)
	}
	if a.firstSeen < 0 {
		a.firstSeen = at
	}
	if st.Tick > a.maxTick {
		a.incs = append(a.incs, tickEvent{at, st.Tick})
		a.maxTick = st.Tick
	}
	a.maxSeq = max(a.maxSeq, st.Seq)
	a.epochs[st.Epoch] = true
	a.holders[st.Holder] = true
}

func (a *agentObs) recordErr(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.queries++
	a.errs++
	a.lastErr = err.Error()
}

func (a *agentObs) tick() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.maxTick
}

// lineageEntry and lineage are GET /v1/agents/{did}/lineage. Time (the
// checkpoint's own time, optional) lets the report tell the agent's real
// stalls from the observer's: a query that times out delays an observed
// tick increase, not the checkpoint.
type lineageEntry struct {
	Seq    uint64 `json:"seq"`
	CID    string `json:"cid"`
	Epoch  uint64 `json:"epoch"`
	Tick   uint64 `json:"tick"`
	Holder string `json:"holder"`
	Time   int64  `json:"time_unix_ns,omitempty"`
}

type lineage struct {
	DID     string         `json:"did"`
	Valid   bool           `json:"valid"`
	Error   string         `json:"error"`
	Entries []lineageEntry `json:"entries"`
}

// verifyReport is the part of GET /v1/agents/{did}/verify (node.VerifyReport) we use.
type verifyReport struct {
	Valid    bool   `json:"valid"`
	Error    string `json:"error"`
	LastSeq  uint64 `json:"last_seq"`
	LastTick uint64 `json:"last_tick"`
	Forks    []struct {
		Prev string `json:"prev"`
		A    string `json:"a"`
		B    string `json:"b"`
	} `json:"forks"`
}

// fork is the proof of a fork: two different checkpoint CIDs for one seq
// (Source "lineage": Seen was a head record, Other is the final lineage's
// checkpoint at that seq; "observed": two head records disagreed; "verify":
// the verify report found two successors of Prev).
type fork struct {
	Seq    uint64 `json:"seq"`
	Seen   string `json:"seen"`
	Other  string `json:"other"`
	Prev   string `json:"prev,omitempty"`
	Source string `json:"source"`
}

// findForks compares the heads seen with the final lineage (nil if it is
// unavailable, then seen heads are only compared with each other). Seqs
// above the lineage's head are lost progress, not forks (see lostSeq).
func findForks(heads map[uint64][]string, lin *lineage) []fork {
	var byseq map[uint64]string
	var top uint64
	if lin != nil {
		byseq = make(map[uint64]string, len(lin.Entries))
		for _, e := range lin.Entries {
			byseq[e.Seq] = e.CID
			top = max(top, e.Seq)
		}
	}
	seqs := make([]uint64, 0, len(heads))
	for s := range heads {
		seqs = append(seqs, s)
	}
	slices.Sort(seqs)
	var out []fork
	for _, s := range seqs {
		cids := heads[s]
		if lin == nil || s > top {
			for _, c := range cids[1:] {
				out = append(out, fork{Seq: s, Seen: c, Other: cids[0], Source: "observed"})
			}
			continue
		}
		want, ok := byseq[s]
		if !ok {
			want = "(no checkpoint at this seq in the lineage)"
		}
		for _, c := range cids {
			if c != want {
				out = append(out, fork{Seq: s, Seen: c, Other: want, Source: "lineage"})
			}
		}
	}
	return out
}

// lostSeq returns the highest seq seen and whether it is above the final
// head's seq: a head record announced progress that the agent no longer has.
func lostSeq(heads map[uint64][]string, finalSeq uint64) (maxSeen uint64, lost bool) {
	for s := range heads {
		maxSeen = max(maxSeen, s)
	}
	return maxSeen, len(heads) > 0 && maxSeen > finalSeq
}

// maxGap is the longest wall-clock time between consecutive tick increases,
// counting the open interval from the last increase to end (a dead agent's
// gap keeps growing). It returns the gap and when it began; with no
// increase at all the whole span from..end is the gap.
func maxGap(incs []tickEvent, from, end time.Duration) (gap, at time.Duration) {
	if len(incs) == 0 {
		return max(end-from, 0), from
	}
	for i := 1; i < len(incs); i++ {
		if d := incs[i].At - incs[i-1].At; d > gap {
			gap, at = d, incs[i-1].At
		}
	}
	if d := end - incs[len(incs)-1].At; d > gap {
		gap, at = d, incs[len(incs)-1].At
	}
	return gap, at
}

// checkpointGap is the longest time between consecutive checkpoints of the
// lineage that ends at or after from (offsets from t0); ok is false when
// the entries carry no times.
func checkpointGap(entries []lineageEntry, t0 time.Time, from time.Duration) (gap, at time.Duration, ok bool) {
	for i := 1; i < len(entries); i++ {
		a, b := entries[i-1].Time, entries[i].Time
		if a == 0 || b == 0 {
			continue
		}
		ok = true
		end := time.Unix(0, b).Sub(t0)
		if end < from {
			continue
		}
		if d := time.Duration(b - a); d > gap {
			gap, at = d, time.Unix(0, a).Sub(t0)
		}
	}
	return gap, at, ok
}

// agentResult is one agent's line of the report.
type agentResult struct {
	Name        string   `json:"name"`
	DID         string   `json:"did"`
	Via         string   `json:"published_via"`
	FirstHolder string   `json:"first_holder"`
	Alive       bool     `json:"alive"`
	Forks       []fork   `json:"forks"`
	VerifyOK    bool     `json:"verify_ok"`
	Verify      string   `json:"verify"`
	LineageOK   bool     `json:"lineage_ok"`
	Lineage     string   `json:"lineage"`
	LineageLen  int      `json:"lineage_entries"`
	FinalSeq    *uint64  `json:"final_seq"`
	MaxSeenSeq  uint64   `json:"max_seen_seq"`
	Lost        bool     `json:"lost"`
	MaxGapS     float64  `json:"max_gap_s"`
	MaxGapAtS   float64  `json:"max_gap_at_s"`
	CPGapS      *float64 `json:"checkpoint_gap_s"` // from the lineage's times; null without them
	CPGapAtS    float64  `json:"checkpoint_gap_at_s"`
	FinalTick   uint64   `json:"final_tick"`
	Epochs      []uint64 `json:"epochs"`
	Holders     []string `json:"holders"`
	Queries     int      `json:"queries"`
	QueryErrors int      `json:"query_errors"`
	LastError   string   `json:"last_query_error,omitempty"`
}

// problem is one reason an agent failed: Kind groups agents in the
// summary line, Detail is the evidence.
type problem struct{ Kind, Detail string }

// problems lists why the agent failed; empty means it passed.
func (r agentResult) problems() []problem {
	var p []problem
	if !r.Alive {
		p = append(p, problem{"not alive", "not alive: its tick did not advance after the calm period"})
	}
	if len(r.Forks) > 0 {
		f, at := r.Forks[0], ""
		if f.Source == "verify" {
			at = "after " + f.Prev
		} else {
			at = fmt.Sprintf("at seq %d", f.Seq)
		}
		p = append(p, problem{"forked", fmt.Sprintf("%d fork(s), first %s: %s vs %s (%s)", len(r.Forks), at, f.Seen, f.Other, f.Source)})
	}
	if !r.VerifyOK {
		p = append(p, problem{"verify", "verify: " + r.Verify})
	}
	if !r.LineageOK {
		p = append(p, problem{"lineage", "lineage: " + r.Lineage})
	}
	switch {
	case r.FinalSeq == nil:
		p = append(p, problem{"lost?", "lost progress unknown (no final head)"})
	case r.Lost:
		p = append(p, problem{"lost", fmt.Sprintf("lost committed progress: seq %d was seen, final head is seq %d", r.MaxSeenSeq, *r.FinalSeq)})
	}
	return p
}

// decide is the verdict: ok only if every agent passed and the run itself
// had no failure (a node that crashed on its own or did not restart). The
// summary groups failed agents by kind of problem; details has one line per
// failed agent with the evidence.
func decide(rs []agentResult, runFailures []string) (ok bool, summary string, details []string) {
	var kinds []string
	byKind := map[string][]string{}
	failed := 0
	for _, r := range rs {
		ps := r.problems()
		if len(ps) == 0 {
			continue
		}
		failed++
		var ds []string
		for _, p := range ps {
			if byKind[p.Kind] == nil {
				kinds = append(kinds, p.Kind)
			}
			byKind[p.Kind] = append(byKind[p.Kind], r.Name)
			ds = append(ds, p.Detail)
		}
		details = append(details, r.Name+": "+strings.Join(ds, "; "))
	}
	if failed == 0 && len(runFailures) == 0 {
		return true, fmt.Sprintf("CHAOS OK: all %d agents alive, unforked, verified, nothing lost", len(rs)), nil
	}
	summary = fmt.Sprintf("CHAOS FAIL: %d of %d agents failed", failed, len(rs))
	var groups []string
	for _, k := range kinds {
		groups = append(groups, k+" "+strings.Join(byKind[k], ","))
	}
	if len(groups) > 0 {
		summary += " (" + strings.Join(groups, "; ") + ")"
	}
	if len(runFailures) > 0 {
		summary += "; run: " + strings.Join(runFailures, "; ")
	}
	return false, summary, details
}

// analyze turns what was seen plus the final lineage and verify report
// (nil when unavailable; why in linErr/verErr) into a result.
func analyze(a *agentObs, alive bool, lin *lineage, linErr string, ver *verifyReport, verErr string, t0 time.Time, from, end time.Duration, name func(string) string) agentResult {
	a.mu.Lock()
	defer a.mu.Unlock()
	r := agentResult{Name: a.Name, DID: a.DID, Via: a.Via, FirstHolder: name(a.FirstHolder), Alive: alive,
		Queries: a.queries, QueryErrors: a.errs, LastError: a.lastErr, FinalTick: a.maxTick}
	gap, at := maxGap(a.incs, max(from, a.firstSeen), end)
	r.MaxGapS, r.MaxGapAtS = round1(gap.Seconds()), round1(at.Seconds())
	for e := range a.epochs {
		r.Epochs = append(r.Epochs, e)
	}
	slices.Sort(r.Epochs)
	for h := range a.holders {
		r.Holders = append(r.Holders, name(h))
	}
	slices.Sort(r.Holders)

	switch {
	case ver == nil:
		r.Verify = verErr
	case !ver.Valid:
		r.Verify = "invalid: " + ver.Error
	case len(ver.Forks) > 0:
		r.Verify = fmt.Sprintf("%d fork(s)", len(ver.Forks))
	default:
		r.Verify, r.VerifyOK = "ok", true
	}
	if ver != nil {
		for _, f := range ver.Forks {
			r.Forks = append(r.Forks, fork{Seen: f.A, Other: f.B, Prev: f.Prev, Source: "verify"})
		}
	}
	var cmp *lineage
	switch {
	case lin == nil:
		r.Lineage = linErr
	case !lin.Valid:
		r.Lineage = "invalid: " + lin.Error
	case len(lin.Entries) == 0:
		r.Lineage = "no entries"
	default:
		r.Lineage, r.LineageOK = "ok", true
	}
	if lin != nil && len(lin.Entries) > 0 {
		cmp = lin
		r.LineageLen = len(lin.Entries)
		last := lin.Entries[len(lin.Entries)-1]
		fs := last.Seq
		r.FinalSeq = &fs
		r.FinalTick = max(r.FinalTick, last.Tick)
		if g, at, ok := checkpointGap(lin.Entries, t0, from); ok {
			gs := round1(g.Seconds())
			r.CPGapS, r.CPGapAtS = &gs, round1(at.Seconds())
		}
	} else if ver != nil && ver.Valid {
		fs := ver.LastSeq
		r.FinalSeq = &fs
		r.FinalTick = max(r.FinalTick, ver.LastTick)
	}
	r.Forks = append(findForks(a.heads, cmp), r.Forks...)
	if r.FinalSeq != nil {
		r.MaxSeenSeq, r.Lost = lostSeq(a.heads, *r.FinalSeq)
	} else {
		r.MaxSeenSeq, _ = lostSeq(a.heads, 0)
	}
	if r.Forks == nil {
		r.Forks = []fork{}
	}
	return r
}

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// ---------------------------------------------------------------------------
// The run.

func main() { os.Exit(run(os.Args[1:], os.Stdout, os.Stderr)) }

func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseArgs(args, os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usageText)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "igor-chaos: %v\n(run with --help for usage)\n", err)
		return 2
	}
	if err := prepare(&cfg); err != nil {
		fmt.Fprintf(stderr, "igor-chaos: %v\n", err)
		return 1
	}
	logf, err := os.OpenFile(filepath.Join(cfg.Dir, "chaos.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		fmt.Fprintf(stderr, "igor-chaos: %v\n", err)
		return 1
	}
	defer logf.Close()
	ctx, stopSignals := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stopSignals()
	// Never hang: the whole run, start-up and final checks included, ends
	// by this deadline.
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration+3*time.Minute)
	defer cancel()

	h := newHarness(cfg, &eventLog{out: stdout, file: logf, t0: time.Now()})
	code := h.run(ctx)
	h.teardown()
	return code
}

// prepare checks the inputs and makes cfg's paths absolute. It reuses DIR
// only if it is empty or holds a finished chaos run.
func prepare(cfg *config) error {
	abs := func(p *string) {
		if a, err := filepath.Abs(*p); err == nil {
			*p = a
		}
	}
	for _, p := range []*string{&cfg.Dir, &cfg.Bin, &cfg.Wasm, &cfg.Testnet} {
		abs(p)
	}
	if fi, err := os.Stat(cfg.Bin); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("missing %s: run 'make build' (or testnet/chaos.sh, which builds it)", cfg.Bin)
	}
	if _, err := os.Stat(cfg.Wasm); err != nil {
		return fmt.Errorf("missing agent module %s: run 'make agents'", cfg.Wasm)
	}
	if man := strings.TrimSuffix(cfg.Wasm, ".wasm") + ".manifest.json"; !fileExists(man) {
		return fmt.Errorf("missing manifest %s beside the agent module: run 'make agents'", man)
	}
	for _, s := range []string{"up.sh", "down.sh"} {
		if !fileExists(filepath.Join(cfg.Testnet, s)) {
			return fmt.Errorf("missing %s: run from the repository root or pass --testnet DIR", filepath.Join(cfg.Testnet, s))
		}
	}
	if fileExists(filepath.Join(cfg.Dir, "nodes.json")) {
		return fmt.Errorf("%s already holds a testnet: stop it with testnet/down.sh %s", cfg.Dir, cfg.Dir)
	}
	entries, err := os.ReadDir(cfg.Dir)
	if errors.Is(err, os.ErrNotExist) {
		return os.MkdirAll(cfg.Dir, 0o755)
	}
	if err != nil {
		return err
	}
	if len(entries) > 0 && !fileExists(filepath.Join(cfg.Dir, "chaos.log")) {
		return fmt.Errorf("%s is not empty and holds no earlier chaos run (no chaos.log): pick another DIR", cfg.Dir)
	}
	// An earlier run: its homes would bring their agents back, so start clean.
	for _, e := range entries {
		n := e.Name()
		if isNodeDir(n) || n == "chaos.log" || n == "chaos-report.json" {
			if err := os.RemoveAll(filepath.Join(cfg.Dir, n)); err != nil {
				return fmt.Errorf("clearing the earlier run in %s: %w", cfg.Dir, err)
			}
		}
	}
	return nil
}

func isNodeDir(n string) bool {
	_, err := strconv.Atoi(strings.TrimPrefix(n, "n"))
	return strings.HasPrefix(n, "n") && err == nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// eventLog writes timestamped lines to stdout and DIR/chaos.log.
type eventLog struct {
	mu   sync.Mutex
	out  io.Writer
	file io.Writer
	t0   time.Time
}

func (l *eventLog) since() time.Duration { return time.Since(l.t0) }

func (l *eventLog) Printf(format string, a ...any) {
	now := time.Now()
	line := fmt.Sprintf("%s t+%6.1fs %s\n", now.Format("15:04:05.000"), now.Sub(l.t0).Seconds(), fmt.Sprintf(format, a...))
	l.mu.Lock()
	defer l.mu.Unlock()
	io.WriteString(l.out, line)
	io.WriteString(l.file, line)
}

// nodeProc is one daemon. up is false from just before a kill until its
// restart has written a fresh api.addr; observers only use nodes that are up.
type nodeProc struct {
	Index int    `json:"index"`
	Peer  string `json:"peer"`
	API   string `json:"api"`
	Home  string `json:"home"`
	PID   int    `json:"pid"`

	up     bool
	exited chan struct{} // closed when a daemon this program started is reaped; nil for up.sh's
}

type event struct {
	AtS    float64 `json:"t_s"`
	Node   string  `json:"node"`
	Action string  `json:"action"`
	Detail string  `json:"detail,omitempty"`
}

type harness struct {
	cfg  config
	log  *eventLog
	http *http.Client

	mu       sync.Mutex // guards nodes' mutable fields, events, failures
	nodes    []*nodeProc
	events   []event
	failures []string
	kills    int
	parts    int // partitions

	agents     []*agentObs
	chaosStart time.Duration
	finalMu    sync.Mutex
	finalRng   *rand.Rand // which node answers verify and lineage; guarded by finalMu
}

func newHarness(cfg config, log *eventLog) *harness {
	return &harness{cfg: cfg, log: log, http: &http.Client{Timeout: 2 * time.Second},
		finalRng: rand.New(rand.NewPCG(cfg.Seed, 7))}
}

func (h *harness) note(n *nodeProc, action, format string, a ...any) {
	d := fmt.Sprintf(format, a...)
	h.log.Printf("%-8s n%d %s", action, n.Index, d)
	h.mu.Lock()
	h.events = append(h.events, event{round1(h.log.since().Seconds()), fmt.Sprintf("n%d", n.Index), action, d})
	h.mu.Unlock()
}

func (h *harness) fail(format string, a ...any) {
	msg := fmt.Sprintf(format, a...)
	h.log.Printf("FAILURE  %s", msg)
	h.mu.Lock()
	h.failures = append(h.failures, msg)
	h.mu.Unlock()
}

// run is the whole experiment; it returns the exit code.
func (h *harness) run(ctx context.Context) int {
	c := h.cfg
	h.log.Printf("chaos: %d nodes, %d agents, %v, seed %d, tick %s, slots %s, dir %s", c.Nodes, c.Agents, c.Duration, c.Seed, c.Tick, c.Slots, c.Dir)
	if err := h.up(ctx); err != nil {
		return h.abort(ctx, "start the testnet", err)
	}
	if err := h.publish(ctx); err != nil {
		return h.abort(ctx, "publish", err)
	}
	obsCtx, stopObs := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for i, a := range h.agents {
		rng := rand.New(rand.NewPCG(c.Seed, uint64(i)+1000))
		wg.Go(func() { h.observe(obsCtx, a, rng) })
	}
	defer func() { stopObs(); wg.Wait() }()

	// Chaos starts once every agent has shown progress, so that a kill is
	// never confused with a slow first placement.
	h.log.Printf("waiting for every agent's first tick")
	if err := h.pollUntil(ctx, 60*time.Second, func() bool {
		return !slices.ContainsFunc(h.agents, func(a *agentObs) bool { return a.tick() == 0 })
	}); err != nil && ctx.Err() == nil {
		h.log.Printf("warning: not every agent ticked within 60 s; starting chaos anyway")
	}
	if ctx.Err() != nil {
		return h.abort(ctx, "wait for first ticks", ctx.Err())
	}

	h.chaosStart = h.log.since()
	h.log.Printf("chaos begins (%v)", c.Duration)
	stopStatus := h.statusLines(ctx)
	err := h.chaos(ctx, time.Now().Add(c.Duration))
	stopStatus()
	if errors.Is(err, errNodeLost) {
		h.log.Printf("chaos stopped early: %v", err)
	} else if err != nil {
		return h.abort(ctx, "chaos", err)
	}
	chaosEnd := h.log.since()
	h.log.Printf("chaos over (%d kills, %d partitions); calm for %v", h.kills, h.parts, c.Calm)
	if err := h.pause(ctx, c.Calm); errors.Is(err, errNodeLost) {
		h.log.Printf("calm period: %v", err)
	} else if err != nil {
		return h.abort(ctx, "calm period", err)
	}

	// Alive: the tick advances after the calm period, with no node down.
	base := make([]uint64, len(h.agents))
	for i, a := range h.agents {
		base[i] = a.tick()
	}
	alive := make([]bool, len(h.agents))
	_ = h.pollUntil(ctx, c.AliveFor, func() bool {
		all := true
		for i, a := range h.agents {
			alive[i] = alive[i] || a.tick() > base[i]
			all = all && alive[i]
		}
		return all
	})
	obsEnd := h.log.since()
	stopObs()
	wg.Wait()
	if ctx.Err() != nil && !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return h.abort(ctx, "final checks", ctx.Err())
	}

	h.log.Printf("verifying lineages")
	// Verify and lineage fetch whole DAGs over the mesh: a few agents at a
	// time keeps a 20-agent soak within the global deadline.
	results := make([]agentResult, len(h.agents))
	sem := make(chan struct{}, 4)
	var vwg sync.WaitGroup
	for i, a := range h.agents {
		vwg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			t := time.Now()
			// One node answers both when it can: after verify it holds the DAG.
			apis := h.liveOrder()
			ver, verErr := h.fetchVerify(ctx, a.DID, apis)
			lin, linErr := h.freshLineage(ctx, a, apis)
			results[i] = analyze(a, alive[i], lin, linErr, ver, verErr, h.log.t0, h.chaosStart, obsEnd, h.peerName)
			h.log.Printf("checked  %s in %.1fs", a.Name, time.Since(t).Seconds())
		})
	}
	vwg.Wait()
	h.mu.Lock()
	failures := slices.Clone(h.failures)
	h.mu.Unlock()
	ok, summary, details := decide(results, failures)
	summary += fmt.Sprintf(" [%d kills, %d partitions in %.0fs, seed %d]", h.kills, h.parts, (chaosEnd - h.chaosStart).Seconds(), c.Seed)
	h.printReport(results, details)
	if err := h.writeReport(results, ok, summary, details, chaosEnd); err != nil {
		h.log.Printf("cannot write the report: %v", err)
	}
	h.log.Printf("%s", summary)
	if ok {
		return 0
	}
	return 1
}

// abort ends a run that could not complete; 130 after SIGINT/SIGTERM.
func (h *harness) abort(ctx context.Context, phase string, err error) int {
	switch {
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		h.log.Printf("CHAOS FAIL: global deadline (%v) passed during %s", h.cfg.Duration+3*time.Minute, phase)
	case ctx.Err() != nil:
		h.log.Printf("CHAOS ABORTED: interrupted during %s", phase)
		return 130
	default:
		h.log.Printf("CHAOS FAIL: %s: %v", phase, err)
	}
	return 1
}

// up runs testnet/up.sh and reads nodes.json.
func (h *harness) up(ctx context.Context) error {
	c := h.cfg
	cmd := exec.CommandContext(ctx, filepath.Join(c.Testnet, "up.sh"), strconv.Itoa(c.Nodes), c.Dir)
	cmd.Env = append(cleanEnv(), "BIN="+c.Bin, "SLOTS="+c.Slots, "TICK="+c.Tick, "IGOR_DEBUG_PARTITION="+h.debugGate())
	cmd.WaitDelay = 5 * time.Second
	out, err := cmd.CombinedOutput()
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if l != "" {
			h.log.Printf("up.sh: %s", l)
		}
	}
	if err != nil {
		return fmt.Errorf("testnet/up.sh: %v", err)
	}
	data, err := os.ReadFile(filepath.Join(c.Dir, "nodes.json"))
	if err != nil {
		return err
	}
	var nodes []*nodeProc
	if err := json.Unmarshal(data, &nodes); err != nil || len(nodes) != c.Nodes {
		return fmt.Errorf("nodes.json: want %d nodes: %v", c.Nodes, err)
	}
	for _, n := range nodes {
		n.up = true
	}
	h.nodes = nodes
	return nil
}

// debugGate is the daemons' IGOR_DEBUG_PARTITION: the partition endpoint
// is served only when this run partitions.
func (h *harness) debugGate() string {
	if h.cfg.Partitions > 0 {
		return "1"
	}
	return "0"
}

// cleanEnv keeps IGOR_HOME/IGOR_API of the caller from redirecting commands.
var cleanEnv = daemonapi.CleanEnv

// publish creates the agents, spread over the nodes.
func (h *harness) publish(ctx context.Context) error {
	for i := range h.cfg.Agents {
		n := h.nodes[i%len(h.nodes)]
		pctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		args := []string{"--home", n.Home, "publish", "--json", "--budget", h.cfg.Budget, "--api", n.API}
		if h.cfg.Nodes < 3 { // publish refuses a group below a holder and 2 standbys
			args = append(args, "--min-replicas", strconv.Itoa(h.cfg.Nodes-1))
		}
		cmd := exec.CommandContext(pctx, h.cfg.Bin, append(args, h.cfg.Wasm)...)
		cmd.Env = cleanEnv()
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		cancel()
		if err != nil {
			return fmt.Errorf("agent %d via n%d: %v: %s", i+1, n.Index, err, strings.TrimSpace(stderr.String()))
		}
		var res struct {
			DID    string `json:"did"`
			Holder string `json:"holder"`
		}
		if err := json.Unmarshal(out, &res); err != nil || res.DID == "" {
			return fmt.Errorf("agent %d via n%d: publish printed no DID: %q", i+1, n.Index, out)
		}
		a := newAgentObs(fmt.Sprintf("a%d", i+1), res.DID)
		a.Via, a.FirstHolder = fmt.Sprintf("n%d", n.Index), res.Holder
		h.agents = append(h.agents, a)
		h.log.Printf("publish  %s %s via n%d, holder %s", a.Name, res.DID, n.Index, h.peerName(res.Holder))
	}
	return nil
}

func (h *harness) peerName(peer string) string {
	for _, n := range h.nodes {
		if n.Peer == peer {
			return fmt.Sprintf("n%d", n.Index)
		}
	}
	if len(peer) > 8 {
		return "…" + peer[len(peer)-8:]
	}
	return peer
}

// randomLive returns the API address of a random node that is up.
func (h *harness) randomLive(rng *rand.Rand) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var live []string
	for _, n := range h.nodes {
		if n.up {
			live = append(live, n.API)
		}
	}
	if len(live) == 0 {
		return "", false
	}
	return live[rng.IntN(len(live))], true
}

// liveOrder is the APIs of the live nodes in a random order.
func (h *harness) liveOrder() []string {
	h.mu.Lock()
	var live []string
	for _, n := range h.nodes {
		if n.up {
			live = append(live, n.API)
		}
	}
	h.mu.Unlock()
	h.finalMu.Lock()
	h.finalRng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	h.finalMu.Unlock()
	return live
}

// observe asks a random live node for the agent's status every Poll.
func (h *harness) observe(ctx context.Context, a *agentObs, rng *rand.Rand) {
	t := time.NewTicker(h.cfg.Poll)
	defer t.Stop()
	for {
		if api, ok := h.randomLive(rng); ok {
			data, err := h.get(ctx, api, "/v1/agents/"+a.DID, 0)
			if err == nil {
				var st status
				if st, err = parseStatus(data, a.DID); err == nil {
					a.record(st, h.log.since())
				}
			}
			if err != nil && ctx.Err() == nil {
				a.recordErr(err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// httpError is a non-2xx answer of the API.
type httpError = daemonapi.HTTPError

// get fetches one API path; timeout 0 means the client's 2 s.
func (h *harness) get(ctx context.Context, api, path string, timeout time.Duration) ([]byte, error) {
	if timeout == 0 {
		timeout = h.http.Timeout
	}
	client := *h.http
	client.Timeout = timeout
	return daemonapi.Do(ctx, &client, "GET", "http://"+api+path, nil, timeout, 64<<20)
}

// finalTimeout bounds verify and lineage, which fetch the whole DAG.
const finalTimeout = 30 * time.Second

// fetchVerify asks up to two of apis to verify the agent's lineage.
func (h *harness) fetchVerify(ctx context.Context, did string, apis []string) (*verifyReport, string) {
	why := "no live node"
	for _, api := range apis[:min(2, len(apis))] {
		data, err := h.get(ctx, api, "/v1/agents/"+did+"/verify", finalTimeout)
		if err != nil {
			why = err.Error()
			continue
		}
		var rep verifyReport
		if err := json.Unmarshal(data, &rep); err != nil {
			return nil, "verify report is not JSON: " + err.Error()
		}
		return &rep, ""
	}
	return nil, why
}

// fetchLineage gets the checkpoint chain; a 404 for the endpoint itself
// means the daemon has no /lineage yet.
func (h *harness) fetchLineage(ctx context.Context, did string, apis []string) (*lineage, string) {
	why := "no live node"
	for _, api := range apis[:min(2, len(apis))] {
		data, err := h.get(ctx, api, "/v1/agents/"+did+"/lineage", finalTimeout)
		var he *httpError
		if errors.As(err, &he) && he.Status == http.StatusNotFound && strings.Contains(he.Msg, "no such endpoint") {
			return nil, "unavailable (the daemon has no GET /v1/agents/{did}/lineage)"
		}
		if err != nil {
			why = err.Error()
			continue
		}
		var lin lineage
		if err := json.Unmarshal(data, &lin); err != nil {
			return nil, "lineage is not JSON: " + err.Error()
		}
		if lin.DID != "" && lin.DID != did {
			return nil, fmt.Sprintf("lineage is about %s", lin.DID)
		}
		if !slices.IsSortedFunc(lin.Entries, func(a, b lineageEntry) int { return cmp.Compare(a.Seq, b.Seq) }) {
			return nil, "lineage entries are not in seq order"
		}
		return &lin, ""
	}
	return nil, why
}

// freshLineage fetches the lineage until its head is at least the highest
// seq seen (up to 15 s): a node may resolve an older head record, and
// "lost progress" must mean the mesh no longer has it, not that one node
// answered from a stale record.
func (h *harness) freshLineage(ctx context.Context, a *agentObs, apis []string) (*lineage, string) {
	a.mu.Lock()
	seen, _ := lostSeq(a.heads, 0)
	a.mu.Unlock()
	deadline := time.Now().Add(15 * time.Second)
	for try := 1; ; try++ {
		lin, why := h.fetchLineage(ctx, a.DID, apis)
		if lin == nil || len(lin.Entries) == 0 {
			return lin, why
		}
		top := lin.Entries[len(lin.Entries)-1].Seq
		if top >= seen || time.Now().After(deadline) || ctx.Err() != nil {
			return lin, why
		}
		h.log.Printf("lineage  %s: head seq %d is below seq %d seen earlier; asking again (try %d)", a.Name, top, seen, try)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
		apis = h.liveOrder()
	}
}

// pollUntil checks cond every 100 ms until it holds or d passes.
func (h *harness) pollUntil(ctx context.Context, d time.Duration, cond func() bool) error {
	deadline := time.Now().Add(d)
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
	return nil
}

// pause waits d while watching the nodes that should be up: one that
// exited on its own is a failure of the run, and is restarted.
func (h *harness) pause(ctx context.Context, d time.Duration) error {
	end := time.Now().Add(d)
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if err := h.checkUnexpected(ctx); err != nil {
			return err
		}
		left := time.Until(end)
		if left <= 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func (h *harness) checkUnexpected(ctx context.Context) error {
	for _, n := range h.nodes {
		h.mu.Lock()
		up, pid := n.up, n.PID
		h.mu.Unlock()
		if up && !alive(pid) {
			h.fail("n%d (pid %d) exited on its own: see %s", n.Index, pid, filepath.Join(n.Home, "daemon.log"))
			h.setUp(n, false)
			if err := h.restart(ctx, n); err != nil {
				return err
			}
		}
	}
	return nil
}

func (h *harness) setUp(n *nodeProc, up bool) {
	h.mu.Lock()
	n.up = up
	h.mu.Unlock()
}

// chaos kills and restarts one node at a time until end. The schedule
// (waits, victims, downtimes) comes only from the seed.
func (h *harness) chaos(ctx context.Context, end time.Time) error {
	rng := rand.New(rand.NewPCG(h.cfg.Seed, 0x63686173))
	for step := 1; ; step++ {
		wait := 4*time.Second + time.Duration(rng.IntN(6001))*time.Millisecond
		victim := h.nodes[rng.IntN(len(h.nodes))]
		down := 2*time.Second + time.Duration(rng.IntN(6001))*time.Millisecond
		if time.Now().Add(wait).After(end) {
			return h.pause(ctx, time.Until(end))
		}
		if err := h.pause(ctx, wait); err != nil {
			return err
		}
		if h.cfg.Partitions > 0 && rng.Float64() < h.cfg.Partitions {
			cut := 10*time.Second + time.Duration(rng.IntN(10001))*time.Millisecond
			if err := h.partition(ctx, victim, cut); err != nil {
				return err
			}
			h.parts++
			h.note(victim, "partition", "step %d: cut off from every other node for %.1fs", step, cut.Seconds())
			if err := h.pause(ctx, cut); err != nil {
				return err
			}
			continue
		}
		h.setUp(victim, false)
		if err := h.kill(ctx, victim); err != nil {
			return err
		}
		h.kills++
		h.note(victim, "kill", "step %d: SIGKILL pid %d; down for %.1fs", step, victim.PID, down.Seconds())
		if err := h.pause(ctx, down); err != nil {
			return err
		}
		if err := h.restart(ctx, victim); err != nil {
			return err
		}
	}
}

// partition cuts n off from every other node for d, on both sides of the
// cut (each daemon's gate refuses the other side and drops its
// connections); the gates reopen by themselves when d has passed.
func (h *harness) partition(ctx context.Context, n *nodeProc, d time.Duration) error {
	h.mu.Lock()
	nodes := slices.Clone(h.nodes)
	h.mu.Unlock()
	var others []string
	for _, o := range nodes {
		if o != n {
			others = append(others, o.Peer)
			if err := h.post(ctx, o.API, "/v1/debug/partition", map[string]any{"peers": []string{n.Peer}, "seconds": d.Seconds()}); err != nil {
				return fmt.Errorf("partition n%d from n%d: %w", n.Index, o.Index, err)
			}
		}
	}
	if err := h.post(ctx, n.API, "/v1/debug/partition", map[string]any{"peers": others, "seconds": d.Seconds()}); err != nil {
		return fmt.Errorf("partition n%d: %w", n.Index, err)
	}
	return nil
}

// post sends one JSON request to a daemon's API.
func (h *harness) post(ctx context.Context, api, path string, body any) error {
	data, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+api+path, bytes.NewReader(data))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := h.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return &httpError{Status: resp.StatusCode, Msg: strings.TrimSpace(string(msg))}
	}
	return nil
}

// alive reports whether pid runs (not a zombie).
var alive = daemonapi.Alive

func (h *harness) kill(ctx context.Context, n *nodeProc) error {
	if err := syscall.Kill(n.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill n%d (pid %d): %w", n.Index, n.PID, err)
	}
	if err := h.pollUntil(ctx, 10*time.Second, func() bool { return !alive(n.PID) }); err != nil {
		return fmt.Errorf("n%d (pid %d) still runs 10 s after SIGKILL: %w", n.Index, n.PID, err)
	}
	return nil
}

// bootstrapAddr is the TCP multiaddr of a live node other than n, from its
// daemon.out (a restarted node listens on a new port).
func (h *harness) bootstrapAddr(n *nodeProc) (string, error) {
	h.mu.Lock()
	var homes []string
	for _, o := range h.nodes {
		if o != n && o.up {
			homes = append(homes, o.Home)
		}
	}
	h.mu.Unlock()
	for _, home := range homes {
		if a := addrLine(filepath.Join(home, "daemon.out")); a != "" {
			return a, nil
		}
	}
	return "", errors.New("no live node printed a TCP address to bootstrap from")
}

func addrLine(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if a, ok := strings.CutPrefix(sc.Text(), "addr /ip4/127.0.0.1/tcp/"); ok {
			return "/ip4/127.0.0.1/tcp/" + a
		}
	}
	return ""
}

// restart starts n's daemon again with up.sh's command line and waits for
// its fresh api.addr and addresses.
func (h *harness) restart(ctx context.Context, n *nodeProc) error {
	boot, err := h.bootstrapAddr(n)
	if err != nil {
		h.fail("n%d cannot restart: %v", n.Index, err)
		return fmt.Errorf("%w: n%d: %v", errNodeLost, n.Index, err)
	}
	apiFile := filepath.Join(n.Home, "api.addr")
	if err := os.Remove(apiFile); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	out, err := os.Create(filepath.Join(n.Home, "daemon.out"))
	if err != nil {
		return err
	}
	defer out.Close()
	logf, err := os.OpenFile(filepath.Join(n.Home, "daemon.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	fmt.Fprintf(logf, "--- igor-chaos: restart at %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(h.cfg.Bin, "--home", n.Home, "daemon", "--api", "127.0.0.1:0",
		"--slots", h.cfg.Slots, "--tick-interval", h.cfg.Tick, "--bootstrap", boot)
	cmd.Stdout, cmd.Stderr, cmd.Env = out, logf, append(cleanEnv(), "IGOR_DEBUG_PARTITION="+h.debugGate())
	if err := cmd.Start(); err != nil {
		h.fail("n%d cannot restart: %v", n.Index, err)
		return fmt.Errorf("%w: n%d: %v", errNodeLost, n.Index, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	h.mu.Lock()
	n.PID, n.exited = cmd.Process.Pid, exited
	h.mu.Unlock()
	// down.sh stops the pids it finds in n*/pid.
	if err := os.WriteFile(filepath.Join(n.Home, "pid"), []byte(strconv.Itoa(n.PID)+"\n"), 0o644); err != nil {
		return err
	}
	var api string
	err = h.pollUntil(ctx, 30*time.Second, func() bool {
		select {
		case <-exited:
			return true
		default:
		}
		data, _ := os.ReadFile(apiFile)
		api = strings.TrimSpace(string(data))
		return api != "" && addrLine(out.Name()) != ""
	})
	select {
	case <-exited:
		h.fail("n%d did not restart: the daemon exited (see %s)", n.Index, filepath.Join(n.Home, "daemon.log"))
		return fmt.Errorf("%w: n%d exited at start", errNodeLost, n.Index)
	default:
	}
	if err != nil {
		h.fail("n%d did not restart within 30 s (no api.addr): %v", n.Index, err)
		return fmt.Errorf("%w: n%d: %v", errNodeLost, n.Index, err)
	}
	h.mu.Lock()
	n.API, n.up = api, true
	h.mu.Unlock()
	h.note(n, "restart", "pid %d api %s", n.PID, api)
	h.writeNodesJSON()
	return nil
}

// writeNodesJSON keeps DIR/nodes.json current (new pid and api after a
// restart), written atomically.
func (h *harness) writeNodesJSON() {
	h.mu.Lock()
	data, err := json.MarshalIndent(h.nodes, "", "  ")
	h.mu.Unlock()
	if err != nil {
		return
	}
	p := filepath.Join(h.cfg.Dir, "nodes.json")
	if os.WriteFile(p+".tmp", append(data, '\n'), 0o644) == nil {
		_ = os.Rename(p+".tmp", p)
	}
}

// statusLines prints the highest tick of every agent every 20 s.
func (h *harness) statusLines(ctx context.Context) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(20 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			var b strings.Builder
			h.mu.Lock()
			for _, n := range h.nodes {
				if !n.up {
					fmt.Fprintf(&b, "n%d down; ", n.Index)
				}
			}
			h.mu.Unlock()
			b.WriteString("ticks")
			for _, a := range h.agents {
				fmt.Fprintf(&b, " %s=%d", a.Name, a.tick())
			}
			h.log.Printf("status   %s", b.String())
		}
	}()
	return func() { cancel(); <-done }
}

func (h *harness) printReport(rs []agentResult, details []string) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "AGENT\tDID\tALIVE\tFORKS\tVERIFY\tLINEAGE\tLOST\tMAX GAP\tCP GAP\tTICK\tEPOCHS\tHOLDERS")
	for _, r := range rs {
		lost := "no"
		switch {
		case r.FinalSeq == nil:
			lost = "?"
		case r.Lost:
			lost = fmt.Sprintf("yes(%d>%d)", r.MaxSeenSeq, *r.FinalSeq)
		}
		verify := "ok"
		if !r.VerifyOK {
			verify = "FAIL(" + clip(r.Verify, 40) + ")"
		}
		lin := "ok"
		if !r.LineageOK {
			lin = "FAIL(" + clip(r.Lineage, 30) + ")"
		}
		cpGap := "-"
		if r.CPGapS != nil {
			cpGap = fmt.Sprintf("%.1fs@t+%.0f", *r.CPGapS, r.CPGapAtS)
		}
		fmt.Fprintf(tw, "%s\t…%s\t%s\t%d\t%s\t%s\t%s\t%.1fs@t+%.0f\t%s\t%d\t%s\t%s\n", r.Name, r.DID[max(0, len(r.DID)-8):],
			yesNo(r.Alive), len(r.Forks), verify, lin, lost, r.MaxGapS, r.MaxGapAtS, cpGap, r.FinalTick,
			joinUints(r.Epochs), strings.Join(r.Holders, ","))
	}
	tw.Flush()
	for _, d := range details {
		fmt.Fprintln(&b, d)
	}
	h.log.Printf("report (%s)\n%s", filepath.Join(h.cfg.Dir, "chaos-report.json"), strings.TrimRight(b.String(), "\n"))
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n-1] + "…"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "NO"
}

func joinUints(v []uint64) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.FormatUint(x, 10)
	}
	return strings.Join(s, ",")
}

func (h *harness) writeReport(rs []agentResult, ok bool, summary string, details []string, chaosEnd time.Duration) error {
	h.mu.Lock()
	rep := struct {
		OK          bool          `json:"ok"`
		Summary     string        `json:"summary"`
		Details     []string      `json:"details"`
		Seed        uint64        `json:"seed"`
		Nodes       int           `json:"nodes"`
		Agents      int           `json:"agents"`
		Tick        string        `json:"tick_interval"`
		ChaosStartS float64       `json:"chaos_start_s"`
		ChaosEndS   float64       `json:"chaos_end_s"`
		Kills       int           `json:"kills"`
		Failures    []string      `json:"run_failures"`
		Events      []event       `json:"events"`
		Results     []agentResult `json:"agents_report"`
	}{ok, summary, details, h.cfg.Seed, h.cfg.Nodes, h.cfg.Agents, h.cfg.Tick, round1(h.chaosStart.Seconds()), round1(chaosEnd.Seconds()),
		h.kills, slices.Clone(h.failures), slices.Clone(h.events), rs}
	h.mu.Unlock()
	if rep.Failures == nil {
		rep.Failures = []string{}
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	p := filepath.Join(h.cfg.Dir, "chaos-report.json")
	if err := os.WriteFile(p+".tmp", append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(p+".tmp", p)
}

// teardown stops the testnet (down.sh: SIGTERM, SIGKILL after 30 s), then
// SIGKILLs any daemon of this run that is somehow still alive.
func (h *harness) teardown() {
	if h.nodes == nil && !fileExists(filepath.Join(h.cfg.Dir, "nodes.json")) {
		// up.sh failed and cleaned up after itself, or never ran.
		h.downScript()
		return
	}
	h.log.Printf("teardown: testnet/down.sh %s", h.cfg.Dir)
	h.downScript()
	h.mu.Lock()
	nodes := slices.Clone(h.nodes)
	h.mu.Unlock()
	for _, n := range nodes {
		if alive(n.PID) {
			h.log.Printf("teardown: n%d (pid %d) survived down.sh: SIGKILL", n.Index, n.PID)
			_ = syscall.Kill(n.PID, syscall.SIGKILL)
		}
		if n.exited != nil {
			select {
			case <-n.exited:
			case <-time.After(10 * time.Second):
			}
		}
	}
}

func (h *harness) downScript() {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(h.cfg.Testnet, "down.sh"), h.cfg.Dir)
	cmd.WaitDelay = 5 * time.Second
	if out, err := cmd.CombinedOutput(); err != nil {
		h.log.Printf("teardown: down.sh: %v: %s", err, strings.TrimSpace(string(out)))
	}
}
