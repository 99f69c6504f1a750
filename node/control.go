package node

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/amount"
	"github.com/igor-mesh/igor-node/node/exchange"
)

// ControlProtocol carries an owner's signed control record to the agent's
// holder (docs/PROTOCOL.md, "Owner control"): one request and one reply
// per stream, each a 4-byte big-endian length and a JSON object (as
// StatusProtocol). The holder checks the record against the agent's
// genesis itself: a relay cannot forge or alter one.
const ControlProtocol = protocol.ID("/igor/control/1.0.0")

// controlTimeout bounds applying one record at the holder: the agent stops
// after its tick in flight (≤ its tick timeout), then two checkpoints are
// committed by the group.
const controlTimeout = 30 * time.Second

// ErrNoHolderNow: no custody member holds the agent's lease at the moment
// (a takeover is under way, or no member answers); an owner's record needs
// the holder. Retry in a few seconds.
var ErrNoHolderNow = errors.New("no holder for the agent right now")

type controlRequest struct {
	Version int    `json:"version"`
	DID     string `json:"did"`
	Record  []byte `json:"record"` // agents.Control.Encode
}

// Reply codes of ControlProtocol, mapped back to the sentinels they stand for.
const (
	ctlOK        = "ok"
	ctlRefused   = "refused"        // agents.ErrControl
	ctlBusy      = "busy"           // custody.ErrBusy
	ctlNotHolder = "not-holder"     // custody.ErrNotHolder
	ctlNotMember = "not-member"     // custody.ErrNotMember
	ctlUpgrade   = "upgrade-failed" // hosting.ErrUpgradeFailed
	ctlBad       = "bad-request"
	ctlError     = "error"
)

type controlReply struct {
	Code       string `json:"code"`
	Error      string `json:"error,omitempty"`
	Checkpoint string `json:"checkpoint,omitempty"`
}

// ControlResult is the outcome of an owner's record applied at the holder.
type ControlResult struct {
	DID    string `json:"did"`
	Kind   string `json:"kind"`
	Seq    uint64 `json:"seq"`
	Amount int64  `json:"amount_microcents,omitempty"`
	// Holder applied the record; Checkpoint carries it, committed by the
	// custody group.
	Holder     string `json:"holder"`
	Checkpoint string `json:"checkpoint"`
}

func codeOf(err error) string {
	switch {
	case err == nil:
		return ctlOK
	case errors.Is(err, agents.ErrControl):
		return ctlRefused
	case errors.Is(err, custody.ErrBusy):
		return ctlBusy
	case errors.Is(err, custody.ErrNotHolder):
		return ctlNotHolder
	case errors.Is(err, custody.ErrNotMember):
		return ctlNotMember
	case errors.Is(err, hosting.ErrUpgradeFailed):
		return ctlUpgrade
	case errors.Is(err, agents.ErrMalformed), errors.Is(err, agents.ErrBadDID):
		return ctlBad
	}
	return ctlError
}

func (r *controlReply) err(p peer.ID) error {
	var sentinel error
	switch r.Code {
	case ctlOK:
		return nil
	case ctlRefused:
		sentinel = agents.ErrControl
	case ctlBusy:
		sentinel = custody.ErrBusy
	case ctlNotHolder:
		sentinel = custody.ErrNotHolder
	case ctlNotMember:
		sentinel = custody.ErrNotMember
	case ctlUpgrade:
		sentinel = hosting.ErrUpgradeFailed
	case ctlBad:
		sentinel = ErrBadRequest
	default:
		return fmt.Errorf("holder %s: %s", p, r.Error)
	}
	return fmt.Errorf("%w (holder %s: %s)", sentinel, p, r.Error)
}

// handleControl applies one record if this node holds the agent.
func (m *Mesh) handleControl(s network.Stream) {
	defer s.Close()
	s.SetDeadline(time.Now().Add(controlTimeout + 5*time.Second))
	var req controlRequest
	if err := readMsg(bufio.NewReader(s), &req); err != nil {
		s.Reset()
		return
	}
	reply := controlReply{Code: ctlBad}
	switch ctl, err := agents.DecodeControl(req.Record); {
	case req.Version != 1:
		reply.Error = fmt.Sprintf("control request version %d; this node speaks 1", req.Version)
	case err != nil:
		reply.Error = err.Error()
	case ctl.Agent != req.DID:
		reply.Error = fmt.Sprintf("the record is for %s, the request for %s", ctl.Agent, req.DID)
	default:
		ctx, cancel := context.WithTimeout(m.ctx, controlTimeout)
		id, err := m.applyControl(ctx, ctl, s.Conn().RemotePeer())
		cancel()
		reply = controlReply{Code: codeOf(err), Checkpoint: id}
		if err != nil {
			reply.Error = err.Error()
		}
	}
	_ = writeMsg(s, reply)
}

