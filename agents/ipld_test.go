package agents

import (
	"bytes"
	"testing"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
)

// Standard IPLD tooling (go-ipld-prime's DAG-CBOR codec, as used by go-car
// and Kubo) reads every object, sees CIDs as links, and re-encodes it to
// the very same bytes: our encoding is canonical DAG-CBOR.
func TestIPLDPrimeReadsObjects(t *testing.T) {
	f := newFixture(t, 2)
	h := testHead(t, f)
	hdata, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	objects := []struct {
		name  string
		data  []byte
		links map[string]cid.Cid
	}{
		{"genesis", f.store[f.gcid], map[string]cid.Cid{"module": testModule, "manifest": testManifest}},
		{"checkpoint seq 0", f.store[f.entries[0].CID], map[string]cid.Cid{"genesis": f.gcid, "state": f.entries[0].Checkpoint.State}},
		{"checkpoint seq 1", f.store[f.entries[1].CID], map[string]cid.Cid{"genesis": f.gcid, "prev": f.entries[0].CID, "module": testModule}},
		{"head record", hdata, map[string]cid.Cid{"head": f.head()}},
	}
	for _, o := range objects {
		t.Run(o.name, func(t *testing.T) {
			nb := basicnode.Prototype.Any.NewBuilder()
			if err := dagcbor.Decode(nb, bytes.NewReader(o.data)); err != nil {
				t.Fatalf("go-ipld-prime cannot decode: %v", err)
			}
			n := nb.Build()
			if n.Kind() != datamodel.Kind_Map {
				t.Fatalf("kind %v", n.Kind())
			}
			for field, want := range o.links {
				v, err := n.LookupByString(field)
				if err != nil {
					t.Fatalf("field %s: %v", field, err)
				}
				l, err := v.AsLink()
				if err != nil {
					t.Fatalf("field %s is not a link: %v", field, err)
				}
				if got := l.(cidlink.Link).Cid; !got.Equals(want) {
					t.Fatalf("field %s links %s, want %s", field, got, want)
				}
			}
			var buf bytes.Buffer
			if err := dagcbor.Encode(n, &buf); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), o.data) {
				t.Fatalf("go-ipld-prime re-encodes differently:\n ours %x\n its  %x", o.data, buf.Bytes())
			}
		})
	}
	// And the other way round: a DAG-CBOR object built with go-ipld-prime
	// decodes here to the same checkpoint.
	nb := basicnode.Prototype.Any.NewBuilder()
	if err := dagcbor.Decode(nb, bytes.NewReader(f.store[f.entries[1].CID])); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(nb.Build(), &buf); err != nil {
		t.Fatal(err)
	}
	cp, err := DecodeCheckpoint(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := cp.Verify(); err != nil {
		t.Fatal(err)
	}
}
