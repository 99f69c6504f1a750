// Command poster is an example agent whose every tick is an effect another
// system counts: it POSTs {"agent": "<name>", "tick": N} to a URL, N being
// its own tick counter (kept in its state), and counts the posts accepted
// (2xx) and failed (any other status, or a transport error). It logs
// "tick=N posted status=S" (S: the HTTP status, or the ABI code -1..-5).
// Its args are space-separated key=value pairs:
//
//	url=URL     where to POST (required), e.g. http://127.0.0.1:8402/count
//	name=NAME   the "agent" field (default "poster"): 1 to 128 of
//	            A-Z a-z 0-9 . _ : - (so a DID fits and no JSON escaping
//	            is needed)
//
// The agent does nothing special about retries: the host journals every
// request before sending it and adds an Idempotency-Key header derived
// from the agent, the tick and the request, so a tick re-run by a new
// holder after a failover sends the same request with the same key, and a
// server that honours the header applies it once.
package main

import (
	"errors"
	"strconv"
	"strings"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

const stateVersion = 1

const maxName = 128

type config struct{ url, name string }

// Poster's state is these fields (cfg comes from args, not state).
type Poster struct {
	cfg        config
	Ticks      uint64 // ticks completed; tick N posts "tick": N
	Accepted   uint64 // posts answered 2xx
	Failed     uint64 // posts answered otherwise, or not at all
	LastStatus int32  // the last post's HTTP status, or its ABI code (-1..-5)
}

// Init reads args; bad args panic (a trap in agent_init the publisher sees).
func (p *Poster) Init() {
	cfg, err := parseArgs(sdk.Args())
	if err != nil {
		panic("poster: bad args: " + err.Error())
	}
	*p = Poster{cfg: cfg}
}

func parseArgs(args string) (config, error) {
	c := config{name: "poster"}
	for _, kv := range strings.Fields(args) {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return c, errors.New("want key=value, got " + strconv.Quote(kv))
		}
		switch k {
		case "url":
			c.url = v
		case "name":
			if !validName(v) {
				return c, errors.New("name must be 1 to 128 of A-Z a-z 0-9 . _ : -, got " + strconv.Quote(v))
			}
			c.name = v
		default:
			return c, errors.New("unknown key " + strconv.Quote(k))
		}
	}
	if !strings.HasPrefix(c.url, "http://") && !strings.HasPrefix(c.url, "https://") {
		return c, errors.New("want url=http://… or url=https://…, got " + strconv.Quote(c.url))
	}
	return c, nil
}

func validName(s string) bool {
	if s == "" || len(s) > maxName {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// body is the JSON posted in tick n; the name needs no escaping.
func (c config) body(n uint64) []byte {
	return []byte(`{"agent":"` + c.name + `","tick":` + strconv.FormatUint(n, 10) + `}`)
}

func (p *Poster) Tick() bool {
	p.Ticks++
	status, _, err := sdk.HTTPPost(p.cfg.url, "application/json", p.cfg.body(p.Ticks))
	switch {
	case err != nil:
		p.LastStatus = httpCode(err)
		p.Failed++
	case status >= 200 && status < 300:
		p.LastStatus = int32(status)
		p.Accepted++
	default:
		p.LastStatus = int32(status)
		p.Failed++
	}
	sdk.Log("tick=" + strconv.FormatUint(p.Ticks, 10) + " posted status=" + strconv.Itoa(int(p.LastStatus)))
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

func (p *Poster) Marshal() []byte {
	return sdk.NewEncoder(29).Uint8(stateVersion).Uint64(p.Ticks).Uint64(p.Accepted).Uint64(p.Failed).
		Int32(p.LastStatus).Finish()
}

// Unmarshal restores the state; empty input means a new agent. Corrupt
// input panics instead of silently resetting.
func (p *Poster) Unmarshal(b []byte) {
	*p = Poster{cfg: p.cfg}
	if len(b) == 0 {
		return
	}
	d := sdk.NewDecoder(b)
	if v := d.Uint8(); v != stateVersion && d.Err() == nil {
		panic("poster: state version " + strconv.Itoa(int(v)) + ", this build reads version 1")
	}
	p.Ticks, p.Accepted, p.Failed, p.LastStatus = d.Uint64(), d.Uint64(), d.Uint64(), d.Int32()
	if err := d.Finish(); err != nil {
		panic("poster: corrupt state: " + err.Error())
	}
}

func init() { sdk.Run(&Poster{}) }

func main() {}
