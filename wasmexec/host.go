package wasmexec

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
)

// igorModule is the import module name of the host functions.
const igorModule = "igor"

// How per-instance state reaches the host functions.
//
// wazero links imports by module name within a runtime, so a host module
// named "igor" exists once per wazero.Runtime. Rather than one wazero
// runtime (or one anonymous host module via experimental.WithImportResolver)
// per agent, the igor module is instantiated once and every guest call
// carries its *Instance in the call's context (instanceKey). wazero passes
// that context to the host functions it calls during the guest call, so a
// hostcall always reaches the state of the instance whose export is running:
// no registry, no lock, nothing to unregister. Capabilities are enforced when
// an instance is created (every igor import must be granted) and again on
// each call, so a missing grant can never be bypassed.
type instanceKey struct{}

type hostFunc struct {
	capability string
	sig        signature
	// fn gets the guest call's context (it carries the instance), for
	// hostcalls that wait on the network or the runner.
	fn func(i *Instance, ctx context.Context, mod api.Module, stack []uint64)
}

func sig(params []api.ValueType, results ...api.ValueType) signature {
	return signature{params: params, results: results}
}

// igorFuncs are the igor imports (docs/ABI.md), keyed by name.
var igorFuncs = map[string]hostFunc{
	"clock_now":            {agents.CapClock, sig(nil, i64), (*Instance).hostClockNow},
	"rand_bytes":           {agents.CapRand, sig([]api.ValueType{i32, i32}, i32), (*Instance).hostRandBytes},
	"log_emit":             {agents.CapLog, sig([]api.ValueType{i32, i32}), (*Instance).hostLogEmit},
	"args_get":             {agents.CapArgs, sig([]api.ValueType{i32, i32}, i32), (*Instance).hostArgsGet},
	"wallet_balance":       {agents.CapWallet, sig(nil, i64), (*Instance).hostWalletBalance},
	"wallet_receipt_count": {agents.CapWallet, sig(nil, i32), (*Instance).hostWalletReceiptCount},
	"wallet_receipt":       {agents.CapWallet, sig([]api.ValueType{i32, i32, i32}, i32), (*Instance).hostWalletReceipt},
	"node_price":           {agents.CapPricing, sig(nil, i64), (*Instance).hostNodePrice},
	"http_request":         {agents.CapHTTP, sig([]api.ValueType{i32, i32, i32, i32, i32, i32, i32, i32, i32, i32}, i32), (*Instance).hostHTTPRequest},
	"wallet_pay":           {agents.CapX402, sig([]api.ValueType{i64, i32, i32, i32, i32, i32, i32}, i32), (*Instance).hostWalletPay},
}

