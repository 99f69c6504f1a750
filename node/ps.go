package node

import (
	"bufio"
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

// AgentsProtocol asks a node for the custody groups it is a member of
// (docs/PROTOCOL.md "Listing the mesh's agents"): one request and one
// reply per stream, framed as StatusProtocol, a page of at most
// agentsPage groups after the DID the request names.
const AgentsProtocol = protocol.ID("/igor/agents/1.0.0")

const (
	agentsPage    = 100              // groups per reply (~250 bytes each, under the 64 KiB frame)
	agentsTimeout = 5 * time.Second  // one page from one node
	maxAgentPages = 200              // pages from one node (20,000 groups)
	psParallel    = 16               // nodes asked at once
	psLimit       = 30 * time.Second // the whole listing
)

type agentsRequest struct {
	Version int    `json:"version"`
	After   string `json:"after,omitempty"` // the last DID of the previous page
}

type agentsReply struct {
	Agents []MeshAgent `json:"agents"`
	More   bool        `json:"more,omitempty"`
	Error  string      `json:"error,omitempty"`
}

// MeshAgent is one agent as a custody member sees it (and, merged by ps,
// as its holder does).
type MeshAgent struct {
	DID string `json:"did"`
	// Status: the holder's word (running, moving, stopped, exhausted,
	// failed); from members only, no-holder.
	Status  string   `json:"status"`
	Holder  string   `json:"holder,omitempty"`
	Members []string `json:"members"`
	Epoch   uint64   `json:"epoch"`
	Seq     uint64   `json:"seq"`
	Tick    uint64   `json:"tick,omitempty"`
	Budget  int64    `json:"budget_microcents,omitempty"`
	// StopReason: owner (stopped by its owner), budget-exhausted, failed.
	StopReason string `json:"stop_reason,omitempty"`
	// holding: the answer came from the holder (the merge prefers it).
	holding bool
}

// localAgents lists this node's memberships, sorted by DID, after the
// given DID, at most n.
func (m *Mesh) localAgents(after string, n int) (out []MeshAgent, more bool) {
	for _, st := range m.Custody.Status() { // sorted by DID
		if st.DID <= after {
			continue
		}
		if len(out) == n {
			return out, true
		}
		a := MeshAgent{DID: st.DID, Status: "no-holder", Holder: st.Holder, Members: st.Members, Epoch: st.Epoch, Seq: st.AcceptedSeq}
		if st.Role == lease.Holder.String() && st.Committed != "" && time.Now().Before(st.LeaseEnd) {
			a.holding = true
			live := m.liveStatus(st.DID)
			a.Status, a.StopReason = live.state(), live.StopReason
			if c, err := cid.Decode(st.Committed); err == nil {
				if data, err := m.Store.Get(c); err == nil {
					if cp, err := agents.DecodeCheckpoint(data); err == nil {
						a.Seq, a.Tick, a.Budget = cp.Seq, cp.Tick, cp.Budget
						if cp.Stopped && a.Status != "moving" {
							a.Status, a.StopReason = "stopped", "owner"
						}
					}
				}
			}
			if hs, ok := m.Svc.Status(st.DID); ok && hs.Running && hs.Tick > a.Tick {
				a.Tick, a.Budget = hs.Tick, hs.Budget // ticks since the committed checkpoint
			}
			if a.StopReason == string(hosting.StopContext) {
				a.StopReason = ""
			}
		}
		out = append(out, a)
	}
	return out, false
}

// handleAgents answers one page of this node's memberships.
func (m *Mesh) handleAgents(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(agentsTimeout))
	var req agentsRequest
	if err := readMsg(bufio.NewReader(s), &req); err != nil {
		s.Reset()
		return
	}
	var reply agentsReply
	if req.Version != 1 {
		reply.Error = fmt.Sprintf("agents request version %d; this node speaks 1", req.Version)
	} else {
		reply.Agents, reply.More = m.localAgents(req.After, agentsPage)
		for i := range reply.Agents {
			if reply.Agents[i].holding {
				reply.Agents[i].Holder = m.PeerID()
			}
		}
	}
	_ = writeMsg(s, reply)
}

