package hosting

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
	"testing/quick"
	"time"

	"github.com/igor-mesh/igor-node/agents"
)

var placeNow = time.Unix(1_700_000_000, 0)

func labelKey(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte("igor placement test " + label))
	return ed25519.NewKeyFromSeed(seed[:])
}

func peerOf(label string) string {
	return agents.PeerID(labelKey(label).Public().(ed25519.PublicKey))
}

func agentOf(label string) string {
	return agents.AgentID(agents.DID(labelKey("agent " + label).Public().(ed25519.PublicKey)))
}

// hostRec returns a signed host record of node label with room for any
// agent, after mut has changed it.
func hostRec(t testing.TB, label string, mut func(h *agents.HostRecord)) *agents.HostRecord {
	t.Helper()
	key := labelKey(label)
	h := &agents.HostRecord{
		Peer: peerOf(label), Addrs: []string{"/ip4/127.0.0.1/tcp/4001"},
		Slots: 4, FreeSlots: 2, MemoryBytes: 1 << 30, FreeMemoryBytes: 256 << 20, Price: 10,
		Capabilities: agents.KnownCapabilities(), Version: "test", Seq: 1,
		Issued: placeNow.Add(-time.Minute).UnixNano(), Expires: placeNow.Add(time.Hour).UnixNano(),
	}
	if mut != nil {
		mut(h)
	}
	if err := h.Sign(key); err != nil {
		t.Fatal(err)
	}
	return h
}

