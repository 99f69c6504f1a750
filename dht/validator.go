package dht

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"

	record "github.com/libp2p/go-libp2p-record"
)

// keyNamespace is the first key component of every record this package
// stores. kad-dht dispatches validators on the first component, so all of the
// project's records sit under one kad namespace ("igor") and this package
// dispatches again on the second component ("agent", "host", …).
const keyNamespace = "igor"

// Key returns the record key "/igor/<namespace>/<name>", the form PutValue and
// GetValue accept. It does not check its arguments; PutValue and GetValue do.
func Key(namespace, name string) string {
	return "/" + keyNamespace + "/" + namespace + "/" + name
}

// checkNamespace reports whether ns is a valid namespace name ([a-z0-9-]+).
func checkNamespace(ns string) error {
	if ns == "" {
		return fmt.Errorf("namespace is empty")
	}
	for i := 0; i < len(ns); i++ {
		c := ns[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return fmt.Errorf("namespace %q: byte %d (%q) is not one of [a-z0-9-]", ns, i, c)
		}
	}
	return nil
}

// splitKey parses "/igor/<namespace>/<name>" and returns the namespace. It
// checks the form only, not whether the namespace is registered.
func splitKey(key string) (string, error) {
	if len(key) > MaxKeySize {
		return "", fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrBadArgument, len(key), MaxKeySize)
	}
	rest, ok := strings.CutPrefix(key, "/"+keyNamespace+"/")
	if !ok {
		return "", fmt.Errorf("%w: key %.64q does not start with /%s/: record keys are /%s/<namespace>/<name>", ErrBadArgument, key, keyNamespace, keyNamespace)
	}
	ns, name, ok := strings.Cut(rest, "/")
	if !ok || name == "" {
		return "", fmt.Errorf("%w: key %.64q has no name after the namespace: record keys are /%s/<namespace>/<name>", ErrBadArgument, key, keyNamespace)
	}
	if err := checkNamespace(ns); err != nil {
		return "", fmt.Errorf("%w: key %.64q: %w", ErrBadArgument, key, err)
	}
	return ns, nil
}

// namespaces routes records to the validator registered for their namespace.
// It is the only validator kad-dht sees (registered under "igor"), so it runs
// on every local put, every record a peer sends us to store, and every record
// a lookup receives. Values come from the network: the size cap applies before
// any injected validator sees them, and an injected validator that panics
// rejects the record instead of taking the node down.
type namespaces struct {
	byName map[string]record.Validator
	logger *slog.Logger
}

var _ record.Validator = namespaces{}

// validator returns the validator for key, or an error wrapping ErrBadArgument.
func (n namespaces) validator(key string) (record.Validator, error) {
	ns, err := splitKey(key)
	if err != nil {
		return nil, err
	}
	v, ok := n.byName[ns]
	if !ok {
		return nil, fmt.Errorf("%w: key %.64q: namespace %q has no validator (registered: %s)", ErrBadArgument, key, ns, n.registered())
	}
	return v, nil
}

func (n namespaces) registered() string {
	if len(n.byName) == 0 {
		return "none"
	}
	names := make([]string, 0, len(n.byName))
	for ns := range n.byName {
		names = append(names, ns)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// Validate implements record.Validator. Errors wrap ErrBadArgument (key) or
// ErrInvalidRecord (value).
func (n namespaces) Validate(key string, value []byte) (err error) {
	v, err := n.validator(key)
	if err != nil {
		return err
	}
	if len(value) > MaxRecordSize {
		return fmt.Errorf("%w: %.64q: record is %d bytes, the limit is %d", ErrInvalidRecord, key, len(value), MaxRecordSize)
	}
	defer func() {
		if r := recover(); r != nil {
			n.logger.Error("dht: validator panicked; record rejected", "key", key, "panic", r)
			err = fmt.Errorf("%w: %.64q: validator panicked: %v", ErrInvalidRecord, key, r)
		}
	}()
	if err := v.Validate(key, value); err != nil {
		return fmt.Errorf("%w: %.64q: %w", ErrInvalidRecord, key, err)
	}
	return nil
}

// Select implements record.Validator. kad-dht passes it only values that
// passed Validate.
func (n namespaces) Select(key string, values [][]byte) (i int, err error) {
	v, err := n.validator(key)
	if err != nil {
		return 0, err
	}
	if len(values) == 0 {
		return 0, fmt.Errorf("%w: %.64q: select from no values", ErrInvalidRecord, key)
	}
	defer func() {
		if r := recover(); r != nil {
			n.logger.Error("dht: validator Select panicked", "key", key, "panic", r)
			i, err = 0, fmt.Errorf("%w: %.64q: validator Select panicked: %v", ErrInvalidRecord, key, r)
		}
	}()
	i, err = v.Select(key, values)
	if err != nil {
		return 0, fmt.Errorf("%w: %.64q: select: %w", ErrInvalidRecord, key, err)
	}
	if i < 0 || i >= len(values) {
		return 0, fmt.Errorf("%w: %.64q: validator Select returned index %d of %d values", ErrInvalidRecord, key, i, len(values))
	}
	return i, nil
}
