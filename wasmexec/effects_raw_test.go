package wasmexec

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
)

// Every wallet, pricing and payment result code, through the raw ABI,
// recorded and then replayed (Replay and ReplayTick) to the same state.
func TestWalletHostcallsEveryCode(t *testing.T) {
	r := newRuntime(t, Config{})
	var l layout
	l.next = 4096
	rcpt := l.reserve(256)
	bob, bobN := l.str("bob")
	carol, carolN := l.str("carol")
	eve, eveN := l.str("eve")
	hi, hiN := l.str("hi")
	long, longN := l.put(bytes.Repeat([]byte("r"), 257))
	memo, memoN := l.put(bytes.Repeat([]byte("m"), 513))
	small := l.reserve(64)
	rcpt2 := l.reserve(256)
	out := int64(1 << 20) // outside the module's 2 pages
	calls := []rawCall{
		rc("wallet_balance"),                                     // 0: 1000
		rc("wallet_receipt_count"),                               // 1: 1
		rc("wallet_receipt", 0, rcpt, 256),                       // 2: 50
		rc("wallet_receipt", 1, rcpt, 256),                       // 3: -1
		rc("wallet_receipt", -1, rcpt, 256),                      // 4: -1
		rc("wallet_receipt", 0, small, 10),                       // 5: -4, hint 50
		rc("wallet_receipt", 0, out, 64),                         // 6: -4, outside memory
		rc("node_price"),                                         // 7: 77
		rc("wallet_pay", 100, long, longN, hi, hiN, rcpt, 256),   // 8: -2 recipient too long
		rc("wallet_pay", 100, bob, 0, hi, hiN, rcpt, 256),        // 9: -2 empty recipient
		rc("wallet_pay", 100, bob, bobN, memo, memoN, rcpt, 256), // 10: -2 memo too long
		rc("wallet_pay", 0, bob, bobN, hi, hiN, rcpt, 256),       // 11: -6 amount
		rc("wallet_pay", 100, out, bobN, hi, hiN, rcpt, 256),     // 12: -6 memory
		rc("wallet_pay", 600, bob, bobN, hi, hiN, rcpt, 256),     // 13: -4 over max
		rc("wallet_pay", 100, eve, eveN, hi, hiN, rcpt, 256),     // 14: -3 recipient
		rc("wallet_pay", 100, bob, bobN, hi, hiN, small, 50),     // 15: -5, hint 125
		rc("wallet_pay", 100, bob, bobN, hi, hiN, small, 2),      // 16: -5, no room for the hint
		rc("wallet_pay", 100, bob, bobN, hi, hiN, rcpt, 256),     // 17: 129
		rc("wallet_pay", 500, carol, carolN, 0, 0, rcpt+160, 96), // 18: -5 (needs 129)
		rc("wallet_pay", 500, carol, carolN, 0, 0, out, 0),       // 19: -5 (cap 0; pointer unused)
		rc("wallet_pay", 500, carol, carolN, 0, 0, rcpt2, 129),   // 20: 129
		rc("wallet_pay", 450, bob, bobN, 0, 0, rcpt, 256),        // 21: -1 balance 400
		rc("wallet_balance"),                                     // 22: 400
		rc("wallet_receipt_count"),                               // 23: 3
	}
	m := rawModule(t, r, "wallet-codes", 1, calls, nil, l.segs...)
	man := manifestJSON(t, `{"capabilities":{"wallet":{"version":1},"pricing":{"version":1},
		"x402":{"version":1,"options":{"allowed_recipients":["bob","carol"],"max_payment_microcents":500}}}}`)
	old := bytes.Repeat([]byte{0xaa}, 50)
	p := &purse{balance: 1000, receipts: [][]byte{old}}
	j := &journal{}
	inst := start(t, r, m, effectsConfig(man, p, j), nil)
	pre, err := inst.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := inst.Tick(bg)
	if err != nil {
		t.Fatal(err)
	}
	post, err := inst.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{1000, 1, 50, -1, -1, -4, -4, 77, -2, -2, -2, -6, -6, -4, -3, -5, -5, 129, -5, -5, 129, -1, 400, 3}
	for k, w := range want {
		got := int64(i32At(post, k))
		if c := calls[k].name; c == "wallet_balance" || c == "node_price" {
			got = i64At(post, k)
		}
		if got != w {
			t.Errorf("call %d (%s): %d, want %d", k, calls[k].name, got, w)
		}
	}
	// The buffers: small holds call 15's hint (after call 5's), rcpt and
	// rcpt2 the two receipts as [len u32][receipt].
	if n := binary.LittleEndian.Uint32(post[small:]); n != 125 {
		t.Errorf("small buffer holds %d, want the hint 125", n)
	}
	for k, at := range []int64{rcpt, rcpt2} {
		n := int64(binary.LittleEndian.Uint32(post[at:]))
		if n != 125 || !bytes.Equal(post[at+4:at+4+n], p.Receipts()[1+k]) {
			t.Errorf("receipt %d not written as [len][receipt]", k)
		}
	}
	if bal, n := p.snapshot(); bal != 400 || n != 3 {
		t.Fatalf("wallet: balance %d, %d receipts; want 400 and 3", bal, n)
	}
	for k, pay := range []struct {
		amount int64
		to     string
	}{{100, "bob"}, {500, "carol"}} {
		rec := p.Receipts()[1+k]
		got, ok := parseReceipt(rec)
		if !ok || got.amount != pay.amount || string(got.recipient) != pay.to || got.time != res.Log.Entries[0].Value {
			t.Fatalf("receipt %d: %+v (ok %v), want %d µc to %s at the tick time", k, got, ok, pay.amount, pay.to)
		}
		if !bytes.Equal(rec[len(rec)-96:len(rec)-64], agentKey.Public().(ed25519.PublicKey)) || !ed25519.Verify(agentKey.Public().(ed25519.PublicKey), rec[:len(rec)-64], rec[len(rec)-64:]) {
			t.Fatalf("receipt %d: key or signature wrong", k)
		}
	}
	t.Logf("log: %s", kinds(res.Log))
	if res.Paid != 600 || res.PaidReplayed != 0 {
		t.Fatalf("Paid %d, PaidReplayed %d; want 600, 0", res.Paid, res.PaidReplayed)
	}
	if got := kinds(res.Log); !strings.Contains(got, "wallet_pay=-3 wallet_pay=-5 wallet_pay=-5 intent(wallet_pay) wallet_pay=129") ||
		!strings.Contains(got, "wallet_pay=-5 intent(wallet_pay) wallet_pay=129 wallet_pay=-1 wallet_balance=400") {
		t.Fatalf("log %s", got)
	}
	if e := j.all(); len(e) != 2 || e[0].Call != 0 || e[1].Call != 1 || e[1].Digest != payDigest(500, []byte("carol"), nil) {
		t.Fatalf("journaled %+v", e)
	}
	dec, err := DecodeTickLog(res.Log.Encode())
	if err != nil || !bytes.Equal(dec.Encode(), res.Log.Encode()) {
		t.Fatalf("round trip: %v", err)
	}
	receipts, total := res.Log.PaidReceipts()
	if total != 600 || len(receipts) != 2 || !bytes.Equal(receipts[1], p.Receipts()[2]) {
		t.Fatalf("PaidReceipts: %d receipts, %d µc", len(receipts), total)
	}

	// Replay: the same state, nothing paid, no journal.
	got, err := r.Replay(bg, m, effectsConfig(man, p, j), pre, res.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, post) {
		t.Fatalf("replay state differs at byte %d", firstDiffAt(got, post))
	}
	inst2 := start(t, r, m, effectsConfig(man, p, j), pre)
	res2, err := inst2.ReplayTick(bg, res.Log, false)
	if err != nil {
		t.Fatal(err)
	}
	if res2.Paid != 600 || res2.PaidReplayed != 600 {
		t.Fatalf("ReplayTick: Paid %d, PaidReplayed %d", res2.Paid, res2.PaidReplayed)
	}
	if bal, n := p.snapshot(); bal != 400 || n != 3 || len(j.all()) != 2 {
		t.Fatalf("replay touched the wallet (%d, %d receipts) or the journal (%d)", bal, n, len(j.all()))
	}
	// A buffer that cannot have produced the log is a divergence: the same
	// calls with call 5's buffer large enough for the receipt.
	calls2 := append([]rawCall(nil), calls...)
	calls2[5] = rc("wallet_receipt", 0, small, 64)
	m2 := rawModule(t, r, "wallet-codes-2", 1, calls2, nil, l.segs...)
	if _, err := r.Replay(bg, m2, effectsConfig(man, p, j), pre, res.Log); !errors.Is(err, ErrDivergence) || !strings.Contains(err.Error(), "too small") {
		t.Fatalf("bigger buffer: %v", err)
	}
	// Another recipient in a replayed payment: the intent's digest differs.
	calls3 := append([]rawCall(nil), calls...)
	calls3[20] = rc("wallet_pay", 500, bob, bobN, 0, 0, rcpt2, 129)
	m3 := rawModule(t, r, "wallet-codes-3", 1, calls3, nil, l.segs...)
	if _, err := r.Replay(bg, m3, effectsConfig(man, p, j), pre, res.Log); !errors.Is(err, ErrDivergence) || !strings.Contains(err.Error(), "wallet_pay request differs from the journaled one") {
		t.Fatalf("other recipient: %v", err)
	}
	// Without a journal (no intents) a changed payment is caught by its receipt.
	inst3 := start(t, r, m, effectsConfig(man, &purse{balance: 1000, receipts: [][]byte{old}}, nil), nil)
	res3, err := inst3.Tick(bg)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(kinds(res3.Log), "intent") {
		t.Fatalf("intents without BeforeEffect: %s", kinds(res3.Log))
	}
	if _, err := r.Replay(bg, m3, effectsConfig(man, p, nil), pre, res3.Log); !errors.Is(err, ErrDivergence) || !strings.Contains(err.Error(), "another payment") {
		t.Fatalf("other recipient, no intent: %v", err)
	}
}