// applyControl applies ctl here, as a holder. For an upgrade it first
// fetches the new module and manifest (from the sender, else providers)
// and compiles the module, so the agent stops only for the state's pass
// through it.
func (m *Mesh) applyControl(ctx context.Context, ctl *agents.Control, from peer.ID) (string, error) {
	if ctl.Kind == agents.ControlUpgrade {
		if _, err := m.Custody.Agent(ctl.Agent); err != nil {
			return "", err
		}
		var peers []peer.AddrInfo
		if from != "" {
			peers = append(peers, peer.AddrInfo{ID: from})
		}
		for _, c := range []cid.Cid{ctl.Manifest, ctl.Module} {
			if _, err := m.Ex.FetchDAG(ctx, c, exchange.FetchOptions{From: peers}); err != nil {
				return "", fmt.Errorf("%w: fetch upgrade block %s: %v", hosting.ErrUpgradeFailed, c, err)
			}
		}
		if err := m.Svc.PrepareUpgrade(ctx, ctl); err != nil {
			return "", err
		}
	}
	return m.Custody.Control(ctx, ctl.Agent, ctl)
}

// askControl sends ctl to member p (this node applies it itself).
func (m *Mesh) askControl(ctx context.Context, p peer.ID, ctl *agents.Control) (string, error) {
	if p == m.Host.ID() {
		return m.applyControl(ctx, ctl, "")
	}
	rec, err := ctl.Encode()
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, controlTimeout+5*time.Second)
	defer cancel()
	s, err := m.Host.NewStream(ctx, p, ControlProtocol)
	if err != nil {
		return "", fmt.Errorf("holder %s: %w", p, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if err := writeMsg(s, controlRequest{Version: 1, DID: ctl.Agent, Record: rec}); err != nil {
		s.Reset()
		return "", fmt.Errorf("holder %s: %w", p, err)
	}
	var r controlReply
	if err := readMsg(bufio.NewReader(s), &r); err != nil {
		s.Reset()
		return "", fmt.Errorf("holder %s: no answer (the record may still be applied; check the agent's status): %w", p, err)
	}
	return r.Checkpoint, r.err(p)
}

// Control delivers an owner's signed record to the agent's holder, wherever
// it is in the mesh, and returns once the custody group committed the
// checkpoint carrying it. Errors wrap agents.ErrControl (the holder
// refused the record: not the owner's, out of order, meaningless now),
// custody.ErrBusy or ErrNoHolderNow (retry), or ErrUnknownAgent.
func (m *Mesh) Control(ctx context.Context, ctl *agents.Control) (*ControlResult, error) {
	if ctl == nil {
		return nil, fmt.Errorf("%w: no control record", ErrBadRequest)
	}
	var lastErr error
	for range 3 {
		live, err := m.locateHolder(ctx, ctl.Agent)
		if err != nil {
			return nil, err
		}
		p, err := peer.Decode(live.Peer)
		if err != nil {
			return nil, err
		}
		id, err := m.askControl(ctx, p, ctl)
		if errors.Is(err, custody.ErrNotHolder) || errors.Is(err, custody.ErrNotMember) {
			lastErr = err // the lease moved since we asked: find it again
			m.setHolderHint(ctl.Agent, holderHint{})
			continue
		}
		for wait := time.Second; errors.Is(err, custody.ErrBusy) && wait <= 8*time.Second; wait *= 2 {
			// A handoff, regroup or membership change in flight: they end
			// within seconds.
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("%w (%w)", err, ctx.Err())
			case <-time.After(wait):
			}
			id, err = m.askControl(ctx, p, ctl)
		}
		if err != nil {
			return nil, err
		}
		m.setHolderHint(ctl.Agent, holderHint{holder: live.Peer, members: live.Members})
		return &ControlResult{DID: ctl.Agent, Kind: string(ctl.Kind), Seq: ctl.Seq, Amount: ctl.Amount, Holder: live.Peer, Checkpoint: id}, nil
	}
	return nil, fmt.Errorf("%w: %v", ErrNoHolderNow, lastErr)
}

