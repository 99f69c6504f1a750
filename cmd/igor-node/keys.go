package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/node"
)

func newKeysCmd(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Manage agent keys (export, import, list)",
		Args:  exactArgs(0, "a subcommand"),
		RunE:  func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	var out string
	var force bool
	export := &cobra.Command{
		Use:   "export DID -o FILE",
		Short: "Write an agent's private key to FILE (0600)",
		Long: `Writes the agent's private key. Anyone who holds this file can sign checkpoints
as the agent: keep it secret, move it only over channels you trust, and delete
copies you no longer need.`,
		Args: exactArgs(1, "DID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("keys export needs -o FILE")
			}
			if _, err := agents.ParseDID(args[0]); err != nil {
				return usagef("%v", err)
			}
			if _, err := os.Stat(out); err == nil && !force {
				return fmt.Errorf("%s exists; refusing to overwrite it (pass --force to replace it)", out)
			} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
			// The keystore is files beside the content store: it is read
			// directly, also while a daemon runs on this home.
			dir, err := g.homeDir()
			if err != nil {
				return err
			}
			priv, err := node.AgentKey(dir, args[0])
			if err != nil {
				return err
			}
			if err := node.WriteFileAtomic(out, node.EncodeKeyFile(priv), 0o600); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s now holds the private key of %s; anyone with it can sign as the agent\n", out, args[0])
			return nil
		},
	}
	export.Flags().StringVarP(&out, "output", "o", "", "key file to write (mode 0600)")
	export.Flags().BoolVar(&force, "force", false, "overwrite FILE if it exists")
	imp := &cobra.Command{
		Use:   "import FILE",
		Short: "Add an agent key file to this home's keystore",
		Args:  exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			data, err := os.ReadFile(args[0])
			if err != nil {
				return err
			}
			priv, err := node.DecodeKeyFile(data)
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			l, err := g.openLocal(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			did, err := l.Keys.Put(priv)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), did)
			if st, err := os.Stat(args[0]); err == nil && st.Mode().Perm()&0o077 != 0 {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s is readable by others (mode %v); delete it or chmod 600 it\n", args[0], st.Mode().Perm())
			}
			return nil
		},
	}
	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the DIDs whose keys this home holds",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			l, err := g.openLocal(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			dids, err := l.Keys.List()
			if err != nil {
				return err
			}
			if asJSON {
				if dids == nil {
					dids = []string{}
				}
				return printJSON(cmd.OutOrStdout(), dids)
			}
			for _, d := range dids {
				fmt.Fprintln(cmd.OutOrStdout(), d)
			}
			return nil
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.AddCommand(export, imp, list)
	return cmd
}
