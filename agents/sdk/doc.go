// Package sdk is the Go guest SDK for igor-node agents: it turns a plain Go
// type into a WASM module that speaks the agent ABI (docs/ABI.md).
//
// # Usage
//
// An agent is a type implementing [Agent], registered from init() of a
// package main whose main() is empty:
//
//	type Counter struct{ n uint64 }
//
//	func (c *Counter) Init()                {}
//	func (c *Counter) Tick() bool           { c.n++; sdk.Logf("n=%d", c.n); return false }
//	func (c *Counter) Marshal() []byte      { return sdk.NewEncoder(8).Uint64(c.n).Finish() }
//	func (c *Counter) Unmarshal(b []byte)   { d := sdk.NewDecoder(b); c.n = d.Uint64(); ... }
//
//	func init() { sdk.Run(&Counter{}) }
//	func main() {}
//
// Build it with the stock toolchain:
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -trimpath -buildvcs=false -o counter.wasm .
//
// # Determinism
//
// A tick must be a pure function of the state and of what it observed
// through the SDK ([ClockNow], [RandBytes], [WalletBalance], [NodePrice],
// the results of [HTTPRequest] and [WalletPay]...), because the host
// records those observations and replays ticks to check them. HTTPRequest
// and WalletPay act on the world: the node journals them first and a
// replay never repeats them (docs/SDK.md, "Agents that act"). Never use time.Now,
// math/rand's global source seeded from the clock, crypto/rand, goroutines
// racing each other, or map iteration order in anything that reaches state
// or logs. Init must not call [ClockNow], [RandBytes] or [Log] (nothing is
// recorded outside a tick; [Args] is fine). Unmarshal and Marshal must have
// no side effects: they run again during replay and on every host.
//
// # Imports
//
// Each wrapper is the only user of its `igor` import, and the Go linker
// drops imports that no reachable code calls, so a module imports only the
// capabilities its agent uses (tested in internal/testagents). That is why
// there is no wrapper that references several imports.
//
// # Native builds
//
// Outside GOOS=wasip1 the wrappers dispatch to a [Backend] installed with
// SetBackend; package mock provides a deterministic one and a driver for
// unit tests. Without a backend they panic with a message saying so.
package sdk
