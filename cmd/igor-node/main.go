// Command igor-node runs and inspects portable WASM agents. See README.md.
package main

import (
	"encoding/json"
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
	cmd, err := root.ExecuteC()
	if err == nil {
		return
	}
	var ee exitError
	if errors.As(err, &ee) {
		os.Exit(ee.code)
	}
	if wantsJSON(cmd, os.Args[1:]) {
		// On stderr, so stdout holds only the command's own JSON (some
		// commands print a report and then fail, e.g. agent --json on a fork).
		_ = json.NewEncoder(os.Stderr).Encode(map[string]string{"error": err.Error()})
	} else {
		fmt.Fprintln(os.Stderr, "error:", err)
	}
	var ue usageError
	if errors.As(err, &ue) {
		os.Exit(2)
	}
	os.Exit(1)
}

// wantsJSON reports whether the command line asked for JSON: the command's
// --json flag, or — when the line failed before its flags were parsed (an
// unknown command or flag) — a --json among the arguments.
func wantsJSON(cmd *cobra.Command, args []string) bool {
	if cmd != nil {
		if f := cmd.Flags().Lookup("json"); f != nil && f.Changed {
			return f.Value.String() == "true"
		}
	}
	for _, a := range args {
		if a == "--" {
			break
		}
		if a == "--json" || a == "--json=true" {
			return true
		}
	}
	return false
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
