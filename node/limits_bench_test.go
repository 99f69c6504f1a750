package node

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/internal/p2phost"
	"github.com/igor-mesh/igor-node/node/exchange"
)

// memBlocks is an in-memory exchange.Blockstore that re-hashes on PutBlock
// like the disk store, so the benchmark measures the network and its
// limits, not the file system.
type memBlocks struct {
	mu sync.Mutex
	m  map[cid.Cid][]byte
}

func (s *memBlocks) Has(c cid.Cid) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.m[c]
	return ok, nil
}

func (s *memBlocks) Get(c cid.Cid) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d, ok := s.m[c]; ok {
		return d, nil
	}
	return nil, contentstore.ErrNotFound
}

func (s *memBlocks) PutBlock(c cid.Cid, data []byte) error {
	got, err := c.Prefix().Sum(data)
	if err != nil {
		return err
	}
	if !got.Equals(c) {
		return fmt.Errorf("block does not hash to %s", c)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[c] = data
	return nil
}

// limitsPair is a server holding a DAG and a client connected to it over
// one transport, both built with the same p2phost options.
type limitsPair struct {
	client host.Host
	from   peer.AddrInfo
}

func newLimitsPair(b *testing.B, opts p2phost.Options, src *contentstore.Store, transport string) limitsPair {
	b.Helper()
	quiet := slog.New(slog.DiscardHandler)
	srv, err := p2phost.NewWithOptions(nil, p2phost.Loopback, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Close() })
	ex, err := exchange.New(srv, src, exchange.WithLogger(quiet))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ex.Close() })
	cli, err := p2phost.NewWithOptions(nil, p2phost.Loopback, opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { cli.Close() })
	to := peer.AddrInfo{ID: srv.ID()}
	for _, a := range srv.Addrs() {
		if _, err := a.ValueForProtocol(multiaddr.ProtocolWithName(transport).Code); err == nil {
			to.Addrs = append(to.Addrs, a)
		}
	}
	if err := cli.Connect(context.Background(), to); err != nil {
		b.Fatal(err)
	}
	return limitsPair{client: cli, from: to}
}

// BenchmarkLimitsBlockExchange fetches a 64 MiB object (64 chunks + root)
// between two real hosts on loopback into memory, once between hosts with
// the default resource limits and once between hosts without a resource
// manager, alternating in every iteration. ratio_on_off = throughput with
// limits / throughput without (1.0: the limits cost nothing).
func BenchmarkLimitsBlockExchange(b *testing.B) {
	for _, tr := range []string{"tcp", "quic-v1"} {
		b.Run(tr, func(b *testing.B) { benchLimitsExchange(b, tr) })
	}
}

func benchLimitsExchange(b *testing.B, transport string) {
	const size = 64 << 20
	src, err := contentstore.Open(b.TempDir(), contentstore.WithoutFsync())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() })
	payload := make([]byte, size)
	rand.Read(payload)
	root, err := src.PutObjectBytes(payload)
	if err != nil {
		b.Fatal(err)
	}
	off := p2phost.DefaultOptions()
	off.NoResourceManager = true
	pairs := map[string]limitsPair{
		"on":  newLimitsPair(b, p2phost.DefaultOptions(), src, transport),
		"off": newLimitsPair(b, off, src, transport),
	}
	quiet := slog.New(slog.DiscardHandler)
	took := map[string]time.Duration{}
	fetch := func(name string) {
		p := pairs[name]
		ex, err := exchange.New(p.client, &memBlocks{m: map[cid.Cid][]byte{}}, exchange.WithLogger(quiet))
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		st, err := ex.FetchDAG(context.Background(), root, exchange.FetchOptions{From: []peer.AddrInfo{p.from}})
		took[name] += time.Since(start)
		ex.Close()
		if err != nil || st.Bytes < size {
			b.Fatalf("%s: fetched %d bytes: %v", name, st.Bytes, err)
		}
	}
	b.SetBytes(2 * size)
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			fetch("on")
			fetch("off")
		} else {
			fetch("off")
			fetch("on")
		}
	}
	mbps := func(d time.Duration) float64 { return float64(size) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(took["on"]), "on-MB/s")
	b.ReportMetric(mbps(took["off"]), "off-MB/s")
	b.ReportMetric(took["off"].Seconds()/took["on"].Seconds(), "ratio_on_off")
}

