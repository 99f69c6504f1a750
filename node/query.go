package node

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/dht"
	"github.com/igor-mesh/igor-node/node/exchange"
	"github.com/igor-mesh/igor-node/wasmexec"
)

// AgentStatus is the answer to a query by DID from anywhere in the mesh.
type AgentStatus struct {
	DID string `json:"did"`
	// Status: running, moving, stopped, exhausted, failed (the holder's
	// word), or no-holder (members answered, none holds a live lease: a
	// takeover is under way) or unreachable (no member answered; the rest
	// comes from the head record).
	Status string `json:"status"`
	// Source: "holder" (the holder answered and its committed checkpoint
	// was checked), "member" (no holder: the latest checkpoint a member
	// stored) or "record" (no member answered: the head record's).
	Source     string    `json:"source"`
	Holder     string    `json:"holder"`
	Members    []string  `json:"members,omitempty"`
	Epoch      uint64    `json:"epoch"`
	Seq        uint64    `json:"seq"`
	Tick       uint64    `json:"tick"`
	Budget     int64     `json:"budget_microcents"`
	Head       string    `json:"head"`
	LastUpdate time.Time `json:"last_update"`
	// LeaseLeftMs is the holder's lease's remaining time by its own clock
	// (a second or two, renewed by every heartbeat round); only when the
	// holder answered (source holder).
	LeaseLeftMs int64 `json:"lease_left_ms,omitempty"`
	// LeaseEpoch is the epoch of the holder's lease, when the holder
	// answered (source holder). Epoch is its committed checkpoint's: after
	// a takeover the new holder runs at a higher epoch until its first
	// commit there, a few seconds.
	LeaseEpoch uint64 `json:"lease_epoch,omitempty"`
	// NextRecordBy is the head record's promise: a holder that keeps its
	// lease publishes a newer record by then (its lease end plus the
	// record refresh interval, 30 s by default); revive waits for it. Only
	// when the status comes from the head record (source record).
	NextRecordBy time.Time `json:"next_record_by,omitzero"`
	RecordAge    string    `json:"record_age,omitempty"`
	StopReason   string    `json:"stop_reason,omitempty"`
	// Controls counts the owner's records the head applied (the next one
	// is numbered Controls+1).
	Controls uint64 `json:"controls"`
	// BudgetLeftS: how long the budget lasts at the rate the holder spent
	// it between its last two checkpoints (wall time; the agent pays only
	// for tick time, so a 1 Hz agent's budget lasts far longer than
	// budget ÷ price seconds). Only for a running agent, source holder.
	BudgetLeftS float64 `json:"budget_left_seconds,omitempty"`
	Error       string  `json:"error,omitempty"`
	// Forks found among this agent's checkpoints in this node's store (the
	// ones it stores as a custody member or fetched to verify), with both
	// checkpoint CIDs as proof. Filled only when asked (AgentForks).
	Forks []ForkInfo `json:"forks,omitempty"`
}

// AgentForks scans this node's store for the agent's checkpoints and
// returns the forks among them (agents.DetectForks: an abandoned lower-epoch
// tail is not a fork). It reads every DAG-CBOR block of the store, so it is
// for the CLI, not for polling.
func (m *Mesh) AgentForks(ctx context.Context, did string) ([]ForkInfo, error) {
	entries, err := agentCheckpoints(ctx, m.Store, did)
	if err != nil {
		return nil, err
	}
	var out []ForkInfo
	for _, f := range agents.DetectForks(entries) {
		out = append(out, ForkInfo{Prev: cidString(f.Prev), A: f.A.String(), B: f.B.String()})
	}
	return out, nil
}

