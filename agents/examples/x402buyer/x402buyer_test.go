//go:build !wasip1

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

func newBuyer() sdk.Agent { return &Buyer{} }

const (
	testArgs  = "url=http://shop.test/paid/report to=paywall max=5000"
	content   = "the report"
	shopTerms = `{"recipient": "paywall", "amount": 1000, "memo": "paywall:report"}`
)

// shop is a paywall for the mock: 402 with its terms unless the request
// carries X-Payment, which paid decides on. It keeps what it was sent.
type shop struct {
	terms    string
	paid     func(receipt []byte) (int, string) // status and body for a request with a receipt
	free     bool                               // answer 200 without a receipt
	receipts [][]byte                           // the X-Payment receipts presented, decoded
}

func newShop() *shop {
	return &shop{terms: shopTerms, paid: func([]byte) (int, string) { return 200, content }}
}

func (s *shop) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := r.Header.Get("X-Payment")
	switch {
	case h != "":
		rc, err := base64.StdEncoding.DecodeString(h)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		s.receipts = append(s.receipts, rc)
		code, body := s.paid(rc)
		w.WriteHeader(code)
		w.Write([]byte(body))
	case s.free:
		w.Write([]byte(content))
	default:
		w.WriteHeader(402)
		w.Write([]byte(s.terms))
	}
}

func state(t *testing.T, b []byte) Buyer {
	t.Helper()
	var s Buyer
	s.Unmarshal(b)
	return s
}

func TestBuyerPaysAndFetches(t *testing.T) {
	defer sdk.SetBackend(nil)
	s := newShop()
	m := mock.New(1).SetArgs(testArgs).SetBalance(10_000).SetHTTPHandler(s)
	st, err := m.Drive(newBuyer, 3)
	if err != nil {
		t.Fatal(err)
	}
	b := state(t, st)
	want := Buyer{Ticks: 3, Bought: 3, Payments: 3, Spent: 3000, LastStatus: 200, LastHash: sha256.Sum256([]byte(content))}
	if b.cfg = (config{}); !equal(b, want) {
		t.Fatalf("state %+v, want %+v", b, want)
	}
	pays := m.Payments()
	if len(pays) != 3 {
		t.Fatalf("payments %+v", pays)
	}
	for _, p := range pays {
		if p.Amount != 1000 || p.Recipient != "paywall" || p.Memo != "paywall:report" || p.Result <= 0 {
			t.Fatalf("payment %+v", p)
		}
	}
	// Each purchase: a bare GET, then one GET with the receipt the wallet
	// keeps, base64 in X-Payment; nothing else.
	calls, rs := m.HTTPCalls(), m.Receipts()
	if len(calls) != 6 || len(s.receipts) != 3 {
		t.Fatalf("%d requests, %d with receipts", len(calls), len(s.receipts))
	}
	for k, c := range calls {
		if c.Method != "GET" || c.URL != "http://shop.test/paid/report" {
			t.Fatalf("request %d: %s %s", k, c.Method, c.URL)
		}
		if hdr := c.Header.Get("X-Payment"); (k%2 == 0) != (hdr == "") {
			t.Fatalf("request %d: X-Payment %q", k, hdr)
		}
	}
	for k, r := range s.receipts {
		if !bytes.Equal(r, rs[k]) {
			t.Fatalf("receipt %d presented differs from the wallet's", k)
		}
		if p, err := sdk.ParseReceipt(r); err != nil || p.Amount != 1000 || p.Recipient != "paywall" || p.Memo != "paywall:report" {
			t.Fatalf("receipt %d: %+v %v", k, p, err)
		}
	}
	if logs := m.Logs(); len(logs) != 3 || logs[2] != "tick=3 status=200 bought paid=1000 spent=3000 hash=14e4cce8" {
		t.Fatalf("logs %q", logs)
	}
}

func equal(a, b Buyer) bool {
	return bytes.Equal(a.Marshal(), b.Marshal())
}

