package main

// End-to-end tests of issue #11 items 5 and 6 (safe defaults, small
// things) through the real binary.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode"

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

// snakeKeys fails unless every object key in the JSON document doc is
// snake_case (lower-case letters, digits and underscores).
func snakeKeys(t *testing.T, what, doc string) {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatalf("%s: not JSON (%v):\n%s", what, err, doc)
	}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				for _, r := range k {
					if !(unicode.IsLower(r) || unicode.IsDigit(r) || r == '_') {
						t.Errorf("%s: key %q is not snake_case", what, k)
						break
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(v)
}

// jsonError fails unless r failed with exit code and stderr is one JSON
// object {"error": "..."} containing want; stdout must be empty.
func jsonError(t *testing.T, what string, r result, code int, want string) {
	t.Helper()
	var e struct {
		Error string `json:"error"`
	}
	if r.code != code || r.stdout != "" || json.Unmarshal([]byte(r.stderr), &e) != nil || !strings.Contains(e.Error, want) {
		t.Fatalf("%s: want exit %d and {\"error\": …%s…} on stderr; got exit %d\nstdout:\n%s\nstderr:\n%s", what, code, want, r.code, r.stdout, r.stderr)
	}
}

// The small things of issue #11: snake_case JSON everywhere (hosts too),
// one meaning per lease field, JSON errors under --json, custody's whole
// DIDs.
func TestDaemonOutputs(t *testing.T) {
	wasm, _ := testagents.Path(t, "heartbeat")
	d := startDaemon(t, t.TempDir())
	r := mustOK(t, igor(t, d.home, "publish", "--json", "--min-replicas", "0", wasm), "publish")
	snakeKeys(t, "publish --json", r.stdout)
	var pub struct{ DID string }
	json.Unmarshal([]byte(r.stdout), &pub)
	waitUntil(t, 30*time.Second, "the agent running", func() error {
		var sts []custody.Status
		if err := getJSON(d.api, "/v1/custody", &sts); err != nil || len(sts) != 1 || !sts[0].Running {
			return fmt.Errorf("custody %+v %v", sts, err)
		}
		return nil
	})

	for _, args := range [][]string{{"hosts", "--json"}, {"peers", "--json"}, {"custody", "--json"}, {"agent", pub.DID, "--json"}} {
		r := mustOK(t, igor(t, d.home, args...), strings.Join(args, " "))
		snakeKeys(t, strings.Join(args, " "), r.stdout)
	}
	r = mustOK(t, igor(t, d.home, "hosts", "--json"), "hosts --json")
	if !strings.Contains(r.stdout, `"free_slots"`) || !strings.Contains(r.stdout, `"price_microcents_per_second"`) {
		t.Fatalf("hosts --json:\n%s", r.stdout)
	}

	// One name, one meaning: the holder's lease as time left; the hosted
	// agent's term end; the custody lease's end.
	var st map[string]any
	r = mustOK(t, igor(t, d.home, "agent", pub.DID, "--json"), "agent --json")
	json.Unmarshal([]byte(r.stdout), &st)
	if left, ok := st["lease_left_ms"].(float64); !ok || left <= 0 || left > 60_000 || st["lease_expiry"] != nil {
		t.Fatalf("agent --json from the holder: want lease_left_ms in (0, 60000] and no lease_expiry:\n%s", r.stdout)
	}
	var hosted []map[string]any
	if err := getJSON(d.api, "/v1/agents", &hosted); err != nil || len(hosted) != 1 || hosted[0]["term_end"] == nil || hosted[0]["lease_expiry"] != nil {
		t.Fatalf("GET /v1/agents: want term_end and no lease_expiry: %v %v", hosted, err)
	}

	// custody prints whole DIDs: the line can be pasted into other commands.
	r = mustOK(t, igor(t, d.home, "custody"), "custody")
	if !strings.Contains(r.stdout, pub.DID+" ") {
		t.Fatalf("custody does not show the whole DID %s:\n%s", pub.DID, r.stdout)
	}

	// With --json, errors are JSON on stderr (stdout stays for results).
	jsonError(t, "agent --json of a bad DID", igor(t, d.home, "agent", "did:key:nope", "--json"), 2, "did:key:nope")
	jsonError(t, "hosts --json without a daemon", igor(t, d.home, "hosts", "--json", "--api", "127.0.0.1:1"), 1, "127.0.0.1:1")
	jsonError(t, "an unknown flag with --json", igor(t, d.home, "hosts", "--json", "--bogus"), 2, "bogus")
	if r := igor(t, d.home, "agent", "did:key:nope"); r.code != 2 || !strings.HasPrefix(r.stderr, "error: ") {
		t.Fatalf("without --json errors stay plain text: exit %d %q", r.code, r.stderr)
	}
}

// inspect shows a manifest by its CID, and says what else a CID may be
// when it is none of the objects inspect shows; export's errors name the
// file the user asked for, not a temporary one.
func TestInspectManifestAndExportErrors(t *testing.T) {
	home, work := t.TempDir(), t.TempDir()
	did := newAgent(t, home, 2)
	h := inspect(t, home, did)
	var man struct {
		Kind    string          `json:"kind"`
		CID     string          `json:"cid"`
		Content json.RawMessage `json:"content"`
	}
	var full map[string]string
	r := mustOK(t, igor(t, home, "inspect", did, "--json"), "inspect")
	json.Unmarshal([]byte(r.stdout), &full)
	r = mustOK(t, igor(t, home, "inspect", full["manifest"], "--json"), "inspect manifest")
	if err := json.Unmarshal([]byte(r.stdout), &man); err != nil || man.Kind != "manifest" || man.CID != full["manifest"] || !strings.Contains(string(man.Content), `"heartbeat"`) {
		t.Fatalf("inspect --json of the manifest %s: %v\n%s", full["manifest"], err, r.stdout)
	}
	r = mustOK(t, igor(t, home, "inspect", full["manifest"]), "inspect manifest")
	if !strings.Contains(r.stdout, "manifest") || !strings.Contains(r.stdout, `"name": "heartbeat"`) {
		t.Fatalf("inspect of the manifest:\n%s", r.stdout)
	}
	if r := igor(t, home, "inspect", h.State); r.code != 1 || !strings.Contains(r.stderr, "module or state") {
		t.Fatalf("inspect of a state block: exit %d %s", r.code, r.stderr)
	}

	target := filepath.Join(work, "no-such-dir", "agent.car")
	r = igor(t, home, "export", did, "-o", target)
	if r.code != 1 || !strings.Contains(r.stderr, target) || strings.Contains(r.stderr, ".tmp") || !strings.Contains(r.stderr, "no such file or directory") {
		t.Fatalf("export into a missing directory: exit %d %s", r.code, r.stderr)
	}
	r = igor(t, home, "keys", "export", did, "-o", target)
	if r.code != 1 || !strings.Contains(r.stderr, target) || strings.Contains(r.stderr, ".tmp") {
		t.Fatalf("keys export into a missing directory: exit %d %s", r.code, r.stderr)
	}
}
