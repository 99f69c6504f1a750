package main

// One fault: pick a victim, cut, heal, measure, settle, look.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// faultRecord is what one fault showed.
type faultRecord struct {
	ID     int     `json:"id"`
	Kind   string  `json:"kind"`
	Victim string  `json:"victim"`
	Params string  `json:"params"`
	StartS float64 `json:"start_s"`
	HealS  float64 `json:"heal_s"`
	CutS   float64 `json:"cut_s"` // from the fault to its heal
	Held   int     `json:"held_by_victim"`
	// Takeovers: seconds from the fault to another node running each agent
	// the victim ran; Kept: agents the victim still ran afterwards with no
	// takeover.
	Takeovers []float64 `json:"takeover_s"`
	Kept      int       `json:"kept"`
	// Moved: agents another node ran less than minTakeover after the
	// fault began (a handoff already under way), not counted as takeovers.
	Moved int `json:"moved_before"`
	// RejoinS: from the heal (kill9: the restart) until the node hears, and
	// is heard by, every group it is a member of; nil if not within 30 s.
	RejoinS       *float64       `json:"rejoin_s"`
	RejoinPending []string       `json:"rejoin_pending,omitempty"`
	NoGroup       bool           `json:"in_no_live_group,omitempty"` // nothing to rejoin: every group it was in replaced it
	Changes       []memberChange `json:"membership_changes"`
	Needless      int            `json:"needless_regroups"`
	AtBound       int            `json:"regroups_at_bound"`
	Moves         int            `json:"moves_dropping_victim"`
	OtherChanges  int            `json:"other_changes"`
	NewStale      []string       `json:"stale_after_settle"`
	Violations    []violation    `json:"violations"`
	PastLease     int            `json:"running_past_lease_end"`
	Settled       bool           `json:"settled"`
	SettleS       float64        `json:"settle_s"`
	Notes         []string       `json:"notes,omitempty"`

	afterwards func() // a look at the daemon's log once the rejoin is measured
}

