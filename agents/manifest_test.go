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
		"unknown capability":   `{"capabilities":{"kv":{"version":1}}}`,
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
	if err == nil || !strings.Contains(err.Error(), `"kv"`) || !strings.Contains(err.Error(), "clock") {
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

// Manifests written before the effect capabilities existed keep their
// canonical bytes, and so their CIDs (genesis blocks link them).
func TestCanonicalUnchangedForOlderManifests(t *testing.T) {
	m, err := ParseManifest([]byte(`{"name":"hb","capabilities":{"log":{"version":1},"clock":{"version":1,"options":{ "b" : 1, "a": [2] }}},"resource_limits":{"tick_timeout_ms":500},"args":"x=1","migration_policy":{"enabled":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	// Computed by the code before this change.
	const golden = `{"name":"hb","capabilities":{"clock":{"version":1,"options":{"b":1,"a":[2]}},"log":{"version":1}},"resource_limits":{"max_memory_bytes":67108864,"max_state_bytes":16777216,"tick_timeout_ms":500},"args":"x=1","lease":{"term_seconds":60,"replicas":2},"migration_policy":{"enabled":true}}`
	if got := string(m.Canonical()); got != golden {
		t.Fatalf("canonical bytes changed:\n got %s\nwant %s", got, golden)
	}
	if m.Journal {
		t.Fatal("journal set for an agent without effects")
	}
}

func TestEffectCapabilityOptions(t *testing.T) {
	m, err := ParseManifest([]byte(`{"capabilities":{
		"http":{"version":1,"options":{"max_response_bytes":2048,"allowed_hosts":["API.Example.com","*.Example.org","[::1]","127.0.0.1"]}},
		"x402":{"version":1,"options":{"allowed_recipients":["bob"],"max_payment_microcents":5}},
		"wallet":{"version":1,"options":{}},"pricing":{"version":1}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if !m.Journal {
		t.Fatal("an agent with http and x402 is not journaled")
	}
	if got := string(m.Capabilities[CapHTTP].Options); got != `{"allowed_hosts":["api.example.com","*.example.org","::1","127.0.0.1"],"timeout_ms":10000,"max_response_bytes":2048}` {
		t.Fatalf("http options not canonical: %s", got)
	}
	h, err := m.HTTPOptions()
	if err != nil || h.TimeoutMs != DefaultHTTPTimeoutMs || h.MaxResponseBytes != 2048 || len(h.AllowedHosts) != 4 {
		t.Fatalf("HTTPOptions = %+v, %v", h, err)
	}
	x, err := m.X402Options()
	if err != nil || x.MaxPaymentMicrocents != 5 || len(x.AllowedRecipients) != 1 {
		t.Fatalf("X402Options = %+v, %v", x, err)
	}
	c := m.Canonical()
	m2, err := ParseManifest(c)
	if err != nil || !bytes.Equal(m2.Canonical(), c) {
		t.Fatalf("canonical form not stable (%v):\n%s\n%s", err, c, m2.Canonical())
	}
	// Defaults without options; a journal asked for by an agent without effects.
	m, err = ParseManifest([]byte(`{"capabilities":{"http":{"version":1}},"journal":false}`))
	if err != nil || string(m.Capabilities[CapHTTP].Options) != `{"timeout_ms":10000,"max_response_bytes":1048576}` || !m.Journal {
		t.Fatalf("defaults: %s journal=%v %v", m.Capabilities[CapHTTP].Options, m.Journal, err)
	}
	m, err = ParseManifest([]byte(`{"capabilities":{"log":{"version":1}},"journal":true}`))
	if err != nil || !m.Journal || !strings.Contains(string(m.Canonical()), `"journal":true`) {
		t.Fatalf("journal not kept: %v", err)
	}
	// Not granted: defaults.
	if h, err := m.HTTPOptions(); err != nil || h.TimeoutMs != DefaultHTTPTimeoutMs {
		t.Fatalf("HTTPOptions of a manifest without http = %+v, %v", h, err)
	}
}

func TestEffectCapabilityOptionsRejected(t *testing.T) {
	cases := map[string]struct{ in, field string }{
		"unknown http option":  {`{"http":{"version":1,"options":{"allowed_host":[]}}}`, `unknown field "allowed_host"`},
		"hosts not a list":     {`{"http":{"version":1,"options":{"allowed_hosts":"a.com"}}}`, "capabilities.http.options.allowed_hosts"},
		"host with port":       {`{"http":{"version":1,"options":{"allowed_hosts":["a.com:80"]}}}`, "allowed_hosts[0]"},
		"host with scheme":     {`{"http":{"version":1,"options":{"allowed_hosts":["ok.com","https://a.com"]}}}`, "allowed_hosts[1]"},
		"bare wildcard":        {`{"http":{"version":1,"options":{"allowed_hosts":["*"]}}}`, "allowed_hosts[0]"},
		"inner wildcard":       {`{"http":{"version":1,"options":{"allowed_hosts":["a.*.com"]}}}`, "allowed_hosts[0]"},
		"empty host":           {`{"http":{"version":1,"options":{"allowed_hosts":[""]}}}`, "allowed_hosts[0]"},
		"timeout type":         {`{"http":{"version":1,"options":{"timeout_ms":"5s"}}}`, "capabilities.http.options.timeout_ms"},
		"timeout negative":     {`{"http":{"version":1,"options":{"timeout_ms":-1}}}`, "capabilities.http.options.timeout_ms"},
		"timeout over":         {`{"http":{"version":1,"options":{"timeout_ms":60001}}}`, "timeout_ms 60001"},
		"response over":        {`{"http":{"version":1,"options":{"max_response_bytes":4194305}}}`, "max_response_bytes 4194305"},
		"response fraction":    {`{"http":{"version":1,"options":{"max_response_bytes":1.5}}}`, "max_response_bytes"},
		"http options list":    {`{"http":{"version":1,"options":[1]}}`, "capabilities.http.options"},
		"unknown x402 option":  {`{"x402":{"version":1,"options":{"max_payment":1}}}`, `unknown field "max_payment"`},
		"negative max payment": {`{"x402":{"version":1,"options":{"max_payment_microcents":-5}}}`, "max_payment_microcents"},
		"empty recipient":      {`{"x402":{"version":1,"options":{"allowed_recipients":[""]}}}`, "allowed_recipients[0]"},
		"recipients type":      {`{"x402":{"version":1,"options":{"allowed_recipients":[1]}}}`, "allowed_recipients"},
		"wallet options":       {`{"wallet":{"version":1,"options":{"a":1}}}`, `"wallet" takes no options`},
		"pricing options":      {`{"pricing":{"version":1,"options":{"a":1}}}`, `"pricing" takes no options`},
		"http version 2":       {`{"http":{"version":2}}`, "version 2"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ParseManifest([]byte(`{"capabilities":` + c.in + `}`))
			if !errors.Is(err, ErrBadManifest) || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("err = %v, want ErrBadManifest naming %q", err, c.field)
			}
		})
	}
}
