// Command x402buyer is an example agent that pays for what it fetches, the
// x402 way: every tick it GETs a paid resource; on HTTP 402 it reads the
// payment terms from the JSON body,
//
//	{"recipient": "paywall", "amount": 1000, "memo": "paywall:report"}
//
// pays them with wallet_pay if they are acceptable, and GETs the resource
// again with the signed receipt in a header, "X-Payment: <base64 of the
// receipt bytes>". On 200 it records the purchase: the count, what it
// spent, the SHA-256 of the content. Its args are space-separated
// key=value pairs:
//
//	url=URL   the paid resource (required)
//	to=NAME   the only recipient it pays (required; the manifest's x402
//	          allowed_recipients should say the same: the host enforces that)
//	max=N     the most it pays for one purchase, in µc (required, > 0; the
//	          manifest's max_payment_microcents caps it again on the host)
//
// It pays at most once per tick, and never while a receipt it paid for is
// still pending: when the resource was not delivered after paying (a
// transport error or a 5xx), the receipt stays in its state and the next
// tick presents it again instead of paying anew. A receipt the server
// refuses (402 or another 4xx) is dropped and counted as rejected.
package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"strings"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

const stateVersion = 1

// maxMemo is the host's limit on a wallet_pay memo (docs/ABI.md).
const maxMemo = 512

type config struct {
	url, to string
	max     int64
}

// Buyer's state is these fields (cfg comes from args, not state).
type Buyer struct {
	cfg        config
	Ticks      uint64
	Bought     uint64   // resources delivered after paying
	Free       uint64   // resources delivered without a 402
	Payments   uint64   // successful wallet_pay calls
	Spent      int64    // µc paid in all
	Refused    uint64   // 402 terms it would not pay: bad JSON, another recipient, over max
	Rejected   uint64   // receipts the server refused
	PayFailed  uint64   // wallet_pay errors (PayErr is the last code)
	Failed     uint64   // transport errors and unexpected statuses
	LastStatus int32    // the last response's status, or its ABI code (-1..-5)
	PayErr     int32    // the last wallet_pay error code (0: the last payment succeeded)
	LastHash   [32]byte // SHA-256 of the last content delivered
	Pending    []byte   // a receipt paid for whose resource was not delivered yet (nil: none)
}

// Init reads args; bad args panic (a trap in agent_init the publisher sees).
func (b *Buyer) Init() {
	cfg, err := parseArgs(sdk.Args())
	if err != nil {
		panic("x402buyer: bad args: " + err.Error())
	}
	*b = Buyer{cfg: cfg}
}

func parseArgs(args string) (config, error) {
	var c config
	for _, kv := range strings.Fields(args) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, errors.New("want key=value, got " + strconv.Quote(kv))
		}
		switch k {
		case "url":
			c.url = v
		case "to":
			c.to = v
		case "max":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n <= 0 {
				return c, errors.New("max must be a positive integer (µc), got " + strconv.Quote(v))
			}
			c.max = n
		default:
			return c, errors.New("unknown key " + strconv.Quote(k))
		}
	}
	switch {
	case !strings.HasPrefix(c.url, "http://") && !strings.HasPrefix(c.url, "https://"):
		return c, errors.New("want url=http://… or url=https://…, got " + strconv.Quote(c.url))
	case c.to == "":
		return c, errors.New("want to=RECIPIENT")
	case c.max == 0:
		return c, errors.New("want max=MICROCENTS")
	}
	return c, nil
}

// terms are a 402 response's payment terms.
type terms struct {
	Recipient string `json:"recipient"`
	Amount    int64  `json:"amount"`
	Memo      string `json:"memo"`
}

// check reads and vets the terms: an error says why they are not paid.
func (c config) check(body []byte) (terms, error) {
	var t terms
	if err := json.Unmarshal(body, &t); err != nil {
		return t, errors.New("bad terms: " + err.Error())
	}
	switch {
	case t.Recipient != c.to:
		return t, errors.New("recipient " + strconv.Quote(t.Recipient) + " is not " + strconv.Quote(c.to))
	case t.Amount <= 0:
		return t, errors.New("amount " + strconv.FormatInt(t.Amount, 10) + " is not positive")
	case t.Amount > c.max:
		return t, errors.New("amount " + strconv.FormatInt(t.Amount, 10) + " is over max=" + strconv.FormatInt(c.max, 10))
	case len(t.Memo) > maxMemo:
		return t, errors.New("memo over " + strconv.Itoa(maxMemo) + " bytes")
	}
	return t, nil
}

