// Package daemonapi is what the testnet harnesses (chaos, scale, faults)
// share to drive real igor-node daemons: one API request and its error
// answers, whether a daemon's process lives, and an environment that does
// not redirect the commands they run. It imports only the standard
// library: the harnesses check what the daemons say, with their own small
// types, and stay buildable while package node changes.
package daemonapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"
)

// HTTPError is a non-2xx answer of the API.
type HTTPError struct {
	Status int
	Msg    string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Msg) }

// ErrorOf is the *HTTPError of an answer: its {"error": …} message when
// it has one, else its body.
func ErrorOf(status int, data []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	msg := strings.TrimSpace(string(data))
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		msg = e.Error
	}
	return &HTTPError{status, msg}
}

// Do sends one request to url (body, when not nil, as JSON) within
// timeout and returns the answer's body (at most limit bytes), or an
// *HTTPError for a non-2xx answer.
func Do(ctx context.Context, c *http.Client, method, url string, body []byte, timeout time.Duration, limit int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode >= 300 {
		return nil, ErrorOf(resp.StatusCode, data)
	}
	return data, nil
}

// Alive reports whether pid runs (a zombie does not: daemons started by a
// script are reparented, and their reaper may be slow).
func Alive(pid int) bool {
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return false
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !errors.Is(err, os.ErrNotExist)
	}
	if i := bytes.LastIndexByte(data, ')'); i >= 0 && i+2 < len(data) {
		return data[i+2] != 'Z'
	}
	return true
}

// CleanEnv is this process's environment without IGOR_HOME and IGOR_API,
// which would redirect the igor-node commands a harness runs.
func CleanEnv() []string {
	return slices.DeleteFunc(os.Environ(), func(s string) bool {
		return strings.HasPrefix(s, "IGOR_HOME=") || strings.HasPrefix(s, "IGOR_API=")
	})
}