// QueryAgent reports an agent's status from anywhere in the mesh. It asks
// the holder itself over StatusProtocol — the one this node last found,
// else the one the head record names — following what members say until
// one answers as the holder with a live lease, then fetches the committed
// checkpoint it names (from it, re-hashed against its CID) and checks the
// agent's signatures and that it is not older than the head record. With
// no holder to be found it falls back to the head record's checkpoint and
// says so (Status no-holder or unreachable), so a dead holder is never
// reported as running. Errors wrap ErrUnknownAgent when no record exists
// and no member knows the agent.
func (m *Mesh) QueryAgent(ctx context.Context, did string) (*AgentStatus, error) {
	if _, err := agents.ParseDID(did); err != nil {
		return nil, err
	}
	var (
		rec      *agents.HeadRecord
		recErr   error
		resolved bool
	)
	resolve := func() {
		if !resolved {
			rec, recErr = m.resolveHeadRecord(ctx, did)
			resolved = true
		}
	}
	// The holder this node found last time (and its group) needs no DHT
	// walk; without one, the head record names where to start.
	tried := map[string]bool{}
	hint := m.holderHint(did)
	start := append([]string{hint.holder}, hint.members...)
	_, memberErr := m.Custody.Agent(did)
	if hint.holder == "" && memberErr != nil {
		// Not a member (a member asks itself first, and its answer names
		// the holder and the group): the record names where to start. A
		// member that walked the DHT here waited, right after a failover,
		// for the dead holder's dial to time out (the new holder's own
		// API took ~10 s to answer).
		resolve()
		if rec != nil {
			start = []string{rec.Holder}
		}
	}
	live, answers, findErr := m.findHolder(ctx, did, start, tried)
	if live == nil && hint.holder != "" && len(answers) == 0 {
		// No one of the remembered group answered (they may have left it
		// in a regroup): the record may name a newer holder. When members
		// did answer, they know the custody state first-hand (a takeover
		// is under way) and the DHT walk — seconds while a dead peer's
		// dial times out — is not needed.
		resolve()
		if rec != nil && !tried[rec.Holder] {
			var more []*LiveStatus
			live, more, findErr = m.findHolder(ctx, did, []string{rec.Holder}, tried)
			answers = append(answers, more...)
		}
	}
	if live == nil && len(answers) > 0 {
		// Members answered and none holds a live lease: a takeover is under
		// way (a holder died within the last lease or two), which usually
		// ends within ~2.5 s. Asking the live members again shows its
		// result; the head record (a DHT walk, seconds while a dead peer's
		// dial times out) could only show the state before it.
		var more []*LiveStatus
		live, more = m.awaitTakeover(ctx, did, answers)
		answers = append(answers, more...)
	}
	if live != nil {
		st, err := m.statusFromHolder(ctx, did, live)
		if err == nil {
			if rec == nil || rec.Epoch < st.Epoch || (rec.Epoch == st.Epoch && rec.Seq <= st.Seq) {
				m.setHolderHint(did, holderHint{holder: live.Peer, members: live.Members})
				if rec != nil {
					st.RecordAge = time.Since(time.Unix(0, rec.Issued)).Round(time.Millisecond).String()
				}
				return st, nil
			}
			err = fmt.Errorf("its checkpoint (epoch %d seq %d) is older than the head record's (epoch %d seq %d)", st.Epoch, st.Seq, rec.Epoch, rec.Seq)
		}
		m.Logger.Debug("query: holder's answer not usable", "agent", did, "holder", live.Peer, "err", err)
		findErr = err
	}
	if len(answers) > 0 {
		// Members answered and none holds a live lease: a takeover is under
		// way. The latest checkpoint a member stored may not be committed
		// (its holder was cut off before a majority stored it) and then
		// never becomes part of the lineage; reporting it as the head showed
		// a checkpoint that later vanished (the chaos soak counted it as a
		// fork). The head record names only committed checkpoints: use it,
		// and a member's checkpoint only before the first record exists.
		best := answers[0]
		for _, a := range answers[1:] {
			if a.AcceptedSeq > best.AcceptedSeq {
				best = a
			}
		}
		if resolve(); rec != nil {
			if st, err := m.statusFromRecord(ctx, did, rec); err == nil {
				st.Status, st.Members, st.Error = "no-holder", best.Members, findErr.Error()
				return st, nil
			}
		}
		if st, err := m.statusFromMember(ctx, did, best); err == nil {
			st.Error = findErr.Error()
			return st, nil
		} else {
			m.Logger.Debug("query: member's answer not usable", "agent", did, "member", best.Peer, "err", err)
		}
	}
	resolve()
	if rec == nil {
		if len(answers) == 0 {
			return nil, recErr
		}
		return nil, fmt.Errorf("%w: %v; and %v", ErrUnknownAgent, findErr, recErr)
	}
	st, err := m.statusFromRecord(ctx, did, rec)
	if err != nil {
		return nil, err
	}
	st.Status = "unreachable"
	st.Error = findErr.Error()
	return st, nil
}

// takeoverWait bounds how long a query waits for a takeover under way to
// end (a standby campaigns LeaseTicks+WaitTicks after the holder's last
// heartbeat: ~2.5 s on the default timing).
const takeoverWait = 3 * time.Second

