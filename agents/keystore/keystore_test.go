package keystore

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
)

func testKey(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("keystore test " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

func didOf(priv ed25519.PrivateKey) string { return agents.DID(priv.Public().(ed25519.PublicKey)) }

func skipIfRoot(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores file permissions")
	}
}

func TestKeyFileRoundTrip(t *testing.T) {
	priv := testKey("a")
	data := EncodeKeyFile(priv)
	if !bytes.HasSuffix(data, []byte("\n")) || !bytes.Contains(data, []byte(didOf(priv))) {
		t.Fatalf("key file %s", data)
	}
	back, err := DecodeKeyFile(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, priv) {
		t.Fatal("round trip changed the key")
	}
}

func TestDecodeKeyFileRejects(t *testing.T) {
	priv := testKey("a")
	seed := base64.StdEncoding.EncodeToString(priv.Seed())
	did := didOf(priv)
	otherDID := didOf(testKey("b"))
	mk := func(version, typ, d, s string) string {
		return `{"version":` + version + `,"type":"` + typ + `","did":"` + d + `","seed":"` + s + `"}`
	}
	cases := map[string]string{
		"empty":         "",
		"not json":      "hello",
		"version 2":     mk("2", "ed25519", did, seed),
		"version 0":     `{"type":"ed25519","did":"` + did + `","seed":"` + seed + `"}`,
		"rsa":           mk("1", "rsa", did, seed),
		"did mismatch":  mk("1", "ed25519", otherDID, seed),
		"bad did":       mk("1", "ed25519", "did:key:zz", seed),
		"short seed":    mk("1", "ed25519", did, base64.StdEncoding.EncodeToString(priv.Seed()[:31])),
		"not base64":    mk("1", "ed25519", did, "!!!!"),
		"url base64":    mk("1", "ed25519", did, strings.TrimRight(base64.URLEncoding.EncodeToString(priv.Seed()), "=")),
		"unknown field": `{"version":1,"type":"ed25519","did":"` + did + `","seed":"` + seed + `","extra":1}`,
		"trailing":      mk("1", "ed25519", did, seed) + "{}",
		"too large":     mk("1", "ed25519", did, seed) + strings.Repeat(" ", MaxKeyFileBytes),
		"reference fmt": string(append([]byte{64, 0, 0, 0}, priv...)), // the reference runtime's binary identity file
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if k, err := DecodeKeyFile([]byte(in)); !errors.Is(err, ErrCorrupt) || k != nil {
				t.Fatalf("DecodeKeyFile = %x, %v; want ErrCorrupt", k, err)
			}
		})
	}
}

func TestOpenCreatesPrivateDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "keys")
	ks, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o700 {
		t.Fatalf("keystore dir mode %o, want 700", fi.Mode().Perm())
	}
	if ks.Dir() != dir {
		t.Fatal("Dir()")
	}
	if dids, err := ks.List(); err != nil || len(dids) != 0 {
		t.Fatalf("new keystore lists %v, %v", dids, err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Fatalf("Open left files behind: %v", ents)
	}
}

func TestOpenBadDir(t *testing.T) {
	parent := t.TempDir()
	file := filepath.Join(parent, "file")
	os.WriteFile(file, nil, 0o600)
	if _, err := Open(file); err == nil || !strings.Contains(err.Error(), file) {
		t.Fatalf("Open(a file) = %v", err)
	}
	if _, err := Open(filepath.Join(file, "sub")); err == nil || !strings.Contains(err.Error(), "create directory") {
		t.Fatalf("Open(under a file) = %v", err)
	}
	if _, err := Open(""); err == nil {
		t.Fatal("Open(\"\") succeeded")
	}
}

func TestOpenUnwritable(t *testing.T) {
	skipIfRoot(t)
	ro := filepath.Join(t.TempDir(), "ro")
	if err := os.Mkdir(ro, 0o500); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ro)
	if err == nil || !strings.Contains(err.Error(), "not writable") || !strings.Contains(err.Error(), ro) {
		t.Fatalf("Open(read-only dir) = %v", err)
	}
}

func TestFuzzCorpusValidSeedDecodes(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "fuzz", "FuzzDecodeKeyFile", "valid-keyfile"))
	if err != nil {
		t.Fatal(err)
	}
	lit := strings.TrimSuffix(strings.TrimPrefix(strings.SplitN(string(raw), "\n", 3)[1], "[]byte("), ")")
	s, err := strconv.Unquote(lit)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := DecodeKeyFile([]byte(s)); err != nil {
		t.Fatal(err)
	}
}