func igorFuncNames() string {
	names := make([]string, 0, len(igorFuncs))
	for n := range igorFuncs {
		names = append(names, n)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func instantiateHostModule(ctx context.Context, wz wazero.Runtime) error {
	b := wz.NewHostModuleBuilder(igorModule)
	for name, hf := range igorFuncs {
		name, hf := name, hf
		b.NewFunctionBuilder().
			WithGoModuleFunction(api.GoModuleFunc(func(ctx context.Context, mod api.Module, stack []uint64) {
				i, ok := ctx.Value(instanceKey{}).(*Instance)
				if !ok {
					// Only reachable if a guest is called outside Instance.call.
					panic(fmt.Errorf("%w: igor.%s called outside an instance call", ErrTrap, name))
				}
				if !i.granted[hf.capability] {
					i.fail(fmt.Errorf("%w: import igor.%s needs capability %q, which the manifest does not grant", ErrImportNotGranted, name, hf.capability))
				}
				hf.fn(i, ctx, mod, stack)
			}), hf.sig.params, hf.sig.results).
			Export(name)
	}
	_, err := b.Instantiate(ctx)
	return err
}

// fail aborts the running hostcall and with it the guest call; call()
// reports err (a wrapped sentinel) rather than wazero's wrapping of it.
func (i *Instance) fail(err error) {
	i.hostErr = err
	panic(err)
}

// record appends an observation to the open tick's log, trapping the guest
// when the log would exceed its limits.
func (i *Instance) record(o Observation) {
	if len(i.tickLog) >= MaxTickLogEntries || i.tickLogData+len(o.Data) > MaxTickLogDataBytes {
		i.fail(fmt.Errorf("%w: %s: tick log full (limits: %d entries, %d data bytes per tick)", ErrTrap, o.Kind, MaxTickLogEntries, MaxTickLogDataBytes))
	}
	i.tickLog = append(i.tickLog, o)
	i.tickLogData += len(o.Data)
}

// replaying reports whether the hostcall being made is answered from a
// tick log. A partial log (ReplayTick) that is used up turns the tick live
// here: what it replayed becomes the start of the tick's own log.
func (i *Instance) replaying() bool {
	r := i.replay
	if r == nil || !i.inTick {
		return false
	}
	if r.partial && r.pos >= len(r.log.Entries) {
		i.goLive()
		return false
	}
	return true
}

// goLive ends the replay of a used-up partial log: what it replayed
// becomes the start of the tick's own log.
func (i *Instance) goLive() {
	i.tickLog = slices.Clone(i.replay.log.Entries)
	i.tickLogData = i.replay.data
	i.replay = nil
}

// replayNext returns the next logged observation, which must be of kind k.
func (i *Instance) replayNext(k ObsKind) Observation {
	r := i.replay
	if r.pos >= len(r.log.Entries) {
		i.fail(fmt.Errorf("%w: call %d: the guest called %s but the tick log has only %d entries", ErrDivergence, r.pos, k, len(r.log.Entries)))
	}
	e := r.log.Entries[r.pos]
	if e.Kind != k {
		i.fail(fmt.Errorf("%w: call %d: the guest called %s but the tick log has %s", ErrDivergence, r.pos, k, e.Kind))
	}
	r.pos++
	r.data += len(e.Data)
	return e
}

func (i *Instance) hostClockNow(_ context.Context, _ api.Module, stack []uint64) {
	var v int64
	switch {
	case i.replaying():
		v = i.replayNext(Clock).Value
	case i.inTick:
		v = i.clock()
		i.record(Observation{Kind: Clock, Value: v})
	default:
		v = i.clock() // outside a tick: answered, not recorded (as the reference does)
	}
	stack[0] = uint64(v)
}

func (i *Instance) hostRandBytes(_ context.Context, mod api.Module, stack []uint64) {
	ptr, n := uint32(stack[0]), uint32(stack[1])
	// The code a recording host would return before reading randomness.
	var code int64
	var dst []byte
	if n > MaxRandBytes {
		code = -2
	} else if b, ok := mod.Memory().Read(ptr, n); !ok {
		code = -4
	} else {
		dst = b
	}
	switch {
	case i.replaying():
		e := i.replayNext(Rand)
		switch {
		case code != 0 && e.Value != code:
			i.fail(fmt.Errorf("%w: call %d: rand_bytes(len %d) fails with %d here, the tick log has %d", ErrDivergence, i.replay.pos-1, n, code, e.Value))
		case code == 0 && e.Value == 0 && len(e.Data) != int(n):
			i.fail(fmt.Errorf("%w: call %d: rand_bytes asked for %d bytes, the tick log has %d", ErrDivergence, i.replay.pos-1, n, len(e.Data)))
		case code == 0 && e.Value != 0 && e.Value != -1:
			i.fail(fmt.Errorf("%w: call %d: rand_bytes(len %d) succeeds here, the tick log has error %d", ErrDivergence, i.replay.pos-1, n, e.Value))
		}
		if e.Value == 0 {
			copy(dst, e.Data)
		}
		code = e.Value
	default:
		var data []byte
		if code == 0 {
			data = make([]byte, n)
			if _, err := io.ReadFull(i.rand, data); err != nil {
				code, data = -1, nil
			} else {
				copy(dst, data)
			}
		}
		if i.inTick {
			i.record(Observation{Kind: Rand, Value: code, Data: data})
		}
	}
	stack[0] = api.EncodeI32(int32(code))
}

func (i *Instance) hostLogEmit(_ context.Context, mod api.Module, stack []uint64) {
	ptr, n := uint32(stack[0]), uint32(stack[1])
	value := int64(n)
	var msg []byte
	if b, ok := mod.Memory().Read(ptr, n); ok {
		msg = b[:min(n, MaxLogMessage)]
	} else {
		value = -4
	}
	switch {
	case i.replaying():
		e := i.replayNext(Log)
		if e.Value != value || string(e.Data) != string(msg) {
			i.fail(fmt.Errorf("%w: call %d: log_emit(%q, len %d) but the tick log has (%q, len %d)", ErrDivergence, i.replay.pos-1, clip(msg), value, clip(e.Data), e.Value))
		}
	case i.replay != nil:
		// Replay does not repeat an agent's logs outside the tick either.
	default:
		if value >= 0 && i.allowLog() {
			i.logf(string(msg))
		}
		if i.inTick {
			o := Observation{Kind: Log, Value: value}
			if value >= 0 {
				o.Data = slices.Clone(msg)
			}
			i.record(o)
		}
	}
}

func clip(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

func (i *Instance) hostArgsGet(_ context.Context, mod api.Module, stack []uint64) {
	ptr, n := uint32(stack[0]), uint32(stack[1])
	args := i.args
	k := min(int(n), len(args))
	if k > 0 && !mod.Memory().WriteString(ptr, args[:k]) {
		stack[0] = api.EncodeI32(-4)
		return
	}
	stack[0] = uint64(uint32(len(args)))
}
