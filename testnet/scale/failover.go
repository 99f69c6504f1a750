package main

// Mass failover (--kill K): after the steady-state window, SIGKILL K nodes
// at once and watch, every 250 ms, what the survivors do: how fast the
// agents of the killed nodes run again, whether an agent that ran on a
// survivor is ever stopped or moved because another node died (a "survivor
// stop": a healthy group should never lose its holder), and whether an
// agent ever runs on two nodes.

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"
)

const (
	sampleEvery = 250 * time.Millisecond
	seriesEvery = 5 * time.Second
	verifyCount = 10
)

// ---------------------------------------------------------------------------
// Pure parts (unit-tested): victims, percentiles, the sample bookkeeping.

// pickVictims picks k distinct node indexes from 1..n-1 (node 0 always
// survives, and the harness can talk to it), deterministically from seed,
// in ascending order.
func pickVictims(n, k int, seed uint64) []int {
	if k <= 0 || n < 2 {
		return nil
	}
	k = min(k, n-1)
	idx := make([]int, n-1)
	for i := range idx {
		idx[i] = i + 1
	}
	r := rand.New(rand.NewPCG(seed, 0x1607))
	r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	idx = idx[:k]
	slices.Sort(idx)
	return idx
}

// pickSpreadVictims picks k node indexes from 1..n-1, no two of which are
// partners (share a custody group), deterministically from seed: the
// candidates in pickVictims's shuffled order, each taken unless it is a
// partner of one taken before. It fails when fewer than k are found.
func pickSpreadVictims(n, k int, seed uint64, partners []map[int]bool) ([]int, error) {
	order := pickVictims(n, n-1, seed) // every candidate, sorted
	r := rand.New(rand.NewPCG(seed, 0x5bead))
	r.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	var out []int
	for _, i := range order {
		if len(out) == k {
			break
		}
		if !slices.ContainsFunc(out, func(j int) bool { return partners[i][j] || partners[j][i] }) {
			out = append(out, i)
		}
	}
	if len(out) < k {
		return nil, fmt.Errorf("--spread: found only %d nodes that share no custody group (%v), not %d: with groups placed over the whole mesh every node shares one with nearly every other", len(out), out, k)
	}
	slices.Sort(out)
	return out, nil
}

// partnerGraph returns, per node index, the indexes of the nodes it shares
// a custody group with, from each node's custody statuses (members by peer
// ID; peers that are not among nodes are left out).
func partnerGraph(nodes []*node, per [][]custodyStatus) []map[int]bool {
	idx := map[string]int{}
	for i, n := range nodes {
		idx[n.Peer] = i
	}
	out := make([]map[int]bool, len(nodes))
	for i := range out {
		out[i] = map[int]bool{}
	}
	for i, sts := range per {
		for _, s := range sts {
			for _, m := range s.Members {
				if j, ok := idx[m]; ok && j != i {
					out[i][j], out[j][i] = true, true
				}
			}
		}
	}
	return out
}

// percentile is the nearest-rank p-th percentile (0 < p ≤ 100) of sorted
// values: the smallest value with at least p% of the values at or below it.
// 0 for no values.
func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	r := int(math.Ceil(p / 100 * float64(len(sorted))))
	return sorted[min(max(r, 1), len(sorted))-1]
}

// baseAgent is where an agent ran at the kill.
type baseAgent struct {
	Node  string // the node running it
	Epoch uint64
	Tick  uint64 // GET /v1/agents of that node
	Dead  bool   // that node is killed
}

// obsNode is one survivor's custody at one sample; OK false when its
// GET /v1/custody failed (nothing is concluded from it then).
type obsNode struct {
	Name string
	OK   bool
	Sts  map[string]custodyStatus // by DID
}

// obsSample is one look at every survivor.
type obsSample struct {
	At    time.Duration // since the kill
	Nodes []obsNode
}

// agentTrack is one agent's story after the kill.
type agentTrack struct {
	DID  string
	Base baseAgent
	Last string // the node last seen running it (alone)

	// An agent of a killed node: when it first ran on a survivor, and
	// whether it was later stopped or moved again.
	Recovered      bool
	RecoveredAt    time.Duration
	RecoveredOn    string
	RecoveredEpoch uint64
	LostAgain      bool
	LostAgainAt    time.Duration
	LostAgainKind  string
	LostBack       bool
	LostBackAt     time.Duration

	// An agent of a survivor: the first sample at which that survivor
	// did not run it any more, and when it ran again somewhere.
	Stopped    bool
	StoppedAt  time.Duration
	StopKind   string // "stopped" (running nowhere) or "moved to nX"
	StopRole   string // its role on the base node then ("" not a member)
	StopMoving bool
	StopEpoch  uint64
	Back       bool
	BackAt     time.Duration
	BackOn     string

	// Seen on 2+ nodes in one sample.
	DupSamples   int
	dupRun       int
	DupConfirmed bool   // in 2 consecutive samples, or at one epoch on two nodes
	DupDetail    string // the first (or the first confirmed) such sample
}

// bucketCounts are the events of one time-series step.
type bucketCounts struct {
	Recoveries    int
	HolderChanges int
	Stops         int
	DupAgents     int // agents seen on 2+ nodes in some sample of the step
	Samples       int
	Partial       int
}

// tracker turns a sequence of samples into the failover's findings.
type tracker struct {
	order  []string
	agents map[string]*agentTrack
	dead   map[string]bool

	samples, partial int
	holderChanges    int
	// At the latest complete sample:
	lastRunning, lastMissing int
	lastAt                   time.Duration
	haveComplete             bool

	b       bucketCounts
	bDup    map[string]bool
	lastGap time.Duration // the largest gap between two samples
}