func TestPutGetList(t *testing.T) {
	ks, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	a, b := testKey("a"), testKey("b")
	for _, k := range []ed25519.PrivateKey{a, b} {
		did, err := ks.Put(k)
		if err != nil {
			t.Fatal(err)
		}
		if did != didOf(k) {
			t.Fatalf("Put returned %s", did)
		}
		fi, err := os.Stat(ks.Path(did))
		if err != nil {
			t.Fatal(err)
		}
		if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode %o, want 600", fi.Mode().Perm())
		}
		got, err := ks.Get(did)
		if err != nil || !bytes.Equal(got, k) {
			t.Fatalf("Get = %x, %v", got, err)
		}
	}
	// Same key again: a no-op.
	if _, err := ks.Put(a); err != nil {
		t.Fatalf("Put of the same key: %v", err)
	}
	dids, err := ks.List()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{didOf(a), didOf(b)}
	if want[0] > want[1] {
		want[0], want[1] = want[1], want[0]
	}
	if strings.Join(dids, ",") != strings.Join(want, ",") {
		t.Fatalf("List = %v, want %v", dids, want)
	}
	// Only the key files are left: no temp files.
	ents, _ := os.ReadDir(ks.Dir())
	if len(ents) != 2 {
		t.Fatalf("directory holds %d entries", len(ents))
	}
}

func TestPutRejectsBadKeys(t *testing.T) {
	ks, _ := Open(t.TempDir())
	if _, err := ks.Put(testKey("a")[:32]); !errors.Is(err, agents.ErrWrongKey) {
		t.Fatalf("short key: %v", err)
	}
	// Seed of one key, public half of another.
	mixed := append(append(ed25519.PrivateKey{}, testKey("a")[:32]...), testKey("b")[32:]...)
	if _, err := ks.Put(mixed); !errors.Is(err, agents.ErrWrongKey) {
		t.Fatalf("mismatched key halves: %v", err)
	}
}

func TestGetMissingAndBadDID(t *testing.T) {
	ks, _ := Open(t.TempDir())
	did := didOf(testKey("a"))
	_, err := ks.Get(did)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), did) || !strings.Contains(err.Error(), "igor-node keys import") {
		t.Fatalf("missing key: %v", err)
	}
	if _, err := ks.Get("did:key:../../etc/passwd"); !errors.Is(err, agents.ErrBadDID) {
		t.Fatalf("bad DID: %v", err)
	}
	if ks.Path("../x") != "" {
		t.Fatal("Path of an invalid DID is not empty")
	}
}

func TestGetCorrupt(t *testing.T) {
	ks, _ := Open(t.TempDir())
	a, b := testKey("a"), testKey("b")
	// Garbage under a's name.
	os.WriteFile(ks.Path(didOf(a)), []byte("garbage"), 0o600)
	if _, err := ks.Get(didOf(a)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), ks.Path(didOf(a))) {
		t.Fatalf("garbage: %v", err)
	}
	// A valid key file for b, filed under a's name.
	os.Remove(ks.Path(didOf(a)))
	os.WriteFile(ks.Path(didOf(a)), EncodeKeyFile(b), 0o600)
	if _, err := ks.Get(didOf(a)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("misfiled key: %v", err)
	}
	// Put refuses to replace a corrupt file (and says so).
	if _, err := ks.Put(a); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Put over a misfiled key: %v", err)
	}
	data, _ := os.ReadFile(ks.Path(didOf(a)))
	if !bytes.Equal(data, EncodeKeyFile(b)) {
		t.Fatal("Put replaced an existing file")
	}
	// A directory where a key file should be.
	os.Mkdir(ks.Path(didOf(b)), 0o700)
	if _, err := ks.Get(didOf(b)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("directory as key file: %v", err)
	}
}

func TestGetWrongPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	ks, _ := Open(t.TempDir())
	a := testKey("a")
	did, err := ks.Put(a)
	if err != nil {
		t.Fatal(err)
	}
	path := ks.Path(did)
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660} {
		os.Chmod(path, mode)
		_, err := ks.Get(did)
		if !errors.Is(err, ErrPermissions) || !strings.Contains(err.Error(), "chmod 600 "+path) {
			t.Fatalf("mode %o: %v", mode, err)
		}
	}
	os.Chmod(path, 0o400)
	if _, err := ks.Get(did); err != nil {
		t.Fatalf("mode 400: %v", err)
	}
}

func TestPutNeverOverwritesDifferentKey(t *testing.T) {
	ks, _ := Open(t.TempDir())
	a, b := testKey("a"), testKey("b")
	// Simulate the impossible: another key's valid file under a's name, but
	// with a's DID so only the seed differs. DecodeKeyFile rejects that as
	// corrupt; Put must still leave it alone.
	path := ks.Path(didOf(a))
	forged := bytes.Replace(EncodeKeyFile(b), []byte(didOf(b)), []byte(didOf(a)), 1)
	os.WriteFile(path, forged, 0o600)
	if _, err := ks.Put(a); err == nil {
		t.Fatal("Put over a different key succeeded")
	}
	data, _ := os.ReadFile(path)
	if !bytes.Equal(data, forged) {
		t.Fatal("Put replaced the existing file")
	}
}

