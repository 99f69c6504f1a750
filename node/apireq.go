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
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	var req PublishRequest
	if err := dec.Decode(&req); err != nil {
		return PublishRequest{}, fmt.Errorf("%w: body is not a publish request: %w (want {\"wasm\": base64, \"manifest\": {...}, \"budget_microcents\": N})", ErrBadRequest, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return PublishRequest{}, fmt.Errorf("%w: trailing data after the JSON object", ErrBadRequest)
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
	return req, nil
}

// parseDrainTimeout reads the timeout query parameter of POST /v1/drain: ""
// means DefaultDrainTimeout, anything else must be a positive Go duration.
// Errors wrap ErrBadRequest.
func parseDrainTimeout(v string) (time.Duration, error) {
	if v == "" {
		return DefaultDrainTimeout, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%w: timeout %q is not a positive duration like 30s", ErrBadRequest, v)
	}
	return d, nil
}
