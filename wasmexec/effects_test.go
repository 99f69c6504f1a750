package wasmexec

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
)

// orderServer stands for a service that honours Idempotency-Key: the same
// key gets the same answer ("order N"), a new key a new order.
type orderServer struct {
	mu     sync.Mutex
	orders map[string]int // key -> order number
	seen   map[string]int // key -> requests with it
	paths  []string
	agents []string // User-Agent of each request
}

func newOrderServer(t *testing.T) (*orderServer, *httptest.Server) {
	o := &orderServer{orders: map[string]int{}, seen: map[string]int{}}
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.paths = append(o.paths, r.URL.Path)
		o.agents = append(o.agents, r.Header.Get("User-Agent"))
		key := r.Header.Get("Idempotency-Key")
		o.seen[key]++
		if _, ok := o.orders[key]; !ok || key == "" {
			o.orders[key] = len(o.orders) + 1
		}
		n := o.orders[key]
		o.mu.Unlock()
		switch r.URL.Path {
		case "/slow":
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		case "/big":
			w.Header().Set("Content-Length", "20000")
			w.Write(bytes.Repeat([]byte("b"), 20000))
			return
		case "/redir-same":
			http.Redirect(w, r, "/order", http.StatusFound)
			return
		case "/redir-other": // the same server by another name
			target := "http://localhost/order"
			if _, port, err := net.SplitHostPort(r.Host); err == nil {
				target = "http://localhost:" + port + "/order"
			}
			http.Redirect(w, r, target, http.StatusFound)
			return
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
			return
		}
		fmt.Fprintf(w, "order %d", n)
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	return o, srv
}

func (o *orderServer) hits() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.paths)
}

func (o *orderServer) count(key string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.seen[key]
}

// fetcherManifest is agents/examples/fetcher's manifest with other args and
// http options.
func fetcherManifest(t testing.TB, args, httpOptions string) *agents.Manifest {
	t.Helper()
	return manifestJSON(t, `{"name":"fetcher","capabilities":{"args":{"version":1},"log":{"version":1},
		"pricing":{"version":1},"wallet":{"version":1},"http":{"version":1,"options":%s},
		"x402":{"version":1,"options":{"allowed_recipients":["paywall"],"max_payment_microcents":1000000}}},
		"resource_limits":{"max_state_bytes":65536,"tick_timeout_ms":5000},"args":%q}`, httpOptions, args)
}

const localOnly = `{"allowed_hosts":["127.0.0.1"]}`

