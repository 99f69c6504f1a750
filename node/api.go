package node

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"runtime/trace"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/agents/keystore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/buildinfo"
)

// MaxPublishBody caps a publish request: a 64 MiB module, base64-encoded, plus the manifest.
const MaxPublishBody = 96 << 20

// PublishRequest is the body of POST /v1/agents.
type PublishRequest struct {
	Wasm []byte `json:"wasm,omitempty"` // the module (base64 in JSON)
	// Module names a module already stored on this node (the "module" of
	// an earlier publish's answer) instead of sending it again: a bulk
	// publish of one module uploads megabytes once, not per agent.
	// Exactly one of Wasm and Module.
	Module   string          `json:"module,omitempty"`
	Manifest json.RawMessage `json:"manifest"` // the manifest object
	Budget   int64           `json:"budget_microcents"`
	// MinReplicas, when set, allows a custody group of fewer than the
	// manifest's 1+lease.replicas hosts, down to 1+MinReplicas; unset, a
	// publish without enough eligible hosts fails (ErrGroupTooSmall).
	MinReplicas *int `json:"min_replicas,omitempty"`
}

// NodeInfo is GET /v1/node.
type NodeInfo struct {
	Peer         string   `json:"peer"`
	Addrs        []string `json:"addrs"`
	Version      string   `json:"version"`
	Home         string   `json:"home"`
	Slots        int      `json:"slots"`
	FreeSlots    int      `json:"free_slots"`
	Price        int64    `json:"price_microcents_per_second"`
	RoutingTable int      `json:"routing_table"`
	Peers        int      `json:"connected_peers"`
}

// Info describes this node.
func (m *Mesh) Info() NodeInfo {
	free := m.Svc.FreeSlots()
	if m.cfg.Slots == 0 {
		free = 0
	}
	return NodeInfo{Peer: m.PeerID(), Addrs: m.PeerAddrs(), Version: Version, Home: m.Home.Dir, Slots: m.cfg.Slots,
		FreeSlots: free, Price: m.cfg.Price, RoutingTable: m.DHT.RoutingTableSize(), Peers: len(m.Host.Network().Peers())}
}

// APIServer is the node's local HTTP/JSON API and Prometheus endpoint.
type APIServer struct {
	srv    *http.Server
	ln     net.Listener
	done   chan error
	flight *trace.FlightRecorder // nil unless APIOptions.DebugFlight
}

// Addr is the address the API listens on.
func (a *APIServer) Addr() string { return a.ln.Addr().String() }

// Close shuts the API down, waiting up to ctx for requests in flight.
func (a *APIServer) Close(ctx context.Context) error {
	err := a.srv.Shutdown(ctx)
	<-a.done
	if a.flight != nil {
		a.flight.Stop()
	}
	return err
}

// The flight recorder's window (APIOptions.DebugFlight): long enough to
// fetch it after a burst of self-fences seen in the log or the metrics.
const (
	flightWindow   = 20 * time.Second
	flightMaxBytes = 256 << 20
)

// API limits (docs/API.md "Limits").
const (
	// DefaultAPIMaxInFlight is how many requests the API serves at once;
	// more get 503 with Retry-After.
	DefaultAPIMaxInFlight = 64
	// DefaultAPIMaxBody caps the body of every POST but publish and control
	// (an upgrade carries a module), which are capped at MaxPublishBody.
	DefaultAPIMaxBody = 64 << 10
	apiMaxHeaderBytes = 64 << 10
	apiHeaderTimeout  = 10 * time.Second
	// apiReadTimeout bounds reading a whole request: a 96 MiB publish body
	// at ~1 MB/s. There is no write timeout: publish streams progress and
	// drain waits as long as its own timeout says.
	apiReadTimeout = 2 * time.Minute
	apiIdleTimeout = time.Minute
)

// ErrAPIConfig: an API address or option that cannot be served (bad
// address, non-loopback without AllowRemote or without a token).
var ErrAPIConfig = errors.New("node: bad API configuration")

