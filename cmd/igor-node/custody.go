package main

import (
	"fmt"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/node"
)

func newDrainCmd(g *globalFlags) *cobra.Command {
	var (
		api     string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "drain",
		Short: "Hand every agent running on the local daemon to another custody member",
		Long: `Marks the daemon as draining (it advertises no free slot and accepts no new
custody group) and hands each agent it runs to the best other member of the
agent's custody group: final checkpoint committed at a majority, the new holder
resumes from exactly that checkpoint at the next epoch. Returns when no agent
runs here any more; the daemon keeps serving as a standby until it is stopped.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout must be positive, got %v", timeout)
			}
			c, err := g.client(api)
			if err != nil {
				return err
			}
			start := time.Now()
			var out struct {
				Custody []node.CustodyStatus `json:"custody"`
			}
			if err := c.do("POST", "/v1/drain?timeout="+url.QueryEscape(timeout.String()), nil, &out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "drained in %v: no agent runs here (%d custody membership(s) kept as standby)\n",
				time.Since(start).Round(time.Millisecond), len(out.Custody))
			return nil
		},
	}
	cmd.Flags().StringVar(&api, "api", "", "daemon API address (default $IGOR_API or HOME/api.addr)")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "give up after this long")
	return cmd
}

func newReviveCmd(g *globalFlags) *cobra.Command {
	var (
		api        string
		asJSON     bool
		acceptLoss bool
	)
	cmd := &cobra.Command{
		Use:   "revive DID",
		Short: "Give an agent whose custodians are all gone a new custody group",
		Long: `Run on the publisher's daemon (it needs the agent key in its keystore). Finds the
latest checkpoint of the agent in the mesh (its head record; else this node's
own head), verifies the lineage and places the agent with a new custody group
above the old epoch. Refused while the head record shows a live lease. If the
latest checkpoint died with its custodians, --accept-loss revives from the newest
checkpoint this node holds (the ones after it are lost).`,
		Args: exactArgs(1, "DID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := agents.ParseDID(args[0]); err != nil {
				return usagef("%v", err)
			}
			c, err := g.client(api)
			if err != nil {
				return err
			}
			var res node.PublishResult
			path := "/v1/agents/" + args[0] + "/revive"
			if acceptLoss {
				path += "?accept_loss=1"
			}
			if err := c.do("POST", path, nil, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "revived %s from %s\nholder %s\nmembers %v\n", res.DID, res.Head, res.Holder, res.Members)
			return nil
		},
	}
	apiFlags(cmd, &api, &asJSON)
	cmd.Flags().BoolVar(&acceptLoss, "accept-loss", false, "if the latest checkpoint is gone, revive from the newest one held here")
	return cmd
}

func newCustodyCmd(g *globalFlags) *cobra.Command {
	var (
		api    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "custody",
		Short: "List the custody groups the local daemon is a member of",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(api)
			if err != nil {
				return err
			}
			var sts []node.CustodyStatus
			if err := c.do("GET", "/v1/custody", nil, &sts); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), sts)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			// Whole DIDs and peer IDs, so they can be pasted into other
			// commands (a wide table). MEMBERS: how many, and the
			// configuration they come from (c0: the founding members; each
			// step of a change in place adds one).
			fmt.Fprintln(tw, "AGENT\tROLE\tRUNNING\tEPOCH\tACCEPTED\tMEMBERS\tHOLDER")
			for _, s := range sts {
				fmt.Fprintf(tw, "%s\t%s\t%v\t%d\t%d@%d\t%d (c%d)\t%s\n", s.DID, s.Role, s.Running, s.Epoch, s.AcceptedSeq, s.AcceptedAt, len(s.Members), s.Conf, s.Holder)
			}
			return tw.Flush()
		},
	}
	apiFlags(cmd, &api, &asJSON)
	return cmd
}