// awaitTakeover asks the members that answered (and no one else: the dead
// holder they may still name would hold each round for its status
// timeout) every 250 ms, up to takeoverWait, until one holds the lease.
// It returns that answer, or nil, with the answers it got.
func (m *Mesh) awaitTakeover(ctx context.Context, did string, answered []*LiveStatus) (*LiveStatus, []*LiveStatus) {
	var live []string
	skip := map[string]bool{}
	for _, a := range answered {
		live = append(live, a.Peer)
		skip[a.Holder] = true
		for _, p := range a.Members {
			skip[p] = true
		}
	}
	for _, p := range live {
		delete(skip, p)
	}
	var all []*LiveStatus
	deadline := time.Now().Add(takeoverWait)
	for time.Now().Before(deadline) {
		select {
		case <-ctx.Done():
			return nil, all
		case <-time.After(250 * time.Millisecond):
		}
		tried := maps.Clone(skip)
		h, answers, _ := m.findHolder(ctx, did, live, tried)
		all = append(all, answers...)
		if h != nil {
			return h, all
		}
	}
	return nil, all
}

// statusFromMember builds a no-holder status from a member's answer,
// fetching and checking the latest checkpoint it stored.
func (m *Mesh) statusFromMember(ctx context.Context, did string, a *LiveStatus) (*AgentStatus, error) {
	c, err := cid.Decode(a.Accepted)
	if err != nil {
		return nil, fmt.Errorf("member %s names checkpoint %q: %w", a.Peer, a.Accepted, err)
	}
	cp, err := m.fetchCheckpoint(ctx, did, c, []string{a.Peer})
	if err != nil {
		return nil, err
	}
	return &AgentStatus{
		DID: did, Status: "no-holder", Source: "member", Holder: "", Members: a.Members,
		Epoch: cp.Epoch, Seq: cp.Seq, Tick: cp.Tick, Budget: cp.Budget, Head: c.String(),
		LastUpdate: time.Unix(0, cp.Time).UTC(), Controls: cp.Controls,
	}, nil
}

// statusFromHolder builds the status from the holder's answer, fetching
// and checking the committed checkpoint it names.
func (m *Mesh) statusFromHolder(ctx context.Context, did string, live *LiveStatus) (*AgentStatus, error) {
	c, err := cid.Decode(live.Committed)
	if err != nil {
		return nil, fmt.Errorf("holder %s names checkpoint %q: %w", live.Peer, live.Committed, err)
	}
	cp, err := m.fetchCheckpoint(ctx, did, c, []string{live.Peer})
	if err != nil {
		return nil, err
	}
	st := &AgentStatus{
		DID: did, Status: live.state(), Source: "holder", Holder: live.Peer, Members: live.Members,
		Epoch: cp.Epoch, Seq: cp.Seq, Tick: cp.Tick, Budget: cp.Budget, Head: c.String(),
		LastUpdate: time.Unix(0, cp.Time).UTC(), LeaseLeftMs: live.LeaseLeftMs, LeaseEpoch: live.Epoch,
		StopReason: live.StopReason, Error: live.RunError, Controls: cp.Controls,
	}
	ownerStopped(st, cp)
	if st.Status == "running" && cp.Prev.Defined() && cp.Budget > 0 {
		if prev, err := m.fetchCheckpoint(ctx, did, cp.Prev, []string{live.Peer}); err == nil {
			st.BudgetLeftS = budgetLeft(prev, cp)
		}
	}
	return st, nil
}

// budgetLeft is how many seconds cp's budget lasts at the rate it fell
// since prev (wall time, by the holders' clocks); 0 when that is unknown
// (no time between them, no spending, a top-up between them).
func budgetLeft(prev, cp *agents.Checkpoint) float64 {
	spent := prev.Budget - cp.Budget
	dt := time.Duration(cp.Time - prev.Time)
	if spent <= 0 || dt <= 0 || cp.Control != nil {
		return 0
	}
	return float64(cp.Budget) / float64(spent) * dt.Seconds()
}

// statusFromRecord builds the status from the head record and the
// checkpoint it names.
func (m *Mesh) statusFromRecord(ctx context.Context, did string, rec *agents.HeadRecord) (*AgentStatus, error) {
	cp, err := m.fetchCheckpoint(ctx, did, rec.Head, []string{rec.Holder})
	if err != nil {
		return nil, err
	}
	if cp.Seq != rec.Seq || cp.Epoch != rec.Epoch {
		return nil, fmt.Errorf("head checkpoint %s does not match its head record (seq %d epoch %d vs record seq %d epoch %d)",
			rec.Head, cp.Seq, cp.Epoch, rec.Seq, rec.Epoch)
	}
	return &AgentStatus{
		DID: did, Source: "record", Holder: rec.Holder, Epoch: cp.Epoch, Seq: cp.Seq, Tick: cp.Tick, Budget: cp.Budget,
		Head: rec.Head.String(), LastUpdate: time.Unix(0, cp.Time).UTC(), NextRecordBy: time.Unix(0, rec.LeaseExpiry).UTC(),
		RecordAge: time.Since(time.Unix(0, rec.Issued)).Round(time.Millisecond).String(), Controls: cp.Controls,
	}, nil
}

