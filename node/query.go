package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/dht"
	"github.com/igor-mesh/igor-node/node/exchange"
)

// AgentStatus is the answer to a query by DID from anywhere in the mesh.
type AgentStatus struct {
	DID         string    `json:"did"`
	Holder      string    `json:"holder"`
	Epoch       uint64    `json:"epoch"`
	Seq         uint64    `json:"seq"`
	Tick        uint64    `json:"tick"`
	Budget      int64     `json:"budget_microcents"`
	Head        string    `json:"head"`
	LastUpdate  time.Time `json:"last_update"`
	LeaseExpiry time.Time `json:"lease_expiry"`
	RecordAge   string    `json:"record_age"`
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

// QueryAgent resolves the agent's head record through the DHT (validated:
// signed by the agent key, not expired), fetches the head checkpoint it
// names from the holder (re-hashed against its CID), checks that it matches
// the record and that its signatures verify. Errors wrap ErrUnknownAgent
// when no record exists.
func (m *Mesh) QueryAgent(ctx context.Context, did string) (*AgentStatus, error) {
	if _, err := agents.ParseDID(did); err != nil {
		return nil, err
	}
	rec, err := m.resolveHeadRecord(ctx, did)
	if err != nil {
		return nil, err
	}
	var from []peer.AddrInfo
	if id, err := peer.Decode(rec.Holder); err == nil && id != m.Host.ID() {
		from = append(from, peer.AddrInfo{ID: id})
	}
	var cpData []byte
	if have, _ := m.Store.Has(rec.Head); have {
		cpData, err = m.Store.Get(rec.Head)
	} else {
		cpData, err = m.Ex.Fetch(ctx, rec.Head, from...)
	}
	if err != nil {
		return nil, fmt.Errorf("fetch head checkpoint %s of %s: %w", rec.Head, did, err)
	}
	cp, err := agents.DecodeCheckpoint(cpData)
	if err != nil {
		return nil, fmt.Errorf("head checkpoint %s: %w", rec.Head, err)
	}
	if err := cp.Verify(); err != nil {
		return nil, fmt.Errorf("head checkpoint %s: %w", rec.Head, err)
	}
	if cp.Agent != did || cp.Seq != rec.Seq || cp.Epoch != rec.Epoch {
		return nil, fmt.Errorf("head checkpoint %s does not match its head record (agent %s seq %d epoch %d vs record seq %d epoch %d)",
			rec.Head, cp.Agent, cp.Seq, cp.Epoch, rec.Seq, rec.Epoch)
	}
	return &AgentStatus{
		DID: did, Holder: rec.Holder, Epoch: cp.Epoch, Seq: cp.Seq, Tick: cp.Tick, Budget: cp.Budget,
		Head: rec.Head.String(), LastUpdate: time.Unix(0, cp.Time).UTC(), LeaseExpiry: time.Unix(0, rec.LeaseExpiry).UTC(),
		RecordAge: time.Since(time.Unix(0, rec.Issued)).Round(time.Millisecond).String(),
	}, nil
}

// VerifyRemote fetches the agent's whole DAG from the mesh into this node's
// store and verifies its lineage, as `verify DID` does for a local agent.
func (m *Mesh) VerifyRemote(ctx context.Context, did string) (*VerifyReport, error) {
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
	return verifyIn(ctx, m.Store, head, did), nil
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