// APIOptions configure ServeAPIWithOptions.
type APIOptions struct {
	// AllowRemote permits a non-loopback address (--api-remote); Token is
	// then required.
	AllowRemote bool
	// Token is the bearer token ("Authorization: Bearer <token>") every
	// request must carry when the API is bound to a non-loopback address.
	// On loopback it is optional: a request without it is served, one with
	// a wrong token is refused. Compared in constant time; never logged.
	Token string
	// MaxInFlight caps concurrent requests; 0: DefaultAPIMaxInFlight.
	MaxInFlight int
	// MaxBody caps POST bodies other than publish; 0: DefaultAPIMaxBody.
	MaxBody int64
	// Unlimited serves without timeouts, caps or token checks. Only the
	// benchmark of what the limits cost uses it.
	Unlimited bool
	// DebugPartition serves POST /v1/debug/partition (chaos tests only;
	// the daemon sets it from IGOR_DEBUG_PARTITION=1).
	DebugPartition bool
	// DebugPprof serves net/http/pprof under /debug/pprof/ (profiling a
	// loaded daemon; the daemon sets it from IGOR_DEBUG_PPROF=1).
	DebugPprof bool
	// DebugFlight keeps the Go execution tracer's last seconds in memory
	// (runtime/trace.FlightRecorder) and serves them at GET /debug/flight,
	// to see what a node did just before an event the operator noticed
	// late — a burst of self-fences, a stall; the daemon sets it from
	// IGOR_DEBUG_FLIGHT=1. Tracing costs a few per cent of CPU.
	DebugFlight bool
}

// ServeAPI starts the API on addr (loopback by default: it can publish
// agents and reveals what this node hosts) with the default limits. A
// non-loopback address needs allowRemote and, since it is then reachable
// by others, a token: use ServeAPIWithOptions.
func (m *Mesh) ServeAPI(addr string, allowRemote bool) (*APIServer, error) {
	return m.ServeAPIWithOptions(addr, APIOptions{AllowRemote: allowRemote})
}

// IsLoopbackAddr reports whether host:port names a loopback address (an
// IP in 127.0.0.0/8 or ::1, or "localhost"). "", "0.0.0.0" and "::" are
// not: they listen on every interface.
func IsLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return host == "localhost" || (ip != nil && ip.IsLoopback())
}

