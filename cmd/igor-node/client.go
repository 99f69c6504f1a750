package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/node"
)

// apiClient talks to a daemon's local API.
type apiClient struct {
	base  string
	http  *http.Client
	token string // bearer token, when the daemon's API needs one
}

// errNoDaemon: no API address could be found.
var errNoDaemon = errors.New("no running daemon found")

// client finds the daemon: --api, then $IGOR_API, then HOME/api.addr. It
// sends the bearer token from $IGOR_API_TOKEN_FILE or HOME/api.token when
// such a file exists (a daemon whose API is not loopback-only needs it).
func (g *globalFlags) client(api string) (*apiClient, error) {
	addr := api
	if addr == "" {
		addr = os.Getenv("IGOR_API")
	}
	if addr == "" {
		dir, err := g.homeDir()
		if err != nil {
			return nil, err
		}
		data, err := os.ReadFile(filepath.Join(dir, apiAddrFile))
		if err != nil {
			return nil, fmt.Errorf("%w: pass --api ADDR, set IGOR_API, or start 'igor-node daemon' with this --home", errNoDaemon)
		}
		addr = strings.TrimSpace(string(data))
	}
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	c := &apiClient{base: strings.TrimSuffix(addr, "/"), http: &http.Client{Timeout: 5 * time.Minute}}
	tokPath := os.Getenv("IGOR_API_TOKEN_FILE")
	if tokPath == "" {
		if dir, err := g.homeDir(); err == nil {
			tokPath = filepath.Join(dir, apiTokenFile)
		}
	}
	if tokPath != "" {
		data, err := os.ReadFile(tokPath)
		switch {
		case err == nil:
			c.token = strings.TrimSpace(string(data))
		case os.Getenv("IGOR_API_TOKEN_FILE") != "":
			return nil, fmt.Errorf("API token file from IGOR_API_TOKEN_FILE: %w", err)
		}
	}
	return c, nil
}

// authorize adds the bearer token, if any, to req.
func (c *apiClient) authorize(req *http.Request) {
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
}

