package wasmexec

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
)

// Limits on guest stdout/stderr, so a chatty or hostile guest cannot flood
// the node's log.
const (
	maxOutputLine    = 4096     // longer lines are split
	maxOutputPerCall = 64 << 10 // bytes per stream forwarded per guest call
	outputHeadBytes  = 4096     // stderr kept per call for error messages
)

// guestOutput is a guest's WASI stdout or stderr: lines go to the
// Runtime's Logger, and the beginning of each call's output is kept so a
// trap can quote the guest's own explanation (a Go panic message).
type guestOutput struct {
	inst   *Instance
	stream string

	mu        sync.Mutex
	line      []byte
	forwarded int
	dropped   bool
	head      bytes.Buffer // first outputHeadBytes of this call's output
}

func (o *guestOutput) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if room := outputHeadBytes - o.head.Len(); room > 0 {
		o.head.Write(p[:min(room, len(p))])
	}
	rest := p
	for len(rest) > 0 {
		nl := bytes.IndexByte(rest, '\n')
		if nl < 0 {
			o.line = append(o.line, rest...)
			rest = nil
		} else {
			o.line = append(o.line, rest[:nl]...)
			rest = rest[nl+1:]
			o.emit()
		}
		for len(o.line) >= maxOutputLine {
			keep := bytes.Clone(o.line[maxOutputLine:])
			o.line = o.line[:maxOutputLine]
			o.emit()
			o.line = keep
		}
	}
	return len(p), nil
}

// emit logs the buffered line; o.mu is held.
func (o *guestOutput) emit() {
	line := string(o.line)
	o.line = o.line[:0]
	if o.dropped {
		return
	}
	if !o.inst.allowLog() {
		return // the head buffer still has it, for error messages
	}
	o.forwarded += len(line) + 1
	level := slog.LevelInfo
	if o.stream == "stderr" {
		level = slog.LevelWarn
	}
	lg := o.inst.rt.logger
	if o.forwarded > maxOutputPerCall {
		o.dropped = true
		lg.Warn("agent output truncated", "agent", o.inst.did, "stream", o.stream, "limit_bytes", maxOutputPerCall)
		return
	}
	lg.Log(context.Background(), level, "agent output", "agent", o.inst.did, "stream", o.stream, "line", line)
}

// reset starts a new guest call.
func (o *guestOutput) reset() {
	o.mu.Lock()
	o.forwarded, o.dropped = 0, false
	o.head.Reset()
	o.mu.Unlock()
}

// flush emits a partial last line at the end of a call.
func (o *guestOutput) flush() {
	o.mu.Lock()
	if len(o.line) > 0 {
		o.emit()
	}
	o.mu.Unlock()
}

// headString returns the beginning of this call's output.
func (o *guestOutput) headString() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.head.String()
}

// excerpt returns ": <the guest's explanation>" for an error message (the
// Go runtime's "panic: ..." or "fatal error: ..." line, else the first
// line), or "" if the guest wrote nothing.
func (o *guestOutput) excerpt() string {
	out := o.headString()
	var first string
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if first == "" {
			first = line
		}
		if strings.HasPrefix(line, "panic: ") || strings.HasPrefix(line, "fatal error: ") {
			first = line
			break
		}
	}
	if first == "" {
		return ""
	}
	if len(first) > 300 {
		first = first[:300] + "…"
	}
	return ": guest stderr: " + first
}
