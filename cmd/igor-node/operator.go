package main

// Commands and helpers for running a daemon: connect, version, unknown
// commands, and the two-stage stop on signals.

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/internal/buildinfo"
	"github.com/igor-mesh/igor-node/node"
)

func newConnectCmd(g *globalFlags) *cobra.Command {
	var (
		api     string
		timeout time.Duration
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "connect MULTIADDR",
		Short: "Connect the local daemon to a peer now",
		Long: `Asks the local daemon to dial the peer at MULTIADDR, which must end in
/p2p/<peer id> (another daemon prints its addresses as 'addr …' lines at start-up,
and 'igor-node peers' shows them). Once connected the peer joins the DHT routing
table, and the two nodes see the rest of the mesh through each other. A dial
backoff from earlier failures is ignored. The connection is not remembered
across restarts: list lasting peers with 'daemon --bootstrap'.`,
		Args: exactArgs(1, "MULTIADDR"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if timeout <= 0 {
				return usagef("--timeout must be positive, got %v", timeout)
			}
			if _, err := node.ParsePeerAddr(args[0]); err != nil {
				return usageError{err}
			}
			c, err := g.client(api)
			if err != nil {
				return err
			}
			var res node.ConnectResult
			path := "/v1/peers/connect?timeout=" + url.QueryEscape(timeout.String())
			if err := c.do("POST", path, node.ConnectRequest{Addr: args[0]}, &res); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "connected to %s (%s)\n", res.Peer, strings.Join(res.Addrs, " "))
			return nil
		},
	}
	cmd.Flags().StringVar(&api, "api", "", "daemon API address (default $IGOR_API or HOME/api.addr)")
	cmd.Flags().DurationVar(&timeout, "timeout", node.DefaultConnectTimeout, "give up dialling after this long")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newVersionCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the release, module version, VCS revision and Go version of this binary",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			bi := buildinfo.Read()
			if asJSON {
				return printJSON(cmd.OutOrStdout(), bi)
			}
			_, err := fmt.Fprint(cmd.OutOrStdout(), bi.Long())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// commandGroup makes cmd (a command that only groups subcommands) refuse an
// unknown subcommand as bad usage (exit status 2, with a suggestion), and
// print its help when called alone. Cobra by itself fails with exit status
// 1 at the root and prints help with status 0 below it.
func commandGroup(cmd *cobra.Command) *cobra.Command {
	if cmd.SuggestionsMinimumDistance <= 0 {
		cmd.SuggestionsMinimumDistance = 2
	}
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) == 0 {
			return nil
		}
		hint := ""
		if s := c.SuggestionsFor(args[0]); len(s) > 0 {
			hint = fmt.Sprintf(" (did you mean %q?)", s[0])
		}
		return usagef("unknown command %q for %q%s; see '%s --help'", args[0], c.CommandPath(), hint, c.CommandPath())
	}
	cmd.RunE = func(c *cobra.Command, args []string) error { return c.Help() }
	return cmd
}

// shutdownSignals listens for SIGINT and SIGTERM. stop ends at the first
// (a graceful stop: drain, then close), now at the second (stop at once).
// After the second the default handling is restored, so a third kills the
// process whatever it is doing. release stops listening.
func shutdownSignals() (stop, now context.Context, release func()) {
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	stop, stopCancel := context.WithCancel(context.Background())
	now, nowCancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		for _, cancel := range []context.CancelFunc{stopCancel, nowCancel} {
			select {
			case <-sig:
				cancel()
			case <-done:
				return
			}
		}
		signal.Stop(sig)
	}()
	return stop, now, func() {
		signal.Stop(sig)
		close(done)
		stopCancel()
		nowCancel()
	}
}