// Terms it will not pay are refused before any payment.
func TestBuyerRefusesTerms(t *testing.T) {
	defer sdk.SetBackend(nil)
	for _, tc := range []struct{ terms, log string }{
		{`{"recipient": "mallory", "amount": 1000, "memo": ""}`, `refused: recipient "mallory" is not "paywall"`},
		{`{"recipient": "paywall", "amount": 5001, "memo": ""}`, "refused: amount 5001 is over max=5000"},
		{`{"recipient": "paywall", "amount": 0, "memo": ""}`, "refused: amount 0 is not positive"},
		{`{"recipient": "paywall", "amount": -5, "memo": ""}`, "refused: amount -5 is not positive"},
		{`{"recipient": "paywall", "amount": 10.5}`, "refused: bad terms: json: cannot unmarshal number 10.5"},
		{`pay me`, "refused: bad terms: invalid character"},
		{`{"recipient": "paywall", "amount": 1, "memo": "` + strings.Repeat("m", 513) + `"}`, "refused: memo over 512 bytes"},
	} {
		s := newShop()
		s.terms = tc.terms
		m := mock.New(1).SetArgs(testArgs).SetBalance(10_000).SetHTTPHandler(s)
		st, err := m.Drive(newBuyer, 2)
		if err != nil {
			t.Fatal(err)
		}
		b := state(t, st)
		if b.Refused != 2 || b.Payments != 0 || b.Spent != 0 || b.Bought != 0 || b.LastStatus != 402 || len(m.Payments()) != 0 || len(m.HTTPCalls()) != 2 {
			t.Fatalf("terms %s: state %+v, %d payments", tc.terms, b, len(m.Payments()))
		}
		if logs := m.Logs(); !strings.HasPrefix(logs[1], "tick=2 status=402 "+tc.log) {
			t.Fatalf("terms %s: log %q, want prefix %q", tc.terms, logs[1], tc.log)
		}
	}
}

// A payment the host refuses costs nothing and is not followed by a GET.
func TestBuyerPayErrors(t *testing.T) {
	defer sdk.SetBackend(nil)
	for _, tc := range []struct {
		balance int64
		policy  int32 // the host's verdict (0: accept)
		code    int32
	}{
		{500, 0, -1},     // balance below the amount
		{10_000, -3, -3}, // recipient not in allowed_recipients
		{10_000, -4, -4}, // over max_payment_microcents
	} {
		m := mock.New(1).SetArgs(testArgs).SetBalance(tc.balance).SetHTTPHandler(newShop()).
			SetPayHandler(func(mock.Payment) int32 { return tc.policy })
		st, err := m.Drive(newBuyer, 2)
		if err != nil {
			t.Fatal(err)
		}
		b := state(t, st)
		if b.PayFailed != 2 || b.PayErr != tc.code || b.Payments != 0 || b.Spent != 0 || len(b.Pending) != 0 || len(m.HTTPCalls()) != 2 {
			t.Fatalf("code %d: state %+v, %d requests", tc.code, b, len(m.HTTPCalls()))
		}
		if len(m.Receipts()) != 0 {
			t.Fatalf("code %d: receipts kept", tc.code)
		}
	}
}

// tick runs one tick on a fresh instance resumed from st, as a host that
// restarts the agent does, after setup.
func tick(m *mock.Mock, st []byte, setup func()) []byte {
	setup()
	b := &Buyer{}
	b.Init()
	b.Unmarshal(bytes.Clone(st))
	b.Tick()
	return b.Marshal()
}

