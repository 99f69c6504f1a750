package main

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"sync"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

// maxCountBody bounds a POST /count body.
const maxCountBody = 64 << 10

// server is the demo server's state: the price feed, the paywall and the
// idempotent counter. Its handlers are safe for concurrent use.
type server struct {
	name  string // the paywall's recipient name
	price int64  // µc per item
	log   *log.Logger

	mu sync.Mutex // guards everything below
	// Price feed.
	priceReqs uint64
	// Paywall.
	sales    map[string]int64    // item -> receipts accepted for it
	revenue  int64               // µc of the receipts accepted
	replays  int64               // accepted receipts presented again (content served, no sale)
	rejected int64               // X-Payment headers refused
	receipts map[[32]byte]string // SHA-256 of an accepted receipt -> its item
	// Counter.
	applied, duplicates, withoutKey int64
	keys                            map[string]*keyEntry
	keyOrder                        []string // keys in first-seen order
}

// keyEntry is what the counter remembers of an Idempotency-Key: the
// response it gave and the body of every request that carried the key.
type keyEntry struct {
	resp   []byte
	bodies []string
}

func newServer(name string, price int64, logger *log.Logger) *server {
	return &server{name: name, price: price, log: logger,
		sales: map[string]int64{}, receipts: map[[32]byte]string{}, keys: map[string]*keyEntry{}}
}

func (s *server) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /price", s.handlePrice)
	mux.HandleFunc("GET /paid/{item}", s.handlePaid)
	mux.HandleFunc("GET /sales", s.handleSales)
	mux.HandleFunc("POST /count", s.handleCount)
	mux.HandleFunc("GET /count/stats", s.handleCountStats)
	mux.HandleFunc("GET /count/keys", s.handleCountKeys)
	return s.logged(mux)
}

// statusWriter remembers the status and size of a response for the log.
type statusWriter struct {
	http.ResponseWriter
	status, bytes int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += n
	return n, err
}

// logged logs one line per request: method, path, status, response size,
// and the Idempotency-Key and X-Payment presence when there are.
func (s *server) logged(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h.ServeHTTP(sw, r)
		extra := ""
		if k := r.Header.Get("Idempotency-Key"); k != "" {
			extra += " key=" + k
		}
		if r.Header.Get("X-Payment") != "" {
			extra += " x-payment"
		}
		s.log.Printf("%s %s %d %dB%s", r.Method, r.URL.Path, sw.status, sw.bytes, extra)
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// priceAt is the n-th price served (n from 1): 100 plus a quarter of
// (37n mod 41), so it moves between 100 and 110 in steps of 0.25 and
// repeats every 41 requests.
func priceAt(n uint64) float64 { return 100 + float64((37*n)%41)/4 }

// GET /price -> {"price": P}.
func (s *server) handlePrice(w http.ResponseWriter, _ *http.Request) {
	s.mu.Lock()
	s.priceReqs++
	n := s.priceReqs
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]float64{"price": priceAt(n)})
}

// terms are a 402 response's body.
type terms struct {
	Recipient string `json:"recipient"`
	Amount    int64  `json:"amount"`
	Memo      string `json:"memo"`
	Error     string `json:"error,omitempty"` // why an X-Payment was refused
}

