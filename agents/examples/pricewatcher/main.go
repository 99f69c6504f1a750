// Command pricewatcher is an example agent that acts: every tick it GETs a
// price from a URL with the http capability, parses {"price": <number>},
// and keeps the last, lowest and highest price, how many readings it took
// and how many fetches failed. Its args are space-separated key=value
// pairs:
//
//	url=URL   the price URL (required), e.g. http://127.0.0.1:8402/price
//
// A fetch fails on a transport error (a negative ABI code), a status other
// than 200, or a body that is not {"price": <number>}; the failure is
// counted and logged, and the tick carries on. Everything it keeps comes
// from what the tick observed (the recorded HTTP answer), so a replay of a
// tick reaches the same state byte for byte.
package main

import (
	"encoding/json"
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

const stateVersion = 1

// PriceWatcher's state is these fields (url comes from args, not state).
type PriceWatcher struct {
	url        string
	Ticks      uint64
	Count      uint64  // successful readings
	Failed     uint64  // failed fetches: transport errors, non-200 statuses, bad bodies
	LastStatus int32   // the last fetch's HTTP status, or its ABI code (-1..-5)
	Last       float64 // the last price read (meaningful once Count > 0)
	Min, Max   float64
}

// Init reads args; bad args panic (a trap in agent_init the publisher sees).
func (w *PriceWatcher) Init() {
	url, err := parseArgs(sdk.Args())
	if err != nil {
		panic("pricewatcher: bad args: " + err.Error())
	}
	*w = PriceWatcher{url: url}
}

func parseArgs(args string) (string, error) {
	var url string
	for _, kv := range strings.Fields(args) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return "", errors.New("want key=value, got " + strconv.Quote(kv))
		}
		switch k {
		case "url":
			url = v
		default:
			return "", errors.New("unknown key " + strconv.Quote(k))
		}
	}
	if !strings.HasPrefix(url, "http://") && !strings.HasPrefix(url, "https://") {
		return "", errors.New("want url=http://… or url=https://…, got " + strconv.Quote(url))
	}
	return url, nil
}

// parsePrice reads {"price": <number>}: other fields are ignored, a
// missing or non-numeric price is an error.
func parsePrice(body []byte) (float64, error) {
	var v struct {
		Price *float64 `json:"price"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return 0, err
	}
	if v.Price == nil {
		return 0, errors.New(`no "price" field`)
	}
	return *v.Price, nil
}

func (w *PriceWatcher) Tick() bool {
	w.Ticks++
	line := "tick=" + strconv.FormatUint(w.Ticks, 10)
	status, body, err := sdk.HTTPGet(w.url)
	var price float64
	switch {
	case err != nil:
		w.LastStatus = httpCode(err)
		err = errors.New("fetch failed: " + err.Error())
	case status != 200:
		w.LastStatus = int32(status)
		err = errors.New("status " + strconv.Itoa(status))
	default:
		w.LastStatus = 200
		price, err = parsePrice(body)
		if err != nil {
			err = errors.New("bad body: " + err.Error())
		}
	}
	if err != nil {
		w.Failed++
		sdk.Log(line + " error=" + strconv.Quote(err.Error()) + " failed=" + strconv.FormatUint(w.Failed, 10))
		return false
	}
	if w.Count == 0 {
		w.Min, w.Max = price, price
	}
	w.Count++
	w.Last, w.Min, w.Max = price, math.Min(w.Min, price), math.Max(w.Max, price)
	sdk.Log(line + " price=" + fmtFloat(price) + " min=" + fmtFloat(w.Min) + " max=" + fmtFloat(w.Max) +
		" count=" + strconv.FormatUint(w.Count, 10) + " failed=" + strconv.FormatUint(w.Failed, 10))
	return false
}

func fmtFloat(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// httpCode maps the SDK's errors back to the ABI codes kept in state.
func httpCode(err error) int32 {
	for code, e := range []error{nil, sdk.ErrHTTPTransport, sdk.ErrHTTPBadRequest, sdk.ErrHTTPNotAllowed, sdk.ErrHTTPTimeout, sdk.ErrHTTPTooLarge} {
		if e != nil && errors.Is(err, e) {
			return int32(-code)
		}
	}
	return -1
}

func (w *PriceWatcher) Marshal() []byte {
	return sdk.NewEncoder(53).Uint8(stateVersion).Uint64(w.Ticks).Uint64(w.Count).Uint64(w.Failed).
		Int32(w.LastStatus).Float64(w.Last).Float64(w.Min).Float64(w.Max).Finish()
}

// Unmarshal restores the state; empty input means a new agent. Corrupt
// input panics instead of silently resetting.
func (w *PriceWatcher) Unmarshal(b []byte) {
	*w = PriceWatcher{url: w.url}
	if len(b) == 0 {
		return
	}
	d := sdk.NewDecoder(b)
	if v := d.Uint8(); v != stateVersion && d.Err() == nil {
		panic("pricewatcher: state version " + strconv.Itoa(int(v)) + ", this build reads version 1")
	}
	w.Ticks, w.Count, w.Failed, w.LastStatus = d.Uint64(), d.Uint64(), d.Uint64(), d.Int32()
	w.Last, w.Min, w.Max = d.Float64(), d.Float64(), d.Float64()
	if err := d.Finish(); err != nil {
		panic("pricewatcher: corrupt state: " + err.Error())
	}
}

func init() { sdk.Run(&PriceWatcher{}) }

func main() {}
