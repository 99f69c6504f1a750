package node

import (
	"errors"
	"os"
	"testing"

	"github.com/ipfs/go-cid"
)

// FuzzHeadFile: a head pointer file (HOME/heads/<agent id>) holding any
// bytes reads as a CID or fails with ErrCorruptHead; a CID read back is
// written by SetHead to a file that reads to the same CID. The home is real
// and the pointer goes through the filesystem both ways.
func FuzzHeadFile(f *testing.F) {
	f.Add([]byte("bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku\n"))
	f.Add([]byte("  BAFYREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU\r\n")) // upper case, CRLF
	f.Add([]byte("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"))                    // CIDv0
	f.Add([]byte("bafyreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuz"))                    // truncated
	f.Add([]byte("\x00\x01\x71\x12\x20"))                                              // binary
	f.Add([]byte(""))
	home, err := OpenHome(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	path, err := home.headPath(fuzzDID)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := home.Head(fuzzDID)
		if err != nil {
			if !errors.Is(err, ErrCorruptHead) {
				t.Fatalf("error without ErrCorruptHead: %v", err)
			}
			return
		}
		if !c.Defined() {
			t.Fatal("undefined CID read without an error")
		}
		if err := home.SetHead(fuzzDID, c); err != nil {
			t.Fatalf("SetHead(%s): %v", c, err)
		}
		back, err := home.Head(fuzzDID)
		if err != nil || !back.Equals(c) {
			t.Fatalf("head %s written, read back %s, %v", c, back, err)
		}
		if again, err := cid.Decode(c.String()); err != nil || !again.Equals(c) {
			t.Fatalf("CID %s does not re-parse: %v", c, err)
		}
	})
}
