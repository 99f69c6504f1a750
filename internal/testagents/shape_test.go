package testagents_test

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// importCap maps each igor import to the capability that grants it and its
// ABI signature (docs/ABI.md).
var importCap = map[string]struct {
	cap    string
	params string
	result string
}{
	"clock_now":  {agents.CapClock, "", "i64"},
	"rand_bytes": {agents.CapRand, "i32,i32", "i32"},
	"log_emit":   {agents.CapLog, "i32,i32", ""},
	"args_get":   {agents.CapArgs, "i32,i32", "i32"},

	"wallet_balance":       {agents.CapWallet, "", "i64"},
	"wallet_receipt_count": {agents.CapWallet, "", "i32"},
	"wallet_receipt":       {agents.CapWallet, "i32,i32,i32", "i32"},
	"node_price":           {agents.CapPricing, "", "i64"},
	"http_request":         {agents.CapHTTP, "i32,i32,i32,i32,i32,i32,i32,i32,i32,i32", "i32"},
	"wallet_pay":           {agents.CapX402, "i64,i32,i32,i32,i32,i32,i32", "i32"},
}

// exportSig is the ABI signature of each lifecycle export.
var exportSig = map[string][2]string{
	"agent_init":           {"", ""},
	"agent_tick":           {"", "i32"},
	"agent_checkpoint":     {"", "i32"},
	"agent_checkpoint_ptr": {"", "i32"},
	"agent_resume":         {"i32,i32", ""},
	"agent_alloc":          {"i32", "i32"},
	"_initialize":          {"", ""},
}

var required = []string{"agent_init", "agent_tick", "agent_checkpoint", "agent_checkpoint_ptr", "agent_resume"}

// expected describes each example: the igor imports it must have (no more),
// the lifecycle exports it must lack, whether it is built with the SDK
// (and so exports agent_alloc), and the capability its manifest
// deliberately fails to grant.
var expected = map[string]struct {
	imports   []string
	missing   []string
	sdk       bool
	ungranted string
}{
	"heartbeat": {imports: []string{"clock_now", "log_emit", "rand_bytes"}, sdk: true},
	"fetcher": {imports: []string{"args_get", "http_request", "log_emit", "node_price", "wallet_balance",
		"wallet_pay", "wallet_receipt", "wallet_receipt_count"}, sdk: true},
	"pricewatcher": {imports: []string{"args_get", "http_request", "log_emit"}, sdk: true},
	"x402buyer":    {imports: []string{"args_get", "http_request", "log_emit", "wallet_pay"}, sdk: true},
	"poster":       {imports: []string{"args_get", "http_request", "log_emit"}, sdk: true},
	"counter":      {imports: []string{"args_get", "log_emit"}, sdk: true},
	"slowtick":     {imports: []string{"args_get", "clock_now", "log_emit"}, sdk: true},
	"runaway":      {sdk: true},
	"memhog":       {sdk: true},
	"traptick":     {imports: []string{"log_emit"}, sdk: true},
	"trapinit":     {sdk: true},
	"ungranted":    {imports: []string{"log_emit", "rand_bytes"}, sdk: true, ungranted: agents.CapRand},
	"noexport":     {missing: []string{"agent_tick"}},
	"bigstate":     {},
	"badptr":       {},
	// Raw ABI, not the SDK, but it exports agent_alloc like SDK modules.
	"hostile": {imports: []string{"args_get", "log_emit"}, sdk: true},
}

func TestEveryExampleIsCovered(t *testing.T) {
	names := testagents.Names(t)
	var want []string
	for n := range expected {
		want = append(want, n)
	}
	sort.Strings(want)
	if !slices.Equal(names, want) {
		t.Fatalf("examples %v, table covers %v: add the new example to this test", names, want)
	}
}

func TestExampleManifestsParse(t *testing.T) {
	root, err := testagents.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range testagents.Names(t) {
		data, err := os.ReadFile(filepath.Join(root, "agents", "examples", name, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		m, err := agents.ParseManifest(data)
		if err != nil {
			t.Errorf("%s/manifest.json: %v", name, err)
			continue
		}
		if m.Name != name {
			t.Errorf("%s/manifest.json: name %q, want the directory name", name, m.Name)
		}
	}
}

func sig(types []api.ValueType) string {
	s := make([]string, len(types))
	for i, v := range types {
		s[i] = api.ValueTypeName(v)
	}
	return strings.Join(s, ",")
}

func TestModuleImportsAndExports(t *testing.T) {
	ctx := context.Background()
	r := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfigInterpreter()) // listing imports needs no native code
	defer r.Close(ctx)
	for _, name := range testagents.Names(t) {
		t.Run(name, func(t *testing.T) {
			exp := expected[name]
			wasm, manifestJSON := testagents.Bytes(t, name)
			manifest, err := agents.ParseManifest(manifestJSON)
			if err != nil {
				t.Fatal(err)
			}
			cm, err := r.CompileModule(ctx, wasm)
			if err != nil {
				t.Fatal(err)
			}
			defer cm.Close(ctx)

			var igor []string
			for _, f := range cm.ImportedFunctions() {
				mod, fn, _ := f.Import()
				switch mod {
				case "wasi_snapshot_preview1":
				case "igor":
					igor = append(igor, fn)
					spec, ok := importCap[fn]
					if !ok {
						t.Errorf("unknown import igor.%s", fn)
						continue
					}
					if got := sig(f.ParamTypes()) + "->" + sig(f.ResultTypes()); got != spec.params+"->"+spec.result {
						t.Errorf("igor.%s signature %s, ABI says %s->%s", fn, got, spec.params, spec.result)
					}
					if !manifest.Grants(spec.cap) && spec.cap != exp.ungranted {
						t.Errorf("imports igor.%s but the manifest does not grant %q", fn, spec.cap)
					}
					if manifest.Grants(spec.cap) && spec.cap == exp.ungranted {
						t.Errorf("manifest grants %q, which this fixture must lack", spec.cap)
					}
				default:
					t.Errorf("import from unexpected module %s.%s", mod, fn)
				}
			}
			sort.Strings(igor)
			if !slices.Equal(igor, exp.imports) {
				t.Errorf("igor imports %v, want exactly %v (unused wrappers must not be imported)", igor, exp.imports)
			}

			exports := cm.ExportedFunctions()
			for _, e := range required {
				_, has := exports[e]
				if has == slices.Contains(exp.missing, e) {
					t.Errorf("export %s present=%v, want %v", e, has, !has)
				}
			}
			if _, has := exports["agent_alloc"]; has != exp.sdk {
				t.Errorf("agent_alloc present=%v, want %v (SDK modules export it)", has, exp.sdk)
			}
			if _, has := exports["_initialize"]; !has {
				t.Error("no _initialize: not built with -buildmode=c-shared")
			}
			if _, has := exports["_start"]; has {
				t.Error("exports _start: built as a command, not a reactor")
			}
			if _, has := cm.ExportedMemories()["memory"]; !has {
				t.Error("no exported memory")
			}
			for e, want := range exportSig {
				if f, ok := exports[e]; ok {
					if got := [2]string{sig(f.ParamTypes()), sig(f.ResultTypes())}; got != want {
						t.Errorf("export %s signature %v, ABI says %v", e, got, want)
					}
				}
			}
			t.Logf("%s: %d bytes, igor imports %v", name, len(wasm), igor)
		})
	}
}