// ServeAPIWithOptions starts the API on addr with the options given.
//
// Errors: ErrAPIConfig (bad address; non-loopback without AllowRemote or
// without Token; negative limits), or the listen error.
func (m *Mesh) ServeAPIWithOptions(addr string, opts APIOptions) (*APIServer, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("%w: API address %q: %v (example: 127.0.0.1:4701)", ErrAPIConfig, addr, err)
	}
	loopback := IsLoopbackAddr(addr)
	if !loopback && !opts.AllowRemote {
		return nil, fmt.Errorf("%w: API address %q is not loopback; the API can publish agents — pass --api-remote to expose it deliberately", ErrAPIConfig, addr)
	}
	if !loopback && opts.Token == "" && !opts.Unlimited {
		return nil, fmt.Errorf("%w: API address %q is not loopback, so the API needs a bearer token (--api-token-file)", ErrAPIConfig, addr)
	}
	if opts.MaxInFlight < 0 || opts.MaxBody < 0 {
		return nil, fmt.Errorf("%w: API limits must not be negative (max in flight %d, max body %d)", ErrAPIConfig, opts.MaxInFlight, opts.MaxBody)
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = DefaultAPIMaxInFlight
	}
	if opts.MaxBody == 0 {
		opts.MaxBody = DefaultAPIMaxBody
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%w: API listen on %s: %w", ErrAPIConfig, addr, err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.ticks, m.pushed, m.commitLatency, buildInfoGauge(buildinfo.Read()), newAgentCollector(m),
		// The scheduler's histograms (run-queue latency, stop-the-world
		// pauses) are how an operator sees a node too starved to renew its
		// leases in time, before its holders self-fence.
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsScheduler)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "igor_custody_groups", Help: "Custody groups this node is a member of."},
			func() float64 { return float64(len(m.Custody.Status())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "igor_hosted_agents", Help: "Agents running on this node."},
			func() float64 { return float64(m.Svc.Slots() - m.Svc.FreeSlots()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "igor_free_slots", Help: "Agent slots free on this node."},
			func() float64 { return float64(m.Info().FreeSlots) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_custody_frames_shed_total", Help: "Per-group custody frames dropped because their stream's queue was full (the node could not store pushes as fast as they came)."},
			func() float64 { return float64(m.custodyShed.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "igor_agent_starts_waiting", Help: "Agent starts (lineage check, instantiation, resume) queued for one of the node's start slots."},
			func() float64 { w, _ := m.Svc.StartStats(); return float64(w) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "igor_dht_routing_table_peers", Help: "Peers in the DHT routing table."},
			func() float64 { return float64(m.DHT.RoutingTableSize()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "igor_connected_peers", Help: "Connected libp2p peers."},
			func() float64 { return float64(len(m.Host.Network().Peers())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "igor_host_view_hosts", Help: "Hosts in this node's host view (gossiped host records; DECISIONS D51)."},
			func() float64 { return float64(m.view.size()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_host_view_refused_total", Help: "Host-record messages the host view's validator refused."},
			func() float64 { return float64(m.view.rejected.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_host_enumerations_total", Help: "DHT enumerations of the mesh's hosts (a cold host view, `igor-node hosts`)."},
			func() float64 { return float64(m.walks.Load()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_custody_inline_steps_total",
			Help: "Custody lease steps (ticks, heartbeats, acknowledgements) the engine ran without waking the group's driver goroutine (DECISIONS D53)."},
			func() float64 { return float64(m.Custody.EngineStats().Inline) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_custody_driver_wakes_total",
			Help: "Wake-ups of custody driver goroutines: persists, starts, stops, fetch results, and groups with a handoff, regroup or campaign in flight."},
			func() float64 { return float64(m.Custody.EngineStats().Loop) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_custody_engine_late_rounds_total",
			Help: "Custody engine rounds (every holder's lease renewals) that began or ran 300 ms or more late: a paused process, or one short of CPU."},
			func() float64 { return float64(m.Custody.EngineStats().Late) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_store_flushes_total",
			Help: "Group flushes (syncfs) that made this node's block, lease-state and head writes durable (0 where each file is fsynced)."},
			func() float64 { return float64(m.Store.Syncer().Flushes()) }),
		// Lineage verification (DECISIONS D77): steps are the steady state; a
		// rise in walks, or in checkpoints per walk, is the verified-lineage
		// cache failing a node that is busy with takeovers.
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_lineage_steps_total",
			Help: "Checkpoints verified in one step above a checkpoint verified before (a standby following its holder)."},
			func() float64 { return float64(m.verified.Stats().Steps) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_lineage_walks_total",
			Help: "Lineage walks: verifications down to a checkpoint verified before, or to the genesis."},
			func() float64 { return float64(m.verified.Stats().Walks) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_lineage_walked_checkpoints_total",
			Help: "Checkpoints verified (signatures and rules) by lineage walks."},
			func() float64 { return float64(m.verified.Stats().Walked) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_lineage_genesis_walks_total",
			Help: "Lineage walks that found no checkpoint verified before and verified the agent's whole history."},
			func() float64 { return float64(m.verified.Stats().GenesisWalks) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "igor_agent_log_lines_dropped_total",
			Help: "Agent log lines not written to the node log by the per-agent rate limit (still recorded for replay)."},
			func() float64 {
				rt, err := m.Runtime(context.Background()) // the daemon's runtime, made once
				if err != nil {
					return 0
				}
				return float64(rt.LogLinesDropped())
			}),
	)
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /v1/health", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true, "peer": m.PeerID()})
	})
	mux.HandleFunc("GET /v1/node", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, m.Info()) })
	mux.HandleFunc("GET /v1/peers", func(w http.ResponseWriter, r *http.Request) {
		type p struct {
			Peer  string   `json:"peer"`
			Addrs []string `json:"addrs"`
		}
		out := []p{}
		for _, id := range m.Host.Network().Peers() {
			var addrs []string
			for _, a := range m.Host.Peerstore().Addrs(id) {
				addrs = append(addrs, a.String())
			}
			out = append(out, p{id.String(), addrs})
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/peers/connect", m.apiConnect)
	mux.HandleFunc("GET /v1/hosts", func(w http.ResponseWriter, r *http.Request) {
		hs, err := m.Hosts(r.Context())
		if err != nil {
			writeErr(w, http.StatusBadGateway, err)
			return
		}
		if hs == nil {
			hs = []*agents.HostRecord{}
		}
		writeJSON(w, http.StatusOK, hs)
	})
	mux.HandleFunc("GET /v1/agents", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, m.Svc.Hosted())
	})
	mux.HandleFunc("POST /v1/agents", m.apiPublish)
	mux.HandleFunc("GET /v1/agents/{did}", func(w http.ResponseWriter, r *http.Request) {
		st, err := m.QueryAgent(r.Context(), r.PathValue("did"))
		if err != nil {
			writeErr(w, statusOf(err), err)
			return
		}
		if r.URL.Query().Get("forks") == "1" {
			if st.Forks, err = m.AgentForks(r.Context(), st.DID); err != nil {
				writeErr(w, http.StatusInternalServerError, err)
				return
			}
		}
		writeJSON(w, http.StatusOK, st)
	})
	mux.HandleFunc("GET /v1/agents/{did}/verify", func(w http.ResponseWriter, r *http.Request) {
		rep, err := m.VerifyRemote(r.Context(), r.PathValue("did"), VerifyOptions{Replay: r.URL.Query().Get("replay") == "1"})
		if err != nil {
			writeErr(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("GET /v1/agents/{did}/lineage", func(w http.ResponseWriter, r *http.Request) {
		rep, err := m.LineageRemote(r.Context(), r.PathValue("did"))
		if err != nil {
			writeErr(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, rep)
	})
	mux.HandleFunc("POST /v1/agents/{did}/revive", func(w http.ResponseWriter, r *http.Request) {
		res, err := m.Revive(r.Context(), r.PathValue("did"), r.URL.Query().Get("accept_loss") == "1", nil)
		if err != nil {
			writeErr(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusCreated, res)
	})
	mux.HandleFunc("POST /v1/agents/{did}/control", m.apiControl)
	mux.HandleFunc("GET /v1/agents/{did}/logs", m.apiLogs)
	mux.HandleFunc("GET /v1/agents/{did}/car", m.apiExport)
	mux.HandleFunc("GET /v1/home/agents", func(w http.ResponseWriter, r *http.Request) {
		infos, err := m.HomeAgents()
		if err != nil {
			writeErr(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, infos)
	})
	mux.HandleFunc("GET /v1/inspect/{ref}", func(w http.ResponseWriter, r *http.Request) {
		info, err := m.Inspect(r.PathValue("ref"))
		if err != nil {
			writeErr(w, inspectStatus(err), err)
			return
		}
		writeJSON(w, http.StatusOK, info)
	})
	mux.HandleFunc("GET /v1/mesh/agents", func(w http.ResponseWriter, r *http.Request) {
		res, err := m.ListAgents(r.Context())
		if err != nil {
			writeErr(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/custody", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, m.Custody.Status())
	})
	mux.HandleFunc("POST /v1/drain", func(w http.ResponseWriter, r *http.Request) {
		timeout, err := parseDrainTimeout(r.URL.Query().Get("timeout"))
		if err != nil {
			writeErr(w, http.StatusBadRequest, err)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if err := m.Drain(ctx); err != nil {
			code := http.StatusGatewayTimeout
			if errors.Is(err, ErrNowhereToDrain) {
				code = http.StatusServiceUnavailable
			}
			writeErr(w, code, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"drained": true, "custody": m.Custody.Status()})
	})
	if opts.DebugPartition {
		mux.HandleFunc("POST /v1/debug/partition", m.apiPartition)
	}
	if opts.DebugPprof {
		mux.HandleFunc("GET /debug/pprof/", pprof.Index)
		mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	}
	var flight *trace.FlightRecorder
	if opts.DebugFlight {
		flight = trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: flightWindow, MaxBytes: flightMaxBytes})
		if err := flight.Start(); err != nil {
			ln.Close()
			return nil, fmt.Errorf("%w: the flight recorder: %w (another tracer running?)", ErrAPIConfig, err)
		}
		mux.HandleFunc("GET /debug/flight", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			if _, err := flight.WriteTo(w); err != nil {
				m.Logger.Warn("API: writing the flight recorder's trace", "err", err)
			}
		})
	}
	uiHandlers(mux)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, fmt.Errorf("no such endpoint %s %s (see docs/API.md)", r.Method, r.URL.Path))
	})
	srv := &http.Server{Handler: mux}
	if !opts.Unlimited {
		srv = &http.Server{Handler: apiGuard(mux, opts, ln.Addr().String(), !loopback),
			ReadHeaderTimeout: apiHeaderTimeout, ReadTimeout: apiReadTimeout, IdleTimeout: apiIdleTimeout, MaxHeaderBytes: apiMaxHeaderBytes}
	}
	a := &APIServer{ln: ln, done: make(chan error, 1), srv: srv, flight: flight}
	go func() { a.done <- a.srv.Serve(ln) }()
	return a, nil
}

// apiGuard wraps the API's handler with its limits: the bearer token (always
// when remote, checked when sent on loopback), the cap on requests in
// flight, and the cap on POST bodies.
func apiGuard(next http.Handler, opts APIOptions, addr string, remote bool) http.Handler {
	sem := make(chan struct{}, opts.MaxInFlight)
	var want [sha256.Size]byte
	if opts.Token != "" {
		want = sha256.Sum256([]byte(opts.Token))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if opts.Token != "" {
			h := r.Header.Get("Authorization")
			switch {
			case h == "" && remote:
				w.Header().Set("WWW-Authenticate", `Bearer realm="igor-node"`)
				writeErr(w, http.StatusUnauthorized, fmt.Errorf("missing bearer token: the API at %s is not loopback-only and needs the header 'Authorization: Bearer <token>' (the token is in the daemon's --api-token-file, default HOME/api.token)", addr))
				return
			case h != "":
				tok, ok := strings.CutPrefix(h, "Bearer ")
				got := sha256.Sum256([]byte(tok))
				// Hashes compare in constant time whatever the lengths.
				if !ok || subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
					w.Header().Set("WWW-Authenticate", `Bearer realm="igor-node", error="invalid_token"`)
					writeErr(w, http.StatusUnauthorized, errors.New("wrong bearer token: the Authorization header must be 'Bearer ' and the token from the daemon's --api-token-file"))
					return
				}
			}
		}
		select {
		case sem <- struct{}{}:
			defer func() { <-sem }()
		default:
			w.Header().Set("Retry-After", "1")
			writeErr(w, http.StatusServiceUnavailable, fmt.Errorf("the API is already serving %d requests; retry in a second", opts.MaxInFlight))
			return
		}
		if r.Method == http.MethodPost {
			limit := opts.MaxBody
			if r.URL.Path == "/v1/agents" || strings.HasSuffix(r.URL.Path, "/control") {
				limit = MaxPublishBody // a publish, or an upgrade carrying its module
			}
			if r.ContentLength > limit {
				writeErr(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body of %d bytes is over the limit of %d bytes for POST %s", r.ContentLength, limit, r.URL.Path))
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

func (m *Mesh) apiPublish(w http.ResponseWriter, r *http.Request) {
	req, err := decodePublishRequest(http.MaxBytesReader(w, r.Body, MaxPublishBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeErr(w, http.StatusRequestEntityTooLarge, fmt.Errorf("request body over %d bytes", MaxPublishBody))
			return
		}
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	publish := func(progress func(string)) (*PublishResult, error) {
		return m.PublishAgent(r.Context(), req, progress)
	}
	if r.Header.Get("Accept") != "application/x-ndjson" {
		res, err := publish(nil)
		if err != nil {
			writeErr(w, statusOf(err), err)
			return
		}
		writeJSON(w, http.StatusCreated, res)
		return
	}
	// Streaming: one JSON line per progress step, then {"result": …} or
	// {"error": …}. The status is 200 because it is sent before the outcome.
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	enc := json.NewEncoder(w)
	flush := func() {
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
	}
	res, err := publish(func(msg string) {
		_ = enc.Encode(map[string]string{"progress": msg})
		flush()
	})
	if err != nil {
		_ = enc.Encode(map[string]any{"error": err.Error(), "status": statusOf(err)})
	} else {
		_ = enc.Encode(map[string]any{"result": res})
	}
	flush()
}

// buildInfoGauge is igor_build_info: always 1, with the build as labels
// (the Prometheus convention for version information).
func buildInfoGauge(bi buildinfo.Info) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "igor_build_info",
		Help: "The running igor-node build (always 1): release, module version, VCS revision, Go version.",
		ConstLabels: prometheus.Labels{"version": bi.Release, "module_version": bi.ModuleVersion,
			"revision": bi.ShortRevision(), "go_version": bi.GoVersion}},
		func() float64 { return 1 })
}

// apiConnect is POST /v1/peers/connect[?timeout=10s] {"addr": MULTIADDR}.
func (m *Mesh) apiConnect(w http.ResponseWriter, r *http.Request) {
	timeout, err := parseTimeout(r.URL.Query().Get("timeout"), DefaultConnectTimeout)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	req, err := decodeConnectRequest(r.Body)
	if err != nil {
		writeErr(w, http.StatusBadRequest, err)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	id, err := m.Connect(ctx, req.Addr)
	if err != nil {
		writeErr(w, statusOf(err), err)
		return
	}
	res := ConnectResult{Peer: id.String(), Addrs: []string{}}
	for _, c := range m.Host.Network().ConnsToPeer(id) {
		res.Addrs = append(res.Addrs, c.RemoteMultiaddr().String())
	}
	writeJSON(w, http.StatusOK, res)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrUnknownAgent), errors.Is(err, keystore.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, agents.ErrBadDID), errors.Is(err, agents.ErrBadManifest), errors.Is(err, ErrBadRequest), errors.Is(err, ErrBadPeerAddr):
		return http.StatusBadRequest
	case errors.Is(err, ErrAgentAlive), errors.Is(err, agents.ErrControl), errors.Is(err, hosting.ErrUpgradeFailed):
		return http.StatusConflict
	case errors.Is(err, ErrNoHolderNow), errors.Is(err, custody.ErrBusy):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrNoHost), errors.Is(err, ErrGroupTooSmall), errors.Is(err, hosting.ErrNoCapacity):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	if strings.Contains(err.Error(), "wasmexec:") {
		return http.StatusBadRequest
	}
	return http.StatusBadGateway
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeErr(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

// apiPartition (testing only; served with APIOptions.DebugPartition, which
// the daemon sets from IGOR_DEBUG_PARTITION=1) cuts this node off from the given peers for the
// given time: existing connections are closed and new ones in either
// direction refused by the connection gate. The chaos harness calls it on
// both sides of a partition.
func (m *Mesh) apiPartition(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Peers   []string `json:"peers"`
		Seconds float64  `json:"seconds"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Seconds <= 0 || req.Seconds > 3600 || len(req.Peers) == 0 {
		writeErr(w, http.StatusBadRequest, fmt.Errorf("%w: want {\"peers\": [peer IDs], \"seconds\": 0 < s ≤ 3600} (%v)", ErrBadRequest, err))
		return
	}
	ids := make([]peer.ID, len(req.Peers))
	for i, p := range req.Peers {
		id, err := peer.Decode(p)
		if err != nil {
			writeErr(w, http.StatusBadRequest, fmt.Errorf("%w: peer %q: %v", ErrBadRequest, p, err))
			return
		}
		ids[i] = id
	}
	until := time.Now().Add(time.Duration(req.Seconds * float64(time.Second)))
	for _, id := range ids {
		m.gate.block(id, until)
		_ = m.Host.Network().ClosePeer(id)
	}
	writeJSON(w, http.StatusOK, map[string]any{"blocked": req.Peers, "until": until})
}
