package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/node"
)

func newInspectCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect DID|CID",
		Short: "Show an agent's head checkpoint (or any checkpoint, genesis or manifest by CID)",
		Args:  exactArgs(1, "a DID or a CID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var info *node.CheckpointInfo
			l, err := g.openLocal(cmd)
			switch {
			case errors.Is(err, node.ErrStoreInUse):
				// A daemon runs on this home: it reads its own store.
				c, cerr := g.client("")
				if cerr != nil {
					return fmt.Errorf("the home's store is in use and %w", cerr)
				}
				info = new(node.CheckpointInfo)
				if err := c.do("GET", "/v1/inspect/"+url.PathEscape(args[0]), nil, info); err != nil {
					return err
				}
			case err != nil:
				return err
			default:
				defer l.Close()
				if info, err = l.Inspect(args[0]); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), info)
			}
			printInfo(cmd.OutOrStdout(), info)
			if !info.SignatureOK {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func printInfo(w io.Writer, i *node.CheckpointInfo) {
	if i.Kind == "manifest" {
		var pretty bytes.Buffer
		if json.Indent(&pretty, i.Content, "", "  ") != nil {
			pretty.Reset()
			pretty.Write(i.Content)
		}
		fmt.Fprintf(w, "kind      manifest\ncid       %s\n%s\n", i.CID, pretty.String())
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("kind", i.Kind)
	row("did", i.DID)
	row("cid", i.CID)
	if i.Kind == "checkpoint" {
		row("seq", fmt.Sprint(i.Seq))
		row("tick", fmt.Sprint(i.Tick))
		row("epoch", fmt.Sprint(i.Epoch))
		row("budget", formatAmount(i.Budget))
		row("price", fmt.Sprintf("%d µc/s", i.Price))
		row("holder", i.Holder)
		row("time", time.Unix(0, i.Time).UTC().Format(time.RFC3339Nano))
		row("prev", orDash(i.Prev))
		if i.State != "" {
			row("state", fmt.Sprintf("%s (%d bytes)", i.State, i.StateSize))
		} else {
			row("state", "- (replayed from the journal)")
		}
		if i.Journal != "" {
			j := i.Journal
			if i.Partial {
				j += " (partial: ends at an effect's intent)"
			}
			row("journal", j)
		}
		if i.Paid != 0 {
			row("paid", formatAmount(i.Paid))
		}
	} else {
		row("budget", formatAmount(i.Budget))
		row("created", time.Unix(0, i.Time).UTC().Format(time.RFC3339Nano))
	}
	row("genesis", i.Genesis)
	row("module", i.Module)
	row("manifest", i.Manifest)
	if i.SignatureOK {
		row("signatures", "valid")
	} else {
		row("signatures", "INVALID: "+i.SigError)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func newVerifyCmd(g *globalFlags) *cobra.Command {
	var (
		asJSON bool
		api    string
		replay bool
	)
	cmd := &cobra.Command{
		Use:   "verify DID|FILE.car",
		Short: "Verify an agent's whole lineage, from its head back to genesis",
		Long: `Checks every checkpoint from the head back to genesis: signatures (agent and
holder), links, sequence and tick order, epochs, budget never increasing, module
and manifest binding, and that every state/module block is present and intact.
It also reports forks (two checkpoints with the same predecessor) with both CIDs.
With --replay it re-executes every journaled tick (agents whose manifest sets
"journal", or uses http or x402) from the state before it, with the tick's
recorded observations, and checks that every stored state follows: that the
holders ran the agent's module on what they recorded.
An agent that is not in this home is fetched from the mesh through the local
daemon. Exit status 0 only if everything is valid.`,
		Args: exactArgs(1, "a DID or a CAR file"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var rep *node.VerifyReport
			var err error
			opts := node.VerifyOptions{Replay: replay}
			if _, derr := agents.ParseDID(args[0]); derr == nil {
				l, oerr := g.openLocal(cmd)
				switch {
				case errors.Is(oerr, node.ErrStoreInUse):
					// A daemon owns this home: it answers for it.
					err = node.ErrUnknownAgent
				case oerr != nil:
					return oerr
				default:
					rep, err = l.Verify(cmd.Context(), args[0], opts)
					l.Close()
				}
				if errors.Is(err, node.ErrUnknownAgent) {
					// Not here: ask the mesh through the daemon, if one runs.
					if c, cerr := g.client(api); cerr == nil {
						rep = &node.VerifyReport{}
						path := "/v1/agents/" + args[0] + "/verify"
						if replay {
							path += "?replay=1"
						}
						err = c.do("GET", path, nil, rep)
					}
				}
			} else if st, serr := os.Stat(args[0]); serr == nil && !st.IsDir() {
				rep, err = node.VerifyCAR(cmd.Context(), args[0], opts)
			} else {
				return usagef("%q is neither a DID nor a CAR file", args[0])
			}
			if err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), rep); err != nil {
					return err
				}
			} else {
				printReport(cmd.OutOrStdout(), rep)
			}
			if !rep.Valid {
				return exitError{1}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&api, "api", "", "daemon API address for agents not in this home")
	cmd.Flags().BoolVar(&replay, "replay", false, "re-execute every journaled tick and compare the states it reaches")
	return cmd
}

func printReport(w io.Writer, r *node.VerifyReport) {
	if r.DID != "" {
		fmt.Fprintf(w, "agent      %s\n", r.DID)
	}
	fmt.Fprintf(w, "head       %s\n", r.Head)
	if r.Genesis != "" {
		fmt.Fprintf(w, "genesis    %s\n", r.Genesis)
		fmt.Fprintf(w, "lineage    %d checkpoints, seq 0..%d, ticks %d..%d, epoch ≤ %d\n", r.Checkpoints, r.LastSeq, r.FirstTick, r.LastTick, r.MaxEpoch)
		fmt.Fprintf(w, "budget     %s -> %s\n", formatAmount(r.BudgetStart), formatAmount(r.BudgetLeft))
		fmt.Fprintf(w, "holders    %s\n", strings.Join(r.Holders, ", "))
		for _, c := range r.Charges {
			fmt.Fprintf(w, "charged    %s by %s: %d ticks, %d calls, %v metered, in %d checkpoints\n",
				formatAmount(c.Charged), c.Holder, c.Ticks, c.Calls, time.Duration(c.MeteredNs).Round(time.Microsecond), c.Checkpoints)
		}
	}
	if r.Paid != 0 {
		fmt.Fprintf(w, "paid       %s (wallet_pay)\n", formatAmount(r.Paid))
	}
	if rr := r.Replay; rr != nil {
		fmt.Fprintf(w, "replay     %d journaled ticks re-executed, %d states compared, %d ticks not journaled\n", rr.Ticks, rr.Compared, rr.Unjournaled)
	}
	for _, f := range r.Forks {
		fmt.Fprintf(w, "FORK       %s and %s both follow %s\n", f.A, f.B, f.Prev)
	}
	if r.Valid {
		if r.Replay != nil {
			fmt.Fprintf(w, "VALID      every signature, link and block verified; every journaled tick replayed to its state\n")
			return
		}
		fmt.Fprintf(w, "VALID      every signature, link and block verified\n")
		return
	}
	fmt.Fprintf(w, "INVALID    %s\n", r.Error)
}

func newExportCmd(g *globalFlags) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "export DID -o FILE.car",
		Short: "Write an agent's whole DAG (module, genesis, every checkpoint) as a CAR file",
		Long: `The CAR file is the portable agent: everything except its private key, which
moves separately with 'igor-node keys export'. Use -o - for standard output.`,
		Args: exactArgs(1, "DID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("export needs -o FILE.car (or -o - for standard output)")
			}
			if _, err := agents.ParseDID(args[0]); err != nil {
				return usagef("%v", err)
			}
			l, err := g.openLocal(cmd)
			if errors.Is(err, node.ErrStoreInUse) {
				// A daemon runs on this home: it exports from its store.
				return exportViaAPI(cmd, g, args[0], out)
			}
			if err != nil {
				return err
			}
			defer l.Close()
			if out == "-" {
				_, _, err := l.Export(cmd.Context(), args[0], cmd.OutOrStdout())
				return err
			}
			var head cid.Cid
			var n int
			err = node.WriteFileAtomicFrom(out, 0o644, func(w io.Writer) error {
				var err error
				head, n, err = l.Export(cmd.Context(), args[0], w)
				return err
			})
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "exported %s: %d blocks, head %s, to %s\n", args[0], n, head, out)
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "output file (- for standard output)")
	return cmd
}

func newImportCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "import FILE.car",
		Short: "Import an agent exported with 'export'; verifies it before adopting its head",
		Args:  exactArgs(1, "FILE.car"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			l, err := g.openLocal(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			rep, err := l.Import(cmd.Context(), f)
			if err != nil {
				return fmt.Errorf("import %s: %w", args[0], err)
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), rep)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\nimported %d blocks: %s, head %s (seq %d, tick %d)\n", rep.DID, rep.Blocks, rep.Outcome, rep.Head, rep.Seq, rep.Tick)
			if !rep.HasKey {
				fmt.Fprintf(cmd.ErrOrStderr(), "note: this home has no key for %s; to resume it here run 'igor-node keys import KEYFILE'\n", rep.DID)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newListCmd(g *globalFlags) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the agents with a checkpoint in this home",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			var infos []*node.CheckpointInfo
			l, err := g.openLocal(cmd)
			switch {
			case errors.Is(err, node.ErrStoreInUse):
				// A daemon runs on this home: it lists its own heads.
				c, cerr := g.client("")
				if cerr != nil {
					return fmt.Errorf("the home's store is in use and %w", cerr)
				}
				if err := c.do("GET", "/v1/home/agents", nil, &infos); err != nil {
					return err
				}
			case err != nil:
				return err
			default:
				defer l.Close()
				if infos, err = l.HomeAgents(); err != nil {
					return err
				}
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), infos)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "DID\tSEQ\tTICK\tBUDGET\tHEAD")
			for _, i := range infos {
				fmt.Fprintf(tw, "%s\t%d\t%d\t%s\t%s\n", i.DID, i.Seq, i.Tick, formatAmount(i.Budget), i.CID)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// exportViaAPI is export on the home of a running daemon: the daemon writes
// the CAR from its store (GET /v1/agents/{did}/car).
func exportViaAPI(cmd *cobra.Command, g *globalFlags, did, out string) error {
	c, err := g.client("")
	if err != nil {
		return fmt.Errorf("the home's store is in use and %w", err)
	}
	resp, err := c.stream(cmd.Context(), "/v1/agents/"+did+"/car")
	if err != nil {
		return fmt.Errorf("the home's store is in use by a daemon; exporting through it: %w", err)
	}
	defer resp.Body.Close()
	var n int64
	write := func(w io.Writer) error {
		n, err = io.Copy(w, resp.Body)
		return err
	}
	if out == "-" {
		return write(cmd.OutOrStdout())
	}
	if err := node.WriteFileAtomicFrom(out, 0o644, write); err != nil {
		return err
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "exported %s through the running daemon: %d bytes, head %s, to %s\n", did, n, resp.Header.Get("X-Igor-Head"), out)
	return nil
}
