package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

// LogsProtocol streams an agent's log lines from the node running it
// (docs/PROTOCOL.md "Agent logs"): one request, then one frame per line,
// framed as StatusProtocol, and a last frame that says why it ended.
const LogsProtocol = protocol.ID("/igor/logs/1.0.0")

const (
	logRing       = 256         // recent lines kept per agent
	logRingBytes  = 16 << 10    // and at most this many bytes of them (4,096 agents: 64 MiB at worst)
	maxLogAgents  = 4096        // agents with lines kept per node
	logSubBuffer  = 256         // lines queued per follower before it misses some
	logHoldCheck  = time.Second // how often a following stream checks that this node still runs the agent
	logRelocate   = 500 * time.Millisecond
	maxLogMsgSize = 4096 // bytes of one line sent (longer ones are cut)
)

// LogLine is one line an agent logged, on the node that ran it.
type LogLine struct {
	Time int64  `json:"time_unix_ns"`
	Node string `json:"node"`
	Msg  string `json:"msg"`
}

type logsRequest struct {
	Version int    `json:"version"`
	DID     string `json:"did"`
	Since   int64  `json:"since,omitempty"` // only lines after this time (unix ns)
	Follow  bool   `json:"follow,omitempty"`
}

type logsFrame struct {
	Line *LogLine `json:"line,omitempty"`
	// End: the stream ends (no longer running here, not the holder, bad request).
	End    string `json:"end,omitempty"`
	Holder string `json:"holder,omitempty"` // with End: the holder this node knows
	Missed int    `json:"missed,omitempty"` // lines dropped because the reader fell behind
}

// logHub keeps the recent log lines of the agents this node runs and hands
// new ones to followers. Writers never block: a follower that falls behind
// misses lines (counted).
type logHub struct {
	mu    sync.Mutex
	rings map[string][]LogLine
	bytes map[string]int // bytes of the messages in each ring
	subs  map[string]map[*logSub]struct{}
}

type logSub struct {
	ch     chan LogLine
	missed int // guarded by logHub.mu
}

func newLogHub() *logHub {
	return &logHub{rings: map[string][]LogLine{}, bytes: map[string]int{}, subs: map[string]map[*logSub]struct{}{}}
}

func (h *logHub) add(node, did, msg string) {
	if len(msg) > maxLogMsgSize {
		msg = msg[:maxLogMsgSize]
	}
	l := LogLine{Time: time.Now().UnixNano(), Node: node, Msg: msg}
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.rings[did]
	if !ok && len(h.rings) >= maxLogAgents {
		clear(h.rings) // bounded: start over rather than grow
		clear(h.bytes)
	}
	n := h.bytes[did] + len(msg)
	drop := 0
	for drop < len(r) && (len(r)-drop >= logRing || n > logRingBytes) {
		n -= len(r[drop].Msg)
		drop++
	}
	if drop > 0 {
		r = append(r[:0], r[drop:]...)
	}
	h.rings[did], h.bytes[did] = append(r, l), n
	for s := range h.subs[did] {
		select {
		case s.ch <- l:
		default:
			s.missed++
		}
	}
}

// subscribe returns the kept lines after since and a follower of new ones.
func (h *logHub) subscribe(did string, since int64) ([]LogLine, *logSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	var back []LogLine
	for _, l := range h.rings[did] {
		if l.Time > since {
			back = append(back, l)
		}
	}
	s := &logSub{ch: make(chan LogLine, logSubBuffer)}
	if h.subs[did] == nil {
		h.subs[did] = map[*logSub]struct{}{}
	}
	h.subs[did][s] = struct{}{}
	return back, s
}

func (h *logHub) unsubscribe(did string, s *logSub) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.subs[did], s)
	if len(h.subs[did]) == 0 {
		delete(h.subs, did)
	}
}

func (h *logHub) takeMissed(s *logSub) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := s.missed
	s.missed = 0
	return n
}

// runsHere reports whether this node holds did's lease and runs it.
func (m *Mesh) runsHere(did string) (bool, string) {
	st, err := m.Custody.Agent(did)
	if err != nil {
		return false, ""
	}
	return st.Role == lease.Holder.String() && st.Running, st.Holder
}

// serveLogs sends did's lines after since to send, and with follow the new
// ones while this node runs the agent. It returns why it ended.
func (m *Mesh) serveLogs(ctx context.Context, did string, since int64, follow bool, send func(logsFrame) error) (string, error) {
	back, sub := m.logs.subscribe(did, since)
	defer m.logs.unsubscribe(did, sub)
	for i := range back {
		if err := send(logsFrame{Line: &back[i]}); err != nil {
			return "", err
		}
	}
	if !follow {
		return "done", nil
	}
	check := time.NewTicker(logHoldCheck)
	defer check.Stop()
	for {
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case l := <-sub.ch:
			if err := send(logsFrame{Line: &l, Missed: m.logs.takeMissed(sub)}); err != nil {
				return "", err
			}
		case <-check.C:
			if ok, _ := m.runsHere(did); !ok {
				// Lines logged before the stop are queued already.
				for {
					select {
					case l := <-sub.ch:
						if err := send(logsFrame{Line: &l}); err != nil {
							return "", err
						}
						continue
					default:
					}
					break
				}
				return "not-running", nil
			}
		}
	}
}

