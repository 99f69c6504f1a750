package agents

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ipfs/go-cid"
	"io"
	"sort"
	"strings"
)

// Capability names an agent may request in its manifest. Each grants the
// `igor` host imports listed in docs/ABI.md; anything else is denied.
const (
	CapClock = "clock"
	CapRand  = "rand"
	CapLog   = "log"
	CapArgs  = "args"
	// The effect capabilities of the reference runtime (docs/ABI.md).
	CapWallet  = "wallet"  // wallet_balance, wallet_receipt_count, wallet_receipt
	CapPricing = "pricing" // node_price
	CapHTTP    = "http"    // http_request; options: HTTPOptions
	CapX402    = "x402"    // wallet_pay; options: X402Options
)

// Limits that no manifest may exceed.
const (
	MaxMemoryBytes       = 64 << 20 // 64 MiB hard cap on guest linear memory
	DefaultMaxStateBytes = 16 << 20
	MaxStateBytesCap     = 64 << 20
	DefaultTickTimeoutMs = 1000
	MaxTickTimeoutMs     = 15000
	MaxManifestBytes     = 64 << 10
	MaxArgsBytes         = 16 << 10
	DefaultLeaseTermSec  = 60
	MaxLeaseTermSec      = 86400
	DefaultReplicas      = 2
	// MaxJournalBytes caps one checkpoint's journal object (a tick log,
	// which the host caps at 4 MiB of data, plus its framing).
	MaxJournalBytes = 5 << 20
	// MaxReceipts is how many payment receipts an agent keeps (the newest;
	// what wallet_receipt reads), each at most MaxReceiptBytes: a snapshot
	// of them is written with each state (16 fit in one 16 KiB chunk).
	MaxReceipts     = 16
	MaxReceiptBytes = 1024
)

// knownCapabilities maps each capability to the highest version this node supports.
var knownCapabilities = map[string]int{CapClock: 1, CapRand: 1, CapLog: 1, CapArgs: 1,
	CapWallet: 1, CapPricing: 1, CapHTTP: 1, CapX402: 1}

// ErrBadManifest is wrapped by every manifest parsing or validation error.
var ErrBadManifest = errors.New("invalid manifest")

// Manifest is an agent's declaration of what it needs: capabilities (deny by
// default), resource limits, init arguments and lease/placement policy. The
// normalised manifest is stored as a block and bound into the genesis and
// every checkpoint, so no host can widen it.
type Manifest struct {
	// cid is the block it was read from (loadManifest), so a lineage walk
	// knows which manifest is in force; undefined for a parsed one.
	cid cid.Cid

	Name           string                    `json:"name,omitempty"`
	Capabilities   map[string]CapabilitySpec `json:"capabilities,omitempty"`
	ResourceLimits ResourceLimits            `json:"resource_limits"`
	// Args is handed to the agent by igor.args_get (capability "args").
	Args string `json:"args,omitempty"`
	// Journal: the node journals every tick at the agent's custody group
	// (docs/PROTOCOL.md). Always true when http or x402 is granted (normalize
	// sets it: an agent that acts on the world is always journaled); other
	// agents may ask for it. omitempty keeps the canonical bytes, and so the
	// CID, of every manifest written before the field existed.
	Journal         bool            `json:"journal,omitempty"`
	Lease           LeasePolicy     `json:"lease"`
	MigrationPolicy MigrationPolicy `json:"migration_policy"`
}

// CapabilitySpec is one granted capability. Version is required (≥ 1), as in
// the reference runtime.
type CapabilitySpec struct {
	Version int             `json:"version"`
	Options json.RawMessage `json:"options,omitempty"`
}

// ResourceLimits bound one instance. Zero means "use the default".
type ResourceLimits struct {
	MaxMemoryBytes uint64 `json:"max_memory_bytes,omitempty"`
	MaxStateBytes  uint64 `json:"max_state_bytes,omitempty"`
	TickTimeoutMs  uint64 `json:"tick_timeout_ms,omitempty"`
	// Accepted for compatibility with reference manifests; not enforced
	// (wazero has no instruction metering; storage is budgeted per block).
	MaxCPUMillis    uint64 `json:"max_cpu_millis,omitempty"`
	MaxStorageBytes uint64 `json:"max_storage_bytes,omitempty"`
}

// LeasePolicy controls hosting in the mesh.
type LeasePolicy struct {
	TermSeconds uint64 `json:"term_seconds,omitempty"`
	Replicas    uint64 `json:"replicas,omitempty"`
}

// MigrationPolicy is the reference's placement policy.
type MigrationPolicy struct {
	Enabled           *bool    `json:"enabled,omitempty"`
	MaxPricePerSecond int64    `json:"max_price_per_second,omitempty"`
	PreferredRegions  []string `json:"preferred_regions,omitempty"`
}

// ParseManifest decodes and validates a manifest, filling defaults. Unknown
// fields, unknown capabilities and out-of-range limits are errors that name
// the offending field. Empty input (or "{}") is a valid manifest that grants
// nothing.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > MaxManifestBytes {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrBadManifest, len(data), MaxManifestBytes)
	}
	m := &Manifest{}
	if len(bytes.TrimSpace(data)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(m); err != nil {
			return nil, fmt.Errorf("%w: %s", ErrBadManifest, jsonErrorText(err))
		}
		if _, err := dec.Token(); err != io.EOF {
			return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrBadManifest)
		}
	}
	if err := m.normalize(); err != nil {
		return nil, err
	}
	return m, nil
}

