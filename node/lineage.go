package node

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/wasmexec"
)

// CheckpointInfo is what inspect shows of one checkpoint.
type CheckpointInfo struct {
	CID       string `json:"cid"`
	Kind      string `json:"kind"`
	DID       string `json:"did"`
	Seq       uint64 `json:"seq"`
	Tick      uint64 `json:"tick"`
	Epoch     uint64 `json:"epoch"`
	Budget    int64  `json:"budget_microcents"`
	Price     int64  `json:"price_microcents_per_second"`
	Holder    string `json:"holder,omitempty"`
	Time      int64  `json:"time_unix_ns"`
	Prev      string `json:"prev,omitempty"`
	Genesis   string `json:"genesis"`
	Module    string `json:"module"`
	Manifest  string `json:"manifest"`
	State     string `json:"state,omitempty"`
	StateSize uint64 `json:"state_size"`
	// Journal: the tick log of a journaled step; Partial: it ends at an
	// effect's intent inside the tick; Paid: µc paid since the predecessor.
	Journal     string `json:"journal,omitempty"`
	Partial     bool   `json:"partial,omitempty"`
	Paid        int64  `json:"paid_microcents,omitempty"`
	SignatureOK bool   `json:"signatures_valid"`
	SigError    string `json:"signature_error,omitempty"`
	// Content is a manifest's JSON (kind manifest only; a manifest carries
	// no signature, and names no agent: agents share it by its CID).
	Content json.RawMessage `json:"content,omitempty"`
}

// Inspect describes a checkpoint, genesis or manifest named by a DID (its
// local head) or a CID.
func (l *Local) Inspect(ref string) (*CheckpointInfo, error) {
	var c cid.Cid
	if _, err := agents.ParseDID(ref); err == nil {
		if c, err = l.Home.Head(ref); err != nil {
			return nil, err
		}
	} else {
		var derr error
		c, derr = cid.Decode(ref)
		if derr != nil {
			return nil, fmt.Errorf("%q is neither a DID (%v) nor a CID (%v)", ref, err, derr)
		}
	}
	data, err := l.Store.Get(c)
	if err != nil {
		return nil, err
	}
	return describe(c, data)
}

func describe(c cid.Cid, data []byte) (*CheckpointInfo, error) {
	if c.Prefix().Codec == cid.Raw {
		// Manifests are raw JSON blocks; so are state and module chunks.
		if bytes.HasPrefix(bytes.TrimSpace(data), []byte("{")) {
			if _, err := agents.ParseManifest(data); err == nil {
				return &CheckpointInfo{CID: c.String(), Kind: "manifest", Manifest: c.String(), SignatureOK: true, Content: data}, nil
			}
		}
		return nil, fmt.Errorf("block %s is raw data, not a checkpoint, genesis or manifest: inspect does not show module or state chunks", c)
	}
	kind, err := agents.Kind(data)
	if err != nil {
		return nil, fmt.Errorf("block %s is not a checkpoint, genesis or manifest (a module or state object is not shown): %w", c, err)
	}
	info := &CheckpointInfo{CID: c.String(), Kind: kind}
	switch kind {
	case "checkpoint":
		cp, err := agents.DecodeCheckpoint(data)
		if err != nil {
			return nil, fmt.Errorf("checkpoint %s: %w", c, err)
		}
		info.DID, info.Seq, info.Tick, info.Epoch = cp.Agent, cp.Seq, cp.Tick, cp.Epoch
		info.Budget, info.Price, info.Holder, info.Time = cp.Budget, cp.Price, cp.Holder, cp.Time
		if cp.Prev.Defined() {
			info.Prev = cp.Prev.String()
		}
		info.Genesis, info.Module, info.Manifest = cp.Genesis.String(), cp.Module.String(), cp.Manifest.String()
		if cp.State.Defined() {
			info.State, info.StateSize = cp.State.String(), cp.StateSize
		}
		if cp.Journal.Defined() {
			info.Journal = cp.Journal.String()
		}
		info.Partial, info.Paid = cp.Partial, cp.Paid
		err = cp.Verify()
		info.SignatureOK = err == nil
		if err != nil {
			info.SigError = err.Error()
		}
	case "genesis":
		g, err := agents.DecodeGenesis(data)
		if err != nil {
			return nil, fmt.Errorf("genesis %s: %w", c, err)
		}
		info.DID, info.Budget, info.Time = g.Agent, g.Budget, g.Created
		info.Genesis, info.Module, info.Manifest = c.String(), g.Module.String(), g.Manifest.String()
		err = g.Verify()
		info.SignatureOK = err == nil
		if err != nil {
			info.SigError = err.Error()
		}
	default:
		return nil, fmt.Errorf("block %s is a %s, not a checkpoint or genesis", c, kind)
	}
	return info, nil
}