func validItem(item string) bool {
	if item == "" || len(item) > 64 {
		return false
	}
	for _, c := range []byte(item) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

func (s *server) memo(item string) string { return s.name + ":" + item }

func (s *server) content(item string) string {
	return "the " + item + " from " + s.name + ", paid for\n"
}

// Errors of verifyReceipt, in the order it checks.
var (
	errBadBase64    = errors.New("X-Payment is not standard base64")
	errBadSignature = errors.New("receipt signature does not verify with the agent key it carries")
	errRecipient    = errors.New("receipt is for another recipient")
	errMemo         = errors.New("receipt memo is not this item's")
	errAmount       = errors.New("receipt amount is below the price")
)

// verifyReceipt checks an X-Payment header for item and returns the
// receipt's hash and amount: base64, the receipt layout (docs/ABI.md), the Ed25519
// signature by the key embedded in the receipt over every byte before the
// signature, the recipient (this server's name), the memo (the one this
// server's terms give for item) and the amount (at least the price).
func (s *server) verifyReceipt(header, item string) ([32]byte, int64, error) {
	raw, err := base64.StdEncoding.DecodeString(header)
	if err != nil {
		return [32]byte{}, 0, errBadBase64
	}
	r, err := sdk.ParseReceipt(raw)
	if err != nil {
		return [32]byte{}, 0, err
	}
	err = nil
	switch {
	case !ed25519.Verify(ed25519.PublicKey(r.AgentKey), raw[:len(raw)-ed25519.SignatureSize], r.Signature):
		err = errBadSignature
	case r.Recipient != s.name:
		err = errRecipient
	case r.Memo != s.memo(item):
		err = errMemo
	case r.Amount < s.price:
		err = errAmount
	}
	return sha256.Sum256(raw), r.Amount, err
}

// GET /paid/{item}: 402 with terms unless X-Payment carries a valid
// receipt; a receipt is a sale once, and presenting it again for the same
// item serves the content again without a second sale.
func (s *server) handlePaid(w http.ResponseWriter, r *http.Request) {
	item := r.PathValue("item")
	if !validItem(item) {
		http.Error(w, "items are 1 to 64 of A-Z a-z 0-9 . _ -", http.StatusNotFound)
		return
	}
	t := terms{Recipient: s.name, Amount: s.price, Memo: s.memo(item)}
	h := r.Header.Get("X-Payment")
	if h == "" {
		writeJSON(w, http.StatusPaymentRequired, t)
		return
	}
	sum, amount, err := s.verifyReceipt(h, item)
	s.mu.Lock()
	if err != nil {
		s.rejected++
		s.mu.Unlock()
		t.Error = err.Error()
		writeJSON(w, http.StatusPaymentRequired, t)
		return
	}
	// The memo binds a receipt to one item, so a known receipt is this
	// item's: at most one sale per receipt and item.
	if _, ok := s.receipts[sum]; ok {
		s.replays++
	} else {
		s.receipts[sum] = item
		s.sales[item]++
		s.revenue += amount
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, s.content(item))
}

// salesReport is GET /sales.
type salesReport struct {
	Recipient string           `json:"recipient"`
	Price     int64            `json:"price"`
	Sales     map[string]int64 `json:"sales"` // item -> sales (JSON keys sorted)
	Total     int64            `json:"total"`
	Revenue   int64            `json:"revenue"`
	Replays   int64            `json:"replays"`
	Rejected  int64            `json:"rejected"`
}

func (s *server) salesReport() salesReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	rep := salesReport{Recipient: s.name, Price: s.price, Sales: map[string]int64{}, Revenue: s.revenue, Replays: s.replays, Rejected: s.rejected}
	for item, n := range s.sales {
		rep.Sales[item] = n
		rep.Total += n
	}
	return rep
}

func (s *server) handleSales(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.salesReport())
}

// POST /count: applies a request (the counter goes up by one) unless its
// Idempotency-Key was seen before; then it answers with the first
// response, byte for byte, and applies nothing. Without the header every
// request is applied.
func (s *server) handleCount(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxCountBody))
	if err != nil {
		http.Error(w, "body over "+strconv.Itoa(maxCountBody)+" bytes", http.StatusRequestEntityTooLarge)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	s.mu.Lock()
	var resp []byte
	if e, ok := s.keys[key]; ok && key != "" {
		s.duplicates++
		e.bodies = append(e.bodies, string(body))
		resp = e.resp
		w.Header().Set("Idempotent-Replayed", "true")
	} else {
		s.applied++
		resp = fmt.Appendf(nil, `{"applied":true,"n":%d}`+"\n", s.applied)
		if key == "" {
			s.withoutKey++
		} else {
			s.keys[key] = &keyEntry{resp: resp, bodies: []string{string(body)}}
			s.keyOrder = append(s.keyOrder, key)
		}
	}
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.Write(resp)
}

// countStats is GET /count/stats.
type countStats struct {
	Applied        int64 `json:"applied"`
	DuplicatesSeen int64 `json:"duplicates_seen"`
	Keys           int   `json:"keys"`
	WithoutKey     int64 `json:"without_key"`
}

func (s *server) stats() countStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return countStats{Applied: s.applied, DuplicatesSeen: s.duplicates, Keys: len(s.keys), WithoutKey: s.withoutKey}
}

func (s *server) handleCountStats(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.stats())
}

// keyReport is one entry of GET /count/keys.
type keyReport struct {
	Key    string   `json:"key"`
	Bodies []string `json:"bodies"` // of every request with the key, the applied one first
}

// GET /count/keys -> {"keys": [{"key": K, "bodies": [...]}, ...]} in the
// order the keys were first seen.
func (s *server) handleCountKeys(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, struct {
		Keys []keyReport `json:"keys"`
	}{s.keyReports()})
}

func (s *server) keyReports() []keyReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]keyReport, 0, len(s.keyOrder))
	for _, k := range s.keyOrder {
		out = append(out, keyReport{Key: k, Bodies: append([]string(nil), s.keys[k].bodies...)})
	}
	return out
}
