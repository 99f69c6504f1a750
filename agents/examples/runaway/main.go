// Command runaway is a hostile fixture: its first Tick never returns. The
// host must stop it at the tick deadline (close-on-deadline) and end the
// instance.
package main

import "github.com/igor-mesh/igor-node/agents/sdk"

type Runaway struct{ spins uint64 }

func (r *Runaway) Init() {}

func (r *Runaway) Tick() bool {
	for {
		r.spins++ // a side effect, so the loop is not optimised into nothing
	}
}

func (r *Runaway) Marshal() []byte    { return sdk.NewEncoder(8).Uint64(r.spins).Finish() }
func (r *Runaway) Unmarshal(b []byte) { r.spins = sdk.NewDecoder(b).Uint64() }

func init() { sdk.Run(&Runaway{}) }

func main() {}
