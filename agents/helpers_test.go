package agents

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// keyFromLabel derives a fixed key from a label, so fixtures (and the
// committed fuzz corpus) are reproducible.
func keyFromLabel(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("igor test key " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

func pubOf(priv ed25519.PrivateKey) ed25519.PublicKey { return priv.Public().(ed25519.PublicKey) }

// contentCID is the CID of some bytes stored as a raw block, as the content
// store addresses module, manifest and state blocks.
func contentCID(data []byte) cid.Cid {
	h, err := multihash.Sum(data, multihash.SHA2_256, -1)
	if err != nil {
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, h)
}

// memStore is an in-memory BlockGetter: a map from CID to bytes.
type memStore map[cid.Cid][]byte

var errNoBlock = errors.New("no such block")

func (m memStore) Get(c cid.Cid) ([]byte, error) {
	b, ok := m[c]
	if !ok {
		return nil, fmt.Errorf("%w: %s", errNoBlock, c)
	}
	return b, nil
}

// fixture is a valid lineage of one agent plus the keys that made it.
type fixture struct {
	agentKey   ed25519.PrivateKey
	holderKeys []ed25519.PrivateKey
	genesis    *Genesis
	gcid       cid.Cid
	entries    []Entry
	store      memStore
}

func (f *fixture) did() string   { return DID(pubOf(f.agentKey)) }
func (f *fixture) head() cid.Cid { return f.entries[len(f.entries)-1].CID }
func (f *fixture) cp(i int) *Checkpoint {
	c := *f.entries[i].Checkpoint
	return &c
}

var (
	testModule        = contentCID([]byte("module bytes"))
	testManifestBytes = []byte(`{"resource_limits":{}}`)
	testManifest      = contentCID(testManifestBytes)
)

// newFixture builds genesis + n checkpoints (seq 0..n-1), holders rotating
// every 3 checkpoints with the epoch rising on each change, budget falling
// by 100 µc (0.1 s metered at 1000 µc/s over 10 calls) per checkpoint.
func newFixture(t testing.TB, n int) *fixture {
	t.Helper()
	f := &fixture{agentKey: keyFromLabel("agent"), store: memStore{}}
	for i := 0; i < 3; i++ {
		f.holderKeys = append(f.holderKeys, keyFromLabel(fmt.Sprintf("node-%d", i)))
	}
	f.genesis = &Genesis{Agent: f.did(), Module: testModule, Manifest: testManifest, Budget: 1_000_000, Created: 1_700_000_000_000_000_000}
	if err := f.genesis.Sign(f.agentKey); err != nil {
		t.Fatal(err)
	}
	data, c, err := f.genesis.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f.gcid = c
	f.store[c] = data
	f.store[testManifest] = testManifestBytes // VerifyLineage reads its tick timeout
	for i := 0; i < n; i++ {
		f.append(t, f.next())
	}
	return f
}

// next returns an unsigned checkpoint that validly follows the current head.
func (f *fixture) next() *Checkpoint {
	i := len(f.entries)
	holder := f.holderKeys[(i/3)%len(f.holderKeys)]
	cp := &Checkpoint{
		Agent: f.did(), Genesis: f.gcid, Seq: uint64(i), Tick: uint64(i * 10), Epoch: uint64(i / 3),
		Holder: PeerID(pubOf(holder)), State: contentCID([]byte(fmt.Sprintf("state %d", i))), StateSize: 7,
		Module: testModule, Manifest: testManifest, Budget: f.genesis.Budget - int64(i)*100, Price: 1000,
		Time: 1_700_000_000_000_000_000 + int64(i)*1e9,
	}
	if i > 0 {
		cp.Prev = f.entries[i-1].CID
		cp.Calls, cp.Metered = 10, 1e8
	}
	return cp
}

// holderFor returns the node key matching cp.Holder.
func (f *fixture) holderFor(t testing.TB, cp *Checkpoint) ed25519.PrivateKey {
	for _, k := range f.holderKeys {
		if PeerID(pubOf(k)) == cp.Holder {
			return k
		}
	}
	t.Fatalf("no holder key for %s", cp.Holder)
	return nil
}

// append signs cp with the fixture's keys, stores it and makes it the head.
func (f *fixture) append(t testing.TB, cp *Checkpoint) cid.Cid {
	t.Helper()
	if err := cp.Sign(f.agentKey, f.holderFor(t, cp)); err != nil {
		t.Fatal(err)
	}
	return f.appendSigned(t, cp)
}

// appendSigned stores cp as it is (signatures untouched) and makes it the head.
func (f *fixture) appendSigned(t testing.TB, cp *Checkpoint) cid.Cid {
	t.Helper()
	data, c, err := cp.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f.store[c] = data
	f.entries = append(f.entries, Entry{CID: c, Checkpoint: cp})
	return c
}

// truncate drops entries from index i on (their blocks stay in the store).
func (f *fixture) truncate(i int) { f.entries = f.entries[:i] }