// A real agent that fetches and pays: every observation and effect is
// recorded, journaled first, and replays (Replay, ReplayTick) to the same
// state without contacting the server or touching the wallet again.
func TestFetcherRecordAndReplay(t *testing.T) {
	o, srv := newOrderServer(t)
	r := newRuntime(t, Config{})
	m, _ := example(t, r, "fetcher")
	man := fetcherManifest(t, "url="+srv.URL+"/order pay=1000 to=paywall memo=fetch", localOnly)
	if !man.Journal {
		t.Fatal("an agent with http and x402 is not journaled")
	}
	p := &purse{balance: 5000}
	j := &journal{}
	inst := start(t, r, m, effectsConfig(man, p, j), nil)
	pre, logs, post := recordTicks(t, inst, 3)
	for k, l := range logs {
		got := kinds(l)
		want := fmt.Sprintf("tick_time node_price=77 wallet_balance=%d intent(http_request) http_request=200 intent(wallet_pay) wallet_pay=%d wallet_receipt_count=%d wallet_receipt=%d log_emit",
			5000-1000*k, 4+receiptFixedBytes+len("paywall")+len("fetch"), k+1, receiptFixedBytes+len("paywall")+len("fetch"))
		if got != want {
			t.Fatalf("tick %d log:\n got %s\nwant %s", k+1, got, want)
		}
		if _, err := DecodeTickLog(l.Encode()); err != nil {
			t.Fatal(err)
		}
	}
	if string(logs[2].Entries[4].Data) != "order 3" || o.hits() != 3 || slices.ContainsFunc(o.agents, func(s string) bool { return s != "igor-node" }) {
		t.Fatalf("body %q, %d requests, user agents %q", logs[2].Entries[4].Data, o.hits(), o.agents)
	}
	// The runner was asked before each effect, with the intent last in the
	// log it journals; the server saw the key of the intent.
	effects := j.all()
	if len(effects) != 6 {
		t.Fatalf("%d effects journaled, want 6", len(effects))
	}
	for k, e := range effects {
		last := e.Log.Entries[len(e.Log.Entries)-1]
		if e.Call != k%2 || last.Kind != Intent || !bytes.Equal(last.Data, append(e.Digest[:], e.Key...)) {
			t.Fatalf("effect %d: call %d, last entry %+v", k, e.Call, last)
		}
		if k%2 == 0 && (e.Kind != HTTP || o.count(e.Key) != 1) {
			t.Fatalf("effect %d: %s, key %q seen %d times", k, e.Kind, e.Key, o.count(e.Key))
		}
	}
	if effects[0].Key == effects[2].Key {
		t.Fatal("two ticks' requests share an idempotency key")
	}
	if bal, n := p.snapshot(); bal != 2000 || n != 3 {
		t.Fatalf("wallet %d µc, %d receipts", bal, n)
	}

	for k := range pre {
		got, err := r.Replay(bg, m, effectsConfig(man, p, j), pre[k], logs[k])
		if err != nil {
			t.Fatalf("replay tick %d: %v", k+1, err)
		}
		if !bytes.Equal(got, post[k]) {
			t.Fatalf("replay tick %d: state differs", k+1)
		}
	}
	inst2 := start(t, r, m, effectsConfig(man, p, j), pre[0])
	var replayed int64
	for k, l := range logs {
		res, err := inst2.ReplayTick(bg, l, false)
		if err != nil {
			t.Fatalf("ReplayTick %d: %v", k+1, err)
		}
		replayed += res.PaidReplayed
	}
	if st, _ := inst2.Checkpoint(bg); !bytes.Equal(st, post[2]) || replayed != 3000 {
		t.Fatalf("ReplayTick chain: state equal %v, paid %d", bytes.Equal(st, post[2]), replayed)
	}
	if bal, n := p.snapshot(); o.hits() != 3 || len(j.all()) != 6 || bal != 2000 || n != 3 {
		t.Fatal("replay contacted the server, the journal or the wallet")
	}
	// The agent asking for another URL than the one journaled diverges.
	other := fetcherManifest(t, "url="+srv.URL+"/other pay=1000 to=paywall memo=fetch", localOnly)
	if _, err := r.Replay(bg, m, effectsConfig(other, p, j), pre[1], logs[1]); !errors.Is(err, ErrDivergence) || !strings.Contains(err.Error(), "http_request request differs from the journaled one") {
		t.Fatalf("changed request: %v", err)
	}
	// Another amount: the payment's intent differs.
	other = fetcherManifest(t, "url="+srv.URL+"/order pay=999 to=paywall memo=fetch", localOnly)
	if _, err := r.Replay(bg, m, effectsConfig(other, p, j), pre[1], logs[1]); !errors.Is(err, ErrDivergence) || !strings.Contains(err.Error(), "wallet_pay request differs") {
		t.Fatalf("changed payment: %v", err)
	}
}

