package contentstore

import (
	"bytes"
	"errors"
	"os"
	"testing"

	"github.com/ipfs/go-cid"
	mh "github.com/multiformats/go-multihash"
)

// FuzzStoreGet: whatever bytes sit in a block file on disk (bit rot, a torn
// write from another tool, tampering), Get returns them only if they hash
// to the block's CID, and otherwise fails with ErrCorrupt. which picks the
// block: a fixed raw block, a fixed DAG-CBOR block, or the raw or DAG-CBOR
// block the bytes themselves hash to (which must then be returned intact).
func FuzzStoreGet(f *testing.F) {
	node := []byte{0xa1, 0x61, 'n', 0x01} // {"n": 1}
	f.Add([]byte("leaf"), uint8(0))
	f.Add([]byte("lea"), uint8(0))
	f.Add(node, uint8(1))
	f.Add(append(bytes.Clone(node), 0), uint8(1))
	f.Add([]byte("anything at all"), uint8(2))
	f.Add(node, uint8(3))
	f.Add([]byte{}, uint8(2))
	s := openStore(f, f.TempDir(), WithoutFsync())
	fixedRaw := rawCID("leaf")
	fixedCBOR, _ := cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum(node)
	f.Fuzz(func(t *testing.T, data []byte, which uint8) {
		var c cid.Cid
		switch which % 4 {
		case 0:
			c = fixedRaw
		case 1:
			c = fixedCBOR
		case 2:
			c = rawCID(string(data))
		case 3:
			c, _ = cid.Prefix{Version: 1, Codec: cid.DagCBOR, MhType: mh.SHA2_256, MhLength: -1}.Sum(data)
		}
		dir, path := s.blockPath(c)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(c)
		want, _ := c.Prefix().Sum(data)
		if want.Equals(c) {
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("intact block %s: %v", c, err)
			}
			return
		}
		if !errors.Is(err, ErrCorrupt) || got != nil {
			t.Fatalf("damaged block %s: got %d bytes, %v; want ErrCorrupt", c, len(got), err)
		}
	})
}
