package dht_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/igor-mesh/igor-node/dht"
	"github.com/igor-mesh/igor-node/internal/p2phost"
	"github.com/igor-mesh/igor-node/internal/testutil"
)

// newHost starts a real libp2p host on loopback (TCP without SO_REUSEPORT and
// QUIC, no relay: the options doc.go recommends) and closes it at cleanup.
func newHost(tb testing.TB) host.Host {
	tb.Helper()
	h, err := p2phost.New(nil, p2phost.Loopback)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	return h
}

func info(h host.Host) peer.AddrInfo { return peer.AddrInfo{ID: h.ID(), Addrs: h.Addrs()} }

type node struct {
	h host.Host
	d *dht.DHT
}

// newNode starts a host and a DHT on it, and bootstraps it; both are closed
// at cleanup (DHT first).
func newNode(tb testing.TB, opts ...dht.Option) node {
	tb.Helper()
	n := startNode(tb, opts...)
	if _, err := n.d.Bootstrap(context.Background()); err != nil {
		tb.Fatal(err)
	}
	return n
}

// startNode is newNode without the bootstrap.
func startNode(tb testing.TB, opts ...dht.Option) node {
	tb.Helper()
	h := newHost(tb)
	opts = append([]dht.Option{dht.WithLogger(testLogger(tb))}, opts...)
	d, err := dht.New(h, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := d.Close(); err != nil {
			tb.Errorf("close: %v", err)
		}
	})
	return node{h, d}
}

// newStar starts n nodes that bootstrap from node 0 and waits until every
// routing table holds at least minPeers peers.
func newStar(tb testing.TB, n, minPeers int, opts ...dht.Option) []node {
	tb.Helper()
	nodes := []node{startNode(tb, opts...)}
	for i := 1; i < n; i++ {
		nodes = append(nodes, startNode(tb, append(opts[:len(opts):len(opts)], dht.WithBootstrapPeers(info(nodes[0].h)))...))
	}
	waitReady(tb, nodes, minPeers)
	return nodes
}

// waitReady bootstraps every node (again, for nodes that did already, so
// early nodes learn of later ones) and waits until each routing table holds at
// least minPeers peers. One node at a time: when 25 nodes bootstrap at once
// their first refreshes find few peers and the tables fill 3× slower.
func waitReady(tb testing.TB, nodes []node, minPeers int) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range nodes {
		if _, err := n.d.Bootstrap(ctx); err != nil {
			tb.Fatal(err)
		}
	}
	for i, n := range nodes {
		if err := n.d.WaitReady(ctx, minPeers); err != nil {
			tb.Fatalf("node %d: %v", i, err)
		}
	}
}

func testLogger(tb testing.TB) *slog.Logger {
	var w io.Writer = io.Discard
	if t, ok := tb.(*testing.T); ok {
		w = t.Output()
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

// versions is the test namespace's validator: a value is "v<N>" with N a
// non-negative decimal integer, and Select picks the highest N (the first one
// on a tie), numerically, so "v12" beats "v7" although it sorts lower as bytes.
type versions struct{}

func version(v []byte) (int, error) {
	s, ok := strings.CutPrefix(string(v), "v")
	if !ok {
		return 0, fmt.Errorf("value %.32q does not start with v", v)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || strconv.Itoa(n) != s {
		return 0, fmt.Errorf("value %.32q is not v<N>", v)
	}
	return n, nil
}

func (versions) Validate(_ string, v []byte) error {
	_, err := version(v)
	return err
}

func (versions) Select(_ string, vs [][]byte) (int, error) {
	best, bestN := -1, -1
	for i, v := range vs {
		if n, err := version(v); err == nil && n > bestN {
			best, bestN = i, n
		}
	}
	if best < 0 {
		return 0, errors.New("no valid value")
	}
	return best, nil
}

// anything accepts every value and prefers the longest: the validator of a
// careless or hostile peer.
type anything struct{}

func (anything) Validate(string, []byte) error { return nil }
func (anything) Select(_ string, vs [][]byte) (int, error) {
	best := 0
	for i, v := range vs {
		if len(v) > len(vs[best]) {
			best = i
		}
	}
	return best, nil
}

// recording wraps a validator and records every value Validate saw.
type recording struct {
	inner interface {
		Validate(string, []byte) error
		Select(string, [][]byte) (int, error)
	}
	mu   sync.Mutex
	seen [][]byte
}

func (r *recording) Validate(k string, v []byte) error {
	r.mu.Lock()
	r.seen = append(r.seen, bytes.Clone(v))
	r.mu.Unlock()
	return r.inner.Validate(k, v)
}

func (r *recording) Select(k string, vs [][]byte) (int, error) { return r.inner.Select(k, vs) }

func (r *recording) saw(v []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, s := range r.seen {
		if bytes.Equal(s, v) {
			return true
		}
	}
	return false
}

// stores reports whether any entry in store contains b.
func stores(tb testing.TB, store ds.Datastore, b []byte) bool {
	tb.Helper()
	res, err := store.Query(context.Background(), dsq.Query{})
	if err != nil {
		tb.Fatal(err)
	}
	defer res.Close()
	for e := range res.Next() {
		if e.Error != nil {
			tb.Fatal(e.Error)
		}
		if bytes.Contains(e.Value, b) {
			return true
		}
	}
	return false
}

// eventually polls cond until it holds or the deadline passes.
func eventually(tb testing.TB, within time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(within)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("after %v: %s", within, what)
		}
		<-tick.C
	}
}

type syncBuffer = testutil.SyncBuffer

func slogTo(w io.Writer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}