// newTracker follows the agents in base (the DIDs in order; an agent
// missing from base, e.g. not running exactly once at the kill, is not
// followed).
func newTracker(order []string, base map[string]baseAgent, dead map[string]bool) *tracker {
	t := &tracker{agents: map[string]*agentTrack{}, dead: dead, bDup: map[string]bool{}}
	for _, d := range order {
		b, ok := base[d]
		if !ok {
			continue
		}
		t.order = append(t.order, d)
		t.agents[d] = &agentTrack{DID: d, Base: b, Last: b.Node}
	}
	return t
}

// add takes one sample; samples come in time order.
func (t *tracker) add(s obsSample) {
	if t.samples > 0 {
		t.lastGap = max(t.lastGap, s.At-t.lastAt)
	}
	t.samples++
	t.b.Samples++
	complete := true
	byName := make(map[string]int, len(s.Nodes))
	for i, n := range s.Nodes {
		byName[n.Name] = i
		if !n.OK {
			complete = false
		}
	}
	if !complete {
		t.partial++
		t.b.Partial++
	}
	type on struct {
		node  string
		epoch uint64
	}
	running := map[string][]on{}
	for _, n := range s.Nodes {
		if !n.OK {
			continue
		}
		for d, st := range n.Sts {
			if st.Running {
				running[d] = append(running[d], on{n.Name, st.Epoch})
			}
		}
	}
	nRunning, nMissing := 0, 0
	for _, d := range t.order {
		a := t.agents[d]
		ons := running[d]
		slices.SortFunc(ons, func(x, y on) int { return strings.Compare(x.node, y.node) })
		switch {
		case len(ons) == 0:
			nMissing++
		default:
			nRunning++
		}

		// On 2+ nodes. One look at several nodes is not atomic: a holder
		// read just before it handed the agent off and the new holder read
		// just after show the agent twice. A real second run shows in the
		// next sample too, or at one epoch on both nodes (a hand-off always
		// moves to a higher epoch).
		if len(ons) >= 2 {
			a.DupSamples++
			a.dupRun++
			t.bDup[d] = true
			sameEpoch := false
			var parts []string
			for i, o := range ons {
				parts = append(parts, fmt.Sprintf("%s@e%d", o.node, o.epoch))
				for _, p := range ons[:i] {
					sameEpoch = sameEpoch || p.epoch == o.epoch
				}
			}
			detail := fmt.Sprintf("%s at %.2fs on %s", d, s.At.Seconds(), strings.Join(parts, ", "))
			if a.DupDetail == "" {
				a.DupDetail = detail
			}
			if !a.DupConfirmed && (sameEpoch || a.dupRun >= 2) {
				a.DupConfirmed = true
				a.DupDetail = detail
				if !sameEpoch {
					a.DupDetail += " (2 samples running)"
				}
			}
		} else {
			a.dupRun = 0
		}

		// An agent of a killed node runs on a survivor.
		if a.Base.Dead && !a.Recovered && len(ons) > 0 {
			a.Recovered, a.RecoveredAt, a.RecoveredOn, a.RecoveredEpoch = true, s.At, ons[0].node, ons[0].epoch
			a.Last = ons[0].node
			t.b.Recoveries++
		} else if a.Base.Dead && a.Recovered && !a.LostAgain && complete && len(ons) == 0 {
			a.LostAgain, a.LostAgainAt, a.LostAgainKind = true, s.At, "stopped"
		}

		// Holder changes among survivors: the agent runs alone on another
		// survivor than the one last seen running it.
		if len(ons) == 1 && a.Last != ons[0].node && !t.dead[a.Last] {
			t.holderChanges++
			t.b.HolderChanges++
			if a.Base.Dead && !a.LostAgain {
				a.LostAgain, a.LostAgainAt, a.LostAgainKind = true, s.At, "moved to "+ons[0].node
			}
			a.Last = ons[0].node
		}

		// Survivor stops, from the base node's own answer only.
		if !a.Base.Dead && !a.Stopped {
			if i, ok := byName[a.Base.Node]; ok && s.Nodes[i].OK {
				st, member := s.Nodes[i].Sts[d]
				if !member || !st.Running {
					a.Stopped, a.StoppedAt = true, s.At
					a.StopRole, a.StopMoving, a.StopEpoch = st.Role, st.Moving, st.Epoch
					a.StopKind = "stopped"
					for _, o := range ons {
						if o.node != a.Base.Node {
							a.StopKind = "moved to " + o.node
							break
						}
					}
					t.b.Stops++
				}
			}
		}
		if a.Stopped && !a.Back && len(ons) > 0 {
			a.Back, a.BackAt, a.BackOn = true, s.At, ons[0].node
		}
		if a.LostAgain && !a.LostBack && len(ons) > 0 {
			a.LostBack, a.LostBackAt = true, s.At
		}
	}
	if complete {
		t.lastRunning, t.lastMissing, t.haveComplete = nRunning, nMissing, true
	}
	t.lastAt = s.At
}

// takeBucket returns the events since the last call.
func (t *tracker) takeBucket() bucketCounts {
	b := t.b
	b.DupAgents = len(t.bDup)
	t.b, t.bDup = bucketCounts{}, map[string]bool{}
	return b
}

// stopEvent is one survivor stop.
type stopEvent struct {
	DID    string   `json:"did"`
	Node   string   `json:"node"` // the survivor that ran it at the kill
	AtS    float64  `json:"at_s"` // after the kill, first seen
	Kind   string   `json:"kind"` // stopped | moved to nX
	Role   string   `json:"role_then"`
	Moving bool     `json:"moving_then"`
	Epoch  uint64   `json:"epoch_then"`
	BackS  *float64 `json:"running_again_at_s"` // nil: never again within the observation
	BackOn string   `json:"running_again_on,omitempty"`
}