// Paid but not delivered: the receipt stays pending and the next ticks
// present it again — through a 503 and a transport error — without paying
// again, until the resource comes.
func TestBuyerPendingReceipt(t *testing.T) {
	defer sdk.SetBackend(nil)
	s := newShop()
	down := true
	s.paid = func([]byte) (int, string) {
		if down {
			return 503, "busy"
		}
		return 200, content
	}
	m := mock.New(1).SetArgs(testArgs).SetBalance(10_000).SetHTTPHandler(s).Install()
	st := tick(m, nil, func() {})
	b := state(t, st)
	if b.Payments != 1 || b.Failed != 1 || b.LastStatus != 503 || len(b.Pending) == 0 || b.Bought != 0 {
		t.Fatalf("after a 503: %+v", b)
	}
	receipt := bytes.Clone(b.Pending)
	st = tick(m, st, func() { m.SetHTTPCode(-1) })
	if b = state(t, st); b.Failed != 2 || b.LastStatus != -1 || !bytes.Equal(b.Pending, receipt) {
		t.Fatalf("after a transport error: %+v", b)
	}
	st = tick(m, st, func() { m.SetHTTPCode(0); down = false })
	b = state(t, st)
	if b.Bought != 1 || b.Payments != 1 || b.Spent != 1000 || len(b.Pending) != 0 || b.LastHash != sha256.Sum256([]byte(content)) {
		t.Fatalf("after delivery: %+v", b)
	}
	if len(m.Payments()) != 1 || len(s.receipts) != 2 || !bytes.Equal(s.receipts[1], receipt) {
		t.Fatalf("%d payments, %d receipts presented", len(m.Payments()), len(s.receipts))
	}
	calls := m.HTTPCalls()
	// tick 1: bare GET, GET+receipt; tick 2: GET+receipt (-1); tick 3: GET+receipt.
	if len(calls) != 4 || calls[2].Result != -1 || calls[3].Header.Get("X-Payment") != calls[1].Header.Get("X-Payment") {
		t.Fatalf("requests %+v", calls)
	}
	// The next tick is a new purchase.
	st = tick(m, st, func() {})
	if b = state(t, st); b.Bought != 2 || b.Payments != 2 || len(m.Payments()) != 2 {
		t.Fatalf("next purchase: %+v", b)
	}
}

// A receipt the server refuses is dropped, not paid again in that tick;
// the next tick is a new purchase.
func TestBuyerReceiptRejected(t *testing.T) {
	defer sdk.SetBackend(nil)
	s := newShop()
	s.paid = func([]byte) (int, string) { return 402, shopTerms }
	m := mock.New(1).SetArgs(testArgs).SetBalance(10_000).SetHTTPHandler(s)
	st, err := m.Drive(newBuyer, 3)
	if err != nil {
		t.Fatal(err)
	}
	b := state(t, st)
	if b.Rejected != 3 || b.Payments != 3 || b.Bought != 0 || len(b.Pending) != 0 || len(m.Payments()) != 3 || len(m.HTTPCalls()) != 6 {
		t.Fatalf("state %+v, %d payments, %d requests", b, len(m.Payments()), len(m.HTTPCalls()))
	}
	if logs := m.Logs(); logs[0] != "tick=1 status=402 paid=1000 receipt rejected: status 402" {
		t.Fatalf("log %q", logs[0])
	}
}

func TestBuyerFreeAndFailures(t *testing.T) {
	defer sdk.SetBackend(nil)
	s := newShop()
	s.free = true
	m := mock.New(1).SetArgs(testArgs).SetHTTPHandler(s)
	st, err := m.Drive(newBuyer, 2)
	if err != nil {
		t.Fatal(err)
	}
	if b := state(t, st); b.Free != 2 || b.Payments != 0 || b.LastHash != sha256.Sum256([]byte(content)) {
		t.Fatalf("free: %+v", b)
	}
	m = mock.New(1).SetArgs(testArgs).SetHTTPHandler(http.NotFoundHandler())
	if st, err = m.Drive(newBuyer, 2); err != nil {
		t.Fatal(err)
	}
	if b := state(t, st); b.Failed != 2 || b.LastStatus != 404 || b.Payments != 0 {
		t.Fatalf("404: %+v", b)
	}
	m = mock.New(1).SetArgs(testArgs).SetHTTPCode(-4)
	if st, err = m.Drive(newBuyer, 2); err != nil {
		t.Fatal(err)
	}
	if b := state(t, st); b.Failed != 2 || b.LastStatus != -4 || b.Payments != 0 {
		t.Fatalf("timeout: %+v", b)
	}
}

