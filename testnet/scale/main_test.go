package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseArgsDefaults(t *testing.T) {
	cfg, err := parseArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Nodes != 3 || cfg.Agents != 300 || cfg.Window != 60*time.Second || cfg.Settle != 15*time.Second ||
		cfg.Parallel != 16 || cfg.Tick != time.Second || cfg.Keep || cfg.Dir != "" || cfg.JSON != "" ||
		cfg.Bin != "bin/igor-node" || cfg.Budget != 1000*1_000_000 {
		t.Errorf("defaults: %+v", cfg)
	}
	// ceil(300/3)*2+8 = 208; wait 60 s + 300/5 s.
	if cfg.Slots != 208 || cfg.Wait != 120*time.Second {
		t.Errorf("derived defaults: slots %d wait %v", cfg.Slots, cfg.Wait)
	}
}

func TestParseArgs(t *testing.T) {
	cfg, err := parseArgs([]string{"--nodes", "4", "--agents", "1000", "--window", "30", "--settle", "0",
		"--parallel", "8", "--dir", "D", "--keep", "--json", "r.json", "--bin", "B", "--wait", "90"})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Nodes != 4 || cfg.Agents != 1000 || cfg.Window != 30*time.Second || cfg.Settle != 0 || cfg.Parallel != 8 ||
		cfg.Dir != "D" || !cfg.Keep || cfg.JSON != "r.json" || cfg.Bin != "B" || cfg.Wait != 90*time.Second {
		t.Errorf("%+v", cfg)
	}
	if cfg.Slots != 508 { // ceil(1000/4)*2+8
		t.Errorf("slots %d, want 508", cfg.Slots)
	}
	if cfg, err := parseArgs([]string{"--nodes", "2", "--agents", "10", "--slots", "5"}); err != nil || cfg.Slots != 5 {
		t.Errorf("--slots 5: %d %v", cfg.Slots, err)
	}
	if _, err := parseArgs([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
}

func TestParseArgsErrors(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", "0"}, "--nodes must be from 1 to 64, got 0"},
		{[]string{"--nodes", "three"}, "three"},
		{[]string{"--agents", "0"}, "--agents must be from 1"},
		{[]string{"--parallel", "0"}, "--parallel must be from 1"},
		{[]string{"--window", "0"}, "--window must be from 1"},
		{[]string{"--window", "soon"}, "soon"},
		{[]string{"--settle", "-1"}, "--settle must be from 0"},
		{[]string{"--wait", "0"}, "--wait must be from 1"},
		{[]string{"--slots", "0"}, "--slots must be a positive number"},
		{[]string{"--nodes", "3", "--agents", "300", "--slots", "99"}, "3 nodes × 99 slots cannot run 300 agents"},
		{[]string{"--tick", "1ms"}, "--tick"},
		{[]string{"--budget", "0"}, "--budget"},
		{[]string{"--dir", ""}, "--dir must not be empty"},
		{[]string{"--json", " "}, "--json must not be empty"},
		{[]string{"extra"}, `unexpected argument "extra"`},
		{[]string{"--frobnicate"}, "frobnicate"},
	} {
		_, err := parseArgs(c.args)
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: got %v, want a usage error mentioning %q", c.args, err, c.want)
		}
	}
}

func TestRunUsageExitCodes(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"--agents", "-1"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--agents") {
		t.Errorf("bad usage: exit %d, stderr %q", code, errb.String())
	}
	out.Reset()
	if code := run([]string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "--parallel P") {
		t.Errorf("--help: exit %d, stdout %q", code, out.String())
	}
}

