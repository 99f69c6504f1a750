package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func TestParseArgs(t *testing.T) {
	cfg, err := parseArgs(nil, env(nil))
	if err != nil || cfg.Dir != "testnet/chaos-run" || cfg.Duration != 2*time.Minute || cfg.Nodes != 5 || cfg.Agents != 3 || cfg.Tick != "200ms" || cfg.Slots != "4" {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
	for _, args := range [][]string{
		{"D", "--seconds", "40", "--nodes", "7", "--agents", "20", "--seed", "9"},
		{"--seconds", "40", "--nodes", "7", "D", "--agents", "20", "--seed", "9"},
		{"--seconds", "40", "--nodes", "7", "--agents", "20", "--seed", "9", "D"},
	} {
		cfg, err := parseArgs(args, env(map[string]string{"TICK": "100ms", "SLOTS": "8"}))
		if err != nil || cfg.Dir != "D" || cfg.Duration != 40*time.Second || cfg.Nodes != 7 || cfg.Agents != 20 || cfg.Seed != 9 || cfg.Tick != "100ms" || cfg.Slots != "8" {
			t.Errorf("%q: %+v %v", args, cfg, err)
		}
	}
	if cfg, err := parseArgs([]string{"--minutes", "10"}, env(nil)); err != nil || cfg.Duration != 10*time.Minute {
		t.Errorf("--minutes 10: %v %v", cfg.Duration, err)
	}
	if _, err := parseArgs([]string{"--help"}, env(nil)); !errors.Is(err, flag.ErrHelp) {
		t.Errorf("--help: %v", err)
	}
	bad := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--minutes", "1", "--seconds", "5"}, nil, "not both"},
		{[]string{"--nodes", "1"}, nil, "--nodes"},
		{[]string{"--agents", "0"}, nil, "--agents"},
		{[]string{"--seconds", "0"}, nil, "duration"},
		{[]string{"--seed", "-3"}, nil, "--seed"},
		{[]string{"A", "B"}, nil, `"B"`},
		{[]string{"--frobnicate"}, nil, "frobnicate"},
		{[]string{"--nodes", "many"}, nil, "many"},
		{nil, map[string]string{"TICK": "fast"}, "TICK"},
		{nil, map[string]string{"SLOTS": "0"}, "SLOTS"},
	}
	for _, c := range bad {
		_, err := parseArgs(c.args, env(c.env))
		if !errors.Is(err, errUsage) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q %v: got %v, want a usage error mentioning %q", c.args, c.env, err, c.want)
		}
	}
}

func TestParseStatus(t *testing.T) {
	const did = "did:key:z6MkA"
	st, err := parseStatus([]byte(`{"did":"did:key:z6MkA","holder":"P","epoch":2,"seq":7,"tick":35,"head":"bafyH","last_update":"2026-01-01T00:00:00Z"}`), did)
	if err != nil || st.Seq != 7 || st.Tick != 35 || st.Epoch != 2 || st.Head != "bafyH" || st.Holder != "P" {
		t.Fatalf("%+v %v", st, err)
	}
	for _, in := range []string{`{"did":"did:key:other","head":"h"}`, `{"did":"did:key:z6MkA"}`, `not json`} {
		if _, err := parseStatus([]byte(in), did); err == nil {
			t.Errorf("%s: accepted", in)
		}
	}
}

func obsWith(steps ...status) *agentObs {
	a := newAgentObs("a1", "did:key:z6MkA")
	for i, st := range steps {
		st.DID = a.DID
		a.record(st, time.Duration(i)*time.Second)
	}
	return a
}

