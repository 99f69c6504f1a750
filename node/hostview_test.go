package node

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// fastView gossips every 200 ms and forgets a host after 1 s of silence,
// so propagation and expiry show within a short test.
var fastView = HostViewOptions{Republish: 200 * time.Millisecond, TTL: time.Second, PerHost: 20 * time.Millisecond}

// viewMeshes starts n hosting meshes with the host view options given,
// bootstrapped from the first.
func viewMeshes(tb testing.TB, n int, opts HostViewOptions) []*Mesh {
	tb.Helper()
	var ms []*Mesh
	for i := range n {
		var boot *Mesh
		if i > 0 {
			boot = ms[0]
		}
		ms = append(ms, viewMesh(tb, opts, boot))
	}
	return ms
}

func viewMesh(tb testing.TB, opts HostViewOptions, boot *Mesh) *Mesh {
	tb.Helper()
	cfg := MeshConfig{Home: tb.TempDir(), Slots: 8, Price: 1000, Logger: quietLogger(), HostView: opts,
		Run: hosting.RunOptions{TickInterval: 20 * time.Millisecond, CheckpointEvery: 3, Price: -1}}
	if boot != nil {
		cfg.Bootstrap = []string{boot.PeerAddrs()[0]}
	}
	m, err := StartMesh(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { m.Close() })
	return m
}

// viewRecord is the record of peer p in m's view (nil if none or left out).
func viewRecord(m *Mesh, p string) *agents.HostRecord {
	hs, _ := m.view.hosts(time.Now())
	if i := slices.IndexFunc(hs, func(h *agents.HostRecord) bool { return h.Peer == p }); i >= 0 {
		return hs[i]
	}
	return nil
}

func waitViews(tb testing.TB, ms []*Mesh, d time.Duration) {
	tb.Helper()
	eventually(tb, "every host view to hold every other node", d, func() error {
		for _, m := range ms {
			for _, o := range ms {
				if o != m && viewRecord(m, o.PeerID()) == nil {
					return fmt.Errorf("%s does not see %s", m.PeerID(), o.PeerID())
				}
			}
		}
		return nil
	})
}

func walks(ms []*Mesh) (n int64) {
	for _, m := range ms {
		n += m.walks.Load()
	}
	return n
}

// TestHostViewFollowsTheMesh: a new host's record reaches the others'
// views by gossip (no DHT enumeration on their side), a drained host's
// change of record reaches them, and a stopped host is left out at once
// and forgotten within the TTL.
func TestHostViewFollowsTheMesh(t *testing.T) {
	ms := viewMeshes(t, 3, fastView)
	waitViews(t, ms, 30*time.Second)
	before := walks(ms)
	start := time.Now()
	fresh := viewMesh(t, fastView, ms[0])
	eventually(t, "the new host in every view", 10*time.Second, func() error {
		for _, m := range ms {
			if viewRecord(m, fresh.PeerID()) == nil {
				return fmt.Errorf("%s does not see it", m.PeerID())
			}
		}
		return nil
	})
	t.Logf("a new host reached every view %v after it started", time.Since(start).Round(time.Millisecond))
	if n := walks(ms) - before; n != 0 {
		t.Fatalf("the running nodes enumerated the DHT %d times; the new host must arrive by gossip", n)
	}
	waitViews(t, append(slices.Clone(ms), fresh), 10*time.Second) // and the new node sees them all

	// Drained: the record changes (no free slot) and the views follow.
	if err := fresh.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the drained host's record in every view", 5*time.Second, func() error {
		for _, m := range ms {
			if r := viewRecord(m, fresh.PeerID()); r == nil || r.FreeSlots != 0 {
				return fmt.Errorf("%s sees %+v", m.PeerID(), r)
			}
		}
		return nil
	})

	// Stopped: left out at once (its connections closed), gone after TTL.
	fresh.Close()
	eventually(t, "the stopped host left out of placement", 2*time.Second, func() error {
		for _, m := range ms {
			if viewRecord(m, fresh.PeerID()) != nil {
				return fmt.Errorf("%s still places on it", m.PeerID())
			}
		}
		return nil
	})
	id := fresh.Host.ID()
	eventually(t, "the stopped host's entry to expire", fastView.TTL+3*time.Second, func() error {
		for _, m := range ms {
			m.view.mu.Lock()
			_, ok := m.view.entries[id]
			m.view.mu.Unlock()
			if ok {
				return fmt.Errorf("%s still holds it", m.PeerID())
			}
		}
		return nil
	})
	if n := walks(ms) - before; n != 0 {
		t.Fatalf("%d DHT enumerations while the view was warm", n)
	}
}