// BenchmarkLimitsAPI measures the local API over real HTTP on loopback
// with its limits (timeouts, in-flight cap, body caps; and with a bearer
// token checked) against the same API without any, on one mesh node,
// alternating in every iteration (200 requests per variant, 4 clients in
// parallel). The POST is a small publish body with a zero budget: it is
// read, decoded and refused (400) without creating anything, so it
// measures the request path. ratio_* = requests/s with limits / without.
func BenchmarkLimitsAPI(b *testing.B) {
	m := startMeshes(b, 1, 0)[0]
	const token = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	variants := []struct {
		name string
		opts APIOptions
	}{
		{"off", APIOptions{Unlimited: true}},
		{"on", APIOptions{}},
		{"token", APIOptions{Token: token}},
	}
	base := map[string]string{}
	for _, v := range variants {
		srv, err := m.ServeAPIWithOptions("127.0.0.1:0", v.opts)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { srv.Close(context.Background()) })
		base[v.name] = "http://" + srv.Addr()
	}
	small := []byte(`{"wasm":"AGFzbQEAAAA=","manifest":{},"budget_microcents":0}`)
	for _, req := range []struct {
		name   string
		method string
		path   string
		body   []byte
		want   int
	}{
		{"GET-node", "GET", "/v1/node", nil, http.StatusOK},
		{"POST-small", "POST", "/v1/agents", small, http.StatusBadRequest},
	} {
		b.Run(req.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}}
			defer client.CloseIdleConnections()
			took := map[string]time.Duration{}
			const perRound, workers = 200, 4
			round := func(variant string) {
				start := time.Now()
				var wg sync.WaitGroup
				errs := make(chan error, workers)
				for w := 0; w < workers; w++ {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for i := 0; i < perRound/workers; i++ {
							var body io.Reader
							if req.body != nil {
								body = bytes.NewReader(req.body)
							}
							r, _ := http.NewRequest(req.method, base[variant]+req.path, body)
							if variant == "token" {
								r.Header.Set("Authorization", "Bearer "+token)
							}
							resp, err := client.Do(r)
							if err != nil {
								errs <- err
								return
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
							if resp.StatusCode != req.want {
								errs <- fmt.Errorf("%s %s: HTTP %d, want %d", variant, req.path, resp.StatusCode, req.want)
								return
							}
						}
					}()
				}
				wg.Wait()
				close(errs)
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
				took[variant] += time.Since(start)
			}
			b.ResetTimer()
			for i := range b.N {
				for j := range variants {
					round(variants[(i+j)%len(variants)].name)
				}
			}
			rps := func(v string) float64 { return float64(perRound*b.N) / took[v].Seconds() }
			b.ReportMetric(rps("on"), "on-req/s")
			b.ReportMetric(rps("off"), "off-req/s")
			b.ReportMetric(rps("on")/rps("off"), "ratio_on_off")
			b.ReportMetric(rps("token")/rps("off"), "ratio_token_off")
		})
	}
}

