//go:build !wasip1

package mock_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

func TestClockStartsFixedAndStepsOneSecond(t *testing.T) {
	m := mock.New(0)
	if a, b := m.ClockNow(), m.ClockNow(); a != mock.StartUnixNano || b-a != 1_000_000_000 {
		t.Fatalf("clock %d, %d", a, b)
	}
	m.SetNow(5)
	if v := m.ClockNow(); v != 5 {
		t.Fatalf("after SetNow(5): %d", v)
	}
}

func TestRandIsSeeded(t *testing.T) {
	draw := func(seed int64) []byte {
		b := make([]byte, 13) // not a multiple of 8
		if rc := mock.New(seed).RandBytes(b); rc != 0 {
			t.Fatalf("rc %d", rc)
		}
		return b
	}
	if !bytes.Equal(draw(7), draw(7)) {
		t.Fatal("same seed, different bytes")
	}
	if bytes.Equal(draw(7), draw(8)) {
		t.Fatal("different seeds, same bytes")
	}
	if rc := mock.New(1).RandBytes(make([]byte, sdk.MaxRandChunk+1)); rc != -2 {
		t.Fatalf("oversized request rc = %d, want -2 as the host", rc)
	}
}

func TestLogTruncatedLikeHost(t *testing.T) {
	m := mock.New(0)
	m.LogEmit(strings.Repeat("x", mock.MaxLogBytes+10))
	if got := m.Logs(); len(got) != 1 || len(got[0]) != mock.MaxLogBytes {
		t.Fatalf("log not truncated to %d", mock.MaxLogBytes)
	}
	m.ClearLogs()
	if len(m.Logs()) != 0 {
		t.Fatal("ClearLogs kept lines")
	}
}

// walker is a well-behaved agent: state is a step count and a sum of
// observed random bytes.
type walker struct {
	steps, sum uint64
	last       int64
}

func (w *walker) Init() {}
func (w *walker) Tick() bool {
	var b [1]byte
	if err := sdk.RandBytes(b[:]); err != nil {
		panic(err)
	}
	w.steps++
	w.sum += uint64(b[0])
	w.last = sdk.ClockNow()
	sdk.Logf("step %d", w.steps)
	return false
}
func (w *walker) Marshal() []byte {
	return sdk.NewEncoder(24).Uint64(w.steps).Uint64(w.sum).Int64(w.last).Finish()
}
func (w *walker) Unmarshal(b []byte) {
	*w = walker{}
	if len(b) == 0 {
		return
	}
	d := sdk.NewDecoder(b)
	w.steps, w.sum, w.last = d.Uint64(), d.Uint64(), d.Int64()
	if err := d.Finish(); err != nil {
		panic(err)
	}
}

func TestDriveRunsLifecycleDeterministically(t *testing.T) {
	run := func() ([]byte, []string) {
		m := mock.New(42)
		s, err := m.Drive(func() sdk.Agent { return &walker{} }, 5)
		if err != nil {
			t.Fatal(err)
		}
		return s, m.Logs()
	}
	s1, logs := run()
	s2, _ := run()
	if !bytes.Equal(s1, s2) {
		t.Fatal("same seed, different final state")
	}
	var w walker
	w.Unmarshal(s1)
	if w.steps != 5 || w.last != mock.StartUnixNano+4*mock.ClockStep {
		t.Fatalf("state %+v", w)
	}
	if len(logs) != 5 || logs[4] != "step 5" {
		t.Fatalf("logs %q", logs)
	}
}

// Bad agents, each breaking one rule Drive must catch.
type clockInInit struct{ walker }

func (a *clockInInit) Init() { a.last = sdk.ClockNow() }

type logInUnmarshal struct{ walker }

func (a *logInUnmarshal) Unmarshal(b []byte) { sdk.Log("resumed"); a.walker.Unmarshal(b) }

type forgetful struct {
	walker
	hidden int
}

// Marshal includes a field that Unmarshal does not restore.
func (a *forgetful) Tick() bool      { a.hidden++; return a.walker.Tick() }
func (a *forgetful) Marshal() []byte { return append(a.walker.Marshal(), byte(a.hidden)) }
func (a *forgetful) Unmarshal(b []byte) {
	if len(b) > 0 {
		b = b[:len(b)-1]
	}
	a.walker.Unmarshal(b)
}

