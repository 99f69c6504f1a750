package sdk

import (
	"errors"
	"fmt"
	"strconv"
)

// Agent is what an agent author implements. The host drives it as:
// Init once per instance; then Unmarshal (resume, possibly with empty
// state) or nothing; then any number of Tick, each possibly followed by
// Marshal (checkpoint).
type Agent interface {
	// Init prepares an instance. It runs on every load (also before a
	// resume and before every replay), so it must not call ClockNow,
	// RandBytes, Log or the wallet, price, HTTP and payment calls (the host
	// traps HTTPRequest and WalletPay there); Args is allowed.
	Init()
	// Tick does one unit of work and reports whether more work is pending
	// (true: tick again soon; false: tick again in about a second).
	Tick() bool
	// Marshal returns the complete state. The SDK keeps the slice until
	// the host has copied it, so returning an internal buffer is fine.
	Marshal() []byte
	// Unmarshal replaces the state with b, which came from Marshal. b is
	// the agent's to keep (the SDK never reuses it). An empty b means "no
	// saved state": reset to what Init produced. It must
	// be free of side effects and hostcalls; corrupt input should panic
	// with a clear message (the host then reports a trap in agent_resume)
	// rather than silently reset.
	Unmarshal(b []byte)
}

var registered Agent

// Run registers a as the module's agent. Call it exactly once, from an
// init() function of package main. It panics if a is nil or an agent is
// already registered, since either is a build-time mistake.
func Run(a Agent) {
	if a == nil {
		panic("sdk: Run(nil): pass a pointer to your agent, e.g. sdk.Run(&MyAgent{})")
	}
	if registered != nil {
		panic("sdk: Run called twice: a module hosts exactly one agent")
	}
	registered = a
}

// theAgent returns the registered agent or panics with instructions.
func theAgent() Agent {
	if registered == nil {
		panic("sdk: no agent registered: call sdk.Run(&MyAgent{}) from an init() function in package main")
	}
	return registered
}

// MaxRandChunk is the largest buffer one igor.rand_bytes call may fill
// (docs/ABI.md); RandBytes splits larger requests.
const MaxRandChunk = 65536

// ErrRand is returned (wrapped) by RandBytes when the host refuses a request.
var ErrRand = errors.New("sdk: rand_bytes failed")

// ClockNow returns the host's wall clock in Unix nanoseconds. The value is
// recorded, so replay sees the same one. Call it only from Tick.
func ClockNow() int64 { return clockNow() }

// RandBytes fills b with host randomness, in chunks of at most
// MaxRandChunk bytes (each chunk is one recorded observation). An empty b
// makes no hostcall. Call it only from Tick.
//
// It returns an error wrapping ErrRand if the host reports a failure.
func RandBytes(b []byte) error {
	for len(b) > 0 {
		n := min(len(b), MaxRandChunk)
		if rc := randBytes(b[:n]); rc != 0 {
			return wrap(ErrRand, "code "+strconv.Itoa(int(rc))+" ("+randCodeText(rc)+")")
		}
		b = b[n:]
	}
	return nil
}

func randCodeText(rc int32) string {
	switch rc {
	case -2:
		return "length over 65536"
	case -4:
		return "buffer outside guest memory"
	default:
		return "unknown host error"
	}
}

// Log emits one log line. The host truncates lines over 4096 bytes and
// records each line. Call it only from Tick.
func Log(msg string) { logEmit(msg) }

// Logf formats with fmt.Sprintf and emits the result as one log line.
// It is the only part of the SDK that formats with fmt, which adds about
// 0.35 MB to a module; Log with strconv avoids that.
func Logf(format string, args ...any) { logEmit(fmt.Sprintf(format, args...)) }

// Args returns the manifest's args string ("" if none). It is part of the
// signed manifest, so it is deterministic and may be called from Init.
func Args() string { return argsGet() }

// Backend answers hostcalls in native (non-wasip1) builds, at the ABI's
// level: each method gets the buffers the wrapper would pass to the host
// and returns the import's result (an ABI error code where negative),
// writing into the buffers as the host does. Package mock implements it.
type Backend interface {
	ClockNow() int64
	RandBytes(b []byte) int32
	LogEmit(msg string)
	Args() string
	WalletBalance() int64
	WalletReceiptCount() int32
	// WalletReceipt writes receipt index to buf (or its length, as a u32,
	// to buf[:4] for -4).
	WalletReceipt(index int32, buf []byte) int32
	NodePrice() int64
	// HTTPRequest writes [body_len u32][body] to resp and returns the
	// status (or the body's length to resp[:4] for -5).
	HTTPRequest(method, url string, headers, body, resp []byte) int32
	// WalletPay writes [len u32][receipt] to receipt and returns 4 + len
	// (or the receipt's length to receipt[:4] for -5).
	WalletPay(amount int64, recipient, memo string, receipt []byte) int32
}
