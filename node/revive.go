package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/node/exchange"
)

// ErrAgentAlive: revive refused because the agent's lease is still live.
var ErrAgentAlive = errors.New("node: agent is alive")

// reviveMargin: revive waits this long past the lease end the head record
// states, for clock skew between the holder that wrote it and this node.
var reviveMargin = 10 * time.Second

// LineageEntry is one checkpoint of a lineage report.
type LineageEntry struct {
	Seq    uint64 `json:"seq"`
	CID    string `json:"cid"`
	Epoch  uint64 `json:"epoch"`
	Tick   uint64 `json:"tick"`
	Holder string `json:"holder"`
	Time   int64  `json:"time_unix_ns"` // when the holder made it (its clock)
	// Control: the kind of owner's record it applies (stop, start, topup,
	// delete, upgrade), if any.
	Control string `json:"control,omitempty"`
	// Journaled: it links its tick's log (a journaled agent); Stateless: its
	// state is replayed from the journal; Partial: it ends at an effect's
	// intent inside the tick.
	Journaled bool `json:"journaled,omitempty"`
	Stateless bool `json:"stateless,omitempty"`
	Partial   bool `json:"partial,omitempty"`
}

// LineageReport lists an agent's checkpoint chain, genesis first.
type LineageReport struct {
	DID     string         `json:"did"`
	Valid   bool           `json:"valid"`
	Error   string         `json:"error,omitempty"`
	Head    string         `json:"head,omitempty"`
	Entries []LineageEntry `json:"entries"`
}

// LineageRemote fetches the agent's DAG from the mesh (as VerifyRemote) and
// lists its verified chain, so a client can check that checkpoints it saw
// earlier are still part of it.
func (m *Mesh) LineageRemote(ctx context.Context, did string) (*LineageReport, error) {
	st, err := m.QueryAgent(ctx, did)
	if err != nil {
		return nil, err
	}
	head, err := m.fetchLineage(ctx, st)
	if err != nil {
		return nil, err
	}
	rep := &LineageReport{DID: did, Head: head.String(), Entries: []LineageEntry{}}
	lin, err := agents.VerifyLineage(head, m.Store, agents.VerifyOptions{})
	if err != nil {
		rep.Error = err.Error()
		return rep, nil
	}
	rep.Valid = true
	for _, e := range lin.Entries {
		cp := e.Checkpoint
		le := LineageEntry{Seq: cp.Seq, CID: e.CID.String(), Epoch: cp.Epoch, Tick: cp.Tick, Holder: cp.Holder, Time: cp.Time}
		if cp.Control != nil {
			le.Control = string(cp.Control.Kind)
		}
		le.Journaled, le.Stateless, le.Partial = cp.Journal.Defined(), !cp.State.Defined(), cp.Partial
		rep.Entries = append(rep.Entries, le)
	}
	return rep, nil
}

func (m *Mesh) fetchLineage(ctx context.Context, st *AgentStatus) (cid.Cid, error) {
	var from []peer.AddrInfo
	if id, err := peer.Decode(st.Holder); err == nil && id != m.Host.ID() {
		from = append(from, peer.AddrInfo{ID: id})
	}
	head, err := cid.Decode(st.Head)
	if err != nil {
		return cid.Undef, err
	}
	if _, err := m.Ex.FetchDAG(ctx, head, exchange.FetchOptions{From: from}); err != nil {
		return cid.Undef, fmt.Errorf("fetch lineage of %s: %w", st.DID, err)
	}
	return head, nil
}