// TestPublishUsesHostView: with the views warm, publishing enumerates no
// hosts through the DHT, and a publication takes well under a second.
func TestPublishUsesHostView(t *testing.T) {
	ms := viewMeshes(t, 4, HostViewOptions{})
	waitViews(t, ms, 30*time.Second)
	wasm, man := testagents.Bytes(t, "counter")
	ctx := context.Background()
	first, err := ms[0].Publish(ctx, wasm, man, 1_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	mod, err := cid.Decode(first.Module)
	if err != nil {
		t.Fatal(err)
	}
	before := walks(ms)
	n := 8
	if testing.Short() {
		n = 4
	}
	start := time.Now()
	for range n {
		res, err := ms[0].PublishModule(ctx, mod, man, 1_000_000, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Members) != 3 || res.Holder == "" {
			t.Fatalf("placed %+v", res)
		}
	}
	took := time.Since(start)
	t.Logf("%d publications in %v (%v each) with the view warm", n, took.Round(time.Millisecond), (took / time.Duration(n)).Round(time.Millisecond))
	if w := walks(ms) - before; w != 0 {
		t.Fatalf("%d DHT enumerations of the hosts while publishing; the view is warm", w)
	}
	if limit := time.Duration(n) * 3 * time.Second; took > limit && !testing.Short() {
		t.Fatalf("%d publications took %v; want under %v", n, took, limit)
	}
}

// rogue is a libp2p host speaking the mesh's GossipSub on the host topic,
// with no validator of its own: it publishes whatever it is given.
type rogue struct {
	key   ed25519.PrivateKey
	topic *pubsub.Topic
	h     host.Host
}

func newRogue(tb testing.TB, to *Mesh, opts ...pubsub.Option) *rogue {
	tb.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	h, err := NewHost(key, []string{"/ip4/127.0.0.1/tcp/0"})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { h.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(cancel)
	feature := func(f pubsub.GossipSubFeature, p protocol.ID) bool {
		return p == HostGossipProtocol && pubsub.GossipSubDefaultFeatures(f, pubsub.GossipSubID_v12)
	}
	ps, err := pubsub.NewGossipSub(ctx, h, append([]pubsub.Option{pubsub.WithGossipSubProtocols([]protocol.ID{HostGossipProtocol}, feature)}, opts...)...)
	if err != nil {
		tb.Fatal(err)
	}
	topic, err := ps.Join(HostTopic)
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.Connect(ctx, meshInfo(to)); err != nil {
		tb.Fatal(err)
	}
	eventually(tb, "the rogue to see the node on the topic", 10*time.Second, func() error {
		if !slices.Contains(topic.ListPeers(), to.Host.ID()) {
			return errors.New("not yet")
		}
		return nil
	})
	return &rogue{key: key, topic: topic, h: h}
}

func (r *rogue) publish(tb testing.TB, data []byte) {
	tb.Helper()
	if err := r.topic.Publish(context.Background(), data); err != nil {
		tb.Fatal(err)
	}
}

// signedHostRecord is a valid host record of key's peer, issued at issued.
func signedHostRecord(tb testing.TB, key ed25519.PrivateKey, issued time.Time, validFor time.Duration) *agents.HostRecord {
	tb.Helper()
	r := &agents.HostRecord{Peer: agents.PeerID(key.Public().(ed25519.PublicKey)), Addrs: []string{"/ip4/127.0.0.1/tcp/9"},
		Slots: 2, FreeSlots: 2, MemoryBytes: 1 << 30, FreeMemoryBytes: 1 << 30, Price: 1, Version: Version,
		Seq: uint64(issued.UnixNano()), Issued: issued.UnixNano(), Expires: issued.Add(validFor).UnixNano()}
	if err := r.Sign(key); err != nil {
		tb.Fatal(err)
	}
	return r
}

func encodeRecord(tb testing.TB, r *agents.HostRecord) []byte {
	tb.Helper()
	data, err := r.Encode()
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

// TestHostViewRefusesBadMessages: undecodable, oversized, badly signed,
// stale and other peers' records sent by a hostile peer are refused by the
// validator (counted, logged, never a panic) and never enter the view; a
// message without GossipSub's signature is dropped before it; the rogue's
// own valid record is the only one that enters.
func TestHostViewRefusesBadMessages(t *testing.T) {
	ms := viewMeshes(t, 2, fastView)
	waitViews(t, ms, 30*time.Second)
	m := ms[0]
	r := newRogue(t, m)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	bad := badHostRecords(t, r.key, other, ms[1])
	before := m.view.rejected.Load()
	for _, data := range bad {
		r.publish(t, data)
	}
	eventually(t, "every bad message refused", 10*time.Second, func() error {
		if n := m.view.rejected.Load() - before; n < int64(len(bad)) {
			return fmt.Errorf("%d of %d refused", n, len(bad))
		}
		return nil
	})
	unsigned := newRogue(t, m, pubsub.WithMessageSignaturePolicy(pubsub.StrictNoSign))
	unsigned.publish(t, encodeRecord(t, signedHostRecord(t, unsigned.key, time.Now(), time.Minute)))
	good := signedHostRecord(t, r.key, time.Now(), time.Minute)
	r.publish(t, encodeRecord(t, good))
	eventually(t, "the rogue's own valid record in the view", 10*time.Second, func() error {
		if viewRecord(m, good.Peer) == nil {
			return errors.New("not yet")
		}
		return nil
	})
	for _, p := range []string{agents.PeerID(other.Public().(ed25519.PublicKey)), agents.PeerID(unsigned.key.Public().(ed25519.PublicKey))} {
		if viewRecord(m, p) != nil {
			t.Fatalf("a refused record of %s entered the view", p)
		}
	}
	if rec := viewRecord(m, ms[1].PeerID()); rec == nil || rec.Seq == 0 {
		t.Fatalf("the honest peer's record is gone: %+v", rec)
	}
}

// TestHostViewJoinSendsRecordsDirectly: with gossip rounds far apart
// (Republish 1 h), a node that joins learns every host's record, and every
// host learns its record, within seconds — straight over
// HostRecordProtocol, not by re-gossiping to the whole mesh.
func TestHostViewJoinSendsRecordsDirectly(t *testing.T) {
	slow := HostViewOptions{Republish: time.Hour, MaxAge: 2 * time.Hour}
	ms := viewMeshes(t, 3, slow)
	waitViews(t, ms, 30*time.Second)
	sent := func() (n uint64) {
		for _, m := range ms {
			n += m.view.published.Load()
		}
		return n
	}
	before := sent()
	start := time.Now()
	fresh := viewMesh(t, slow, ms[0])
	waitViews(t, append(slices.Clone(ms), fresh), 10*time.Second)
	t.Logf("a new host and the mesh knew each other %v after it started", time.Since(start).Round(time.Millisecond))
	if n := sent() - before; n != 0 {
		t.Fatalf("the running hosts gossiped %d records to the whole mesh for one join; want their records sent to the newcomer alone", n)
	}
}

// TestHostViewRefusesBadDirectRecords: a record sent straight to a node
// must be the sender's own, valid and fresh, as a gossiped one.
func TestHostViewRefusesBadDirectRecords(t *testing.T) {
	ms := viewMeshes(t, 2, fastView)
	waitViews(t, ms, 30*time.Second)
	m := ms[0]
	r := newRogue(t, m)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	bad := badHostRecords(t, r.key, other, ms[1])
	send := func(data []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s, err := r.h.NewStream(ctx, m.Host.ID(), HostRecordProtocol)
		if err != nil {
			t.Fatal(err)
		}
		s.Write(data)
		s.CloseWrite()
		io.Copy(io.Discard, s)
		s.Close()
	}
	// One at a time, slower than directRecordEvery, so each is read and
	// refused for what it is.
	for name, data := range bad {
		before := m.view.rejected.Load()
		send(data)
		eventually(t, "the record refused: "+name, 5*time.Second, func() error {
			if m.view.rejected.Load() == before {
				return errors.New("not yet")
			}
			return nil
		})
		time.Sleep(directRecordEvery)
	}
	if viewRecord(m, agents.PeerID(other.Public().(ed25519.PublicKey))) != nil {
		t.Fatal("a record sent by another peer entered the view")
	}
	// A valid record right after another is refused unread; once the
	// sender has waited, it is taken.
	good := signedHostRecord(t, r.key, time.Now(), time.Minute)
	send(encodeRecord(t, good))
	before := m.view.rejected.Load()
	send(encodeRecord(t, signedHostRecord(t, r.key, time.Now(), time.Minute)))
	eventually(t, "a second record within directRecordEvery refused", 5*time.Second, func() error {
		if m.view.rejected.Load() == before {
			return errors.New("not yet")
		}
		return nil
	})
	eventually(t, "the sender's own valid record in the view", 5*time.Second, func() error {
		if viewRecord(m, good.Peer) == nil {
			return errors.New("not yet")
		}
		return nil
	})
}

// badHostRecords are the payloads a host view refuses from a sender whose
// key is own, gossiped or sent directly: other's and honest's records
// (valid, but not the sender's), and the sender's own spoiled ones.
func badHostRecords(tb testing.TB, own, other ed25519.PrivateKey, honest *Mesh) map[string][]byte {
	now := time.Now()
	tampered := signedHostRecord(tb, own, now, time.Minute)
	tampered.FreeSlots = 1 // after signing
	return map[string][]byte{
		"garbage":     []byte("not a host record"),
		"oversized":   bytes.Repeat([]byte{0xa1}, agents.MaxRecordBytes+1),
		"other peer":  encodeRecord(tb, signedHostRecord(tb, other, now, time.Minute)),
		"bad sig":     encodeRecord(tb, tampered),
		"too old":     encodeRecord(tb, signedHostRecord(tb, own, now.Add(-10*time.Minute), time.Hour)),
		"future":      encodeRecord(tb, signedHostRecord(tb, own, now.Add(time.Hour), time.Hour)),
		"peer record": encodeRecord(tb, mustHostRecord(tb, honest)), // another's record passed on as one's own
	}
}

func mustHostRecord(tb testing.TB, m *Mesh) *agents.HostRecord {
	tb.Helper()
	r, err := m.HostRecord()
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// TestCheckHostGossip: each reason a message is refused, by its sentinel.
func TestCheckHostGossip(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	author, err := peer.Decode(agents.PeerID(key.Public().(ed25519.PublicKey)))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tampered := signedHostRecord(t, key, now, time.Minute)
	tampered.Price = 2
	for _, tc := range []struct {
		name string
		data []byte
		want error
	}{
		{"valid", encodeRecord(t, signedHostRecord(t, key, now, time.Minute)), nil},
		{"clock a minute behind", encodeRecord(t, signedHostRecord(t, key, now.Add(-time.Minute), 5*time.Minute)), nil},
		{"oversized", make([]byte, agents.MaxRecordBytes+1), ErrHostGossipTooLarge},
		{"empty", nil, ErrHostGossipMalformed},
		{"garbage", []byte{0xff, 0x00, 0x13}, ErrHostGossipMalformed},
		{"bad signature", encodeRecord(t, tampered), ErrHostGossipMalformed},
		{"another peer's record", encodeRecord(t, signedHostRecord(t, other, now, time.Minute)), ErrHostGossipWrongPeer},
		{"expired", encodeRecord(t, signedHostRecord(t, key, now.Add(-30*time.Second), 10*time.Second)), ErrHostGossipStale},
		{"issued too long ago", encodeRecord(t, signedHostRecord(t, key, now.Add(-3*time.Minute), time.Hour)), ErrHostGossipStale},
		{"issued in the future", encodeRecord(t, signedHostRecord(t, key, now.Add(agents.MaxClockSkew+time.Minute), time.Hour)), ErrHostGossipStale},
	} {
		r, err := checkHostGossip(tc.data, author, now, 2*time.Minute, nil)
		if tc.want == nil {
			if err != nil || r == nil || r.Peer != author.String() {
				t.Errorf("%s: %v", tc.name, err)
			}
			continue
		}
		if !errors.Is(err, tc.want) || !errors.Is(err, ErrHostGossip) || r != nil {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestHostViewOptions: defaults, and values out of range refused.
func TestHostViewOptions(t *testing.T) {
	o, err := HostViewOptions{}.withDefaults()
	if err != nil || o != DefaultHostViewOptions() {
		t.Fatalf("defaults %+v, %v; want %+v", o, err, DefaultHostViewOptions())
	}
	if o, err := (HostViewOptions{Republish: time.Second}).withDefaults(); err != nil || o.TTL != 3500*time.Millisecond {
		t.Fatalf("TTL follows Republish: %+v, %v", o, err)
	}
	for _, bad := range []HostViewOptions{
		{Republish: -1},
		{Republish: time.Second, TTL: time.Second},
		{Republish: time.Minute, MaxAge: time.Second},
		{MaxEntries: -1},
	} {
		if _, err := bad.withDefaults(); !errors.Is(err, ErrBadHostViewOptions) {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// TestHostViewRoundsGrowWithTheMesh: the unchanged record's gossip round
// and the entries' lifetime stretch with the view's size (PerHost), so a
// node's share of the mesh's gossip does not grow with the mesh; small
// meshes keep Republish and TTL; MaxAge caps the round.
func TestHostViewRoundsGrowWithTheMesh(t *testing.T) {
	opts, err := HostViewOptions{}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		hosts      int
		every, ttl time.Duration
	}{
		{0, 10 * time.Second, 35 * time.Second},
		{9, 10 * time.Second, 35 * time.Second},
		{30, 30 * time.Second, 105 * time.Second},
		{50, 50 * time.Second, 175 * time.Second},
		{1000, 2 * time.Minute, 7 * time.Minute},
	} {
		v := &hostView{opts: opts, entries: map[peer.ID]*viewEntry{}}
		for i := range c.hosts {
			v.entries[peer.ID(fmt.Sprint(i))] = &viewEntry{}
		}
		if every, ttl := v.republishLocked(), v.ttlLocked(); every != c.every || ttl != c.ttl {
			t.Errorf("%d hosts: every %v, TTL %v; want %v, %v", c.hosts, every, ttl, c.every, c.ttl)
		}
	}
	opts.PerHost = -1
	v := &hostView{opts: opts, entries: map[peer.ID]*viewEntry{}}
	for i := range 50 {
		v.entries[peer.ID(fmt.Sprint(i))] = &viewEntry{}
	}
	if every, ttl := v.republishLocked(), v.ttlLocked(); every != 10*time.Second || ttl != 35*time.Second {
		t.Errorf("PerHost < 0: every %v, TTL %v; want the fixed 10s, 35s", every, ttl)
	}
}

// TestHostViewBounded: a full view takes no new peer (until entries
// expire) but still refreshes the peers it holds; a newer record replaces
// an older one and an older one is dropped.
func TestHostViewBounded(t *testing.T) {
	v := &hostView{opts: HostViewOptions{Republish: time.Second, TTL: 3 * time.Second, MaxAge: time.Minute, MaxEntries: 2},
		entries: map[peer.ID]*viewEntry{}, log: quietLogger()}
	now := time.Now()
	var keys []ed25519.PrivateKey
	for range 3 {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		keys = append(keys, k)
	}
	if !v.put(signedHostRecord(t, keys[0], now, time.Minute), now) || !v.put(signedHostRecord(t, keys[1], now, time.Minute), now) {
		t.Fatal("put into a view with room")
	}
	if v.put(signedHostRecord(t, keys[2], now, time.Minute), now) || v.size() != 2 || v.full.Load() != 1 {
		t.Fatalf("a full view took a new peer: %d entries", v.size())
	}
	newer := signedHostRecord(t, keys[0], now.Add(time.Second), time.Minute)
	if !v.put(newer, now) || v.put(signedHostRecord(t, keys[0], now.Add(-time.Second), time.Minute), now) {
		t.Fatal("newest record per peer")
	}
	later := now.Add(4 * time.Second) // past the TTL: room again
	if !v.put(signedHostRecord(t, keys[2], later, time.Minute), later) || v.size() != 1 {
		t.Fatalf("expired entries must make room: %d entries", v.size())
	}
}

// FuzzCheckHostGossip: no input panics, and whatever is accepted is a
// validly signed record of the message's author.
func FuzzCheckHostGossip(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	author, _ := peer.Decode(agents.PeerID(key.Public().(ed25519.PublicKey)))
	now := time.Now()
	f.Add(encodeRecord(f, signedHostRecord(f, key, now, time.Minute)))
	f.Add([]byte{})
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := checkHostGossip(data, author, now, 2*time.Minute, nil)
		if err != nil {
			if !errors.Is(err, ErrHostGossip) {
				t.Fatalf("error without the sentinel: %v", err)
			}
			return
		}
		if r.Peer != author.String() || r.Verify() != nil {
			t.Fatalf("accepted %+v", r)
		}
	})
}

// TestOfferedBlocks: a join offer carries the new agent's small blocks
// (checkpoint, genesis, manifest, state); the member stores each only if
// it hashes to its CID, and refuses an offer with too many.
func TestOfferedBlocks(t *testing.T) {
	l, err := OpenLocal(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	wasm, man := testagents.Bytes(t, "counter")
	_, head, err := l.CreateAgent(context.Background(), wasm, man, 1_000_000, 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	pub := &Mesh{Local: l}
	blocks := pub.offerBlocks(head)
	if len(blocks) != 4 || blocks[0].CID != head.CID.String() {
		t.Fatalf("offer blocks %d (first %s), want the checkpoint, genesis, manifest and state", len(blocks), blocks[0].CID)
	}
	l2, err := OpenLocal(t.TempDir(), quietLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l2.Close() })
	member := &Mesh{Local: l2}
	forged := slices.Clone(blocks)
	forged[1] = offerBlock{CID: blocks[1].CID, Data: append([]byte{0}, blocks[1].Data...)}
	if err := member.storeOffered(forged); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("a block that does not hash to its CID: %v", err)
	}
	if err := member.storeOffered(make([]offerBlock, offerMaxBlocks+1)); !errors.Is(err, ErrBadMessage) {
		t.Fatalf("too many blocks: %v", err)
	}
	if err := member.storeOffered(blocks); err != nil {
		t.Fatal(err)
	}
	for _, b := range blocks {
		c, _ := cid.Decode(b.CID)
		if ok, err := l2.Store.Has(c); err != nil || !ok {
			t.Fatalf("offered block %s not stored: %v", c, err)
		}
	}
}