// agentsOf reads every page of node p's memberships.
func (m *Mesh) agentsOf(ctx context.Context, p peer.ID) ([]MeshAgent, error) {
	var all []MeshAgent
	after := ""
	for range maxAgentPages {
		page, more, err := m.agentsPageOf(ctx, p, after)
		if err != nil {
			return all, err
		}
		for i := range page {
			// The holder's own word: it names itself as the holder.
			page[i].holding = page[i].Holder == p.String() && page[i].Status != "no-holder"
		}
		all = append(all, page...)
		if !more || len(page) == 0 {
			return all, nil
		}
		after = page[len(page)-1].DID
	}
	return all, fmt.Errorf("%s lists more than %d groups", p, maxAgentPages*agentsPage)
}

func (m *Mesh) agentsPageOf(ctx context.Context, p peer.ID, after string) ([]MeshAgent, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, agentsTimeout)
	defer cancel()
	s, err := m.Host.NewStream(ctx, p, AgentsProtocol)
	if err != nil {
		return nil, false, err
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if err := writeMsg(s, agentsRequest{Version: 1, After: after}); err != nil {
		s.Reset()
		return nil, false, err
	}
	var r agentsReply
	if err := readMsg(bufio.NewReader(s), &r); err != nil {
		s.Reset()
		return nil, false, err
	}
	if r.Error != "" {
		return nil, false, fmt.Errorf("%s: %s", p, r.Error)
	}
	return r.Agents, r.More, nil
}

// MeshAgents is the answer of ps: every agent its hosts know, and the
// hosts that did not answer.
type MeshAgents struct {
	Agents     []MeshAgent `json:"agents"`
	Asked      int         `json:"nodes_asked"`
	Unanswered []string    `json:"unanswered,omitempty"`
}

// ListAgents lists the mesh's agents (`igor-node ps`): it asks every host
// this node knows (its host view, else a DHT enumeration) and every peer
// it is connected to for their custody groups, in parallel, and merges
// them by DID — the holder's answer over its members'. An agent whose
// custodians all failed to answer is missing; Unanswered names them.
func (m *Mesh) ListAgents(ctx context.Context) (*MeshAgents, error) {
	ctx, cancel := context.WithTimeout(ctx, psLimit)
	defer cancel()
	peers := map[peer.ID]bool{}
	hs, warm := m.viewHosts()
	if !warm {
		var err error
		if hs, err = m.Hosts(ctx); err != nil {
			m.Logger.Debug("ps: host enumeration", "err", err)
		}
	}
	for _, h := range hs {
		if id, err := peer.Decode(h.Peer); err == nil {
			peers[id] = true
		}
	}
	for _, id := range m.Host.Network().Peers() {
		peers[id] = true
	}
	delete(peers, m.Host.ID())
	var (
		mu         sync.Mutex
		byDID      = map[string]MeshAgent{}
		unanswered []string
	)
	merge := func(list []MeshAgent) {
		mu.Lock()
		defer mu.Unlock()
		for _, a := range list {
			if old, ok := byDID[a.DID]; !ok || a.holding && (!old.holding || a.Epoch > old.Epoch) || !old.holding && a.Seq > old.Seq {
				byDID[a.DID] = a
			}
		}
	}
	own, _ := m.localAgents("", maxAgentPages*agentsPage)
	for i := range own {
		if own[i].holding {
			own[i].Holder = m.PeerID()
		}
	}
	merge(own)
	sem := make(chan struct{}, psParallel)
	var wg sync.WaitGroup
	for id := range peers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			list, err := m.agentsOf(ctx, id)
			merge(list)
			if err != nil {
				mu.Lock()
				unanswered = append(unanswered, id.String())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	out := &MeshAgents{Agents: make([]MeshAgent, 0, len(byDID)), Asked: len(peers) + 1, Unanswered: unanswered}
	for _, a := range byDID {
		slices.Sort(a.Members)
		out.Agents = append(out.Agents, a)
	}
	sort.Slice(out.Agents, func(i, j int) bool { return out.Agents[i].DID < out.Agents[j].DID })
	sort.Strings(out.Unanswered)
	return out, nil
}

// String is one line of ps.
func (a MeshAgent) String() string {
	holder := a.Holder
	if holder == "" {
		holder = "-"
	}
	st := a.Status
	if a.StopReason != "" && a.Status != "running" {
		st += " (" + a.StopReason + ")"
	}
	return strings.Join([]string{a.DID, st, fmt.Sprint(a.Tick), fmt.Sprint(a.Seq), fmt.Sprint(a.Epoch), holder}, "\t")
}