func firstDiffAt(a, b []byte) int {
	for k := range min(len(a), len(b)) {
		if a[k] != b[k] {
			return k
		}
	}
	return min(len(a), len(b))
}

// A nil Wallet: balance 0, no receipts, payments -1.
func TestNilWallet(t *testing.T) {
	r := newRuntime(t, Config{})
	var l layout
	l.next = 4096
	bob, bobN := l.str("bob")
	buf := l.reserve(256)
	m := rawModule(t, r, "nil-wallet", 1, []rawCall{
		rc("wallet_balance"), rc("wallet_receipt_count"), rc("wallet_receipt", 0, buf, 256),
		rc("wallet_pay", 1, bob, bobN, 0, 0, buf, 256), rc("node_price"),
	}, nil, l.segs...)
	man := manifestJSON(t, `{"capabilities":{"wallet":{"version":1},"pricing":{"version":1},"x402":{"version":1}}}`)
	inst := start(t, r, m, InstanceConfig{Manifest: man}, nil)
	res, err := inst.Tick(bg)
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(res.Log); got != "tick_time wallet_balance=0 wallet_receipt_count=0 wallet_receipt=-1 wallet_pay=-1 node_price=0" {
		t.Fatalf("log %s", got)
	}
}

// Effects happen only in ticks: agent_init runs again on every load and
// replay. Observations outside a tick are answered, as the clock is.
func TestEffectsOutsideTickTrap(t *testing.T) {
	r := newRuntime(t, Config{})
	var l layout
	l.next = 4096
	bob, bobN := l.str("bob")
	u, uN := l.str("http://127.0.0.1:1/")
	buf := l.reserve(256)
	man := manifestJSON(t, `{"capabilities":{"wallet":{"version":1},"pricing":{"version":1},"x402":{"version":1},"http":{"version":1}}}`)
	ok := rawModule(t, r, "init-observes", 1, nil, []rawCall{rc("wallet_balance"), rc("node_price"), rc("wallet_receipt_count")}, l.segs...)
	inst := start(t, r, ok, effectsConfig(man, &purse{balance: 5}, nil), nil)
	st, err := inst.Checkpoint(bg)
	if err != nil || i64At(st, 0) != 5 || i64At(st, 1) != 77 {
		t.Fatalf("observations in init: %v", err)
	}
	for name, c := range map[string]rawCall{
		"wallet_pay":   rc("wallet_pay", 1, bob, bobN, 0, 0, buf, 256),
		"http_request": rc("http_request", 0, 0, u, uN, 0, 0, 0, 0, buf, 256),
	} {
		m := rawModule(t, r, "init-"+name, 1, nil, []rawCall{c}, l.segs...)
		p := &purse{balance: 5}
		_, err := r.Instantiate(bg, m, effectsConfig(man, p, nil))
		if !errors.Is(err, ErrTrap) || !strings.Contains(err.Error(), name+" called outside agent_tick") {
			t.Fatalf("%s in agent_init: %v", name, err)
		}
		if bal, _ := p.snapshot(); bal != 5 {
			t.Fatal("paid outside a tick")
		}
	}
}

