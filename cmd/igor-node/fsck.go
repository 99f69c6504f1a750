package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/atomicfile"
	"github.com/igor-mesh/igor-node/node"
)

// fsckReport is the outcome of an offline check of a node's home.
type fsckReport struct {
	Home    string                    `json:"home"`
	Clean   bool                      `json:"clean"`
	Store   *contentstore.CheckReport `json:"store,omitempty"`
	NodeKey string                    `json:"node_peer_id,omitempty"` // "" when there is none yet
	Keys    []string                  `json:"agent_keys"`             // DIDs whose key files verified
	Agents  []fsckAgent               `json:"agents"`
	Custody []fsckCustody             `json:"custody"`
	// TempFiles: leftovers of writes a crash interrupted, outside the
	// content store (whose own are in Store.TempFiles). Safe to delete.
	TempFiles []string `json:"temp_files,omitempty"`
	Notes     []string `json:"notes,omitempty"`    // worth knowing, not damage
	Problems  []string `json:"problems,omitempty"` // damage: fsck fails
}

type fsckAgent struct {
	DID  string `json:"did"`
	Head string `json:"head"`
	Seq  uint64 `json:"seq"`
	Tick uint64 `json:"tick"`
}

type fsckCustody struct {
	DID         string `json:"did"`
	Epoch       uint64 `json:"epoch"`
	AcceptedSeq uint64 `json:"accepted_seq"`
	Accepted    string `json:"accepted"`
}

func newFsckCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "fsck",
		Short: "Check a stopped node's home for damage: blocks, keys, heads, custody state",
		Long: `Checks the home of a node that is not running, without changing it:
  - every block in the content store hashes to its CID, no block file is empty
    or torn, and every pinned DAG is complete;
  - every agent key file decodes and holds the key of the DID it is named for,
    and the node key loads;
  - every agent head's lineage verifies back to genesis (signatures, links,
    state and module blocks);
  - every custody membership's group and hard-state files load, and the agent
    key and the accepted checkpoint they need are here and verify.
Leftover *.tmp files of interrupted writes are listed; they are not damage
(the content store removes its own when the node next starts; others may be
deleted by hand). Exit status 0 when clean, 1 when anything is damaged.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := g.homeDir()
			if err != nil {
				return err
			}
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return fmt.Errorf("no igor-node home at %s (pass --home DIR)", dir)
			}
			rep, err := fsck(cmd.Context(), dir)
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printFsck(cmd.OutOrStdout(), rep)
			}
			if !rep.Clean {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func fsck(ctx context.Context, dir string) (*fsckReport, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	h, err := node.OpenHome(dir)
	if err != nil {
		return nil, err
	}
	rep := &fsckReport{Home: h.Dir, Keys: []string{}, Agents: []fsckAgent{}, Custody: []fsckCustody{}}
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
		lin, err := agents.VerifyLineage(c, st, agents.VerifyOptions{ExpectDID: did, CheckBlock: node.ObjectChecker(st)})
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
		rep.Agents = append(rep.Agents, fsckAgent{DID: did, Head: c.String(), Seq: hd.Seq, Tick: hd.Tick})
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
		rep.Custody = append(rep.Custody, fsckCustody{DID: did, Epoch: p.HardState.Epoch, AcceptedSeq: p.HardState.Accepted.Seq, Accepted: p.HardState.Accepted.ID})
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

func printFsck(w io.Writer, r *fsckReport) {
	fmt.Fprintf(w, "home       %s\n", r.Home)
	if s := r.Store; s != nil {
		fmt.Fprintf(w, "store      %d blocks (%d bytes) re-hashed, %d pins\n", s.Blocks, s.Bytes, s.Pins)
	}
	if r.NodeKey != "" {
		fmt.Fprintf(w, "node key   %s\n", r.NodeKey)
	}
	fmt.Fprintf(w, "keys       %d agent key(s) verified\n", len(r.Keys))
	fmt.Fprintf(w, "agents     %d head(s) with a verified lineage\n", len(r.Agents))
	for _, a := range r.Agents {
		fmt.Fprintf(w, "           %s seq %d tick %d\n", a.DID, a.Seq, a.Tick)
	}
	fmt.Fprintf(w, "custody    %d membership(s) loaded\n", len(r.Custody))
	for _, c := range r.Custody {
		fmt.Fprintf(w, "           %s epoch %d accepted seq %d\n", c.DID, c.Epoch, c.AcceptedSeq)
	}
	var temps []string
	if r.Store != nil {
		for _, t := range r.Store.TempFiles {
			temps = append(temps, filepath.Join("store", t))
		}
	}
	temps = append(temps, r.TempFiles...)
	for _, t := range temps {
		fmt.Fprintf(w, "tmp        %s\n", t)
	}
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note       %s\n", n)
	}
	for _, p := range r.Problems {
		fmt.Fprintf(w, "PROBLEM    %s\n", p)
	}
	if r.Clean {
		fmt.Fprintf(w, "CLEAN      nothing damaged\n")
		return
	}
	fmt.Fprintf(w, "DAMAGED    %d problem(s)\n", len(r.Problems))
}
