package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/igor-mesh/igor-node/node"
)

// apiAddrFile is where a running daemon records its API address in its
// home, so other commands on the same home find it without --api.
const apiAddrFile = "api.addr"

// apiTokenFile is the default bearer-token file of an API bound to a
// non-loopback address; the other commands read it from the same home.
const apiTokenFile = "api.token"

// loadOrCreateToken reads the API token at path, or creates the file (0600,
// crash-safe) with a fresh random 32-byte hex token when it does not exist.
// A token file others may read is refused: the token grants publishing.
func loadOrCreateToken(path string) (string, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var b [32]byte
		if _, err := rand.Read(b[:]); err != nil {
			return "", err
		}
		tok := hex.EncodeToString(b[:])
		if err := node.WriteFileAtomic(path, []byte(tok+"\n"), 0o600); err != nil {
			return "", fmt.Errorf("create API token file %s: %w", path, err)
		}
		return tok, nil
	}
	if err != nil {
		return "", fmt.Errorf("read API token file: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return "", usagef("API token file %s has mode %v: others may read it; run 'chmod 600 %s'", path, fi.Mode().Perm(), path)
	}
	tok := strings.TrimSpace(string(data))
	if len(tok) < 32 || strings.ContainsAny(tok, " \t\r\n") {
		return "", usagef("API token file %s must hold one token of at least 32 characters without spaces (delete it to have a fresh one generated)", path)
	}
	return tok, nil
}