// recoveryStats is how the killed nodes' agents came back.
type recoveryStats struct {
	Agents     int       `json:"agents"` // running on a killed node at the kill
	Recovered  int       `json:"recovered"`
	Never      int       `json:"never"`
	NeverDIDs  []string  `json:"never_dids,omitempty"`
	P50S       float64   `json:"p50_s"`
	P99S       float64   `json:"p99_s"`
	MaxS       float64   `json:"max_s"`
	MinS       float64   `json:"min_s"`
	TimesS     []float64 `json:"times_s"` // sorted
	EpochUpMin uint64    `json:"epoch_increase_min"`
	EpochUpMax uint64    `json:"epoch_increase_max"`
	// LostAgain: recovered, then later running nowhere or moved again;
	// the gaps (running nowhere) of those that ran again.
	LostAgain        int      `json:"lost_again"`
	LostAgainBack    int      `json:"lost_again_running_again"`
	LostAgainGap     gapStats `json:"lost_again_gap"`
	LostAgainExample []string `json:"lost_again_examples,omitempty"`
}

// gapStats summarise how long agents ran nowhere (seconds between the
// sample that saw them stop and the first that saw them run again).
type gapStats struct {
	N    int     `json:"n"`
	P50S float64 `json:"p50_s"`
	P99S float64 `json:"p99_s"`
	MaxS float64 `json:"max_s"`
}

func gaps(g []float64) gapStats {
	sort.Float64s(g)
	if len(g) == 0 {
		return gapStats{}
	}
	return gapStats{N: len(g), P50S: percentile(g, 50), P99S: percentile(g, 99), MaxS: g[len(g)-1]}
}

func (g gapStats) String() string {
	if g.N == 0 {
		return "no gaps"
	}
	return fmt.Sprintf("p50 %.2fs, p99 %.2fs, max %.2fs", g.P50S, g.P99S, g.MaxS)
}

// dupStats are the agents seen on 2+ nodes.
type dupStats struct {
	Agents    int      `json:"agents"` // seen in at least one sample
	Confirmed int      `json:"confirmed"`
	Examples  []string `json:"examples,omitempty"`
}

// outcome is what the samples showed.
type outcome struct {
	Recovery       recoveryStats `json:"recovery"`
	SurvivorAgents int           `json:"survivor_agents"`
	SurvivorStops  int           `json:"survivor_stops"`
	Stops          []stopEvent   `json:"stop_events"` // by time
	StopsBack      int           `json:"stops_running_again"`
	StopGap        gapStats      `json:"stop_gap"` // of the stops that ran again
	HolderChanges  int           `json:"holder_changes"`
	Dups           dupStats      `json:"on_2plus_nodes"`
	Samples        int           `json:"samples"`
	Partial        int           `json:"partial_samples"` // some survivor did not answer
	MaxGapS        float64       `json:"max_gap_between_samples_s"`
	FinalRunning   int           `json:"final_running"`
	FinalMissing   int           `json:"final_running_nowhere"`
}

func (t *tracker) result() outcome {
	var o outcome
	o.Samples, o.Partial, o.HolderChanges, o.MaxGapS = t.samples, t.partial, t.holderChanges, t.lastGap.Seconds()
	o.FinalRunning, o.FinalMissing = t.lastRunning, t.lastMissing
	r := &o.Recovery
	r.TimesS = []float64{}
	o.Stops = []stopEvent{}
	first := true
	var stopGaps, lostGaps []float64
	for _, d := range t.order {
		a := t.agents[d]
		if a.DupSamples > 0 {
			o.Dups.Agents++
			if a.DupConfirmed {
				o.Dups.Confirmed++
			}
			if len(o.Dups.Examples) < 5 || a.DupConfirmed && len(o.Dups.Examples) < 10 {
				tag := "transient"
				if a.DupConfirmed {
					tag = "CONFIRMED"
				}
				o.Dups.Examples = append(o.Dups.Examples, tag+": "+a.DupDetail)
			}
		}
		if !a.Base.Dead {
			o.SurvivorAgents++
			if a.Stopped {
				e := stopEvent{DID: d, Node: a.Base.Node, AtS: a.StoppedAt.Seconds(), Kind: a.StopKind,
					Role: a.StopRole, Moving: a.StopMoving, Epoch: a.StopEpoch, BackOn: a.BackOn}
				if a.Back {
					b := a.BackAt.Seconds()
					e.BackS = &b
					o.StopsBack++
					stopGaps = append(stopGaps, (a.BackAt - a.StoppedAt).Seconds())
				}
				o.Stops = append(o.Stops, e)
			}
			continue
		}
		r.Agents++
		if !a.Recovered {
			r.Never++
			r.NeverDIDs = append(r.NeverDIDs, d)
			continue
		}
		r.Recovered++
		r.TimesS = append(r.TimesS, a.RecoveredAt.Seconds())
		up := a.RecoveredEpoch - min(a.RecoveredEpoch, a.Base.Epoch)
		if first {
			r.EpochUpMin, r.EpochUpMax, first = up, up, false
		}
		r.EpochUpMin, r.EpochUpMax = min(r.EpochUpMin, up), max(r.EpochUpMax, up)
		if a.LostAgain {
			r.LostAgain++
			if a.LostBack {
				r.LostAgainBack++
				lostGaps = append(lostGaps, (a.LostBackAt - a.LostAgainAt).Seconds())
			}
			if len(r.LostAgainExample) < 5 {
				r.LostAgainExample = append(r.LostAgainExample, fmt.Sprintf("%s: back at %.2fs on %s, then %s at %.2fs",
					d, a.RecoveredAt.Seconds(), a.RecoveredOn, a.LostAgainKind, a.LostAgainAt.Seconds()))
			}
		}
	}
	o.SurvivorStops = len(o.Stops)
	o.StopGap, r.LostAgainGap = gaps(stopGaps), gaps(lostGaps)
	sort.SliceStable(o.Stops, func(i, j int) bool { return o.Stops[i].AtS < o.Stops[j].AtS })
	sort.Float64s(r.TimesS)
	if n := len(r.TimesS); n > 0 {
		r.P50S, r.P99S, r.MaxS, r.MinS = percentile(r.TimesS, 50), percentile(r.TimesS, 99), r.TimesS[n-1], r.TimesS[0]
	}
	return o
}

