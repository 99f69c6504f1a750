package wasmexec

import (
	"bytes"
	"context"
	"testing"

	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// tickLogSeeds are valid and invalid encodings for FuzzDecodeTickLog.
func tickLogSeeds() [][]byte {
	valid := []TickLog{
		{Entries: []Observation{{Kind: TickTime, Value: 0}}},
		{Entries: []Observation{
			{Kind: TickTime, Value: 1_700_000_000_000_000_000},
			{Kind: Clock, Value: 1_700_000_000_000_001_000},
			{Kind: Rand, Value: 0, Data: []byte{1, 2, 3, 4, 5, 6, 7, 8}},
			{Kind: Log, Value: 13, Data: []byte("tick=1 age=0s")},
		}},
		{Entries: []Observation{{Kind: TickTime, Value: -5}, {Kind: Rand, Value: -2}, {Kind: Rand, Value: -4}, {Kind: Rand, Value: -1}, {Kind: Log, Value: -4}}},
		{Entries: []Observation{{Kind: TickTime, Value: 1}, {Kind: Log, Value: 5000, Data: bytes.Repeat([]byte{'x'}, MaxLogMessage)}}},
	}
	var seeds [][]byte
	for _, l := range valid {
		seeds = append(seeds, l.Encode())
	}
	seeds = append(seeds,
		nil,
		[]byte{2, 1, 1, 0, 0},          // version
		[]byte{1, 1, 1, 0, 0, 0},       // trailing byte
		[]byte{1, 0x81, 0x00, 1, 0, 0}, // non-canonical count
		[]byte{1, 0x80, 0x80, 0x01},    // count bomb
		[]byte{1, 1, 9, 0, 0},          // unknown kind
		[]byte{1, 2, 2, 0, 0, 1, 0, 0}, // clock first
	)
	return seeds
}

func FuzzDecodeTickLog(f *testing.F) {
	for _, s := range tickLogSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		l, err := DecodeTickLog(b)
		if err != nil {
			if l.Entries != nil {
				t.Fatal("entries returned with an error")
			}
			return
		}
		// Canonical: the decoded log encodes back to the same bytes.
		if !bytes.Equal(l.Encode(), b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, l.Encode())
		}
		if l.Entries[0].Kind != TickTime {
			t.Fatal("decoded log does not start with tick_time")
		}
		total := 0
		for _, e := range l.Entries {
			total += len(e.Data)
		}
		if len(l.Entries) > MaxTickLogEntries || total > MaxTickLogDataBytes {
			t.Fatal("limits not enforced")
		}
	})
}

func TestDecodeTickLogSeeds(t *testing.T) {
	seeds := tickLogSeeds()
	for k, s := range seeds {
		_, err := DecodeTickLog(s)
		if valid := k < 4; (err == nil) != valid {
			t.Errorf("seed %d (%x): err = %v, valid = %v", k, s, err, valid)
		}
	}
}

// dataImageSeeds are small modules with data segments.
func dataImageSeeds() [][]byte {
	fns := abiFuncs(nil, 0, 0)
	return [][]byte{
		assemble(nil, fns, 1, wdata{16, []byte("hello")}, wdata{4, []byte("abc")}, wdata{30000, []byte("far")}),
		assemble(nil, fns, 1, wdata{0, []byte("a")}, wdata{0, []byte("b")}), // overlapping: kept
		assemble(nil, fns, 1, wdata{65535, []byte("xy")}),                   // out of bounds: kept
		assemble(nil, fns, 2, wdata{-1 << 31, []byte("neg")}),               // huge offset: kept
		assemble(nil, fns, 0), // no data
		assemble(nil, fns, 1, wdata{70000, nil}, wdata{100, bytes.Repeat([]byte{7}, 5000)}), // empty segment beyond memory
	}
}

func FuzzExtractDataImage(f *testing.F) {
	for _, s := range dataImageSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, wasm []byte) {
		stripped, image := extractDataImage(wasm)
		if image == nil {
			if !bytes.Equal(stripped, wasm) {
				t.Fatal("module changed without an image")
			}
			return
		}
		if len(image) > maxImageBytes || len(stripped) >= len(wasm) {
			t.Fatalf("image %d bytes, module %d → %d bytes", len(image), len(wasm), len(stripped))
		}
		if s2, img2 := extractDataImage(stripped); img2 != nil || !bytes.Equal(s2, stripped) {
			t.Fatal("the stripped module still has a data section")
		}
	})
}

// TestDataImageEquivalence checks the data image against wazero itself: the
// memory wazero builds from the original module's segments (before any code
// runs) must equal the image followed by zeros.
func TestDataImageEquivalence(t *testing.T) {
	wasmHB, _ := testagents.Bytes(t, "heartbeat")
	cases := append(dataImageSeeds(), wasmHB, probe(t))
	ctx := context.Background()
	wz := wazero.NewRuntime(ctx)
	defer wz.Close(ctx)
	wasi_snapshot_preview1.MustInstantiate(ctx, wz)
	instantiateHostModule(ctx, wz)
	extracted := 0
	for k, wasm := range cases {
		stripped, image := extractDataImage(wasm)
		if image == nil {
			continue
		}
		extracted++
		mod, err := wz.InstantiateWithConfig(ctx, wasm, wazero.NewModuleConfig().WithName("").WithStartFunctions())
		if err != nil {
			t.Fatalf("case %d: the original does not instantiate, yet an image was extracted: %v", k, err)
		}
		mem, _ := mod.Memory().Read(0, mod.Memory().Size())
		if !bytes.Equal(mem[:len(image)], image) || bytes.ContainsFunc(mem[len(image):], func(r rune) bool { return r != 0 }) {
			t.Fatalf("case %d: image differs from wazero's initial memory", k)
		}
		mod.Close(ctx)
		if _, err := wz.CompileModule(ctx, stripped); err != nil {
			t.Fatalf("case %d: stripped module invalid: %v", k, err)
		}
		if k >= len(cases)-2 {
			t.Logf("Go module: %d bytes → %d without data section; image %d bytes", len(wasm), len(stripped), len(image))
		}
	}
	if extracted != 3 { // seed 0 and the two Go modules
		t.Fatalf("only %d modules had an image extracted", extracted)
	}
}