func TestConcurrentPutSameKey(t *testing.T) {
	ks, _ := Open(t.TempDir())
	a := testKey("a")
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := ks.Put(a)
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("concurrent Put: %v", err)
		}
	}
	if got, err := ks.Get(didOf(a)); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("Get after concurrent Put: %v", err)
	}
}

func TestCrashLeftoversIgnored(t *testing.T) {
	ks, _ := Open(t.TempDir())
	a := testKey("a")
	did, _ := ks.Put(a)
	// What a crash can leave: a temp file (complete or torn), plus
	// unrelated files.
	b := testKey("b")
	tmpName := "." + agents.AgentID(didOf(b)) + ".key.12345.tmp"
	os.WriteFile(filepath.Join(ks.Dir(), tmpName), EncodeKeyFile(b)[:20], 0o600)
	os.WriteFile(filepath.Join(ks.Dir(), agents.AgentID(didOf(b))+".key.tmp"), EncodeKeyFile(b), 0o600)
	os.WriteFile(filepath.Join(ks.Dir(), "README"), []byte("x"), 0o600)
	os.WriteFile(filepath.Join(ks.Dir(), "not-a-did.key"), []byte("x"), 0o600)
	dids, err := ks.List()
	if err != nil || len(dids) != 1 || dids[0] != did {
		t.Fatalf("List = %v, %v; want only %s", dids, err, did)
	}
	if _, err := ks.Get(didOf(b)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of a key only present as a temp file: %v", err)
	}
	// Put of b still works next to its leftover.
	if _, err := ks.Put(b); err != nil {
		t.Fatal(err)
	}
	if got, err := ks.Get(didOf(b)); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("Get(b) = %v", err)
	}
}

func TestNodeKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "node.key")
	if _, err := LoadNodeKey(path); !errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadNodeKey(missing) = %v", err)
	}
	priv, err := CreateNodeKey(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := os.Stat(path)
	if runtime.GOOS != "windows" && fi.Mode().Perm() != 0o600 {
		t.Fatalf("node key mode %o", fi.Mode().Perm())
	}
	got, err := LoadNodeKey(path)
	if err != nil || !bytes.Equal(got, priv) {
		t.Fatalf("LoadNodeKey = %v", err)
	}
	// Never replaced by CreateNodeKey.
	if _, err := CreateNodeKey(path); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateNodeKey over an existing key: %v", err)
	}
	if got, _ := LoadNodeKey(path); !bytes.Equal(got, priv) {
		t.Fatal("node key changed")
	}
	// A corrupt node key is an error, and stays as it is.
	os.WriteFile(path, []byte("{}"), 0o600)
	_, err = LoadNodeKey(path)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "never regenerated") {
		t.Fatalf("LoadNodeKey(corrupt) = %v", err)
	}
	if _, err := CreateNodeKey(path); !errors.Is(err, ErrExists) {
		t.Fatalf("CreateNodeKey over a corrupt key: %v", err)
	}
	if data, _ := os.ReadFile(path); string(data) != "{}" {
		t.Fatal("corrupt node key was replaced")
	}
	if runtime.GOOS != "windows" {
		os.WriteFile(path, EncodeKeyFile(priv), 0o600)
		os.Chmod(path, 0o644)
		if _, err := LoadNodeKey(path); !errors.Is(err, ErrPermissions) {
			t.Fatalf("LoadNodeKey(0644) = %v", err)
		}
	}
}

func TestNodeKeyUnreadable(t *testing.T) {
	skipIfRoot(t)
	path := filepath.Join(t.TempDir(), "node.key")
	if _, err := CreateNodeKey(path); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o000)
	_, err := LoadNodeKey(path)
	if err == nil || errors.Is(err, ErrNotFound) {
		t.Fatalf("LoadNodeKey(unreadable) = %v", err)
	}
}

// Open removes temp files a crash left once they are old enough that no
// live writer can own them; fresh ones stay.
func TestOpenRemovesStaleTemps(t *testing.T) {
	dir := t.TempDir()
	old := filepath.Join(dir, ".abc.key.111.tmp")
	fresh := filepath.Join(dir, ".abc.key.222.tmp")
	for _, p := range []string{old, fresh} {
		if err := os.WriteFile(p, EncodeKeyFile(testKey("a"))[:20], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	past := time.Now().Add(-2 * time.Minute)
	if err := os.Chtimes(old, past, past); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a stale temp key file survived Open: %v", err)
	}
	if _, err := os.Stat(fresh); err != nil {
		t.Fatalf("a fresh temp file (a live writer's) was removed: %v", err)
	}
}