func TestBuyerDeterministic(t *testing.T) {
	defer sdk.SetBackend(nil)
	run := func(price string) []byte {
		s := newShop()
		s.terms = `{"recipient": "paywall", "amount": ` + price + `, "memo": "m"}`
		st, err := mock.New(1).SetArgs(testArgs).SetBalance(10_000).SetHTTPHandler(s).Drive(newBuyer, 4)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	a, b, c := run("700"), run("700"), run("800")
	if !bytes.Equal(a, b) || bytes.Equal(a, c) {
		t.Fatal("state is not a function of the observations")
	}
}

func TestBuyerArgs(t *testing.T) {
	for _, bad := range []string{"", "url=http://a/ to=p", "url=http://a/ max=5", "to=p max=5", "url=http://a/ to=p max=0",
		"url=http://a/ to=p max=-1", "url=http://a/ to=p max=x", "url=ftp://a/ to=p max=1", "url=http://a/ to=p max=1 k=v", "junk"} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("args %q accepted", bad)
		}
	}
	c, err := parseArgs("url=http://a/x to=p max=7")
	if err != nil || c != (config{url: "http://a/x", to: "p", max: 7}) {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestBuyerRejectsCorruptState(t *testing.T) {
	good := (&Buyer{Ticks: 1, Pending: []byte{1, 2, 3}}).Marshal()
	if b := state(t, good); !bytes.Equal(b.Pending, []byte{1, 2, 3}) || b.Ticks != 1 {
		t.Fatalf("round trip %+v", b)
	}
	for name, b := range map[string][]byte{"truncated": good[:len(good)-1], "trailing": append(bytes.Clone(good), 0), "version": append([]byte{9}, good[1:]...)} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r, _ := recover().(string); !strings.Contains(r, "x402buyer:") {
					t.Fatalf("panic %v, want an x402buyer error", r)
				}
			}()
			(&Buyer{}).Unmarshal(b)
		})
	}
}

// Whatever the server and the network do, a tick pays at most once, never
// while a receipt is pending, and every payment ends up bought, rejected
// or pending.
func TestBuyerAtMostOnePaymentPerTick(t *testing.T) {
	defer sdk.SetBackend(nil)
	s := newShop()
	var mode string
	s.paid = func([]byte) (int, string) {
		switch mode {
		case "503":
			return 503, "busy"
		case "reject":
			return 402, shopTerms
		}
		return 200, content
	}
	m := mock.New(1).SetArgs(testArgs).SetBalance(1_000_000_000).SetHTTPHandler(s).Install()
	modes := []string{"ok", "503", "503", "ok", "reject", "down", "503", "down", "ok", "free", "badterms", "ok"}
	var st []byte
	rng := rand.New(rand.NewPCG(1, 2))
	for k := range 200 {
		mode = modes[rng.IntN(len(modes))]
		before, pendingBefore := len(m.Payments()), len(state(t, st).Pending) > 0
		st = tick(m, st, func() {
			s.free, s.terms = mode == "free", shopTerms
			if mode == "badterms" {
				s.terms = "{"
			}
			code := int32(0)
			if mode == "down" {
				code = -1
			}
			m.SetHTTPCode(code)
		})
		b := state(t, st)
		paid := len(m.Payments()) - before
		if paid > 1 || pendingBefore && paid != 0 {
			t.Fatalf("tick %d (%s): %d payments, pending before: %v", k+1, mode, paid, pendingBefore)
		}
		pending := uint64(0)
		if len(b.Pending) > 0 {
			pending = 1
		}
		if b.Payments != b.Bought+b.Rejected+pending || b.Spent != 1000*int64(b.Payments) || int(b.Payments) != len(m.Payments()) {
			t.Fatalf("tick %d (%s): %+v", k+1, mode, b)
		}
	}
	if b := state(t, st); b.Bought == 0 || b.Rejected == 0 || b.Free == 0 || b.Refused == 0 || b.Failed == 0 {
		t.Fatalf("the schedule missed a case: %+v", b)
	}
}
