package node

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ipfs/go-cid"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/atomicfile"
)

// FsckReport is the outcome of an offline check of a node's home (Fsck).
type FsckReport struct {
	Home    string                    `json:"home"`
	Clean   bool                      `json:"clean"`
	Store   *contentstore.CheckReport `json:"store,omitempty"`
	NodeKey string                    `json:"node_peer_id,omitempty"` // "" when there is none yet
	Keys    []string                  `json:"agent_keys"`             // DIDs whose key files verified
	Agents  []FsckAgent               `json:"agents"`
	Custody []FsckCustody             `json:"custody"`
	// TempFiles: leftovers of writes a crash interrupted, outside the
	// content store (whose own are in Store.TempFiles). Safe to delete.
	TempFiles []string `json:"temp_files,omitempty"`
	Notes     []string `json:"notes,omitempty"`    // worth knowing, not damage
	Problems  []string `json:"problems,omitempty"` // damage: fsck fails
}

// FsckAgent is an agent head whose lineage verified.
type FsckAgent struct {
	DID  string `json:"did"`
	Head string `json:"head"`
	Seq  uint64 `json:"seq"`
	Tick uint64 `json:"tick"`
}

// FsckCustody is a custody membership that loaded.
type FsckCustody struct {
	DID         string `json:"did"`
	Epoch       uint64 `json:"epoch"`
	AcceptedSeq uint64 `json:"accepted_seq"`
	Accepted    string `json:"accepted"`
}