func TestRecordCountsOnlyNewHighTicks(t *testing.T) {
	a := obsWith(
		status{Seq: 1, Tick: 5, Head: "c1", Epoch: 1},
		status{Seq: 2, Tick: 10, Head: "c2", Epoch: 1},
		status{Seq: 1, Tick: 5, Head: "c1", Epoch: 1}, // a node with an older record
		status{Seq: 2, Tick: 10, Head: "c2x", Epoch: 2},
		status{Seq: 3, Tick: 15, Head: "c3", Epoch: 2},
	)
	if len(a.incs) != 3 || a.incs[2] != (tickEvent{4 * time.Second, 15}) || a.maxTick != 15 {
		t.Fatalf("increases %v max %d", a.incs, a.maxTick)
	}
	if got := a.heads[2]; len(got) != 2 || got[0] != "c2" || got[1] != "c2x" {
		t.Fatalf("heads at seq 2: %v", got)
	}
	if len(a.heads[1]) != 1 || len(a.epochs) != 2 || a.firstSeen != 0 {
		t.Fatalf("heads %v epochs %v firstSeen %v", a.heads, a.epochs, a.firstSeen)
	}
}

func lin(cids ...string) *lineage {
	l := &lineage{Valid: true}
	for i, c := range cids {
		l.Entries = append(l.Entries, lineageEntry{Seq: uint64(i), CID: c, Tick: uint64(5 * i)})
	}
	return l
}

func TestFindForks(t *testing.T) {
	final := lin("g", "c1", "c2", "c3")
	if f := findForks(map[uint64][]string{1: {"c1"}, 3: {"c3"}}, final); len(f) != 0 {
		t.Fatalf("clean history reported forks: %+v", f)
	}
	// A head record named c2x at seq 2: the lineage has c2 there.
	f := findForks(map[uint64][]string{1: {"c1"}, 2: {"c2x", "c2"}}, final)
	if len(f) != 1 || f[0] != (fork{Seq: 2, Seen: "c2x", Other: "c2", Source: "lineage"}) {
		t.Fatalf("fork against the lineage: %+v", f)
	}
	// Without a lineage, two heads for one seq are still a proof.
	f = findForks(map[uint64][]string{2: {"c2", "c2x"}, 3: {"c3"}}, nil)
	if len(f) != 1 || f[0].Seen != "c2x" || f[0].Other != "c2" || f[0].Source != "observed" {
		t.Fatalf("fork among observations: %+v", f)
	}
	// Above the final head it is lost progress, not a fork; a seq the
	// lineage skips is a fork.
	if f := findForks(map[uint64][]string{9: {"c9"}}, final); len(f) != 0 {
		t.Fatalf("seq above the head reported as fork: %+v", f)
	}
	holey := &lineage{Valid: true, Entries: []lineageEntry{{Seq: 0, CID: "g"}, {Seq: 2, CID: "c2"}}}
	if f := findForks(map[uint64][]string{1: {"c1"}}, holey); len(f) != 1 || f[0].Seen != "c1" {
		t.Fatalf("seq missing from the lineage: %+v", f)
	}
}

func TestLostSeq(t *testing.T) {
	if m, lost := lostSeq(map[uint64][]string{3: {"a"}, 7: {"b"}}, 7); lost || m != 7 {
		t.Errorf("seq 7 with head 7: lost=%v max=%d", lost, m)
	}
	if m, lost := lostSeq(map[uint64][]string{3: {"a"}, 8: {"b"}}, 7); !lost || m != 8 {
		t.Errorf("seq 8 with head 7: lost=%v max=%d", lost, m)
	}
	if _, lost := lostSeq(nil, 0); lost {
		t.Error("nothing seen: lost")
	}
}

func TestMaxGap(t *testing.T) {
	s := time.Second
	incs := []tickEvent{{10 * s, 1}, {11 * s, 2}, {15 * s, 3}, {16 * s, 4}}
	if g, at := maxGap(incs, 0, 17*s); g != 4*s || at != 11*s {
		t.Errorf("gap %v at %v, want 4s at 11s", g, at)
	}
	// A dead agent: the open gap since its last increase dominates.
	if g, at := maxGap(incs, 0, 60*s); g != 44*s || at != 16*s {
		t.Errorf("trailing gap %v at %v, want 44s at 16s", g, at)
	}
	if g, at := maxGap(nil, 5*s, 25*s); g != 20*s || at != 5*s {
		t.Errorf("no increase: %v at %v", g, at)
	}
}