// locateHolder finds the member holding did's lease now: the holder this
// node last found (and its group), else the head record's.
func (m *Mesh) locateHolder(ctx context.Context, did string) (*LiveStatus, error) {
	tried := map[string]bool{}
	hint := m.holderHint(did)
	var findErr error
	if hint.holder != "" {
		live, _, err := m.findHolder(ctx, did, append([]string{hint.holder}, hint.members...), tried)
		if live != nil {
			return live, nil
		}
		findErr = err
	}
	rec, recErr := m.resolveHeadRecord(ctx, did)
	if rec == nil {
		if findErr == nil {
			return nil, recErr
		}
		return nil, fmt.Errorf("%w: %v; %v", ErrNoHolderNow, findErr, recErr)
	}
	live, _, err := m.findHolder(ctx, did, []string{rec.Holder}, tried)
	if live == nil {
		return nil, fmt.Errorf("%w: %v", ErrNoHolderNow, err)
	}
	return live, nil
}

// ControlAgent signs a record of kind (with amount µc for a top-up) with
// this home's owner key and delivers it (Control). Its number follows the
// records the agent's committed head counts.
func (m *Mesh) ControlAgent(ctx context.Context, did string, kind agents.ControlKind, amountUC int64, up *Upgrade) (*ControlResult, error) {
	if _, err := agents.ParseDID(did); err != nil {
		return nil, err
	}
	key, err := m.OwnerKey()
	if err != nil {
		return nil, err
	}
	var module, manifest cid.Cid
	if kind == agents.ControlUpgrade {
		if up == nil {
			return nil, fmt.Errorf("%w: an upgrade needs a module and a manifest", ErrBadRequest)
		}
		if module, manifest, err = m.storeUpgrade(ctx, up); err != nil {
			return nil, err
		}
	}
	st, err := m.QueryAgent(ctx, did)
	if err != nil {
		return nil, err
	}
	if st.Source != "holder" {
		return nil, fmt.Errorf("%w: %s is %s (%s)", ErrNoHolderNow, did, st.Status, st.Error)
	}
	ctl := &agents.Control{Kind: kind, Agent: did, Seq: st.Controls + 1, Amount: amountUC, Module: module, Manifest: manifest, Issued: time.Now().UnixNano()}
	if err := ctl.Sign(key); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRequest, err)
	}
	return m.Control(ctx, ctl)
}

// Upgrade is the new module and manifest of an upgrade record.
type Upgrade struct {
	Wasm     []byte
	Manifest []byte // JSON
}

// storeUpgrade stores an upgrade's module and manifest here (the holder
// fetches them from this node), after checking that the manifest parses
// and the module compiles.
func (m *Mesh) storeUpgrade(ctx context.Context, up *Upgrade) (module, manifest cid.Cid, err error) {
	man, err := agents.ParseManifest(up.Manifest)
	if err != nil {
		return cid.Undef, cid.Undef, fmt.Errorf("%w: upgrade manifest: %v", ErrBadRequest, err)
	}
	if err := m.Custody.CheckManifest(man); err != nil {
		return cid.Undef, cid.Undef, fmt.Errorf("%w: upgrade manifest: %w", ErrBadRequest, err)
	}
	if len(up.Wasm) == 0 || len(up.Wasm) > hosting.MaxModuleBytes {
		return cid.Undef, cid.Undef, fmt.Errorf("%w: upgrade module of %d bytes (1 to %d)", ErrBadRequest, len(up.Wasm), hosting.MaxModuleBytes)
	}
	if module, err = m.Store.PutObjectBytes(up.Wasm); err != nil {
		return cid.Undef, cid.Undef, err
	}
	rt, err := m.Runtime(ctx)
	if err != nil {
		return cid.Undef, cid.Undef, err
	}
	if _, err := rt.Compile(ctx, module.String(), up.Wasm); err != nil {
		return cid.Undef, cid.Undef, fmt.Errorf("%w: upgrade module: %v", ErrBadRequest, err)
	}
	if manifest, err = m.Store.Put(cid.Raw, man.Canonical()); err != nil {
		return cid.Undef, cid.Undef, err
	}
	return module, manifest, nil
}

// controlBody is POST /v1/agents/{did}/control: either kind (and amount
// for a top-up) for this node to sign with its owner key, or a record
// signed elsewhere.
type controlBody struct {
	Kind     string          `json:"kind"`
	Amount   string          `json:"amount"`   // top-up, in budget units as publish's budget ("1.5")
	Wasm     []byte          `json:"wasm"`     // upgrade: the new module (base64)
	Manifest json.RawMessage `json:"manifest"` // upgrade: the new manifest
	Record   []byte          `json:"record"`   // base64 of a signed agents.Control (instead of kind)
}

