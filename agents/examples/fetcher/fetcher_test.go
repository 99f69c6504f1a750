//go:build !wasip1

package main

import (
	"bytes"
	"net/http"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

func newFetcher() sdk.Agent { return &Fetcher{} }

func TestFetcherUnderMock(t *testing.T) {
	defer sdk.SetBackend(nil)
	m := mock.New(1).SetBalance(5000).SetPrice(42).
		SetArgs("url=http://paywall.test/price post=1 pay=1000 to=paywall memo=fetch").
		SetHTTPHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("price for " + r.Method))
		}))
	state, err := m.Drive(newFetcher, 3)
	if err != nil {
		t.Fatal(err)
	}
	var f Fetcher
	f.Unmarshal(state)
	if f.Ticks != 3 || f.Status != 200 || f.BodyLen != uint32(len("price for POST")) || f.Price != 42 {
		t.Fatalf("state %+v", f)
	}
	// The balance is read before each payment: 5000, 4000, 3000.
	if f.Paid != 3000 || f.Payments != 3 || f.Balance != 3000 || f.Receipts != 3 || f.PayErr != 0 {
		t.Fatalf("payments: %+v", f)
	}
	r, err := sdk.ParseReceipt(f.Last)
	if err != nil || r.Amount != 1000 || r.Recipient != "paywall" || r.Memo != "fetch" {
		t.Fatalf("last receipt %+v, %v", r, err)
	}
	calls := m.HTTPCalls()
	if len(calls) != 3 || string(calls[2].Body) != "tick=3" || calls[2].Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("calls %+v", calls)
	}
	if logs := m.Logs(); len(logs) != 3 || logs[2] != "tick=3 status=200 bytes=14 paid=3000 balance=3000" {
		t.Fatalf("logs %q", logs)
	}
	// Out of money and a refused host: both end up in state, not a panic.
	m = mock.New(1).SetBalance(1500).SetArgs("url=http://x/ pay=1000 to=paywall").SetHTTPCode(-3)
	state, err = m.Drive(newFetcher, 2)
	if err != nil {
		t.Fatal(err)
	}
	f.Unmarshal(state)
	if f.Status != -3 || f.PayErr != -1 || f.Payments != 1 {
		t.Fatalf("errors: %+v", f)
	}
}

func TestFetcherArgs(t *testing.T) {
	for _, bad := range []string{"pay=1", "pay=-1 to=a", "nokey", "colour=red"} {
		if _, err := parseArgs(bad); err == nil {
			t.Errorf("args %q accepted", bad)
		}
	}
	c, err := parseArgs("url=http://a/ pay=5 to=b memo=m post=1")
	if err != nil || c.url != "http://a/" || c.pay != 5 || c.to != "b" || c.memo != "m" || !c.post {
		t.Fatalf("%+v %v", c, err)
	}
}

func TestFetcherRejectsCorruptState(t *testing.T) {
	good := (&Fetcher{Ticks: 1, Last: []byte{1, 2}}).Marshal()
	for name, b := range map[string][]byte{"truncated": good[:10], "trailing": append(bytes.Clone(good), 0), "version": append([]byte{9}, good[1:]...)} {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r, _ := recover().(string); !strings.Contains(r, "fetcher:") {
					t.Fatalf("panic %v, want a fetcher error", r)
				}
			}()
			(&Fetcher{}).Unmarshal(b)
		})
	}
}
