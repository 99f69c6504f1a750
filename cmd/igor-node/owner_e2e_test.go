package main

// End-to-end tests of issue #11 items 5 and 6 (safe defaults, small
// things) through the real binary.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// A daemon alone cannot give an agent the two standbys its manifest asks
// for: publish fails (exit 1, naming --min-replicas) and creates nothing;
// with --min-replicas 0 it places the agent and says what the budget buys.
func TestPublishRefusesUndersizedGroup(t *testing.T) {
	wasm, _ := testagents.Path(t, "heartbeat")
	d := startDaemon(t, t.TempDir())

	r := igor(t, d.home, "publish", wasm)
	if r.code != 1 || !strings.Contains(r.stderr, "--min-replicas 0") || !strings.Contains(r.stderr, "HTTP 503") {
		t.Fatalf("publish on a lone daemon: exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	var sts []custody.Status
	if err := getJSON(d.api, "/v1/custody", &sts); err != nil || len(sts) != 0 {
		t.Fatalf("custody after the refused publish: %+v %v", sts, err)
	}
	if keys, _ := os.ReadDir(filepath.Join(d.home, "keys")); len(keys) != 0 {
		t.Fatalf("keys left behind by the refused publish: %v", keys)
	}

	if r := igor(t, d.home, "publish", "--min-replicas", "-1", wasm); r.code != 2 {
		t.Fatalf("--min-replicas -1: exit %d, want 2 (bad usage)\n%s", r.code, r.stderr)
	}

	// The daemon's default price is 1,000,000 µc/s: the default budget of
	// 1.0 buys one second of tick time.
	r = mustOK(t, igor(t, d.home, "publish", "--min-replicas", "0", wasm), "publish --min-replicas 0")
	if !strings.Contains(r.stdout, "budget 1.000000 buys 1s of tick time at 1000000 µc/s") {
		t.Fatalf("publish output does not say what the budget buys:\n%s", r.stdout)
	}
	r = mustOK(t, igor(t, d.home, "publish", "--json", "--min-replicas", "0", "--budget", "2.5", wasm), "publish --json")
	var res struct {
		Members       []string `json:"members"`
		Price         int64    `json:"price_microcents_per_second"`
		BudgetSeconds *float64 `json:"budget_seconds"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("publish --json: %v\n%s", err, r.stdout)
	}
	if len(res.Members) != 1 || res.Price != 1_000_000 || res.BudgetSeconds == nil || *res.BudgetSeconds != 2.5 {
		t.Fatalf("publish --json: %s", r.stdout)
	}
}