func TestCheckpointGap(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(sec float64) int64 { return t0.Add(time.Duration(sec * float64(time.Second))).UnixNano() }
	es := []lineageEntry{{Time: at(1)}, {Time: at(12)}, {Time: at(20)}, {Time: at(27)}, {Time: at(28)}}
	// The 11 s gap ends before the chaos (from = 15 s): only 8 s counts.
	if g, a, ok := checkpointGap(es, t0, 15*time.Second); !ok || g != 8*time.Second || a != 12*time.Second {
		t.Errorf("gap %v at %v ok %v, want 8s at 12s", g, a, ok)
	}
	if _, _, ok := checkpointGap([]lineageEntry{{Seq: 0}, {Seq: 1}}, t0, 0); ok {
		t.Error("entries without times gave a gap")
	}
}

func ident(s string) string { return s }

// healthy is an agent seen at seq 1..3 on the final lineage g,c1,c2,c3.
func healthy() (*agentObs, *lineage, *verifyReport) {
	a := obsWith(status{Seq: 1, Tick: 5, Head: "c1"}, status{Seq: 2, Tick: 10, Head: "c2"}, status{Seq: 3, Tick: 15, Head: "c3"})
	return a, lin("g", "c1", "c2", "c3"), &verifyReport{Valid: true, LastSeq: 3, LastTick: 15}
}

func TestAnalyzeAndDecide(t *testing.T) {
	t0 := time.Now()
	res := func(alive bool, a *agentObs, l *lineage, linErr string, v *verifyReport, verErr string) agentResult {
		return analyze(a, alive, l, linErr, v, verErr, t0, 0, 5*time.Second, ident)
	}
	a, l, v := healthy()
	good := res(true, a, l, "", v, "")
	if ok, msg, _ := decide([]agentResult{good}, nil); !ok || len(good.Forks) != 0 || good.Lost || *good.FinalSeq != 3 || good.MaxGapS != 3 || good.MaxGapAtS != 2 {
		t.Fatalf("healthy agent failed: %s %+v", msg, good)
	}

	cases := []struct {
		name string
		kind string
		r    func() agentResult
		want []string // all must appear in the agent's detail line
	}{
		{"dead", "not alive a1", func() agentResult { a, l, v := healthy(); return res(false, a, l, "", v, "") }, []string{"a1: not alive"}},
		{"fork", "forked a1", func() agentResult {
			a, l, v := healthy()
			a.record(status{DID: a.DID, Seq: 2, Tick: 10, Head: "c2-other"}, 4*time.Second)
			return res(true, a, l, "", v, "")
		}, []string{"1 fork(s)", "seq 2", "c2-other vs c2"}},
		{"lost", "lost a1", func() agentResult {
			a, _, v := healthy()
			a.record(status{DID: a.DID, Seq: 4, Tick: 20, Head: "c4"}, 4*time.Second)
			return res(true, a, lin("g", "c1", "c2", "c3"), "", v, "")
		}, []string{"lost committed progress: seq 4 was seen, final head is seq 3"}},
		{"verify-invalid", "verify a1", func() agentResult {
			a, l, _ := healthy()
			return res(true, a, l, "", &verifyReport{Error: "bad signature"}, "")
		}, []string{"verify: invalid: bad signature"}},
		{"verify-forks", "forked a1; verify a1", func() agentResult {
			a, l, v := healthy()
			v.Forks = append(v.Forks, struct {
				Prev string `json:"prev"`
				A    string `json:"a"`
				B    string `json:"b"`
			}{"c1", "c2", "c2b"})
			return res(true, a, l, "", v, "")
		}, []string{"verify: 1 fork(s)", "after c1: c2 vs c2b (verify)"}},
		{"verify-unreachable", "verify a1", func() agentResult { a, l, _ := healthy(); return res(true, a, l, "", nil, "HTTP 502: fetch") }, []string{"verify: HTTP 502"}},
		{"lineage-unavailable", "lineage a1", func() agentResult {
			a, _, v := healthy()
			return res(true, a, nil, "unavailable", v, "")
		}, []string{"lineage: unavailable"}},
		{"lineage-invalid", "lineage a1", func() agentResult {
			a, l, v := healthy()
			l.Valid, l.Error = false, "broken link"
			return res(true, a, l, "", v, "")
		}, []string{"lineage: invalid: broken link"}},
		{"no-final-head", "verify a1; lineage a1; lost? a1", func() agentResult { a, _, _ := healthy(); return res(true, a, nil, "down", nil, "down") }, []string{"lost progress unknown"}},
	}
	for _, c := range cases {
		r := c.r()
		ok, msg, details := decide([]agentResult{good, r}, nil)
		if ok || !strings.HasPrefix(msg, "CHAOS FAIL: 1 of 2 agents failed ("+c.kind+")") || len(details) != 1 {
			t.Errorf("%s: ok=%v %s %q", c.name, ok, msg, details)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(details[0], w) {
				t.Errorf("%s: details %q lack %q", c.name, details[0], w)
			}
		}
	}
	if ok, msg, _ := decide([]agentResult{good}, []string{"n2 did not restart"}); ok || !strings.Contains(msg, "run: n2 did not restart") {
		t.Errorf("run failure: ok=%v %s", ok, msg)
	}
	dead := cases[0].r()
	dead2 := dead
	dead2.Name = "a7"
	if _, msg, details := decide([]agentResult{dead, good, dead2}, nil); msg != "CHAOS FAIL: 2 of 3 agents failed (not alive a1,a7)" || len(details) != 2 {
		t.Errorf("grouping: %s %q", msg, details)
	}
}

