// Command memhog is a hostile fixture: its first Tick allocates 1 MiB per
// iteration and keeps every block, forever. The host's memory cap must end
// it ("out of memory" trap) without harming the host.
package main

import "github.com/igor-mesh/igor-node/agents/sdk"

type Memhog struct{ blocks [][]byte }

func (m *Memhog) Init() {}

func (m *Memhog) Tick() bool {
	for {
		b := make([]byte, 1<<20)
		for i := 0; i < len(b); i += 4096 {
			b[i] = 1 // touch every page
		}
		m.blocks = append(m.blocks, b)
	}
}

func (m *Memhog) Marshal() []byte    { return sdk.NewEncoder(8).Uint64(uint64(len(m.blocks))).Finish() }
func (m *Memhog) Unmarshal(b []byte) {}

func init() { sdk.Run(&Memhog{}) }

func main() {}