func testManifest(t testing.TB, js string) *agents.Manifest {
	t.Helper()
	m, err := agents.ParseManifest([]byte(js))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// naiveRank is the definition, written out independently: sort by the
// full digest's first 8 bytes (descending), then peer ID.
func naiveRank(agentID string, peers []string) []string {
	out := slices.Clone(peers)
	w := func(p string) uint64 {
		d := sha256.Sum256([]byte(agentID + "\x00" + p))
		return binary.BigEndian.Uint64(d[:])
	}
	sort.SliceStable(out, func(i, j int) bool {
		if wi, wj := w(out[i]), w(out[j]); wi != wj {
			return wi > wj
		}
		return out[i] < out[j]
	})
	return out
}

// peerSet is a quick.Generator of distinct peer ID-like strings.
type peerSet []string

func (peerSet) Generate(r *rand.Rand, size int) reflect.Value {
	n := r.Intn(size + 2)
	seen := map[string]bool{}
	var ps peerSet
	for len(ps) < n {
		p := fmt.Sprintf("12D3KooW%x", r.Uint64())
		if !seen[p] {
			seen[p] = true
			ps = append(ps, p)
		}
	}
	return reflect.ValueOf(ps)
}

func TestRankMatchesDefinition(t *testing.T) {
	check := func(agent string, peers peerSet) bool {
		in := slices.Clone(peers)
		got := Rank(agent, peers)
		if !slices.Equal(peers, in) {
			t.Log("Rank modified its input")
			return false
		}
		return slices.Equal(got, naiveRank(agent, peers))
	}
	if err := quick.Check(check, &quick.Config{MaxCount: 500}); err != nil {
		t.Fatal(err)
	}
	// Pinned vector: every node, of every version, must rank the same way,
	// or nodes disagree about custody groups.
	agent := agentOf("pinned")
	peers := []string{peerOf("a"), peerOf("b"), peerOf("c"), peerOf("d")}
	got := Rank(agent, peers)
	if want := naiveRank(agent, peers); !slices.Equal(got, want) {
		t.Fatalf("Rank = %v, want %v", got, want)
	}
	if Rank(agent, nil) == nil || len(Rank(agent, nil)) != 0 {
		t.Fatal("Rank of no peers is not an empty slice")
	}
	// Duplicates are kept, side by side.
	got = Rank(agent, []string{"x", "y", "x"})
	if i := slices.Index(got, "x"); len(got) != 3 || i > 1 || got[i+1] != "x" || !slices.Contains(got, "y") {
		t.Fatalf("Rank with a duplicate = %v", got)
	}
}

func TestRankDeterministicPermutation(t *testing.T) {
	check := func(agent string, peers peerSet, seed int64) bool {
		want := Rank(agent, peers)
		shuffled := slices.Clone(peers)
		rand.New(rand.NewSource(seed)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
		got := Rank(agent, shuffled)
		a, b := slices.Clone(got), slices.Clone([]string(peers))
		slices.Sort(a)
		slices.Sort(b)
		return slices.Equal(got, want) && slices.Equal(a, b)
	}
	if err := quick.Check(check, &quick.Config{MaxCount: 500}); err != nil {
		t.Fatal(err)
	}
}

// Removing a peer does not reorder the others, and adding one only inserts
// it: the property that keeps custody groups stable as the mesh changes.
func TestRankStableUnderMembership(t *testing.T) {
	without := func(s []string, p string) []string {
		return slices.DeleteFunc(slices.Clone(s), func(x string) bool { return x == p })
	}
	check := func(agent string, peers peerSet, pick uint, extra uint64) bool {
		full := Rank(agent, peers)
		if len(peers) > 0 {
			gone := peers[int(pick%uint(len(peers)))]
			if !slices.Equal(Rank(agent, without(peers, gone)), without(full, gone)) {
				t.Logf("removing %s reordered the rest", gone)
				return false
			}
		}
		added := fmt.Sprintf("new-%x", extra)
		if slices.Contains(peers, added) {
			return true
		}
		grown := Rank(agent, append(slices.Clone([]string(peers)), added))
		if !slices.Equal(without(grown, added), full) {
			t.Logf("adding %s reordered the rest", added)
			return false
		}
		return true
	}
	if err := quick.Check(check, &quick.Config{MaxCount: 500}); err != nil {
		t.Fatal(err)
	}
}

// Over many agents each of 10 peers is first about equally often. The
// bound is the chi-square critical value for 9 degrees of freedom at
// p = 0.001 (27.88); the inputs are fixed, so the test is deterministic and
// fails only if the hash is badly skewed (e.g. scoring by a constant byte).
func TestRankUniformFirstChoice(t *testing.T) {
	const nPeers, nAgents = 10, 20000
	peers := make([]string, nPeers)
	for i := range peers {
		peers[i] = peerOf(fmt.Sprint("node ", i))
	}
	first := map[string]int{}
	for i := 0; i < nAgents; i++ {
		first[Rank(fmt.Sprintf("z6MkAgent%08d", i), peers)[0]]++
	}
	exp := float64(nAgents) / nPeers
	chi := 0.0
	for _, p := range peers {
		d := float64(first[p]) - exp
		chi += d * d / exp
	}
	t.Logf("first-choice counts %v, chi-square %.2f", first, chi)
	if chi > 27.88 {
		t.Fatalf("first choice is not uniform: chi-square %.2f > 27.88 over %v", chi, first)
	}
}

func TestEligible(t *testing.T) {
	no := false
	m := testManifest(t, `{"capabilities":{"clock":{"version":1}},"resource_limits":{"max_memory_bytes":16777216},"migration_policy":{"max_price_per_second":50}}`)
	good := hostRec(t, "good", nil)
	cases := []struct {
		label string
		mut   func(h *agents.HostRecord)
		want  string
		is    error
	}{
		{"expired", func(h *agents.HostRecord) { h.Expires = placeNow.UnixNano() }, "expired at", agents.ErrExpired},
		{"full", func(h *agents.HostRecord) { h.FreeSlots = 0 }, "no free slot", agents.ErrNotAdmitted},
		{"small", func(h *agents.HostRecord) { h.FreeMemoryBytes = 1 << 20 }, "needs 16777216", agents.ErrNotAdmitted},
		{"dear", func(h *agents.HostRecord) { h.Price = 51 }, "price 51", agents.ErrNotAdmitted},
		{"nocaps", func(h *agents.HostRecord) { h.Capabilities = []string{"log"} }, `lacks capability "clock"`, agents.ErrNotAdmitted},
	}
	hosts := []*agents.HostRecord{good, nil}
	for _, tc := range cases {
		hosts = append(hosts, hostRec(t, tc.label, tc.mut))
	}
	ok, rejected := Eligible(m, hosts, placeNow)
	if len(ok) != 1 || ok[0] != good {
		t.Fatalf("eligible = %v, want only the good host", ok)
	}
	if len(rejected) != len(cases) {
		t.Fatalf("rejected %d hosts, want %d: %v", len(rejected), len(cases), rejected)
	}
	for _, tc := range cases {
		err := rejected[peerOf(tc.label)]
		if !errors.Is(err, tc.is) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: reason %v, want %v containing %q", tc.label, err, tc.is, tc.want)
		}
	}
	// The agent itself can forbid placement.
	m.MigrationPolicy.Enabled = &no
	if ok, rejected := Eligible(m, []*agents.HostRecord{good}, placeNow); len(ok) != 0 || !errors.Is(rejected[good.Peer], agents.ErrNotAdmitted) {
		t.Fatalf("migration disabled: ok %v, rejected %v", ok, rejected)
	}
	// Nothing to judge: both results empty, rejected still usable.
	if ok, rejected := Eligible(m, nil, placeNow); ok != nil || rejected == nil || len(rejected) != 0 {
		t.Fatalf("no hosts: %v, %v", ok, rejected)
	}
}

// Several records of one peer: the newest unexpired one counts, and the
// peer appears once.
func TestEligibleOneRecordPerPeer(t *testing.T) {
	m := testManifest(t, `{}`)
	oldFull := hostRec(t, "n", func(h *agents.HostRecord) { h.Seq, h.FreeSlots = 1, 0 })
	newFree := hostRec(t, "n", func(h *agents.HostRecord) { h.Seq = 2 })
	newerExpired := hostRec(t, "n", func(h *agents.HostRecord) {
		h.Seq, h.Issued, h.Expires = 3, placeNow.Add(-2*time.Hour).UnixNano(), placeNow.Add(-time.Hour).UnixNano()
	})
	ok, rejected := Eligible(m, []*agents.HostRecord{oldFull, newerExpired, newFree}, placeNow)
	if len(ok) != 1 || ok[0] != newFree || len(rejected) != 0 {
		t.Fatalf("ok %v, rejected %v; want the seq 2 record", ok, rejected)
	}
	ok, rejected = Eligible(m, []*agents.HostRecord{newFree, oldFull}, placeNow.Add(2*time.Hour))
	if len(ok) != 0 || !errors.Is(rejected[newFree.Peer], agents.ErrExpired) {
		t.Fatalf("all expired: ok %v, rejected %v", ok, rejected)
	}
}

func TestPlace(t *testing.T) {
	m := testManifest(t, `{"capabilities":{"rand":{"version":1}}}`)
	var hosts []*agents.HostRecord
	var eligible []string
	for i := 0; i < 12; i++ {
		label := fmt.Sprint("host ", i)
		if i%3 == 0 {
			hosts = append(hosts, hostRec(t, label, func(h *agents.HostRecord) { h.FreeSlots = 0 }))
			continue
		}
		hosts = append(hosts, hostRec(t, label, nil))
		eligible = append(eligible, peerOf(label))
	}
	for _, a := range []string{"x", "y", "z"} {
		agent := agentOf(a)
		got, err := Place(agent, m, hosts, placeNow)
		if err != nil {
			t.Fatal(err)
		}
		var peers []string
		for _, h := range got {
			peers = append(peers, h.Peer)
		}
		if want := Rank(agent, eligible); !slices.Equal(peers, want) {
			t.Fatalf("Place order %v, want rendezvous order of the eligible hosts %v", peers, want)
		}
		// Input order does not matter.
		rev := slices.Clone(hosts)
		slices.Reverse(rev)
		again, _ := Place(agent, m, rev, placeNow)
		if !slices.Equal(again, got) {
			t.Fatal("Place depends on the order of host records")
		}
	}
}

func TestPlaceNoEligibleHost(t *testing.T) {
	agent := agentOf("lonely")
	m := testManifest(t, `{"capabilities":{"rand":{"version":1}},"migration_policy":{"max_price_per_second":5}}`)
	full := hostRec(t, "full", func(h *agents.HostRecord) { h.FreeSlots = 0 })
	dear := hostRec(t, "dear", func(h *agents.HostRecord) { h.Price = 6; h.Capabilities = []string{"clock"} })
	gone := hostRec(t, "gone", func(h *agents.HostRecord) {
		h.Issued, h.Expires = placeNow.Add(-2*time.Hour).UnixNano(), placeNow.Add(-time.Hour).UnixNano()
		h.Price = 0
	})
	_, err := Place(agent, m, []*agents.HostRecord{full, dear, gone}, placeNow)
	if !errors.Is(err, ErrNoEligibleHost) {
		t.Fatalf("Place = %v, want ErrNoEligibleHost", err)
	}
	msg := err.Error()
	for _, part := range []string{
		agent, "all 3 known hosts were rejected",
		full.Peer + ": ", "no free slot",
		dear.Peer + ": ", `lacks capability "rand"`, "price 6 µc/s exceeds the agent's maximum 5",
		gone.Peer + ": host record expired at",
	} {
		if !strings.Contains(msg, part) {
			t.Errorf("message %q lacks %q", msg, part)
		}
	}
	if strings.Count(msg, agents.ErrNotAdmitted.Error()) != 0 {
		t.Errorf("message repeats the sentinel per host: %q", msg)
	}

	// Many rejections: the message stays short.
	var many []*agents.HostRecord
	for i := 0; i < 20; i++ {
		many = append(many, hostRec(t, fmt.Sprint("busy ", i), func(h *agents.HostRecord) { h.FreeSlots = 0 }))
	}
	_, err = Place(agent, m, many, placeNow)
	if !errors.Is(err, ErrNoEligibleHost) || !strings.Contains(err.Error(), "and 12 more") || strings.Count(err.Error(), "no free slot") != maxReasons {
		t.Fatalf("20 rejections: %v", err)
	}

	_, err = Place(agent, m, nil, placeNow)
	if !errors.Is(err, ErrNoEligibleHost) || !strings.Contains(err.Error(), "no host records known") {
		t.Fatalf("no hosts: %v", err)
	}
	for _, bad := range []string{"", "did:key:" + agent, "z6Mknope", "12D3KooWx"} {
		if _, err := Place(bad, m, []*agents.HostRecord{full}, placeNow); !errors.Is(err, agents.ErrBadDID) {
			t.Errorf("Place(%q) = %v, want ErrBadDID", bad, err)
		}
	}
	if _, err := Place(agent, nil, []*agents.HostRecord{full}, placeNow); !errors.Is(err, agents.ErrBadManifest) {
		t.Errorf("Place(nil manifest) = %v", err)
	}
}

// BenchmarkRank ranks 1000 peers for one agent. x-bare-hash is its time
// over computing the same 1000 SHA-256 digests alone, measured in the same
// run: what sorting and bookkeeping add on top of the hashing floor.
func BenchmarkRank(b *testing.B) {
	peers := make([]string, 1000)
	for i := range peers {
		peers[i] = agents.PeerID(labelKey(fmt.Sprint("bench ", i)).Public().(ed25519.PublicKey))
	}
	agent := agentOf("bench")
	inputs := make([][]byte, len(peers))
	for i, p := range peers {
		inputs[i] = []byte(agent + "\x00" + p)
	}
	var sink uint64
	const baseRounds = 200
	start := time.Now()
	for r := 0; r < baseRounds; r++ {
		for _, in := range inputs {
			d := sha256.Sum256(in)
			sink += binary.BigEndian.Uint64(d[:])
		}
	}
	base := time.Since(start) / baseRounds
	_ = sink
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if len(Rank(agent, peers)) != len(peers) {
			b.Fatal("lost peers")
		}
	}
	b.StopTimer()
	per := float64(b.Elapsed().Nanoseconds()) / float64(b.N)
	b.ReportMetric(per/float64(base.Nanoseconds()), "x-bare-hash")
}