// Fsck checks the home of a stopped node at dir without changing it:
// blocks, pins, keys, heads and their lineages, custody memberships. It
// fails (an error, not a report) when the home is in use by a running
// node or cannot be read at all; damage goes in the report's Problems.
func Fsck(ctx context.Context, dir string) (*FsckReport, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	h, err := OpenHome(dir)
	if err != nil {
		return nil, err
	}
	rep := &FsckReport{Home: h.Dir, Keys: []string{}, Agents: []FsckAgent{}, Custody: []FsckCustody{}}
	problem := func(format string, a ...any) { rep.Problems = append(rep.Problems, fmt.Sprintf(format, a...)) }
	note := func(format string, a ...any) { rep.Notes = append(rep.Notes, fmt.Sprintf(format, a...)) }
	temps := func(d string) {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), atomicfile.TempSuffix) {
				rel, _ := filepath.Rel(h.Dir, filepath.Join(d, e.Name()))
				rep.TempFiles = append(rep.TempFiles, rel)
			}
		}
	}

	// Content store (holding its lock: a running node makes fsck fail).
	var st *contentstore.Store
	if _, err := os.Stat(h.StoreDir()); errors.Is(err, fs.ErrNotExist) {
		note("no content store yet")
	} else {
		st, err = contentstore.OpenForCheck(h.StoreDir())
		if errors.Is(err, contentstore.ErrInUse) {
			return nil, fmt.Errorf("%s is in use by a running igor-node: stop it first (fsck checks a stopped node)", h.Dir)
		}
		if errors.Is(err, contentstore.ErrUninitialized) {
			note("content store: %v", err)
		} else if err != nil {
			problem("content store: %v", err)
		} else {
			defer st.Close()
			h.UseHeadStore(st) // heads are records in the store's pack
			r, err := st.Check(ctx)
			if err != nil {
				return nil, fmt.Errorf("checking the content store: %w", err)
			}
			rep.Store = &r
			rep.Problems = append(rep.Problems, r.Problems()...)
			for _, s := range r.Stray {
				note("stray file in the content store (ignored): %s", s)
			}
		}
	}

	// Node key.
	temps(h.Dir)
	if k, err := keystore.LoadNodeKey(h.NodeKeyPath()); err == nil {
		rep.NodeKey = agents.PeerID(k.Public().(ed25519.PublicKey))
	} else if errors.Is(err, keystore.ErrNotFound) {
		note("no node key yet (created when the node first starts)")
	} else {
		problem("node key: %v", err)
	}

	// Agent keys.
	var ks *keystore.Keystore
	if _, err := os.Stat(h.KeysDir()); err == nil {
		if ks, err = keystore.Open(h.KeysDir()); err != nil {
			problem("keystore: %v", err)
		}
	}
	if ks != nil {
		temps(h.KeysDir())
		ents, err := os.ReadDir(h.KeysDir())
		if err != nil {
			problem("keystore: %v", err)
		}
		for _, e := range ents {
			id, ok := strings.CutSuffix(e.Name(), ".key")
			if !ok || strings.HasPrefix(e.Name(), ".") {
				continue
			}
			did := "did:key:" + id
			if _, err := agents.ParseDID(did); err != nil {
				problem("key file %s is not named <agent id>.key: %v", e.Name(), err)
				continue
			}
			if _, err := ks.Get(did); err != nil {
				problem("agent key %s: %v", e.Name(), err)
				continue
			}
			rep.Keys = append(rep.Keys, did)
		}
	}
	haveKey := func(did string) error {
		if ks == nil {
			return fmt.Errorf("%w: no keystore", keystore.ErrNotFound)
		}
		_, err := ks.Get(did)
		return err
	}
	verify := func(what, did string, c cid.Cid) (*agents.Lineage, bool) {
		if st == nil {
			problem("%s %s: no content store to verify it in", what, did)
			return nil, false
		}
		lin, err := agents.VerifyLineage(c, st, agents.VerifyOptions{ExpectDID: did, CheckBlock: ObjectChecker(st)})
		if err != nil {
			problem("%s %s: lineage from %s does not verify: %v", what, did, c, err)
			return nil, false
		}
		return lin, true
	}

	// Agent heads.
	temps(filepath.Join(h.Dir, "heads"))
	dids, err := h.Agents()
	if err != nil {
		problem("heads: %v", err)
	}
	for _, did := range dids {
		c, err := h.Head(did)
		if err != nil {
			problem("head of %s: %v", did, err)
			continue
		}
		lin, ok := verify("agent", did, c)
		if !ok {
			continue
		}
		hd := lin.Head().Checkpoint
		rep.Agents = append(rep.Agents, FsckAgent{DID: did, Head: c.String(), Seq: hd.Seq, Tick: hd.Tick})
		if err := haveKey(did); errors.Is(err, keystore.ErrNotFound) {
			note("agent %s has no key here (it cannot run here until 'igor-node keys import FILE')", did)
		}
	}

	// Custody memberships.
	cdir := filepath.Join(h.Dir, "custody")
	var meta custody.Meta // lease states: in the store's pack (files on older nodes)
	if st != nil {
		meta = st
	}
	ps, err := custody.LoadPersisted(cdir, meta)
	if err != nil {
		for _, e := range unjoin(err) {
			problem("custody: %v", e)
		}
	}
	for _, p := range ps {
		did := p.Group.Agent
		temps(filepath.Join(cdir, agents.AgentID(did)))
		rep.Custody = append(rep.Custody, FsckCustody{DID: did, Epoch: p.HardState.Epoch, AcceptedSeq: p.HardState.Accepted.Seq, Accepted: p.HardState.Accepted.ID})
		if err := haveKey(did); err != nil {
			problem("custody group of %s: agent key: %v", did, err)
		}
		acc := p.HardState.Accepted.ID
		if acc == "" {
			acc = p.Group.Genesis
		}
		c, err := cid.Decode(acc)
		if err != nil {
			problem("custody group of %s: accepted checkpoint %q: %v", did, acc, err)
			continue
		}
		verify("custody group of", did, c)
	}
	temps(cdir)

	if len(rep.TempFiles) > 0 || (rep.Store != nil && len(rep.Store.TempFiles) > 0) {
		note("leftover temporary files of interrupted writes are listed; they are safe to delete (the content store removes its own at the next start)")
	}
	rep.Clean = len(rep.Problems) == 0
	return rep, nil
}

// unjoin splits an errors.Join result into its parts.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// ForgetMembership removes the custody membership of did persisted in the
// home of a stopped node at dir (its group and lease-state records; the
// agent key stays): the repair for a membership Fsck reports as damaged,
// which the node refuses to restore and the rest of the group replaces.
// Errors: custody.ErrNotMember when dir holds no membership of did, and
// an error naming the home when a running node holds it.
func ForgetMembership(dir, did string) error {
	if _, err := agents.ParseDID(did); err != nil {
		return fmt.Errorf("cannot forget a membership: %w", err)
	}
	h, err := OpenHome(dir)
	if err != nil {
		return err
	}
	var meta custody.Meta
	if _, err := os.Stat(h.StoreDir()); err == nil {
		st, err := contentstore.Open(h.StoreDir(), contentstore.WithPack(0))
		if errors.Is(err, contentstore.ErrInUse) {
			return fmt.Errorf("%s is in use by a running igor-node: stop it first", h.Dir)
		}
		if err != nil {
			return err
		}
		defer st.Close()
		meta = st
	}
	return custody.Forget(filepath.Join(h.Dir, "custody"), meta, did)
}
