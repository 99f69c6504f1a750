// Command heartbeat is the reference example agent: every tick it reads the
// clock and 8 random bytes through the SDK, folds them into its state and
// logs its age. Given the same observations, every replay reaches the same
// state byte for byte.
package main

import (
	"encoding/binary"
	"fmt"
	"math/bits"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

// stateVersion leads the encoded state so a later version of the agent can
// recognise and migrate old checkpoints.
const stateVersion = 1

// Heartbeat's whole state is these fields; nothing else survives a tick.
type Heartbeat struct {
	Ticks   uint64 // ticks completed
	FirstNs int64  // clock at the first tick (Unix ns)
	LastNs  int64  // clock at the latest tick
	Pulse   uint64 // fold of every tick's 8 random bytes
}

// Init has nothing to prepare: it must not observe (no clock, rand or log).
func (h *Heartbeat) Init() {}

func (h *Heartbeat) Tick() bool {
	now := sdk.ClockNow()
	var r [8]byte
	if err := sdk.RandBytes(r[:]); err != nil {
		// The failure is itself recorded, so skipping the fold keeps
		// replay deterministic.
		sdk.Logf("rand: %v", err)
	} else {
		h.Pulse = bits.RotateLeft64(h.Pulse, 7) ^ binary.LittleEndian.Uint64(r[:])
	}
	if h.Ticks == 0 {
		h.FirstNs = now
	}
	h.Ticks++
	h.LastNs = now
	sdk.Logf("tick=%d age=%ds", h.Ticks, (h.LastNs-h.FirstNs)/1e9)
	return false
}

func (h *Heartbeat) Marshal() []byte {
	return sdk.NewEncoder(33).Uint8(stateVersion).
		Uint64(h.Ticks).Int64(h.FirstNs).Int64(h.LastNs).Uint64(h.Pulse).Finish()
}

// Unmarshal restores the state; empty input means a new agent. Corrupt
// input panics (a trap the host reports) instead of silently resetting.
func (h *Heartbeat) Unmarshal(b []byte) {
	*h = Heartbeat{}
	if len(b) == 0 {
		return
	}
	d := sdk.NewDecoder(b)
	if v := d.Uint8(); v != stateVersion && d.Err() == nil {
		panic(fmt.Sprintf("heartbeat: state version %d, this build reads version %d", v, stateVersion))
	}
	h.Ticks, h.FirstNs, h.LastNs, h.Pulse = d.Uint64(), d.Int64(), d.Int64(), d.Uint64()
	if err := d.Finish(); err != nil {
		panic(fmt.Sprintf("heartbeat: corrupt state: %v", err))
	}
}

func init() { sdk.Run(&Heartbeat{}) }

func main() {}
