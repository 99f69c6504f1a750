package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/dht"
)

func headRecord(t *testing.T, key ed25519.PrivateKey, holder string, seq uint64, expires time.Time) []byte {
	t.Helper()
	return headRecordIssued(t, key, holder, seq, time.Now(), expires)
}

func headRecordIssued(t *testing.T, key ed25519.PrivateKey, holder string, seq uint64, issued, expires time.Time) []byte {
	t.Helper()
	c, _ := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum([]byte(fmt.Sprint(seq)))
	r := &agents.HeadRecord{Agent: agents.DID(key.Public().(ed25519.PublicKey)), Head: c, Seq: seq, Epoch: 1, Holder: holder,
		LeaseExpiry: expires.UnixNano(), Issued: issued.UnixNano(), Expires: expires.UnixNano()}
	if err := r.Sign(key); err != nil {
		t.Fatal(err)
	}
	data, err := r.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// Records are validated by every node of a real mesh, on put and on receipt.
func TestMeshRecordValidation(t *testing.T) {
	ms := startMeshes(t, 5, 1)
	waitHosts(t, ms, 5)
	ctx := context.Background()
	_, keyA, _ := agents.GenerateKey(rand.Reader)
	_, keyB, _ := agents.GenerateKey(rand.Reader)
	didA := agents.DID(keyA.Public().(ed25519.PublicKey))
	holder := ms[1].PeerID()
	soon := time.Now().Add(5 * time.Minute)

	t.Run("forged signature", func(t *testing.T) {
		rec := headRecord(t, keyA, holder, 1, soon)
		rec[len(rec)-3] ^= 1 // inside the signature
		if err := ms[0].DHT.PutValue(ctx, agents.HeadRecordKey(didA), rec); !errors.Is(err, dht.ErrInvalidRecord) {
			t.Fatalf("want ErrInvalidRecord, got %v", err)
		}
	})
	t.Run("record under another agent's key", func(t *testing.T) {
		rec := headRecord(t, keyB, holder, 1, soon)
		if err := ms[0].DHT.PutValue(ctx, agents.HeadRecordKey(didA), rec); !errors.Is(err, dht.ErrInvalidRecord) {
			t.Fatalf("want ErrInvalidRecord, got %v", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		rec := headRecordIssued(t, keyA, holder, 1, time.Now().Add(-time.Minute), time.Now().Add(-time.Second))
		if err := ms[0].DHT.PutValue(ctx, agents.HeadRecordKey(didA), rec); !errors.Is(err, dht.ErrInvalidRecord) {
			t.Fatalf("want ErrInvalidRecord, got %v", err)
		}
	})
	t.Run("oversize", func(t *testing.T) {
		big := bytes.Repeat([]byte{0xa0}, agents.MaxRecordBytes+1)
		if err := ms[0].DHT.PutValue(ctx, agents.HeadRecordKey(didA), big); err == nil {
			t.Fatal("oversize record accepted")
		}
	})
	t.Run("wrong namespace", func(t *testing.T) {
		for _, k := range []string{"/igor/teleport/x", "/other/x", "/igor/agent/"} {
			if err := ms[0].DHT.PutValue(ctx, k, []byte("x")); !errors.Is(err, dht.ErrBadArgument) {
				t.Fatalf("key %q: want ErrBadArgument, got %v", k, err)
			}
		}
	})
	t.Run("forged host record", func(t *testing.T) {
		r, err := ms[2].HostRecord()
		if err != nil {
			t.Fatal(err)
		}
		data, _ := r.Encode()
		// node 2's record under node 3's key
		if err := ms[0].DHT.PutValue(ctx, agents.HostRecordKey(ms[3].PeerID()), data); !errors.Is(err, dht.ErrInvalidRecord) {
			t.Fatalf("want ErrInvalidRecord, got %v", err)
		}
	})
	t.Run("stale seq loses everywhere", func(t *testing.T) {
		key := agents.HeadRecordKey(didA)
		if err := ms[1].DHT.PutValue(ctx, key, headRecord(t, keyA, holder, 7, soon)); err != nil {
			t.Fatal(err)
		}
		// An older record put later, from another node, must not win.
		_ = ms[2].DHT.PutValue(ctx, key, headRecord(t, keyA, holder, 3, soon))
		for i, m := range ms {
			eventually(t, fmt.Sprintf("node %d to resolve seq 7", i), 30*time.Second, func() error {
				data, err := m.DHT.GetValue(ctx, key)
				if err != nil {
					return err
				}
				r, err := agents.DecodeHeadRecord(data)
				if err != nil {
					return err
				}
				if r.Seq != 7 {
					return fmt.Errorf("seq %d", r.Seq)
				}
				return nil
			})
		}
	})
}

// Head-record reads are monotonic per node: once a node has read seq 5, a
// DHT that still serves seq 3 (peers the newer record has not reached)
// does not take it back; an expired remembered record is dropped.
func TestResolveHeadRecordIsMonotonic(t *testing.T) {
	ms := startMeshes(t, 3, 0)
	ctx := context.Background()
	_, key, _ := agents.GenerateKey(rand.Reader)
	did := agents.DID(key.Public().(ed25519.PublicKey))
	soon := time.Now().Add(5 * time.Minute)
	if err := ms[0].DHT.PutValue(ctx, agents.HeadRecordKey(did), headRecord(t, key, ms[1].PeerID(), 3, soon)); err != nil {
		t.Fatal(err)
	}
	m := ms[2]
	// The put may land before the routing tables fill (CI: node 2 then
	// found no record at all): wait until node 2's DHT serves seq 3.
	eventually(t, "node 2 to read seq 3 from the DHT", 30*time.Second, func() error {
		if _, err := m.DHT.GetValue(ctx, agents.HeadRecordKey(did)); err != nil {
			_ = ms[0].DHT.PutValue(ctx, agents.HeadRecordKey(did), headRecord(t, key, ms[1].PeerID(), 3, soon))
			return err
		}
		return nil
	})
	m.seenMu.Lock()
	m.seenHeads = map[string][]byte{did: headRecord(t, key, ms[1].PeerID(), 5, soon)}
	m.seenMu.Unlock()
	rec, err := m.resolveHeadRecord(ctx, did)
	if err != nil || rec.Seq != 5 {
		t.Fatalf("after seeing seq 5, the DHT's seq 3 came back: %+v, %v", rec, err)
	}
	// A remembered record past its expiry is not believed.
	m.seenMu.Lock()
	m.seenHeads[did] = headRecordIssued(t, key, ms[1].PeerID(), 9, time.Now().Add(-2*time.Minute), time.Now().Add(-time.Minute))
	m.seenMu.Unlock()
	if rec, err = m.resolveHeadRecord(ctx, did); err != nil || rec.Seq != 3 {
		t.Fatalf("with an expired remembered seq 9: %+v, %v; want the DHT's seq 3", rec, err)
	}
}
