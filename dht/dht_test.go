package dht_test

import (
	"context"
	"crypto/rand"
	"errors"
	"net"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	ds "github.com/ipfs/go-datastore"
	dssync "github.com/ipfs/go-datastore/sync"
	kaddht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/core/routing"
	ma "github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"

	"github.com/igor-mesh/igor-node/dht"
)

var withTest = dht.WithValidator("test", versions{})

func blockCID(t testing.TB, data string) cid.Cid {
	t.Helper()
	sum, err := mh.Sum([]byte(data), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	return cid.NewCidV1(cid.Raw, sum)
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A node with no bootstrap peers is a mesh of one: it stores and serves
// records and provider records locally, and says that nobody else got them.
func TestOneNodeMesh(t *testing.T) {
	ctx := ctxT(t)
	n := newNode(t, withTest)

	if got, err := n.d.Bootstrap(ctx); got != 0 || err != nil {
		t.Fatalf("Bootstrap = %d, %v; want 0, nil", got, err)
	}
	if err := n.d.WaitReady(ctx, 0); err != nil {
		t.Fatal(err)
	}
	if s := n.d.RoutingTableSize(); s != 0 {
		t.Fatalf("routing table has %d peers", s)
	}

	key := dht.Key("test", "alone")
	if _, err := n.d.GetValue(ctx, key); !errors.Is(err, dht.ErrNotFound) || !errors.Is(err, routing.ErrNotFound) {
		t.Fatalf("GetValue before put: %v; want ErrNotFound and routing.ErrNotFound", err)
	}
	if err := n.d.PutValue(ctx, key, []byte("v5")); !errors.Is(err, dht.ErrNoPeers) {
		t.Fatalf("PutValue: %v; want ErrNoPeers", err)
	}
	if v, err := n.d.GetValue(ctx, key); err != nil || string(v) != "v5" {
		t.Fatalf("GetValue after put = %q, %v; want v5 (stored locally)", v, err)
	}
	// A lower version is refused locally: Select prefers the stored one.
	if err := n.d.PutValue(ctx, key, []byte("v3")); !errors.Is(err, dht.ErrStale) {
		t.Fatalf("PutValue(v3) over v5: %v; want ErrStale", err)
	}
	if err := n.d.PutValue(ctx, key, []byte("v6")); !errors.Is(err, dht.ErrNoPeers) {
		t.Fatalf("PutValue(v6): %v; want ErrNoPeers", err)
	}
	if v, _ := n.d.GetValue(ctx, key); string(v) != "v6" {
		t.Fatalf("GetValue = %q; want v6", v)
	}
	if err := n.d.PutValue(ctx, key, []byte("garbage")); !errors.Is(err, dht.ErrInvalidRecord) {
		t.Fatalf("PutValue(garbage): %v; want ErrInvalidRecord", err)
	}

	c := blockCID(t, "alone")
	if err := n.d.Provide(ctx, c); !errors.Is(err, dht.ErrNoPeers) {
		t.Fatalf("Provide: %v; want ErrNoPeers", err)
	}
	provs, err := n.d.FindProviders(ctx, c, 5)
	if err != nil || len(provs) != 1 || provs[0].ID != n.h.ID() {
		t.Fatalf("FindProviders = %v, %v; want this node only", provs, err)
	}
	if _, err := n.d.FindProviders(ctx, blockCID(t, "nobody"), 5); !errors.Is(err, dht.ErrNotFound) {
		t.Fatalf("FindProviders(unprovided): %v; want ErrNotFound", err)
	}
}

// A node given the whole mesh's list, itself included, does not dial itself.
func TestBootstrapSkipsSelf(t *testing.T) {
	h := newHost(t)
	var logs syncBuffer
	d, err := dht.New(h, withTest, dht.WithLogger(slogTo(&logs)), dht.WithBootstrapPeers(info(h)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if n, err := d.Bootstrap(ctxT(t)); n != 0 || err != nil || logs.String() != "" {
		t.Fatalf("Bootstrap = %d, %v; log %q; want 0, nil, nothing logged", n, err, logs.String())
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	h := newHost(t)
	noAddrs := peer.AddrInfo{ID: h.ID()}
	for _, tc := range []struct {
		name string
		opts []dht.Option
	}{
		{"empty namespace", []dht.Option{dht.WithValidator("", versions{})}},
		{"upper-case namespace", []dht.Option{dht.WithValidator("Agent", versions{})}},
		{"slash in namespace", []dht.Option{dht.WithValidator("a/b", versions{})}},
		{"nil validator", []dht.Option{dht.WithValidator("test", nil)}},
		{"namespace twice", []dht.Option{withTest, dht.WithValidator("test", anything{})}},
		{"zero query timeout", []dht.Option{dht.WithQueryTimeout(0)}},
		{"zero settle window", []dht.Option{dht.WithSettle(0)}},
		{"nil logger", []dht.Option{dht.WithLogger(nil)}},
		{"bootstrap peer without addresses", []dht.Option{dht.WithBootstrapPeers(noAddrs)}},
		{"bootstrap peer without ID", []dht.Option{dht.WithBootstrapPeers(peer.AddrInfo{Addrs: h.Addrs()})}},
		{"nil option", []dht.Option{nil}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := dht.New(h, tc.opts...)
			if !errors.Is(err, dht.ErrBadOption) {
				if d != nil {
					d.Close()
				}
				t.Fatalf("New: %v; want ErrBadOption", err)
			}
			t.Log(err)
		})
	}
	if _, err := dht.New(nil); !errors.Is(err, dht.ErrBadArgument) {
		t.Fatalf("New(nil host): %v; want ErrBadArgument", err)
	}
}

func TestBadArguments(t *testing.T) {
	ctx := ctxT(t)
	n := newNode(t, withTest)
	for _, key := range []string{
		"/other/x",      // not ours
		"/igor/agent/x", // namespace with no validator
		"/igor/test/",   // no name
		"/igor/test",    // no name
		"igor/test/x",   // not absolute
		"/igor/Test/x",  // bad namespace
		"",              // empty
		"/igor/test/" + strings.Repeat("x", dht.MaxKeySize), // too long
	} {
		err := n.d.PutValue(ctx, key, []byte("v1"))
		if !errors.Is(err, dht.ErrBadArgument) {
			t.Errorf("PutValue(%q): %v; want ErrBadArgument", key, err)
		}
		if _, err := n.d.GetValue(ctx, key); !errors.Is(err, dht.ErrBadArgument) {
			t.Errorf("GetValue(%q): %v; want ErrBadArgument", key, err)
		}
	}
	err := n.d.PutValue(ctx, "/other/x", []byte("v1"))
	if msg := err.Error(); !strings.Contains(msg, "/igor/<namespace>/<name>") {
		t.Errorf("error for /other/x does not say the expected form: %s", msg)
	}
	err = n.d.PutValue(ctx, "/igor/agent/x", []byte("v1"))
	if msg := err.Error(); !strings.Contains(msg, `"agent"`) || !strings.Contains(msg, "registered: test") {
		t.Errorf("error for an unregistered namespace does not name it and the registered ones: %s", msg)
	}

	big := append([]byte("v1"), make([]byte, dht.MaxRecordSize)...)
	if err := n.d.PutValue(ctx, dht.Key("test", "big"), big); !errors.Is(err, dht.ErrInvalidRecord) {
		t.Errorf("PutValue(oversize): %v; want ErrInvalidRecord", err)
	}
	if err := n.d.Provide(ctx, cid.Undef); !errors.Is(err, dht.ErrBadArgument) {
		t.Errorf("Provide(undef): %v", err)
	}
	if _, err := n.d.FindProviders(ctx, cid.Undef, 1); !errors.Is(err, dht.ErrBadArgument) {
		t.Errorf("FindProviders(undef): %v", err)
	}
	if _, err := n.d.FindProviders(ctx, blockCID(t, "x"), 0); !errors.Is(err, dht.ErrBadArgument) {
		t.Errorf("FindProviders(max 0): %v", err)
	}
	if err := n.d.WaitReady(ctx, -1); !errors.Is(err, dht.ErrBadArgument) {
		t.Errorf("WaitReady(-1): %v", err)
	}
}

// Six nodes in a star: a record put on node 0 is read from node 5 and every
// other node; a value the validator rejects is refused before it is stored.
func TestMeshPutGet(t *testing.T) {
	ctx := ctxT(t)
	nodes := newStar(t, 6, 5, withTest)

	key := dht.Key("test", "shared")
	if err := nodes[0].d.PutValue(ctx, key, []byte("v3")); err != nil {
		t.Fatal(err)
	}
	for i := len(nodes) - 1; i >= 0; i-- {
		v, err := nodes[i].d.GetValue(ctx, key)
		if err != nil || string(v) != "v3" {
			t.Fatalf("node %d: GetValue = %q, %v; want v3", i, v, err)
		}
	}
	if err := nodes[0].d.PutValue(ctx, key, []byte("v99x")); !errors.Is(err, dht.ErrInvalidRecord) {
		t.Fatalf("PutValue(garbage): %v; want ErrInvalidRecord", err)
	}
	if v, err := nodes[5].d.GetValue(ctx, key); err != nil || string(v) != "v3" {
		t.Fatalf("after refused put: GetValue = %q, %v; want v3", v, err)
	}
	if _, err := nodes[5].d.GetValue(ctx, dht.Key("test", "absent")); !errors.Is(err, dht.ErrNotFound) {
		t.Fatalf("GetValue(absent): %v; want ErrNotFound", err)
	}
}

// A peer whose validator accepts anything sends a value to peers whose
// validator rejects it: they see it, refuse it and store nothing, while a
// valid value from the same peer is stored. kad-dht's PutValue still reports
// success (best effort). The datastores are inspected directly, because
// GetValue re-validates what it reads and would hide a stored bad record.
func TestPeersRefuseInvalidRecords(t *testing.T) {
	ctx := ctxT(t)
	loose := newNode(t, dht.WithValidator("test", anything{}))
	type strict struct {
		node
		rec   *recording
		store ds.Batching
	}
	var strictNodes []strict
	var all = []node{loose}
	for range 4 {
		rec := &recording{inner: versions{}}
		store := dssync.MutexWrap(ds.NewMapDatastore())
		n := newNode(t, dht.WithValidator("test", rec), dht.WithDatastore(store),
			dht.WithBootstrapPeers(info(loose.h)))
		strictNodes = append(strictNodes, strict{n, rec, store})
		all = append(all, n)
	}
	waitReady(t, all, 4)

	garbage := []byte("garbage-7c1e")
	if err := loose.d.PutValue(ctx, dht.Key("test", "bad"), garbage); err != nil {
		t.Fatalf("PutValue on the permissive node: %v (kad-dht reports remote refusals as success)", err)
	}
	good := []byte("v4242")
	if err := loose.d.PutValue(ctx, dht.Key("test", "good"), good); err != nil {
		t.Fatal(err)
	}
	for i, s := range strictNodes {
		// The garbage reached the node: its validator was asked about it.
		eventually(t, 10*time.Second, "strict node never saw the garbage", func() bool { return s.rec.saw(garbage) })
		// The control: a valid record from the same peer is in the store.
		eventually(t, 10*time.Second, "strict node never stored the valid record", func() bool { return stores(t, s.store, good) })
		if stores(t, s.store, garbage) {
			t.Fatalf("strict node %d stored a record its validator rejects", i)
		}
		if _, err := s.d.GetValue(ctx, dht.Key("test", "bad")); !errors.Is(err, dht.ErrNotFound) {
			t.Fatalf("strict node %d: GetValue(bad): %v; want ErrNotFound", i, err)
		}
	}
}

// Two meshes hold different versions of a record; once joined, every node's
// GetValue returns the one Select prefers (v12 over v7: numerically, not by
// bytes), and the node holding the older one is corrected.
func TestSelectHighestAcrossPeers(t *testing.T) {
	ctx := ctxT(t)
	a := newStar(t, 3, 2, withTest)
	b := newStar(t, 3, 2, withTest)
	key := dht.Key("test", "versioned")
	if err := a[1].d.PutValue(ctx, key, []byte("v7")); err != nil {
		t.Fatal(err)
	}
	if err := b[1].d.PutValue(ctx, key, []byte("v12")); err != nil {
		t.Fatal(err)
	}
	if v, _ := a[2].d.GetValue(ctx, key); string(v) != "v7" {
		t.Fatalf("before joining, mesh a reads %q; want v7", v)
	}

	if err := a[0].h.Connect(ctx, info(b[0].h)); err != nil {
		t.Fatal(err)
	}
	all := append(slices.Clone(a), b...)
	waitReady(t, all, 5)
	for i, n := range all {
		v, err := n.d.GetValue(ctx, key)
		if err != nil || string(v) != "v12" {
			t.Fatalf("node %d: GetValue = %q, %v; want v12", i, v, err)
		}
	}
	// v7's holder was updated by the lookups: it now refuses v8 locally.
	eventually(t, 10*time.Second, "node holding v7 never got v12", func() bool {
		return errors.Is(a[1].d.PutValue(ctx, key, []byte("v8")), dht.ErrStale)
	})
}

func TestProvideFindProviders(t *testing.T) {
	ctx := ctxT(t)
	nodes := newStar(t, 6, 5, withTest)
	c := blockCID(t, "block one")
	for _, i := range []int{2, 3} {
		if err := nodes[i].d.Provide(ctx, c); err != nil {
			t.Fatalf("node %d: Provide: %v", i, err)
		}
	}
	want := []peer.ID{nodes[2].h.ID(), nodes[3].h.ID()}
	for i, n := range nodes {
		provs, err := n.d.FindProviders(ctx, c, 10)
		if err != nil {
			t.Fatalf("node %d: FindProviders: %v", i, err)
		}
		var got []peer.ID
		for _, p := range provs {
			got = append(got, p.ID)
			if p.ID != n.h.ID() && len(p.Addrs) == 0 {
				t.Errorf("node %d: provider %s has no addresses", i, p.ID)
			}
		}
		if len(got) != 2 || !slices.Contains(got, want[0]) || !slices.Contains(got, want[1]) {
			t.Fatalf("node %d: providers %v; want %v", i, got, want)
		}
	}
	one, err := nodes[5].d.FindProviders(ctx, c, 1)
	if err != nil || len(one) != 1 || !slices.Contains(want, one[0].ID) {
		t.Fatalf("FindProviders(max 1) = %v, %v", one, err)
	}
	if _, err := nodes[5].d.FindProviders(ctx, blockCID(t, "nobody has it"), 3); !errors.Is(err, dht.ErrNotFound) {
		t.Fatalf("FindProviders(unprovided): %v; want ErrNotFound", err)
	}
	// Keys outside /igor/<registered namespace>/ are refused with the form to use.
	err = nodes[0].d.PutValue(ctx, "/other/x", []byte("v1"))
	if !errors.Is(err, dht.ErrBadArgument) || !strings.Contains(err.Error(), "/igor/") {
		t.Fatalf("PutValue(/other/x): %v; want ErrBadArgument naming /igor/", err)
	}
}

// closedPort returns a loopback TCP address nothing listens on.
func closedPort(t *testing.T) ma.Multiaddr {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().(*net.TCPAddr)
	l.Close()
	m, err := ma.NewMultiaddr("/ip4/127.0.0.1/tcp/" + strconv.Itoa(addr.Port))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// silentPort returns a loopback TCP address that accepts connections and never
// answers, so a dial to it hangs in the handshake until its timeout.
func silentPort(t *testing.T) ma.Multiaddr {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); l.Close() })
	go func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
		}
	}()
	m, err := ma.NewMultiaddr("/ip4/127.0.0.1/tcp/" + strconv.Itoa(l.Addr().(*net.TCPAddr).Port))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func randomPeer(t *testing.T) peer.ID {
	_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// Unreachable bootstrap peers (a closed port, and a port that accepts but
// never answers) cost at most the query timeout, are logged with the address
// and the reason, and are not errors; the reachable one is used.
func TestBootstrapUnreachablePeers(t *testing.T) {
	ctx := ctxT(t)
	good := newNode(t, withTest)
	closed := peer.AddrInfo{ID: randomPeer(t), Addrs: []ma.Multiaddr{closedPort(t)}}
	silent := peer.AddrInfo{ID: randomPeer(t), Addrs: []ma.Multiaddr{silentPort(t)}}

	var logs syncBuffer
	const timeout = 500 * time.Millisecond
	h := newHost(t)
	d, err := dht.New(h, withTest, dht.WithQueryTimeout(timeout),
		dht.WithLogger(slogTo(&logs)),
		dht.WithBootstrapPeers(closed, silent, info(good.h)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })

	start := time.Now()
	n, err := d.Bootstrap(ctx)
	took := time.Since(start)
	if err != nil || n != 1 {
		t.Fatalf("Bootstrap = %d, %v; want 1, nil", n, err)
	}
	if took > timeout+2*time.Second {
		t.Fatalf("Bootstrap took %v with a %v dial timeout", took, timeout)
	}
	out := logs.String()
	for _, want := range []string{closed.Addrs[0].String(), silent.Addrs[0].String(), "unreachable", closed.ID.String()} {
		if !strings.Contains(out, want) {
			t.Errorf("log does not mention %q:\n%s", want, out)
		}
	}
	t.Logf("Bootstrap took %v; log:\n%s", took, out)

	if err := d.WaitReady(ctx, 1); err != nil {
		t.Fatal(err)
	}
	key := dht.Key("test", "after-bootstrap")
	if err := d.PutValue(ctx, key, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if v, err := good.d.GetValue(ctx, key); err != nil || string(v) != "v1" {
		t.Fatalf("GetValue on the good peer = %q, %v", v, err)
	}

	// Only unreachable peers: no error, nothing connected, and the node still
	// serves locally.
	lone, err := dht.New(newHost(t), withTest, dht.WithQueryTimeout(timeout),
		dht.WithLogger(slogTo(&logs)), dht.WithBootstrapPeers(closed))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lone.Close() })
	if n, err := lone.Bootstrap(ctx); n != 0 || err != nil {
		t.Fatalf("Bootstrap(unreachable only) = %d, %v; want 0, nil", n, err)
	}
	if err := lone.PutValue(ctx, key, []byte("v2")); !errors.Is(err, dht.ErrNoPeers) {
		t.Fatalf("PutValue: %v; want ErrNoPeers", err)
	}
	if v, err := lone.GetValue(ctx, key); err != nil || string(v) != "v2" {
		t.Fatalf("GetValue = %q, %v; want v2", v, err)
	}
}

// slowPeer is a raw kad-dht server on the /igor protocol that answers routing
// queries (so it enters routing tables) but holds every GET_VALUE and
// GET_PROVIDERS request until the test ends, like a peer that has hung.
// hit receives a value each time such a request arrives.
func slowPeer(t *testing.T) (peer.AddrInfo, <-chan struct{}) {
	h := newHost(t)
	hit := make(chan struct{}, 64)
	release := make(chan struct{})
	k, err := kaddht.New(h,
		kaddht.Mode(kaddht.ModeServer),
		kaddht.ProtocolPrefix(protocol.ID(dht.ProtocolPrefix)),
		kaddht.OnRequestHook(func(ctx context.Context, _ network.Stream, req *pb.Message) {
			switch req.GetType() {
			case pb.Message_GET_VALUE, pb.Message_GET_PROVIDERS:
				select {
				case hit <- struct{}{}:
				default:
				}
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { close(release); k.Close() })
	return info(h), hit
}

func TestContextHonoured(t *testing.T) {
	slow, hit := slowPeer(t)
	n := newNode(t, withTest, dht.WithBootstrapPeers(slow))
	waitReady(t, []node{n}, 1)
	key := dht.Key("test", "nowhere")

	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		start := time.Now()
		_, err := n.d.GetValue(ctx, key)
		if !errors.Is(err, context.Canceled) || time.Since(start) > time.Second {
			t.Fatalf("GetValue = %v after %v; want context.Canceled at once", err, time.Since(start))
		}
	})

	t.Run("cancelled while waiting on a hung peer", func(t *testing.T) {
		drain(hit)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { _, err := n.d.GetValue(ctx, key); done <- err }()
		<-hit // the request is held by the slow peer now
		start := time.Now()
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("GetValue: %v; want context.Canceled", err)
			}
			t.Logf("returned %v after cancel", time.Since(start))
		case <-time.After(2 * time.Second):
			t.Fatal("GetValue still blocked 2s after cancel")
		}
	})

	t.Run("query timeout", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		m := newNode(t, withTest, dht.WithQueryTimeout(timeout), dht.WithBootstrapPeers(slow))
		waitReady(t, []node{m}, 1)
		for _, op := range []struct {
			name string
			call func() error
		}{
			{"GetValue", func() error { _, err := m.d.GetValue(context.Background(), key); return err }},
			{"FindProviders", func() error {
				_, err := m.d.FindProviders(context.Background(), blockCID(t, "hung"), 1)
				return err
			}},
		} {
			start := time.Now()
			err := op.call()
			took := time.Since(start)
			if !errors.Is(err, context.DeadlineExceeded) || took < timeout || took > timeout+2*time.Second {
				t.Fatalf("%s = %v after %v; want DeadlineExceeded after ~%v", op.name, err, took, timeout)
			}
		}
	})

	t.Run("closed while waiting on a hung peer", func(t *testing.T) {
		m := newNode(t, withTest, dht.WithBootstrapPeers(slow))
		waitReady(t, []node{m}, 1)
		drain(hit)
		done := make(chan error, 1)
		go func() { _, err := m.d.GetValue(context.Background(), key); done <- err }()
		<-hit
		if err := m.d.Close(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if !errors.Is(err, dht.ErrClosed) {
				t.Fatalf("GetValue: %v; want ErrClosed", err)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("GetValue still blocked 2s after Close")
		}
	})
}