func (m *Mesh) apiControl(w http.ResponseWriter, r *http.Request) {
	did := r.PathValue("did")
	var body controlBody
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, MaxPublishBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&body); err != nil {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("control request: %v (want {\"kind\": \"stop\"|\"start\"|\"topup\"|\"delete\"|\"upgrade\", \"amount\": \"1.5\", \"wasm\": BASE64, \"manifest\": {…}} or {\"record\": BASE64})", err))
		return
	}
	var (
		res *ControlResult
		err error
	)
	switch {
	case len(body.Record) > 0 && body.Kind != "":
		err = fmt.Errorf("%w: give kind or record, not both", ErrBadRequest)
	case len(body.Record) > 0:
		var ctl *agents.Control
		if ctl, err = agents.DecodeControl(body.Record); err != nil {
			err = fmt.Errorf("%w: record: %v", ErrBadRequest, err)
		} else {
			if ctl.Agent != did {
				err = fmt.Errorf("%w: the record is for %s, not %s", ErrBadRequest, ctl.Agent, did)
			} else {
				res, err = m.Control(r.Context(), ctl)
			}
		}
	default:
		var uc int64
		kind := agents.ControlKind(body.Kind)
		switch {
		case kind == agents.ControlTopUp:
			if uc, err = amount.Parse(body.Amount); err == nil && uc <= 0 {
				err = fmt.Errorf("top-up amount %q must be positive", body.Amount)
			}
			if err != nil {
				err = fmt.Errorf("%w: %v", ErrBadRequest, err)
			}
		case body.Amount != "":
			err = fmt.Errorf("%w: only a top-up takes an amount", ErrBadRequest)
		case kind == agents.ControlUpgrade:
			if len(body.Wasm) == 0 || len(body.Manifest) == 0 {
				err = fmt.Errorf("%w: an upgrade needs wasm (base64) and manifest", ErrBadRequest)
			}
		case len(body.Wasm) > 0 || len(body.Manifest) > 0:
			err = fmt.Errorf("%w: only an upgrade takes wasm and manifest", ErrBadRequest)
		case kind != agents.ControlStop && kind != agents.ControlStart && kind != agents.ControlDelete:
			err = fmt.Errorf("%w: kind %q is not stop, start, topup, delete or upgrade", ErrBadRequest, body.Kind)
		}
		if err == nil {
			var up *Upgrade
			if kind == agents.ControlUpgrade {
				up = &Upgrade{Wasm: body.Wasm, Manifest: body.Manifest}
			}
			res, err = m.ControlAgent(r.Context(), did, kind, uc, up)
		}
	}
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// custodyDeleted (custody.Hooks.Deleted) runs on the holder once the
// checkpoint carrying the owner's delete record is committed: every other
// member is asked to leave with that checkpoint as proof, then this node
// leaves. Members that cannot be reached keep their state until asked
// again (see docs/PROTOCOL.md, "Owner control").
func (m *Mesh) custodyDeleted(did string, members []string) {
	ctx, cancel := context.WithTimeout(m.ctx, 30*time.Second)
	defer cancel()
	var proof string
	if st, err := m.Custody.Agent(did); err == nil {
		proof = st.Committed
	}
	offer := custodyOffer{Version: 2, DID: did, Leave: true, Deleted: proof}
	var hs []*agents.HostRecord
	for _, p := range members {
		h := &agents.HostRecord{Peer: p}
		if id, err := peer.Decode(p); err == nil {
			for _, a := range m.Host.Peerstore().Addrs(id) {
				h.Addrs = append(h.Addrs, a.String()+"/p2p/"+p)
			}
		}
		hs = append(hs, h)
	}
	// Members that did not answer are asked again (a busy or briefly
	// unreachable node), for as long as the context allows.
	for attempt := 0; len(hs) > 0 && ctx.Err() == nil; attempt++ {
		var again []*agents.HostRecord
		for i, err := range m.offerAll(ctx, hs, offer, nil) {
			if err != nil {
				again = append(again, hs[i])
				if ctx.Err() != nil || attempt >= 4 {
					m.Logger.Warn("custody: a member did not release the deleted agent", "agent", did, "member", hs[i].Peer, "err", err)
				}
			}
		}
		hs = again
		if len(hs) > 0 && attempt < 4 {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		} else {
			break
		}
	}
	if err := m.releaseDeleted(did, ""); err != nil {
		m.Logger.Warn("custody: release the deleted agent", "agent", did, "err", err)
	}
}

