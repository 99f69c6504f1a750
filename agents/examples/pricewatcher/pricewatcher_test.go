//go:build !wasip1

package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

func newWatcher() sdk.Agent { return &PriceWatcher{} }

const testArgs = "url=http://prices.test/price"

// script serves the k-th request with answers[k] (status, body); past the
// end it repeats the last one.
func script(answers ...[2]string) http.Handler {
	k := 0
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a := answers[min(k, len(answers)-1)]
		k++
		code := 200
		if a[0] != "200" {
			code = map[string]int{"404": 404, "503": 503, "402": 402}[a[0]]
		}
		w.WriteHeader(code)
		w.Write([]byte(a[1]))
	})
}

// Good readings, bad statuses and bad bodies, in one run through Drive (a
// fresh instance per tick): failures are counted, never panic, and leave
// last/min/max alone.
func TestPriceWatcherUnderMock(t *testing.T) {
	defer sdk.SetBackend(nil)
	m := mock.New(1).SetArgs(testArgs).SetHTTPHandler(script(
		[2]string{"200", `{"price": 10.5}`},
		[2]string{"200", `{"price": 7, "currency": "µc"}`},
		[2]string{"503", `{"price": 1}`}, // a price in an error response is not a reading
		[2]string{"200", `not json`},
		[2]string{"200", `{"cost": 3}`},
		[2]string{"200", `{"price": "12"}`},
		[2]string{"200", `{"price": 12}`},
		[2]string{"404", ``},
	))
	state, err := m.Drive(newWatcher, 8)
	if err != nil {
		t.Fatal(err)
	}
	var w PriceWatcher
	w.Unmarshal(state)
	want := PriceWatcher{Ticks: 8, Count: 3, Failed: 5, LastStatus: 404, Last: 12, Min: 7, Max: 12}
	if w != want {
		t.Fatalf("state %+v, want %+v", w, want)
	}
	logs := m.Logs()
	if len(logs) != 8 {
		t.Fatalf("%d log lines, want one per tick: %q", len(logs), logs)
	}
	for k, prefix := range []string{
		"tick=1 price=10.5 min=10.5 max=10.5 count=1 failed=0",
		"tick=2 price=7 min=7 max=10.5 count=2 failed=0",
		`tick=3 error="status 503" failed=1`,
		`tick=4 error="bad body: invalid character`,
		`tick=5 error="bad body: no \"price\" field" failed=3`,
		`tick=6 error="bad body: json: cannot unmarshal string`,
		"tick=7 price=12 min=7 max=12 count=3 failed=4",
		`tick=8 error="status 404" failed=5`,
	} {
		if !strings.HasPrefix(logs[k], prefix) {
			t.Errorf("log %d = %q, want prefix %q", k, logs[k], prefix)
		}
	}
	for _, c := range m.HTTPCalls() {
		if c.Method != "GET" || c.URL != "http://prices.test/price" || len(c.Body) != 0 {
			t.Fatalf("request %+v", c)
		}
	}
}

// tick runs one tick on a fresh instance resumed from state, as a host
// that restarts the agent does, with the mock set up by setup.
func tick(t *testing.T, m *mock.Mock, state []byte, setup func()) []byte {
	t.Helper()
	setup()
	w := &PriceWatcher{}
	w.Init()
	w.Unmarshal(bytes.Clone(state))
	w.Tick()
	return w.Marshal()
}

// Every host-side failure code is a counted failure with its code kept,
// and the agent reads prices again once the host recovers.
func TestPriceWatcherHostErrors(t *testing.T) {
	defer sdk.SetBackend(nil)
	m := mock.New(1).SetArgs(testArgs).SetHTTPHandler(script([2]string{"200", `{"price": 42}`})).Install()
	state := tick(t, m, nil, func() {})
	for k, code := range []int32{-1, -3, -4} {
		state = tick(t, m, state, func() { m.SetHTTPCode(code) })
		var w PriceWatcher
		w.Unmarshal(state)
		if w.LastStatus != code || w.Failed != uint64(k+1) || w.Count != 1 || w.Last != 42 || w.Min != 42 || w.Max != 42 {
			t.Fatalf("after code %d: %+v", code, w)
		}
	}
	// A body over the manifest's max_response_bytes is -5 (the SDK's
	// buffer would hold it, so it does not ask again).
	state = tick(t, m, state, func() { m.SetHTTPCode(0).SetMaxResponseBytes(4) })
	state = tick(t, m, state, func() { m.SetMaxResponseBytes(0) })
	var w PriceWatcher
	w.Unmarshal(state)
	if want := (PriceWatcher{Ticks: 6, Count: 2, Failed: 4, LastStatus: 200, Last: 42, Min: 42, Max: 42}); w != want {
		t.Fatalf("state %+v, want %+v", w, want)
	}
	logs := m.Logs()
	if !strings.HasPrefix(logs[4], `tick=5 error="fetch failed: sdk: http_request: response too large: code -5" failed=4`) {
		t.Fatalf("log %q", logs[4])
	}
}

func TestPriceWatcherDeterministic(t *testing.T) {
	defer sdk.SetBackend(nil)
	run := func(second string) []byte {
		s, err := mock.New(1).SetArgs(testArgs).SetHTTPHandler(script(
			[2]string{"200", `{"price": 1e3}`}, [2]string{"200", second}, [2]string{"200", `{"price": -0.25}`})).Drive(newWatcher, 5)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	a, b, c := run(`{"price": 2000}`), run(`{"price": 2000}`), run(`{"price": 3000}`)
	if !bytes.Equal(a, b) {
		t.Fatal("same observations, different state")
	}
	if bytes.Equal(a, c) {
		t.Fatal("different prices, same state")
	}
	var w PriceWatcher
	w.Unmarshal(a)
	if w.Min != -0.25 || w.Max != 2000 || w.Last != -0.25 || w.Count != 5 || len(a) != 53 {
		t.Fatalf("state %+v (%d bytes)", w, len(a))
	}
}

func TestPriceWatcherArgs(t *testing.T) {
	for _, bad := range []string{"", "url=", "url=ftp://x/", "nokey", "url=http://a/ colour=red"} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("args %q accepted", bad)
		}
	}
	if u, err := parseArgs("url=https://a/p"); err != nil || u != "https://a/p" {
		t.Fatalf("%q %v", u, err)
	}
	defer sdk.SetBackend(nil)
	_, err := mock.New(1).SetArgs("url=nope").Drive(newWatcher, 1)
	if err == nil || !strings.Contains(err.Error(), "pricewatcher: bad args") {
		t.Fatalf("bad args: %v", err)
	}
}

func TestPriceWatcherRejectsCorruptState(t *testing.T) {
	good := (&PriceWatcher{Ticks: 1, Count: 1, Last: 2}).Marshal()
	for name, b := range map[string][]byte{"truncated": good[:10], "trailing": append(bytes.Clone(good), 0), "version": append([]byte{9}, good[1:]...)} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r, _ := recover().(string); !strings.Contains(r, "pricewatcher:") {
					t.Fatalf("panic %v, want a pricewatcher error", r)
				}
			}()
			(&PriceWatcher{}).Unmarshal(b)
		})
	}
}
