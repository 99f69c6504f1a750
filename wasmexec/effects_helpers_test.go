package wasmexec

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/binary"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/tetratelabs/wazero/api"
)

// ---- raw-ABI modules that make given hostcalls ----

// i64c is i64.const v.
func i64c(v int64) []byte { return appendSleb([]byte{0x42}, v) }

// rawCall is one igor hostcall with constant arguments.
type rawCall struct {
	name string
	args []int64
}

func rc(name string, args ...int64) rawCall { return rawCall{name, args} }

// rawResults is where call k of a tick stores its result (8 bytes each).
const rawResults = 256

// rawModule assembles a module whose agent_tick makes tick's calls in
// order, storing call k's result at rawResults+8k, and whose agent_init
// makes initCalls. Its state is its first statePages pages of memory;
// agent_alloc hands out the pages after them and agent_resume ignores what
// it gets, so every instance starts from the data segments.
func rawModule(t testing.TB, r *Runtime, key string, statePages int, tick, initCalls []rawCall, data ...wdata) *Module {
	t.Helper()
	var imps []wimport
	index := map[string]int{}
	for _, c := range append(append([]rawCall{}, tick...), initCalls...) {
		if _, ok := index[c.name]; ok {
			continue
		}
		hf, ok := igorFuncs[c.name]
		if !ok {
			t.Fatalf("no hostcall %s", c.name)
		}
		index[c.name] = len(imps)
		imps = append(imps, wimport{mod: "igor", name: c.name, params: valueTypes(hf.sig.params), results: valueTypes(hf.sig.results)})
	}
	emit := func(calls []rawCall) []byte {
		var b []byte
		for k, c := range calls {
			hf := igorFuncs[c.name]
			if len(c.args) != len(hf.sig.params) {
				t.Fatalf("%s takes %d arguments, got %d", c.name, len(hf.sig.params), len(c.args))
			}
			if len(hf.sig.results) > 0 {
				b = append(b, i32c(int32(rawResults+8*k))...)
			}
			for j, p := range hf.sig.params {
				if p == api.ValueTypeI64 {
					b = append(b, i64c(c.args[j])...)
				} else {
					b = append(b, i32c(int32(c.args[j]))...)
				}
			}
			b = append(b, call(index[c.name])...)
			switch {
			case len(hf.sig.results) == 0:
			case hf.sig.results[0] == api.ValueTypeI64:
				b = append(b, opI64Store...)
			default:
				b = append(b, opI32Store...)
			}
		}
		return b
	}
	size := int32(statePages << 16)
	fns := []wfunc{
		{export: "agent_init", body: emit(initCalls)},
		{export: "agent_tick", results: []byte{tI32}, body: cat(emit(tick), i32c(0))},
		{export: "agent_checkpoint", results: []byte{tI32}, body: i32c(size)},
		{export: "agent_checkpoint_ptr", results: []byte{tI32}, body: i32c(0)},
		{export: "agent_resume", params: []byte{tI32, tI32}},
		{export: "agent_alloc", params: []byte{tI32}, results: []byte{tI32}, body: i32c(size)},
	}
	m, err := r.Compile(bg, key, assemble(imps, fns, 2*statePages, data...))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func valueTypes(ts []api.ValueType) []byte {
	b := make([]byte, len(ts))
	for k, v := range ts {
		if v == api.ValueTypeI64 {
			b[k] = tI64
		} else {
			b[k] = tI32
		}
	}
	return b
}

// layout places data segments one after another from a start address.
type layout struct {
	next int32
	segs []wdata
}

// put places b and returns its address and length, as hostcall arguments.
func (l *layout) put(b []byte) (int64, int64) {
	at := l.next
	l.segs = append(l.segs, wdata{at, b})
	l.next += int32(len(b)+15) &^ 7
	return int64(at), int64(len(b))
}

func (l *layout) str(s string) (int64, int64) { return l.put([]byte(s)) }

// reserve returns the address of n zero bytes.
func (l *layout) reserve(n int) int64 {
	at := l.next
	l.next += int32(n+15) &^ 7
	return int64(at)
}

func i32At(state []byte, k int) int32 {
	return int32(binary.LittleEndian.Uint32(state[rawResults+8*k:]))
}

func i64At(state []byte, k int) int64 {
	return int64(binary.LittleEndian.Uint64(state[rawResults+8*k:]))
}

// ---- what a runner provides ----

// purse is a Wallet as a runner keeps one: a balance and the receipts.
type purse struct {
	mu       sync.Mutex
	balance  int64
	receipts [][]byte
}

func (p *purse) Balance() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.balance
}

func (p *purse) Debit(amount int64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.balance < amount {
		return false
	}
	p.balance -= amount
	return true
}

func (p *purse) Receipts() [][]byte {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.receipts
}

func (p *purse) AddReceipt(r []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.receipts = append(p.receipts, r)
}

func (p *purse) snapshot() (int64, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.balance, len(p.receipts)
}

// journal records the effects a runner is asked to journal.
type journal struct {
	mu      sync.Mutex
	effects []Effect
	err     error // returned by before when set
}

func (j *journal) before(_ context.Context, e Effect) (string, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.effects = append(j.effects, e)
	if j.err != nil {
		return "", j.err
	}
	return e.Key, nil
}

func (j *journal) all() []Effect {
	j.mu.Lock()
	defer j.mu.Unlock()
	return append([]Effect(nil), j.effects...)
}

var agentKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))

func signer(msg []byte) []byte { return ed25519.Sign(agentKey, msg) }

// effectsConfig is an InstanceConfig with a wallet, a price, the agent's
// key and a journal.
func effectsConfig(man *agents.Manifest, p *purse, j *journal) InstanceConfig {
	cfg := InstanceConfig{Manifest: man, AgentDID: "did:key:test", Price: 77,
		AgentPub: agentKey.Public().(ed25519.PublicKey), Sign: signer}
	if p != nil {
		cfg.Wallet = p
	}
	if j != nil {
		cfg.BeforeEffect = j.before
	}
	return cfg
}

// manifestJSON parses a manifest, failing the test on error.
func manifestJSON(t testing.TB, format string, a ...any) *agents.Manifest {
	t.Helper()
	m, err := agents.ParseManifest([]byte(fmt.Sprintf(format, a...)))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// kinds renders a log's kinds and values, e.g. "tick_time node_price=77 …".
func kinds(l TickLog) string {
	var b strings.Builder
	for k, e := range l.Entries {
		if k > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(e.Kind.String())
		switch e.Kind {
		case TickTime, Clock, Log:
		case Intent:
			b.WriteString("(" + ObsKind(e.Value).String() + ")")
		default:
			fmt.Fprintf(&b, "=%d", e.Value)
		}
	}
	return b.String()
}

// fakeNet is a RoundTripper that sends every request to one handler, as
// if every host name resolved to it (for host names that need DNS).
type fakeNet struct{ h http.Handler }

func (f fakeNet) RoundTrip(req *http.Request) (*http.Response, error) {
	rec := httptest.NewRecorder()
	f.h.ServeHTTP(rec, req)
	resp := rec.Result()
	resp.Request = req
	return resp, nil
}