func (c *apiClient) do(method, path string, body any, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, c.base+path, rd)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	c.authorize(req)
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("daemon API at %s: %w (is 'igor-node daemon' running?)", c.base, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return apiError(resp.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

// apiError turns a failed answer into an error: the API's {"error": …}
// when it sent one, else the body.
func apiError(code int, data []byte) error {
	var e struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return fmt.Errorf("%s (HTTP %d)", e.Error, code)
	}
	return fmt.Errorf("daemon API: HTTP %d: %s", code, strings.TrimSpace(string(data)))
}

// stream GETs path without a timeout (the answer is a stream: a CAR, an
// agent's log) and returns the open response of a 200; the caller closes
// its body.
func (c *apiClient) stream(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", c.base+path, nil)
	if err != nil {
		return nil, err
	}
	c.authorize(req)
	resp, err := (&http.Client{}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("daemon API at %s: %w (is 'igor-node daemon' running?)", c.base, err)
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		return nil, apiError(resp.StatusCode, data)
	}
	return resp, nil
}

// publish posts the request and relays the daemon's progress lines.
func (c *apiClient) publish(req node.PublishRequest, progress func(string)) (*node.PublishResult, error) {
	data, err := json.Marshal(req)
	if err != nil {
		return nil, err
	}
	hreq, err := http.NewRequest("POST", c.base+"/v1/agents", bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "application/x-ndjson")
	c.authorize(hreq)
	resp, err := c.http.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("daemon API at %s: %w (is 'igor-node daemon' running?)", c.base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return nil, fmt.Errorf("%s (HTTP %d)", e.Error, resp.StatusCode)
		}
		return nil, fmt.Errorf("daemon API: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	dec := json.NewDecoder(resp.Body)
	for {
		var line struct {
			Progress string              `json:"progress"`
			Result   *node.PublishResult `json:"result"`
			Error    string              `json:"error"`
			Status   int                 `json:"status"`
		}
		if err := dec.Decode(&line); err != nil {
			return nil, fmt.Errorf("daemon API: publish stream ended early: %w", err)
		}
		switch {
		case line.Error != "":
			return nil, fmt.Errorf("%s (HTTP %d)", line.Error, line.Status)
		case line.Result != nil:
			return line.Result, nil
		case line.Progress != "":
			progress(line.Progress)
		}
	}
}

func newPublishCmd(g *globalFlags) *cobra.Command {
	var (
		budget, manifest, api string
		asJSON                bool
		minReplicas           int
	)
	cmd := &cobra.Command{
		Use:   "publish AGENT.wasm",
		Short: "Create an agent and place it on a host in the mesh",
		Long: `Sends the module and manifest to the local daemon, which creates the agent (its
key stays in the daemon's keystore), picks a custody group — a holder and the
manifest's lease.replicas standbys (default 2) — by rendezvous hashing over the
eligible capacity records, and offers the best of them the first lease. Prints the
DID, the holder, the price and how much tick time the budget buys.

With fewer eligible hosts than the group needs it fails and creates nothing, unless
--min-replicas N allows a group of a holder and N standbys (0: no standby, so the
agent does not survive its host's death).`,
		Args: exactArgs(1, "AGENT.wasm"),
		RunE: func(cmd *cobra.Command, args []string) error {
			uc, err := parseAmount(budget)
			if err != nil || uc == 0 {
				return usagef("--budget: %v", orZero(err, "must be more than 0"))
			}
			req := node.PublishRequest{Budget: uc}
			if cmd.Flags().Changed("min-replicas") {
				if minReplicas < 0 {
					return usagef("--min-replicas %d: want 0 or more standbys", minReplicas)
				}
				req.MinReplicas = &minReplicas
			}
			wasm, manJSON, err := readAgentFiles(args[0], manifest)
			if err != nil {
				return err
			}
			c, err := g.client(api)
			if err != nil {
				return err
			}
			if !asJSON {
				fmt.Fprintf(cmd.ErrOrStderr(), "publishing %s (%d bytes) through %s ...\n", filepath.Base(args[0]), len(wasm), c.base)
			}
			req.Wasm, req.Manifest = wasm, manJSON
			res, err := c.publish(req, func(msg string) {
				if !asJSON {
					fmt.Fprintln(cmd.ErrOrStderr(), "  "+msg)
				}
			})
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s\nplaced on %s at epoch %d (head %s)\n%s\n", res.DID, res.Holder, res.Epoch, res.Head, budgetLine(uc, res))
			return nil
		},
	}
	cmd.Flags().StringVar(&budget, "budget", "1.0", "initial budget in currency units")
	cmd.Flags().IntVar(&minReplicas, "min-replicas", 0, "allow a custody group of a holder and at least N standbys when fewer hosts than the manifest asks for are eligible (default: the manifest's lease.replicas)")
	cmd.Flags().StringVar(&manifest, "manifest", "", "manifest file (default: AGENT.manifest.json beside the module)")
	apiFlags(cmd, &api, &asJSON)
	return cmd
}

// budgetLine says what the budget buys at the agent's price. It is tick
// time: an agent is charged only while it ticks, so it lives longer than
// this by its duty cycle.
func budgetLine(budget int64, res *node.PublishResult) string {
	if res.BudgetSeconds == nil {
		return fmt.Sprintf("budget %s: unbounded (price 0)", formatAmount(budget))
	}
	secs := *res.BudgetSeconds
	span := fmt.Sprintf("%.0f s (%.1f years)", secs, secs/(365.25*24*3600))
	if secs < 1e8 { // a time.Duration holds ~292 years
		span = time.Duration(secs * float64(time.Second)).Round(time.Millisecond).String()
	}
	return fmt.Sprintf("budget %s buys %s of tick time at %d µc/s (charged only while it ticks)", formatAmount(budget), span, res.Price)
}

func newAgentCmd(g *globalFlags) *cobra.Command {
	var (
		api    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "agent DID",
		Short: "Query an agent by DID from anywhere in the mesh",
		Args:  exactArgs(1, "DID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := agents.ParseDID(args[0]); err != nil {
				return usagef("%v", err)
			}
			c, err := g.client(api)
			if err != nil {
				return err
			}
			var st node.AgentStatus
			if err := c.do("GET", "/v1/agents/"+args[0]+"?forks=1", nil, &st); err != nil {
				return err
			}
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), st); err != nil {
					return err
				}
				if len(st.Forks) > 0 {
					return fmt.Errorf("FORK: %d fork(s) of %s; first: %s and %s both follow %s", len(st.Forks), st.DID, st.Forks[0].A, st.Forks[0].B, st.Forks[0].Prev)
				}
				return nil
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintf(tw, "did\t%s\nstatus\t%s (from the %s)\nholder\t%s\nepoch\t%d\nseq\t%d\ntick\t%d\nbudget\t%s\nhead\t%s\nupdated\t%s\n",
				st.DID, st.Status, st.Source, st.Holder, st.Epoch, st.Seq, st.Tick, formatAmount(st.Budget), st.Head,
				st.LastUpdate.Format(time.RFC3339))
			if st.BudgetLeftS > 0 {
				fmt.Fprintf(tw, "budget lasts\t~%v at its recent rate\n", time.Duration(st.BudgetLeftS*float64(time.Second)).Round(time.Second))
			}
			if st.StopReason != "" && st.Status != "running" {
				fmt.Fprintf(tw, "stop reason\t%s\n", st.StopReason)
			}
			if st.LeaseLeftMs > 0 {
				fmt.Fprintf(tw, "lease left\t%v (the holder's, by its clock)\n", time.Duration(st.LeaseLeftMs)*time.Millisecond)
			}
			if st.LeaseEpoch > st.Epoch {
				fmt.Fprintf(tw, "lease epoch\t%d (the holder took over; its first checkpoint at this epoch is not committed yet)\n", st.LeaseEpoch)
			}
			if !st.NextRecordBy.IsZero() {
				fmt.Fprintf(tw, "next record by\t%s\n", st.NextRecordBy.Format(time.RFC3339))
			}
			if st.Error != "" {
				fmt.Fprintf(tw, "error\t%s\n", st.Error)
			}
			for _, f := range st.Forks {
				fmt.Fprintf(tw, "FORK\t%s and %s both follow %s\n", f.A, f.B, f.Prev)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if len(st.Forks) > 0 {
				return fmt.Errorf("FORK: %d fork(s) of %s (proof above: two checkpoints with the same predecessor)", len(st.Forks), st.DID)
			}
			return nil
		},
	}
	apiFlags(cmd, &api, &asJSON)
	return cmd
}

