// Command counter is the benchmark and replay workhorse: a u64 counter in a
// state buffer whose size comes from the manifest's args
// ("state_size=65536"; default 64 bytes). Each tick increments the counter
// and rewrites one 4 KiB page of the buffer with a pattern derived from the
// counter, so ticks stay cheap while the state changes deterministically.
// It avoids fmt (sdk.Log with strconv instead of sdk.Logf) to keep the
// module small, since benchmarks instantiate it many times.
package main

import (
	"encoding/binary"
	"errors"
	"strconv"
	"strings"

	"github.com/igor-mesh/igor-node/agents/sdk"
)

const (
	defaultStateSize = 64
	minStateSize     = 8        // room for the counter
	maxStateSize     = 64 << 20 // the hard cap on checkpoint size
	pageSize         = 4096
)

type Counter struct {
	n    uint64
	size int    // from args
	buf  []byte // nil until first needed, then len(buf) == size; buf[:8] mirrors n
}

// Init sizes the buffer from args. Malformed args are a configuration
// error the publisher must see, so they panic (a trap in agent_init)
// instead of silently falling back to the default.
func (c *Counter) Init() {
	size, err := parseArgs(sdk.Args())
	if err != nil {
		panic("counter: bad args: " + err.Error())
	}
	c.n, c.size, c.buf = 0, size, nil
}

// state returns the buffer, allocating it on first use: an instance that is
// about to be resumed adopts the resume buffer instead, so a 16 MiB state is
// not held twice.
func (c *Counter) state() []byte {
	if c.buf == nil {
		c.buf = make([]byte, c.size)
	}
	return c.buf
}

// parseArgs reads whitespace- or comma-separated key=value pairs. The only
// key is state_size.
func parseArgs(args string) (int, error) {
	size := defaultStateSize
	fields := strings.FieldsFunc(args, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return 0, errors.New(strconv.Quote(f) + " is not key=value (example: state_size=65536)")
		}
		switch k {
		case "state_size":
			n, err := strconv.Atoi(v)
			if err != nil || n < minStateSize || n > maxStateSize {
				return 0, errors.New("state_size=" + strconv.Quote(v) + ": want an integer from " +
					strconv.Itoa(minStateSize) + " to " + strconv.Itoa(maxStateSize))
			}
			size = n
		default:
			return 0, errors.New("unknown key " + strconv.Quote(k) + " (known: state_size)")
		}
	}
	return size, nil
}

func (c *Counter) Tick() bool {
	buf := c.state()
	c.n++
	binary.LittleEndian.PutUint64(buf, c.n)
	if c.n == 1 {
		sdk.Log("counter: state_size=" + strconv.Itoa(len(buf)))
	}
	// Rewrite one page of the payload (buf[8:]), cycling through pages.
	payload := buf[minStateSize:]
	if len(payload) > 0 {
		pages := (len(payload) + pageSize - 1) / pageSize
		start := int((c.n-1)%uint64(pages)) * pageSize
		page := payload[start:min(start+pageSize, len(payload))]
		x := c.n * 0x9E3779B97F4A7C15
		for i := range page {
			x ^= x << 13
			x ^= x >> 7
			x ^= x << 17
			page[i] = byte(x)
		}
	}
	return false
}

// Marshal returns the buffer itself: the SDK holds it only until the host
// has copied it.
func (c *Counter) Marshal() []byte { return c.state() }

// Unmarshal adopts b as the buffer (the SDK hands over ownership).
func (c *Counter) Unmarshal(b []byte) {
	if len(b) == 0 {
		c.n, c.buf = 0, nil
		return
	}
	if len(b) != c.size {
		panic("counter: state is " + strconv.Itoa(len(b)) + " bytes but args configure state_size=" + strconv.Itoa(c.size))
	}
	c.buf = b
	c.n = binary.LittleEndian.Uint64(b)
}

func init() { sdk.Run(&Counter{}) }

func main() {}
