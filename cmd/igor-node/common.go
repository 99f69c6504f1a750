package main

import (
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/internal/amount"
	"github.com/igor-mesh/igor-node/node"
)

type globalFlags struct {
	home     string
	logLevel string
}

func (g *globalFlags) homeDir() (string, error) {
	if g.home != "" {
		return g.home, nil
	}
	if h := os.Getenv("IGOR_HOME"); h != "" {
		return h, nil
	}
	u, err := os.UserHomeDir()
	if err != nil {
		return "", usagef("cannot find a home directory (%v): pass --home DIR or set IGOR_HOME", err)
	}
	return filepath.Join(u, ".igor"), nil
}

func (g *globalFlags) logger(w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(g.logLevel)); err != nil {
		return nil, usagef("--log-level %q: want debug, info, warn or error", g.logLevel)
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: lvl})), nil
}

func (g *globalFlags) openLocal(cmd *cobra.Command) (*node.Local, error) {
	dir, err := g.homeDir()
	if err != nil {
		return nil, err
	}
	lg, err := g.logger(cmd.ErrOrStderr())
	if err != nil {
		return nil, err
	}
	return node.OpenLocal(dir, lg)
}

// parseAmount turns a decimal currency amount ("1.5") into microcents
// exactly, without going through a float (internal/amount, fuzzed there).
func parseAmount(s string) (int64, error) { return amount.Parse(s) }

// formatAmount prints microcents as a decimal amount.
func formatAmount(uc int64) string { return amount.Format(uc) }

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// sanitize makes an agent's log line safe for a terminal: control
// characters (escape sequences from a hostile agent) are shown quoted.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r == '\t' || (r >= 0x20 && r != 0x7f && !(r >= 0x80 && r < 0xa0)) {
			if r == 0xfffd {
				b.WriteString(`\ufffd`)
				continue
			}
			b.WriteRune(r)
			continue
		}
		q := strconv.QuoteRune(r)
		b.WriteString(q[1 : len(q)-1])
	}
	return b.String()
}

// apiFlags adds the flags of a command that talks to the daemon's API:
// --api (where) and --json (how to print the answer).
func apiFlags(cmd *cobra.Command, api *string, asJSON *bool) {
	cmd.Flags().StringVar(api, "api", "", "daemon API address (default $IGOR_API or HOME/api.addr)")
	cmd.Flags().BoolVar(asJSON, "json", false, "print JSON")
}
