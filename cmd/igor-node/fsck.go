package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/node"
)

func newFsckCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	var forget string
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
  - every custody membership's group file and lease-state record load, and the agent
    key and the accepted checkpoint they need are here and verify.
Leftover *.tmp files of interrupted writes are listed; they are not damage
(the content store removes its own when the node next starts; others may be
deleted by hand). Exit status 0 when clean, 1 when anything is damaged.

With --forget DID it first removes this node's custody membership of DID
(its group and lease-state records; the agent key stays): the repair for a
membership fsck reports as damaged, which the node refuses to take part in
and the rest of its group replaces.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			dir, err := g.homeDir()
			if err != nil {
				return err
			}
			if st, err := os.Stat(dir); err != nil || !st.IsDir() {
				return fmt.Errorf("no igor-node home at %s (pass --home DIR)", dir)
			}
			if forget != "" {
				if err := node.ForgetMembership(dir, forget); err != nil {
					return err
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "forgot the custody membership of %s (the agent key stays)\n", forget)
			}
			rep, err := node.Fsck(cmd.Context(), dir)
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
	cmd.Flags().StringVar(&forget, "forget", "", "first remove this node's custody membership of `DID` (a damaged one)")
	return cmd
}

func printFsck(w io.Writer, r *node.FsckReport) {
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
