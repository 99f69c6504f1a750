package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ipfs/go-cid"
)

// ErrBadRequest: an API request body or parameter is malformed; the message
// says which part and what a good one looks like.
var ErrBadRequest = errors.New("node: bad API request")

// DefaultDrainTimeout is how long POST /v1/drain waits when no timeout is given.
const DefaultDrainTimeout = 60 * time.Second

// decodePublishRequest reads the body of POST /v1/agents strictly: one JSON
// object with no unknown fields and nothing after it, a non-empty module and
// a positive budget. The manifest is checked later by Publish (it needs
// agents.ParseManifest's full validation). Errors wrap ErrBadRequest; a body
// cut off by http.MaxBytesReader also wraps the *http.MaxBytesError.
func decodePublishRequest(body io.Reader) (PublishRequest, error) {
	var req PublishRequest
	if err := decodeStrict(body, &req, "publish", `{"wasm": base64, "manifest": {...}, "budget_microcents": N, "min_replicas": N (optional)}`); err != nil {
		return PublishRequest{}, err
	}
	switch {
	case len(req.Wasm) == 0 && req.Module == "":
		return PublishRequest{}, fmt.Errorf("%w: wasm is empty (send the module as \"wasm\", or name one stored on this node as \"module\")", ErrBadRequest)
	case len(req.Wasm) > 0 && req.Module != "":
		return PublishRequest{}, fmt.Errorf("%w: both wasm and module are set; send one", ErrBadRequest)
	case req.Module != "":
		if _, err := cid.Decode(req.Module); err != nil {
			return PublishRequest{}, fmt.Errorf("%w: module %q is not a CID: %v", ErrBadRequest, req.Module, err)
		}
	}
	if req.Budget <= 0 {
		return PublishRequest{}, fmt.Errorf("%w: budget_microcents must be positive, got %d", ErrBadRequest, req.Budget)
	}
	if req.MinReplicas != nil && *req.MinReplicas < 0 {
		return PublishRequest{}, fmt.Errorf("%w: min_replicas must be 0 or more, got %d", ErrBadRequest, *req.MinReplicas)
	}
	return req, nil
}

// parseDrainTimeout reads the timeout query parameter of POST /v1/drain: ""
// means DefaultDrainTimeout, anything else must be a positive Go duration.
// Errors wrap ErrBadRequest.
func parseDrainTimeout(v string) (time.Duration, error) { return parseTimeout(v, DefaultDrainTimeout) }

// ConnectRequest is the body of POST /v1/peers/connect.
type ConnectRequest struct {
	// Addr is the peer's multiaddr, ending in /p2p/<peer id>.
	Addr string `json:"addr"`
}

// ConnectResult answers POST /v1/peers/connect.
type ConnectResult struct {
	Peer  string   `json:"peer"`
	Addrs []string `json:"addrs"` // the remote addresses of the connections to it
}

// decodeConnectRequest reads the body of POST /v1/peers/connect strictly
// (one JSON object, no unknown fields, an address). The address itself is
// checked by Mesh.Connect. Errors wrap ErrBadRequest.
func decodeConnectRequest(body io.Reader) (ConnectRequest, error) {
	const want = `{"addr": "/ip4/…/tcp/…/p2p/<peer id>"}`
	var req ConnectRequest
	if err := decodeStrict(body, &req, "connect", want); err != nil {
		return ConnectRequest{}, err
	}
	if req.Addr == "" {
		return ConnectRequest{}, fmt.Errorf("%w: addr is empty (want %s)", ErrBadRequest, want)
	}
	return req, nil
}

// decodeStrict decodes body into v: one JSON object, no unknown fields,
// nothing after it. Errors wrap ErrBadRequest (and, for a body cut off by
// http.MaxBytesReader, the *http.MaxBytesError) and show want.
func decodeStrict(body io.Reader, v any, what, want string) error {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: body is not a %s request: %w (want %s)", ErrBadRequest, what, err, want)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
	}
	return nil
}

// parseTimeout reads a timeout query parameter: "" means def, anything
// else must be a positive Go duration. Errors wrap ErrBadRequest.
func parseTimeout(v string, def time.Duration) (time.Duration, error) {
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: timeout %q is not a positive duration like 30s", ErrBadRequest, v)
	}
	return d, nil
}
