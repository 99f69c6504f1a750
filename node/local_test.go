package node

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

func TestCorruptNodeKeyIsNeverReplaced(t *testing.T) {
	dir := t.TempDir()
	l, err := OpenLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	peer := l.PeerID()
	l.Close()
	// Reopening keeps the identity.
	l, err = OpenLocal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if l.PeerID() != peer {
		t.Fatalf("node identity changed across reopen: %s -> %s", peer, l.PeerID())
	}
	l.Close()
	keyPath := filepath.Join(dir, "node.key")
	if err := os.WriteFile(keyPath, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenLocal(dir, nil)
	if err == nil || !strings.Contains(err.Error(), "never regenerated") {
		t.Fatalf("want a clear error for a corrupt node key, got %v", err)
	}
	if got, _ := os.ReadFile(keyPath); string(got) != "not a key" {
		t.Fatal("corrupt node key was overwritten")
	}
}

func TestHeadPointer(t *testing.T) {
	h, err := OpenHome(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	did := "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
	if _, err := h.Head(did); !errors.Is(err, ErrUnknownAgent) {
		t.Fatalf("want ErrUnknownAgent, got %v", err)
	}
	c, _ := cid.Decode("bafyreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
	if err := h.SetHead(did, c); err != nil {
		t.Fatal(err)
	}
	got, err := h.Head(did)
	if err != nil || !got.Equals(c) {
		t.Fatalf("head %s, %v", got, err)
	}
	if ds, _ := h.Agents(); len(ds) != 1 || ds[0] != did {
		t.Fatalf("agents %v", ds)
	}
	os.WriteFile(filepath.Join(h.Dir, "heads", "z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"), []byte("garbage"), 0o600)
	if _, err := h.Head(did); !errors.Is(err, ErrCorruptHead) {
		t.Fatalf("want ErrCorruptHead, got %v", err)
	}
	if _, err := h.Head("did:key:nope"); err == nil {
		t.Fatal("a bad DID must be an error")
	}
}

func TestUnusableHome(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := OpenHome(filepath.Join(f, "sub")); !errors.Is(err, ErrHomeUnusable) {
		t.Fatalf("want ErrHomeUnusable, got %v", err)
	}
}
