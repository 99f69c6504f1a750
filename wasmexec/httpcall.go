package wasmexec

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/tetratelabs/wazero/api"
)

// http_request's input limits (the reference's; -2 beyond them).
const (
	maxHTTPMethod  = 16
	maxHTTPURL     = 8192
	maxHTTPHeaders = 32768
	maxHTTPBody    = 1 << 20
	maxRedirects   = 5
	httpUserAgent  = "igor-node"
)

// errHTTPRefused marks a request the http policy stopped after it was
// sent on its way: a redirect to a host not allowed, or a name that
// resolved to a private address. It maps to -3.
var errHTTPRefused = errors.New("refused by the agent's http policy")

// httpPolicy is a granted http capability, ready to check URLs.
type httpPolicy struct {
	anyHost  bool            // allowed_hosts is empty
	exact    map[string]bool // hostKey of the exact entries
	suffixes []string        // ".example.com" for "*.example.com"
	timeout  time.Duration
	maxResp  int
}

func newHTTPPolicy(o agents.HTTPOptions) *httpPolicy {
	p := &httpPolicy{anyHost: len(o.AllowedHosts) == 0, exact: map[string]bool{},
		timeout: time.Duration(o.TimeoutMs) * time.Millisecond, maxResp: int(o.MaxResponseBytes)}
	for _, h := range o.AllowedHosts {
		if s, ok := strings.CutPrefix(h, "*"); ok {
			p.suffixes = append(p.suffixes, s)
		} else {
			p.exact[hostKey(h)] = true
		}
	}
	return p
}

// hostKey is the form in which hosts are compared: lower case, IP
// addresses in canonical text (IPv4-mapped IPv6 as IPv4).
func hostKey(h string) string {
	if a, err := netip.ParseAddr(h); err == nil {
		return a.Unmap().String()
	}
	return strings.ToLower(h)
}

// named reports whether host is literally one of allowed_hosts: only such
// a host may be a private address.
func (p *httpPolicy) named(host string) bool { return p.exact[hostKey(host)] }

func (p *httpPolicy) allows(host string) bool {
	h := hostKey(host)
	if p.anyHost || p.exact[h] {
		return true
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return false // wildcards match names, never addresses
	}
	for _, s := range p.suffixes {
		if len(h) > len(s) && strings.HasSuffix(h, s) {
			return true
		}
	}
	return false
}

// check returns the code for a URL the request would go to: 0, -2 (no
// host) or -3 (scheme, host not allowed, a private address not named).
// The first URL and every redirect are checked; names are checked again
// at dial time (guardedDial), since only then is the address known.
func (p *httpPolicy) check(u *url.URL) (int64, string) {
	switch strings.ToLower(u.Scheme) {
	case "http", "https":
	default:
		return -3, fmt.Sprintf("scheme %q (only http and https)", u.Scheme)
	}
	host := u.Hostname()
	if host == "" {
		return -2, "no host"
	}
	if !p.allows(host) {
		return -3, fmt.Sprintf("host %q is not in allowed_hosts", host)
	}
	if a, err := netip.ParseAddr(host); err == nil && !publicAddr(a) && !p.named(host) {
		return -3, fmt.Sprintf("%s is not a public address and not named in allowed_hosts", host)
	}
	return 0, ""
}

func (p *httpPolicy) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("stopped after %d redirects", maxRedirects)
	}
	if code, why := p.check(req.URL); code != 0 {
		return fmt.Errorf("%w: redirect to %s: %s", errHTTPRefused, req.URL.Host, why)
	}
	return nil
}

// Special-purpose IPv4 blocks refused besides those netip classifies.
var nonPublic4 = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),      // "this network"
	netip.MustParsePrefix("100.64.0.0/10"),  // carrier-grade NAT, often a provider's internal network
	netip.MustParsePrefix("192.0.0.0/24"),   // IETF protocol assignments
	netip.MustParsePrefix("198.18.0.0/15"),  // benchmarking
	netip.MustParsePrefix("240.0.0.0/4"),    // reserved, broadcast
	netip.MustParsePrefix("169.254.0.0/16"), // link-local (metadata services)
}

// IPv6 prefixes that embed an IPv4 address, which must be public too.
var (
	nat64 = netip.MustParsePrefix("64:ff9b::/96")
	six4  = netip.MustParsePrefix("2002::/16")
)

// publicAddr reports whether a is a public unicast address: not loopback,
// private (RFC 1918, fc00::/7), link-local, unspecified, multicast or one
// of the special blocks above.
func publicAddr(a netip.Addr) bool {
	a = a.Unmap()
	if !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	if a.Is4() {
		for _, p := range nonPublic4 {
			if p.Contains(a) {
				return false
			}
		}
		return true
	}
	b := a.As16()
	switch {
	case nat64.Contains(a):
		return publicAddr(netip.AddrFrom4([4]byte(b[12:16])))
	case six4.Contains(a):
		return publicAddr(netip.AddrFrom4([4]byte(b[2:6])))
	}
	return true
}

