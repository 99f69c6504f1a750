package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/internal/testagents"
)

var didLine = regexp.MustCompile(`(?m)^did:key:z6Mk\S+$`)

// Every hostile fixture is contained: the process reports a clear error
// naming what the agent did, and whatever was committed before stays valid.
func TestHostileAgentsAreContained(t *testing.T) {
	cases := []struct {
		agent   string
		want    []string // all must appear in stderr
		created bool     // the failure happens after checkpoint 0 was committed
		tick    uint64   // committed head tick when created
	}{
		{"runaway", []string{"deadline", "agent_tick", "failed repeatedly"}, true, 0},
		{"memhog", []string{"out of memory", "agent_tick"}, true, 0},
		{"traptick", []string{"trap", "agent_tick", "failed repeatedly"}, true, 2},
		{"trapinit", []string{"trap", "agent_init"}, false, 0},
		{"noexport", []string{"missing required export: agent_tick"}, false, 0},
		{"bigstate", []string{"state too large"}, false, 0},
		{"badptr", []string{"bad pointer", "agent_checkpoint"}, false, 0},
	}
	for _, c := range cases {
		t.Run(c.agent, func(t *testing.T) {
			home := t.TempDir()
			wasm, _ := testagents.Path(t, c.agent)
			// A budget large enough that failed ticks on a loaded machine
			// (each charged for its time) cannot exhaust it before the
			// failure limit: that stop would be a budget stop, exit 0.
			r := igor(t, home, "run", "--tick-interval", "5ms", "--checkpoint-every", "1", "--budget", "1000", wasm)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\nstdout:%s\nstderr:%s", r.code, r.stdout, r.stderr)
			}
			if strings.Contains(r.stderr, "panic:") && !strings.Contains(r.stderr, "agent") {
				t.Fatalf("the node itself panicked:\n%s", r.stderr)
			}
			for _, w := range c.want {
				if !strings.Contains(r.stderr, w) {
					t.Fatalf("stderr must mention %q:\n%s", w, r.stderr)
				}
			}
			did := didLine.FindString(r.stdout)
			if !c.created {
				if did != "" {
					t.Fatalf("an agent that cannot start must not be announced: %s", r.stdout)
				}
				if l := mustOK(t, igor(t, home, "list", "--json"), "list"); strings.TrimSpace(l.stdout) != "[]" {
					t.Fatalf("nothing may be committed: %s", l.stdout)
				}
				return
			}
			if did == "" {
				t.Fatalf("no DID printed:\n%s", r.stdout)
			}
			h := inspect(t, home, did)
			if h.Tick != c.tick || !h.SignatureOK {
				t.Fatalf("committed head %+v, want tick %d", h, c.tick)
			}
			mustOK(t, igor(t, home, "verify", did), "verify after containment")
		})
	}
}
