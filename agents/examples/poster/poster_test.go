//go:build !wasip1

package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

func newPoster() sdk.Agent { return &Poster{} }

// counter answers posts with the statuses in order (the last one repeats)
// and keeps their bodies.
type counter struct {
	statuses []int
	bodies   []string
}

func (c *counter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var b bytes.Buffer
	b.ReadFrom(r.Body)
	c.bodies = append(c.bodies, b.String())
	w.WriteHeader(c.statuses[min(len(c.bodies), len(c.statuses))-1])
}

func TestPosterUnderMock(t *testing.T) {
	defer sdk.SetBackend(nil)
	c := &counter{statuses: []int{200, 201, 500, 409, 204}}
	m := mock.New(1).SetArgs("url=http://count.test/count name=did:key:z6MkTest").SetHTTPHandler(c)
	st, err := m.Drive(newPoster, 6)
	if err != nil {
		t.Fatal(err)
	}
	var p Poster
	p.Unmarshal(st)
	if want := (Poster{Ticks: 6, Accepted: 4, Failed: 2, LastStatus: 204}); p != want {
		t.Fatalf("state %+v, want %+v", p, want)
	}
	for k, b := range c.bodies {
		var v struct {
			Agent string `json:"agent"`
			Tick  uint64 `json:"tick"`
		}
		if err := json.Unmarshal([]byte(b), &v); err != nil || v.Agent != "did:key:z6MkTest" || v.Tick != uint64(k+1) {
			t.Fatalf("body %d %q: %+v %v", k, b, v, err)
		}
	}
	for _, call := range m.HTTPCalls() {
		if call.Method != "POST" || call.URL != "http://count.test/count" || call.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("request %+v", call)
		}
	}
	want := []string{"tick=1 posted status=200", "tick=2 posted status=201", "tick=3 posted status=500",
		"tick=4 posted status=409", "tick=5 posted status=204", "tick=6 posted status=204"}
	if got := m.Logs(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("logs %q, want %q", got, want)
	}
}

// Host errors count as failed posts; the tick counter goes on, so the
// next post carries the next N (the agent never re-sends on its own).
func TestPosterHostErrors(t *testing.T) {
	defer sdk.SetBackend(nil)
	c := &counter{statuses: []int{200}}
	m := mock.New(1).SetArgs("url=http://count.test/count").SetHTTPHandler(c).Install()
	var st []byte
	for _, code := range []int32{0, -1, -4, -3, 0} {
		m.SetHTTPCode(code)
		p := &Poster{}
		p.Init()
		p.Unmarshal(bytes.Clone(st))
		p.Tick()
		st = p.Marshal()
	}
	var p Poster
	p.Unmarshal(st)
	if want := (Poster{Ticks: 5, Accepted: 2, Failed: 3, LastStatus: 200}); p != want {
		t.Fatalf("state %+v, want %+v", p, want)
	}
	if len(c.bodies) != 2 || c.bodies[0] != `{"agent":"poster","tick":1}` || c.bodies[1] != `{"agent":"poster","tick":5}` {
		t.Fatalf("bodies %q", c.bodies)
	}
	if logs := m.Logs(); logs[1] != "tick=2 posted status=-1" || logs[2] != "tick=3 posted status=-4" || logs[3] != "tick=4 posted status=-3" {
		t.Fatalf("logs %q", logs)
	}
}

func TestPosterDeterministic(t *testing.T) {
	defer sdk.SetBackend(nil)
	run := func(status int) []byte {
		st, err := mock.New(1).SetArgs("url=http://x/").SetHTTPHandler(&counter{statuses: []int{200, status}}).Drive(newPoster, 3)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	if a, b, c := run(200), run(200), run(503); !bytes.Equal(a, b) || bytes.Equal(a, c) || len(a) != 29 {
		t.Fatal("state is not a function of the observations")
	}
}

func TestPosterArgs(t *testing.T) {
	for _, bad := range []string{"", "name=x", "url=ftp://a/", "url=http://a/ name=", "url=http://a/ name=a\"b",
		"url=http://a/ name=" + strings.Repeat("n", 129), "url=http://a/ k=v", "junk"} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("args %q accepted", bad)
		}
	}
	c, err := parseArgs("url=http://a/c name=A-z_0.9:x")
	if err != nil || c != (config{url: "http://a/c", name: "A-z_0.9:x"}) {
		t.Fatalf("%+v %v", c, err)
	}
	if c, _ := parseArgs("url=http://a/"); c.name != "poster" {
		t.Fatalf("default name %q", c.name)
	}
}

func TestPosterRejectsCorruptState(t *testing.T) {
	good := (&Poster{Ticks: 3, Accepted: 2, Failed: 1, LastStatus: 200}).Marshal()
	for name, b := range map[string][]byte{"truncated": good[:10], "trailing": append(bytes.Clone(good), 0), "version": append([]byte{9}, good[1:]...)} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r, _ := recover().(string); !strings.Contains(r, "poster:") {
					t.Fatalf("panic %v, want a poster error", r)
				}
			}()
			(&Poster{}).Unmarshal(b)
		})
	}
}
