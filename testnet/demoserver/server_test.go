package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func newTestServer(t *testing.T) (*server, *httptest.Server, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	s := newServer("paywall", 1000, log.New(logs, "", 0))
	ts := httptest.NewServer(s.handler())
	t.Cleanup(ts.Close)
	return s, ts, logs
}

// syncBuffer is a bytes.Buffer the server's handlers may write to
// concurrently.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// do sends a request and returns the status, the body and the response.
func do(t *testing.T, method, url string, hdr map[string]string, body string) (int, string, *http.Response) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b), resp
}

func decode[T any](t *testing.T, s string) T {
	t.Helper()
	var v T
	dec := json.NewDecoder(strings.NewReader(s))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("decode %q: %v", s, err)
	}
	return v
}

func TestPrice(t *testing.T) {
	_, ts, logs := newTestServer(t)
	seen := map[float64]bool{}
	for n := uint64(1); n <= 41; n++ {
		code, body, resp := do(t, "GET", ts.URL+"/price", nil, "")
		p := decode[map[string]float64](t, body)
		if code != 200 || len(p) != 1 || p["price"] != priceAt(n) || resp.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("request %d: %d %q", n, code, body)
		}
		if p["price"] < 100 || p["price"] > 110 {
			t.Fatalf("price %v out of range", p["price"])
		}
		seen[p["price"]] = true
	}
	if len(seen) != 41 {
		t.Fatalf("%d distinct prices in a period of 41", len(seen))
	}
	if priceAt(1) != 109.25 || priceAt(2) != 108.25 || priceAt(42) != priceAt(1) {
		t.Fatalf("prices %v %v %v", priceAt(1), priceAt(2), priceAt(42))
	}
	if code, _, _ := do(t, "POST", ts.URL+"/price", nil, ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /price: %d", code)
	}
	ts.Close() // waits for the handlers, which log after answering
	if n := strings.Count(logs.String(), "GET /price 200"); n != 41 {
		t.Fatalf("%d log lines for 41 requests:\n%s", n, logs)
	}
}

// receipt builds a payment receipt the way the host does (docs/ABI.md),
// written out here independently of the SDK's parser.
func receipt(key ed25519.PrivateKey, amount int64, recipient, memo string) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(amount))
	b = binary.LittleEndian.AppendUint64(b, uint64(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(recipient)))
	b = append(b, recipient...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(memo)))
	b = append(b, memo...)
	b = append(b, key.Public().(ed25519.PublicKey)...)
	return append(b, ed25519.Sign(key, b)...)
}

func payment(r []byte) map[string]string {
	return map[string]string{"X-Payment": base64.StdEncoding.EncodeToString(r)}
}

var agentKey = ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))

