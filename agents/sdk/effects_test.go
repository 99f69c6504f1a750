//go:build !wasip1

package sdk_test

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

// counting wraps a Mock to see the buffer sizes the wrappers pass.
type counting struct {
	*mock.Mock
	httpBufs, payBufs, rcptBufs []int
}

func (c *counting) HTTPRequest(method, url string, headers, body, resp []byte) int32 {
	c.httpBufs = append(c.httpBufs, len(resp))
	return c.Mock.HTTPRequest(method, url, headers, body, resp)
}

func (c *counting) WalletPay(amount int64, recipient, memo string, receipt []byte) int32 {
	c.payBufs = append(c.payBufs, len(receipt))
	return c.Mock.WalletPay(amount, recipient, memo, receipt)
}

func (c *counting) WalletReceipt(index int32, buf []byte) int32 {
	c.rcptBufs = append(c.rcptBufs, len(buf))
	return c.Mock.WalletReceipt(index, buf)
}

func TestHTTPRequestRetriesWithTheHint(t *testing.T) {
	big := bytes.Repeat([]byte("y"), 20000)
	c := &counting{Mock: mock.New(1).SetHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if r.URL.Path == "/big" {
			w.Write(big)
			return
		}
		w.WriteHeader(201)
		w.Write([]byte(r.Method + " " + r.Header.Get("A") + r.Header.Get("B") + " " + string(b)))
	}))}
	sdk.SetBackend(c)
	defer sdk.SetBackend(nil)

	status, body, err := sdk.HTTPRequest("PUT", "http://x/echo", map[string]string{"B": "2", "A": "1"}, []byte("hi"))
	if err != nil || status != 201 || string(body) != "PUT 12 hi" {
		t.Fatalf("HTTPRequest = %d %q %v", status, body, err)
	}
	if len(c.httpBufs) != 1 || c.httpBufs[0] != 8<<10 {
		t.Fatalf("buffers %v, want one of 8 KiB", c.httpBufs)
	}
	status, body, err = sdk.HTTPGet("http://x/big")
	if err != nil || status != 200 || !bytes.Equal(body, big) {
		t.Fatalf("HTTPGet of 20000 bytes = %d, %d bytes, %v", status, len(body), err)
	}
	if len(c.httpBufs) != 3 || c.httpBufs[2] != 4+len(big) {
		t.Fatalf("buffers %v, want a retry of 4+%d bytes", c.httpBufs, len(big))
	}
	// Headers go out sorted, so a request always has the same bytes.
	calls := c.HTTPCalls()
	if calls[0].Header.Get("A") != "1" || calls[0].Result != 201 || calls[1].Result != -5 || calls[2].Result != 200 {
		t.Fatalf("calls %+v", calls)
	}
	status, body, err = sdk.HTTPPost("http://x/echo", "text/plain", []byte("p"))
	if err != nil || string(body) != "POST  p" || c.HTTPCalls()[3].Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("HTTPPost = %d %q %v", status, body, err)
	}
	// Over max_response_bytes: -5 again after the retry.
	c.SetMaxResponseBytes(100)
	if _, _, err := sdk.HTTPGet("http://x/big"); !errors.Is(err, sdk.ErrHTTPTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	for code, want := range map[int32]error{-1: sdk.ErrHTTPTransport, -2: sdk.ErrHTTPBadRequest, -3: sdk.ErrHTTPNotAllowed, -4: sdk.ErrHTTPTimeout, -9: sdk.ErrHTTPTransport} {
		c.SetHTTPCode(code)
		if _, _, err := sdk.HTTPGet("http://x/"); !errors.Is(err, want) || !strings.Contains(err.Error(), "code") {
			t.Errorf("code %d: err %v, want %v", code, err, want)
		}
	}
}