// The holder died between journaling an effect and recording its result:
// the journal ends with the intent. A new holder replays the prefix and
// performs the effect live with the journaled key — the server sees that
// key twice and answers the same — and the tick comes out as the original:
// the same log bytes and the same state.
func TestPartialReplayPerformsWithJournaledKey(t *testing.T) {
	o, srv := newOrderServer(t)
	r := newRuntime(t, Config{})
	m, _ := example(t, r, "fetcher")
	man := fetcherManifest(t, "url="+srv.URL+"/order pay=1000 to=paywall memo=fetch", localOnly)
	orig := start(t, r, m, effectsConfig(man, &purse{balance: 5000}, &journal{}), nil)
	pre, logs, post := recordTicks(t, orig, 1)
	full := logs[0]
	var intents []int
	for k, e := range full.Entries {
		if e.Kind == Intent {
			intents = append(intents, k)
		}
	}
	httpKey := string(full.Entries[intents[0]].Data[32:])
	for _, cut := range []struct {
		name      string
		at        int // entries kept: through this intent
		server    int // requests the server sees again
		journaled []ObsKind
	}{
		{"after the http intent", intents[0] + 1, 1, []ObsKind{Pay}},
		{"after the payment intent", intents[1] + 1, 0, nil},
	} {
		t.Run(cut.name, func(t *testing.T) {
			hits := o.hits()
			seen := o.count(httpKey)
			p := &purse{balance: 5000} // the wallet as it was before the tick
			j := &journal{}
			inst := start(t, r, m, effectsConfig(man, p, j), pre[0])
			prefix := TickLog{Entries: slices.Clone(full.Entries[:cut.at])}
			if _, err := DecodeTickLog(prefix.Encode()); err != nil {
				t.Fatalf("a log ending with an intent does not decode: %v", err)
			}
			res, err := inst.ReplayTick(bg, prefix, true)
			if err != nil {
				t.Fatal(err)
			}
			if o.hits()-hits != cut.server || o.count(httpKey)-seen != cut.server {
				t.Fatalf("server saw %d more requests, %d more with the journaled key; want %d", o.hits()-hits, o.count(httpKey)-seen, cut.server)
			}
			if !bytes.Equal(res.Log.Encode(), full.Encode()) {
				t.Fatalf("log differs from the original:\n got %s\nwant %s", kinds(res.Log), kinds(full))
			}
			st, err := inst.Checkpoint(bg)
			if err != nil || !bytes.Equal(st, post[0]) {
				t.Fatalf("state differs from the original (%v)", err)
			}
			var got []ObsKind
			for _, e := range j.all() {
				got = append(got, e.Kind)
			}
			if !slices.Equal(got, cut.journaled) {
				t.Fatalf("journaled %v, want %v (the resumed effect is not journaled again)", got, cut.journaled)
			}
			// The payment happened once here (the new holder's wallet), with
			// the original receipt: same inputs, same tick, same bytes.
			if bal, n := p.snapshot(); bal != 4000 || n != 1 || !bytes.Equal(p.Receipts()[0], full.Entries[intents[1]+1].Data) {
				t.Fatalf("wallet %d µc, %d receipts (same receipt: %v)", bal, n, n == 1 && bytes.Equal(p.Receipts()[0], full.Entries[intents[1]+1].Data))
			}
			if res.Paid != 1000 || res.PaidReplayed != 0 {
				t.Fatalf("Paid %d, PaidReplayed %d", res.Paid, res.PaidReplayed)
			}
		})
	}
	// The server answered the repeated key as the first time.
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.seen[httpKey] != 2 || o.orders[httpKey] != 1 || len(o.orders) != 1 {
		t.Fatalf("key seen %d times, orders %v", o.seen[httpKey], o.orders)
	}
}

// fetchOnce runs one fetcher tick against url and returns its log.
func fetchOnce(t *testing.T, r *Runtime, m *Module, url, httpOptions string, rt http.RoundTripper, timeoutMs int) TickResult {
	t.Helper()
	man := fetcherManifest(t, "url="+url, httpOptions)
	if timeoutMs > 0 {
		man.ResourceLimits.TickTimeoutMs = uint64(timeoutMs)
	}
	cfg := effectsConfig(man, &purse{}, &journal{})
	cfg.HTTP = rt
	inst := start(t, r, m, cfg, nil)
	res, err := inst.Tick(bg)
	if err != nil {
		t.Fatalf("%s: %v", url, err)
	}
	return res
}

// httpResults lists the http_request results of a log.
func httpResults(l TickLog) []int64 {
	var out []int64
	for _, e := range l.Entries {
		if e.Kind == HTTP {
			out = append(out, e.Value)
		}
	}
	return out
}

