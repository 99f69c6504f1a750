package main

// Tampering with a home on disk: every kind of damage makes the real
// binary's verify fail (exit 1) with a message naming the culprit.

import (
	"crypto/rand"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/node"
)

// openHomeStore opens a stopped node's home and content store as the node
// does: heads are records in the store's pack.
func openHomeStore(t *testing.T, home string) (*node.Home, *contentstore.Store) {
	t.Helper()
	h, err := node.OpenHome(home)
	if err != nil {
		t.Fatal(err)
	}
	st, err := contentstore.Open(h.StoreDir(), contentstore.WithPack(0))
	if err != nil {
		t.Fatal(err)
	}
	h.UseHeadStore(st)
	return h, st
}

// lineageOf reads an agent's committed lineage straight from a home.
func lineageOf(t *testing.T, home, did string) *agents.Lineage {
	t.Helper()
	h, st := openHomeStore(t, home)
	defer st.Close()
	head, err := h.Head(did)
	if err != nil {
		t.Fatal(err)
	}
	lin, err := agents.VerifyLineage(head, st, agents.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return lin
}

// tamperBlock rewrites a stored block below the store, as a disk fault or
// an attacker with the files would: fn gets the block's bytes and returns
// new ones (nil: remove the block). Small blocks live in the store's pack
// (a Pebble database; key 'b' + CID, value = 8-byte write time + bytes),
// large ones in files.
func tamperBlock(t *testing.T, home string, c cid.Cid, fn func([]byte) []byte) {
	t.Helper()
	if m, _ := filepath.Glob(filepath.Join(home, "store", "blocks", "*", c.String())); len(m) == 1 {
		data, err := os.ReadFile(m[0])
		if err != nil {
			t.Fatal(err)
		}
		if data = fn(data); data == nil {
			err = os.Remove(m[0])
		} else {
			err = os.WriteFile(m[0], data, 0o600)
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	db, err := pebble.Open(filepath.Join(home, "store", "pack"), &pebble.Options{Logger: quietPebble{t}})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	key := append([]byte{'b'}, c.Bytes()...)
	v, closer, err := db.Get(key)
	if err != nil {
		t.Fatalf("block %s is neither a file nor in the pack: %v", c, err)
	}
	v = append([]byte(nil), v...)
	closer.Close()
	data := fn(v[8:])
	if data == nil {
		err = db.Delete(key, pebble.Sync)
	} else {
		err = db.Set(key, append(v[:8:8], data...), pebble.Sync)
	}
	if err != nil {
		t.Fatal(err)
	}
}

func flipByte(t *testing.T, home string, c cid.Cid) {
	t.Helper()
	tamperBlock(t, home, c, func(data []byte) []byte { data[len(data)/2] ^= 0x01; return data })
}

func wantInvalid(t *testing.T, home, did string, mention ...string) {
	t.Helper()
	r := igor(t, home, "verify", did)
	if r.code != 1 || !strings.Contains(r.stdout, "INVALID") {
		t.Fatalf("verify after tampering: exit %d\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	for _, m := range mention {
		if !strings.Contains(r.stdout, m) {
			t.Fatalf("verify output must name %q:\n%s", m, r.stdout)
		}
	}
}

// appendForged commits one more checkpoint built by mutate and signed with
// the given keys, and makes it the head, as a malicious host could.
func appendForged(t *testing.T, home, did string, mutate func(cp *agents.Checkpoint, st *contentstore.Store), agentKeyOverride []byte) cid.Cid {
	t.Helper()
	lin := lineageOf(t, home, did)
	h, st := openHomeStore(t, home)
	defer st.Close()
	ks, err := keystore.Open(h.KeysDir())
	if err != nil {
		t.Fatal(err)
	}
	agentKey, err := ks.Get(did)
	if err != nil {
		t.Fatal(err)
	}
	if agentKeyOverride != nil {
		agentKey = agentKeyOverride
	}
	nodeKey, err := keystore.LoadNodeKey(h.NodeKeyPath())
	if err != nil {
		t.Fatal(err)
	}
	last := lin.Head()
	cp := *last.Checkpoint
	cp.Prev, cp.Seq, cp.Tick = last.CID, cp.Seq+1, cp.Tick+1
	cp.Calls, cp.Metered = 1, 0 // one tick, nothing charged: the budget step stays valid
	cp.AgentSig, cp.HolderSig = nil, nil
	mutate(&cp, st)
	if err := cp.Sign(agentKey, nodeKey); err != nil {
		t.Fatal(err)
	}
	data, c, err := cp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(cid.DagCBOR, data); err != nil {
		t.Fatal(err)
	}
	if err := h.SetHead(did, c); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestVerifyCatchesTampering(t *testing.T) {
	base := t.TempDir()
	did := newAgent(t, base, 9) // checkpoints at ticks 0, 3, 6, 9
	fresh := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "home")
		// cp -a keeps the 0600/0700 modes the keystore insists on.
		if out, err := exec.Command("cp", "-a", base, dir).CombinedOutput(); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		return dir
	}

	t.Run("flipped byte in a checkpoint", func(t *testing.T) {
		home := fresh(t)
		mid := lineageOf(t, home, did).Entries[1].CID
		flipByte(t, home, mid)
		wantInvalid(t, home, did, mid.String())
	})
	t.Run("flipped byte in a state block", func(t *testing.T) {
		home := fresh(t)
		state := lineageOf(t, home, did).Entries[2].Checkpoint.State
		flipByte(t, home, state)
		wantInvalid(t, home, did, state.String())
	})
	t.Run("flipped byte in the genesis", func(t *testing.T) {
		home := fresh(t)
		g := lineageOf(t, home, did).GenesisCID
		flipByte(t, home, g)
		wantInvalid(t, home, did, g.String())
	})
	t.Run("flipped byte in the module", func(t *testing.T) {
		home := fresh(t)
		mod := lineageOf(t, home, did).Genesis.Module
		st, _ := contentstore.Open(filepath.Join(home, "store"))
		blocks, err := st.ObjectCIDs(mod)
		st.Close()
		if err != nil || len(blocks) < 2 {
			t.Fatalf("module %s should be chunked: %v %v", mod, blocks, err)
		}
		victim := blocks[len(blocks)-1]
		flipByte(t, home, victim)
		wantInvalid(t, home, did, victim.String())
		if r := igor(t, home, "resume", "--max-ticks", "1", did); r.code == 0 || !strings.Contains(r.stderr, victim.String()) {
			t.Fatalf("resume with a damaged module: exit %d %s", r.code, r.stderr)
		}
	})
	t.Run("truncated history", func(t *testing.T) {
		home := fresh(t)
		mid := lineageOf(t, home, did).Entries[1].CID
		tamperBlock(t, home, mid, func([]byte) []byte { return nil })
		wantInvalid(t, home, did, mid.String())
	})
	t.Run("swapped module", func(t *testing.T) {
		home := fresh(t)
		other, _ := testagents.Bytes(t, "counter")
		forged := appendForged(t, home, did, func(cp *agents.Checkpoint, st *contentstore.Store) {
			c, err := st.PutObjectBytes(other)
			if err != nil {
				t.Fatal(err)
			}
			cp.Module = c
		}, nil)
		wantInvalid(t, home, did, forged.String(), "module")
		if r := igor(t, home, "resume", "--max-ticks", "1", did); r.code == 0 || !strings.Contains(r.stderr, "module") {
			t.Fatalf("resume with a swapped module must fail: exit %d %s", r.code, r.stderr)
		}
	})
	t.Run("forged signature", func(t *testing.T) {
		home := fresh(t)
		_, impostor, _ := agents.GenerateKey(rand.Reader)
		// Sign() refuses a key that is not the agent's, so forge by signing
		// correctly and then replacing the agent signature with the
		// impostor's signature over the same bytes.
		forged := appendForged(t, home, did, func(cp *agents.Checkpoint, st *contentstore.Store) {}, nil)
		h, st := openHomeStore(t, home)
		data, _ := st.Get(forged)
		cp, err := agents.DecodeCheckpoint(data)
		if err != nil {
			t.Fatal(err)
		}
		sig := make([]byte, len(cp.AgentSig))
		copy(sig, impostor[:len(sig)]) // arbitrary bytes of the right length
		cp.AgentSig = sig
		data, c, err := cp.Encode()
		if err != nil {
			t.Fatal(err)
		}
		st.Put(cid.DagCBOR, data)
		h.SetHead(did, c)
		st.Close()
		wantInvalid(t, home, did, c.String(), "signature")
	})
	t.Run("fork", func(t *testing.T) {
		home, other, work := fresh(t), t.TempDir(), t.TempDir()
		car, key := filepath.Join(work, "a.car"), filepath.Join(work, "a.key")
		mustOK(t, igor(t, home, "export", did, "-o", car), "export")
		mustOK(t, igor(t, home, "keys", "export", did, "-o", key), "keys export")
		mustOK(t, igor(t, other, "import", car), "import")
		mustOK(t, igor(t, other, "keys", "import", key), "keys import")
		// Both homes run the agent on from the same head: a fork.
		mustOK(t, igor(t, home, "resume", "--tick-interval", "5ms", "--max-ticks", "2", did), "resume A")
		mustOK(t, igor(t, other, "resume", "--tick-interval", "5ms", "--max-ticks", "3", did), "resume B")
		headA, headB := lineageOf(t, home, did).Head().CID, lineageOf(t, other, did).Head().CID
		carB := filepath.Join(work, "b.car")
		mustOK(t, igor(t, other, "export", did, "-o", carB), "export B")
		r := igor(t, home, "import", carB)
		if r.code == 0 || !strings.Contains(r.stderr, "diverged") || !strings.Contains(r.stderr, headA.String()) || !strings.Contains(r.stderr, headB.String()) {
			t.Fatalf("importing a fork must be refused naming both heads: exit %d %s", r.code, r.stderr)
		}
		// The local head is kept, and the refused import left nothing
		// behind: verify and fsck agree the local lineage is sound (the
		// refusal named both heads; the rival stays in b.car).
		if got := lineageOf(t, home, did).Head().CID; !got.Equals(headA) {
			t.Fatalf("local head changed to %s", got)
		}
		_, st := openHomeStore(t, home)
		has, err := st.Has(headB)
		st.Close()
		if err != nil || has {
			t.Fatalf("the rival head %s is still in the store after the refused import (%v)", headB, err)
		}
		if r := igor(t, home, "verify", did); r.code != 0 || !strings.Contains(r.stdout, "VALID") {
			t.Fatalf("verify after a refused fork import: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		fsckOK(t, home, "after a refused fork import")
		// The fork is still refused wherever the two lineages meet.
		carA := filepath.Join(work, "a2.car")
		mustOK(t, igor(t, home, "export", did, "-o", carA), "export A")
		if r := igor(t, other, "import", carA); r.code == 0 || !strings.Contains(r.stderr, "diverged") {
			t.Fatalf("importing A's fork into B: exit %d %s", r.code, r.stderr)
		}
	})
	// The owner's control records (the home's owner.key owns what it
	// creates): one it signed verifies; a stranger's, or one out of order,
	// makes verify fail naming the record.
	owned := func(t *testing.T, home string, signer []byte, seq uint64, kind agents.ControlKind, amount int64) {
		t.Helper()
		appendForged(t, home, did, func(cp *agents.Checkpoint, _ *contentstore.Store) {
			ctl := &agents.Control{Kind: kind, Agent: did, Seq: seq, Amount: amount, Issued: 1}
			if err := ctl.Sign(signer); err != nil {
				t.Fatal(err)
			}
			cp.Control, cp.Controls = ctl, seq
			cp.Stopped = kind == agents.ControlStop
			cp.Budget += amount
		}, nil)
	}
	ownerKey := func(t *testing.T, home string) []byte {
		k, err := keystore.LoadKey(filepath.Join(home, "owner.key"), "owner key", "")
		if err != nil {
			t.Fatalf("the home that created the agent has no owner key: %v", err)
		}
		return k
	}
	t.Run("an owner's top-up verifies", func(t *testing.T) {
		home := fresh(t)
		owned(t, home, ownerKey(t, home), 1, agents.ControlTopUp, 5_000)
		if r := igor(t, home, "verify", did); r.code != 0 || !strings.Contains(r.stdout, "VALID") {
			t.Fatalf("verify of an owner's top-up: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("a top-up not signed by the owner", func(t *testing.T) {
		home := fresh(t)
		_, stranger, _ := agents.GenerateKey(rand.Reader)
		owned(t, home, stranger, 1, agents.ControlTopUp, 5_000_000)
		wantInvalid(t, home, did, "not signed by the agent's owner")
	})
	t.Run("an owner's record out of order", func(t *testing.T) {
		home := fresh(t)
		owned(t, home, ownerKey(t, home), 2, agents.ControlStop, 0)
		wantInvalid(t, home, did, "replayed or out of order")
	})
	t.Run("an owner's record replayed", func(t *testing.T) {
		home := fresh(t)
		k := ownerKey(t, home)
		owned(t, home, k, 1, agents.ControlStop, 0)
		lin := lineageOf(t, home, did)
		stop := lin.Head().Checkpoint.Control
		appendForged(t, home, did, func(cp *agents.Checkpoint, _ *contentstore.Store) {
			cp.Control, cp.Controls, cp.Stopped = stop, 1, true
			cp.Tick = lin.Head().Checkpoint.Tick // a stopped agent runs no tick
			cp.Calls = 0
		}, nil)
		wantInvalid(t, home, did, "replayed or out of order")
	})

}

// quietPebble keeps Pebble's informational lines (every open prints its
// WAL recovery) out of the test output; errors fail the test.
type quietPebble struct{ t *testing.T }

func (quietPebble) Infof(string, ...any)                {}
func (q quietPebble) Errorf(format string, args ...any) { q.t.Errorf("pebble: "+format, args...) }
func (q quietPebble) Fatalf(format string, args ...any) { q.t.Fatalf("pebble: "+format, args...) }
