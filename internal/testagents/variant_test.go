package testagents_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/internal/testagents"
)

// A variant is a separate, cached module whose mode is linked in; the plain
// example stays the well-behaved default.
func TestVariantBuildsAndCaches(t *testing.T) {
	plain, _ := testagents.Bytes(t, "hostile")
	wp, mp := testagents.Variant(t, "hostile", "loop-tick")
	if filepath.Base(wp) != "hostile@loop-tick.wasm" || filepath.Base(mp) != "hostile@loop-tick.manifest.json" {
		t.Fatalf("paths %s, %s", wp, mp)
	}
	wasm, err := os.ReadFile(wp)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(wasm, plain) || !bytes.Contains(wasm, []byte("loop-tick")) {
		t.Fatal("variant module does not carry its mode")
	}
	st1, _ := os.Stat(wp)
	wp2, _ := testagents.Variant(t, "hostile", "loop-tick")
	st2, _ := os.Stat(wp2)
	if !st1.ModTime().Equal(st2.ModTime()) {
		t.Fatal("fresh variant was rebuilt")
	}
	for _, mode := range []string{"", "Loop", "a b", "../x", "x=y"} {
		ft := &fatalRecorder{TB: t}
		func() {
			defer func() { _ = recover() }()
			testagents.Variant(ft, "hostile", mode)
		}()
		if !strings.Contains(ft.msg, "bad mode") {
			t.Errorf("mode %q: fatal %q, want a bad-mode error", mode, ft.msg)
		}
	}
}