// fault runs one fault to its settle.
func (h *harness) fault(ctx context.Context, id int, f faultSpec, rng *rand.Rand) error {
	// Start from a settled mesh.
	if err := h.waitStable(ctx, 45*time.Second); err != nil {
		h.logf("fault %d: the mesh is not settled (%v); going on", id, err)
	}
	victim, held := h.pickVictim(f.Kind, rng)
	if victim == nil {
		return errors.New("no node holds an agent")
	}
	rec := &faultRecord{ID: id, Kind: f.Kind, Victim: victim.name(), Params: f.describe(), Held: len(held)}
	h.faults = append(h.faults, rec)
	h.mu.Lock()
	nPast := len(h.tr.pastLease)
	nViol := len(h.tr.violations)
	nChg := len(h.tr.changes)
	h.mu.Unlock()

	// Armed before the cut: takeovers happen during it.
	w := func() *takeoverWatch {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.tr.watch(victim.Peer, time.Now(), held)
	}()
	defer func() { h.mu.Lock(); h.tr.unwatch(w); h.mu.Unlock() }()
	var start, heal time.Time
	var err error
	switch f.Kind {
	case kIsolateShort, kIsolateLong, kIsolateEvict:
		start, heal, err = h.timed(ctx, f.Dur, func() error { return setIsolated(victim.Index, true) }, func() error { return setIsolated(victim.Index, false) })
	case kLossOut:
		start, heal, err = h.timed(ctx, f.Dur,
			func() error { return setLoss(victim.Index, h.others(victim), true) },
			func() error { return setLoss(victim.Index, h.others(victim), false) })
	case kLossIn:
		start, heal, err = h.timed(ctx, f.Dur,
			func() error { return h.lossInto(victim, true) },
			func() error { return h.lossInto(victim, false) })
	case kFlap:
		start = time.Now()
		for i, c := range f.Cycles {
			if err = setLinkDown(victim.Index, true); err != nil {
				break
			}
			_ = sleep(ctx, c[0])
			if err = setLinkDown(victim.Index, false); err != nil {
				break
			}
			heal = time.Now()
			if i < len(f.Cycles)-1 {
				_ = sleep(ctx, c[1])
			}
		}
	case kStop:
		start, heal, err = h.stopInTick(ctx, victim, held, f.Dur, rec)
	case kKill:
		start, heal, err = h.killAfterCommit(ctx, victim, f.Dur, rec)
	default:
		err = fmt.Errorf("unknown fault kind %q", f.Kind)
	}
	if err != nil {
		return err
	}
	rec.StartS, rec.HealS = round1(start.Sub(h.t0).Seconds()), round1(heal.Sub(h.t0).Seconds())
	rec.CutS = round2(heal.Sub(start).Seconds())
	h.logf("fault %d %s on %s (%s): cut %.2fs, it held %d agents", id, f.Kind, victim.name(), rec.Params, rec.CutS, len(held))
	// Rejoin: poll every 100 ms for up to 30 s.
	rj := time.Now().Add(30 * time.Second)
	lastNote := time.Now()
	for {
		s := h.readAll(ctx)
		done, pending, counted := rejoined(s, victim.Peer, heal)
		if done && counted == 0 {
			rec.NoGroup = true
			break
		}
		if done {
			v := round2(s.At.Sub(heal).Seconds())
			rec.RejoinS = &v
			break
		}
		if time.Now().After(rj) || ctx.Err() != nil {
			rec.RejoinPending = pending
			break
		}
		if time.Since(lastNote) >= 5*time.Second {
			h.logf("fault %d: %s not rejoined %.0fs after the heal: %d groups wait (%s)", id, victim.name(), time.Since(heal).Seconds(), len(pending), shortList(pending))
			lastNote = time.Now()
		}
		_ = sleep(ctx, 100*time.Millisecond)
	}
	if rec.afterwards != nil {
		rec.afterwards()
	}
	// Settle: every agent runs once, at least 5 s after the heal.
	_ = sleep(ctx, time.Until(heal.Add(5*time.Second)))
	serr := h.waitStable(ctx, 45*time.Second)
	rec.Settled = serr == nil
	if serr != nil {
		rec.Notes = append(rec.Notes, "not settled: "+serr.Error())
	}
	rec.SettleS = round1(time.Since(heal).Seconds())
	_ = sleep(ctx, 2*time.Second) // a change right after the settle belongs to this fault
	fs := h.censusStep(ctx, id)

	h.mu.Lock()
	for _, d := range held {
		at, ok := w.found[d]
		switch {
		case !ok:
			rec.Kept++
		case at.Sub(start) < minTakeover:
			// Faster than any takeover can be (a standby waits 1.8 s after
			// the last heartbeat it heard): a handoff that was under way.
			rec.Moved++
		default:
			rec.Takeovers = append(rec.Takeovers, round2(at.Sub(start).Seconds()))
		}
	}
	rec.PastLease = len(h.tr.pastLease) - nPast
	rec.Violations = slices.Clone(h.tr.violations[nViol:])
	rec.Changes = slices.Clone(h.tr.changes[nChg:])
	h.mu.Unlock()
	for _, c := range rec.Changes {
		switch classifyChange(c, victim.Peer, start, heal) {
		case "needless":
			rec.Needless++
		case "at bound":
			rec.AtBound++
		case "move":
			rec.Moves++
		default:
			rec.OtherChanges++
		}
	}
	h.mu.Lock()
	for _, f := range fs {
		if st := h.stale[f.String()]; st != nil && st.FaultID == id {
			rec.NewStale = append(rec.NewStale, f.String())
		}
	}
	h.mu.Unlock()
	var rj2 string
	switch {
	case rec.NoGroup:
		rj2 = "n/a (in no live group any more)"
	case rec.RejoinS != nil:
		rj2 = fmt.Sprintf("%.2fs", *rec.RejoinS)
	default:
		rj2 = "NOT within 30s (" + strings.Join(rec.RejoinPending, ",") + ")"
	}
	h.logf("fault %d %s on %s: takeovers %v, kept %d, rejoin %s, membership changes %d (needless %d, at bound %d, moves %d), stale %v, violations %d, past lease %d",
		id, f.Kind, victim.name(), rec.Takeovers, rec.Kept, rj2, len(rec.Changes), rec.Needless, rec.AtBound, rec.Moves, rec.NewStale, len(rec.Violations), rec.PastLease)
	for _, c := range rec.Changes {
		h.logf("  membership …%s at t+%.1fs: %s -> %s (%s)", tail(c.DID, 6), c.AtS, c.FromS, c.ToS, classifyChange(c, victim.Peer, start, heal))
	}
	return nil
}

