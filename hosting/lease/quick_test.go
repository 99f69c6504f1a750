package lease

import (
	"math/rand/v2"
	"testing"
	"testing/quick"
)

// Any sequence of well-addressed messages and ticks — however nonsensical —
// leaves the machine consistent: no panic, the epoch never decreases, the
// accepted epoch never exceeds it, Start and Stop alternate, and a Start
// never comes without a persisted epoch it won.
func TestQuickArbitraryInput(t *testing.T) {
	group := []string{"a", "b", "c", "d", "e"}
	f := func(seed uint64, steps []uint16) bool {
		r := rand.New(rand.NewPCG(seed, 1))
		m, err := New(Config{Self: "a", Group: group, Rank: 0, HeartbeatTicks: 2, LeaseTicks: 10, WaitTicks: 12,
			DriftTicks: 2, Rand: r.Uint64})
		if err != nil {
			t.Fatal(err)
		}
		var persisted uint64
		running := false
		for _, st := range steps {
			switch st % 8 {
			case 0, 1:
				m.Tick()
			case 2:
				_ = m.Propose(Checkpoint{Seq: uint64(st), ID: "x"})
			case 3:
				_ = m.Transfer(group[1+int(st)%4])
			default:
				msg := Message{Type: MsgType(1 + r.IntN(6)), From: group[1+r.IntN(4)], To: "a",
					Epoch: 1 + r.Uint64N(6), Round: r.Uint64N(8), Commit: r.Uint64N(5),
					Checkpoint: Checkpoint{Seq: r.Uint64N(5), ID: "y"}, AcceptedAt: r.Uint64N(6),
					Reject: r.IntN(3) == 0, Hint: r.Uint64N(8)}
				if err := m.Step(msg); err != nil {
					t.Errorf("Step(%s): %v", DescribeMessage(msg), err)
					return false
				}
			}
			rd := m.Ready()
			if rd.Persist != nil {
				if rd.Persist.Epoch < persisted || rd.Persist.AcceptedAt > rd.Persist.Epoch {
					t.Errorf("persisted %s after epoch %d", rd.Persist, persisted)
					return false
				}
				persisted = rd.Persist.Epoch
			}
			if rd.Stop {
				if !running {
					t.Errorf("Stop while not running")
					return false
				}
				running = false
			}
			if rd.Start != nil {
				if running || persisted == 0 || m.Role() != Holder {
					t.Errorf("Start while running=%t persisted=%d role=%s", running, persisted, m.Role())
					return false
				}
				running = true
			}
			if running != m.Running() {
				t.Errorf("Running()=%t after Ready, want %t", m.Running(), running)
				return false
			}
			m.Advance()
		}
		return true
	}
	if err := quick.Check(f, &quick.Config{MaxCount: 2000}); err != nil {
		t.Fatal(err)
	}
}