func drain(c <-chan struct{}) {
	for {
		select {
		case <-c:
		default:
			return
		}
	}
}

// Close is idempotent, every call after it returns ErrClosed, and closing all
// DHTs and hosts leaves no goroutine behind.
func TestCloseAndLeaks(t *testing.T) {
	ctx := ctxT(t)
	// Warm up: libp2p and kad-dht start a few process-wide goroutines once.
	warm := newNode(t, withTest)
	warm.d.Close()
	warm.h.Close()
	base := settle(runtime.NumGoroutine())

	// Closed by hand below (cleanup closes again, which is a no-op), so the
	// count can be checked in the test.
	nodes := newStar(t, 5, 4, withTest)
	key := dht.Key("test", "leak")
	c := blockCID(t, "leak")
	if err := nodes[0].d.PutValue(ctx, key, []byte("v1")); err != nil {
		t.Fatal(err)
	}
	if err := nodes[1].d.Provide(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[4].d.GetValue(ctx, key); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[4].d.FindProviders(ctx, c, 1); err != nil {
		t.Fatal(err)
	}
	during := runtime.NumGoroutine()

	d := nodes[4].d
	for i := range 2 {
		if err := d.Close(); err != nil {
			t.Fatalf("Close #%d: %v", i+1, err)
		}
	}
	for name, err := range map[string]error{
		"PutValue":    d.PutValue(ctx, key, []byte("v2")),
		"GetValue":    second(d.GetValue(ctx, key)),
		"Provide":     d.Provide(ctx, c),
		"FindProv":    second(d.FindProviders(ctx, c, 1)),
		"Bootstrap":   second(d.Bootstrap(ctx)),
		"WaitReady":   d.WaitReady(ctx, 0),
		"Close again": d.Close(),
	} {
		want := dht.ErrClosed
		if name == "Close again" {
			want = nil
		}
		if !errors.Is(err, want) {
			t.Errorf("%s after Close: %v; want %v", name, err, want)
		}
	}
	if s := d.RoutingTableSize(); s != 0 {
		t.Errorf("RoutingTableSize after Close = %d", s)
	}

	for _, n := range nodes {
		if err := n.d.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		if err := n.h.Close(); err != nil {
			t.Fatal(err)
		}
	}
	const margin = 3
	deadline := time.Now().Add(15 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for runtime.NumGoroutine() > base+margin {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before, %d with 5 nodes, %d after closing all (want ≤ %d):\n%s",
				base, during, runtime.NumGoroutine(), base+margin, buf[:runtime.Stack(buf, true)])
		}
		<-tick.C
	}
	t.Logf("goroutines: %d before, %d with 5 nodes, %d after closing", base, during, runtime.NumGoroutine())
}

