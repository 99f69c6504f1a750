// Command slowtick is a test fixture whose every tick busy-works for
// spin_ms of wall time (args "spin_ms=N", default 400), reading the host
// clock between rounds of work. A host paused inside such a tick (SIGSTOP)
// must not blame the agent for the pause (DECISIONS D54): after the resume
// the tick sees its time is up and returns.
package main

import (
	"strconv"
	"strings"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

type SlowTick struct {
	ticks  uint64
	spinNs int64
	sink   uint64
}

func (s *SlowTick) Init() {
	s.spinNs = 400e6
	for _, kv := range strings.Split(sdk.Args(), ",") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(kv), "spin_ms="); ok {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil && ms >= 0 {
				s.spinNs = ms * 1e6
			}
		}
	}
}

func (s *SlowTick) Tick() bool {
	start := sdk.ClockNow()
	for sdk.ClockNow()-start < s.spinNs {
		for i := 0; i < 200_000; i++ {
			s.sink = s.sink*6364136223846793005 + 1442695040888963407
		}
	}
	s.ticks++
	sdk.Logf("slowtick: tick %d", s.ticks)
	return false
}

func (s *SlowTick) Marshal() []byte {
	return sdk.NewEncoder(16).Uint64(s.ticks).Uint64(uint64(s.spinNs)).Finish()
}

func (s *SlowTick) Unmarshal(b []byte) {
	d := sdk.NewDecoder(b)
	s.ticks, s.spinNs = d.Uint64(), int64(d.Uint64())
}

func init() { sdk.Run(&SlowTick{}) }

func main() {}
