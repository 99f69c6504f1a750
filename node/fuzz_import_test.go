package node

import (
	"bytes"
	"context"
	"log/slog"
	"maps"
	"testing"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/contentstore"
)

// tinyAgent is the smallest module the ABI accepts (wasmexec's test
// assembler: every required export, one page of memory, a data segment),
// so an exported agent is a CAR of a few hundred bytes the fuzzer can
// mutate quickly.
var tinyAgent = []byte("\x00asm\x01\x00\x00\x00\x01\x1a\x06`\x00\x00`\x00\x01\x7f`\x00\x01\x7f`\x00\x01\x7f`\x02\x7f\x7f\x00`\x01\x7f\x01\x7f\x03\a\x06\x00\x01\x02\x03\x04\x05\x05\x03\x01\x00\x01\ak\a\nagent_init\x00\x00\nagent_tick\x00\x01\x10agent_checkpoint\x00\x02\x14agent_checkpoint_ptr\x00\x03\fagent_resume\x00\x04\vagent_alloc\x00\x05\x06memory\x02\x00\n\x1d\x06\x02\x00\v\x04\x00A\x00\v\x04\x00A\x00\v\x04\x00A\x00\v\x02\x00\v\x06\x00A\x80\xc0\x00\v\v\v\x01\x00A\x10\v\x05hello")

// fuzzAgentCAR creates a real agent (genesis and checkpoint 0, through
// hosting.Create) in a fresh home and exports it.
func fuzzAgentCAR(tb testing.TB) []byte {
	l, err := OpenLocal(tb.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	did, _, err := l.CreateAgent(ctx, tinyAgent, []byte(`{"resource_limits":{"max_memory_bytes":1048576}}`), 1_000_000, 1, nil)
	if err != nil {
		tb.Fatal(err)
	}
	var car bytes.Buffer
	if _, _, err := l.Export(ctx, did, &car); err != nil {
		tb.Fatal(err)
	}
	return car.Bytes()
}

// heads maps each agent with a head in l's home to that head.
func heads(tb testing.TB, l *Local) map[string]cid.Cid {
	dids, err := l.Home.Agents()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]cid.Cid{}
	for _, d := range dids {
		if out[d], err = l.Home.Head(d); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

// FuzzImport: 'igor-node import FILE.car' of any bytes. A refused import
// changes no head in the home and leaves the store's blocks as they were;
// an accepted one leaves the agent's head at a
// checkpoint whose whole lineage verifies from this home's store, and
// importing the same bytes again changes nothing. The home already holds
// the seed agent.
func FuzzImport(f *testing.F) {
	car := fuzzAgentCAR(f)
	f.Add(car)
	f.Add(car[:len(car)-7])
	f.Add(car[:60])
	f.Add(append(bytes.Clone(car), car...))
	h, err := OpenHome(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	st, err := contentstore.Open(h.StoreDir(), contentstore.WithoutFsync())
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	ks, err := keystore.Open(h.KeysDir())
	if err != nil {
		f.Fatal(err)
	}
	l := &Local{Home: h, Store: st, Keys: ks, Logger: slog.New(slog.DiscardHandler)}
	// The home starts with the seed agent, so mutated CARs meet the
	// up-to-date, advanced and diverged paths as well as "new".
	if rep, err := l.Import(context.Background(), bytes.NewReader(car)); err != nil || rep.Outcome != "new" {
		f.Fatalf("seed CAR does not import: %+v %v", rep, err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ctx := context.Background()
		before, blocksBefore := heads(t, l), blockSet(t, l.Store)
		rep, err := l.Import(ctx, bytes.NewReader(data))
		after := heads(t, l)
		if err != nil {
			if !maps.EqualFunc(before, after, cid.Cid.Equals) {
				t.Fatalf("refused import (%v) changed heads:\n %v\n %v", err, before, after)
			}
			if blocksAfter := blockSet(t, l.Store); !maps.Equal(blocksBefore, blocksAfter) {
				t.Fatalf("refused import (%v) changed the store: %d blocks before, %d after", err, len(blocksBefore), len(blocksAfter))
			}
			return
		}
		head, err := cid.Decode(rep.Head)
		if err != nil || !after[rep.DID].Equals(head) {
			t.Fatalf("import reported head %s of %s, home has %s", rep.Head, rep.DID, after[rep.DID])
		}
		lin, err := agents.VerifyLineage(head, l.Store, agents.VerifyOptions{ExpectDID: rep.DID, CheckBlock: ObjectChecker(l.Store)})
		if err != nil {
			t.Fatalf("imported head %s does not verify: %v", head, err)
		}
		if last := lin.Head().Checkpoint; last.Seq != rep.Seq || last.Tick != rep.Tick {
			t.Fatalf("report seq/tick %d/%d, lineage head %d/%d", rep.Seq, rep.Tick, last.Seq, last.Tick)
		}
		again, err := l.Import(ctx, bytes.NewReader(data))
		if err != nil || !maps.EqualFunc(after, heads(t, l), cid.Cid.Equals) || again.Head != head.String() && again.Outcome != "kept-newer-local" {
			t.Fatalf("second import of the same bytes: %+v, %v", again, err)
		}
	})
}

// blockSet is the set of blocks in st.
func blockSet(tb testing.TB, st *contentstore.Store) map[string]bool {
	out := map[string]bool{}
	if err := st.ForEach(func(c cid.Cid) error { out[c.KeyString()] = true; return nil }); err != nil {
		tb.Fatal(err)
	}
	return out
}