// The daemon's catch-all answers an unknown endpoint with 404 "no such
// endpoint": that is "lineage unavailable", not a crash or a retry loop.
func TestFetchLineage(t *testing.T) {
	var body string
	var code int
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(code)
		io.WriteString(w, body)
	}))
	defer srv.Close()
	h := newHarness(config{Seed: 1}, &eventLog{out: io.Discard, file: io.Discard, t0: time.Now()})
	h.nodes = []*nodeProc{{API: strings.TrimPrefix(srv.URL, "http://"), up: true}}
	ctx := context.Background()

	code, body = 404, `{"error":"no such endpoint GET /v1/agents/did:key:z6MkA/lineage (see docs/API.md)"}`
	if l, why := h.fetchLineage(ctx, "did:key:z6MkA", h.liveOrder()); l != nil || !strings.Contains(why, "unavailable") {
		t.Errorf("404 endpoint: %v %q", l, why)
	}
	code, body = 404, `{"error":"node: unknown agent: no head record"}`
	if l, why := h.fetchLineage(ctx, "did:key:z6MkA", h.liveOrder()); l != nil || !strings.Contains(why, "unknown agent") {
		t.Errorf("404 agent: %v %q", l, why)
	}
	code, body = 200, `{"did":"did:key:z6MkA","valid":true,"entries":[{"seq":0,"cid":"g"},{"seq":1,"cid":"c1","time_unix_ns":5}]}`
	if l, why := h.fetchLineage(ctx, "did:key:z6MkA", h.liveOrder()); l == nil || len(l.Entries) != 2 || l.Entries[1].Time != 5 {
		t.Errorf("200: %+v %q", l, why)
	}
	code, body = 200, `{"did":"did:key:z6MkA","valid":true,"entries":[{"seq":1,"cid":"c1"},{"seq":0,"cid":"g"}]}`
	if l, why := h.fetchLineage(ctx, "did:key:z6MkA", h.liveOrder()); l != nil || !strings.Contains(why, "seq order") {
		t.Errorf("unordered: %v %q", l, why)
	}
	code, body = 200, `{"valid":true,"forks":[{"prev":"p","a":"x","b":"y"}],"last_seq":4}`
	if v, why := h.fetchVerify(ctx, "did:key:z6MkA", h.liveOrder()); v == nil || len(v.Forks) != 1 || v.LastSeq != 4 {
		t.Errorf("verify: %+v %q", v, why)
	}
}