func TestHTTPPolicy(t *testing.T) {
	o, srv := newOrderServer(t)
	_, srv2 := newOrderServer(t)
	port := srv.URL[strings.LastIndexByte(srv.URL, ':')+1:]
	local := "http://localhost:" + port
	r := newRuntime(t, Config{})
	m, _ := example(t, r, "fetcher")
	fake := fakeNet{o.handler(srv)}
	cases := []struct {
		name, url, opts string
		rt              http.RoundTripper
		want            []int64
	}{
		{"listed address", srv.URL + "/order", localOnly, nil, []int64{200}},
		{"port ignored", srv2.URL + "/order", localOnly, nil, []int64{200}},
		{"listed name, any case", "http://LocalHost:" + port + "/order", `{"allowed_hosts":["LOCALHOST"]}`, nil, []int64{200}},
		{"not listed", srv.URL + "/order", `{"allowed_hosts":["example.com"]}`, nil, []int64{-3}},
		{"name listed, address used", srv.URL + "/order", `{"allowed_hosts":["localhost"]}`, nil, []int64{-3}},
		{"private address, empty list", srv.URL + "/order", `{}`, nil, []int64{-3}},
		// Only the dial sees that this name is loopback: the check
		// DNS rebinding cannot get around.
		{"name resolving to loopback, empty list", local + "/order", `{}`, nil, []int64{-3}},
		{"scheme", "ftp://127.0.0.1:" + port + "/", localOnly, nil, []int64{-3}},
		{"file scheme", "file:///etc/passwd", `{}`, nil, []int64{-3}},
		{"redirect to the same host", srv.URL + "/redir-same", localOnly, nil, []int64{200}},
		{"redirect to a host not listed", srv.URL + "/redir-other", localOnly, nil, []int64{-3}},
		{"redirect loop", srv.URL + "/loop", localOnly, nil, []int64{-1}},
		{"wildcard subdomain", "http://a.example.com/order", `{"allowed_hosts":["*.example.com"]}`, fake, []int64{200}},
		{"wildcard deeper, any case", "http://X.Y.Example.COM/order", `{"allowed_hosts":["*.example.com"]}`, fake, []int64{200}},
		{"wildcard is not the apex", "http://example.com/order", `{"allowed_hosts":["*.example.com"]}`, fake, []int64{-3}},
		{"wildcard is a label boundary", "http://aexample.com/order", `{"allowed_hosts":["*.example.com"]}`, fake, []int64{-3}},
		{"wildcard, redirect out", "http://a.example.com/redir-other", `{"allowed_hosts":["*.example.com"]}`, fake, []int64{-3}},
		{"wildcard never matches an address", "http://1.2.3.4/order", `{"allowed_hosts":["*.3.4"]}`, fake, []int64{-3}},
		{"public address, empty list", "http://1.2.3.4/order", `{}`, fake, []int64{200}},
		{"large body: the SDK retries with the hint", srv.URL + "/big", `{"allowed_hosts":["127.0.0.1"],"max_response_bytes":65536}`, nil, []int64{-5, 200}},
		{"body over max_response_bytes", srv.URL + "/big", `{"allowed_hosts":["127.0.0.1"],"max_response_bytes":1000}`, nil, []int64{-5, -5}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			hits := o.hits()
			res := fetchOnce(t, r, m, c.url, c.opts, c.rt, 0)
			if got := httpResults(res.Log); !slices.Equal(got, c.want) {
				t.Fatalf("results %v, want %v (log %s)", got, c.want, kinds(res.Log))
			}
			if c.name == "redirect loop" && o.hits()-hits != 1+maxRedirects {
				t.Fatalf("%d requests for a redirect loop, want %d", o.hits()-hits, 1+maxRedirects)
			}
			if c.want[0] == -3 && c.rt == nil && !strings.Contains(c.name, "redirect") && o.hits() != hits {
				t.Fatal("a refused request reached the server")
			}
		})
	}
	// The size hint: the body's length, then the retry's 20000 bytes.
	res := fetchOnce(t, r, m, srv.URL+"/big", `{"allowed_hosts":["127.0.0.1"],"max_response_bytes":65536}`, nil, 0)
	for _, e := range res.Log.Entries {
		if e.Kind == HTTP && e.Value == -5 && string(e.Data) != string(hint(20000)) {
			t.Fatalf("hint %x, want 20000", e.Data)
		}
		if e.Kind == HTTP && e.Value == 200 && len(e.Data) != 20000 {
			t.Fatalf("body %d bytes", len(e.Data))
		}
	}
}

