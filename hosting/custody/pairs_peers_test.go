package custody

import (
	"slices"
	"testing"

	"github.com/igor-mesh/igor-node/hosting/lease"
)

// pairPeers is cached by generation: every change of a group's voters and
// of the set of groups must show in the next round's peers.
func TestPairPeersFollowsVoters(t *testing.T) {
	m := &Manager{drivers: map[string]*driver{}}
	want := func(ps ...string) {
		t.Helper()
		if got := m.pairPeers(); !slices.Equal(got, ps) {
			t.Fatalf("pairPeers = %v, want %v", got, ps)
		}
	}
	add := func(did string, members ...string) *driver {
		d := &driver{m: m}
		d.setVoters(lease.Conf{Members: members})
		m.mu.Lock()
		m.drivers[did] = d
		m.votersGen.Add(1) // as join does
		m.mu.Unlock()
		return d
	}
	want()
	d1 := add("x", "a", "b", "c")
	want("a", "b", "c")
	add("y", "a", "d")
	want("a", "b", "c", "d")
	want("a", "b", "c", "d") // unchanged: the cached list
	d1.setVoters(lease.Conf{Members: []string{"a", "b"}, Joint: []string{"e"}})
	want("a", "b", "d", "e")
	m.mu.Lock()
	delete(m.drivers, "y")
	m.votersGen.Add(1) // as Leave does
	m.mu.Unlock()
	want("a", "b", "e")
}
