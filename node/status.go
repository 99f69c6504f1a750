package node

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

// StatusProtocol asks a custody member for its own view of an agent
// (docs/PROTOCOL.md "Live status"): one request and one reply per stream,
// each a 4-byte big-endian length and a JSON object (as /igor/lease).
// Queries by DID ask the holder this way instead of reading the head
// record, which the holder republishes only when custody changes.
const StatusProtocol = protocol.ID("/igor/status/1.0.0")

const (
	// statusTimeout bounds one status question (dial, request, reply).
	statusTimeout = 2 * time.Second
	// maxHolderHints bounds the agents whose last known holder a node
	// remembers for queries.
	maxHolderHints = 4096
)

type statusRequest struct {
	Version int    `json:"version"`
	DID     string `json:"did"`
}

// LiveStatus is one custody member's own view of an agent, as it answers
// on StatusProtocol. It is the member's word, not signed: a query checks
// the checkpoint it names (Committed) against the agent's signatures.
type LiveStatus struct {
	OK    bool   `json:"ok"`
	Error string `json:"error,omitempty"`
	// Peer is the member that answered (set by the asker from the
	// authenticated stream, never read from the reply).
	Peer        string   `json:"-"`
	Role        string   `json:"role"` // follower, candidate, holder
	Running     bool     `json:"running"`
	Moving      bool     `json:"moving,omitempty"`
	Epoch       uint64   `json:"epoch"`
	Committed   string   `json:"committed,omitempty"` // holder: latest committed checkpoint
	Accepted    string   `json:"accepted,omitempty"`
	AcceptedSeq uint64   `json:"accepted_seq"`
	Holder      string   `json:"holder,omitempty"` // the holder it last heard from (or itself)
	Members     []string `json:"members,omitempty"`
	LeaseLeftMs int64    `json:"lease_left_ms,omitempty"` // holder: its lease's remaining time by its clock
	Tick        uint64   `json:"tick,omitempty"`          // holder: tick of the agent's latest checkpoint here
	StopReason  string   `json:"stop_reason,omitempty"`
	RunError    string   `json:"run_error,omitempty"`
}

// holding reports whether the member answered as the running (or
// establishing) holder with a live lease.
func (s *LiveStatus) holding() bool {
	return s.OK && s.Role == lease.Holder.String() && s.Committed != "" && s.LeaseLeftMs > 0
}

// state is the agent's status word for AgentStatus.Status.
func (s *LiveStatus) state() string {
	switch {
	case s.Moving:
		return "moving"
	case s.Running:
		return "running"
	case s.StopReason == string(hosting.StopBudget):
		return "exhausted"
	case s.RunError != "" || s.StopReason == string(hosting.StopFailed):
		return "failed"
	}
	return "stopped"
}

// liveStatus is this node's own view of did (what it answers on
// StatusProtocol).
func (m *Mesh) liveStatus(did string) *LiveStatus {
	st, err := m.Custody.Agent(did)
	if err != nil {
		return &LiveStatus{Error: err.Error(), Peer: m.PeerID()}
	}
	out := &LiveStatus{OK: true, Peer: m.PeerID(), Role: st.Role, Running: st.Running, Moving: st.Moving, Epoch: st.Epoch,
		Accepted: st.Accepted, AcceptedSeq: st.AcceptedSeq, Holder: st.Holder, Members: st.Members}
	if st.Role == lease.Holder.String() {
		out.Committed = st.Committed
		if left := time.Until(st.LeaseEnd); !st.LeaseEnd.IsZero() && left > 0 {
			out.LeaseLeftMs = max(left.Milliseconds(), 1)
		}
		if hs, ok := m.Svc.Status(did); ok {
			out.Tick, out.StopReason, out.RunError = hs.Tick, string(hs.StopReason), hs.Error
		}
	}
	return out
}

