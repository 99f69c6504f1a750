// Command fetcher is the example of an agent that acts: every tick it reads
// the node's price and its own balance, fetches a URL with the http
// capability, pays a recipient with wallet_pay (x402) and reads back its
// latest receipt. What it does comes from the manifest's args, space-
// separated key=value pairs:
//
//	url=URL     fetch URL with GET each tick (none: no request)
//	post=1      send a POST (body "tick=N") instead of a GET
//	pay=N       pay N µc each tick (0 or absent: no payment)
//	to=NAME     the recipient (required with pay)
//	memo=TEXT   the payment's memo
//
// Its state records what it saw (status, body length and fold, balance,
// price, receipts), so a replay of a tick must reproduce every answer.
// It avoids fmt (sdk.Log with strconv) to keep the module small.
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

const stateVersion = 1

type config struct {
	url, to, memo string
	post          bool
	pay           int64
}

// Fetcher's state is these fields (cfg comes from args, not state).
type Fetcher struct {
	cfg      config
	Ticks    uint64
	Status   int32  // the last request's HTTP status, or its error code (-1..-5)
	BodyLen  uint32 // the last body's length
	BodyFold uint64 // FNV-1a of every body fetched
	Paid     int64  // µc paid so far
	Payments uint32 // successful payments
	PayErr   int32  // the last payment's error code (0: it succeeded)
	Balance  int64  // the balance read at the start of the last tick
	Price    int64  // the node price read at the start of the last tick
	Receipts uint32 // the receipt count read after paying
	Last     []byte // the latest receipt, read back with WalletReceipt
}

// Init reads args; bad args are a configuration error the publisher must
// see, so they panic (a trap in agent_init).
func (f *Fetcher) Init() {
	cfg, err := parseArgs(sdk.Args())
	if err != nil {
		panic("fetcher: bad args: " + err.Error())
	}
	*f = Fetcher{cfg: cfg}
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
		case "post":
			c.post = v == "1"
		case "pay":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return c, errors.New("pay must be a non-negative integer (µc), got " + strconv.Quote(v))
			}
			c.pay = n
		case "to":
			c.to = v
		case "memo":
			c.memo = v
		default:
			return c, errors.New("unknown key " + strconv.Quote(k))
		}
	}
	if c.pay > 0 && c.to == "" {
		return c, errors.New("pay needs to=RECIPIENT")
	}
	return c, nil
}

func (f *Fetcher) Tick() bool {
	f.Ticks++
	f.Price = sdk.NodePrice()
	f.Balance = sdk.WalletBalance()
	if f.cfg.url != "" {
		var status int
		var body []byte
		var err error
		if f.cfg.post {
			status, body, err = sdk.HTTPPost(f.cfg.url, "text/plain", []byte("tick="+strconv.FormatUint(f.Ticks, 10)))
		} else {
			status, body, err = sdk.HTTPGet(f.cfg.url)
		}
		if err != nil {
			f.Status, f.BodyLen = httpCode(err), 0
		} else {
			f.Status, f.BodyLen = int32(status), uint32(len(body))
			for _, b := range body {
				f.BodyFold = (f.BodyFold ^ uint64(b)) * 1099511628211
			}
		}
	}
	if f.cfg.pay > 0 {
		if _, err := sdk.WalletPay(f.cfg.pay, f.cfg.to, f.cfg.memo); err != nil {
			f.PayErr = payCode(err)
		} else {
			f.PayErr = 0
			f.Paid += f.cfg.pay
			f.Payments++
		}
	}
	f.Receipts = uint32(sdk.WalletReceiptCount())
	if f.Receipts > 0 {
		if r, err := sdk.WalletReceipt(int(f.Receipts) - 1); err == nil {
			f.Last = r
		}
	}
	sdk.Log("tick=" + strconv.FormatUint(f.Ticks, 10) + " status=" + strconv.Itoa(int(f.Status)) +
		" bytes=" + strconv.Itoa(int(f.BodyLen)) + " paid=" + strconv.FormatInt(f.Paid, 10) +
		" balance=" + strconv.FormatInt(f.Balance, 10))
	return false
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

func (f *Fetcher) Marshal() []byte {
	return sdk.NewEncoder(64 + len(f.Last)).Uint8(stateVersion).Uint64(f.Ticks).
		Int32(f.Status).Uint32(f.BodyLen).Uint64(f.BodyFold).Int64(f.Paid).Uint32(f.Payments).
		Int32(f.PayErr).Int64(f.Balance).Int64(f.Price).Uint32(f.Receipts).Bytes(f.Last).Finish()
}

// Unmarshal restores the state; empty input means a new agent. Corrupt
// input panics instead of silently resetting.
func (f *Fetcher) Unmarshal(b []byte) {
	*f = Fetcher{cfg: f.cfg}
	if len(b) == 0 {
		return
	}
	d := sdk.NewDecoder(b)
	if v := d.Uint8(); v != stateVersion && d.Err() == nil {
		panic("fetcher: state version " + strconv.Itoa(int(v)) + ", this build reads version 1")
	}
	f.Ticks, f.Status, f.BodyLen, f.BodyFold = d.Uint64(), d.Int32(), d.Uint32(), d.Uint64()
	f.Paid, f.Payments, f.PayErr = d.Int64(), d.Uint32(), d.Int32()
	f.Balance, f.Price, f.Receipts, f.Last = d.Int64(), d.Int64(), d.Uint32(), d.Bytes()
	if err := d.Finish(); err != nil {
		panic("fetcher: corrupt state: " + err.Error())
	}
}

func init() { sdk.Run(&Fetcher{}) }

func main() {}