func newPeersCmd(g *globalFlags) *cobra.Command {
	var (
		api    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the peers the local daemon is connected to",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(api)
			if err != nil {
				return err
			}
			var ps []struct {
				Peer  string   `json:"peer"`
				Addrs []string `json:"addrs"`
			}
			if err := c.do("GET", "/v1/peers", nil, &ps); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), ps)
			}
			for _, p := range ps {
				fmt.Fprintf(cmd.OutOrStdout(), "%s\t%s\n", p.Peer, strings.Join(p.Addrs, " "))
			}
			return nil
		},
	}
	apiFlags(cmd, &api, &asJSON)
	return cmd
}

func newHostsCmd(g *globalFlags) *cobra.Command {
	var (
		api    string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "hosts",
		Short: "List the mesh's hosting nodes and their capacity",
		Args:  exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := g.client(api)
			if err != nil {
				return err
			}
			var hs []agents.HostRecord
			if err := c.do("GET", "/v1/hosts", nil, &hs); err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), hs)
			}
			tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PEER\tFREE/SLOTS\tPRICE µc/s\tVERSION")
			for _, h := range hs {
				fmt.Fprintf(tw, "%s\t%d/%d\t%d\t%s\n", h.Peer, h.FreeSlots, h.Slots, h.Price, h.Version)
			}
			return tw.Flush()
		},
	}
	apiFlags(cmd, &api, &asJSON)
	return cmd
}