type policyKey struct{}

// guardedDial dials for the default transport. Unless the request's host
// is named in allowed_hosts, the address actually connected to must be
// public: checked in Control, after DNS, for every address tried, so a
// name that resolves (or re-resolves) to a private address is refused.
func guardedDial(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	p, _ := ctx.Value(policyKey{}).(*httpPolicy)
	d := &net.Dialer{Timeout: 30 * time.Second}
	if p == nil || !p.named(host) {
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil || !publicAddr(ap.Addr()) {
				return fmt.Errorf("%w: %s is at %s, not a public address, and not named in allowed_hosts", errHTTPRefused, host, address)
			}
			return nil
		}
	}
	return d.DialContext(ctx, network, addr)
}

// newHTTPTransport is the Runtime's transport for http_request. No proxy
// (the dial check must see the destination); no keep-alive, so every
// request dials and is checked against its own agent's policy (a pooled
// connection opened for an agent that named a private host must not serve
// another agent).
func newHTTPTransport() *http.Transport {
	return &http.Transport{
		DialContext:            guardedDial,
		DisableKeepAlives:      true,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    10 * time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
}

// httpArgs are http_request's arguments, read and checked.
type httpArgs struct {
	method, rawURL   string
	u                *url.URL
	header           http.Header
	body             []byte
	resp             []byte // the response buffer (a view of guest memory)
	respPtr, respCap uint32
	digest           [32]byte
	code             int64 // the host's verdict before any effect: 0, -2 or -3
	why              string
}

// readHTTPArgs reads and checks http_request's arguments: -2 for inputs
// over the limits, ranges outside memory (the reference has no code for
// that; -2 says "bad arguments"), a malformed method, URL or header line;
// -3 for a scheme or host the policy refuses.
func (i *Instance) readHTTPArgs(mem api.Memory, stack []uint64) httpArgs {
	var a httpArgs
	a.respPtr, a.respCap = uint32(stack[8]), uint32(stack[9])
	lens := [4]uint32{uint32(stack[1]), uint32(stack[3]), uint32(stack[5]), uint32(stack[7])}
	if lens[0] > maxHTTPMethod || lens[1] > maxHTTPURL || lens[2] > maxHTTPHeaders || lens[3] > maxHTTPBody {
		a.code, a.why = -2, "an input over its limit"
		return a
	}
	var in [4][]byte
	for k := range in {
		b, ok := readMem(mem, uint32(stack[2*k]), lens[k])
		if !ok {
			a.code, a.why = -2, "an argument outside memory"
			return a
		}
		in[k] = bytes.Clone(b)
	}
	resp, ok := readMem(mem, a.respPtr, a.respCap)
	if !ok {
		a.code, a.why = -2, "the response buffer outside memory"
		return a
	}
	a.resp = resp
	a.digest = httpDigest(in[0], in[1], in[2], in[3])
	a.method, a.rawURL, a.body = string(in[0]), string(in[1]), in[3]
	if a.method == "" {
		a.method = http.MethodGet // as net/http does
	}
	if !isToken(a.method) || a.method == http.MethodConnect {
		a.code, a.why = -2, "bad method"
		return a
	}
	u, err := url.Parse(a.rawURL)
	if err != nil {
		a.code, a.why = -2, "bad URL"
		return a
	}
	if a.header, ok = parseHeaders(in[2]); !ok {
		a.code, a.why = -2, "a malformed header line"
		return a
	}
	a.u = u
	a.code, a.why = i.httpPolicy.check(u)
	return a
}

// parseHeaders parses "Key: Value\n" lines (the last newline optional).
// A line without a colon, a key that is not an HTTP token, a control
// character in a value, or a header the transport owns is malformed.
func parseHeaders(raw []byte) (http.Header, bool) {
	h := http.Header{}
	if len(raw) == 0 {
		return h, true
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || !isToken(k) {
			return nil, false
		}
		v = strings.Trim(v, " \t")
		for _, c := range []byte(v) {
			if c < 0x20 && c != '\t' || c == 0x7f {
				return nil, false
			}
		}
		switch http.CanonicalHeaderKey(k) {
		case "Host", "Content-Length", "Transfer-Encoding", "Connection", "Te", "Trailer", "Upgrade", "Keep-Alive", "Proxy-Connection":
			return nil, false
		}
		h.Add(k, v)
	}
	return h, true
}

// isToken reports whether s is an HTTP token (RFC 9110 tchar).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// hostHTTPRequest: http_request(method, url, headers, body, resp) -> the
// HTTP status, writing [body_len u32][body] to resp; or -1 transport
// error, -2 bad arguments, -3 refused by the policy, -4 timeout, -5 body
// too large for resp or max_response_bytes (the needed length in resp's
// first 4 bytes).
func (i *Instance) hostHTTPRequest(ctx context.Context, mod api.Module, stack []uint64) {
	mem := mod.Memory()
	a := i.readHTTPArgs(mem, stack)
	var code int64
	var data []byte
	if i.replaying() {
		if a.code != 0 {
			if e := i.replayNext(HTTP); e.Value != a.code {
				i.diverge(HTTP, "the host refuses this request with %d (%s), the log has %d", a.code, a.why, e.Value)
			}
			code = a.code
		} else if e, key, live := i.replayEffect(HTTP, a.digest); !live {
			code, data = e.Value, e.Data
			room := MaxTickLogDataBytes - (i.replay.data - len(data))
			switch {
			case code >= 100 && (4+len(data) > int(a.respCap) || len(data) > i.httpPolicy.maxResp):
				i.diverge(HTTP, "the logged %d-byte body cannot be written to a %d-byte buffer", len(data), a.respCap)
			case code == -5 && int64(binary.LittleEndian.Uint32(data)) <= int64(min(i.httpPolicy.maxResp, room)) && 4+int64(binary.LittleEndian.Uint32(data)) <= int64(a.respCap):
				i.diverge(HTTP, "the log says %d bytes did not fit the %d-byte buffer", binary.LittleEndian.Uint32(data), a.respCap)
			case code == -2:
				i.diverge(HTTP, "the host accepts this request, the log has -2")
			}
		} else {
			code, data = i.doHTTP(ctx, &a, key) // a partial log ended at the intent
			i.record(Observation{Kind: HTTP, Value: code, Data: data})
		}
	} else {
		i.requireTick(HTTP)
		if code = a.code; code == 0 {
			key := i.journal(ctx, HTTP, a.digest, 4)
			code, data = i.doHTTP(ctx, &a, key)
		} else {
			i.rt.logger.Debug("wasmexec: http_request refused", "agent", i.did, "reason", a.why)
		}
		i.record(Observation{Kind: HTTP, Value: code, Data: data})
	}
	switch {
	case code >= 100:
		binary.LittleEndian.PutUint32(a.resp, uint32(len(data)))
		copy(a.resp[4:], data)
	case code == -5:
		putHint(mem, a.respPtr, a.respCap, binary.LittleEndian.Uint32(data))
	}
	stack[0] = api.EncodeI32(int32(code))
}

// doHTTP performs a checked request and returns its result code and the
// data to record: the body, or the 4-byte size hint for -5.
//
// The request gets timeout_ms, but no more than the call's deadline less a
// tenth of it, kept for the guest to handle the outcome: a slow server
// gives -4, not a tick stopped at its deadline. The body is read up to
// max_response_bytes and what the tick log can still hold.
func (i *Instance) doHTTP(ctx context.Context, a *httpArgs, key string) (int64, []byte) {
	p := i.httpPolicy
	// The tick's own time left: the journal waits are the host's (granted on
	// top of the deadline).
	used := time.Since(i.callStart) - time.Duration(i.journalWait.Load())
	timeout := min(p.timeout, i.timeout-i.timeout/10-used)
	if timeout <= 0 {
		return -4, nil
	}
	rctx, cancel := context.WithTimeout(context.WithValue(ctx, policyKey{}, p), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(rctx, a.method, a.rawURL, bytes.NewReader(a.body))
	if err != nil {
		return -1, nil
	}
	req.Header = a.header.Clone()
	req.Header.Set("User-Agent", httpUserAgent)
	if key != "" && req.Header.Get("Idempotency-Key") == "" {
		req.Header.Set("Idempotency-Key", key)
	}
	rt := i.httpRT
	if rt == nil {
		rt = i.rt.httpTransport()
	}
	client := &http.Client{Transport: rt, CheckRedirect: p.checkRedirect}
	resp, err := client.Do(req)
	if err != nil {
		switch {
		case errors.Is(err, errHTTPRefused):
			i.rt.logger.Debug("wasmexec: http_request refused", "agent", i.did, "reason", err)
			return -3, nil
		case rctx.Err() != nil:
			return -4, nil
		}
		return -1, nil
	}
	defer resp.Body.Close()
	if resp.StatusCode < 100 || resp.StatusCode > 999 {
		return -1, nil
	}
	limit := min(p.maxResp, MaxTickLogDataBytes-i.tickLogData)
	body, err := io.ReadAll(io.LimitReader(resp.Body, int64(limit)+1))
	switch {
	case err != nil && rctx.Err() != nil:
		return -4, nil
	case err != nil:
		return -1, nil
	case len(body) > limit:
		return -5, hint(int(min(max(int64(len(body)), resp.ContentLength), 1<<32-1)))
	case 4+len(body) > int(a.respCap):
		return -5, hint(len(body))
	}
	return int64(resp.StatusCode), body
}
