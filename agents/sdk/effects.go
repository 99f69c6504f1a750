package sdk

import (
	"encoding/binary"
	"errors"
	"math"
	"sort"
)

// Errors of the wallet, HTTP and payment wrappers, one per ABI result code
// (docs/ABI.md); returned wrapped, with the code in the message.
var (
	ErrNoReceipt       = errors.New("sdk: wallet_receipt: no receipt at that index")       // -1
	ErrReceiptTooLarge = errors.New("sdk: wallet_receipt: receipt larger than the buffer") // -4

	ErrHTTPTransport  = errors.New("sdk: http_request: transport error")                  // -1
	ErrHTTPBadRequest = errors.New("sdk: http_request: bad request")                      // -2
	ErrHTTPNotAllowed = errors.New("sdk: http_request: refused by the manifest's policy") // -3
	ErrHTTPTimeout    = errors.New("sdk: http_request: timeout")                          // -4
	ErrHTTPTooLarge   = errors.New("sdk: http_request: response too large")               // -5

	ErrPayBudget    = errors.New("sdk: wallet_pay: balance below the amount")                      // -1
	ErrPayInput     = errors.New("sdk: wallet_pay: recipient empty or too long, or memo too long") // -2
	ErrPayRecipient = errors.New("sdk: wallet_pay: recipient not allowed")                         // -3
	ErrPayLimit     = errors.New("sdk: wallet_pay: amount over max_payment_microcents")            // -4
	ErrPayBuffer    = errors.New("sdk: wallet_pay: receipt larger than the buffer")                // -5
	ErrPayInvalid   = errors.New("sdk: wallet_pay: amount not positive or bad memory")             // -6
)

// Buffer sizes of the wrappers: a first try, then one retry sized by the
// host's hint, up to a cap (the reference SDK's values).
const (
	receiptBuf       = 1 << 10
	maxReceiptBuf    = 64 << 10
	httpRespBuf      = 8 << 10
	MaxHTTPResponse  = 4 << 20 // the largest body HTTPRequest retries for
	payReceiptBuf    = 1 << 10
	maxPayReceiptBuf = 64 << 10
)

// WalletBalance returns the agent's balance in µc (capability "wallet").
// Recorded. Call it only from Tick.
func WalletBalance() int64 { return walletBalance() }

// WalletReceiptCount returns how many payment receipts the agent has
// (capability "wallet"). Recorded. Call it only from Tick.
func WalletReceiptCount() int { return int(walletReceiptCount()) }

// WalletReceipt returns receipt i, oldest first (capability "wallet"):
// the bytes ParseReceipt reads. Errors wrap ErrNoReceipt or
// ErrReceiptTooLarge. Call it only from Tick.
func WalletReceipt(i int) ([]byte, error) {
	if i < 0 || i > math.MaxInt32 {
		return nil, wrap(ErrNoReceipt, "index "+itoa(i))
	}
	buf := make([]byte, receiptBuf)
	rc := walletReceipt(int32(i), buf)
	if rc == -4 {
		// The host writes the receipt's length in the first 4 bytes.
		if n := binary.LittleEndian.Uint32(buf); n > uint32(len(buf)) && n <= maxReceiptBuf {
			buf = make([]byte, n)
			rc = walletReceipt(int32(i), buf)
		}
	}
	switch {
	case rc >= 0 && int(rc) <= len(buf):
		return buf[:rc:rc], nil
	case rc == -1:
		return nil, wrap(ErrNoReceipt, "index "+itoa(i))
	}
	return nil, wrap(ErrReceiptTooLarge, "code "+itoa(int(rc)))
}

// NodePrice returns the hosting node's price in µc per second (capability
// "pricing"). Recorded. Call it only from Tick.
func NodePrice() int64 { return nodePrice() }

// HTTPRequest performs an HTTP request through the host (capability
// "http"; the manifest's allowed_hosts, timeout_ms and max_response_bytes
// apply) and returns the status and body. Headers are sent in sorted key
// order, so the same request always has the same bytes — the host
// recognises a re-issued request by them. A body over 8 KiB is fetched
// again with a buffer of the size the host reported (up to
// MaxHTTPResponse): that is a second request. Errors wrap ErrHTTPTransport,
// ErrHTTPBadRequest, ErrHTTPNotAllowed, ErrHTTPTimeout or ErrHTTPTooLarge.
// Call it only from Tick.
func HTTPRequest(method, url string, headers map[string]string, body []byte) (status int, respBody []byte, err error) {
	hdr := encodeHeaders(headers)
	resp := make([]byte, httpRespBuf)
	rc := httpRequest(method, url, hdr, body, resp)
	if rc == -5 {
		if n := binary.LittleEndian.Uint32(resp); n > 0 && n <= MaxHTTPResponse && int(n)+4 > len(resp) {
			resp = make([]byte, 4+n)
			rc = httpRequest(method, url, hdr, body, resp)
		}
	}
	if rc < 0 {
		return 0, nil, httpError(rc)
	}
	n := binary.LittleEndian.Uint32(resp)
	if uint64(n)+4 > uint64(len(resp)) {
		return 0, nil, wrap(ErrHTTPTransport, "the host reported a "+itoa(int(n))+"-byte body in a "+itoa(len(resp))+"-byte buffer")
	}
	return int(rc), resp[4 : 4+n : 4+n], nil
}

