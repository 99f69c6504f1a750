package agents

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
)

// Limits of the http capability's options (docs/ABI.md).
const (
	DefaultHTTPTimeoutMs     = 10000
	MaxHTTPTimeoutMs         = 60000
	DefaultHTTPResponseBytes = 1 << 20
	// MaxHTTPResponseBytes is the tick log's data limit: a response is
	// recorded in the tick log, which holds at most 4 MiB of data.
	MaxHTTPResponseBytes = 4 << 20
)

// HTTPOptions are the options of capability "http". A normalised manifest
// holds them with the defaults filled in and host names in lower case.
type HTTPOptions struct {
	// AllowedHosts: the URL host names the agent may reach (case-insensitive,
	// port ignored). "*.example.com" matches every subdomain of example.com,
	// not example.com itself. Empty allows every public host. Private,
	// loopback and link-local addresses are reached only through a host
	// named here literally (an exact entry, not a wildcard).
	AllowedHosts []string `json:"allowed_hosts,omitempty"`
	// TimeoutMs bounds one request (1..60000, default 10000); the tick's
	// deadline bounds it too (docs/ABI.md).
	TimeoutMs uint64 `json:"timeout_ms,omitempty"`
	// MaxResponseBytes bounds a response body (1..4 MiB, default 1 MiB).
	MaxResponseBytes uint64 `json:"max_response_bytes,omitempty"`
}

// X402Options are the options of capability "x402" (wallet_pay).
type X402Options struct {
	// AllowedRecipients: the recipients the agent may pay (exact bytes);
	// empty allows any.
	AllowedRecipients []string `json:"allowed_recipients,omitempty"`
	// MaxPaymentMicrocents caps one payment; 0 means no cap.
	MaxPaymentMicrocents int64 `json:"max_payment_microcents,omitempty"`
}

// capOptions is implemented by the typed options: normalize checks them and
// fills their defaults.
type capOptions interface {
	HTTPOptions | X402Options
}

// HTTPOptions returns the manifest's http options, defaults filled; the
// zero-option defaults if http is not granted. Errors wrap ErrBadManifest
// (only for a manifest that did not come from ParseManifest).
func (m *Manifest) HTTPOptions() (HTTPOptions, error) {
	return decodeOptions[HTTPOptions](CapHTTP, m.Capabilities[CapHTTP].Options)
}

// X402Options returns the manifest's x402 options (see HTTPOptions).
func (m *Manifest) X402Options() (X402Options, error) {
	return decodeOptions[X402Options](CapX402, m.Capabilities[CapX402].Options)
}

// canonicalOptions checks raw and returns it re-encoded: struct field
// order, defaults filled, so equal policies have equal bytes.
func canonicalOptions[T capOptions](capName string, raw json.RawMessage) (json.RawMessage, error) {
	o, err := decodeOptions[T](capName, raw)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("%w: capability %q: options: %v", ErrBadManifest, capName, err)
	}
	if string(b) == "{}" {
		return nil, nil
	}
	return b, nil
}

// decodeOptions parses raw strictly (unknown keys and wrong types are
// errors naming the field), validates and normalises it.
func decodeOptions[T capOptions](capName string, raw json.RawMessage) (T, error) {
	var o T
	field := "capabilities." + capName + ".options"
	if len(raw) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&o); err != nil {
			var te *json.UnmarshalTypeError
			if errors.As(err, &te) {
				at := field
				if te.Field != "" {
					at += "." + te.Field
				}
				return o, fmt.Errorf("%w: %s: expected %s, got JSON %s", ErrBadManifest, at, te.Type, te.Value)
			}
			return o, fmt.Errorf("%w: %s: %s", ErrBadManifest, field, strings.TrimPrefix(err.Error(), "json: "))
		}
		if _, err := dec.Token(); err != io.EOF {
			return o, fmt.Errorf("%w: %s: trailing data", ErrBadManifest, field)
		}
	}
	var err error
	switch p := any(&o).(type) {
	case *HTTPOptions:
		err = p.normalize(field)
	case *X402Options:
		err = p.normalize(field)
	}
	return o, err
}

func (o *HTTPOptions) normalize(field string) error {
	for k, h := range o.AllowedHosts {
		n, err := normalizeHostPattern(h)
		if err != nil {
			return fmt.Errorf("%w: %s.allowed_hosts[%d] %q: %v", ErrBadManifest, field, k, h, err)
		}
		o.AllowedHosts[k] = n
	}
	if o.TimeoutMs == 0 {
		o.TimeoutMs = DefaultHTTPTimeoutMs
	}
	if o.TimeoutMs > MaxHTTPTimeoutMs {
		return fmt.Errorf("%w: %s.timeout_ms %d exceeds %d", ErrBadManifest, field, o.TimeoutMs, MaxHTTPTimeoutMs)
	}
	if o.MaxResponseBytes == 0 {
		o.MaxResponseBytes = DefaultHTTPResponseBytes
	}
	if o.MaxResponseBytes > MaxHTTPResponseBytes {
		return fmt.Errorf("%w: %s.max_response_bytes %d exceeds the %d-byte (4 MiB) cap", ErrBadManifest, field, o.MaxResponseBytes, MaxHTTPResponseBytes)
	}
	return nil
}

// MaxRecipientBytes is the longest wallet_pay recipient (docs/ABI.md).
const MaxRecipientBytes = 256

func (o *X402Options) normalize(field string) error {
	for k, r := range o.AllowedRecipients {
		if r == "" || len(r) > MaxRecipientBytes {
			return fmt.Errorf("%w: %s.allowed_recipients[%d]: a recipient is 1 to %d bytes", ErrBadManifest, field, k, MaxRecipientBytes)
		}
	}
	if o.MaxPaymentMicrocents < 0 {
		return fmt.Errorf("%w: %s.max_payment_microcents must not be negative", ErrBadManifest, field)
	}
	return nil
}

// normalizeHostPattern checks one allowed_hosts entry: a DNS name, an IP
// address (IPv6 with or without brackets) or "*." followed by a DNS name.
// It returns the entry in lower case, IPs in their canonical text form.
func normalizeHostPattern(h string) (string, error) {
	if a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")); err == nil {
		if a.Zone() != "" {
			return "", errors.New("an address with a zone is not a host")
		}
		return a.Unmap().String(), nil
	}
	h = strings.ToLower(h)
	name, wild := strings.CutPrefix(h, "*.")
	if err := checkDNSName(name); err != nil {
		if wild {
			return "", fmt.Errorf("after \"*.\": %v", err)
		}
		return "", err
	}
	return h, nil
}

// checkDNSName accepts names of letters, digits, '-' and '_' in labels of
// 1 to 63 bytes, at most 253 bytes in all: no port, scheme, path or
// wildcard other than a leading "*.".
func checkDNSName(name string) error {
	if name == "" || len(name) > 253 {
		return errors.New("want a host name of 1 to 253 bytes (no scheme, port or path)")
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("character %q is not allowed in a host name (no scheme, port or path)", c)
			}
		}
	}
	return nil
}
