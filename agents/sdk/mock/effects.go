//go:build !wasip1

package mock

import (
	"bytes"
	"encoding/binary"
	"net/http"
	"net/http/httptest"
	"strings"
)

// The host's limits that the mock applies too (docs/ABI.md).
const (
	MaxRecipientBytes      = 256
	MaxMemoBytes           = 512
	MaxHTTPMethod          = 16
	MaxHTTPURL             = 8192
	MaxHTTPHeaders         = 32768
	MaxHTTPBody            = 1 << 20
	DefaultMaxHTTPResponse = 1 << 20 // max_response_bytes unless SetMaxResponseBytes
)

// HTTPCall is one HTTPRequest the agent made, as the host received it.
type HTTPCall struct {
	Method, URL string
	Header      http.Header
	Body        []byte
	Result      int32 // what the call returned: the status or an ABI code
}

// Payment is one WalletPay the agent made.
type Payment struct {
	Amount          int64
	Recipient, Memo string
	Result          int32 // 4 + the receipt's length, or an ABI code
}

// SetBalance sets what WalletBalance returns; payments draw on it.
func (m *Mock) SetBalance(microcents int64) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.balance = microcents
	return m
}

// SetPrice sets what NodePrice returns.
func (m *Mock) SetPrice(microcentsPerSecond int64) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.price = microcentsPerSecond
	return m
}

// AddReceipt appends a receipt to the wallet's list, as an earlier
// payment would have.
func (m *Mock) AddReceipt(r []byte) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.receipts = append(m.receipts, bytes.Clone(r))
	return m
}

// SetHTTPHandler makes h serve the agent's HTTP requests (in process,
// through httptest.ResponseRecorder). Without a handler every request
// fails with -1 (transport error).
func (m *Mock) SetHTTPHandler(h http.Handler) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.httpHandler = h
	return m
}

// SetHTTPCode makes every later HTTPRequest fail with the given ABI code
// (-1 transport, -3 not allowed, -4 timeout...) without calling the
// handler; 0 restores normal service.
func (m *Mock) SetHTTPCode(code int32) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.httpCode = code
	return m
}

// SetMaxResponseBytes sets the manifest's max_response_bytes the mock
// enforces (-5 beyond it).
func (m *Mock) SetMaxResponseBytes(n int) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maxResp = n
	return m
}

// SetPayHandler decides each WalletPay whose arguments pass the host's
// checks: it returns 0 to accept (the mock then debits the balance,
// returning -1 if it is too low, and keeps a receipt) or an ABI code to
// refuse (e.g. -3 for a recipient the manifest does not allow). nil
// accepts every payment.
func (m *Mock) SetPayHandler(h func(p Payment) int32) *Mock {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.payHandler = h
	return m
}

// HTTPCalls returns the requests made so far.
func (m *Mock) HTTPCalls() []HTTPCall {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]HTTPCall(nil), m.httpCalls...)
}

// Payments returns the payments attempted so far.
func (m *Mock) Payments() []Payment {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]Payment(nil), m.payments...)
}

// Receipts returns the wallet's receipts (AddReceipt's and the payments').
func (m *Mock) Receipts() [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([][]byte, len(m.receipts))
	for k, r := range m.receipts {
		out[k] = bytes.Clone(r)
	}
	return out
}

// WalletBalance returns the balance set by SetBalance less the payments.
func (m *Mock) WalletBalance() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe("WalletBalance")
	return m.balance
}

// WalletReceiptCount returns the number of receipts.
func (m *Mock) WalletReceiptCount() int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe("WalletReceiptCount")
	return int32(len(m.receipts))
}

// WalletReceipt writes receipt index to buf as the host does: its length,
// -1 for a bad index, -4 with the length in buf[:4] if buf is too small.
func (m *Mock) WalletReceipt(index int32, buf []byte) int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe("WalletReceipt")
	if index < 0 || int(index) >= len(m.receipts) {
		return -1
	}
	r := m.receipts[index]
	if len(r) > len(buf) {
		putHint(buf, len(r))
		return -4
	}
	return int32(copy(buf, r))
}

// NodePrice returns the price set by SetPrice.
func (m *Mock) NodePrice() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe("NodePrice")
	return m.price
}

