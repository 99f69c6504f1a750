package exchange

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/ipld/go-ipld-prime/datamodel"
	"github.com/ipld/go-ipld-prime/fluent/qp"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/igor-mesh/igor-node/contentstore"
)

// testDAG is a multi-chunk DAG: top → {P1, P2, A}; P1 → {A, small};
// P2 → {B}; A is a 10 MiB object (10 chunks), B a 3 MiB+5 object (4 chunks).
type testDAG struct {
	src          *contentstore.Store
	top, p1, p2  cid.Cid
	a, b, small  cid.Cid
	dataA, dataB []byte
	achunks      []cid.Cid // chunks of A, in order
	bchunks      []cid.Cid
	all          []cid.Cid
}

func buildDAG(t *testing.T) testDAG {
	t.Helper()
	d := testDAG{src: newStore(t)}
	var err error
	d.dataA = randBytes(t, 10<<20)
	d.dataB = randBytes(t, 3<<20+5)
	if d.a, err = d.src.PutObjectBytes(d.dataA); err != nil {
		t.Fatal(err)
	}
	if d.b, err = d.src.PutObjectBytes(d.dataB); err != nil {
		t.Fatal(err)
	}
	if d.small, err = d.src.Put(cid.Raw, randBytes(t, 1000)); err != nil {
		t.Fatal(err)
	}
	d.p1 = putNode(t, d.src, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "name", qp.String("a"))
		qp.MapEntry(ma, "obj", link(d.a))
		qp.MapEntry(ma, "note", link(d.small))
	}, 3)
	d.p2 = putNode(t, d.src, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "name", qp.String("b"))
		qp.MapEntry(ma, "obj", link(d.b))
	}, 2)
	d.top = putNode(t, d.src, func(ma datamodel.MapAssembler) {
		qp.MapEntry(ma, "kids", qp.List(2, func(la datamodel.ListAssembler) {
			qp.ListEntry(la, link(d.p1))
			qp.ListEntry(la, link(d.p2))
		}))
		qp.MapEntry(ma, "again", link(d.a)) // a second path to A: fetched once
	}, 2)
	ac, err := d.src.ObjectCIDs(d.a)
	if err != nil {
		t.Fatal(err)
	}
	bc, err := d.src.ObjectCIDs(d.b)
	if err != nil {
		t.Fatal(err)
	}
	d.achunks, d.bchunks = ac[1:], bc[1:]
	if len(d.achunks) != 10 || len(d.bchunks) != 4 {
		t.Fatalf("chunks: A %d, B %d", len(d.achunks), len(d.bchunks))
	}
	if d.all, err = d.src.Reachable(t.Context(), []cid.Cid{d.top}); err != nil {
		t.Fatal(err)
	}
	if len(d.all) != 20 { // top, p1, p2, a, b, small, 10 + 4 chunks
		t.Fatalf("DAG has %d blocks, want 20", len(d.all))
	}
	return d
}

// Five hosts: host 0 fetches a DAG whose blocks are split over hosts 1-3
// (some only on 2, some only on 3); host 4 has nothing. Host 0 is told only
// about hosts 4 and 1 and must find 2 and 3 through the provider table.
func TestFetchDAGAcrossProviders(t *testing.T) {
	d := buildDAG(t)
	provs := &providerMap{}
	var n [5]testNode
	for i := range n {
		var opts []Option
		if i == 0 {
			opts = append(opts, WithProviders(provs))
		}
		n[i] = newNode(t, opts...)
	}
	give := func(i int, cs ...cid.Cid) {
		copyBlocks(t, d.src, n[i].st, cs...)
		for _, c := range cs {
			provs.add(c, n[i].info())
		}
	}
	give(1, d.top, d.p1, d.p2, d.small)
	give(2, d.a, d.b)
	give(3, d.b)
	for i, c := range d.achunks {
		give(2+i%2, c) // even chunks only on host 2, odd only on host 3
	}
	give(3, d.bchunks...) // B's chunks only on host 3

	var (
		mu                  sync.Mutex
		lastDone, lastKnown int
		lastBytes           int64
		calls               int
	)
	stats, err := n[0].ex.FetchDAG(t.Context(), d.top, FetchOptions{
		From: []peer.AddrInfo{n[4].info(), n[1].info()},
		Progress: func(done, known int, bytes int64) {
			mu.Lock()
			defer mu.Unlock()
			if done < lastDone || known < lastKnown || bytes < lastBytes || done > known {
				t.Errorf("progress went backwards or overshot: %d/%d %d after %d/%d %d", done, known, bytes, lastDone, lastKnown, lastBytes)
			}
			lastDone, lastKnown, lastBytes = done, known, bytes
			calls++
		},
	})
	if err != nil {
		t.Fatalf("FetchDAG: %v", err)
	}
	t.Logf("stats: %+v", stats)
	if stats.Blocks != 20 || stats.Fetched != 20 || stats.Present != 0 || len(stats.BadPeers) != 0 {
		t.Errorf("stats %+v: want 20 blocks, all fetched, no bad peers", stats)
	}
	var total int64
	for _, c := range d.all {
		data, err := n[0].st.Get(c) // re-hashes
		if err != nil {
			t.Fatalf("block %s after fetch: %v", c, err)
		}
		total += int64(len(data))
	}
	if stats.Bytes != total || lastBytes != total || lastDone != 20 || lastKnown != 20 || calls != 20 {
		t.Errorf("bytes %d (progress %d), want %d; final progress %d/%d after %d calls, want 20/20 after 20",
			stats.Bytes, lastBytes, total, lastDone, lastKnown, calls)
	}
	if stats.Peers[n[1].h.ID()] != 4 || stats.Peers[n[2].h.ID()] == 0 || stats.Peers[n[3].h.ID()] < 9 || stats.Peers[n[4].h.ID()] != 0 {
		t.Errorf("blocks per peer %v: want 4 from host 1, some from 2, ≥9 from 3, none from 4", stats.Peers)
	}
	for _, o := range []struct {
		root cid.Cid
		want []byte
	}{{d.a, d.dataA}, {d.b, d.dataB}} {
		got, err := n[0].st.ReadObject(o.root, 1<<30)
		if err != nil || !bytes.Equal(got, o.want) {
			t.Fatalf("object %s: %d bytes, err %v; want the original %d bytes", o.root, len(got), err, len(o.want))
		}
	}

	// Again: everything is present, nothing goes over the network.
	calls0 := provs.calls
	again, err := n[0].ex.FetchDAG(t.Context(), d.top, FetchOptions{})
	if err != nil || again.Fetched != 0 || again.Present != 20 || again.Blocks != 20 || provs.calls != calls0 {
		t.Errorf("second FetchDAG: %+v, %v, %d lookups; want all 20 present, none fetched, no lookups", again, err, provs.calls-calls0)
	}
}

