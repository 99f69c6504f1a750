package dht

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	record "github.com/libp2p/go-libp2p-record"
)

// exact accepts only the value "ok" and prefers the longest value.
type exact struct{}

func (exact) Validate(_ string, v []byte) error {
	if string(v) != "ok" {
		return errors.New("not ok")
	}
	return nil
}

func (exact) Select(_ string, vs [][]byte) (int, error) { return 0, nil }

type panicky struct{}

func (panicky) Validate(string, []byte) error        { panic("boom") }
func (panicky) Select(string, [][]byte) (int, error) { panic("boom") }

type outOfRange struct{}

func (outOfRange) Validate(string, []byte) error        { return nil }
func (outOfRange) Select(string, [][]byte) (int, error) { return 7, nil }

func testNamespaces() namespaces {
	return namespaces{
		byName: map[string]record.Validator{"test": exact{}, "panic": panicky{}, "range": outOfRange{}},
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

func TestNamespacesGuardInjectedValidators(t *testing.T) {
	n := testNamespaces()
	if err := n.Validate(Key("panic", "x"), []byte("v")); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("panicking Validate: %v; want ErrInvalidRecord", err)
	}
	if _, err := n.Select(Key("panic", "x"), [][]byte{{1}}); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("panicking Select: %v; want ErrInvalidRecord", err)
	}
	if _, err := n.Select(Key("range", "x"), [][]byte{{1}, {2}}); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("out-of-range Select: %v; want ErrInvalidRecord", err)
	}
	if _, err := n.Select(Key("test", "x"), nil); !errors.Is(err, ErrInvalidRecord) {
		t.Errorf("Select of nothing: %v; want ErrInvalidRecord", err)
	}
	if err := n.Validate(Key("test", "x"), []byte("ok")); err != nil {
		t.Errorf("valid record: %v", err)
	}
}

// FuzzValidate feeds keys and values, as a peer could send them, to the
// validator kad-dht calls: it must never panic, and it may accept only a
// well-formed key of a registered namespace with a value within the size cap
// that the namespace's validator accepts.
func FuzzValidate(f *testing.F) {
	f.Add("/igor/test/x", []byte("ok"))
	f.Add("/igor/test/x", []byte("no"))
	f.Add("/igor/test/", []byte("ok"))
	f.Add("/igor/agent/z6Mk", []byte("ok"))
	f.Add("/igor/panic/x", []byte("ok"))
	f.Add("/other/x", []byte("ok"))
	f.Add("/igor//x", []byte("ok"))
	f.Add("/igor/test/a/b", []byte("ok"))
	f.Add("", []byte(nil))
	n := testNamespaces()
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		err := n.Validate(key, value)
		if err == nil {
			rest, ok := strings.CutPrefix(key, "/igor/test/")
			if !ok || rest == "" || len(key) > MaxKeySize || !bytes.Equal(value, []byte("ok")) {
				t.Fatalf("accepted key %q value %q", key, value)
			}
			if _, err := n.Select(key, [][]byte{value, value}); err != nil {
				t.Fatalf("Select on an accepted record: %v", err)
			}
			return
		}
		if !errors.Is(err, ErrBadArgument) && !errors.Is(err, ErrInvalidRecord) {
			t.Fatalf("error %v wraps neither ErrBadArgument nor ErrInvalidRecord", err)
		}
	})
}