func TestDefaultSlots(t *testing.T) {
	for _, c := range []struct{ a, n, want int }{{300, 3, 208}, {1000, 3, 676}, {1, 1, 10}, {10, 3, 16}} {
		if got := defaultSlots(c.a, c.n); got != c.want {
			t.Errorf("defaultSlots(%d, %d) = %d, want %d", c.a, c.n, got, c.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses; utime 1234, stime 567.
	line := "4242 (igor (node) x) S 1 4242 4242 0 -1 4194560 9000 0 3 0 1234 567 0 0 20 0 12 0 100 2000000 5000 18446744073709551615\n"
	got, err := parseStat([]byte(line))
	if err != nil || got != 1801 {
		t.Errorf("parseStat = %d, %v; want 1801", got, err)
	}
	for _, bad := range []string{"", "4242 igor S 1", "4242 (igor) S 1 2 3", "4242 (igor) S 1 4242 4242 0 -1 4194560 9000 0 3 0 x 567 0"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) accepted", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tigor-node\nVmPeak:\t 2000000 kB\nVmRSS:\t  123456 kB\nRssAnon:\t 100 kB\n"
	if got, err := parseVmRSS([]byte(status)); err != nil || got != 123456 {
		t.Errorf("parseVmRSS = %d, %v", got, err)
	}
	if _, err := parseVmRSS([]byte("Name:\tkthreadd\n")); err == nil {
		t.Error("no VmRSS line accepted")
	}
	if _, err := parseVmRSS([]byte("VmRSS:\t12 MB\n")); err == nil {
		t.Error("a VmRSS in MB accepted")
	}
}

func TestParseSmapsRollupPss(t *testing.T) {
	// The Pss_* lines come after Pss and must not be taken for it.
	rollup := "55a5-7ffd ---p 00000000 00:00 0    [rollup]\nRss:\t  405504 kB\nPss:\t  243712 kB\nPss_Dirty:\t 1 kB\nPss_Anon:\t 2 kB\n"
	if got, err := parseSmapsRollupPss([]byte(rollup)); err != nil || got != 243712 {
		t.Errorf("parseSmapsRollupPss = %d, %v", got, err)
	}
	if _, err := parseSmapsRollupPss([]byte("Rss:\t 12 kB\nPss_Anon:\t 2 kB\n")); err == nil {
		t.Error("no Pss line accepted")
	}
	if _, err := parseSmapsRollupPss([]byte("Pss:\t12 MB\n")); err == nil {
		t.Error("a Pss in MB accepted")
	}
	if _, err := parseSmapsRollupPss([]byte("Pss:\tx kB\n")); err == nil {
		t.Error("a Pss that is not a number accepted")
	}
}

func TestParseCPUStat(t *testing.T) {
	data := "cpu  100 5 50 800 20 3 2 10 7 1\ncpu0 50 2 25 400 10 1 1 5 0 0\nintr 1\n"
	busy, total, err := parseCPUStat([]byte(data))
	// total: user..steal = 100+5+50+800+20+3+2+10 = 990; idle+iowait = 820.
	if err != nil || total != 990 || busy != 170 {
		t.Errorf("parseCPUStat = %d, %d, %v; want 170, 990", busy, total, err)
	}
	if _, _, err := parseCPUStat([]byte("cpu0 1 2 3 4\n")); err == nil {
		t.Error("no aggregate line accepted")
	}
}

func TestCPUModel(t *testing.T) {
	if got := cpuModel([]byte("processor\t: 0\nmodel name\t: AMD EPYC 7B13\nmodel name\t: other\n")); got != "AMD EPYC 7B13" {
		t.Errorf("cpuModel = %q", got)
	}
	if got := cpuModel([]byte("processor : 0\n")); got != "unknown" {
		t.Errorf("cpuModel without a model name = %q", got)
	}
}

func TestTally(t *testing.T) {
	pub := []string{"a", "b", "c", "d", "e"}
	per := [][]custodyStatus{
		{{DID: "a", Running: true}, {DID: "b"}, {DID: "c", Running: true}, {DID: "d", Moving: true}},
		{{DID: "a"}, {DID: "b", Running: true}, {DID: "c", Running: true}, {DID: "x", Running: true}},
		nil, // unreachable
	}
	got := tally(pub, per)
	want := tallyResult{Published: 5, ExactlyOnce: 2, Missing: 2, Moving: 1, Duplicated: 1, Unknown: 1, Unreachable: 1}
	got.Examples = nil
	if got.Published != want.Published || got.ExactlyOnce != want.ExactlyOnce || got.Missing != want.Missing ||
		got.Moving != want.Moving || got.Duplicated != want.Duplicated || got.Unknown != want.Unknown || got.Unreachable != want.Unreachable {
		t.Errorf("tally = %+v, want %+v", got, want)
	}
	if got.ok() {
		t.Error("ok with missing agents")
	}
	all := tally([]string{"a", "b"}, [][]custodyStatus{{{DID: "a", Running: true}}, {{DID: "b", Running: true}, {DID: "a"}}})
	if !all.ok() || all.ExactlyOnce != 2 {
		t.Errorf("all running once: %+v", all)
	}
	if r := tally([]string{"a"}, [][]custodyStatus{{{DID: "a", Running: true}}, nil}); r.ok() {
		t.Error("ok with an unreachable node")
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestComputeTotals(t *testing.T) {
	ms := []nodeMeasure{
		// 60 s window at 100 Hz: 3000 ticks = 30 s of CPU = 50% of one core.
		{Name: "n0", PID: 1, CPUTicks: 3000, RSSKiB: 300 * 1024, PSSKiB: 180 * 1024, PSSKnown: true, Memberships: 300, Running: 100},
		{Name: "n1", PID: 2, CPUTicks: 1500, RSSKiB: 200 * 1024, PSSKiB: 120 * 1024, PSSKnown: true, Memberships: 300, Running: 100},
		{Name: "n2", PID: 3, CPUTicks: 1500, RSSKiB: 100 * 1024, PSSKiB: 60 * 1024, PSSKnown: true, Memberships: 300, Running: 100},
	}
	rows, tot, err := computeTotals(ms, 100, 60*time.Second, 300)
	if err != nil {
		t.Fatal(err)
	}
	if !near(rows[0].CPUPct, 50) || !near(rows[0].CPUSec, 30) || !near(rows[0].RSSMiB, 300) || !near(rows[0].PSSMiB, 180) || !rows[0].PSSKnown || rows[0].Node != "n0" || rows[0].Running != 100 {
		t.Errorf("row 0: %+v", rows[0])
	}
	// 6000 ticks = 60 000 ms; 100% of one core; 60 000 / (300 × 60) = 3.333 ms;
	// 600 MiB RSS, 360 MiB PSS / 900 memberships.
	if !near(tot.CPUms, 60000) || !near(tot.CPUPct, 100) || !near(tot.CPUmsPerAgentSecond, 60000.0/18000) ||
		!near(tot.RSSMiB, 600) || tot.Memberships != 900 || tot.Running != 300 || !near(tot.RSSMiBPerMembership, 600.0/900) ||
		!tot.PSSKnown || !near(tot.PSSMiB, 360) || !near(tot.PSSMiBPerMembership, 360.0/900) {
		t.Errorf("totals: %+v", tot)
	}
	// One node's PSS unknown: its row and the totals' PSS are unknown, RSS is not.
	unk := slices.Clone(ms)
	unk[1].PSSKiB, unk[1].PSSKnown, unk[1].PSSError = 0, false, "smaps_rollup: no Pss line"
	rows, tot, _ = computeTotals(unk, 100, 60*time.Second, 300)
	if rows[1].PSSKnown || rows[1].PSSError == "" || !rows[0].PSSKnown || !near(rows[0].PSSMiB, 180) ||
		tot.PSSKnown || tot.PSSMiB != 0 || tot.PSSMiBPerMembership != 0 || !near(tot.RSSMiBPerMembership, 600.0/900) {
		t.Errorf("a node's PSS unknown: rows %+v, totals %+v", rows, tot)
	}
	// CLK_TCK 250, a 30 s window.
	_, tot, _ = computeTotals([]nodeMeasure{{CPUTicks: 750}}, 250, 30*time.Second, 10)
	if !near(tot.CPUms, 3000) || !near(tot.CPUPct, 10) || !near(tot.CPUmsPerAgentSecond, 10) || tot.RSSMiBPerMembership != 0 || tot.PSSMiBPerMembership != 0 {
		t.Errorf("hz 250: %+v", tot)
	}
	for _, c := range []struct {
		hz     int64
		wall   time.Duration
		agents int
	}{{0, time.Second, 1}, {100, 0, 1}, {100, time.Second, 0}} {
		if _, _, err := computeTotals(ms, c.hz, c.wall, c.agents); err == nil {
			t.Errorf("computeTotals(%d Hz, %v, %d agents) accepted", c.hz, c.wall, c.agents)
		}
	}
}

func TestTickVerdict(t *testing.T) {
	ok, hz := tickVerdict([]tickSample{{Delta: 60, RateHz: 1.0}, {Delta: 58, RateHz: 0.96}})
	if !ok || !near(hz, 0.98) {
		t.Errorf("advancing: %v %v", ok, hz)
	}
	if ok, _ := tickVerdict([]tickSample{{Delta: 60, RateHz: 1}, {Delta: 0}}); ok {
		t.Error("a stuck agent passed")
	}
	if ok, _ := tickVerdict([]tickSample{{Error: "timeout"}}); ok {
		t.Error("an unanswered sample passed")
	}
	if ok, _ := tickVerdict(nil); ok {
		t.Error("no samples passed")
	}
}

func TestReportPSS(t *testing.T) {
	ms := []nodeMeasure{
		{Name: "n0", PID: 1, CPUTicks: 100, RSSKiB: 396 * 1024, PSSKiB: 238 * 1024, PSSKnown: true, Memberships: 200, Running: 100},
		{Name: "n1", PID: 2, CPUTicks: 100, RSSKiB: 396 * 1024, PSSKiB: 238 * 1024, PSSKnown: true, Memberships: 200, Running: 100},
	}
	report := func(ms []nodeMeasure) string {
		var out bytes.Buffer
		h := newHarness(config{Nodes: 2, Agents: 200, Tick: time.Second}, &out, io.Discard)
		rows, tot, err := computeTotals(ms, 100, 10*time.Second, 200)
		if err != nil {
			t.Fatal(err)
		}
		h.rep.Nodes, h.rep.Totals, h.rep.Machine.NProc = rows, &tot, 1
		h.printReport()
		return out.String()
	}
	got := report(ms)
	for _, want := range []string{"RSS MiB  PSS MiB", "MiB RSS per membership:    1.980 (792.0 MiB / 400 memberships)",
		"MiB PSS per membership:    1.190 (476.0 MiB / 400 memberships; PSS counts a page shared by several mappings once"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	// n1's smaps_rollup unreadable, n0's malformed: "-", unknown, a warning.
	ms[0].PSSKiB, ms[0].PSSKnown, ms[0].PSSError = 0, false, "pid 1: smaps_rollup: no Pss line"
	ms[1].PSSKiB, ms[1].PSSKnown = 0, false
	got = report(ms)
	for _, want := range []string{"MiB PSS per membership:    unknown", "WARNING: n0 PSS unknown: pid 1: smaps_rollup: no Pss line", "396.0        -"} {
		if !strings.Contains(got, want) {
			t.Errorf("report lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "WARNING: n1") {
		t.Errorf("an unreadable smaps_rollup warned:\n%s", got)
	}
}
