// Command ungranted is a hostile fixture: it calls sdk.RandBytes, so the
// module imports igor.rand_bytes, but its manifest grants only "log". The
// host must refuse to load it, naming the import and the capability.
package main

import "github.com/igor-mesh/igor-node/agents/sdk"

type Ungranted struct{ last byte }

func (u *Ungranted) Init() {}

func (u *Ungranted) Tick() bool {
	var b [1]byte
	if err := sdk.RandBytes(b[:]); err != nil {
		sdk.Logf("rand: %v", err)
	}
	u.last = b[0]
	sdk.Logf("rand=%d", u.last)
	return false
}

func (u *Ungranted) Marshal() []byte { return []byte{u.last} }

func (u *Ungranted) Unmarshal(b []byte) {
	u.last = 0
	if len(b) > 0 {
		u.last = b[0]
	}
}

func init() { sdk.Run(&Ungranted{}) }

func main() {}