// minTakeover: no takeover can follow a fault sooner. A standby acts 1.8 s
// after the last heartbeat it heard and the holder renews every 0.5 s.
const minTakeover = time.Second

// classifyChange says whether a membership change during a fault was
// needed. Removing the victim is "at bound" when the cut itself lasted
// regroupAfter or more (the holder had to replace a member it could not
// hear, even if the change commits after the heal); after a shorter cut it
// is "needless" — also when the node stayed deaf after the heal until the
// bound passed (a slow rejoin is the cause then). Removing it in a move
// back toward a former member (Returning: a placement review's regroup,
// which leaves out members not live at that instant) is a "move". Other
// changes (adding the victim back, groups it was not in) are "other".
func classifyChange(c memberChange, victim string, start, heal time.Time) string {
	if !slices.Contains(c.From, victim) || slices.Contains(c.To, victim) {
		return "other"
	}
	if c.Returning {
		return "move"
	}
	if heal.Sub(start) >= regroupAfter {
		return "at bound"
	}
	return "needless"
}

// timed applies a fault, waits d, heals it.
func (h *harness) timed(ctx context.Context, d time.Duration, cut, heal func() error) (time.Time, time.Time, error) {
	start := time.Now()
	if err := cut(); err != nil {
		_ = heal()
		return start, start, err
	}
	_ = sleep(ctx, d)
	at := time.Now()
	return start, at, heal()
}

func (h *harness) others(v *daemon) []int {
	var out []int
	for _, n := range h.nodes {
		if n != v {
			out = append(out, n.Index)
		}
	}
	return out
}

func (h *harness) lossInto(v *daemon, on bool) error {
	var errs []error
	for _, n := range h.nodes {
		if n != v {
			errs = append(errs, setLoss(n.Index, []int{v.Index}, on))
		}
	}
	return errors.Join(errs...)
}

// pickVictim picks a node that runs at least one agent (a slowtick agent
// for sigstop) and returns it with the agents it runs.
func (h *harness) pickVictim(kind string, rng *rand.Rand) (*daemon, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var cands []*daemon
	for _, n := range h.nodes {
		held := h.tr.runningOn(n.Peer, h.dids)
		if len(held) == 0 {
			continue
		}
		if kind == kStop && !slices.ContainsFunc(held, func(d string) bool { return h.kindOf(d) == "slowtick" }) {
			continue
		}
		cands = append(cands, n)
	}
	if len(cands) == 0 {
		return nil, nil
	}
	v := cands[rng.IntN(len(cands))]
	return v, h.tr.runningOn(v.Peer, h.dids)
}

func (h *harness) kindOf(did string) string {
	for _, a := range h.agents {
		if a.DID == did {
			return a.Kind
		}
	}
	return ""
}

