package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/node"
)

// newControlCmds are the owner's records (stop, start, topup, delete,
// upgrade), sent through the local daemon to the agent's holder, and the
// mesh-wide views ps and logs.
func newControlCmds(g *globalFlags) []*cobra.Command {
	mk := func(kind agents.ControlKind, use, short, long string, nargs int) *cobra.Command {
		var (
			api    string
			asJSON bool
		)
		cmd := &cobra.Command{
			Use: use, Short: short, Long: long + `

The daemon signs the record with its home's owner key (HOME/owner.key), which
must be the owner named in the agent's genesis (the key of the home that
published it). The record goes to the agent's holder wherever it is; the
command returns once the custody group committed the checkpoint carrying it.`,
			Args: exactArgs(nargs, use[len(string(kind))+1:]),
			RunE: func(cmd *cobra.Command, args []string) error {
				if _, err := agents.ParseDID(args[0]); err != nil {
					return usagef("%v", err)
				}
				body := map[string]string{"kind": string(kind)}
				if kind == agents.ControlTopUp {
					body["amount"] = args[1]
				}
				c, err := g.client(api)
				if err != nil {
					return err
				}
				var res node.ControlResult
				if err := c.do("POST", "/v1/agents/"+args[0]+"/control", body, &res); err != nil {
					return err
				}
				if asJSON {
					return printJSON(cmd.OutOrStdout(), res)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s %s: record #%d applied by %s in checkpoint %s\n", kind, res.DID, res.Seq, res.Holder, res.Checkpoint)
				return nil
			},
		}
		apiFlags(cmd, &api, &asJSON)
		return cmd
	}
	return []*cobra.Command{
		newUpgradeCmd(g), newPsCmd(g), newLogsCmd(g),
		mk(agents.ControlStop, "stop DID", "Stop an agent (its owner's signed record): final checkpoint, held, resumable",
			"The agent stops after its tick in flight; its final checkpoint and the checkpoint\ncarrying the record are committed by its custody group, which keeps holding it\nwithout running it. 'igor-node start DID' resumes it.", 1),
		mk(agents.ControlStart, "start DID", "Resume an agent its owner stopped",
			"The holder commits the checkpoint carrying the record and runs the agent again\nfrom it (unless its budget is spent: top it up).", 1),
		mk(agents.ControlTopUp, "topup DID AMOUNT", "Add AMOUNT (e.g. 1.5) to an agent's budget — the only way a budget grows",
			"The agent pauses for the record's checkpoint (a handoff's pause) and runs on with\nthe larger budget; an agent whose budget was spent starts again.", 2),
		mk(agents.ControlDelete, "delete DID", "End an agent's life: final checkpoint, then every custodian releases it",
			"The agent stops after its tick in flight; once its group committed the checkpoint\ncarrying the record, the holder asks every member to leave (with that checkpoint as\nproof) and leaves: keys, pins and heads are dropped and each node collects its\ngarbage (blocks younger than the daemon's --gc-grace stay until a later one).\nNo checkpoint may follow; an exported copy still verifies.", 1),
	}
}

func newUpgradeCmd(g *globalFlags) *cobra.Command {
	var (
		api, manifest string
		asJSON        bool
	)
	cmd := &cobra.Command{
		Use:   "upgrade DID NEW.wasm",
		Short: "Run an agent on a new module from now on, its state passed through the new module",
		Long: `The owner's record names the new module and manifest (the daemon stores them; the
holder fetches them). The holder stops the agent after its tick in flight with a final
checkpoint, resumes that state in a fresh instance of the new module (agent_resume), takes
its agent_checkpoint as the state of the upgrade checkpoint and runs the new module from
there. If the new module does not compile, or its agent_resume or agent_checkpoint fails
on the state, nothing is written and the agent runs on with its module (rolled back).
The daemon signs with its home's owner key (HOME/owner.key), which must be the genesis's
owner. The manifest defaults to NEW.manifest.json beside the module.`,
		Args: exactArgs(2, "DID NEW.wasm"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := agents.ParseDID(args[0]); err != nil {
				return usagef("%v", err)
			}
			wasm, manJSON, err := readAgentFiles(args[1], manifest)
			if err != nil {
				return err
			}
			c, err := g.client(api)
			if err != nil {
				return err
			}
			body := map[string]any{"kind": string(agents.ControlUpgrade), "wasm": wasm, "manifest": json.RawMessage(manJSON)}
			var res node.ControlResult
			if err := c.do("POST", "/v1/agents/"+args[0]+"/control", body, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "upgrade %s: record #%d applied by %s in checkpoint %s\n", res.DID, res.Seq, res.Holder, res.Checkpoint)
			return nil
		},
	}
	cmd.Flags().StringVar(&manifest, "manifest", "", "manifest file (default: NEW.manifest.json beside the module)")
	apiFlags(cmd, &api, &asJSON)
	return cmd
}

func newPsCmd(g *globalFlags) *cobra.Command {
	var (
		api    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "ps",
		Short: "List the mesh's agents: status, tick, seq, epoch and holder of each",
		Long: `Asks every host the local daemon knows and every peer it is connected to for the
custody groups they are members of, and merges the answers by agent (the holder's own
word first). Works from any node, one that hosts nothing too. Nodes that did not answer
are named; an agent all of whose custodians are among them is missing.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(api)
			if err != nil {
				return err
			}
			var res node.MeshAgents
			if err := c.do("GET", "/v1/mesh/agents", nil, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "AGENT\tSTATUS\tTICK\tSEQ\tEPOCH\tHOLDER")
			for _, a := range res.Agents {
				fmt.Fprintln(tw, a.String())
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%d agent(s); %d node(s) asked", len(res.Agents), res.Asked)
			if len(res.Unanswered) > 0 {
				fmt.Fprintf(cmd.OutOrStdout(), ", no answer from %s", strings.Join(res.Unanswered, ", "))
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	apiFlags(cmd, &api, &asJSON)
	return cmd
}

func newLogsCmd(g *globalFlags) *cobra.Command {
	var (
		api    string
		follow bool
		asJSON bool
		since  time.Duration
	)
	cmd := &cobra.Command{
		Use:   "logs DID",
		Short: "Print an agent's log lines from whichever node runs it; -f follows it as it moves",
		Long: `Asks the node that holds the agent for the lines it kept (the last 256) and, with -f,
streams new ones as they come. When the agent moves — a handoff, a drain, a failover
after its holder died — it asks the next holder for the lines after the last one shown.
Each line shows when and where it was logged. Lines the next holder logs for ticks it
re-runs after a failover (those after the last committed checkpoint) appear again.`,
		Args: exactArgs(1, "DID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := agents.ParseDID(args[0]); err != nil {
				return usagef("%v", err)
			}
			c, err := g.client(api)
			if err != nil {
				return err
			}
			path := "/v1/agents/" + args[0] + "/logs"
			q := url.Values{}
			if follow {
				q.Set("follow", "1")
			}
			if since > 0 {
				q.Set("since", strconv.FormatInt(time.Now().Add(-since).UnixNano(), 10))
			}
			if len(q) > 0 {
				path += "?" + q.Encode()
			}
			resp, err := c.stream(cmd.Context(), path) // -f streams until interrupted
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 64<<10), 1<<20)
			out := cmd.OutOrStdout()
			event := ""
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "event: "):
					event = strings.TrimPrefix(line, "event: ")
				case strings.HasPrefix(line, "data: "):
					data := strings.TrimPrefix(line, "data: ")
					if event == "error" {
						return fmt.Errorf("logs: %s", data)
					}
					if asJSON {
						fmt.Fprintln(out, data)
						continue
					}
					var l node.LogLine
					if err := json.Unmarshal([]byte(data), &l); err != nil {
						return fmt.Errorf("logs: bad event %q: %v", data, err)
					}
					fmt.Fprintf(out, "%s  %s  %s\n", time.Unix(0, l.Time).Format("15:04:05.000"), agents.ShortDID(l.Node), l.Msg)
				case line == "":
					event = ""
				}
			}
			if err := sc.Err(); err != nil && cmd.Context().Err() == nil {
				return err
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep streaming new lines, following the agent from node to node")
	cmd.Flags().DurationVar(&since, "since", 0, "only lines logged in this last duration (e.g. 5m)")
	cmd.Flags().StringVar(&api, "api", "", "daemon API address (default $IGOR_API or HOME/api.addr)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per line: time_unix_ns, node, msg")
	return cmd
}
