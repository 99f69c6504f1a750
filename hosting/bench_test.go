package hosting

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/wasmexec"
)

type nopHeads struct{}

func (nopHeads) SetHead(string, cid.Cid) error { return nil }

// BenchmarkCheckpointCommit measures one checkpoint commit of a real agent:
// copy the state out of the guest (agent_checkpoint), chunk and hash it into
// blocks, sign the checkpoint (agent + holder), store everything with fsync,
// and move the head. x_sha256 is its time over one plain SHA-256 of the same
// number of bytes, measured in the same run (the floor for any
// content-addressed store); x_floor is its time over SHA-256 plus writing
// the same bytes to one file (with fsync when the store fsyncs): the
// physical floor of a durable content-addressed write. Target: x_sha256 ≤ 3
// at 1 MiB and above.
//
// "agent" commits the counter agent's state after each tick: the counter
// rewrites one 4 KiB page per tick, so at 16 MiB only one of 16 chunks is
// new and the rest deduplicate (hashed, not rewritten). "fresh" commits
// entirely new random state each round (no guest copy-out): the worst case.
func BenchmarkCheckpointCommit(b *testing.B) {
	for _, mode := range []string{"agent", "fresh"} {
		for _, size := range []int{1 << 10, 64 << 10, 1 << 20, 16 << 20} {
			for _, sync := range []bool{true, false} {
				name := fmt.Sprintf("%s/state=%s/fsync=%v", mode, human(size), sync)
				b.Run(name, func(b *testing.B) { benchCommit(b, mode == "fresh", size, sync) })
			}
		}
	}
}

func benchCommit(b *testing.B, fresh bool, size int, sync bool) {
	ctx := context.Background()
	wasmPath, manPath := testagents.Path(b, "counter")
	wasm, _ := os.ReadFile(wasmPath)
	manJSON, _ := os.ReadFile(manPath)
	man, err := agents.ParseManifest(manJSON)
	if err != nil {
		b.Fatal(err)
	}
	man.Args = fmt.Sprintf("state_size=%d", size)
	var opts []contentstore.Option
	if !sync {
		opts = append(opts, contentstore.WithoutFsync())
	}
	st, err := contentstore.Open(b.TempDir(), opts...)
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	rt, err := wasmexec.NewRuntime(ctx, wasmexec.Config{CacheDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	defer rt.Close(ctx)
	_, nodeKey, _ := ed25519.GenerateKey(rand.Reader)
	_, agentKey, _ := agents.GenerateKey(rand.Reader)
	env := Env{Runtime: rt, Blocks: st, Heads: nopHeads{}, NodeKey: nodeKey}
	if err := env.validate(); err != nil {
		b.Fatal(err)
	}
	head, err := Create(ctx, env, CreateParams{Wasm: wasm, Manifest: man, Budget: 1 << 40, Price: 1, AgentKey: agentKey})
	if err != nil {
		b.Fatal(err)
	}
	if head.Checkpoint.StateSize != uint64(size) {
		b.Fatalf("counter state is %d bytes, want %d", head.Checkpoint.StateSize, size)
	}
	mod, err := rt.Compile(ctx, head.Checkpoint.Module.String(), wasm)
	if err != nil {
		b.Fatal(err)
	}
	inst, err := rt.Instantiate(ctx, mod, wasmexec.InstanceConfig{Manifest: man, AgentDID: head.Checkpoint.Agent, Log: func(string) {}})
	if err != nil {
		b.Fatal(err)
	}
	defer inst.Close(ctx)

	// Baseline in the same run: plain SHA-256 of as many bytes.
	buf := make([]byte, size)
	rand.Read(buf)
	const hashRounds = 20
	t0 := time.Now()
	for i := 0; i < hashRounds; i++ {
		sha256.Sum256(buf)
	}
	hashNs := float64(time.Since(t0).Nanoseconds()) / hashRounds
	floorDir := b.TempDir()
	t0 = time.Now()
	for i := 0; i < hashRounds; i++ {
		sha256.Sum256(buf)
		f, err := os.Create(fmt.Sprintf("%s/%d", floorDir, i))
		if err != nil {
			b.Fatal(err)
		}
		f.Write(buf)
		if sync {
			f.Sync()
		}
		f.Close()
	}
	floorNs := float64(time.Since(t0).Nanoseconds()) / hashRounds
	states := make([][]byte, 0)
	if fresh {
		states = make([][]byte, b.N)
		for i := range states {
			states[i] = make([]byte, size)
			rand.Read(states[i])
		}
	}

	b.SetBytes(int64(size))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Each round commits a new tick's state, as the runner does; the
		// tick itself is not timed.
		var state []byte
		if fresh {
			state = states[i]
		} else {
			b.StopTimer()
			if _, err := inst.Tick(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			if state, err = inst.Checkpoint(ctx); err != nil {
				b.Fatal(err)
			}
		}
		cp := &agents.Checkpoint{
			Agent: head.Checkpoint.Agent, Genesis: head.Checkpoint.Genesis, Prev: head.CID,
			Seq: head.Checkpoint.Seq + 1, Tick: head.Checkpoint.Tick + 1,
			Module: head.Checkpoint.Module, Manifest: head.Checkpoint.Manifest, Budget: head.Checkpoint.Budget, Price: 1,
		}
		if head, err = commit(&env, agentKey, cp, state, head.CID); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	perOp := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(perOp/hashNs, "x_sha256")
	b.ReportMetric(perOp/floorNs, "x_floor")
}

func human(n int) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	case n >= 1<<10:
		return fmt.Sprintf("%dKiB", n>>10)
	}
	return fmt.Sprintf("%dB", n)
}