// VerifyReport is the outcome of a lineage check.
type VerifyReport struct {
	Valid       bool     `json:"valid"`
	DID         string   `json:"did,omitempty"`
	Head        string   `json:"head,omitempty"`
	Genesis     string   `json:"genesis,omitempty"`
	Checkpoints int      `json:"checkpoints"`
	FirstTick   uint64   `json:"first_tick"`
	LastTick    uint64   `json:"last_tick"`
	LastSeq     uint64   `json:"last_seq"`
	MaxEpoch    uint64   `json:"max_epoch"`
	BudgetStart int64    `json:"budget_start_microcents"`
	BudgetLeft  int64    `json:"budget_left_microcents"`
	Holders     []string `json:"holders,omitempty"`
	// Charges attributes every budget step to the holder that signed it.
	Charges   []HolderCharge `json:"charges,omitempty"`
	Forks     []ForkInfo     `json:"forks,omitempty"`
	Error     string         `json:"error,omitempty"`
	FailedCID string         `json:"failed_cid,omitempty"`
	FailedSeq *uint64        `json:"failed_seq,omitempty"`
	// Paid totals the agent's payments (wallet_pay) over its lineage.
	Paid int64 `json:"paid_microcents,omitempty"`
	// Replay: what re-executing the journaled ticks found (verify --replay).
	Replay *hosting.ReplayReport `json:"replay,omitempty"`
}

// VerifyOptions select the optional parts of a verification.
type VerifyOptions struct {
	// Replay re-executes every journaled tick and compares the states it
	// reaches with the stored ones (hosting.ReplayLineage).
	Replay bool
}

// HolderCharge totals the budget steps one holder signed: what it charged,
// for how many ticks, and the metering it claimed (see agents.Checkpoint).
type HolderCharge struct {
	Holder      string `json:"holder"`
	Checkpoints int    `json:"checkpoints"`
	Ticks       uint64 `json:"ticks"`
	Calls       uint64 `json:"calls"`
	MeteredNs   uint64 `json:"metered_ns"`
	Charged     int64  `json:"charged_microcents"`
}

// ForkInfo is the proof of a fork: two checkpoints with the same predecessor.
type ForkInfo struct {
	Prev string `json:"prev"`
	A    string `json:"a"`
	B    string `json:"b"`
}

// ErrInvalid is returned (wrapped) by Verify when the lineage does not verify.
var ErrInvalid = errors.New("lineage invalid")

// Verify checks the whole lineage of a local agent, every block it names,
// and every checkpoint of the agent in the store for forks.
func (l *Local) Verify(ctx context.Context, did string, opts VerifyOptions) (*VerifyReport, error) {
	head, err := l.Home.Head(did)
	if err != nil {
		return nil, err
	}
	var rt *wasmexec.Runtime
	if opts.Replay {
		if rt, err = l.Runtime(ctx); err != nil {
			return nil, err
		}
	}
	return verifyIn(ctx, l.Store, head, did, rt), nil
}