// Every http_request result code through the raw ABI, including the input
// checks the SDK never trips, recorded and replayed.
func TestHTTPHostcallEveryCode(t *testing.T) {
	var mu sync.Mutex
	var hitList []string
	hits := func() []string { mu.Lock(); defer mu.Unlock(); return slices.Clone(hitList) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		mu.Lock()
		hitList = append(hitList, req.Method+" "+req.URL.Path+" "+req.Header.Get("Idempotency-Key"))
		mu.Unlock()
		if req.Header.Get("User-Agent") != "igor-node" {
			w.WriteHeader(400)
			return
		}
		w.WriteHeader(202)
		w.Write([]byte("hello" + req.Header.Get("X-A") + req.Header.Get("X-B") + string(body)))
	}))
	defer srv.Close()
	r := newRuntime(t, Config{})
	var l layout
	l.next = 4096
	get, getN := l.str("GET")
	post, postN := l.str("POST")
	u, uN := l.str(srv.URL + "/hello")
	noHost, noHostN := l.str("http:///x")
	ftp, ftpN := l.str("ftp://127.0.0.1/")
	other, otherN := l.str("http://example.com/")
	bad, badN := l.str("NoColon\n")
	host, hostN := l.str("Host: x\n")
	ctrl, ctrlN := l.str("X-A: a\x01\n")
	hdrs, hdrsN := l.str("X-A: 1\nX-B:  2 ")
	space, spaceN := l.str("GE T")
	body, bodyN := l.str("!")
	resp := l.reserve(256)
	small := l.reserve(16)
	out := int64(1 << 20)
	h := func(mp, ml, up, ul, hp, hl, bp, bl, rp, rcap int64) rawCall {
		return rc("http_request", mp, ml, up, ul, hp, hl, bp, bl, rp, rcap)
	}
	calls := []rawCall{
		h(get, 17, u, uN, 0, 0, 0, 0, resp, 256),                   // 0: -2 method too long
		h(get, getN, u, 8193, 0, 0, 0, 0, resp, 256),               // 1: -2 URL too long
		h(get, getN, u, uN, 0, 32769, 0, 0, resp, 256),             // 2: -2 headers too long
		h(get, getN, u, uN, 0, 0, 0, 1<<20+1, resp, 256),           // 3: -2 body too long
		h(out, getN, u, uN, 0, 0, 0, 0, resp, 256),                 // 4: -2 method outside memory
		h(get, getN, u, uN, 0, 0, 0, 0, out, 256),                  // 5: -2 buffer outside memory
		h(get, getN, u, uN, bad, badN, 0, 0, resp, 256),            // 6: -2 header without a colon
		h(get, getN, u, uN, host, hostN, 0, 0, resp, 256),          // 7: -2 Host is the transport's
		h(get, getN, u, uN, ctrl, ctrlN, 0, 0, resp, 256),          // 8: -2 control character
		h(space, spaceN, u, uN, 0, 0, 0, 0, resp, 256),             // 9: -2 method not a token
		h(get, getN, noHost, noHostN, 0, 0, 0, 0, resp, 256),       // 10: -2 no host
		h(get, getN, ftp, ftpN, 0, 0, 0, 0, resp, 256),             // 11: -3 scheme
		h(get, getN, other, otherN, 0, 0, 0, 0, resp, 256),         // 12: -3 host not allowed
		h(get, getN, u, uN, 0, 0, 0, 0, resp, 256),                 // 13: 202 "hello"
		h(get, getN, u, uN, 0, 0, 0, 0, small, 2),                  // 14: -5, no room for the hint
		h(get, getN, u, uN, 0, 0, 0, 0, small, 8),                  // 15: -5, hint 5
		h(post, postN, u, uN, hdrs, hdrsN, body, bodyN, resp, 256), // 16: 202 "hello12!"
		h(0, 0, u, uN, 0, 0, 0, 0, small, 16),                      // 17: 202, empty method = GET
	}
	m := rawModule(t, r, "http-codes", 1, calls, nil, l.segs...)
	man := manifestJSON(t, `{"capabilities":{"http":{"version":1,"options":{"allowed_hosts":["127.0.0.1"]}}},"resource_limits":{"tick_timeout_ms":10000}}`)
	j := &journal{}
	inst := start(t, r, m, effectsConfig(man, nil, j), nil)
	pre, err := inst.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	res, err := inst.Tick(bg)
	if err != nil {
		t.Fatal(err)
	}
	st, err := inst.Checkpoint(bg)
	if err != nil {
		t.Fatal(err)
	}
	want := []int32{-2, -2, -2, -2, -2, -2, -2, -2, -2, -2, -2, -3, -3, 202, -5, -5, 202, 202}
	for k, w := range want {
		if got := i32At(st, k); got != w {
			t.Errorf("call %d: %d, want %d", k, got, w)
		}
	}
	if got := string(st[resp+4 : resp+4+int64(binary.LittleEndian.Uint32(st[resp:]))]); got != "hello12!" {
		t.Errorf("response buffer holds %q", got)
	}
	if n := binary.LittleEndian.Uint32(st[small:]); n != 5 {
		t.Errorf("small buffer: %d, want call 17's body length 5", n)
	}
	t.Logf("log: %s", kinds(res.Log))
	if h := hits(); len(h) != 5 || !strings.HasPrefix(h[0], "GET /hello igor-") || h[3] != "POST /hello "+j.all()[3].Key {
		t.Fatalf("server saw %q", h)
	}
	if got := kinds(res.Log); !strings.HasSuffix(got, "http_request=-3 http_request=-3 intent(http_request) http_request=202 intent(http_request) http_request=-5 intent(http_request) http_request=-5 intent(http_request) http_request=202 intent(http_request) http_request=202") {
		t.Fatalf("log %s", got)
	}
	got, err := r.Replay(bg, m, effectsConfig(man, nil, j), pre, res.Log)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, st) || len(hits()) != 5 || len(j.all()) != 5 {
		t.Fatalf("replay: state equal %v, server hits %d, journaled %d", bytes.Equal(got, st), len(hits()), len(j.all()))
	}
	// A response buffer too small for the recorded body is a divergence.
	calls2 := append([]rawCall(nil), calls...)
	calls2[13] = h(get, getN, u, uN, 0, 0, 0, 0, small, 8)
	m2 := rawModule(t, r, "http-codes-2", 1, calls2, nil, l.segs...)
	if _, err := r.Replay(bg, m2, effectsConfig(man, nil, j), pre, res.Log); !errors.Is(err, ErrDivergence) || !strings.Contains(err.Error(), "cannot be written to a 8-byte buffer") {
		t.Fatalf("small buffer in replay: %v", err)
	}
	// A request with other headers: the journaled digest differs.
	calls3 := append([]rawCall(nil), calls...)
	calls3[16] = h(post, postN, u, uN, hdrs, hdrsN-1, body, bodyN, resp, 256)
	m3 := rawModule(t, r, "http-codes-3", 1, calls3, nil, l.segs...)
	if _, err := r.Replay(bg, m3, effectsConfig(man, nil, j), pre, res.Log); !errors.Is(err, ErrDivergence) || !strings.Contains(err.Error(), "http_request request differs from the journaled one") {
		t.Fatalf("changed headers in replay: %v", err)
	}
}
