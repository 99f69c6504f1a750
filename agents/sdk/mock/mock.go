//go:build !wasip1

// Package mock is a deterministic host for running agents natively, in
// plain `go test`: a clock that starts at StartUnixNano and advances one
// second per read, a seeded PCG random source, captured logs, configurable
// args, and a wallet, price, HTTP handler and payment handler that behave
// like the host's hostcalls (effects.go). Drive runs an agent through the same lifecycle a host
// uses and checks the SDK's rules (no observations outside Tick, state that
// survives Marshal/Unmarshal into a fresh instance).
//
// The backend is process-wide (sdk.SetBackend), so tests that use a Mock
// must not run in parallel with each other. Install and Drive leave it
// installed: remove it with defer sdk.SetBackend(nil), so a later test that
// installs none fails loudly instead of reusing this one's mock.
package mock

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

// StartUnixNano is the first value the clock returns: 2025-01-01T00:00:00Z.
const StartUnixNano int64 = 1_735_689_600_000_000_000

// ClockStep is how far the clock advances per ClockNow call.
const ClockStep int64 = 1_000_000_000

// MaxLogBytes is where log lines are truncated, as the host does.
const MaxLogBytes = 4096

// Errors returned (wrapped) by Drive.
var (
	ErrOutsideTick = errors.New("mock: observation hostcall outside Tick")
	ErrUnstable    = errors.New("mock: state does not survive Marshal and Unmarshal into a fresh instance")
	ErrPanic       = errors.New("mock: agent panicked")
)

// Mock implements sdk.Backend. Its methods are safe for concurrent use.
type Mock struct {
	mu       sync.Mutex
	now      int64
	rng      *rand.PCG
	logs     []string
	args     string
	randCode int32
	// The wallet, pricing and HTTP side (effects.go).
	balance, price int64
	receipts       [][]byte
	httpHandler    http.Handler
	httpCode       int32
	maxResp        int
	payHandler     func(Payment) int32
	httpCalls      []HTTPCall
	payments       []Payment
	// phase names the lifecycle call Drive is running ("" outside Drive),
	// violation is the first observation hostcall made outside a tick.
	phase     string
	violation error
}

var _ sdk.Backend = (*Mock)(nil)

// New returns a Mock whose clock starts at StartUnixNano and whose random
// bytes come from PCG(seed, seed): the same seed gives the same run.
func New(seed int64) *Mock {
	return &Mock{now: StartUnixNano, rng: rand.NewPCG(uint64(seed), uint64(seed))}
}

// Install makes m the SDK's backend and returns m.
func (m *Mock) Install() *Mock {
	sdk.SetBackend(m)
	return m
}

// SetArgs sets what sdk.Args returns.
func (m *Mock) SetArgs(args string) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.args = args
	return m
}

// SetNow sets the value the next ClockNow returns.
func (m *Mock) SetNow(unixNano int64) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.now = unixNano
	return m
}

// SetRandCode makes every later RandBytes fail with the given ABI code
// (e.g. -4) without touching the buffer; 0 restores success.
func (m *Mock) SetRandCode(code int32) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.randCode = code
	return m
}

// Logs returns a copy of the lines logged so far.
func (m *Mock) Logs() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]string(nil), m.logs...)
}

// ClearLogs forgets the captured lines.
func (m *Mock) ClearLogs() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.logs = nil
}

// ClockNow returns the current instant and advances it by ClockStep.
func (m *Mock) ClockNow() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe("ClockNow")
	t := m.now
	m.now += ClockStep
	return t
}

// RandBytes fills b from the PCG stream, 8 bytes per draw (a partial last
// draw is truncated), or returns the code set by SetRandCode. Like the
// host, it refuses more than sdk.MaxRandChunk bytes with -2.
func (m *Mock) RandBytes(b []byte) int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe("RandBytes")
	if m.randCode != 0 {
		return m.randCode
	}
	if len(b) > sdk.MaxRandChunk {
		return -2
	}
	var w [8]byte
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(w[:], m.rng.Uint64())
		copy(b[i:], w[:])
	}
	return 0
}

