package node

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

// FuzzPublishRequest: the publish body decoder and the drain timeout parser
// of the local API. A rejected body or timeout wraps ErrBadRequest; an
// accepted body has a module and a positive budget and survives a JSON round
// trip unchanged; an accepted timeout is positive and prints back to itself.
func FuzzPublishRequest(f *testing.F) {
	f.Add([]byte(`{"wasm":"AGFzbQEAAAA=","manifest":{"capabilities":["clock"]},"budget_microcents":1000000}`), "30s")
	f.Add([]byte(`{"wasm":"AGFzbQEAAAA=","manifest":{},"budget_microcents":1}`), "")
	f.Add([]byte(`{"wasm":"AGFzbQEAAAA=","manifest":{},"budget_microcents":1} {}`), "-1s")
	f.Add([]byte(`{"wasm":"","manifest":{},"budget_microcents":1}`), "1h2m3.5s")
	f.Add([]byte(`{"wasm":"AGFz","budget_microcents":"1"}`), "9223372036854775807ns")
	f.Add([]byte(`{"wasm":"AGFz","budget_microcents":1,"extra":true}`), "0")
	f.Add([]byte(`{"module":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","manifest":{},"budget_microcents":5}`), "")
	f.Add([]byte(`{"module":"not-a-cid","manifest":{},"budget_microcents":5}`), "")
	f.Add([]byte(`{"wasm":"AGFz","module":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","budget_microcents":5}`), "")
	f.Fuzz(func(t *testing.T, body []byte, timeout string) {
		req, err := decodePublishRequest(bytes.NewReader(body))
		if err != nil {
			if !errors.Is(err, ErrBadRequest) {
				t.Fatalf("error without ErrBadRequest: %v", err)
			}
		} else {
			if (len(req.Wasm) == 0) == (req.Module == "") || req.Budget <= 0 {
				t.Fatalf("accepted not exactly one of wasm and module, or a non-positive budget: %+v", req)
			}
			if _, err := cid.Decode(req.Module); req.Module != "" && err != nil {
				t.Fatalf("accepted module %q that is not a CID", req.Module)
			}
			again, err := json.Marshal(req)
			if err != nil {
				t.Fatalf("accepted request does not re-encode: %v", err)
			}
			back, err := decodePublishRequest(bytes.NewReader(again))
			if err != nil {
				t.Fatalf("re-encoded request rejected: %v\n%s", err, again)
			}
			// RawMessage keeps the manifest's bytes; compare it as JSON.
			if !bytes.Equal(back.Wasm, req.Wasm) || back.Module != req.Module || back.Budget != req.Budget || !sameJSON(back.Manifest, req.Manifest) {
				t.Fatalf("round trip changed the request:\n %+v\n %+v", req, back)
			}
		}
		d, err := parseDrainTimeout(timeout)
		switch {
		case err != nil && !errors.Is(err, ErrBadRequest):
			t.Fatalf("timeout error without ErrBadRequest: %v", err)
		case err == nil && d <= 0:
			t.Fatalf("accepted non-positive timeout %v from %q", d, timeout)
		case err == nil && timeout != "":
			if d2, err := parseDrainTimeout(d.String()); err != nil || d2 != d {
				t.Fatalf("timeout %q = %v does not round-trip: %v %v", timeout, d, d2, err)
			}
		}
	})
}

func sameJSON(a, b json.RawMessage) bool {
	if len(a) == 0 || len(b) == 0 {
		return len(a) == len(b)
	}
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}

// TestPublishRequestTooLarge: a body over the cap is reported as too large
// (413), not as malformed JSON, through decodePublishRequest's error chain.
func TestPublishRequestTooLarge(t *testing.T) {
	rec := httptest.NewRecorder()
	body := `{"wasm":"` + strings.Repeat("A", 100) + `","manifest":{},"budget_microcents":1}`
	_, err := decodePublishRequest(http.MaxBytesReader(rec, io.NopCloser(strings.NewReader(body)), 50))
	var mbe *http.MaxBytesError
	if !errors.Is(err, ErrBadRequest) || !errors.As(err, &mbe) {
		t.Fatalf("got %v, want ErrBadRequest wrapping *http.MaxBytesError", err)
	}
}
