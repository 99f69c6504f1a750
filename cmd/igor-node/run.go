package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/node"
)

type loopFlags struct {
	checkpointEvery uint64
	tickInterval    time.Duration
	maxTicks        uint64
}

func (f *loopFlags) add(cmd *cobra.Command) {
	cmd.Flags().Uint64Var(&f.checkpointEvery, "checkpoint-every", 5, "commit a checkpoint every N ticks (and always on exit)")
	cmd.Flags().DurationVar(&f.tickInterval, "tick-interval", time.Second, "time between ticks when the agent reports no more work")
	cmd.Flags().Uint64Var(&f.maxTicks, "max-ticks", 0, "stop after N ticks (0: run until SIGINT/SIGTERM)")
}

func (f *loopFlags) validate() error {
	if f.checkpointEvery == 0 {
		return usagef("--checkpoint-every must be at least 1")
	}
	if f.tickInterval < time.Millisecond {
		return usagef("--tick-interval must be at least 1ms")
	}
	return nil
}

func newRunCmd(g *globalFlags) *cobra.Command {
	var (
		budget, manifest string
		price            int64
		lf               loopFlags
	)
	cmd := &cobra.Command{
		Use:   "run AGENT.wasm",
		Short: "Create a new agent from a WASM module and run it here",
		Long: `Creates a new agent (a fresh did:key identity in the keystore, its genesis and
checkpoint 0 in the content store) and ticks it until SIGINT/SIGTERM, --max-ticks,
or its budget runs out. The manifest defaults to the sidecar AGENT.manifest.json.
The agent's DID is printed first.`,
		Args: exactArgs(1, "AGENT.wasm"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.validate(); err != nil {
				return err
			}
			uc, err := parseAmount(budget)
			if err != nil || uc == 0 {
				return usagef("--budget: %v", orZero(err, "must be more than 0"))
			}
			if price < 0 {
				return usagef("--price must not be negative")
			}
			wasm, manJSON, err := readAgentFiles(args[0], manifest)
			if err != nil {
				return err
			}
			l, err := g.openLocal(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			ctx, stop := signalContext()
			defer stop()
			out := newAgentOut(cmd.OutOrStdout())
			did, head, err := l.CreateAgent(ctx, wasm, manJSON, uc, price, out.log)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), did)
			l.Logger.Info("agent created", "did", did, "genesis", head.Checkpoint.Genesis, "head", head.CID, "budget", formatAmount(uc))
			return runLoaded(ctx, cmd, l, did, out, lf, -1)
		},
	}
	cmd.Flags().StringVar(&budget, "budget", "1.0", "initial budget in currency units (1 unit = 1,000,000 microcents)")
	cmd.Flags().StringVar(&manifest, "manifest", "", "manifest file (default: AGENT.manifest.json beside the module)")
	cmd.Flags().Int64Var(&price, "price", 1_000_000, "price in microcents per second of tick time")
	lf.add(cmd)
	return cmd
}

func newResumeCmd(g *globalFlags) *cobra.Command {
	var (
		lf    loopFlags
		price int64
	)
	cmd := &cobra.Command{
		Use:   "resume DID",
		Short: "Continue an agent from its latest checkpoint in this home",
		Long: `Verifies the agent's whole lineage, loads its module and latest committed
checkpoint, and continues ticking with the same DID and tick count. The agent's
key must be in this home's keystore ('igor-node keys import FILE').`,
		Args: exactArgs(1, "DID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := lf.validate(); err != nil {
				return err
			}
			if _, err := agents.ParseDID(args[0]); err != nil {
				return usagef("%v", err)
			}
			l, err := g.openLocal(cmd)
			if err != nil {
				return err
			}
			defer l.Close()
			ctx, stop := signalContext()
			defer stop()
			fmt.Fprintln(cmd.OutOrStdout(), args[0])
			return runLoaded(ctx, cmd, l, args[0], newAgentOut(cmd.OutOrStdout()), lf, price)
		},
	}
	cmd.Flags().Int64Var(&price, "price", -1, "price in microcents per second (-1: keep the agent's current price)")
	lf.add(cmd)
	return cmd
}

func runLoaded(ctx context.Context, cmd *cobra.Command, l *node.Local, did string, out *agentOut, lf loopFlags, price int64) error {
	a, env, err := l.LoadAgent(ctx, did, out.log)
	if err != nil {
		return err
	}
	if a.Head.Checkpoint.Budget == 0 {
		return fmt.Errorf("%w: %s has no budget left (head %s, tick %d); it cannot run again", node.ErrBudgetExhausted, did, a.Head.CID, a.Head.Checkpoint.Tick)
	}
	l.Logger.Info("agent resuming", "did", did, "head", a.Head.CID, "seq", a.Head.Checkpoint.Seq, "tick", a.Head.Checkpoint.Tick, "budget", formatAmount(a.Head.Checkpoint.Budget))
	res, err := node.RunAgent(ctx, env, a, node.RunOptions{
		TickInterval: lf.tickInterval, CheckpointEvery: lf.checkpointEvery, MaxTicks: lf.maxTicks, Price: price,
	})
	h := res.Head
	if h.Checkpoint != nil {
		l.Logger.Info("agent stopped", "did", did, "reason", string(res.Reason), "head", h.CID, "seq", h.Checkpoint.Seq,
			"tick", h.Checkpoint.Tick, "budget", formatAmount(h.Checkpoint.Budget), "failures", res.Failures)
	}
	if errors.Is(err, node.ErrBudgetExhausted) {
		fmt.Fprintf(cmd.ErrOrStderr(), "budget exhausted: %s stopped at tick %d; final checkpoint %s (budget 0) is verifiable with 'igor-node verify %s'\n",
			did, h.Checkpoint.Tick, h.CID, did)
		return nil
	}
	return err
}

// agentOut prints agent log lines as "[z6Mk…abcd] message".
type agentOut struct {
	mu sync.Mutex
	w  io.Writer
}

func newAgentOut(w io.Writer) *agentOut { return &agentOut{w: w} }

func (o *agentOut) log(short, msg string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	fmt.Fprintf(o.w, "[%s] %s\n", short, sanitize(msg))
}

// readAgentFiles reads a module and its manifest (the sidecar
// AGENT.manifest.json unless one is named) and validates the manifest. An
// empty manifest file is the empty manifest, {}.
func readAgentFiles(wasmPath, manifest string) (wasm, manJSON []byte, err error) {
	if wasm, err = os.ReadFile(wasmPath); err != nil {
		return nil, nil, fmt.Errorf("read module: %w", err)
	}
	manPath := manifest
	if manPath == "" {
		manPath = strings.TrimSuffix(wasmPath, ".wasm") + ".manifest.json"
	}
	if manJSON, err = os.ReadFile(manPath); err != nil {
		if manifest == "" && errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("no manifest: %s does not exist (pass --manifest FILE; an agent with no capabilities needs a file containing {})", manPath)
		}
		return nil, nil, fmt.Errorf("read manifest: %w", err)
	}
	if _, err := agents.ParseManifest(manJSON); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", manPath, err)
	}
	if len(bytes.TrimSpace(manJSON)) == 0 {
		manJSON = []byte("{}")
	}
	return wasm, manJSON, nil
}

func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s needs %s (got %d argument(s)); see '%s --help'", cmd.Name(), names, len(args), cmd.CommandPath())
		}
		return nil
	}
}

func orZero(err error, msg string) string {
	if err != nil {
		return err.Error()
	}
	return msg
}