// leaveDeleted is a member's answer to its holder's leave offer naming the
// delete checkpoint proof: the checkpoint (fetched if not here) must be the
// agent's, signed, and carry a delete record signed by the genesis's owner.
func (m *Mesh) leaveDeleted(ctx context.Context, did, proof, from string) error {
	if _, err := m.Custody.Agent(did); errors.Is(err, custody.ErrNotMember) {
		return nil // nothing kept here (left already)
	}
	c, err := cidDecode(proof)
	if err != nil {
		return fmt.Errorf("%w: delete proof %q: %v", ErrBadRequest, proof, err)
	}
	cp, err := m.fetchCheckpoint(ctx, did, c, []string{from})
	if err != nil {
		return err
	}
	if !cp.Deleted() {
		return fmt.Errorf("%w: checkpoint %s carries no delete record", agents.ErrControl, c)
	}
	gdata, err := m.Store.Get(cp.Genesis)
	if err != nil {
		return fmt.Errorf("genesis %s: %w", cp.Genesis, err)
	}
	g, err := agents.DecodeGenesis(gdata)
	if err != nil {
		return err
	}
	if err := cp.Control.Verify(g.Owner); err != nil {
		return err
	}
	return m.releaseDeleted(did, from)
}

// releaseDeleted drops everything this node keeps for a deleted agent: its
// custody membership (and pins), its key (the publisher's too: there is
// nothing left to revive) and its local head, then collects garbage.
func (m *Mesh) releaseDeleted(did, from string) error {
	// The checkpoint carrying the owner's delete record is the authority
	// (checked by the caller), whoever relays it: not the rule that only
	// the holder a member follows may ask it to leave, which a member that
	// heard another holder last would apply.
	err := m.Custody.Leave(did, "")
	if errors.Is(err, custody.ErrNotMember) {
		err = nil
	}
	err = errors.Join(err, m.Keys.Delete(did), m.Home.RemoveHead(did))
	m.Logger.Info("custody: released the deleted agent", "agent", did, "asked by", from)
	m.gcSoon()
	return err
}

// gcSoon runs a garbage collection of the store in the background, at
// most one at a time (a request while one runs is folded into it).
func (m *Mesh) gcSoon() {
	select {
	case m.gcKick <- struct{}{}:
	default:
	}
}

func (m *Mesh) runGC() {
	defer m.wg.Done()
	for {
		select {
		case <-m.ctx.Done():
			return
		case <-m.gcKick:
		}
		st, err := m.Store.GC(m.ctx)
		if err != nil {
			m.Logger.Warn("store garbage collection", "err", err)
			continue
		}
		m.Logger.Info("store garbage collection", "removed", st.Removed, "freed_bytes", st.Freed, "kept_fresh", st.KeptFresh, "kept", st.Marked)
	}
}

// ExportHead is the checkpoint export writes for did on a running daemon:
// the custody group's committed (else accepted) checkpoint when this node
// is a member, else this home's head.
func (m *Mesh) ExportHead(did string) (cid.Cid, error) {
	if st, err := m.Custody.Agent(did); err == nil {
		for _, id := range []string{st.Committed, st.Accepted} {
			if c, err := cid.Decode(id); err == nil {
				return c, nil
			}
		}
	}
	return m.Home.Head(did)
}

// apiExport is GET /v1/agents/{did}/car: the agent's whole DAG as a CARv1
// (what `igor-node export` writes), from this running daemon's store.
func (m *Mesh) apiExport(w http.ResponseWriter, r *http.Request) {
	did := r.PathValue("did")
	if _, err := agents.ParseDID(did); err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	head, err := m.ExportHead(did)
	if err != nil {
		writeErr(w, http.StatusNotFound, fmt.Errorf("%w: %s has no head on this node (export it where it was published or is kept): %v", ErrUnknownAgent, did, err))
		return
	}
	// Checked before the first byte goes out: a missing block after that
	// could only cut the stream.
	if _, err := m.Store.Reachable(r.Context(), []cid.Cid{head}); err != nil {
		writeErr(w, http.StatusConflict, fmt.Errorf("the DAG of %s (head %s) is not complete on this node: %v", did, head, err))
		return
	}
	w.Header().Set("Content-Type", "application/vnd.ipld.car")
	w.Header().Set("X-Igor-Head", head.String())
	if _, err := m.Store.WriteCAR(r.Context(), w, []cid.Cid{head}); err != nil {
		m.Logger.Warn("export over the API cut short", "agent", did, "err", err)
	}
}

// inspectStatus maps Inspect's errors: a malformed reference is 400, an
// unknown agent or block 404.
func inspectStatus(err error) int {
	switch {
	case errors.Is(err, contentstore.ErrNotFound), errors.Is(err, keystore.ErrNotFound), errors.Is(err, ErrUnknownAgent):
		return http.StatusNotFound
	case errors.Is(err, agents.ErrBadDID), errors.Is(err, agents.ErrMalformed), errors.Is(err, ErrBadRequest):
		return http.StatusBadRequest
	}
	return statusOf(err)
}
