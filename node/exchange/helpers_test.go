package exchange

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/codec/dagcbor"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	cidlink "github.com/ipld/go-ipld-prime/linking/cid"
	"github.com/ipld/go-ipld-prime/node/basicnode"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mh "github.com/multiformats/go-multihash"

	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/internal/p2phost"
	"github.com/igor-mesh/igor-node/internal/testutil"
)

// newHost starts a real libp2p host on loopback: TCP without SO_REUSEPORT
// (flaky simultaneous opens otherwise) plus QUIC, no relay. The host is
// closed at cleanup (closing it twice is harmless).
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

func newStore(tb testing.TB) *contentstore.Store {
	tb.Helper()
	st, err := contentstore.Open(tb.TempDir(), contentstore.WithoutFsync())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { st.Close() })
	return st
}

// testNode is a host with its own store and exchange.
type testNode struct {
	h  host.Host
	st *contentstore.Store
	ex *Exchange
}

func (n testNode) info() peer.AddrInfo { return info(n.h) }

// newNode: host, store and exchange, closed at cleanup exchange first.
func newNode(tb testing.TB, opts ...Option) testNode {
	tb.Helper()
	st := newStore(tb)
	h := newHost(tb)
	ex, err := New(h, st, append([]Option{WithLogger(testLogger(tb))}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ex.Close() })
	return testNode{h, st, ex}
}

// testLogger writes to the test log (only shown on failure or -v).
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tbWriter{tb}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tbWriter struct{ tb testing.TB }

func (w tbWriter) Write(p []byte) (int, error) {
	w.tb.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

type syncBuffer = testutil.SyncBuffer

// providerMap is a plain table CID → holders, standing in for the DHT.
type providerMap struct {
	mu    sync.Mutex
	m     map[cid.Cid][]peer.AddrInfo
	calls int
}

func (p *providerMap) add(c cid.Cid, ai peer.AddrInfo) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.m == nil {
		p.m = make(map[cid.Cid][]peer.AddrInfo)
	}
	p.m[c] = append(p.m[c], ai)
}

func (p *providerMap) FindProviders(ctx context.Context, c cid.Cid, max int) ([]peer.AddrInfo, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls++
	out := p.m[c]
	if len(out) > max {
		out = out[:max]
	}
	return append([]peer.AddrInfo(nil), out...), ctx.Err()
}

func randBytes(tb testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return b
}

// putNode stores a DAG-CBOR map built by fn.
func putNode(tb testing.TB, st *contentstore.Store, fn func(ma datamodel.MapAssembler), n int64) cid.Cid {
	tb.Helper()
	nd, err := qp.BuildMap(basicnode.Prototype.Any, n, fn)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if err := dagcbor.Encode(nd, &buf); err != nil {
		tb.Fatal(err)
	}
	c, err := st.Put(cid.DagCBOR, buf.Bytes())
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func link(c cid.Cid) qp.Assemble { return qp.Link(cidlink.Link{Cid: c}) }

// copyBlocks copies blocks between stores (PutBlock re-hashes them).
func copyBlocks(tb testing.TB, from, to *contentstore.Store, cs ...cid.Cid) {
	tb.Helper()
	for _, c := range cs {
		data, err := from.Get(c)
		if err != nil {
			tb.Fatal(err)
		}
		if err := to.PutBlock(c, data); err != nil {
			tb.Fatal(err)
		}
	}
}

func rawCID(tb testing.TB, data []byte) cid.Cid {
	c, err := cid.Prefix{Version: 1, Codec: cid.Raw, MhType: mh.SHA2_256, MhLength: -1}.Sum(data)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// serveHostile installs a hand-written server for ProtocolID on h: it reads
// requests in the real wire format and lets answer write whatever it likes.
// answer returning false resets the stream.
func serveHostile(h host.Host, answer func(s network.Stream, bw *bufio.Writer, req []cid.Cid) bool) {
	h.SetStreamHandler(ProtocolID, func(s network.Stream) {
		br := bufio.NewReader(s)
		bw := bufio.NewWriter(s)
		for {
			req, err := readRequest(br)
			if err != nil {
				s.Reset()
				return
			}
			if !answer(s, bw, req) {
				s.Reset()
				return
			}
			if err := bw.Flush(); err != nil {
				s.Reset()
				return
			}
		}
	})
}

// settleGoroutines polls until at most want goroutines run (or fails after 10 s).
func settleGoroutines(tb testing.TB, want int) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			tb.Fatalf("%d goroutines still running, want ≤ %d:\n%s", n, want, buf)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond until it holds (or fails after 10 s).
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// rawRequest sends one framed request on a fresh stream and returns the stream.
func rawRequest(tb testing.TB, from host.Host, to peer.AddrInfo, frame []byte) network.Stream {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := from.Connect(ctx, to); err != nil {
		tb.Fatal(err)
	}
	s, err := from.NewStream(ctx, to.ID, ProtocolID)
	if err != nil {
		tb.Fatal(err)
	}
	s.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := s.Write(frame); err != nil {
		tb.Fatal(err)
	}
	return s
}

func mustRequest(tb testing.TB, cs ...cid.Cid) []byte {
	tb.Helper()
	b, err := appendRequest(nil, cs)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}
