package node

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/hosting/custody"
)

// BenchmarkMovePause measures moving an agent out of its custody group to a
// better-ranked new node (D41: regroup toward it after MoveAfter, the probe
// prewarming the target) — the pause from the last tick on the old holder
// to the first on the new one — against, in the same run and mesh, the
// in-group handoff that follows when the new holder drains (Transfer to a
// live member). Counter agent, 64 B of state, ticks every 20 ms.
//
// Each trial needs fresh meshes (the new node must rank first), so the
// benchmark runs moveTrials trials whatever b.N is. Metrics: move-p50-ms,
// move-max-ms, handoff-p50-ms, x-handoff (move p50 ÷ handoff p50), and
// lost-or-redone (moves or handoffs whose first new tick was not the last
// old tick + 1: must be 0 — moveTicks.moves fails the benchmark then).
func BenchmarkMovePause(b *testing.B) {
	const moveTrials = 5
	var moves, handoffs []time.Duration
	for range b.N {
		for trial := range moveTrials {
			mv, ho := moveTrial(b, trial)
			moves, handoffs = append(moves, mv), append(handoffs, ho)
		}
	}
	slices.Sort(moves)
	slices.Sort(handoffs)
	mp50, hp50 := moves[len(moves)/2], handoffs[len(handoffs)/2]
	b.ReportMetric(float64(mp50)/1e6, "move-p50-ms")
	b.ReportMetric(float64(moves[len(moves)-1])/1e6, "move-max-ms")
	b.ReportMetric(float64(hp50)/1e6, "handoff-p50-ms")
	b.ReportMetric(float64(mp50)/float64(hp50), "x-handoff")
	b.Logf("moves %v; handoffs %v", moves, handoffs)
}

// moveTrial runs one move to a new best-ranked node, then drains it (an
// in-group handoff), and returns both pauses.
func moveTrial(b *testing.B, trial int) (move, handoff time.Duration) {
	timing := custody.DefaultTiming()
	timing.MoveAfter = time.Second
	var mt moveTicks
	ms := mt.startMeshes(b, 3, timing)
	ctx := context.Background()
	res := publishShortTerm(b, ms[0])
	waitHolder(b, ms, res.DID)
	fresh := mt.startMesh(b, 3, homeRankingFirst(b, res.DID, res.Members), timing, ms[0])
	all := append(slices.Clone(ms), fresh)
	waitHeldBy(b, all, res.DID, "the better-ranked new node", func(h *Mesh) bool { return h == fresh })
	time.Sleep(200 * time.Millisecond)
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := fresh.Drain(dctx); err != nil {
		b.Fatalf("trial %d: drain: %v", trial, err)
	}
	waitHeldBy(b, all, res.DID, "another member", func(h *Mesh) bool { return h != fresh })
	time.Sleep(200 * time.Millisecond)
	pauses := mt.pauses(b)
	if len(pauses) != 2 {
		b.Fatalf("trial %d: %d moves, want 2 (the move, then the drain's handoff): %v", trial, len(pauses), pauses)
	}
	return pauses[0], pauses[1]
}