// stopInTick waits for a slowtick agent of victim to log a tick, then
// stops the daemon 1 tick interval + a third of the spin later (inside
// the next tick) for d and continues it. The daemon log then says whether
// the pause was granted to the tick in flight.
func (h *harness) stopInTick(ctx context.Context, v *daemon, held []string, d time.Duration, rec *faultRecord) (time.Time, time.Time, error) {
	var shorts []string
	for _, did := range held {
		if h.kindOf(did) == "slowtick" {
			shorts = append(shorts, "…"+tail(did, 4))
		}
	}
	logPath := filepath.Join(v.Home, "daemon.log")
	fi, err := os.Stat(logPath)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	off := fi.Size()
	tick, _ := time.ParseDuration(h.cfg.Tick)
	deadline := time.Now().Add(10 * time.Second)
	for {
		data := readFrom(logPath, off)
		if idx := tickLine(data, shorts); idx >= 0 {
			break
		}
		if time.Now().After(deadline) {
			rec.Notes = append(rec.Notes, "no slowtick tick line seen in 10 s; stopped at a random instant")
			break
		}
		_ = sleep(ctx, 20*time.Millisecond)
	}
	_ = sleep(ctx, tick+time.Duration(h.cfg.SpinMs)*time.Millisecond/3)
	logOff := fileSize(logPath)
	pid := v.PID()
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		return start, start, err
	}
	_ = sleep(ctx, d)
	heal := time.Now()
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		return start, heal, err
	}
	// D54: the pause watch logs a granted pause; a cut tick is logged
	// too. Read after the rejoin is measured (fault calls this).
	rec.afterwards = func() {
		after := readFrom(logPath, logOff)
		switch {
		case bytesContainsLine(after, "the host paused during a call"):
			rec.Notes = append(rec.Notes, "pause granted to the tick in flight")
		case bytesContainsLine(after, "agent tick cut by a host pause"):
			rec.Notes = append(rec.Notes, "tick cut by the pause (its lease ended meanwhile), not counted as the agent's failure")
		case bytesContainsLine(after, "longer than"):
			rec.Notes = append(rec.Notes, "PAUSE BLAMED ON THE AGENT (a tick ran longer than its deadline)")
		default:
			rec.Notes = append(rec.Notes, "no pause logged (it may have fallen between ticks)")
		}
	}
	return start, heal, nil
}

func shortList(dids []string) string {
	out := make([]string, len(dids))
	for i, d := range dids {
		out[i] = "…" + tail(d, 6)
	}
	return strings.Join(out, ",")
}

func tickLine(data []byte, shorts []string) int {
	for _, s := range shorts {
		if bytesContainsLine(data, "slowtick: tick", s) {
			return 0
		}
	}
	return -1
}

func readFrom(path string, off int64) []byte {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	if _, err := f.Seek(off, 0); err != nil {
		return nil
	}
	buf := make([]byte, 1<<20)
	n, _ := f.Read(buf)
	return buf[:n]
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// killAfterCommit polls the victim's custody every 50 ms until one of its
// running agents' accepted seq grows, SIGKILLs it at once, and restarts
// it down later. heal is the restart.
func (h *harness) killAfterCommit(ctx context.Context, v *daemon, down time.Duration, rec *faultRecord) (time.Time, time.Time, error) {
	prev := map[string]uint64{}
	deadline := time.Now().Add(15 * time.Second)
	for {
		data, err := h.get(ctx, v, "/v1/custody", time.Second)
		var sts []custodyStatus
		if err == nil && json.Unmarshal(data, &sts) == nil {
			hit := ""
			for _, st := range sts {
				if st.Running && st.Role == "holder" {
					if p, ok := prev[st.DID]; ok && st.AcceptedSeq > p {
						hit = fmt.Sprintf("killed right after …%s's seq %d", tail(st.DID, 6), st.AcceptedSeq)
					}
					prev[st.DID] = st.AcceptedSeq
				}
			}
			if hit != "" {
				rec.Notes = append(rec.Notes, hit)
				break
			}
		}
		if time.Now().After(deadline) {
			rec.Notes = append(rec.Notes, "no commit seen in 15 s; killed anyway")
			break
		}
		_ = sleep(ctx, 50*time.Millisecond)
	}
	pid := v.PID()
	start := time.Now()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		return start, start, err
	}
	v.mu.Lock()
	exited := v.exited
	v.mu.Unlock()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		return start, start, fmt.Errorf("%s (pid %d) still runs 10 s after SIGKILL", v.name(), pid)
	}
	_ = sleep(ctx, down-time.Since(start))
	heal := time.Now()
	if err := h.start(ctx, v); err != nil {
		return start, heal, fmt.Errorf("restart: %w", err)
	}
	return start, heal, nil
}

// ---------------------------------------------------------------------------
// The end.

type verifyResult struct {
	DID      string `json:"did"`
	Kind     string `json:"kind"`
	Via      string `json:"via"`
	Valid    bool   `json:"valid"`
	Forks    int    `json:"forks"`
	LastSeq  uint64 `json:"last_seq"`
	LastTick uint64 `json:"last_tick"`
	MaxEpoch uint64 `json:"max_epoch"`
	Commit   uint64 `json:"highest_committed_seen"`
	Error    string `json:"error,omitempty"`
}