// ownerStopped marks the status of an agent whose committed head its
// owner stopped: the holder holds it without running it.
func ownerStopped(st *AgentStatus, cp *agents.Checkpoint) {
	if cp.Stopped && st.Status != "moving" {
		st.Status, st.StopReason, st.Error = "stopped", "owner", ""
	}
}

// fetchCheckpoint reads checkpoint c of did (from the store, else from
// the peers in from) and checks that it is did's and that its signatures
// verify.
func (m *Mesh) fetchCheckpoint(ctx context.Context, did string, c cid.Cid, from []string) (*agents.Checkpoint, error) {
	var (
		data []byte
		err  error
	)
	if have, _ := m.Store.Has(c); have {
		data, err = m.Store.Get(c)
	} else {
		var peers []peer.AddrInfo
		for _, p := range from {
			if id, derr := peer.Decode(p); derr == nil && id != m.Host.ID() && !slices.ContainsFunc(peers, func(a peer.AddrInfo) bool { return a.ID == id }) {
				peers = append(peers, peer.AddrInfo{ID: id})
			}
		}
		data, err = m.Ex.Fetch(ctx, c, peers...)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch checkpoint %s of %s: %w", c, did, err)
	}
	cp, err := agents.DecodeCheckpoint(data)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", c, err)
	}
	if err := cp.Verify(); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", c, err)
	}
	if cp.Agent != did {
		return nil, fmt.Errorf("checkpoint %s is of agent %s, not %s", c, cp.Agent, did)
	}
	return cp, nil
}

// VerifyRemote fetches the agent's whole DAG from the mesh into this node's
// store and verifies its lineage, as `verify DID` does for a local agent.
func (m *Mesh) VerifyRemote(ctx context.Context, did string, opts VerifyOptions) (*VerifyReport, error) {
	st, err := m.QueryAgent(ctx, did)
	if err != nil {
		return nil, err
	}
	var from []peer.AddrInfo
	if id, err := peer.Decode(st.Holder); err == nil && id != m.Host.ID() {
		from = append(from, peer.AddrInfo{ID: id})
	}
	head, _ := cidDecode(st.Head)
	if _, err := m.Ex.FetchDAG(ctx, head, exchange.FetchOptions{From: from}); err != nil {
		return nil, fmt.Errorf("fetch lineage of %s: %w", did, err)
	}
	var rt *wasmexec.Runtime
	if opts.Replay {
		if rt, err = m.Runtime(ctx); err != nil {
			return nil, err
		}
	}
	return verifyIn(ctx, m.Store, head, did, rt), nil
}

func cidDecode(s string) (cid.Cid, error) { return cid.Decode(s) }

// resolveHeadRecord reads the agent's head record from the DHT and
// validates it; ErrUnknownAgent when there is none.
//
// Reads are monotonic per node: a quorum read that reaches peers still
// holding an older record never returns it once this node saw a newer
// valid one (kept in memory until it expires), so `agent DID` followed by
// `verify DID` never goes back in history.
func (m *Mesh) resolveHeadRecord(ctx context.Context, did string) (*agents.HeadRecord, error) {
	key := agents.HeadRecordKey(did)
	now := time.Now().UnixNano()
	data, err := m.DHT.GetValue(ctx, key)
	var rec *agents.HeadRecord
	switch {
	case err == nil:
		if rec, err = agents.ValidateHeadRecord(key, data, now); err != nil {
			return nil, fmt.Errorf("head record of %s: %w", did, err)
		}
	case !errors.Is(err, dht.ErrNotFound):
		return nil, err
	}
	m.seenMu.Lock()
	defer m.seenMu.Unlock()
	if seen, ok := m.seenHeads[did]; ok {
		if old, verr := agents.ValidateHeadRecord(key, seen, now); verr != nil {
			delete(m.seenHeads, did) // expired
		} else if rec == nil || agents.SelectHead([]*agents.HeadRecord{rec, old}) == 1 {
			return old, nil
		}
	}
	if rec == nil {
		return nil, fmt.Errorf("%w: no head record for %s in the mesh", ErrUnknownAgent, did)
	}
	if m.seenHeads == nil || len(m.seenHeads) >= maxSeenHeads {
		m.seenHeads = map[string][]byte{} // bounded: start over rather than grow
	}
	m.seenHeads[did] = data
	return rec, nil
}

// maxSeenHeads bounds the head records resolveHeadRecord remembers.
const maxSeenHeads = 4096