// handleStatus answers one status question.
func (m *Mesh) handleStatus(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(leaseReadTimeout))
	var req statusRequest
	if err := readMsg(bufio.NewReader(s), &req); err != nil {
		s.Reset()
		return
	}
	var reply *LiveStatus
	switch {
	case req.Version != 1:
		reply = &LiveStatus{Error: fmt.Sprintf("status request version %d; this node speaks 1", req.Version)}
	default:
		if _, err := agents.ParseDID(req.DID); err != nil {
			reply = &LiveStatus{Error: err.Error()}
		} else {
			reply = m.liveStatus(req.DID)
		}
	}
	_ = writeMsg(s, reply)
}

// askStatus asks member p about did (this node answers itself).
func (m *Mesh) askStatus(ctx context.Context, p peer.ID, did string) (*LiveStatus, error) {
	if p == m.Host.ID() {
		return m.liveStatus(did), nil
	}
	ctx, cancel := context.WithTimeout(ctx, statusTimeout)
	defer cancel()
	s, err := m.Host.NewStream(ctx, p, StatusProtocol)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if err := writeMsg(s, statusRequest{Version: 1, DID: did}); err != nil {
		s.Reset()
		return nil, err
	}
	var st LiveStatus
	if err := readMsg(bufio.NewReader(s), &st); err != nil {
		s.Reset()
		return nil, err
	}
	st.Peer = p.String()
	if !st.OK {
		return &st, fmt.Errorf("%s about %s: %s", p, did, st.Error)
	}
	return &st, nil
}

// findHolder asks custody members about did, starting with the given
// peers (the last holder this node found and its group, the head record's
// holder) and following what they say — the holder a member last heard
// from first, then the other members — until one answers as the holder
// with a live lease. Up to 8 questions are in flight at once, and a peer
// named in an answer is asked as soon as the answer comes: a dead peer
// (the holder remembered from before a failover) holds nobody up for its
// dial timeout. At most 24 peers are asked. It returns the holder's answer,
// or nil with the answers it got and the reason it found no holder. tried
// carries the peers asked across calls of one query.
func (m *Mesh) findHolder(ctx context.Context, did string, start []string, tried map[string]bool) (*LiveStatus, []*LiveStatus, error) {
	queue := slices.Clone(start)
	if _, err := m.Custody.Agent(did); err == nil {
		queue = append([]string{m.PeerID()}, queue...) // a member knows first-hand
	}
	type result struct {
		st  *LiveStatus
		err error
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel() // the questions still in flight
	results := make(chan result)
	var (
		answers         []*LiveStatus
		errs            []error
		inflight, asked int
	)
	launch := func() {
		for len(queue) > 0 && inflight < 8 && asked < 24 {
			p := queue[0]
			queue = queue[1:]
			if p == "" || tried[p] {
				continue
			}
			tried[p] = true
			id, err := peer.Decode(p)
			if err != nil {
				continue
			}
			inflight++
			asked++
			go func() {
				st, err := m.askStatus(rctx, id, did)
				select {
				case results <- result{st, err}:
				case <-rctx.Done():
				}
			}()
		}
	}
	launch()
	for inflight > 0 {
		var res result
		select {
		case res = <-results:
		case <-ctx.Done():
			errs = append(errs, ctx.Err())
			return nil, answers, fmt.Errorf("no member answered as the holder of %s: %w", did, errors.Join(errs...))
		}
		inflight--
		switch {
		case res.err != nil:
			errs = append(errs, res.err)
		case res.st.holding():
			return res.st, append(answers, res.st), nil
		default:
			answers = append(answers, res.st)
			queue = append(append([]string{res.st.Holder}, queue...), res.st.Members...)
		}
		launch()
	}
	if len(errs) == 0 && ctx.Err() != nil {
		errs = append(errs, ctx.Err())
	}
	return nil, answers, fmt.Errorf("no member answered as the holder of %s: %w", did, errors.Join(errs...))
}

// holderHint is what a node remembers of an agent's custody from its last
// query: the holder that answered and its group.
type holderHint struct {
	holder  string
	members []string
}

func (m *Mesh) holderHint(did string) holderHint {
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	return m.holderHints[did]
}

func (m *Mesh) setHolderHint(did string, h holderHint) {
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	if m.holderHints == nil || len(m.holderHints) >= maxHolderHints {
		m.holderHints = map[string]holderHint{} // bounded: start over rather than grow
	}
	m.holderHints[did] = h
}