type finalReport struct {
	ExactlyOnce int                `json:"exactly_once"`
	Stale       []staleFinding     `json:"stale_left"`
	Verify      []verifyResult     `json:"verify"`
	MaxNowhereS map[string]float64 `json:"max_running_nowhere_s"`
}

func (h *harness) finalChecks(ctx context.Context) {
	if err := h.waitStable(ctx, 30*time.Second); err != nil {
		h.fail("at the end: %v", err)
	}
	h.mu.Lock()
	h.final.ExactlyOnce, _ = h.tr.exactlyOnce(h.dids)
	h.mu.Unlock()
	fs := h.censusStep(ctx, -1)
	h.final.Stale = fs
	for _, f := range fs {
		h.fail("after the final settle %s still has the %s of agent …%s (not a member)", f.Node, f.What, tail(f.DID, 6))
	}
	vh := filepath.Join(h.cfg.Dir, "verify-home")
	_ = os.MkdirAll(vh, 0o700)
	h.mu.Lock()
	committed := maps.Clone(h.tr.committed)
	h.final.MaxNowhereS = map[string]float64{}
	for d, g := range h.tr.maxNowhere {
		h.final.MaxNowhereS[tail(d, 6)] = round1(g.Seconds())
	}
	h.mu.Unlock()
	for i, a := range h.agents {
		n := h.nodes[i%len(h.nodes)]
		r := verifyResult{DID: a.DID, Kind: a.Kind, Via: n.name(), Commit: committed[a.DID]}
		vctx, cancel := context.WithTimeout(ctx, time.Minute)
		cmd := nsCommand(vctx, n.Index, h.cfg.Bin, "--home", vh, "verify", "--json", "--api", "127.0.0.1:5001", a.DID)
		out, err := cmd.Output()
		cancel()
		var rep struct {
			Valid    bool              `json:"valid"`
			Error    string            `json:"error"`
			LastSeq  uint64            `json:"last_seq"`
			LastTick uint64            `json:"last_tick"`
			MaxEpoch uint64            `json:"max_epoch"`
			Forks    []json.RawMessage `json:"forks"`
		}
		if jerr := json.Unmarshal(out, &rep); jerr != nil {
			r.Error = fmt.Sprintf("igor-node verify: %v: %.200s", err, out)
		} else {
			r.Valid, r.LastSeq, r.LastTick, r.MaxEpoch, r.Forks = rep.Valid, rep.LastSeq, rep.LastTick, rep.MaxEpoch, len(rep.Forks)
			r.Error = rep.Error
		}
		switch {
		case !r.Valid:
			h.fail("verify …%s via %s: not VALID: %s", tail(a.DID, 6), n.name(), r.Error)
		case r.Forks > 0:
			h.fail("verify …%s: %d fork(s)", tail(a.DID, 6), r.Forks)
		case r.LastSeq < r.Commit:
			h.fail("verify …%s: lineage ends at seq %d, seq %d was committed", tail(a.DID, 6), r.LastSeq, r.Commit)
		}
		h.final.Verify = append(h.final.Verify, r)
	}
}

// kindSummary aggregates the faults of one kind.
type kindSummary struct {
	Kind        string  `json:"kind"`
	Count       int     `json:"count"`
	Takeovers   int     `json:"takeovers"`
	TakeoverP50 float64 `json:"takeover_p50_s"`
	TakeoverMax float64 `json:"takeover_max_s"`
	Rejoins     int     `json:"rejoins_measured"`
	RejoinP50   float64 `json:"rejoin_p50_s"`
	RejoinMax   float64 `json:"rejoin_max_s"`
	RejoinOver  int     `json:"rejoin_over_2s"`
	NoRejoin    int     `json:"rejoin_missing"`
	Needless    int     `json:"needless_regroups"`
	AtBound     int     `json:"regroups_at_bound"`
	Moves       int     `json:"moves_dropping_victim"`
	Other       int     `json:"other_changes"`
	Stale       int     `json:"stale_after_settle"`
	StaleLeft   int     `json:"stale_left_at_end"`
	Violations  int     `json:"violations"`
	PastLease   int     `json:"running_past_lease_end"`
}