func (m *Mesh) handleLogs(s network.Stream) {
	defer s.Close()
	s.SetReadDeadline(time.Now().Add(statusTimeout))
	var req logsRequest
	if err := readMsg(bufio.NewReader(s), &req); err != nil {
		s.Reset()
		return
	}
	s.SetReadDeadline(time.Time{})
	if req.Version != 1 {
		_ = writeMsg(s, logsFrame{End: fmt.Sprintf("bad-request: logs request version %d; this node speaks 1", req.Version)})
		return
	}
	if _, err := agents.ParseDID(req.DID); err != nil {
		_ = writeMsg(s, logsFrame{End: "bad-request: " + err.Error()})
		return
	}
	if ok, holder := m.runsHere(req.DID); !ok && req.Follow {
		_ = writeMsg(s, logsFrame{End: "not-running", Holder: holder})
		return
	}
	ctx, cancel := context.WithCancel(m.ctx)
	defer cancel()
	send := func(f logsFrame) error {
		s.SetWriteDeadline(time.Now().Add(statusTimeout))
		return writeMsg(s, f)
	}
	why, err := m.serveLogs(ctx, req.DID, req.Since, req.Follow, send)
	if err != nil {
		s.Reset()
		return
	}
	_ = send(logsFrame{End: why})
}

// FollowLogs hands out the agent's log lines after since, from whichever
// node runs it: it finds the holder as a query does and reads its lines;
// with follow it goes on while the agent moves — a handoff, a failover —
// asking the next holder for the lines after the last one seen, until ctx
// ends. Without follow it returns after the holder's kept lines.
func (m *Mesh) FollowLogs(ctx context.Context, did string, since int64, follow bool, out func(LogLine) error) error {
	if _, err := agents.ParseDID(did); err != nil {
		return err
	}
	var lastErr error
	for {
		live, err := m.locateHolder(ctx, did)
		if err == nil {
			var p peer.ID
			if p, err = peer.Decode(live.Peer); err == nil {
				since, err = m.readLogs(ctx, p, did, since, follow, out)
			}
		}
		if err != nil {
			if errors.Is(err, errLogsOut) || ctx.Err() != nil {
				return errors.Join(ctx.Err(), err)
			}
			lastErr = err
			if !follow {
				return err
			}
			m.Logger.Debug("logs: no holder to follow yet", "agent", did, "err", lastErr)
		} else if !follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(logRelocate):
		}
	}
}

// errLogsOut wraps an error of the consumer: following stops.
var errLogsOut = errors.New("logs consumer")

// readLogs reads one holder's stream (this node's own hub when it is the
// holder) and returns the time of the last line seen.
func (m *Mesh) readLogs(ctx context.Context, p peer.ID, did string, since int64, follow bool, out func(LogLine) error) (int64, error) {
	emit := func(f logsFrame) error {
		if f.Line == nil || f.Line.Time <= since {
			return nil
		}
		since = f.Line.Time
		if err := out(*f.Line); err != nil {
			return fmt.Errorf("%w: %w", errLogsOut, err)
		}
		return nil
	}
	if p == m.Host.ID() {
		_, err := m.serveLogs(ctx, did, since, follow, emit)
		return since, err
	}
	s, err := m.Host.NewStream(ctx, p, LogsProtocol)
	if err != nil {
		return since, err
	}
	defer s.Close()
	stop := context.AfterFunc(ctx, func() { s.Reset() })
	defer stop()
	if err := writeMsg(s, logsRequest{Version: 1, DID: did, Since: since, Follow: follow}); err != nil {
		s.Reset()
		return since, err
	}
	r := bufio.NewReader(s)
	for {
		var f logsFrame
		if err := readMsg(r, &f); err != nil {
			s.Reset()
			return since, err
		}
		if f.End != "" {
			return since, nil
		}
		if err := emit(f); err != nil {
			return since, err
		}
	}
}

// apiLogs is GET /v1/agents/{did}/logs[?follow=1][&since=UNIX_NS]: the
// agent's log lines as Server-Sent Events, one `data: {LogLine}` event per
// line; without follow the stream ends after the holder's kept lines.
func (m *Mesh) apiLogs(w http.ResponseWriter, r *http.Request) {
	did := r.PathValue("did")
	q := r.URL.Query()
	follow := q.Get("follow") == "1"
	var since int64
	if v := q.Get("since"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%w: since=%q: want unix nanoseconds ≥ 0", ErrBadRequest, v))
			return
		}
		since = n
	}
	if _, err := agents.ParseDID(did); err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	flusher, _ := w.(http.Flusher)
	started := false
	start := func() {
		if !started {
			started = true
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
		}
	}
	err := m.FollowLogs(r.Context(), did, since, follow, func(l LogLine) error {
		start()
		data, err := json.Marshal(l)
		if err != nil {
			return err
		}
		if _, err := fmt.Fprintf(w, "data: %s\n\n", data); err != nil {
			return err
		}
		if flusher != nil {
			flusher.Flush()
		}
		return nil
	})
	if !started {
		if err != nil && r.Context().Err() == nil {
			writeErr(w, statusOf(err), err)
			return
		}
		start()
	}
	if err != nil && r.Context().Err() == nil {
		fmt.Fprintf(w, "event: error\ndata: %q\n\n", err.Error())
	}
}