// handler serves o's paths in process (for fakeNet).
func (o *orderServer) handler(srv *httptest.Server) http.Handler {
	return srv.Config.Handler
}

func TestHTTPTimeouts(t *testing.T) {
	_, srv := newOrderServer(t)
	r := newRuntime(t, Config{})
	m, _ := example(t, r, "fetcher")
	t0 := time.Now()
	res := fetchOnce(t, r, m, srv.URL+"/slow", `{"allowed_hosts":["127.0.0.1"],"timeout_ms":300}`, nil, 0)
	if got := httpResults(res.Log); !slices.Equal(got, []int64{-4}) || time.Since(t0) > 3*time.Second {
		t.Fatalf("timeout_ms 300: %v after %v", got, time.Since(t0))
	}
	// timeout_ms beyond the tick's deadline: the request ends first, with
	// room for the guest to go on; the tick succeeds.
	t0 = time.Now()
	res = fetchOnce(t, r, m, srv.URL+"/slow", `{"allowed_hosts":["127.0.0.1"],"timeout_ms":60000}`, nil, 1000)
	if got := httpResults(res.Log); !slices.Equal(got, []int64{-4}) || time.Since(t0) > 3*time.Second {
		t.Fatalf("tick deadline 1 s: %v after %v", got, time.Since(t0))
	}
	t.Logf("a request cut by the 1 s tick deadline: tick took %v", res.Elapsed)
}

func TestEffectImportNotGranted(t *testing.T) {
	r := newRuntime(t, Config{})
	m, _ := example(t, r, "fetcher")
	for capName, imp := range map[string]string{agents.CapX402: "wallet_pay", agents.CapHTTP: "http_request", agents.CapWallet: "wallet_", agents.CapPricing: "node_price"} {
		man := fetcherManifest(t, "", localOnly)
		delete(man.Capabilities, capName)
		_, err := r.Instantiate(bg, m, InstanceConfig{Manifest: man})
		if !errors.Is(err, ErrImportNotGranted) || !strings.Contains(err.Error(), "import igor."+imp) || !strings.Contains(err.Error(), fmt.Sprintf("capability %q", capName)) {
			t.Fatalf("without %s: %v", capName, err)
		}
	}
}

// A journal that fails: the call's instance dies, nothing is done.
func TestBeforeEffectFailure(t *testing.T) {
	o, srv := newOrderServer(t)
	r := newRuntime(t, Config{})
	m, _ := example(t, r, "fetcher")
	man := fetcherManifest(t, "url="+srv.URL+"/order", localOnly)
	quorum := errors.New("no custody majority")
	p := &purse{balance: 5000}
	inst := start(t, r, m, effectsConfig(man, p, &journal{err: quorum}), nil)
	res, err := inst.Tick(bg)
	if !errors.Is(err, ErrTrap) || !errors.Is(err, quorum) || !strings.Contains(err.Error(), "http_request was not performed") {
		t.Fatalf("err = %v", err)
	}
	if o.hits() != 0 {
		t.Fatal("the request was sent")
	}
	if l := res.Log.Entries; l[len(l)-1].Kind == Intent {
		t.Fatalf("the failed intent stayed in the log: %s", kinds(res.Log))
	}
	if _, err := inst.Tick(bg); !errors.Is(err, ErrInstanceDead) {
		t.Fatalf("after: %v", err)
	}
	// A key other than the intent's is refused the same way.
	bad := effectsConfig(man, p, nil)
	bad.BeforeEffect = func(context.Context, Effect) (string, error) { return "mine", nil }
	inst = start(t, r, m, bad, nil)
	if _, err := inst.Tick(bg); !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), `returned key "mine"`) {
		t.Fatalf("other key: %v", err)
	}
}