// A partial DAG: blocks already present are skipped but their links are
// still walked, so the missing chunks below a present root are fetched.
func TestFetchDAGCompletesPartialDAG(t *testing.T) {
	d := buildDAG(t)
	server, client := newNode(t), newNode(t)
	copyBlocks(t, d.src, server.st, d.all...)
	// The client has top, p1, A's root and A's first three chunks.
	copyBlocks(t, d.src, client.st, d.top, d.p1, d.a)
	copyBlocks(t, d.src, client.st, d.achunks[:3]...)
	stats, err := client.ex.FetchDAG(t.Context(), d.top, FetchOptions{From: []peer.AddrInfo{server.info()}})
	if err != nil {
		t.Fatal(err)
	}
	if stats.Present != 6 || stats.Fetched != 14 || stats.Blocks != 20 {
		t.Errorf("stats %+v: want 6 present, 14 fetched of 20", stats)
	}
	if got, err := client.st.ReadObject(d.a, 1<<30); err != nil || !bytes.Equal(got, d.dataA) {
		t.Fatalf("object A: %v", err)
	}
}

func TestFetchSingleBlock(t *testing.T) {
	server, client := newNode(t), newNode(t)
	data := randBytes(t, 300<<10)
	c, err := server.st.Put(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.ex.Fetch(t.Context(), c, server.info())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Fetch: %d bytes, %v", len(got), err)
	}
	if stored, err := client.st.Get(c); err != nil || !bytes.Equal(stored, data) {
		t.Fatalf("stored copy: %v", err)
	}
	// From the store now: works with no peer at all.
	if got, err := client.ex.Fetch(t.Context(), c); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Fetch of a stored block: %v", err)
	}
	// A block nobody has.
	missing := rawCID(t, []byte("nobody has this"))
	_, err = client.ex.Fetch(t.Context(), missing, server.info())
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), missing.String()) || !strings.Contains(err.Error(), server.h.ID().String()) {
		t.Fatalf("Fetch of a missing block: %v; want ErrNotFound naming the CID and the peer", err)
	}
	_, err = client.ex.Fetch(t.Context(), missing)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "no provider known") {
		t.Fatalf("Fetch with no peers: %v", err)
	}
}