func second[T any](_ T, err error) error { return err }

// settle waits until the goroutine count stops changing for a while and
// returns it.
func settle(n int) int {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	stable := 0
	for i := 0; i < 100 && stable < 5; i++ {
		<-tick.C
		m := runtime.NumGoroutine()
		if m == n {
			stable++
		} else {
			stable = 0
		}
		n = m
	}
	return n
}

// A read in a small mesh whose quorum cannot be reached any more, because a
// peer died: it returns the best value found within the settle window after
// the first one, instead of waiting for the lookup to give up on the dead
// peer (a QUIC dial to a killed process hangs until its handshake timeout;
// a testnet of 4 daemons with one killed saw every read time out at 10 s).
func TestGetValueDoesNotWaitForDeadPeers(t *testing.T) {
	ctx := ctxT(t)
	nodes := newStar(t, 4, 3, withTest, dht.WithQuorum(3))
	key := dht.Key("test", "shared")
	if err := nodes[0].d.PutValue(ctx, key, []byte("v7")); err != nil {
		t.Fatal(err)
	}
	if err := nodes[3].h.Close(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		for round := 0; round < 2; round++ {
			start := time.Now()
			v, err := nodes[i].d.GetValue(ctx, key)
			took := time.Since(start)
			if err != nil || string(v) != "v7" {
				t.Fatalf("node %d round %d: GetValue = %q, %v after %v; want v7", i, round, v, err, took)
			}
			if took > 2*time.Second {
				t.Fatalf("node %d round %d: GetValue took %v with a dead peer (settle window %v)", i, round, took, dht.DefaultSettle)
			}
		}
	}
}