func TestPublicAddr(t *testing.T) {
	for s, want := range map[string]bool{
		"8.8.8.8": true, "1.2.3.4": true, "2001:4860:4860::8888": true,
		"127.0.0.1": false, "::1": false, "10.1.2.3": false, "172.16.0.1": false, "192.168.1.1": false,
		"169.254.169.254": false, "fe80::1": false, "fc00::1": false, "fd12::1": false, "0.0.0.0": false,
		"::": false, "224.0.0.1": false, "ff02::1": false, "255.255.255.255": false, "100.64.0.1": false,
		"::ffff:127.0.0.1": false, "::ffff:8.8.8.8": true, "64:ff9b::a00:1": false, "64:ff9b::808:808": true,
		"2002:c0a8:101::1": false, "198.18.0.1": false, "0.1.2.3": false,
	} {
		if got := publicAddr(netip.MustParseAddr(s)); got != want {
			t.Errorf("publicAddr(%s) = %v, want %v", s, got, want)
		}
	}
}

// The dial-time check on its own: an address the policy does not name is
// refused after resolution; a named one connects.
func TestGuardedDial(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	for _, c := range []struct {
		host, allowed string
		ok            bool
	}{
		{"127.0.0.1", "127.0.0.1", true},
		{"localhost", "localhost", true},
		{"localhost", "", false},
		{"localhost", "*.localhost", false},
		{"127.0.0.1", "localhost", false},
	} {
		var o agents.HTTPOptions
		if c.allowed != "" {
			o.AllowedHosts = []string{c.allowed}
		}
		ctx := context.WithValue(bg, policyKey{}, newHTTPPolicy(o))
		conn, err := guardedDial(ctx, "tcp", net.JoinHostPort(c.host, port))
		if c.ok != (err == nil) || (err != nil && !errors.Is(err, errHTTPRefused)) {
			t.Errorf("dial %s with %q allowed: %v", c.host, c.allowed, err)
		}
		if conn != nil {
			conn.Close()
		}
	}
}

// Without a BeforeEffect there is no key and no Idempotency-Key header;
// the POST's body and Content-Type reach the server.
func TestHTTPBodyAndHeaders(t *testing.T) {
	var mu sync.Mutex
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		got = append(got, r.Method+" "+r.Header.Get("Content-Type")+" "+string(b)+" "+r.Header.Get("Idempotency-Key"))
	}))
	defer srv.Close()
	r := newRuntime(t, Config{})
	m, _ := example(t, r, "fetcher")
	man := fetcherManifest(t, "url="+srv.URL+"/x post=1", localOnly)
	inst := start(t, r, m, effectsConfig(man, &purse{}, nil), nil)
	if _, err := inst.Tick(bg); err != nil {
		t.Fatal(err)
	}
	// No BeforeEffect: no key, no Idempotency-Key header.
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "POST text/plain tick=1 " {
		t.Fatalf("server got %q", got)
	}
}

// The wait for an intent's commit is the host's time: it neither counts
// toward the tick's deadline nor is billed (TickResult.Elapsed).
func TestJournalWaitIsNotTheAgentsTime(t *testing.T) {
	r := newRuntime(t, Config{})
	m, _ := example(t, r, "fetcher")
	o, srv := newOrderServer(t)
	man := fetcherManifest(t, "url="+srv.URL+"/order", localOnly)
	man.ResourceLimits.TickTimeoutMs = 300
	cfg := effectsConfig(man, &purse{balance: 5000}, nil)
	cfg.BeforeEffect = func(_ context.Context, e Effect) (string, error) {
		time.Sleep(400 * time.Millisecond) // a slow commit at the custody group
		return e.Key, nil
	}
	inst := start(t, r, m, cfg, nil)
	res, err := inst.Tick(bg)
	if err != nil {
		t.Fatalf("a 400 ms journal wait in a tick with a 300 ms deadline: %v", err)
	}
	if res.Elapsed >= 300*time.Millisecond {
		t.Fatalf("billed %v for a tick whose own work took far less than the wait", res.Elapsed)
	}
	if o.hits() != 1 {
		t.Fatalf("%d requests", o.hits())
	}
}