// HTTPGet is HTTPRequest("GET", url, nil, nil).
func HTTPGet(url string) (status int, body []byte, err error) {
	return HTTPRequest("GET", url, nil, nil)
}

// HTTPPost sends body with the given Content-Type.
func HTTPPost(url, contentType string, body []byte) (status int, respBody []byte, err error) {
	return HTTPRequest("POST", url, map[string]string{"Content-Type": contentType}, body)
}

// encodeHeaders writes "Key: Value\n" lines in sorted key order.
func encodeHeaders(h map[string]string) []byte {
	if len(h) == 0 {
		return nil
	}
	keys := make([]string, 0, len(h))
	n := 0
	for k, v := range h {
		keys = append(keys, k)
		n += len(k) + len(v) + 3
	}
	sort.Strings(keys)
	b := make([]byte, 0, n)
	for _, k := range keys {
		b = append(append(append(append(b, k...), ": "...), h[k]...), '\n')
	}
	return b
}

func httpError(rc int32) error {
	code := "code " + itoa(int(rc))
	switch rc {
	case -2:
		return wrap(ErrHTTPBadRequest, code)
	case -3:
		return wrap(ErrHTTPNotAllowed, code)
	case -4:
		return wrap(ErrHTTPTimeout, code)
	case -5:
		return wrap(ErrHTTPTooLarge, code)
	}
	return wrap(ErrHTTPTransport, code)
}

// WalletPay pays amount µc to recipient with a memo (capability "x402")
// and returns the signed receipt (ParseReceipt reads it). Errors wrap
// ErrPayBudget, ErrPayInput, ErrPayRecipient, ErrPayLimit, ErrPayBuffer or
// ErrPayInvalid; nothing is paid then. Call it only from Tick.
func WalletPay(amount int64, recipient, memo string) ([]byte, error) {
	buf := make([]byte, payReceiptBuf)
	rc := walletPay(amount, recipient, memo, buf)
	if rc == -5 {
		// Checked before anything is paid: the retry pays once.
		if n := binary.LittleEndian.Uint32(buf); n > 0 && n+4 <= maxPayReceiptBuf {
			buf = make([]byte, n+4)
			rc = walletPay(amount, recipient, memo, buf)
		}
	}
	if rc < 0 {
		code := "code " + itoa(int(rc))
		switch rc {
		case -1:
			return nil, wrap(ErrPayBudget, code)
		case -2:
			return nil, wrap(ErrPayInput, code)
		case -3:
			return nil, wrap(ErrPayRecipient, code)
		case -4:
			return nil, wrap(ErrPayLimit, code)
		case -5:
			return nil, wrap(ErrPayBuffer, code)
		}
		return nil, wrap(ErrPayInvalid, code)
	}
	n := binary.LittleEndian.Uint32(buf)
	if uint64(n)+4 > uint64(len(buf)) {
		return nil, wrap(ErrPayBuffer, "the host reported a "+itoa(int(n))+"-byte receipt in a "+itoa(len(buf))+"-byte buffer")
	}
	return buf[4 : 4+n : 4+n], nil
}

// Receipt is a decoded payment receipt (docs/ABI.md).
type Receipt struct {
	Amount    int64  // µc
	TimeNs    int64  // the tick time of the payment (Unix ns)
	Recipient string // as passed to WalletPay
	Memo      string
	AgentKey  []byte // the paying agent's Ed25519 public key (32 bytes)
	Signature []byte // by AgentKey over every byte before it (64 bytes)
}

// ErrBadReceipt is returned (wrapped) by ParseReceipt.
var ErrBadReceipt = errors.New("sdk: malformed receipt")

// ParseReceipt decodes a receipt from WalletPay or WalletReceipt. It does
// not verify the signature (crypto/ed25519 does: the signed bytes are
// b[:len(b)-64]).
func ParseReceipt(b []byte) (Receipt, error) {
	d := NewDecoder(b)
	r := Receipt{Amount: d.Int64(), TimeNs: d.Int64(), Recipient: d.String(), Memo: d.String(),
		AgentKey: d.FixedBytes(32), Signature: d.FixedBytes(64)}
	if err := d.Finish(); err != nil {
		return Receipt{}, wrap(ErrBadReceipt, err.Error())
	}
	return r, nil
}