// LogEmit captures msg, truncated to MaxLogBytes as the host does.
func (m *Mock) LogEmit(msg string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe("Log")
	if len(msg) > MaxLogBytes {
		msg = msg[:MaxLogBytes]
	}
	m.logs = append(m.logs, msg)
}

// Args returns the string set by SetArgs. Args is not an observation, so
// it is allowed in every phase.
func (m *Mock) Args() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.args
}

// observe records a violation if an observation hostcall happens while
// Drive runs something other than Tick. Callers hold m.mu.
func (m *Mock) observe(call string) {
	if m.phase != "" && m.phase != "Tick" && m.violation == nil {
		m.violation = fmt.Errorf("%w: %s called %s (Init, Marshal and Unmarshal must not observe: nothing is recorded there and replay would diverge)", ErrOutsideTick, m.phase, call)
	}
}

func (m *Mock) setPhase(p string) {
	m.mu.Lock()
	m.phase = p
	m.mu.Unlock()
}

// run calls f as lifecycle phase p, turning a panic into ErrPanic and
// reporting any observation made outside a tick.
func (m *Mock) run(p string, tick int, f func()) (err error) {
	m.setPhase(p)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: in %s (tick %d): %v", ErrPanic, p, tick, r)
		}
		m.mu.Lock()
		if err == nil && m.violation != nil {
			err = fmt.Errorf("tick %d: %w", tick, m.violation)
		}
		m.violation = nil
		m.phase = ""
		m.mu.Unlock()
	}()
	f()
	return nil
}

// Drive installs m and runs the agent the way a host that restarts it after
// every tick would: newAgent() (what the module's init registers), Init,
// Unmarshal of empty state; then per tick: Tick, Marshal, and a fresh
// newAgent() with Init and Unmarshal of that state, whose Marshal must
// return the same bytes; the next tick runs on the fresh instance. It
// returns the state after the last tick (after Init if ticks is 0).
//
// Errors wrap ErrOutsideTick (an observation hostcall in Init, Marshal or
// Unmarshal), ErrUnstable (state not reproduced by a fresh instance) or
// ErrPanic (the agent panicked; the error names the call and tick).
func (m *Mock) Drive(newAgent func() sdk.Agent, ticks int) ([]byte, error) {
	m.Install()
	a, err := m.load(newAgent, nil, 0)
	if err != nil {
		return nil, err
	}
	var state []byte
	if err := m.run("Marshal", 0, func() { state = bytes.Clone(a.Marshal()) }); err != nil {
		return nil, err
	}
	for i := 1; i <= ticks; i++ {
		if err := m.run("Tick", i, func() { a.Tick() }); err != nil {
			return nil, err
		}
		if err := m.run("Marshal", i, func() { state = bytes.Clone(a.Marshal()) }); err != nil {
			return nil, err
		}
		fresh, err := m.load(newAgent, bytes.Clone(state), i)
		if err != nil {
			return nil, err
		}
		var again []byte
		if err := m.run("Marshal", i, func() { again = fresh.Marshal() }); err != nil {
			return nil, err
		}
		if !bytes.Equal(state, again) {
			return nil, fmt.Errorf("%w: tick %d: %d bytes before, %d after; first difference at offset %d",
				ErrUnstable, i, len(state), len(again), firstDiff(state, again))
		}
		a = fresh
	}
	return state, nil
}

// load creates an instance as a host does: newAgent, Init, Unmarshal.
func (m *Mock) load(newAgent func() sdk.Agent, state []byte, tick int) (sdk.Agent, error) {
	var a sdk.Agent
	if err := m.run("Init", tick, func() {
		a = newAgent()
		a.Init()
	}); err != nil {
		return nil, err
	}
	if state == nil {
		state = []byte{}
	}
	if err := m.run("Unmarshal", tick, func() { a.Unmarshal(state) }); err != nil {
		return nil, err
	}
	return a, nil
}

func firstDiff(a, b []byte) int {
	n := min(len(a), len(b))
	for i := range n {
		if a[i] != b[i] {
			return i
		}
	}
	return n
}