func summarize(faults []*faultRecord, left map[int]int) []kindSummary {
	var out []kindSummary
	for _, k := range kinds {
		s := kindSummary{Kind: k}
		var tk, rj []float64
		for _, f := range faults {
			if f.Kind != k {
				continue
			}
			s.Count++
			tk = append(tk, f.Takeovers...)
			if f.RejoinS != nil {
				rj = append(rj, *f.RejoinS)
				if *f.RejoinS > rejoinGoal.Seconds() {
					s.RejoinOver++
				}
			} else if !f.NoGroup {
				s.NoRejoin++
			}
			s.Needless += f.Needless
			s.AtBound += f.AtBound
			s.Moves += f.Moves
			s.Other += f.OtherChanges
			s.Stale += len(f.NewStale)
			s.StaleLeft += left[f.ID]
			s.Violations += len(f.Violations)
			s.PastLease += f.PastLease
		}
		if s.Count == 0 {
			continue
		}
		s.Takeovers, s.Rejoins = len(tk), len(rj)
		s.TakeoverP50, s.TakeoverMax = nanZero(percentile(tk, 50)), nanZero(percentile(tk, 100))
		s.RejoinP50, s.RejoinMax = nanZero(percentile(rj, 50)), nanZero(percentile(rj, 100))
		out = append(out, s)
	}
	return out
}

func nanZero(f float64) float64 {
	if math.IsNaN(f) {
		return 0
	}
	return f
}