func TestPaywall(t *testing.T) {
	s, ts, _ := newTestServer(t)
	url := ts.URL + "/paid/report"
	code, body, _ := do(t, "GET", url, nil, "")
	if tm := decode[terms](t, body); code != 402 || tm != (terms{Recipient: "paywall", Amount: 1000, Memo: "paywall:report"}) {
		t.Fatalf("no payment: %d %q", code, body)
	}
	good := receipt(agentKey, 1000, "paywall", "paywall:report")
	code, body, _ = do(t, "GET", url, payment(good), "")
	if code != 200 || body != s.content("report") {
		t.Fatalf("paid: %d %q", code, body)
	}
	// The same receipt again: the content again, no second sale.
	for range 2 {
		if code, body, _ = do(t, "GET", url, payment(good), ""); code != 200 || body != s.content("report") {
			t.Fatalf("replayed receipt: %d %q", code, body)
		}
	}
	// A second receipt (another tick, so another time) is another sale;
	// paying more than the price is fine.
	more := receipt(agentKey, 2500, "paywall", "paywall:report")
	more[8]++ // another time: the signature must be redone
	more = append(more[:len(more)-64], ed25519.Sign(agentKey, more[:len(more)-64])...)
	if code, _, _ = do(t, "GET", url, payment(more), ""); code != 200 {
		t.Fatalf("second receipt: %d", code)
	}
	otherKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
	forged := bytes.Clone(good)
	copy(forged[len(forged)-96:], otherKey.Public().(ed25519.PublicKey)) // another key, the old signature
	tampered := bytes.Clone(good)
	tampered[0] = 0xff // the amount, under the signature
	for _, tc := range []struct {
		name, item string
		hdr        string
		err        string
	}{
		{"bad base64", "report", "!!!", errBadBase64.Error()},
		{"truncated", "report", base64.StdEncoding.EncodeToString(good[:len(good)-1]), "sdk: malformed receipt"},
		{"trailing", "report", base64.StdEncoding.EncodeToString(append(bytes.Clone(good), 0)), "sdk: malformed receipt"},
		{"tampered", "report", base64.StdEncoding.EncodeToString(tampered), errBadSignature.Error()},
		{"another key", "report", base64.StdEncoding.EncodeToString(forged), errBadSignature.Error()},
		{"zero signature", "report", base64.StdEncoding.EncodeToString(append(bytes.Clone(good[:len(good)-64]), make([]byte, 64)...)), errBadSignature.Error()},
		{"other recipient", "report", payment(receipt(agentKey, 1000, "mallory", "paywall:report"))["X-Payment"], errRecipient.Error()},
		{"other item", "summary", payment(good)["X-Payment"], errMemo.Error()},
		{"under price", "report", payment(receipt(agentKey, 999, "paywall", "paywall:report"))["X-Payment"], errAmount.Error()},
	} {
		code, body, _ := do(t, "GET", ts.URL+"/paid/"+tc.item, map[string]string{"X-Payment": tc.hdr}, "")
		tm := decode[terms](t, body)
		if code != 402 || !strings.HasPrefix(tm.Error, tc.err) || tm.Memo != "paywall:"+tc.item || tm.Amount != 1000 {
			t.Errorf("%s: %d %q, want 402 with error %q", tc.name, code, body, tc.err)
		}
	}
	if code, _, _ = do(t, "GET", ts.URL+"/paid/a%20b", nil, ""); code != 404 {
		t.Fatalf("bad item: %d", code)
	}
	_, body, _ = do(t, "GET", ts.URL+"/sales", nil, "")
	want := salesReport{Recipient: "paywall", Price: 1000, Sales: map[string]int64{"report": 2}, Total: 2, Revenue: 3500, Replays: 2, Rejected: 9}
	if got := decode[salesReport](t, body); got.Total != want.Total || got.Revenue != want.Revenue || got.Replays != want.Replays ||
		got.Rejected != want.Rejected || len(got.Sales) != 1 || got.Sales["report"] != 2 || got.Recipient != want.Recipient || got.Price != want.Price {
		t.Fatalf("sales %+v, want %+v", got, want)
	}
}

// Many buyers presenting the same receipt at once: one sale.
func TestPaywallConcurrentReplays(t *testing.T) {
	_, ts, _ := newTestServer(t)
	hdr := payment(receipt(agentKey, 1000, "paywall", "paywall:x"))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			if code, _, _ := do(t, "GET", ts.URL+"/paid/x", hdr, ""); code != 200 {
				t.Errorf("status %d", code)
			}
		})
	}
	wg.Wait()
	_, body, _ := do(t, "GET", ts.URL+"/sales", nil, "")
	if got := decode[salesReport](t, body); got.Total != 1 || got.Replays != 15 || got.Revenue != 1000 {
		t.Fatalf("sales %+v", got)
	}
}

func TestCountIdempotency(t *testing.T) {
	s, ts, logs := newTestServer(t)
	url := ts.URL + "/count"
	key := map[string]string{"Idempotency-Key": "igor-k1"}
	code, first, resp := do(t, "POST", url, key, `{"tick":1}`)
	if code != 200 || first != `{"applied":true,"n":1}`+"\n" || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first: %d %q", code, first)
	}
	// The same key: the same response, byte for byte, nothing applied;
	// also with another body, which is kept for the test to see.
	for _, body := range []string{`{"tick":1}`, `{"tick":99}`} {
		code, again, resp := do(t, "POST", url, key, body)
		if code != 200 || again != first || resp.Header.Get("Idempotent-Replayed") != "true" {
			t.Fatalf("repeat: %d %q", code, again)
		}
	}
	// Without a key every request is applied.
	for n := 2; n <= 3; n++ {
		if _, body, _ := do(t, "POST", url, nil, `{}`); body != `{"applied":true,"n":`+strconv.Itoa(n)+"}\n" {
			t.Fatalf("no key: %q", body)
		}
	}
	if _, body, _ := do(t, "POST", url, map[string]string{"Idempotency-Key": "igor-k2"}, `{"tick":2}`); body != `{"applied":true,"n":4}`+"\n" {
		t.Fatalf("second key: %q", body)
	}
	_, body, _ := do(t, "GET", ts.URL+"/count/stats", nil, "")
	if got := decode[countStats](t, body); got != (countStats{Applied: 4, DuplicatesSeen: 2, Keys: 2, WithoutKey: 2}) {
		t.Fatalf("stats %+v", got)
	}
	_, body, _ = do(t, "GET", ts.URL+"/count/keys", nil, "")
	type keys struct {
		Keys []keyReport `json:"keys"`
	}
	got := decode[keys](t, body)
	if len(got.Keys) != 2 || got.Keys[0].Key != "igor-k1" || strings.Join(got.Keys[0].Bodies, "|") != `{"tick":1}|{"tick":1}|{"tick":99}` ||
		got.Keys[1].Key != "igor-k2" || len(got.Keys[1].Bodies) != 1 {
		t.Fatalf("keys %+v", got)
	}
	if code, _, _ := do(t, "POST", url, key, strings.Repeat("x", maxCountBody+1)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("big body: %d", code)
	}
	if code, _, _ := do(t, "GET", url, nil, ""); code != http.StatusMethodNotAllowed {
		t.Fatalf("GET /count: %d", code)
	}
	if s.stats().Applied != 4 {
		t.Fatal("a refused request was applied")
	}
	ts.Close()
	if !strings.Contains(logs.String(), "POST /count 200 23B key=igor-k1\n") {
		t.Fatalf("log:\n%s", logs)
	}
}