// Many concurrent fetches from one peer: the client-side per-peer stream
// cap keeps them within the server's limit, so none is refused.
func TestConcurrentFetchesFromOnePeer(t *testing.T) {
	server, client := newNode(t), newNode(t)
	var cs []cid.Cid
	for range 12 {
		c, err := server.st.Put(cid.Raw, randBytes(t, 64<<10))
		if err != nil {
			t.Fatal(err)
		}
		cs = append(cs, c)
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(cs))
	for _, c := range cs {
		wg.Go(func() {
			_, err := client.ex.Fetch(t.Context(), c, server.info())
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

func TestFetchDAGLimits(t *testing.T) {
	d := buildDAG(t)
	server, client := newNode(t), newNode(t)
	copyBlocks(t, d.src, server.st, d.all...)
	from := []peer.AddrInfo{server.info()}

	_, err := client.ex.FetchDAG(t.Context(), d.top, FetchOptions{From: from, MaxBlocks: 5})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxBlocks") {
		t.Errorf("MaxBlocks 5: %v", err)
	}
	stats, err := client.ex.FetchDAG(t.Context(), d.a, FetchOptions{From: from, MaxBytes: 2 << 20})
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "MaxBytes") {
		t.Errorf("MaxBytes 2 MiB: %v", err)
	}
	if stats.Bytes > 2<<20 {
		t.Errorf("stored %d bytes beyond MaxBytes", stats.Bytes)
	}
	if _, err := client.ex.FetchDAG(t.Context(), d.top, FetchOptions{MaxBlocks: -1}); !errors.Is(err, ErrBadArgument) {
		t.Errorf("MaxBlocks -1: %v", err)
	}
	if _, err := client.ex.FetchDAG(t.Context(), cid.Undef, FetchOptions{}); !errors.Is(err, ErrBadArgument) {
		t.Errorf("undefined root: %v", err)
	}
	if _, err := client.ex.FetchDAG(t.Context(), d.top, FetchOptions{From: []peer.AddrInfo{{}}}); !errors.Is(err, ErrBadArgument) {
		t.Errorf("From without peer ID: %v", err)
	}
}

func TestOptionsValidated(t *testing.T) {
	h, st := newHost(t), newStore(t)
	for name, opt := range map[string]Option{
		"nil option":          nil,
		"nil logger":          WithLogger(nil),
		"nil providers":       WithProviders(nil),
		"nil links":           WithLinks(nil),
		"zero in flight":      WithMaxInFlight(0),
		"huge in flight":      WithMaxInFlight(1 << 20),
		"negative timeout":    WithTimeouts(Timeouts{Idle: -time.Second}),
		"zero per peer":       WithStreamLimits(0, 10),
		"total below perpeer": WithStreamLimits(4, 2),
	} {
		if _, err := New(h, st, opt); !errors.Is(err, ErrBadArgument) {
			t.Errorf("%s: %v, want ErrBadArgument", name, err)
		}
	}
	if _, err := New(nil, st); !errors.Is(err, ErrBadArgument) {
		t.Errorf("nil host: %v", err)
	}
	if _, err := New(h, nil); !errors.Is(err, ErrBadArgument) {
		t.Errorf("nil store: %v", err)
	}
}

func TestCloseStopsFetchesAndServing(t *testing.T) {
	stall := newHost(t)
	got := make(chan struct{}, 1)
	serveHostile(stall, func(s network.Stream, _ *bufio.Writer, _ []cid.Cid) bool {
		select {
		case got <- struct{}{}:
		default:
		}
		s.Read(make([]byte, 1)) // never answer; returns when reset
		return false
	})
	client := newNode(t)
	c := rawCID(t, []byte("x"))
	errc := make(chan error, 1)
	go func() {
		_, err := client.ex.FetchDAG(context.Background(), c, FetchOptions{From: []peer.AddrInfo{info(stall)}})
		errc <- err
	}()
	<-got
	start := time.Now()
	if err := client.ex.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("FetchDAG during Close: %v, want ErrClosed", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := client.ex.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := client.ex.Fetch(t.Context(), c); !errors.Is(err, ErrClosed) {
		t.Errorf("Fetch after Close: %v", err)
	}
	// The handler is gone: the protocol is no longer spoken.
	other := newHost(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := other.Connect(ctx, client.info()); err != nil {
		t.Fatal(err)
	}
	s, err := other.NewStream(ctx, client.h.ID(), ProtocolID)
	if err == nil {
		_, err = s.Write(mustRequest(t, c))
		if err == nil {
			_, err = s.Read(make([]byte, 1))
		}
	}
	if err == nil {
		t.Error("a closed Exchange still answers block streams")
	}
}

// racyStore is a real store whose block c arrives (as a push would store
// it) between Fetch's look in the store and its session's own.
type racyStore struct {
	Blockstore
	c    cid.Cid
	data []byte
	once sync.Once
}

func (r *racyStore) Has(c cid.Cid) (bool, error) {
	if c == r.c {
		first := false
		r.once.Do(func() { first = true })
		if first {
			// Not here yet at the first look; stored right after it.
			if err := r.Blockstore.PutBlock(c, r.data); err != nil {
				return false, err
			}
			return false, nil
		}
	}
	return r.Blockstore.Has(c)
}

// TestFetchOfABlockStoredMeanwhile: a block stored by someone else while
// Fetch looks for it is returned whole — not as an empty block (a custody
// member's lineage walk failed on "empty input" after a restart, when the
// holder's push raced its fetch).
func TestFetchOfABlockStoredMeanwhile(t *testing.T) {
	server := newNode(t)
	data := randBytes(t, 1000)
	c, err := server.st.Put(cid.Raw, data)
	if err != nil {
		t.Fatal(err)
	}
	rs := &racyStore{Blockstore: newStore(t), c: c, data: data}
	ex, err := New(newHost(t), rs, WithLogger(testLogger(t)))
	if err != nil {
		t.Fatal(err)
	}
	defer ex.Close()
	got, err := ex.Fetch(t.Context(), c, server.info())
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Fetch: %d bytes (want %d), %v", len(got), len(data), err)
	}
}