// report prints the tables, writes the JSON and decides the exit code.
func (h *harness) report() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	left := map[int]int{}
	for _, st := range h.stale {
		if !st.Cleared {
			left[st.FaultID]++
		}
	}
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tKIND\tNODE\tPARAMS\tHELD\tTAKEOVER s\tKEPT\tREJOIN s\tCHANGES (needless/bound/move/other)\tSTALE\tVIOL\tPAST LEASE")
	for _, f := range h.faults {
		rj := "NONE"
		if f.NoGroup {
			rj = "no group"
		}
		if f.RejoinS != nil {
			rj = fmt.Sprintf("%.2f", *f.RejoinS)
		}
		var tk []string
		for _, t := range f.Takeovers {
			tk = append(tk, fmt.Sprintf("%.1f", t))
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%d\t%s\t%d/%d/%d/%d\t%d\t%d\t%d\n", f.ID, f.Kind, f.Victim, f.Params, f.Held,
			strings.Join(tk, ","), f.Kept, rj, f.Needless, f.AtBound, f.Moves, f.OtherChanges, len(f.NewStale), len(f.Violations), f.PastLease)
	}
	tw.Flush()
	sums := summarize(h.faults, left)
	b.WriteString("\n")
	tw = tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "KIND\tN\tTAKEOVERS p50/max s\tREJOIN p50/max s\t>2s\tNONE\tNEEDLESS\tAT BOUND\tMOVE\tOTHER\tSTALE (left)\tVIOL\tPAST LEASE")
	for _, s := range sums {
		rj := "—" // every heal left the node in no live group
		if s.Rejoins > 0 {
			rj = fmt.Sprintf("%.2f/%.2f", s.RejoinP50, s.RejoinMax)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d: %.2f/%.2f\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%d (%d)\t%d\t%d\n", s.Kind, s.Count, s.Takeovers, s.TakeoverP50, s.TakeoverMax,
			rj, s.RejoinOver, s.NoRejoin, s.Needless, s.AtBound, s.Moves, s.Other, s.Stale, s.StaleLeft, s.Violations, s.PastLease)
	}
	tw.Flush()
	valid := 0
	for _, v := range h.final.Verify {
		if v.Valid && v.Forks == 0 && v.LastSeq >= v.Commit {
			valid++
		}
	}
	fmt.Fprintf(&b, "\nverify: %d/%d VALID (no fork, nothing committed lost); at the end %d/%d agents run exactly once; stale left %d\n",
		valid, len(h.final.Verify), h.final.ExactlyOnce, len(h.dids), len(h.final.Stale))
	fmt.Fprintf(&b, "violations (two runners, committed seq backwards): %d; statuses running past their lease end: %d\n", len(h.tr.violations), len(h.tr.pastLease))
	// Liveness goals of the issue: findings, reported; safety: failures.
	var goals []string
	for _, s := range sums {
		if s.RejoinOver+s.NoRejoin > 0 {
			goals = append(goals, fmt.Sprintf("%s: %d of %d heals rejoined later than 2 s or not at all", s.Kind, s.RejoinOver+s.NoRejoin, s.Count))
		}
		if s.Needless > 0 {
			goals = append(goals, fmt.Sprintf("%s: %d needless regroups", s.Kind, s.Needless))
		}
	}
	if len(h.tr.pastLease) > 0 {
		goals = append(goals, fmt.Sprintf("%d statuses said running past their lease end", len(h.tr.pastLease)))
	}
	for _, f := range h.faults {
		for _, n := range f.Notes {
			if strings.HasPrefix(n, "PAUSE BLAMED") {
				h.failures = append(h.failures, fmt.Sprintf("fault %d (%s on %s): %s", f.ID, f.Kind, f.Victim, n))
			}
		}
	}
	for _, v := range h.tr.violations {
		h.failures = append(h.failures, fmt.Sprintf("%s …%s at t+%.1fs: %s", v.Kind, tail(v.DID, 6), v.AtS, v.Detail))
	}
	ok := len(h.failures) == 0 && len(goals) == 0
	for _, g := range goals {
		fmt.Fprintf(&b, "GOAL MISSED: %s\n", g)
	}
	for _, f := range h.failures {
		fmt.Fprintf(&b, "FAILURE: %s\n", f)
	}
	if ok {
		b.WriteString("FAULTS OK\n")
	} else {
		fmt.Fprintf(&b, "FAULTS FAIL: %d failures, %d goals missed [seed %d]\n", len(h.failures), len(goals), h.cfg.Seed)
	}
	h.logMu.Lock()
	fmt.Fprint(h.out, b.String())
	if h.logFile != nil {
		fmt.Fprint(h.logFile, b.String())
	}
	h.logMu.Unlock()

	var staleAll []*staleSeen
	for _, st := range h.stale {
		staleAll = append(staleAll, st)
	}
	slices.SortFunc(staleAll, func(a, b *staleSeen) int { return a.First.Compare(b.First) })
	type staleJSON struct {
		Finding  string  `json:"finding"`
		Fault    int     `json:"fault"`
		FirstS   float64 `json:"first_s"`
		ClearedS float64 `json:"cleared_s,omitempty"`
		Left     bool    `json:"left_at_end"`
	}
	var sj []staleJSON
	for _, st := range staleAll {
		j := staleJSON{Finding: st.F.String(), Fault: st.FaultID, FirstS: round1(st.First.Sub(h.t0).Seconds()), Left: !st.Cleared}
		if st.Cleared {
			j.ClearedS = round1(st.ClearedAt.Sub(h.t0).Seconds())
		}
		sj = append(sj, j)
	}
	rep := map[string]any{
		"ok": ok, "seed": h.cfg.Seed, "nodes": h.cfg.Nodes, "agents": h.cfg.Agents, "slowtick": h.cfg.Slow,
		"fault_time_s": h.cfg.Duration.Seconds(), "long_cut_s": h.cfg.LongCut.Seconds(), "tick_interval": h.cfg.Tick,
		"date": h.t0.UTC().Format(time.RFC3339), "summary": sums, "faults": h.faults, "final": h.final,
		"violations": h.tr.violations, "running_past_lease_end": h.tr.pastLease, "stale": sj,
		"failures": h.failures, "goals_missed": goals, "samples": h.tr.samples,
	}
	data, err := json.MarshalIndent(rep, "", "  ")
	if err == nil {
		err = os.WriteFile(h.cfg.JSON, append(data, '\n'), 0o644)
	}
	if err != nil {
		fmt.Fprintf(h.out, "cannot write %s: %v\n", h.cfg.JSON, err)
	} else {
		fmt.Fprintf(h.out, "report: %s, log: %s\n", h.cfg.JSON, filepath.Join(h.cfg.Dir, "faults.log"))
	}
	if ok {
		return 0
	}
	return 1
}
