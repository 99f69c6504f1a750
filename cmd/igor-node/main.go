// Command igor-node runs and inspects portable WASM agents. See README.md.
package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/internal/buildinfo"
)

// exitError carries a process exit code chosen by a command (e.g. 1 for an
// invalid lineage) without printing a second message.
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	root := newRootCmd()
	err := root.Execute()
	if err == nil {
		return
	}
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	fmt.Fprintln(os.Stderr, "error:", err)
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}

// usageError marks bad command-line input (exit status 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func newRootCmd() *cobra.Command {
	g := &globalFlags{}
	root := &cobra.Command{
		Use:           "igor-node",
		Short:         "Host portable, immortal WASM agents",
		Long:          "igor-node runs WASM agents with their own identity (did:key), content-addressed checkpoints and a verifiable, signed lineage.",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error { return usageError{err} })
	root.Version = buildinfo.Read().String()
	root.SetVersionTemplate("igor-node {{.Version}}\n")
	commandGroup(root)
	root.PersistentFlags().StringVar(&g.home, "home", "", "node home directory (default $IGOR_HOME or ~/.igor)")
	root.PersistentFlags().StringVar(&g.logLevel, "log-level", "info", "log level: debug, info, warn, error")
	root.AddCommand(
		newRunCmd(g), newResumeCmd(g), newInspectCmd(g), newVerifyCmd(g),
		newExportCmd(g), newImportCmd(g), newKeysCmd(g), newListCmd(g),
		newDaemonCmd(g), newPublishCmd(g), newAgentCmd(g), newPeersCmd(g), newHostsCmd(g),
		newDrainCmd(g), newReviveCmd(g), newCustodyCmd(g),
		newFsckCmd(g), newConnectCmd(g), newVersionCmd(),
	)
	root.AddCommand(newControlCmds(g)...)
	return root
}