// The command's own checks before it starts anything: exit codes and
// messages that say what to do.
func TestRunPreflight(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "igor-node")
	wasm := filepath.Join(dir, "counter.wasm")
	for _, f := range []string{exe, wasm, filepath.Join(dir, "counter.manifest.json")} {
		if err := os.WriteFile(f, []byte("x"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	testnet, _ := filepath.Abs("..")
	runIt := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(args, &out, &errb)
		return code, out.String() + errb.String()
	}
	if code, out := runIt("--help"); code != 0 || !strings.Contains(out, "--seconds") {
		t.Errorf("--help: %d %s", code, out)
	}
	if code, out := runIt("--nodes", "x"); code != 2 || !strings.Contains(out, "--help") {
		t.Errorf("bad usage: %d %s", code, out)
	}
	if code, out := runIt(filepath.Join(dir, "r1"), "--bin", filepath.Join(dir, "nope"), "--seconds", "5"); code != 1 || !strings.Contains(out, "make build") {
		t.Errorf("missing binary: %d %s", code, out)
	}
	if code, out := runIt(filepath.Join(dir, "r1"), "--bin", exe, "--agent", filepath.Join(dir, "x.wasm"), "--seconds", "5"); code != 1 || !strings.Contains(out, "make agents") {
		t.Errorf("missing agent: %d %s", code, out)
	}
	busy := filepath.Join(dir, "busy")
	os.MkdirAll(busy, 0o755)
	os.WriteFile(filepath.Join(busy, "nodes.json"), []byte("[]"), 0o644)
	if code, out := runIt(busy, "--bin", exe, "--agent", wasm, "--testnet", testnet, "--seconds", "5"); code != 1 || !strings.Contains(out, "testnet/down.sh "+busy) {
		t.Errorf("busy DIR: %d %s", code, out)
	}
	other := filepath.Join(dir, "other")
	os.MkdirAll(other, 0o755)
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o644)
	if code, out := runIt(other, "--bin", exe, "--agent", wasm, "--testnet", testnet, "--seconds", "5"); code != 1 || !strings.Contains(out, "pick another DIR") {
		t.Errorf("foreign DIR: %d %s", code, out)
	}
}

// An earlier run's homes would bring its agents back: prepare removes them
// (and only them).
func TestPrepareClearsEarlierRun(t *testing.T) {
	dir := t.TempDir()
	exe := filepath.Join(dir, "bin")
	wasm := filepath.Join(dir, "a.wasm")
	for _, f := range []string{exe, wasm, filepath.Join(dir, "a.manifest.json")} {
		os.WriteFile(f, []byte("x"), 0o755)
	}
	testnet, _ := filepath.Abs("..")
	runDir := filepath.Join(dir, "run")
	for _, p := range []string{"n0/store", "n12", "keep"} {
		os.MkdirAll(filepath.Join(runDir, p), 0o755)
	}
	os.WriteFile(filepath.Join(runDir, "chaos.log"), []byte("old"), 0o644)
	cfg := config{Dir: runDir, Bin: exe, Wasm: wasm, Testnet: testnet}
	if err := prepare(&cfg); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]bool{"n0": false, "n12": false, "chaos.log": false, "keep": true} {
		if fileExists(filepath.Join(runDir, p)) != want {
			t.Errorf("%s exists=%v, want %v", p, !want, want)
		}
	}
}