// Revive gives an agent whose custodians are all gone a new custody group,
// from the latest checkpoint found in the mesh (its head record), or this
// node's own head of it when no record is left. It needs the agent key in
// this node's keystore (the publisher's) and refuses (ErrAgentAlive) while
// the head record shows a lease that has not ended: a second group next to
// a live one would fork the agent. The new group runs above the head's
// epoch, so the lineage stays one chain.
//
// If the latest checkpoint cannot be fetched from any live node (every
// custodian is gone with it), Revive refuses unless acceptLoss: then it
// revives from the newest checkpoint of the agent this node holds, still
// above the head record's epoch, and reports how many checkpoints are lost.
func (m *Mesh) Revive(ctx context.Context, did string, acceptLoss bool, progress func(string)) (*PublishResult, error) {
	if progress == nil {
		progress = func(string) {}
	}
	if _, err := agents.ParseDID(did); err != nil {
		return nil, err
	}
	key, err := m.Keys.Get(did)
	if err != nil {
		return nil, fmt.Errorf("revive needs the agent's key in this node's keystore: %w", err)
	}
	var (
		head     cid.Cid
		minEpoch uint64 // the new group campaigns above this
	)
	// The head record itself, not QueryAgent: the checkpoint it names may
	// have died with the group, and that is the case revive is for.
	st, err := m.headRecordStatus(ctx, did)
	switch {
	case err == nil:
		if time.Until(st.NextRecordBy.Add(reviveMargin)) > 0 {
			return nil, fmt.Errorf("%w: holder %s committed seq %d %s ago and its lease runs until %s (+%v for clock skew); revive only an agent whose custodians are gone",
				ErrAgentAlive, st.Holder, st.Seq, time.Since(st.LastUpdate).Round(time.Second), st.NextRecordBy.Format(time.RFC3339Nano), reviveMargin)
		}
		// The record may be up to a refresh interval old: ask the members
		// too. One that answers as the holder with a live lease is proof
		// the group lives.
		if live, _, _ := m.findHolder(ctx, did, []string{st.Holder}, map[string]bool{}); live != nil {
			return nil, fmt.Errorf("%w: %s answers as its holder at epoch %d (lease %d ms left); revive only an agent whose custodians are gone",
				ErrAgentAlive, live.Peer, live.Epoch, live.LeaseLeftMs)
		}
		minEpoch = st.Epoch
		head, err = m.fetchLineage(ctx, st)
		if err != nil {
			local, lerr := m.newestLocal(ctx, did)
			if lerr != nil {
				return nil, fmt.Errorf("%w; and no checkpoint of it is held here: %v", err, lerr)
			}
			if !acceptLoss {
				return nil, fmt.Errorf("the latest checkpoint (seq %d) cannot be fetched from any live node: %w; this node holds seq %d — revive with --accept-loss to resume from it, losing %d checkpoint(s)",
					st.Seq, err, local.Checkpoint.Seq, st.Seq-local.Checkpoint.Seq)
			}
			head = local.CID
			progress(fmt.Sprintf("latest checkpoint seq %d is gone; reviving from seq %d held here (%d checkpoint(s) lost)", st.Seq, local.Checkpoint.Seq, st.Seq-local.Checkpoint.Seq))
		} else {
			progress(fmt.Sprintf("latest checkpoint in the mesh: seq %d epoch %d (%s)", st.Seq, st.Epoch, st.Head))
		}
	case errors.Is(err, ErrUnknownAgent):
		if head, err = m.Home.Head(did); err != nil {
			return nil, fmt.Errorf("%w: no head record in the mesh and no local head: %v", ErrUnknownAgent, err)
		}
		progress("no head record in the mesh; reviving from this node's head " + head.String())
	default:
		return nil, err
	}
	lin, err := agents.VerifyLineage(head, m.Store, agents.VerifyOptions{})
	if err != nil {
		return nil, fmt.Errorf("lineage of %s does not verify; not reviving it: %w", did, err)
	}
	last := lin.Head()
	minEpoch = max(minEpoch, last.Checkpoint.Epoch)
	if last.Checkpoint.Budget == 0 {
		return nil, fmt.Errorf("%w: %s has no budget left", hosting.ErrBudgetExhausted, did)
	}
	mdata, err := m.Store.Get(last.Checkpoint.Manifest)
	if err != nil {
		return nil, err
	}
	man, err := agents.ParseManifest(mdata)
	if err != nil {
		return nil, err
	}
	if err := m.Store.Pin(last.CID); err != nil {
		return nil, err
	}
	if err := m.Home.SetHead(did, last.CID); err != nil {
		return nil, err
	}
	hosts, err := m.Hosts(ctx)
	if err != nil {
		return nil, err
	}
	ranked, err := hosting.Place(agents.AgentID(did), man, hosts, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoHost, err)
	}
	ranked = hosting.NearFirst(ranked, ranked[0].Peer, hosting.HostPeers(hosts), int(man.Lease.Replicas))
	h := hosting.Head{CID: last.CID, Checkpoint: last.Checkpoint}
	res := &PublishResult{DID: did, Head: last.CID.String(), Genesis: lin.GenesisCID.String(), Module: last.Checkpoint.Module.String(), Epoch: minEpoch + 1,
		Price: last.Checkpoint.Price, BudgetSeconds: budgetSeconds(last.Checkpoint.Budget, last.Checkpoint.Price)}
	if err := m.place(ctx, res, h, minEpoch, false, ranked, int(man.Lease.Replicas), 0, int64(man.Lease.TermSeconds)*1000, key, progress); err != nil {
		return res, err
	}
	return res, nil
}

// newestLocal returns the highest-seq checkpoint of did in this node's
// store whose whole lineage verifies here.
func (m *Mesh) newestLocal(ctx context.Context, did string) (agents.Entry, error) {
	entries, err := agentCheckpoints(ctx, m.Store, did)
	if err != nil {
		return agents.Entry{}, err
	}
	for i := len(entries) - 1; i >= 0; i-- {
		if _, err := agents.VerifyLineage(entries[i].CID, m.Store, agents.VerifyOptions{}); err == nil {
			return entries[i], nil
		}
	}
	return agents.Entry{}, fmt.Errorf("%w: no verifiable checkpoint of %s in this node's store", ErrUnknownAgent, did)
}

// headRecordStatus resolves and validates the agent's head record without
// fetching the checkpoint it names.
func (m *Mesh) headRecordStatus(ctx context.Context, did string) (*AgentStatus, error) {
	rec, err := m.resolveHeadRecord(ctx, did)
	if err != nil {
		return nil, err
	}
	return &AgentStatus{DID: did, Holder: rec.Holder, Epoch: rec.Epoch, Seq: rec.Seq, Head: rec.Head.String(),
		LastUpdate: time.Unix(0, rec.Issued).UTC(), NextRecordBy: time.Unix(0, rec.LeaseExpiry).UTC()}, nil
}
