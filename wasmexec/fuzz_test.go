package wasmexec

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"slices"
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
		// The effect kinds: observations, every result shape, intents, and
		// a log cut right after an intent (its holder stopped there).
		{Entries: []Observation{
			{Kind: TickTime, Value: 7},
			{Kind: WalletBalance, Value: -3}, {Kind: WalletReceiptCount, Value: 2}, {Kind: NodePrice, Value: 1000},
			{Kind: WalletReceipt, Value: 3, Data: []byte{1, 2, 3}}, {Kind: WalletReceipt, Value: -1}, {Kind: WalletReceipt, Value: -4, Data: hint(50)},
			{Kind: HTTP, Value: -2}, {Kind: HTTP, Value: -3},
			{Kind: Intent, Value: int64(HTTP), Data: append(bytes.Repeat([]byte{9}, 32), "igor-key"...)}, {Kind: HTTP, Value: 200, Data: []byte("ok")},
			{Kind: Intent, Value: int64(HTTP), Data: bytes.Repeat([]byte{9}, 32)}, {Kind: HTTP, Value: -5, Data: hint(9000)},
			{Kind: HTTP, Value: -4}, {Kind: HTTP, Value: -1},
			{Kind: Pay, Value: -2}, {Kind: Pay, Value: -5, Data: hint(125)}, {Kind: Pay, Value: -1},
			{Kind: Intent, Value: int64(Pay), Data: bytes.Repeat([]byte{8}, 32)}, {Kind: Pay, Value: 4 + 125, Data: testReceipt(10, "bob", "hi")},
			{Kind: Intent, Value: int64(Pay), Data: bytes.Repeat([]byte{8}, 32)}, {Kind: Pay, Value: -1},
			{Kind: Intent, Value: int64(HTTP), Data: bytes.Repeat([]byte{7}, 32)},
		}},
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
		// An intent followed by another kind than its effect's.
		TickLog{Entries: []Observation{{Kind: TickTime}, {Kind: Intent, Value: int64(HTTP), Data: make([]byte, 32)}, {Kind: Pay, Value: -1}}}.Encode(),
		// A pay receipt whose lengths do not add up.
		TickLog{Entries: []Observation{{Kind: TickTime}, {Kind: Pay, Value: 4 + 126, Data: append(testReceipt(10, "bob", "hi"), 0)}}}.Encode(),
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

// validSeeds is how many of tickLogSeeds come first and are valid.
const validSeeds = 5

// testReceipt is a well-formed receipt with zero key and signature.
func testReceipt(amount int64, recipient, memo string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(amount))
	b = binary.LittleEndian.AppendUint64(b, 1)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(recipient)))
	b = append(b, recipient...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(memo)))
	b = append(b, memo...)
	return append(b, make([]byte, 96)...)
}

func TestDecodeTickLogSeeds(t *testing.T) {
	seeds := tickLogSeeds()
	for k, s := range seeds {
		_, err := DecodeTickLog(s)
		if valid := k < validSeeds; (err == nil) != valid {
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

// Each new kind accepts only what a recording host produces.
func TestTickLogRejectsMalformedEffects(t *testing.T) {
	digest := make([]byte, 32)
	rcpt := testReceipt(10, "bob", "hi")
	cases := map[string][]Observation{
		"balance with data":        {{Kind: WalletBalance, Value: 1, Data: []byte{1}}},
		"negative receipt count":   {{Kind: WalletReceiptCount, Value: -1}},
		"price with data":          {{Kind: NodePrice, Data: []byte{1}}},
		"receipt length mismatch":  {{Kind: WalletReceipt, Value: 4, Data: []byte{1}}},
		"receipt -4 without hint":  {{Kind: WalletReceipt, Value: -4}},
		"receipt -1 with data":     {{Kind: WalletReceipt, Value: -1, Data: []byte{1}}},
		"receipt code -2":          {{Kind: WalletReceipt, Value: -2}},
		"http status 99":           {{Kind: HTTP, Value: 99}},
		"http status 1000":         {{Kind: HTTP, Value: 1000}},
		"http -5 short hint":       {{Kind: HTTP, Value: -5, Data: []byte{1, 2, 3}}},
		"http -3 with data":        {{Kind: HTTP, Value: -3, Data: []byte{1}}},
		"http -6":                  {{Kind: HTTP, Value: -6}},
		"pay malformed receipt":    {{Kind: Pay, Value: 4 + 125, Data: append([]byte{0}, rcpt[1:]...)}},
		"pay zero amount":          {{Kind: Pay, Value: 4 + 125, Data: testReceipt(0, "bob", "hi")}},
		"pay value not 4+len":      {{Kind: Pay, Value: 125, Data: rcpt}},
		"pay -5 hint too small":    {{Kind: Pay, Value: -5, Data: hint(119)}},
		"pay -5 hint too large":    {{Kind: Pay, Value: -5, Data: hint(120 + 256 + 513)}},
		"pay -6 with data":         {{Kind: Pay, Value: -6, Data: []byte{1}}},
		"pay -7":                   {{Kind: Pay, Value: -7}},
		"intent for a clock":       {{Kind: Intent, Value: int64(Clock), Data: digest}},
		"intent short digest":      {{Kind: Intent, Value: int64(HTTP), Data: digest[:31]}},
		"intent key with a space":  {{Kind: Intent, Value: int64(HTTP), Data: append(slices.Clone(digest), "a b"...)}},
		"intent key too long":      {{Kind: Intent, Value: int64(HTTP), Data: append(slices.Clone(digest), bytes.Repeat([]byte("k"), MaxIdempotencyKey+1)...)}},
		"intent then other effect": {{Kind: Intent, Value: int64(Pay), Data: digest}, {Kind: HTTP, Value: 200}},
		"intent then intent":       {{Kind: Intent, Value: int64(Pay), Data: digest}, {Kind: Intent, Value: int64(Pay), Data: digest}},
		"intent then http -2":      {{Kind: Intent, Value: int64(HTTP), Data: digest}, {Kind: HTTP, Value: -2}},
		"intent then pay -5":       {{Kind: Intent, Value: int64(Pay), Data: digest}, {Kind: Pay, Value: -5, Data: hint(125)}},
		"intent then pay -3":       {{Kind: Intent, Value: int64(Pay), Data: digest}, {Kind: Pay, Value: -3}},
		"kind 12":                  {{Kind: 12}},
	}
	for name, es := range cases {
		t.Run(name, func(t *testing.T) {
			l := TickLog{Entries: append([]Observation{{Kind: TickTime, Value: 1}}, es...)}
			if _, err := DecodeTickLog(l.Encode()); !errors.Is(err, ErrBadTickLog) {
				t.Fatalf("DecodeTickLog: %v, want ErrBadTickLog", err)
			}
			if err := checkTickLog(l); !errors.Is(err, ErrBadTickLog) {
				t.Fatalf("checkTickLog: %v, want ErrBadTickLog", err)
			}
		})
	}
}