// VerifyCAR checks the agent carried by a CAR file, without touching the
// home: blocks go to a temporary store that is removed afterwards.
func VerifyCAR(ctx context.Context, path string, opts VerifyOptions) (*VerifyReport, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	tmp, err := os.MkdirTemp("", "igor-verify-*")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	st, err := contentstore.Open(tmp, contentstore.WithoutFsync())
	if err != nil {
		return nil, err
	}
	defer st.Close()
	roots, _, err := st.ImportCAR(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(roots) != 1 {
		return nil, fmt.Errorf("%w: %s has %d roots, want 1 (the head checkpoint)", ErrNotAgentCAR, path, len(roots))
	}
	var rt *wasmexec.Runtime
	if opts.Replay {
		if rt, err = wasmexec.NewRuntime(ctx, wasmexec.Config{}); err != nil {
			return nil, err
		}
		defer rt.Close(context.Background())
	}
	return verifyIn(ctx, st, roots[0], "", rt), nil
}

// verifyIn runs the lineage check from head, then fork detection over every
// checkpoint of the same agent in st, then, given a runtime, the replay of
// every journaled tick.
func verifyIn(ctx context.Context, st *contentstore.Store, head cid.Cid, expectDID string, replay *wasmexec.Runtime) *VerifyReport {
	rep := &VerifyReport{Head: head.String(), DID: expectDID}
	lin, err := agents.VerifyLineage(head, st, agents.VerifyOptions{ExpectDID: expectDID, CheckBlock: ObjectChecker(st)})
	if err != nil {
		rep.Error = err.Error()
		var ve *agents.VerifyError
		if errors.As(err, &ve) {
			rep.FailedCID = ve.CID.String()
			seq := ve.Seq
			rep.FailedSeq = &seq
		}
		return rep
	}
	rep.DID = lin.DID
	rep.Genesis = lin.GenesisCID.String()
	rep.Checkpoints = len(lin.Entries)
	first, last := lin.Entries[0].Checkpoint, lin.Entries[len(lin.Entries)-1].Checkpoint
	rep.FirstTick, rep.LastTick, rep.LastSeq, rep.MaxEpoch = first.Tick, last.Tick, last.Seq, last.Epoch
	rep.BudgetStart, rep.BudgetLeft = lin.Genesis.Budget, last.Budget
	charges := map[string]int{} // holder → index in rep.Charges
	for i, e := range lin.Entries {
		cp := e.Checkpoint
		j, ok := charges[cp.Holder]
		if !ok {
			j = len(rep.Charges)
			charges[cp.Holder] = j
			rep.Holders = append(rep.Holders, cp.Holder)
			rep.Charges = append(rep.Charges, HolderCharge{Holder: cp.Holder})
		}
		before, tickBefore := lin.Genesis.Budget, uint64(0)
		if i > 0 {
			before, tickBefore = lin.Entries[i-1].Checkpoint.Budget, lin.Entries[i-1].Checkpoint.Tick
		}
		c := &rep.Charges[j]
		c.Checkpoints++
		c.Ticks += cp.Tick - tickBefore
		c.Calls += cp.Calls
		c.MeteredNs += cp.Metered
		c.Charged += before - cp.Budget - cp.Paid
		rep.Paid += cp.Paid
	}
	entries, err := agentCheckpoints(ctx, st, lin.DID)
	if err != nil {
		rep.Error = fmt.Sprintf("scan for forks: %v", err)
		return rep
	}
	for _, f := range agents.DetectForks(entries) {
		rep.Forks = append(rep.Forks, ForkInfo{Prev: cidString(f.Prev), A: f.A.String(), B: f.B.String()})
	}
	if len(rep.Forks) > 0 {
		f := rep.Forks[0]
		rep.Error = fmt.Sprintf("fork: checkpoints %s and %s both follow %s", f.A, f.B, f.Prev)
		return rep
	}
	if replay != nil {
		rr, err := hosting.ReplayLineage(ctx, replay, st, lin)
		rep.Replay = &rr
		if err != nil {
			rep.Error = fmt.Sprintf("replay: %v", err)
			return rep
		}
		if d := rr.Divergence; d != nil {
			rep.Error = fmt.Sprintf("replay diverges at seq %d (tick %d, %s): %s", d.Seq, d.Tick, d.CID, d.Reason)
			rep.FailedCID = d.CID
			seq := d.Seq
			rep.FailedSeq = &seq
			return rep
		}
	}
	rep.Valid = true
	return rep
}

func cidString(c cid.Cid) string {
	if !c.Defined() {
		return "(genesis)"
	}
	return c.String()
}

// ObjectChecker verifies that every block of a module, state or manifest
// object is present and intact (Get re-hashes each one): the CheckBlock of
// agents.VerifyOptions for verify and fsck.
func ObjectChecker(st *contentstore.Store) func(cid.Cid) error {
	return func(c cid.Cid) error {
		cids, err := st.ObjectCIDs(c)
		if err != nil {
			return err
		}
		for _, b := range cids {
			if _, err := st.Get(b); err != nil {
				return err
			}
		}
		return nil
	}
}

// agentCheckpoints collects every checkpoint of did in the store. Blocks
// that are not checkpoints, or do not decode, are skipped: verify reports
// the lineage's own damage separately.
func agentCheckpoints(ctx context.Context, st *contentstore.Store, did string) ([]agents.Entry, error) {
	var out []agents.Entry
	err := st.ForEach(func(c cid.Cid) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if c.Type() != cid.DagCBOR {
			return nil
		}
		data, err := st.Get(c)
		if err != nil {
			return nil
		}
		if k, err := agents.Kind(data); err != nil || k != "checkpoint" {
			return nil
		}
		cp, err := agents.DecodeCheckpoint(data)
		if err != nil || cp.Agent != did {
			return nil
		}
		out = append(out, agents.Entry{CID: c, Checkpoint: cp})
		return nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Checkpoint.Seq < out[j].Checkpoint.Seq })
	return out, err
}

// ImportReport says what an import did.
type ImportReport struct {
	DID     string `json:"did"`
	Head    string `json:"head"`
	Seq     uint64 `json:"seq"`
	Tick    uint64 `json:"tick"`
	Blocks  int    `json:"blocks"`
	Outcome string `json:"outcome"` // "new", "advanced", "up-to-date", "kept-newer-local"
	HasKey  bool   `json:"has_key"`
}

// ErrFork is returned by Import when the imported head and the local head
// have diverged.
var ErrFork = agents.ErrFork

