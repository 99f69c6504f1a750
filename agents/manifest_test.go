package agents

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseManifestDefaults(t *testing.T) {
	for _, in := range []string{"", "  \n", "{}"} {
		m, err := ParseManifest([]byte(in))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if m.ResourceLimits.MaxMemoryBytes != MaxMemoryBytes || m.ResourceLimits.MaxStateBytes != DefaultMaxStateBytes ||
			m.ResourceLimits.TickTimeoutMs != DefaultTickTimeoutMs || m.Lease.TermSeconds != DefaultLeaseTermSec ||
			m.Lease.Replicas != DefaultReplicas {
			t.Fatalf("%q: defaults not filled: %+v", in, m)
		}
		for _, c := range KnownCapabilities() {
			if m.Grants(c) {
				t.Fatalf("%q: empty manifest grants %s", in, c)
			}
		}
	}
}

func TestParseManifestGrantsAndCanonical(t *testing.T) {
	in := `{"name":"hb","capabilities":{"log":{"version":1},"clock":{"version":1,"options":{ "a" : 1 }},
		"rand":{"version":1,"options":null}},"resource_limits":{"max_memory_bytes":1048576},"args":"x=1",
		"lease":{"term_seconds":30},"migration_policy":{"enabled":false,"max_price_per_second":5}}`
	m, err := ParseManifest([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Grants(CapLog) || !m.Grants(CapClock) || !m.Grants(CapRand) || m.Grants(CapArgs) {
		t.Fatalf("grants wrong: %+v", m.Capabilities)
	}
	if string(m.Capabilities[CapClock].Options) != `{"a":1}` || m.Capabilities[CapRand].Options != nil {
		t.Fatalf("options not normalised: %s / %s", m.Capabilities[CapClock].Options, m.Capabilities[CapRand].Options)
	}
	c := m.Canonical()
	m2, err := ParseManifest(c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(m2.Canonical(), c) {
		t.Fatalf("canonical form is not stable:\n%s\n%s", c, m2.Canonical())
	}
	if KnownCapabilities()[0] != CapArgs {
		t.Fatalf("KnownCapabilities not sorted: %v", KnownCapabilities())
	}
}

func TestParseManifestRejects(t *testing.T) {
	cases := map[string]string{
		"unknown field":        `{"capabilites":{}}`,
		"unknown capability":   `{"capabilities":{"http":{"version":1}}}`,
		"version 0":            `{"capabilities":{"log":{}}}`,
		"version too new":      `{"capabilities":{"log":{"version":2}}}`,
		"memory over cap":      `{"resource_limits":{"max_memory_bytes":67108865}}`,
		"memory below a page":  `{"resource_limits":{"max_memory_bytes":100}}`,
		"state over cap":       `{"resource_limits":{"max_state_bytes":67108865}}`,
		"tick timeout over":    `{"resource_limits":{"tick_timeout_ms":15001}}`,
		"too many replicas":    `{"lease":{"replicas":7}}`,
		"negative price":       `{"migration_policy":{"max_price_per_second":-1}}`,
		"wrong type":           `{"resource_limits":{"max_memory_bytes":"big"}}`,
		"negative limit":       `{"resource_limits":{"max_memory_bytes":-1}}`,
		"syntax":               `{"name":`,
		"trailing data":        `{} {}`,
		"not an object":        `[1]`,
		"bad options":          `{"capabilities":{"log":{"version":1,"options":{]}}}`,
		"args too long":        `{"args":"` + strings.Repeat("a", MaxArgsBytes+1) + `"}`,
		"manifest too large":   `{"name":"` + strings.Repeat("a", MaxManifestBytes) + `"}`,
		"capabilities as list": `{"capabilities":["log"]}`,
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			m, err := ParseManifest([]byte(in))
			if !errors.Is(err, ErrBadManifest) {
				t.Fatalf("ParseManifest = %+v, %v; want ErrBadManifest", m, err)
			}
		})
	}
	_, err := ParseManifest([]byte(cases["unknown capability"]))
	if err == nil || !strings.Contains(err.Error(), `"http"`) || !strings.Contains(err.Error(), "clock") {
		t.Fatalf("unknown capability error does not name it and the known ones: %v", err)
	}
	_, err = ParseManifest([]byte(cases["unknown field"]))
	if err == nil || !strings.Contains(err.Error(), "capabilites") {
		t.Fatalf("unknown field error does not name it: %v", err)
	}
}

func TestParseManifestErrorDeterministic(t *testing.T) {
	in := []byte(`{"capabilities":{"zeta":{"version":1},"alpha":{"version":1},"mid":{"version":1}}}`)
	_, first := ParseManifest(in)
	for i := 0; i < 20; i++ {
		if _, err := ParseManifest(in); err == nil || err.Error() != first.Error() {
			t.Fatalf("error changed between runs: %v / %v", first, err)
		}
	}
	if !strings.Contains(first.Error(), `"alpha"`) {
		t.Fatalf("error does not name the first bad capability: %v", first)
	}
}