func (b *Buyer) Tick() bool {
	b.Ticks++
	if len(b.Pending) > 0 {
		b.deliver("retry")
		return false
	}
	status, body, err := b.get(nil)
	switch {
	case err != nil:
		b.fail("fetch failed: " + err.Error())
	case status == 200:
		b.Free++
		b.LastHash = sha256.Sum256(body)
		b.log("free hash=" + hex.EncodeToString(b.LastHash[:4]))
	case status == 402:
		t, err := b.cfg.check(body)
		if err != nil {
			b.Refused++
			b.log("refused: " + err.Error())
			return false
		}
		receipt, err := sdk.WalletPay(t.Amount, t.Recipient, t.Memo)
		if err != nil {
			b.PayFailed++
			b.PayErr = payCode(err)
			b.log("pay failed: " + err.Error())
			return false
		}
		b.PayErr = 0
		b.Payments++
		b.Spent += t.Amount
		b.Pending = receipt
		b.deliver("paid=" + strconv.FormatInt(t.Amount, 10))
	default:
		b.fail("status " + strconv.Itoa(status))
	}
	return false
}

// get fetches the resource, presenting receipt if there is one.
func (b *Buyer) get(receipt []byte) (int, []byte, error) {
	var hdr map[string]string
	if receipt != nil {
		hdr = map[string]string{"X-Payment": base64.StdEncoding.EncodeToString(receipt)}
	}
	status, body, err := sdk.HTTPRequest("GET", b.cfg.url, hdr, nil)
	if err != nil {
		b.LastStatus = httpCode(err)
	} else {
		b.LastStatus = int32(status)
	}
	return status, body, err
}

// deliver presents the pending receipt: on 200 the purchase is complete;
// on a 4xx the server refused the receipt, which is dropped; otherwise it
// stays pending for the next tick.
func (b *Buyer) deliver(what string) {
	status, body, err := b.get(b.Pending)
	switch {
	case err != nil:
		b.fail(what + " fetch failed: " + err.Error() + " (receipt kept)")
	case status == 200:
		b.Bought++
		b.Pending = nil
		b.LastHash = sha256.Sum256(body)
		b.log("bought " + what + " spent=" + strconv.FormatInt(b.Spent, 10) + " hash=" + hex.EncodeToString(b.LastHash[:4]))
	case status >= 400 && status < 500:
		b.Rejected++
		b.Pending = nil
		b.log(what + " receipt rejected: status " + strconv.Itoa(status))
	default:
		b.fail(what + " status " + strconv.Itoa(status) + " (receipt kept)")
	}
}

func (b *Buyer) fail(msg string) {
	b.Failed++
	b.log(msg)
}

func (b *Buyer) log(msg string) {
	sdk.Log("tick=" + strconv.FormatUint(b.Ticks, 10) + " status=" + strconv.Itoa(int(b.LastStatus)) + " " + msg)
}

// httpCode maps the SDK's errors back to the ABI codes kept in state.
func httpCode(err error) int32 {
	for code, e := range []error{nil, sdk.ErrHTTPTransport, sdk.ErrHTTPBadRequest, sdk.ErrHTTPNotAllowed, sdk.ErrHTTPTimeout, sdk.ErrHTTPTooLarge} {
		if e != nil && errors.Is(err, e) {
			return int32(-code)
		}
	}
	return -1
}

func payCode(err error) int32 {
	for code, e := range []error{nil, sdk.ErrPayBudget, sdk.ErrPayInput, sdk.ErrPayRecipient, sdk.ErrPayLimit, sdk.ErrPayBuffer, sdk.ErrPayInvalid} {
		if e != nil && errors.Is(err, e) {
			return int32(-code)
		}
	}
	return -6
}

func (b *Buyer) Marshal() []byte {
	return sdk.NewEncoder(128 + len(b.Pending)).Uint8(stateVersion).Uint64(b.Ticks).
		Uint64(b.Bought).Uint64(b.Free).Uint64(b.Payments).Int64(b.Spent).
		Uint64(b.Refused).Uint64(b.Rejected).Uint64(b.PayFailed).Uint64(b.Failed).
		Int32(b.LastStatus).Int32(b.PayErr).Raw(b.LastHash[:]).Bytes(b.Pending).Finish()
}

// Unmarshal restores the state; empty input means a new agent. Corrupt
// input panics instead of silently resetting.
func (b *Buyer) Unmarshal(s []byte) {
	*b = Buyer{cfg: b.cfg}
	if len(s) == 0 {
		return
	}
	d := sdk.NewDecoder(s)
	if v := d.Uint8(); v != stateVersion && d.Err() == nil {
		panic("x402buyer: state version " + strconv.Itoa(int(v)) + ", this build reads version 1")
	}
	b.Ticks, b.Bought, b.Free, b.Payments, b.Spent = d.Uint64(), d.Uint64(), d.Uint64(), d.Uint64(), d.Int64()
	b.Refused, b.Rejected, b.PayFailed, b.Failed = d.Uint64(), d.Uint64(), d.Uint64(), d.Uint64()
	b.LastStatus, b.PayErr = d.Int32(), d.Int32()
	d.ReadInto(b.LastHash[:])
	if p := d.Bytes(); len(p) > 0 { // a receipt is never empty: empty means none
		b.Pending = p
	}
	if err := d.Finish(); err != nil {
		panic("x402buyer: corrupt state: " + err.Error())
	}
}

func init() { sdk.Run(&Buyer{}) }

func main() {}