func newDaemonCmd(g *globalFlags) *cobra.Command {
	var (
		listen, bootstrap []string
		announce          []string
		api               string
		apiRemote         bool
		apiTokenPath      string
		slots             int
		maxConns          int
		price             int64
		lf                loopFlags
		drainTimeout      time.Duration
		gcGrace           time.Duration
		configPath        string
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Join the mesh, host agents, and serve the local API",
		Long: `Starts a mesh node: a libp2p host (TCP + QUIC), the /igor Kademlia DHT in server
mode, block exchange, and the hosting service. With no --bootstrap peers it runs
as a one-node mesh. Whenever it has no peer (its bootstrap peers were down at
start-up, or it lost them all) it dials its bootstrap peers again, after 1 s and
backing off to every 20 s, so nodes may start in any order; 'igor-node connect'
adds a peer by hand. On SIGINT/SIGTERM it hands the agents it runs to other
custody members (--drain-timeout) and stops; it stops at once on a second
signal, or when no other node is connected to take them. The HTTP/JSON API (and Prometheus metrics at /metrics) listens
on loopback; its address is written to HOME/api.addr for the other commands.
With --api-remote and a non-loopback --api, every request needs the bearer token
kept in --api-token-file (default HOME/api.token); the other commands send it.

Without --listen it listens where this home listened last time (HOME/listen), so
its address — its peers' bootstrap address — survives restarts; the first time,
on OS-chosen ports of 127.0.0.1. A config file (--config, default
HOME/config.json when present) gives flags as a JSON object whose keys are the
flag names: {"listen": ["/ip4/0.0.0.0/tcp/4001"], "slots": 16, "price": 500000,
"drain-timeout": "30s"}; a flag on the command line wins over the file.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := applyConfig(cmd, g, configPath); err != nil {
				return err
			}
			if err := lf.validate(); err != nil {
				return err
			}
			if slots < 0 {
				return usagef("--slots must not be negative")
			}
			if price < 0 {
				return usagef("--price must not be negative")
			}
			dir, err := g.homeDir()
			if err != nil {
				return err
			}
			lg, err := g.logger(cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			ctx, now, release := shutdownSignals()
			defer release()
			m, err := node.StartMesh(ctx, node.MeshConfig{
				Home: dir, Listen: listen, Bootstrap: bootstrap, Slots: slots, Price: price, Logger: lg, MaxConns: maxConns, GCGrace: gcGrace, Announce: announce,
				Run: node.RunOptions{TickInterval: lf.tickInterval, CheckpointEvery: lf.checkpointEvery, Price: -1},
			})
			if err != nil {
				return err
			}
			defer m.Close()
			opts := node.APIOptions{AllowRemote: apiRemote, DebugPartition: os.Getenv("IGOR_DEBUG_PARTITION") == "1",
				DebugPprof: os.Getenv("IGOR_DEBUG_PPROF") == "1", DebugFlight: os.Getenv("IGOR_DEBUG_FLIGHT") == "1"}
			if apiTokenPath != "" || (apiRemote && !node.IsLoopbackAddr(api)) {
				if apiTokenPath == "" {
					apiTokenPath = filepath.Join(m.Home.Dir, apiTokenFile)
				}
				if opts.Token, err = loadOrCreateToken(apiTokenPath); err != nil {
					return err
				}
			}
			srv, err := m.ServeAPIWithOptions(api, opts)
			if err != nil {
				return err
			}
			apiPath := filepath.Join(m.Home.Dir, apiAddrFile)
			if err := node.WriteFileAtomic(apiPath, []byte(srv.Addr()+"\n"), 0o600); err != nil {
				return err
			}
			// One write, so a script that reads up to the "api" line also
			// has every "addr" line (a pipe reader may see separate writes
			// separately).
			var banner strings.Builder
			fmt.Fprintf(&banner, "peer %s\napi  %s\n", m.PeerID(), srv.Addr())
			for _, a := range m.PeerAddrs() {
				fmt.Fprintf(&banner, "addr %s\n", a)
			}
			if _, err := io.WriteString(cmd.OutOrStdout(), banner.String()); err != nil {
				return err
			}
			// The token itself is never logged, only where it is.
			lg.Info("daemon ready", "peer", m.PeerID(), "api", srv.Addr(), "slots", slots, "api_token_file", apiTokenPath)
			<-ctx.Done()
			// A graceful stop hands every agent running here to another
			// member of its custody group (final checkpoint committed, no
			// tick lost). What cannot move in time, or has nowhere to go,
			// stops with a final checkpoint its group commits (a group of
			// one: at once), so its next holder — this node restarted —
			// redoes no tick; what its group cannot commit in time is taken
			// over from the last committed one. A second signal cuts both
			// short.
			if drainTimeout > 0 {
				lg.Info("shutting down: handing hosted agents off (signal again to stop at once)", "timeout", drainTimeout)
				dctx, dcancel := context.WithTimeout(now, drainTimeout)
				err := m.Drain(dctx)
				dcancel()
				switch {
				case err == nil:
				case errors.Is(err, node.ErrNowhereToDrain):
					lg.Warn("not draining: nowhere to hand the agents; stopping them with a final checkpoint", "reason", err)
				case now.Err() != nil:
					lg.Warn("second signal: stopping at once without handing the remaining agents off", "err", err)
				default:
					lg.Warn("drain incomplete", "err", err)
				}
			}
			if now.Err() == nil {
				cctx, ccancel := context.WithTimeout(now, finalCheckpointLimit)
				if n, err := m.Custody.Checkpoint(cctx); err != nil || n > 0 {
					lg.Warn("final checkpoints not committed in time: those agents resume from their last committed checkpoint", "agents", n, "err", err)
				}
				ccancel()
			}
			lg.Info("shutting down")
			sctx, cancel := context.WithTimeout(now, 30*time.Second)
			defer cancel()
			if err := srv.Close(sctx); err != nil && now.Err() == nil {
				return err
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&listen, "listen", nil, "multiaddr to listen on (repeatable; default TCP and QUIC on 127.0.0.1, OS-chosen ports)")
	f.StringArrayVar(&announce, "announce", nil, "address to tell peers to reach this node at, instead of the listen addresses (repeatable; behind a NAT or port mapping), e.g. /ip4/203.0.113.7/tcp/4001")
	f.StringArrayVar(&bootstrap, "bootstrap", nil, "bootstrap peer multiaddr ending in /p2p/<peer id> (repeatable)")
	f.StringVar(&api, "api", "127.0.0.1:4701", "address of the local HTTP API (port 0: any free port)")
	f.BoolVar(&apiRemote, "api-remote", false, "allow a non-loopback --api address (requests then need the bearer token of --api-token-file)")
	f.StringVar(&apiTokenPath, "api-token-file", "", "file holding the API bearer token, created 0600 with a random token if absent (default HOME/api.token when the API is not loopback-only)")
	f.IntVar(&slots, "slots", 8, "agents this node hosts at once (0: do not host)")
	f.IntVar(&maxConns, "max-conns", 0, "libp2p connection limit (0: the default 256; half inbound, trimmed from half to a quarter)")
	f.DurationVar(&drainTimeout, "drain-timeout", 10*time.Second, "on SIGINT/SIGTERM, how long to spend handing agents to other custody members (0: stop at once; a second signal, or no connected peer, also stops at once)")
	f.Int64Var(&price, "price", 1_000_000, "hosting price in microcents per second of tick time")
	f.StringVar(&configPath, "config", "", "JSON file of flag values, keys = flag names (default HOME/config.json when present); the command line wins")
	f.DurationVar(&gcGrace, "gc-grace", 10*time.Minute, "a garbage collection (run after an agent is deleted) spares unreferenced blocks younger than this")
	lf.add(cmd)
	cmd.Flags().Lookup("max-ticks").Hidden = true
	return cmd
}

// applyConfig sets, from the JSON config file, every flag of cmd the
// command line did not set. The file is path, else HOME/config.json if it
// exists. Keys are flag names; a list sets a repeatable flag.
func applyConfig(cmd *cobra.Command, g *globalFlags, path string) error {
	explicit := path != ""
	if !explicit {
		dir, err := g.homeDir()
		if err != nil {
			return err
		}
		path = filepath.Join(dir, "config.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		if !explicit && errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return usagef("config file: %v", err)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var conf map[string]any
	if err := dec.Decode(&conf); err != nil {
		return usagef("config file %s: %v (want a JSON object whose keys are daemon flag names)", path, err)
	}
	keys := make([]string, 0, len(conf))
	for k := range conf {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		f := cmd.Flags().Lookup(k)
		if f == nil || k == "config" || k == "help" {
			var known []string
			cmd.Flags().VisitAll(func(f *pflag.Flag) {
				if !f.Hidden && f.Name != "config" && f.Name != "help" {
					known = append(known, f.Name)
				}
			})
			return usagef("config file %s: unknown key %q (keys are the daemon's flags: %s)", path, k, strings.Join(known, ", "))
		}
		if f.Changed {
			continue // the command line wins
		}
		var vals []string
		switch v := conf[k].(type) {
		case []any:
			if f.Value.Type() != "stringArray" {
				return usagef("config file %s: %q takes one value, not a list", path, k)
			}
			for _, x := range v {
				s, ok := x.(string)
				if !ok {
					return usagef("config file %s: %q: %v is not a string", path, k, x)
				}
				vals = append(vals, s)
			}
		case string, json.Number, bool:
			vals = []string{fmt.Sprint(v)}
		default:
			return usagef("config file %s: %q: %v is not a string, number, boolean or list of strings", path, k, v)
		}
		for _, v := range vals {
			if err := f.Value.Set(v); err != nil {
				return usagef("config file %s: %q: %v", path, k, err)
			}
		}
	}
	return nil
}

// finalCheckpointLimit bounds the final checkpoints of the agents still
// running at shutdown (a tick in flight, then a commit by their group).
const finalCheckpointLimit = 5 * time.Second