// Import reads an agent CAR into the store, verifies its lineage, and moves
// the local head forward if the import extends it. A diverging history is
// refused with both heads named; nothing local is overwritten. A refused
// import (a fork, a lineage that does not verify, a CAR that does not
// read) leaves no block behind: a rival checkpoint left in the store would
// make verify report a fork from then on, while the home's head, fsck and
// resume carry on with the local lineage.
func (l *Local) Import(ctx context.Context, r io.Reader) (_ *ImportReport, err error) {
	roots, n, added, err := l.stageCAR(ctx, r)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			l.dropBlocks(added)
		}
	}()
	if len(roots) != 1 {
		return nil, fmt.Errorf("%w: %d roots, want 1 (the head checkpoint)", ErrNotAgentCAR, len(roots))
	}
	root := roots[0]
	lin, err := agents.VerifyLineage(root, l.Store, agents.VerifyOptions{CheckBlock: ObjectChecker(l.Store)})
	if err != nil {
		return nil, fmt.Errorf("imported agent does not verify: %w", err)
	}
	last := lin.Entries[len(lin.Entries)-1].Checkpoint
	rep := &ImportReport{DID: lin.DID, Head: root.String(), Seq: last.Seq, Tick: last.Tick, Blocks: n}
	if _, err := l.Keys.Get(lin.DID); err == nil {
		rep.HasKey = true
	}
	local, err := l.Home.Head(lin.DID)
	switch {
	case errors.Is(err, ErrUnknownAgent):
		rep.Outcome = "new"
	case err != nil:
		return nil, err
	case local.Equals(root):
		rep.Outcome = "up-to-date"
		return rep, nil
	case containsCID(lin.Entries, local):
		rep.Outcome = "advanced"
	default:
		localLin, lerr := agents.VerifyLineage(local, l.Store, agents.VerifyOptions{ExpectDID: lin.DID})
		if lerr == nil && containsCID(localLin.Entries, root) {
			rep.Outcome = "kept-newer-local"
			rep.Head = local.String()
			lastLocal := localLin.Entries[len(localLin.Entries)-1].Checkpoint
			rep.Seq, rep.Tick = lastLocal.Seq, lastLocal.Tick
			return rep, nil
		}
		return nil, fmt.Errorf("%w: imported head %s (seq %d) and local head %s have diverged; keeping the local head",
			agents.ErrFork, root, last.Seq, local)
	}
	if err := l.Store.Pin(root); err != nil {
		return nil, err
	}
	if err := l.Home.SetHead(lin.DID, root); err != nil {
		return nil, err
	}
	if rep.Outcome == "advanced" {
		_ = l.Store.Unpin(local)
	}
	return rep, nil
}

// stageCAR reads a CAR into a scratch store first, so a CAR that breaks
// off halfway adds nothing here, then copies into the home's store the
// blocks it lacks. It returns the CAR's roots and block count and the
// blocks it added (which nothing here referenced before).
func (l *Local) stageCAR(ctx context.Context, r io.Reader) (roots []cid.Cid, n int, added []cid.Cid, err error) {
	tmp, err := os.MkdirTemp("", "igor-import-*")
	if err != nil {
		return nil, 0, nil, err
	}
	defer os.RemoveAll(tmp)
	st, err := contentstore.Open(tmp, contentstore.WithoutFsync())
	if err != nil {
		return nil, 0, nil, err
	}
	defer st.Close()
	if roots, n, err = st.ImportCAR(ctx, r); err != nil {
		return nil, 0, nil, err
	}
	err = st.ForEach(func(c cid.Cid) error {
		if have, err := l.Store.Has(c); err != nil || have {
			return err
		}
		data, err := st.Get(c)
		if err != nil {
			return err
		}
		if err := l.Store.PutBlock(c, data); err != nil {
			return err
		}
		added = append(added, c)
		return nil
	})
	if err != nil {
		l.dropBlocks(added)
		return nil, 0, nil, err
	}
	return roots, n, added, nil
}

// dropBlocks deletes the blocks a refused import added.
func (l *Local) dropBlocks(cids []cid.Cid) {
	for _, c := range cids {
		if err := l.Store.Delete(c); err != nil {
			l.Logger.Warn("remove a block of a refused import", "cid", c, "err", err)
		}
	}
}

func containsCID(entries []agents.Entry, c cid.Cid) bool {
	for _, e := range entries {
		if e.CID.Equals(c) {
			return true
		}
	}
	return false
}

// HomeAgents is what `igor-node list` shows: the head checkpoint of every
// agent with a head in this home, sorted by DID.
func (l *Local) HomeAgents() ([]*CheckpointInfo, error) {
	dids, err := l.Home.Agents()
	if err != nil {
		return nil, err
	}
	infos := []*CheckpointInfo{}
	for _, d := range dids {
		info, err := l.Inspect(d)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", d, err)
		}
		infos = append(infos, info)
	}
	return infos, nil
}
