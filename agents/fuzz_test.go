package agents

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// Decoders of bytes from disk and network. The property: no panic, and
// whatever decodes re-encodes to exactly the input (one encoding per object).

func FuzzDecodeCheckpoint(f *testing.F) {
	fx := newFixture(f, 2)
	for _, e := range fx.entries {
		f.Add(fx.store[e.CID])
	}
	f.Add(fx.store[fx.gcid])
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		cp, err := DecodeCheckpoint(data)
		if err != nil {
			if cp != nil {
				t.Fatal("non-nil checkpoint with an error")
			}
			return
		}
		re, _, err := cp.Encode()
		if err != nil {
			t.Fatalf("decoded checkpoint does not encode: %v", err)
		}
		if !bytes.Equal(re, data) {
			t.Fatalf("decoded checkpoint re-encodes differently:\n in %x\nout %x", data, re)
		}
		if k, err := Kind(data); err != nil || k != "checkpoint" {
			t.Fatalf("Kind = %q, %v", k, err)
		}
		_ = cp.Verify()
	})
}

func FuzzDecodeGenesis(f *testing.F) {
	fx := newFixture(f, 1)
	f.Add(fx.store[fx.gcid])
	f.Add(fx.store[fx.head()])
	f.Add([]byte{0xa1, 0x64, 't', 'y', 'p', 'e', 0x60})
	f.Fuzz(func(t *testing.T, data []byte) {
		g, err := DecodeGenesis(data)
		if err != nil {
			return
		}
		re, _, err := g.Encode()
		if err != nil {
			t.Fatalf("decoded genesis does not encode: %v", err)
		}
		if !bytes.Equal(re, data) {
			t.Fatalf("decoded genesis re-encodes differently:\n in %x\nout %x", data, re)
		}
		_ = g.Verify()
	})
}

func FuzzDecodeHead(f *testing.F) {
	fx := newFixture(f, 2)
	data, err := testHead(f, fx).Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data)
	f.Add(fx.store[fx.head()])
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeHeadRecord(data)
		if err != nil {
			return
		}
		re, err := h.Encode()
		if err != nil {
			t.Fatalf("decoded head record does not encode: %v", err)
		}
		if !bytes.Equal(re, data) {
			t.Fatalf("decoded head record re-encodes differently:\n in %x\nout %x", data, re)
		}
		_ = h.Verify()
		_, _ = ValidateHeadRecord(HeadRecordKey(h.Agent), data, h.Issued)
		SelectHead([]*HeadRecord{h, h})
	})
}

// FuzzParseManifest: whatever parses has a canonical form that parses to
// the same canonical form (hosts compare manifest blocks byte for byte).
func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(``))
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"name":"hb","capabilities":{"log":{"version":1},"clock":{"version":1,"options":{"a":[1,"<>"]}}},"resource_limits":{"max_memory_bytes":1048576},"args":"x","lease":{"term_seconds":30,"replicas":1},"migration_policy":{"enabled":true,"max_price_per_second":5,"preferred_regions":["eu"]}}`))
	f.Add([]byte(`{"capabilities":{"rand":{"version":1,"options":null}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			return
		}
		c := m.Canonical()
		m2, err := ParseManifest(c)
		if err != nil {
			t.Fatalf("canonical form %s does not parse: %v", c, err)
		}
		if c2 := m2.Canonical(); !bytes.Equal(c, c2) {
			t.Fatalf("canonical form not stable:\n%s\n%s", c, c2)
		}
	})
}

// The committed seed corpus stays meaningful: its "valid-*" entries still
// decode (a format change that breaks them must regenerate them).
func TestFuzzCorpusValidSeedsDecode(t *testing.T) {
	decoders := map[string]func([]byte) error{
		"FuzzDecodeCheckpoint": func(b []byte) error { _, err := DecodeCheckpoint(b); return err },
		"FuzzDecodeGenesis":    func(b []byte) error { _, err := DecodeGenesis(b); return err },
		"FuzzDecodeHead":       func(b []byte) error { _, err := DecodeHeadRecord(b); return err },
		"FuzzParseManifest":    func(b []byte) error { _, err := ParseManifest(b); return err },
	}
	for name, decode := range decoders {
		files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", name, "valid-*"))
		if len(files) == 0 {
			t.Errorf("%s: no valid-* seeds committed", name)
		}
		for _, file := range files {
			data := readCorpusFile(t, file)
			if err := decode(data); err != nil {
				t.Errorf("%s: %v", file, err)
			}
		}
	}
}

// readCorpusFile reads a one-value []byte corpus file in Go's fuzz format.
func readCorpusFile(t *testing.T, file string) []byte {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.SplitN(strings.TrimSpace(string(raw)), "\n", 2)
	if len(lines) != 2 || lines[0] != "go test fuzz v1" {
		t.Fatalf("%s: not a fuzz corpus file", file)
	}
	lit, ok := strings.CutPrefix(lines[1], "[]byte(")
	lit, ok2 := strings.CutSuffix(lit, ")")
	if !ok || !ok2 {
		t.Fatalf("%s: not a []byte value", file)
	}
	s, err := strconv.Unquote(lit)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return []byte(s)
}