func jsonErrorText(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("JSON syntax error at byte %d: %v", se.Offset, err)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %q: expected %s, got JSON %s", te.Field, te.Type, te.Value)
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// normalize validates m and fills defaults, so that two hosts reading the
// same manifest enforce the same limits.
func (m *Manifest) normalize() error {
	// Sorted, so that a manifest with several bad entries always gets the
	// same error (map order is random).
	names := make([]string, 0, len(m.Capabilities))
	for name := range m.Capabilities {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		spec := m.Capabilities[name]
		maxV, ok := knownCapabilities[name]
		if !ok {
			return fmt.Errorf("%w: unknown capability %q (known: %s)", ErrBadManifest, name, strings.Join(KnownCapabilities(), ", "))
		}
		if spec.Version < 1 || spec.Version > maxV {
			return fmt.Errorf("%w: capability %q: version %d is not supported (supported: 1..%d)", ErrBadManifest, name, spec.Version, maxV)
		}
		if len(spec.Options) > 0 {
			var buf bytes.Buffer
			if err := json.Compact(&buf, spec.Options); err != nil {
				return fmt.Errorf("%w: capability %q: options: %v", ErrBadManifest, name, err)
			}
			if buf.String() == "null" || buf.String() == "{}" {
				spec.Options = nil
			} else {
				spec.Options = buf.Bytes()
			}
		}
		// The new capabilities' options are typed: checked strictly and
		// rewritten in one canonical form with the defaults filled in, so
		// every host enforces the same policy. The older ones keep their
		// free-form options (their manifests' bytes must not change).
		var err error
		switch name {
		case CapHTTP:
			spec.Options, err = canonicalOptions[HTTPOptions](name, spec.Options)
		case CapX402:
			spec.Options, err = canonicalOptions[X402Options](name, spec.Options)
		case CapWallet, CapPricing:
			if spec.Options != nil {
				err = fmt.Errorf("%w: capability %q takes no options", ErrBadManifest, name)
			}
		}
		if err != nil {
			return err
		}
		m.Capabilities[name] = spec
	}
	if m.Grants(CapHTTP) || m.Grants(CapX402) {
		m.Journal = true
	}
	rl := &m.ResourceLimits
	if rl.MaxMemoryBytes == 0 {
		rl.MaxMemoryBytes = MaxMemoryBytes
	}
	if rl.MaxMemoryBytes > MaxMemoryBytes {
		return fmt.Errorf("%w: resource_limits.max_memory_bytes %d exceeds the %d-byte (64 MiB) cap", ErrBadManifest, rl.MaxMemoryBytes, MaxMemoryBytes)
	}
	if rl.MaxMemoryBytes < 64<<10 {
		return fmt.Errorf("%w: resource_limits.max_memory_bytes %d is below one 64 KiB WASM page", ErrBadManifest, rl.MaxMemoryBytes)
	}
	if rl.MaxStateBytes == 0 {
		rl.MaxStateBytes = DefaultMaxStateBytes
	}
	if rl.MaxStateBytes > MaxStateBytesCap {
		return fmt.Errorf("%w: resource_limits.max_state_bytes %d exceeds the %d-byte cap", ErrBadManifest, rl.MaxStateBytes, MaxStateBytesCap)
	}
	if rl.TickTimeoutMs == 0 {
		rl.TickTimeoutMs = DefaultTickTimeoutMs
	}
	if rl.TickTimeoutMs > MaxTickTimeoutMs {
		return fmt.Errorf("%w: resource_limits.tick_timeout_ms %d exceeds the %d ms cap", ErrBadManifest, rl.TickTimeoutMs, MaxTickTimeoutMs)
	}
	if len(m.Args) > MaxArgsBytes {
		return fmt.Errorf("%w: args is %d bytes, the limit is %d", ErrBadManifest, len(m.Args), MaxArgsBytes)
	}
	if m.Lease.TermSeconds == 0 {
		m.Lease.TermSeconds = DefaultLeaseTermSec
	}
	if m.Lease.TermSeconds > MaxLeaseTermSec {
		return fmt.Errorf("%w: lease.term_seconds %d exceeds %d (one day)", ErrBadManifest, m.Lease.TermSeconds, MaxLeaseTermSec)
	}
	if m.Lease.Replicas == 0 {
		m.Lease.Replicas = DefaultReplicas
	}
	if m.Lease.Replicas > 6 {
		return fmt.Errorf("%w: lease.replicas %d is more than 6", ErrBadManifest, m.Lease.Replicas)
	}
	if m.MigrationPolicy.MaxPricePerSecond < 0 {
		return fmt.Errorf("%w: migration_policy.max_price_per_second must not be negative", ErrBadManifest)
	}
	return nil
}

// Grants reports whether the manifest grants capability name.
func (m *Manifest) Grants(name string) bool {
	_, ok := m.Capabilities[name]
	return ok
}

// Canonical returns the normalised manifest as deterministic JSON (struct
// field order, sorted map keys, compacted options). These bytes are the
// manifest block that genesis and checkpoints link to.
func (m *Manifest) Canonical() []byte {
	b, err := json.Marshal(m)
	if err != nil {
		// Every field is a plain JSON type; Marshal cannot fail.
		panic(fmt.Sprintf("agents: marshal manifest: %v", err))
	}
	return b
}

// KnownCapabilities lists the capabilities this node can grant, sorted.
func KnownCapabilities() []string {
	out := make([]string, 0, len(knownCapabilities))
	for k := range knownCapabilities {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