// logPatterns are counted in the survivors' daemon.log after the kill
// (case-insensitive substrings of the line).
var logPatterns = []string{
	"replacing members in place", // the holder proposes a membership change
	"added to a running group",   // a host joined a group in place
	"replacing the custody group",
	"handing agent off",
	"agent regrouped",
	"regroup", // every regroup line ("agent regrouped", "regroup failed", ...)
	"self-fenc",
	"stopping",
	"stopped",
	"running agent",
	"level=WARN",
	"level=ERROR",
}

var agentAttr = regexp.MustCompile(`\bagent=("?)([^"\s]+)`)

// logCounts counts pattern lines of one log, split by what the line's
// agent= attribute names: an agent of a killed node, of a survivor, or
// none/other.
type logCounts struct {
	Node   string            `json:"node"`
	Lines  int               `json:"lines"`
	Counts map[string][3]int `json:"counts"` // pattern -> [killed-node agent, survivor agent, other]
	// A few lines about survivor-held agents that stopped or moved.
	Examples []string `json:"examples,omitempty"`
}

// countLog reads r (a log from the kill on).
func countLog(node string, r io.Reader, base map[string]baseAgent, stopped map[string]bool) (logCounts, error) {
	lc := logCounts{Node: node, Counts: map[string][3]int{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		lc.Lines++
		low := strings.ToLower(line)
		class := 2
		did := ""
		if m := agentAttr.FindStringSubmatch(line); m != nil {
			did = m[2]
			if b, ok := base[did]; ok {
				class = 1
				if b.Dead {
					class = 0
				}
			}
		}
		for _, p := range logPatterns {
			if strings.Contains(low, strings.ToLower(p)) {
				c := lc.Counts[p]
				c[class]++
				lc.Counts[p] = c
			}
		}
		if did != "" && stopped[did] && len(lc.Examples) < 8 {
			lc.Examples = append(lc.Examples, clip(line, 300))
		}
	}
	return lc, sc.Err()
}

// ---------------------------------------------------------------------------
// The experiment.

// hostedStatus is the part of GET /v1/agents (hosting.Status) we use.
type hostedStatus struct {
	DID     string `json:"did"`
	Tick    uint64 `json:"tick"`
	Seq     uint64 `json:"seq"`
	Epoch   uint64 `json:"epoch"`
	Running bool   `json:"running"`
}

// verifyReport is the part of GET /v1/agents/{did}/verify (node.VerifyReport).
type verifyReport struct {
	Valid       bool              `json:"valid"`
	DID         string            `json:"did"`
	Checkpoints int               `json:"checkpoints"`
	LastTick    uint64            `json:"last_tick"`
	MaxEpoch    uint64            `json:"max_epoch"`
	Holders     []string          `json:"holders"`
	Forks       []json.RawMessage `json:"forks"`
	Error       string            `json:"error"`
}

// verifyResult is one verified agent.
type verifyResult struct {
	DID         string  `json:"did"`
	OfKilled    bool    `json:"of_killed_node"`
	Asked       string  `json:"asked"`
	OK          bool    `json:"ok"`
	Valid       bool    `json:"valid"`
	Forks       int     `json:"forks"`
	Checkpoints int     `json:"checkpoints"`
	LastTick    uint64  `json:"last_tick"`
	MaxEpoch    uint64  `json:"max_epoch"`
	Holders     int     `json:"holders"`
	Seconds     float64 `json:"seconds"`
	Error       string  `json:"error,omitempty"`
}

// seriesPoint is one 5 s step after the kill.
type seriesPoint struct {
	T             float64   `json:"t_s"` // end of the step, after the kill
	Running       int       `json:"running"`
	Missing       int       `json:"running_nowhere"`
	Recoveries    int       `json:"recoveries"`
	HolderChanges int       `json:"holder_changes"`
	Stops         int       `json:"survivor_stops"`
	DupAgents     int       `json:"on_2plus_nodes"`
	Samples       int       `json:"samples"`
	Partial       int       `json:"partial_samples"`
	CPUPct        []float64 `json:"cpu_pct_one_core"` // per survivor, in Survivors order
}

// failoverReport is the --kill part of the report.
type failoverReport struct {
	Kill      int      `json:"kill"`
	Seed      uint64   `json:"seed"`
	Burn      bool     `json:"burn"`
	ObserveS  float64  `json:"observe_s"`
	Killed    []string `json:"killed"` // "n3 (pid 1234)"
	Survivors []string `json:"survivors"`
	// At the kill.
	BaseTally        tallyResult `json:"tally_at_kill"`
	KilledAgents     int         `json:"agents_on_killed_nodes"`
	SurvivorAgents   int         `json:"agents_on_survivors"`
	WithKilledMember int         `json:"survivor_agents_with_a_killed_member"`
	MajorityLost     int         `json:"groups_with_2plus_killed_members"`
	BaseToKillS      float64     `json:"baseline_to_kill_s"`

	Outcome        outcome        `json:"outcome"`
	Series         []seriesPoint  `json:"series"`
	FinalTally     *tallyResult   `json:"final_tally_survivors"`
	TicksAdvanced  int            `json:"ticks_advanced"` // agents whose tick at the end is above the tick at the kill
	TicksChecked   int            `json:"ticks_checked"`
	TicksStuck     []string       `json:"ticks_stuck,omitempty"`
	Verify         []verifyResult `json:"verify"`
	VerifyOK       bool           `json:"verify_ok"`
	Logs           []logCounts    `json:"survivor_logs"`
	HarnessCPUPct  float64        `json:"harness_cpu_pct_one_core"` // includes the burner
	MachineBusyPct float64        `json:"machine_busy_pct_all_cores"`
	OK             bool           `json:"ok"`
}

// hosted reads GET /v1/agents of every node (nil for one that did not answer).
func (h *harness) hosted(ctx context.Context, nodes []*node) [][]hostedStatus {
	out := make([][]hostedStatus, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			data, err := h.get(ctx, n.API, "/v1/agents", 30*time.Second)
			if err != nil {
				h.logf("%s /v1/agents: %v", n.name(), err)
				return
			}
			var sts []hostedStatus
			if err := json.Unmarshal(data, &sts); err != nil {
				h.logf("%s /v1/agents: %v", n.name(), err)
				return
			}
			out[i] = sts
		})
	}
	wg.Wait()
	return out
}