// apiCall sends one request and returns the status, the Retry-After header
// and the JSON error message, if any.
func apiCall(tb testing.TB, method, url, token string, body io.Reader, header map[string]string) (int, string, string) {
	tb.Helper()
	r, err := http.NewRequest(method, url, body)
	if err != nil {
		tb.Fatal(err)
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range header {
		r.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(r)
	if err != nil {
		tb.Fatal(err)
	}
	defer resp.Body.Close()
	var e struct {
		Error string `json:"error"`
	}
	data, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(data, &e)
	return resp.StatusCode, resp.Header.Get("Retry-After"), e.Error
}

// The API's limits: a token on a non-loopback address (missing → 401
// naming what is missing; wrong → 401), optional on loopback; body caps
// (413), header cap (431) and the in-flight cap (503 + Retry-After).
func TestLimitsAPIHardening(t *testing.T) {
	m := startMeshes(t, 1, 0)[0]
	const token = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
	if _, err := m.ServeAPIWithOptions("0.0.0.0:0", APIOptions{AllowRemote: true}); !errors.Is(err, ErrAPIConfig) || !strings.Contains(err.Error(), "token") {
		t.Fatalf("remote API without a token: %v", err)
	}
	remote, err := m.ServeAPIWithOptions("0.0.0.0:0", APIOptions{AllowRemote: true, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	defer remote.Close(context.Background())
	_, port, _ := net.SplitHostPort(remote.Addr())
	rurl := "http://127.0.0.1:" + port
	if code, _, msg := apiCall(t, "GET", rurl+"/v1/node", "", nil, nil); code != 401 || !strings.Contains(msg, "missing bearer token") {
		t.Fatalf("remote, no token: %d %q", code, msg)
	}
	if code, _, msg := apiCall(t, "GET", rurl+"/metrics", "nope", nil, nil); code != 401 || !strings.Contains(msg, "wrong bearer token") {
		t.Fatalf("remote, wrong token: %d %q", code, msg)
	}
	if code, _, msg := apiCall(t, "GET", rurl+"/v1/node", token, nil, nil); code != 200 {
		t.Fatalf("remote, right token: %d %q", code, msg)
	}

	local, err := m.ServeAPIWithOptions("127.0.0.1:0", APIOptions{Token: token, MaxInFlight: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close(context.Background())
	lurl := "http://" + local.Addr()
	if code, _, _ := apiCall(t, "GET", lurl+"/v1/node", "", nil, nil); code != 200 {
		t.Fatalf("loopback without a token: %d", code)
	}
	if code, _, _ := apiCall(t, "GET", lurl+"/v1/node", "wrong", nil, nil); code != 401 {
		t.Fatalf("loopback with a wrong token: %d", code)
	}
	big := bytes.Repeat([]byte("x"), DefaultAPIMaxBody+1)
	if code, _, msg := apiCall(t, "POST", lurl+"/v1/drain", "", bytes.NewReader(big), nil); code != 413 || !strings.Contains(msg, "over the limit") {
		t.Fatalf("oversize POST body: %d %q", code, msg)
	}
	if code, _, _ := apiCall(t, "GET", lurl+"/v1/node", "", nil, map[string]string{"X-Big": strings.Repeat("y", 100<<10)}); code != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("oversize header: %d", code)
	}
	// A publish whose body trickles in holds the only slot: the next
	// request is turned away with Retry-After, and served once it ends.
	pr, pw := io.Pipe()
	slow := make(chan int, 1)
	go func() {
		resp, err := http.Post(lurl+"/v1/agents", "application/json", pr)
		if err != nil {
			slow <- -1
			return
		}
		resp.Body.Close()
		slow <- resp.StatusCode
	}()
	pw.Write([]byte(`{"wasm":`))
	eventually(t, "the in-flight cap to refuse a second request", 10*time.Second, func() error {
		code, retry, msg := apiCall(t, "GET", lurl+"/v1/node", "", nil, nil)
		if code != 503 || retry == "" || !strings.Contains(msg, "already serving 1") {
			return fmt.Errorf("%d %q %q", code, retry, msg)
		}
		return nil
	})
	pw.Write([]byte(`"not base64!"}`))
	pw.Close()
	if code := <-slow; code != 400 {
		t.Fatalf("slow publish with a bad module: %d, want 400", code)
	}
	if code, _, _ := apiCall(t, "GET", lurl+"/v1/node", "", nil, nil); code != 200 {
		t.Fatalf("after the slot is free: %d", code)
	}
}
