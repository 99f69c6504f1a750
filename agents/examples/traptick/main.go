// Command traptick is a hostile fixture: ticks 1 and 2 succeed (each logs
// and is checkpointable), tick 3 panics. The host must end the instance and
// keep the state checkpointed after tick 2.
package main

import (
	"fmt"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

// TrapAt is the tick that panics.
const TrapAt = 3

type Traptick struct{ ticks uint64 }

func (a *Traptick) Init() {}

func (a *Traptick) Tick() bool {
	if a.ticks+1 == TrapAt {
		panic(fmt.Sprintf("traptick: deliberate panic in tick %d", TrapAt))
	}
	a.ticks++
	sdk.Logf("tick=%d", a.ticks)
	return false
}

func (a *Traptick) Marshal() []byte { return sdk.NewEncoder(8).Uint64(a.ticks).Finish() }

func (a *Traptick) Unmarshal(b []byte) {
	if len(b) == 0 {
		a.ticks = 0
		return
	}
	d := sdk.NewDecoder(b)
	a.ticks = d.Uint64()
	if err := d.Finish(); err != nil {
		panic(fmt.Sprintf("traptick: corrupt state: %v", err))
	}
}

func init() { sdk.Run(&Traptick{}) }

func main() {}