// HTTPRequest serves the request with the handler and writes the response
// as the host does, applying the host's input limits (-2), its header
// syntax (-2) and max_response_bytes and the buffer size (-5, with the
// hint). Requests carry User-Agent: igor-node, as the host's do.
func (m *Mock) HTTPRequest(method, url string, headers, body, resp []byte) int32 {
	m.mu.Lock()
	m.observe("HTTPRequest")
	h, code, maxResp := m.httpHandler, m.httpCode, m.maxResp
	m.mu.Unlock()
	call := HTTPCall{Method: method, URL: url, Body: bytes.Clone(body)}
	result := func(rc int32) int32 {
		call.Result = rc
		m.mu.Lock()
		m.httpCalls = append(m.httpCalls, call)
		m.mu.Unlock()
		return rc
	}
	if len(method) > MaxHTTPMethod || len(url) > MaxHTTPURL || len(headers) > MaxHTTPHeaders || len(body) > MaxHTTPBody {
		return result(-2)
	}
	hdr, ok := parseHeaders(headers)
	call.Header = hdr
	if method == "" {
		method = http.MethodGet
	}
	if !ok {
		return result(-2)
	}
	if code != 0 {
		return result(code)
	}
	if h == nil {
		return result(-1)
	}
	req, err := http.NewRequest(method, url, bytes.NewReader(body))
	if err != nil {
		return result(-2)
	}
	req.Header = hdr.Clone()
	req.Header.Set("User-Agent", "igor-node")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	out := rec.Body.Bytes()
	if maxResp == 0 {
		maxResp = DefaultMaxHTTPResponse
	}
	if len(out) > maxResp || 4+len(out) > len(resp) {
		putHint(resp, len(out))
		return result(-5)
	}
	binary.LittleEndian.PutUint32(resp, uint32(len(out)))
	copy(resp[4:], out)
	return result(int32(rec.Code))
}

// parseHeaders reads "Key: Value\n" lines as the host does.
func parseHeaders(raw []byte) (http.Header, bool) {
	h := http.Header{}
	if len(raw) == 0 {
		return h, true
	}
	for _, line := range strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || k == "" || strings.ContainsAny(k, " \t\r") || strings.ContainsAny(v, "\r\x00") {
			return nil, false
		}
		h.Add(k, strings.Trim(v, " \t"))
	}
	return h, true
}

// WalletPay applies the host's checks (-2 recipient empty or over 256
// bytes or memo over 512, -6 amount <= 0, -5 buffer too small with the
// hint), asks the pay handler, debits the balance (-1 if too low) and
// writes [len u32][receipt]. The receipt has the host's layout with the
// current mock clock (not advanced) as its time and zero key and
// signature.
func (m *Mock) WalletPay(amount int64, recipient, memo string, receipt []byte) int32 {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.observe("WalletPay")
	p := Payment{Amount: amount, Recipient: recipient, Memo: memo}
	result := func(rc int32) int32 {
		p.Result = rc
		m.payments = append(m.payments, p)
		return rc
	}
	rl := 8 + 8 + 4 + len(recipient) + 4 + len(memo) + 32 + 64
	switch {
	case recipient == "" || len(recipient) > MaxRecipientBytes || len(memo) > MaxMemoBytes:
		return result(-2)
	case amount <= 0:
		return result(-6)
	case 4+rl > len(receipt):
		putHint(receipt, rl)
		return result(-5)
	}
	if h := m.payHandler; h != nil {
		m.mu.Unlock() // the handler may call the Mock
		rc := h(p)
		m.mu.Lock()
		if rc != 0 {
			return result(rc)
		}
	}
	if m.balance < amount {
		return result(-1)
	}
	m.balance -= amount
	r := binary.LittleEndian.AppendUint64(nil, uint64(amount))
	r = binary.LittleEndian.AppendUint64(r, uint64(m.now))
	r = binary.LittleEndian.AppendUint32(r, uint32(len(recipient)))
	r = append(r, recipient...)
	r = binary.LittleEndian.AppendUint32(r, uint32(len(memo)))
	r = append(r, memo...)
	r = append(r, make([]byte, 32+64)...)
	m.receipts = append(m.receipts, r)
	binary.LittleEndian.PutUint32(receipt, uint32(len(r)))
	copy(receipt[4:], r)
	return result(int32(4 + len(r)))
}

func putHint(buf []byte, n int) {
	if len(buf) >= 4 {
		binary.LittleEndian.PutUint32(buf, uint32(n))
	}
}