func TestWalletPayAndReceipts(t *testing.T) {
	c := &counting{Mock: mock.New(1).SetBalance(1000).SetPrice(7)}
	sdk.SetBackend(c)
	defer sdk.SetBackend(nil)
	if sdk.WalletBalance() != 1000 || sdk.NodePrice() != 7 || sdk.WalletReceiptCount() != 0 {
		t.Fatal("balance, price or count wrong")
	}
	r, err := sdk.WalletPay(300, "bob", "coffee")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := sdk.ParseReceipt(r)
	if err != nil || rc.Amount != 300 || rc.Recipient != "bob" || rc.Memo != "coffee" || rc.TimeNs != mock.StartUnixNano || len(rc.AgentKey) != 32 || len(rc.Signature) != 64 {
		t.Fatalf("receipt %+v, %v", rc, err)
	}
	if sdk.WalletBalance() != 700 || sdk.WalletReceiptCount() != 1 {
		t.Fatal("payment not debited or not kept")
	}
	got, err := sdk.WalletReceipt(0)
	if err != nil || !bytes.Equal(got, r) {
		t.Fatalf("WalletReceipt(0) = %x, %v", got, err)
	}
	if _, err := sdk.WalletReceipt(1); !errors.Is(err, sdk.ErrNoReceipt) {
		t.Fatalf("WalletReceipt(1): %v", err)
	}
	// A memo that makes the receipt larger than 1 KiB: retried with the hint.
	memo := strings.Repeat("m", 500)
	long := strings.Repeat("r", 256)
	r2, err := sdk.WalletPay(1, long, memo)
	if err != nil || len(r2) != 120+256+500 {
		t.Fatalf("long payment: %d bytes, %v", len(r2), err)
	}
	if len(c.payBufs) != 2 {
		t.Fatalf("pay buffers %v, want 1 KiB only (876 bytes fit)", c.payBufs)
	}
	// A receipt over the 1 KiB first buffer of WalletReceipt is retried.
	c.AddReceipt(bytes.Repeat([]byte{1}, 3000))
	if got, err := sdk.WalletReceipt(2); err != nil || len(got) != 3000 || len(c.rcptBufs) != 4 || c.rcptBufs[3] != 3000 {
		t.Fatalf("large receipt: %d bytes, %v, buffers %v", len(got), err, c.rcptBufs)
	}
	cases := []struct {
		amount     int64
		recip, mem string
		want       error
	}{
		{5000, "bob", "", sdk.ErrPayBudget},
		{1, "", "", sdk.ErrPayInput},
		{1, long + "x", "", sdk.ErrPayInput},
		{1, "bob", memo + memo, sdk.ErrPayInput},
		{0, "bob", "", sdk.ErrPayInvalid},
		{-3, "bob", "", sdk.ErrPayInvalid},
	}
	for _, tc := range cases {
		if _, err := sdk.WalletPay(tc.amount, tc.recip, tc.mem); !errors.Is(err, tc.want) {
			t.Errorf("WalletPay(%d, %d-byte recipient, %d-byte memo) = %v, want %v", tc.amount, len(tc.recip), len(tc.mem), err, tc.want)
		}
	}
	c.SetPayHandler(func(p mock.Payment) int32 {
		if p.Recipient == "eve" {
			return -3
		}
		if p.Amount > 10 {
			return -4
		}
		return 0
	})
	if _, err := sdk.WalletPay(1, "eve", ""); !errors.Is(err, sdk.ErrPayRecipient) {
		t.Fatalf("refused recipient: %v", err)
	}
	if _, err := sdk.WalletPay(11, "bob", ""); !errors.Is(err, sdk.ErrPayLimit) {
		t.Fatalf("over the limit: %v", err)
	}
	if sdk.WalletBalance() != 699 {
		t.Fatalf("balance %d after refused payments, want 699", sdk.WalletBalance())
	}
	if _, err := sdk.ParseReceipt(r[:50]); !errors.Is(err, sdk.ErrBadReceipt) {
		t.Fatalf("truncated receipt: %v", err)
	}
}