// custodyOf reads GET /v1/custody of the given nodes concurrently.
func (h *harness) custodyOf(ctx context.Context, nodes []*node, timeout time.Duration) ([][]custodyStatus, []error) {
	out := make([][]custodyStatus, len(nodes))
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() {
			data, err := h.get(ctx, n.API, "/v1/custody", timeout)
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

// failover is the --kill experiment; an error aborts the run, failed
// checks are recorded with h.fail.
func (h *harness) failover(ctx context.Context) error {
	c := h.cfg
	fr := &failoverReport{Kill: c.Kill, Seed: c.Seed, Burn: c.Burn, ObserveS: c.Observe.Seconds(), Series: []seriesPoint{}, Verify: []verifyResult{}}
	h.rep.Failover = fr
	victimIdx := pickVictims(len(h.nodes), c.Kill, c.Seed)
	if c.Spread {
		per, _ := h.custodyOf(ctx, h.nodes, 30*time.Second)
		var err error
		if victimIdx, err = pickSpreadVictims(len(h.nodes), c.Kill, c.Seed, partnerGraph(h.nodes, per)); err != nil {
			return err
		}
	}
	isVictim := map[int]bool{}
	for _, i := range victimIdx {
		isVictim[i] = true
	}
	var victims, survivors []*node
	dead := map[string]bool{}
	for i, n := range h.nodes {
		if isVictim[i] {
			victims = append(victims, n)
			dead[n.name()] = true
			fr.Killed = append(fr.Killed, fmt.Sprintf("%s (pid %d)", n.name(), n.PID))
		} else {
			survivors = append(survivors, n)
			fr.Survivors = append(fr.Survivors, n.name())
		}
	}
	peerName := map[string]string{}
	for _, n := range h.nodes {
		peerName[n.Peer] = n.name()
	}

	// Where every agent runs, at which epoch and tick. The census is
	// retried until every agent runs exactly once (an agent moving between
	// two reads shows on 0 or 2 nodes).
	var per [][]custodyStatus
	var hosted [][]hostedStatus
	var t tallyResult
	for try := 0; ; try++ {
		per, _ = h.custodyOf(ctx, h.nodes, 30*time.Second)
		hosted = h.hosted(ctx, h.nodes)
		t = tally(h.dids, per)
		if t.ok() || try == 5 {
			break
		}
		h.logf("failover: before the kill: %s; looking again", t)
		if err := sleep(ctx, time.Second); err != nil {
			return err
		}
	}
	baseAt := time.Now()
	fr.BaseTally = t
	if !t.ok() {
		h.logf("failover: before the kill not every agent runs exactly once (%s): those are not followed", t)
	}
	base := map[string]baseAgent{}
	seen := map[string]int{}
	for _, sts := range per {
		for _, s := range sts {
			if s.Running {
				seen[s.DID]++
			}
		}
	}
	for i, sts := range per {
		n := h.nodes[i]
		ticks := map[string]uint64{}
		for _, hs := range hosted[i] {
			ticks[hs.DID] = hs.Tick
		}
		for _, s := range sts {
			if !s.Running || seen[s.DID] != 1 {
				continue
			}
			b := baseAgent{Node: n.name(), Epoch: s.Epoch, Tick: ticks[s.DID], Dead: dead[n.name()]}
			base[s.DID] = b
			killedMembers := 0
			for _, m := range s.Members {
				if dead[peerName[m]] {
					killedMembers++
				}
			}
			if b.Dead {
				fr.KilledAgents++
				killedMembers = max(killedMembers, 1) // the holder itself
			} else {
				fr.SurvivorAgents++
				if killedMembers > 0 {
					fr.WithKilledMember++
				}
			}
			if killedMembers >= 2 {
				fr.MajorityLost++
			}
		}
	}
	h.logf("failover: at the kill %d agents run on the %d node(s) to kill, %d on survivors (%d of them with a member on a killed node); %d groups lose 2+ members",
		fr.KilledAgents, len(victims), fr.SurvivorAgents, fr.WithKilledMember, fr.MajorityLost)

	// The survivors' logs from here on.
	logOff := make([]int64, len(survivors))
	for i, n := range survivors {
		if fi, err := os.Stat(filepath.Join(n.Home, "daemon.log")); err == nil {
			logOff[i] = fi.Size()
		}
	}
	cpu0 := make([]uint64, len(survivors))
	for i, n := range survivors {
		s, err := readProc(n.PID)
		if err != nil {
			return fmt.Errorf("%s is not running before the kill: %v", n.name(), err)
		}
		cpu0[i] = s.Ticks
	}
	mb0, mt0 := machineBusy()
	self0 := selfTicks()

	var stopBurn atomic.Bool
	burnDone := make(chan struct{})
	if c.Burn {
		go func() {
			defer close(burnDone)
			for x := uint64(1); !stopBurn.Load(); x = x*6364136223846793005 + 1442695040888963407 {
			}
		}()
		h.logf("failover: burning one core in the harness until the observation ends")
	} else {
		close(burnDone)
	}
	defer func() { stopBurn.Store(true); <-burnDone }()

	// Kill them at once.
	for _, n := range victims {
		if err := syscall.Kill(n.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
			return fmt.Errorf("kill %s (pid %d): %w", n.name(), n.PID, err)
		}
	}
	kill := time.Now()
	fr.BaseToKillS = kill.Sub(baseAt).Seconds()
	h.logf("failover: SIGKILL %s; observing %s for %v", strings.Join(fr.Killed, ", "), strings.Join(fr.Survivors, " "), c.Observe)
	for _, n := range victims {
		for end := time.Now().Add(10 * time.Second); alive(n.PID); {
			if time.Now().After(end) {
				return fmt.Errorf("%s (pid %d) still runs 10 s after SIGKILL", n.name(), n.PID)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	tr := newTracker(h.dids, base, dead)
	hz := h.rep.Machine.ClkTck
	lastCPU, lastCPUAt := slices.Clone(cpu0), kill
	nextSeries := seriesEvery
	tick := time.NewTicker(sampleEvery)
	defer tick.Stop()
	flush := func(now time.Time) error {
		b := tr.takeBucket()
		p := seriesPoint{T: now.Sub(kill).Seconds(), Running: tr.lastRunning, Missing: tr.lastMissing, Recoveries: b.Recoveries,
			HolderChanges: b.HolderChanges, Stops: b.Stops, DupAgents: b.DupAgents, Samples: b.Samples, Partial: b.Partial}
		wall := now.Sub(lastCPUAt).Seconds()
		var cpus []string
		for i, n := range survivors {
			s, err := readProc(n.PID)
			if err != nil || !alive(n.PID) {
				return fmt.Errorf("survivor %s (pid %d) died during the observation (see %s)", n.name(), n.PID, filepath.Join(n.Home, "daemon.log"))
			}
			pct := float64(s.Ticks-lastCPU[i]) / float64(hz) / wall * 100
			p.CPUPct = append(p.CPUPct, pct)
			cpus = append(cpus, fmt.Sprintf("%s %.0f%%", n.name(), pct))
			lastCPU[i] = s.Ticks
		}
		lastCPUAt = now
		fr.Series = append(fr.Series, p)
		h.logf("failover t+%5.1fs: running %d, nowhere %d, +%d recovered, %d holder changes, %d survivor stops, %d on 2+ nodes; cpu %s",
			p.T, p.Running, p.Missing, p.Recoveries, p.HolderChanges, p.Stops, p.DupAgents, strings.Join(cpus, ", "))
		return nil
	}
	for {
		look := make([]obsNode, len(survivors))
		per, errs := h.custodyOf(ctx, survivors, 5*time.Second)
		at := time.Since(kill)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		for i, n := range survivors {
			look[i] = obsNode{Name: n.name(), OK: errs[i] == nil}
			if errs[i] == nil {
				look[i].Sts = make(map[string]custodyStatus, len(per[i]))
				for _, s := range per[i] {
					look[i].Sts[s.DID] = s
				}
			}
		}
		tr.add(obsSample{At: at, Nodes: look})
		now := time.Now()
		if now.Sub(kill) >= nextSeries {
			if err := flush(now); err != nil {
				return err
			}
			nextSeries += seriesEvery
		}
		if now.Sub(kill) >= c.Observe {
			break
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	if tr.takeBucketPending() {
		if err := flush(time.Now()); err != nil {
			return err
		}
	}
	obsWall := time.Since(kill)
	stopBurn.Store(true)
	<-burnDone
	mb1, mt1 := machineBusy()
	self1 := selfTicks()
	if mt1 > mt0 {
		fr.MachineBusyPct = float64(mb1-mb0) / float64(mt1-mt0) * 100
	}
	fr.HarnessCPUPct = float64(self1-self0) / float64(hz) / obsWall.Seconds() * 100
	fr.Outcome = tr.result()
	o := &fr.Outcome

	// The end: every agent once on the survivors, ticks advanced since the kill.
	per, _ = h.custodyOf(ctx, survivors, 30*time.Second)
	ft := tally(h.dids, per)
	fr.FinalTally = &ft
	hostedEnd := h.hosted(ctx, survivors)
	tickEnd := map[string]uint64{}
	for i, sts := range per {
		ticks := map[string]uint64{}
		for _, hs := range hostedEnd[i] {
			ticks[hs.DID] = hs.Tick
		}
		for _, s := range sts {
			if s.Running {
				tickEnd[s.DID] = max(tickEnd[s.DID], ticks[s.DID])
			}
		}
	}
	for _, d := range h.dids {
		b, ok := base[d]
		if !ok {
			continue
		}
		fr.TicksChecked++
		if te, ok := tickEnd[d]; ok && te > b.Tick {
			fr.TicksAdvanced++
		} else if len(fr.TicksStuck) < 5 {
			fr.TicksStuck = append(fr.TicksStuck, fmt.Sprintf("%s: tick %d at the kill, %d at the end", d, b.Tick, tickEnd[d]))
		}
	}

	// Verify a few agents, some of the killed nodes, on survivors.
	fr.Verify = h.verifySome(ctx, base, survivors)
	fr.VerifyOK = len(fr.Verify) > 0
	for _, v := range fr.Verify {
		fr.VerifyOK = fr.VerifyOK && v.OK
	}

	// What the survivors logged.
	stopped := map[string]bool{}
	for _, e := range o.Stops {
		stopped[e.DID] = true
	}
	for i, n := range survivors {
		f, err := os.Open(filepath.Join(n.Home, "daemon.log"))
		if err != nil {
			h.logf("failover: %s log: %v", n.name(), err)
			continue
		}
		if _, err := f.Seek(logOff[i], io.SeekStart); err == nil {
			lc, err := countLog(n.name(), f, base, stopped)
			if err != nil {
				h.logf("failover: %s log: %v", n.name(), err)
			}
			fr.Logs = append(fr.Logs, lc)
		}
		f.Close()
	}

	fr.OK = true
	if o.Dups.Confirmed > 0 {
		fr.OK = false
		h.fail("failover: %d agents ran on 2+ nodes (e.g. %s)", o.Dups.Confirmed, strings.Join(o.Dups.Examples, "; "))
	}
	if o.Recovery.Never > 0 {
		fr.OK = false
		h.fail("failover: %d of the %d agents of the killed node(s) never ran on a survivor within %v (e.g. %s)",
			o.Recovery.Never, o.Recovery.Agents, c.Observe, strings.Join(o.Recovery.NeverDIDs[:min(3, len(o.Recovery.NeverDIDs))], ", "))
	}
	if !fr.VerifyOK {
		fr.OK = false
		var bad []string
		for _, v := range fr.Verify {
			if !v.OK {
				bad = append(bad, fmt.Sprintf("%s: valid=%v forks=%d %s", v.DID, v.Valid, v.Forks, v.Error))
			}
		}
		h.fail("failover: verify failed for %d of %d agents: %s", len(bad), len(fr.Verify), strings.Join(bad, "; "))
	}
	return nil
}

// takeBucketPending reports whether samples were taken since the last step.
func (t *tracker) takeBucketPending() bool { return t.b.Samples > 0 }

// verifySome verifies up to verifyCount agents: up to half of them of the
// killed nodes, the rest of survivors, picked by the seed, asked
// round-robin of the survivors, 3 at a time.
func (h *harness) verifySome(ctx context.Context, base map[string]baseAgent, survivors []*node) []verifyResult {
	var killed, alive []string
	for _, d := range h.dids {
		if b, ok := base[d]; ok {
			if b.Dead {
				killed = append(killed, d)
			} else {
				alive = append(alive, d)
			}
		}
	}
	r := rand.New(rand.NewPCG(h.cfg.Seed, 0x7e51))
	r.Shuffle(len(killed), func(i, j int) { killed[i], killed[j] = killed[j], killed[i] })
	r.Shuffle(len(alive), func(i, j int) { alive[i], alive[j] = alive[j], alive[i] })
	nk := min(len(killed), verifyCount/2)
	pick := append(slices.Clone(killed[:nk]), alive[:min(len(alive), verifyCount-nk)]...)
	out := make([]verifyResult, len(pick))
	sem := make(chan struct{}, 3)
	var wg sync.WaitGroup
	h.logf("failover: verifying %d agents (%d of the killed nodes) on the survivors", len(pick), nk)
	for i, d := range pick {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			n := survivors[i%len(survivors)]
			v := verifyResult{DID: d, OfKilled: base[d].Dead, Asked: n.name()}
			t := time.Now()
			data, err := h.get(ctx, n.API, "/v1/agents/"+d+"/verify", 3*time.Minute)
			v.Seconds = time.Since(t).Seconds()
			var rep verifyReport
			if err == nil {
				err = json.Unmarshal(data, &rep)
			}
			if err != nil {
				v.Error = err.Error()
			} else {
				v.Valid, v.Forks, v.Checkpoints, v.LastTick, v.MaxEpoch, v.Holders = rep.Valid, len(rep.Forks), rep.Checkpoints, rep.LastTick, rep.MaxEpoch, len(rep.Holders)
				v.Error = rep.Error
				v.OK = rep.Valid && len(rep.Forks) == 0 && rep.DID == d
				if rep.DID != d && v.Error == "" {
					v.Error = fmt.Sprintf("the report is about %q", rep.DID)
				}
			}
			out[i] = v
		})
	}
	wg.Wait()
	return out
}

// writeFailover prints the --kill part of the report.
func writeFailover(b *strings.Builder, f *failoverReport) {
	o := &f.Outcome
	burn := "no"
	if f.Burn {
		burn = "one core busy in the harness"
	}
	fmt.Fprintf(b, "\nmass failover: SIGKILL %s at once (seed %d); survivors %s; observed %.0fs; burn: %s\n",
		strings.Join(f.Killed, ", "), f.Seed, strings.Join(f.Survivors, " "), f.ObserveS, burn)
	fmt.Fprintf(b, "at the kill:    %s; %d on the killed node(s), %d on survivors (%d of these with a killed group member); %d groups lost 2+ members\n",
		f.BaseTally, f.KilledAgents, f.SurvivorAgents, f.WithKilledMember, f.MajorityLost)
	fmt.Fprintf(b, "sampling:       %d samples of every survivor's /v1/custody (%d partial; largest gap %.2fs)\n", o.Samples, o.Partial, o.MaxGapS)
	r := o.Recovery
	fmt.Fprintf(b, "recovery:       %d/%d agents of the killed node(s) ran on a survivor, %d never; after the kill p50 %.2fs, p99 %.2fs, max %.2fs (min %.2fs); epoch +%d..+%d\n",
		r.Recovered, r.Agents, r.Never, r.P50S, r.P99S, r.MaxS, r.MinS, r.EpochUpMin, r.EpochUpMax)
	if len(r.NeverDIDs) > 0 {
		fmt.Fprintf(b, "  never back, e.g. %s\n", strings.Join(r.NeverDIDs[:min(3, len(r.NeverDIDs))], ", "))
	}
	fmt.Fprintf(b, "  stopped or moved again after recovering: %d", r.LostAgain)
	if r.LostAgain > 0 {
		fmt.Fprintf(b, " (%d running again by the end; running nowhere %s)", r.LostAgainBack, r.LostAgainGap)
	}
	b.WriteString("\n")
	for _, e := range r.LostAgainExample {
		fmt.Fprintf(b, "    %s\n", e)
	}
	fmt.Fprintf(b, "survivor stops: %d of %d agents running on survivors at the kill (expected 0)", o.SurvivorStops, o.SurvivorAgents)
	if o.SurvivorStops > 0 {
		var at []string
		for _, e := range o.Stops {
			at = append(at, fmt.Sprintf("%.1f", e.AtS))
		}
		fmt.Fprintf(b, "; first seen at s: %s\n  %d running again by the end; running nowhere %s", clip(strings.Join(at, " "), 300), o.StopsBack, o.StopGap)
	}
	b.WriteString("\n")
	for i, e := range o.Stops {
		if i == 10 {
			fmt.Fprintf(b, "  … %d more in the JSON\n", len(o.Stops)-10)
			break
		}
		back := "not running again"
		if e.BackS != nil {
			back = fmt.Sprintf("running again on %s at %.2fs", e.BackOn, *e.BackS)
		}
		fmt.Fprintf(b, "  %s on %s at %.2fs: %s (role %q, moving %v, epoch %d); %s\n", tail(e.DID, 10), e.Node, e.AtS, e.Kind, e.Role, e.Moving, e.Epoch, back)
	}
	fmt.Fprintf(b, "holder changes among survivors: %d\n", o.HolderChanges)
	fmt.Fprintf(b, "on 2+ nodes:    %d agents (%d confirmed: in 2 consecutive samples or at one epoch)\n", o.Dups.Agents, o.Dups.Confirmed)
	for _, e := range o.Dups.Examples {
		fmt.Fprintf(b, "  %s\n", e)
	}
	if f.FinalTally != nil {
		fmt.Fprintf(b, "at the end:     %s\n", f.FinalTally)
	}
	fmt.Fprintf(b, "ticks:          %d/%d agents ticked on since the kill\n", f.TicksAdvanced, f.TicksChecked)
	for _, s := range f.TicksStuck {
		fmt.Fprintf(b, "  not advanced: %s\n", s)
	}
	nok := 0
	var vs []string
	for _, v := range f.Verify {
		mark := "ok"
		if v.OK {
			nok++
		} else {
			mark = "FAIL " + clip(v.Error, 80)
		}
		k := ""
		if v.OfKilled {
			k = "*"
		}
		vs = append(vs, fmt.Sprintf("%s%s %dcp e%d %s", tail(v.DID, 6), k, v.Checkpoints, v.MaxEpoch, mark))
	}
	fmt.Fprintf(b, "verify:         %d/%d valid without forks (* of a killed node): %s\n", nok, len(f.Verify), strings.Join(vs, "; "))
	fmt.Fprintf(b, "CPU during the observation: machine %.1f%% of all cores; harness %.1f%% of one core\n", f.MachineBusyPct, f.HarnessCPUPct)

	if len(f.Series) > 0 {
		b.WriteString("time series after the kill (events within each step; running / nowhere at its last complete sample):\n")
		tw := tabwriter.NewWriter(b, 0, 4, 1, ' ', tabwriter.AlignRight)
		hdr := "t s\trunning\tnowhere\trecovered\tholder chg\tsurv stops\t2+ nodes\tsamples\t"
		for _, s := range f.Survivors {
			hdr += "cpu% " + s + "\t"
		}
		fmt.Fprintln(tw, hdr)
		for _, p := range f.Series {
			row := fmt.Sprintf("%.0f\t%d\t%d\t%d\t%d\t%d\t%d\t%d\t", p.T, p.Running, p.Missing, p.Recoveries, p.HolderChanges, p.Stops, p.DupAgents, p.Samples)
			for _, c := range p.CPUPct {
				row += fmt.Sprintf("%.0f\t", c)
			}
			fmt.Fprintln(tw, row)
		}
		tw.Flush()
	}
	if len(f.Logs) > 0 {
		b.WriteString("survivors' daemon.log since the kill: lines matching (killed-node agents/survivor agents/other):\n")
		tw := tabwriter.NewWriter(b, 0, 4, 2, ' ', 0)
		hdr := "pattern\t"
		for _, l := range f.Logs {
			hdr += fmt.Sprintf("%s (%d lines)\t", l.Node, l.Lines)
		}
		fmt.Fprintln(tw, hdr)
		for _, p := range logPatterns {
			row := p + "\t"
			for _, l := range f.Logs {
				c := l.Counts[p]
				row += fmt.Sprintf("%d/%d/%d\t", c[0], c[1], c[2])
			}
			fmt.Fprintln(tw, row)
		}
		tw.Flush()
		for _, l := range f.Logs {
			for _, e := range l.Examples {
				fmt.Fprintf(b, "  %s: %s\n", l.Node, e)
			}
		}
	}
	if f.OK {
		b.WriteString("FAILOVER OK\n")
	} else {
		b.WriteString("FAILOVER FAIL\n")
	}
}