// Concurrent requests with one key: exactly one is applied, and all get
// its response.
func TestCountConcurrentKey(t *testing.T) {
	_, ts, _ := newTestServer(t)
	var wg sync.WaitGroup
	bodies := make([]string, 16)
	for k := range bodies {
		wg.Go(func() {
			_, bodies[k], _ = do(t, "POST", ts.URL+"/count", map[string]string{"Idempotency-Key": "same"}, "b")
		})
	}
	wg.Wait()
	for _, b := range bodies {
		if b != `{"applied":true,"n":1}`+"\n" {
			t.Fatalf("responses %q", bodies)
		}
	}
	_, body, _ := do(t, "GET", ts.URL+"/count/stats", nil, "")
	if got := decode[countStats](t, body); got != (countStats{Applied: 1, DuplicatesSeen: 15, Keys: 1}) {
		t.Fatalf("stats %+v", got)
	}
}

func TestParseArgs(t *testing.T) {
	c, err := parseArgs(nil)
	if err != nil || c != (config{addr: "127.0.0.1:8402", name: "paywall", price: 1000}) {
		t.Fatalf("defaults %+v %v", c, err)
	}
	c, err = parseArgs([]string{"--addr", "127.0.0.1:0", "--name=shop", "-price", "7"})
	if err != nil || c != (config{addr: "127.0.0.1:0", name: "shop", price: 7}) {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range [][]string{{"--price", "0"}, {"--price", "x"}, {"--name", ""}, {"--name", strings.Repeat("n", 257)}, {"extra"}, {"--bogus"}} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"--price", "-1"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--price") {
		t.Fatalf("bad usage: %d %q", code, errb.String())
	}
	if code := run(context.Background(), []string{"--help"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "GET  /paid/ITEM") {
		t.Fatalf("--help: %d", code)
	}
}

// run serves on a free port, prints where, and returns 0 once its context
// ends.
func TestRunServesAndStops(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	var errb syncBuffer
	done := make(chan int, 1)
	go func() { done <- run(ctx, []string{"--addr", "127.0.0.1:0"}, pw, &errb) }()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "listening http://127.0.0.1:") {
		t.Fatalf("first line %q %v", line, err)
	}
	go io.Copy(io.Discard, pr)
	base := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
	if code, body, _ := do(t, "GET", base+"/price", nil, ""); code != 200 || !strings.Contains(body, "109.25") {
		t.Fatalf("%d %q", code, body)
	}
	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errb.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not stop")
	}
	if _, err := http.Get(base + "/price"); err == nil {
		t.Fatal("still serving after shutdown")
	}
}

// The built program stops on SIGTERM and on SIGINT with status 0.
func TestSignals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the program")
	}
	bin := filepath.Join(t.TempDir(), "igor-demo-server")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		cmd := exec.Command(bin, "--addr", "127.0.0.1:0")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr syncBuffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(stdout).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "listening http://127.0.0.1:") {
			cmd.Process.Kill()
			t.Fatalf("first line %q %v", line, err)
		}
		base := strings.TrimSpace(strings.TrimPrefix(line, "listening "))
		do(t, "GET", base+"/price", nil, "")
		cmd.Process.Signal(sig)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("%v: %v\n%s", sig, err, stderr.String())
		}
		if out := stderr.String(); !strings.Contains(out, "GET /price 200") || !strings.Contains(out, "stopped") {
			t.Fatalf("%v: log\n%s", sig, out)
		}
	}
}