type panicky struct{ walker }

func (a *panicky) Tick() bool {
	if a.steps == 2 {
		panic("boom")
	}
	return a.walker.Tick()
}

func TestDriveCatchesRuleBreakers(t *testing.T) {
	cases := []struct {
		name  string
		agent func() sdk.Agent
		want  error
		text  string
	}{
		{"clock in Init", func() sdk.Agent { return &clockInInit{} }, mock.ErrOutsideTick, "Init called ClockNow"},
		{"log in Unmarshal", func() sdk.Agent { return &logInUnmarshal{} }, mock.ErrOutsideTick, "Unmarshal called Log"},
		{"state not restored", func() sdk.Agent { return &forgetful{} }, mock.ErrUnstable, "tick 1"},
		{"panic in Tick", func() sdk.Agent { return &panicky{} }, mock.ErrPanic, "in Tick (tick 3): boom"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := mock.New(1).Drive(c.agent, 4)
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want %v containing %q", err, c.want, c.text)
			}
		})
	}
}

func TestObservationsOutsideDriveAreAllowed(t *testing.T) {
	m := mock.New(1).Install()
	defer sdk.SetBackend(nil)
	// Direct calls (no Drive running) are treated as inside a tick.
	var w walker
	w.Init()
	w.Tick()
	if len(m.Logs()) != 1 {
		t.Fatalf("logs %q", m.Logs())
	}
}

type payInInit struct{ walker }

func (a *payInInit) Init() { sdk.WalletPay(1, "bob", "") }

type balanceInUnmarshal struct{ walker }

func (a *balanceInUnmarshal) Unmarshal(b []byte) { sdk.WalletBalance(); a.walker.Unmarshal(b) }

func TestEffectsOutsideTickCaught(t *testing.T) {
	defer sdk.SetBackend(nil)
	for name, c := range map[string]struct {
		agent func() sdk.Agent
		text  string
	}{
		"pay in Init":          {func() sdk.Agent { return &payInInit{} }, "Init called WalletPay"},
		"balance in Unmarshal": {func() sdk.Agent { return &balanceInUnmarshal{} }, "Unmarshal called WalletBalance"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := mock.New(1).SetBalance(10).Drive(c.agent, 1)
			if !errors.Is(err, mock.ErrOutsideTick) || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("err = %v, want ErrOutsideTick containing %q", err, c.text)
			}
		})
	}
}

func TestMockWalletAndHTTPAtTheABI(t *testing.T) {
	m := mock.New(1).SetBalance(100)
	// Buffers too small: -5 / -4 with the size hint, nothing paid.
	small := make([]byte, 8)
	if rc := m.WalletPay(10, "bob", "hi", small); rc != -5 || small[0] != 120+3+2 {
		t.Fatalf("small receipt buffer: rc %d, hint %d", rc, small[0])
	}
	if m.WalletBalance() != 100 {
		t.Fatal("a refused payment was debited")
	}
	buf := make([]byte, 200)
	if rc := m.WalletPay(10, "bob", "hi", buf); rc != 4+125 {
		t.Fatalf("pay rc %d", rc)
	}
	if rc := m.WalletReceipt(0, small); rc != -4 || small[0] != 125 {
		t.Fatalf("receipt into a small buffer: rc %d hint %d", rc, small[0])
	}
	if p := m.Payments(); len(p) != 2 || p[0].Result != -5 || p[1].Result != 129 || len(m.Receipts()) != 1 {
		t.Fatalf("payments %+v", p)
	}
	// No handler: transport error; malformed headers: -2.
	if rc := m.HTTPRequest("GET", "http://x/", nil, nil, buf); rc != -1 {
		t.Fatalf("no handler: %d", rc)
	}
	if rc := m.HTTPRequest("GET", "http://x/", []byte("no colon\n"), nil, buf); rc != -2 {
		t.Fatalf("bad header: %d", rc)
	}
	if rc := m.HTTPRequest(strings.Repeat("G", 17), "http://x/", nil, nil, buf); rc != -2 {
		t.Fatalf("long method: %d", rc)
	}
}
