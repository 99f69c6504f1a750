// Command trapinit is a hostile fixture: Init panics, so loading fails
// before any tick.
package main

import "github.com/igor-mesh/igor-node/agents/sdk"

type Trapinit struct{}

func (Trapinit) Init()            { panic("trapinit: deliberate panic in Init") }
func (Trapinit) Tick() bool       { return false }
func (Trapinit) Marshal() []byte  { return nil }
func (Trapinit) Unmarshal([]byte) {}

func init() { sdk.Run(Trapinit{}) }

func main() {}
