package node

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/custody"
	"github.com/igor-mesh/igor-node/internal/testagents"
)

// holderOf returns the mesh node running did, or nil.
func holderOf(ms []*Mesh, did string) *Mesh {
	for _, m := range ms {
		if st, err := m.Custody.Agent(did); err == nil && st.Running {
			return m
		}
	}
	return nil
}

// TestCustodyTakeoverAfterHolderDies: the holder disappears without a word;
// a standby takes over at a higher epoch from the last committed checkpoint
// within a few seconds, and the lineage stays a single chain.
func TestCustodyTakeoverAfterHolderDies(t *testing.T) {
	ms := startMeshes(t, 5, 2)
	waitHosts(t, ms, 5)
	wasm, man := testagents.Bytes(t, "counter")
	ctx := context.Background()
	res, err := ms[0].Publish(ctx, wasm, man, 10_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	holder := waitHolder(t, ms, res.DID)
	if holder.PeerID() != res.Holder {
		t.Fatalf("running on %s, publish chose %s", holder.PeerID(), res.Holder)
	}
	first := holder
	// GroupID (what pushes are checked against) is the group's ID on every
	// member, and ErrNotMember elsewhere.
	for _, m := range ms {
		g, gerr := m.Custody.Group(res.DID)
		id, err := m.Custody.GroupID(res.DID)
		if (gerr == nil) != (err == nil) || (err == nil && id != g.ID()) || (err != nil && !errors.Is(err, custody.ErrNotMember)) {
			t.Fatalf("%s: GroupID %v %v, Group().ID() %v %v", m.PeerID(), id, err, g.ID(), gerr)
		}
	}
	// A head record at a higher epoch than the holder's lease: the holder
	// stops at once and gives the lease up; a standby runs the agent next.
	hst, _ := holder.Custody.Agent(res.DID)
	if !holder.Custody.Superseded(res.DID, hst.Epoch+1) {
		t.Fatalf("Superseded(epoch %d) on the running holder at epoch %d did nothing", hst.Epoch+1, hst.Epoch)
	}
	var moved *Mesh
	eventually(t, "the superseded holder to stop and another member to run", 20*time.Second, func() error {
		if st, _ := holder.Custody.Agent(res.DID); st.Running {
			return fmt.Errorf("superseded holder still runs the agent")
		}
		if moved = holderOf(ms, res.DID); moved == nil {
			return fmt.Errorf("nobody runs it")
		}
		return nil
	})
	holder = moved
	// Let it commit a few checkpoints at a majority.
	var committedSeq uint64
	eventually(t, "commits replicated to the standbys", 20*time.Second, func() error {
		for _, m := range ms {
			if m == holder || !slices.Contains(res.Members, m.PeerID()) {
				continue
			}
			st, err := m.Custody.Agent(res.DID)
			if err != nil {
				return err
			}
			hst, _ := holder.Custody.Agent(res.DID)
			if st.AcceptedSeq < 3 || st.AcceptedAt < hst.Epoch || st.AcceptedSeq < hst.AcceptedSeq-1 {
				return fmt.Errorf("standby %s accepted seq %d at %d; holder at epoch %d", m.PeerID(), st.AcceptedSeq, st.AcceptedAt, hst.Epoch)
			}
			committedSeq = max(committedSeq, st.AcceptedSeq)
		}
		return nil
	})
	t.Logf("standbys at seq %d", committedSeq)
	// A standby following its holder verifies each new checkpoint in one
	// step above the one before (DECISIONS D77), not by a walk.
	for _, m := range ms {
		if m == holder || !slices.Contains(res.Members, m.PeerID()) {
			continue
		}
		vs := m.verified.Stats()
		t.Logf("standby %s: %+v", m.PeerID(), vs)
		if vs.Steps < 2 || vs.GenesisWalks > 1 {
			t.Errorf("standby %s verified %+v: want its seqs 2..%d one step each (steps >= 2) and its whole lineage at most once", m.PeerID(), vs, committedSeq)
		}
	}
	// Every node queries once, so each remembers this holder (its hint).
	for _, m := range ms {
		if q, err := m.QueryAgent(ctx, res.DID); err != nil || q.Holder != holder.PeerID() {
			t.Fatalf("query before the crash: %+v %v", q, err)
		}
	}
	stopped := time.Now()
	if err := holder.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("holder closed in %v", time.Since(stopped))
	rest := slices.DeleteFunc(slices.Clone(ms), func(m *Mesh) bool { return m == holder })
	// A query during the takeover waits for it (up to takeoverWait) and
	// shows its result, rather than the state before it.
	var during *Mesh
	for _, m := range rest {
		if slices.Contains(res.Members, m.PeerID()) {
			during = m
		}
	}
	t0 := time.Now()
	qd, err := during.QueryAgent(ctx, res.DID)
	tookQ := time.Since(t0)
	var next *Mesh
	eventually(t, "a standby takes over", 20*time.Second, func() error {
		if next = holderOf(rest, res.DID); next == nil {
			return fmt.Errorf("nobody runs it")
		}
		return nil
	})
	took := time.Since(stopped)
	if !slices.Contains(res.Members, next.PeerID()) {
		t.Fatalf("took over by %s, not a member of %v", next.PeerID(), res.Members)
	}
	st, _ := next.Custody.Agent(res.DID)
	if st.Epoch < 2 {
		t.Fatalf("new holder at epoch %d, want ≥ 2", st.Epoch)
	}
	t.Logf("takeover by %s at epoch %d after %v", next.PeerID(), st.Epoch, took)
	switch {
	case err != nil:
		t.Errorf("query during the takeover: %v", err)
	case qd.Status == "running" && qd.Holder == next.PeerID():
		t.Logf("a query during the takeover answered with the new holder after %v", tookQ)
	case tookQ < takeoverWait:
		t.Errorf("a query during the takeover answered %s (holder %q) after %v, without waiting for the takeover", qd.Status, qd.Holder, tookQ)
	}
	// Each survivor's query, though it asks the dead holder it remembers
	// first, answers with the new one without waiting out the dead
	// holder's status timeout (2 s).
	for _, m := range rest {
		var q *AgentStatus
		var took time.Duration
		eventually(t, "the survivors' queries to name the new holder", 10*time.Second, func() error {
			t0 := time.Now()
			var err error
			q, err = m.QueryAgent(ctx, res.DID)
			took = time.Since(t0)
			if err != nil {
				return err
			}
			if q.Holder != next.PeerID() {
				return fmt.Errorf("holder %s", q.Holder)
			}
			return nil
		})
		if took > time.Second {
			t.Errorf("a query from %s took %v after the failover (the dead holder's status timeout is %v)", m.PeerID(), took, statusTimeout)
		}
	}
	// The new holder's checkpoints follow the committed ones: the lineage
	// seen from an observer verifies, with no fork and both holders in it.
	var observer *Mesh
	for _, m := range rest {
		if m != next {
			observer = m
		}
	}
	eventually(t, "the new holder's head record", 30*time.Second, func() error {
		q, err := observer.QueryAgent(ctx, res.DID)
		if err != nil {
			return err
		}
		if q.Holder != next.PeerID() || q.Seq <= committedSeq {
			return fmt.Errorf("head record: holder %s seq %d (committed before the crash: %d)", q.Holder, q.Seq, committedSeq)
		}
		return nil
	})
	// VerifyRemote resolves the head record afresh; a DHT read may still
	// return an older (valid) record for a moment, whose lineage ends before
	// the new holder. Every answer must verify; the new holder must appear.
	var rep *VerifyReport
	eventually(t, "a verified lineage that includes the new holder", 30*time.Second, func() error {
		var err error
		if rep, err = observer.VerifyRemote(ctx, res.DID, VerifyOptions{}); err != nil {
			return err
		}
		if !rep.Valid || len(rep.Forks) != 0 {
			t.Fatalf("verify after takeover: %+v", rep)
		}
		if !slices.Contains(rep.Holders, next.PeerID()) {
			return fmt.Errorf("lineage holders %v lack the new holder %s (stale head record)", rep.Holders, next.PeerID())
		}
		return nil
	})
	_ = first
	if rep.MaxEpoch < 2 || !slices.Contains(rep.Holders, holder.PeerID()) {
		t.Fatalf("lineage holders %v (max epoch %d) lack the old holder %s", rep.Holders, rep.MaxEpoch, holder.PeerID())
	}
	// Every µc spent is attributed to the holder that signed its step.
	var charged int64
	for _, c := range rep.Charges {
		if c.Calls < c.Ticks {
			t.Fatalf("holder %s billed %d calls for %d ticks", c.Holder, c.Calls, c.Ticks)
		}
		charged += c.Charged
	}
	if charged != rep.BudgetStart-rep.BudgetLeft || len(rep.Charges) != len(rep.Holders) {
		t.Fatalf("charges %+v add up to %d µc; the budget fell by %d", rep.Charges, charged, rep.BudgetStart-rep.BudgetLeft)
	}
}

// TestReviveAfterAllCustodiansDie: the whole custody group dies; the
// publisher (which kept the agent key) revives the agent on new hosts from
// the last checkpoint in the mesh, above the old epoch, and the lineage
// stays one valid chain. While the lease is live, revive is refused.
func TestReviveAfterAllCustodiansDie(t *testing.T) {
	// Node 0 publishes and does not host; nodes 1..3 form the group.
	pubs := startMeshes(t, 1, 0)
	hosts := startMeshesJoining(t, pubs[0], 3, 2)
	all := append(slices.Clone(pubs), hosts...)
	waitHosts(t, all, 3)
	wasm, man := testagents.Bytes(t, "counter")
	ctx := context.Background()
	res, err := pubs[0].Publish(ctx, wasm, man, 10_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "commits at seq ≥ 3", 30*time.Second, func() error {
		st, err := pubs[0].QueryAgent(ctx, res.DID)
		if err != nil {
			return err
		}
		if st.Seq < 3 {
			return fmt.Errorf("seq %d", st.Seq)
		}
		return nil
	})
	if _, err := pubs[0].Revive(ctx, res.DID, false, nil); !errors.Is(err, ErrAgentAlive) {
		t.Fatalf("revive of a live agent: %v", err)
	}
	// The publisher verified the agent once (it now holds its lineage up to
	// then); then the whole group dies, taking newer checkpoints with it.
	if rep, err := pubs[0].VerifyRemote(ctx, res.DID, VerifyOptions{}); err != nil || !rep.Valid {
		t.Fatalf("verify before the group dies: %v %+v", err, rep)
	}
	for _, h := range hosts {
		h.Close()
	}
	old := reviveMargin
	reviveMargin = 0
	defer func() { reviveMargin = old }()
	fresh := startMeshesJoining(t, pubs[0], 3, 2)
	// The dead hosts' records outlive them, so a count proves nothing: wait
	// until the publisher sees each fresh host's own record.
	eventually(t, "the publisher to see the fresh hosts' records", 60*time.Second, func() error {
		hs, err := pubs[0].Hosts(ctx)
		if err != nil {
			return err
		}
		for _, f := range fresh {
			if !slices.ContainsFunc(hs, func(h *agents.HostRecord) bool { return h.Peer == f.PeerID() }) {
				return fmt.Errorf("no record of %s yet", f.PeerID())
			}
		}
		return nil
	})
	// The head record (not QueryAgent: the head checkpoint may have died
	// with the group).
	data, err := pubs[0].DHT.GetValue(ctx, agents.HeadRecordKey(res.DID))
	if err != nil {
		t.Fatal(err)
	}
	st, err := agents.ValidateHeadRecord(agents.HeadRecordKey(res.DID), data, time.Now().UnixNano())
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the dead group's lease to end", 10*time.Second, func() error {
		if time.Now().UnixNano() < st.LeaseExpiry {
			return fmt.Errorf("lease until %v", time.Unix(0, st.LeaseExpiry))
		}
		return nil
	})
	rv, err := pubs[0].Revive(ctx, res.DID, false, nil)
	if err == nil || !strings.Contains(err.Error(), "--accept-loss") {
		// The head record may name a checkpoint the publisher fetched.
		if err != nil || rv.Head != st.Head.String() {
			t.Fatalf("revive without the latest checkpoint reachable: %v %+v", err, rv)
		}
	} else if rv, err = pubs[0].Revive(ctx, res.DID, true, nil); err != nil {
		t.Fatal(err)
	}
	if rv.Epoch != st.Epoch+1 || len(rv.Members) != 3 {
		t.Fatalf("revived from %s at epoch %d with %v; the last head was %s at epoch %d", rv.Head, rv.Epoch, rv.Members, st.Head, st.Epoch)
	}
	eventually(t, "the revived group's head record", 60*time.Second, func() error {
		q, err := pubs[0].QueryAgent(ctx, res.DID)
		if err != nil {
			return err
		}
		if q.Epoch <= st.Epoch || !slices.Contains(rv.Members, q.Holder) {
			// Say what each new member thinks, so a timeout is diagnosable.
			var views []string
			for _, f := range fresh {
				for _, s := range f.Custody.Status() {
					views = append(views, fmt.Sprintf("%s: %s epoch %d running %v accepted seq %d lease end %v holder %s err %q",
						f.PeerID(), s.Role, s.Epoch, s.Running, s.AcceptedSeq, s.LeaseEnd, s.Holder, s.Error))
				}
			}
			return fmt.Errorf("head seq %d epoch %d holder %s; members: %v", q.Seq, q.Epoch, q.Holder, views)
		}
		return nil
	})
	rep, err := pubs[0].VerifyRemote(ctx, res.DID, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Valid || len(rep.Forks) != 0 || rep.MaxEpoch <= st.Epoch {
		t.Fatalf("verify after revive: %+v", rep)
	}
}

// startMeshesJoining starts n hosting meshes bootstrapped from boot.
func startMeshesJoining(tb testing.TB, boot *Mesh, n, slots int) []*Mesh {
	tb.Helper()
	var ms []*Mesh
	// Head records are republished every 2 s (not 30 s), so a test that
	// waits for a dead group's record to lapse (revive) waits seconds.
	timing := custody.DefaultTiming()
	timing.HeadRefresh = 2 * time.Second
	for i := 0; i < n; i++ {
		m, err := StartMesh(context.Background(), MeshConfig{Home: tb.TempDir(), Slots: slots, Price: 1000, Logger: quietLogger(),
			Bootstrap: []string{boot.PeerAddrs()[0]}, Custody: timing,
			Run: hosting.RunOptions{TickInterval: 20 * time.Millisecond, CheckpointEvery: 3, Price: -1}})
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	return ms
}

// TestDeadStandbyReplacedInPlace: a dead standby is replaced by a
// membership change in place — the agent keeps running on its holder at
// its epoch, no tick is redone — and when the dead member comes back with
// its old state it learns it is out and deletes the agent key.
func TestDeadStandbyReplacedInPlace(t *testing.T) {
	timing := custody.DefaultTiming()
	timing.RegroupAfter = 2 * time.Second
	timing.OrphanAfter = 3 * time.Second
	if testing.Short() {
		// The race run (-short) is several times slower: 5 nodes and an
		// agent ticking every 20 ms in one process under the race detector
		// can miss a 1.5 s lease, and a lapsed lease restarts the agent —
		// which this test counts as a stop. A 3 s lease keeps what it
		// checks (no stop, no move during the change in place).
		timing.Interval = 200 * time.Millisecond
	}
	var homes []string
	var (
		mu    sync.Mutex
		ticks []tickAt // every tick of every node, in order
	)
	var ms []*Mesh
	for i := 0; i < 5; i++ {
		homes = append(homes, t.TempDir())
		cfg := MeshConfig{Home: homes[i], Slots: 2, Price: 1000, Logger: quietLogger(), Custody: timing,
			Run: hosting.RunOptions{TickInterval: 20 * time.Millisecond, CheckpointEvery: 3, Price: -1},
			OnTick: func(did string, tick uint64) {
				mu.Lock()
				ticks = append(ticks, tickAt{node: i, tick: tick})
				mu.Unlock()
			}}
		if i > 0 {
			cfg.Bootstrap = []string{ms[0].PeerAddrs()[0]}
		}
		m, err := StartMesh(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	waitHosts(t, ms, 5)
	wasm, _ := testagents.Bytes(t, "counter")
	man := []byte(`{"name":"counter","capabilities":{"args":{"version":1},"log":{"version":1}},"args":"state_size=64","lease":{"term_seconds":1}}`)
	ctx := context.Background()
	res, err := ms[0].Publish(ctx, wasm, man, 100_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	holder := waitHolder(t, ms, res.DID)
	var dead *Mesh
	for _, m := range ms {
		if m != holder && slices.Contains(res.Members, m.PeerID()) {
			dead = m
			break
		}
	}
	before, _ := holder.Custody.Agent(res.DID)
	dead.Close()
	rest := slices.DeleteFunc(slices.Clone(ms), func(m *Mesh) bool { return m == dead })
	var members []string
	eventually(t, "the dead member replaced", 40*time.Second, func() error {
		h := holderOf(rest, res.DID)
		if h == nil {
			return fmt.Errorf("nobody runs it")
		}
		st, _ := h.Custody.Agent(res.DID)
		if slices.Contains(st.Members, dead.PeerID()) || st.Conf < 2 {
			// Index 1 is the joint configuration (new members listed, not
			// committed alone yet); 2 the new members alone.
			return fmt.Errorf("holder %s: configuration %d members %v", h.PeerID(), st.Conf, st.Members)
		}
		members = st.Members
		return nil
	})
	if len(members) != 3 {
		t.Fatalf("new group %v, want 3 live members", members)
	}
	// The old members that are not in the new group hold nothing any more.
	for _, m := range rest {
		if _, err := m.Custody.Agent(res.DID); (err == nil) != slices.Contains(members, m.PeerID()) {
			t.Fatalf("%s: member of the new group: %v, has a membership: %v", m.PeerID(), slices.Contains(members, m.PeerID()), err)
		}
	}
	// The holder pushed its checkpoints' blocks to the members with each
	// proposal (they are small), instead of each member fetching them.
	if n := testutil.ToFloat64(holder.pushed); n == 0 {
		t.Fatal("the holder pushed no checkpoint blocks")
	}
	// In place: the same holder at the same epoch, never stopped.
	if h := holderOf(rest, res.DID); h != holder {
		t.Fatalf("the agent moved from %s to %v; a change in place keeps it", holder.PeerID(), h)
	}
	if st, _ := holder.Custody.Agent(res.DID); st.Epoch != before.Epoch || st.Conf < 2 {
		t.Fatalf("holder at epoch %d configuration %d; want epoch %d and a committed change (configuration ≥ 2)", st.Epoch, st.Conf, before.Epoch)
	}
	q, err := rest[0].QueryAgent(ctx, res.DID)
	if err != nil || q.Holder != holder.PeerID() {
		t.Fatalf("query: %+v %v", q, err)
	}
	rep, err := rest[0].VerifyRemote(ctx, res.DID, VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Valid || len(rep.Forks) != 0 {
		t.Fatalf("verify after regroup: %+v", rep)
	}
	// No tick redone and no move: every tick follows the previous one, on
	// the same node.
	mu.Lock()
	for i := 1; i < len(ticks); i++ {
		if ticks[i].node != ticks[i-1].node || ticks[i].tick != ticks[i-1].tick+1 {
			mu.Unlock()
			t.Fatalf("tick %d on node %d after tick %d on node %d: the agent stopped or moved", ticks[i].tick, ticks[i].node, ticks[i-1].tick, ticks[i-1].node)
		}
	}
	mu.Unlock()

	// The dead member comes back with its old state: it never heard of the
	// change, so it restores the old membership (and the agent key). The
	// holder tells it it is out (or, failing that, "Evicted members"
	// finds out), and it leaves.
	deadHome := homes[slices.Index(ms, dead)]
	back, err := StartMesh(context.Background(), MeshConfig{Home: deadHome, Slots: 2, Price: 1000, Logger: quietLogger(), Custody: timing,
		Bootstrap: []string{rest[0].PeerAddrs()[0]}, Run: hosting.RunOptions{TickInterval: 20 * time.Millisecond, CheckpointEvery: 3, Price: -1}})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if _, err := back.Custody.Agent(res.DID); err != nil {
		t.Fatalf("the restarted member did not restore its old group: %v", err)
	}
	eventually(t, "the removed member to leave", 30*time.Second, func() error {
		if st, err := back.Custody.Agent(res.DID); err == nil {
			return fmt.Errorf("still a member: %s epoch %d members %v", st.Role, st.Epoch, st.Members)
		}
		return nil
	})
	// The membership is gone from the manager before its files and key
	// are (Leave deletes them after the driver stopped): the key goes soon.
	if back.PeerID() != ms[0].PeerID() {
		eventually(t, "the evicted member to delete the agent key", 5*time.Second, func() error {
			if _, err := back.Keys.Get(res.DID); err == nil {
				return errors.New("the evicted member kept the agent key")
			}
			return nil
		})
	}
	if h := holderOf(rest, res.DID); h == nil || !slices.Contains(members, h.PeerID()) {
		t.Fatalf("after the eviction the agent runs on %v, want a member of %v", h, members)
	}
}

type tickAt struct {
	node int
	tick uint64
}

// TestLostLeaseStateRefused: a member whose lease state record is gone (a
// damaged pack) but whose group file is here does not take part again
// from a zero state — it could promise an epoch twice. It restores the
// membership as refused (custody.ErrNoLeaseState at start-up), and the
// agent runs on in the group.
func TestLostLeaseStateRefused(t *testing.T) {
	var homes []string
	var ms []*Mesh
	cfgFor := func(home string, boot []string) MeshConfig {
		return MeshConfig{Home: home, Slots: 2, Price: 1000, Logger: quietLogger(), Bootstrap: boot,
			Run: hosting.RunOptions{TickInterval: 20 * time.Millisecond, CheckpointEvery: 3, Price: -1}}
	}
	for i := 0; i < 3; i++ {
		homes = append(homes, t.TempDir())
		var boot []string
		if i > 0 {
			boot = []string{ms[0].PeerAddrs()[0]}
		}
		m, err := StartMesh(context.Background(), cfgFor(homes[i], boot))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		ms = append(ms, m)
	}
	waitHosts(t, ms, 3)
	wasm, man := testagents.Bytes(t, "counter")
	res, err := ms[0].Publish(context.Background(), wasm, man, 10_000_000, nil)
	if err != nil {
		t.Fatal(err)
	}
	holder := waitHolder(t, ms, res.DID)
	i := slices.IndexFunc(ms, func(m *Mesh) bool { return m != holder && m != ms[0] && slices.Contains(res.Members, m.PeerID()) })
	if i < 0 {
		t.Fatalf("no standby member besides the bootstrap node in %v", res.Members)
	}
	ms[i].Close()
	cs, err := contentstore.Open(filepath.Join(homes[i], "store"), contentstore.WithPack(0))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.GetMeta(custody.LeaseStateKey(res.DID)); err != nil {
		t.Fatalf("the member's lease state record before the damage: %v", err)
	}
	if err := cs.DeleteMeta(custody.LeaseStateKey(res.DID)); err != nil {
		t.Fatal(err)
	}
	cs.Close()
	back, err := StartMesh(context.Background(), cfgFor(homes[i], []string{ms[0].PeerAddrs()[0]}))
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	if st, err := back.Custody.Agent(res.DID); !errors.Is(err, custody.ErrNotMember) {
		t.Fatalf("a member without its lease state took part again: %+v %v", st, err)
	}
	// The refusal keeps the evidence: group file and key stay for the operator.
	if _, err := back.Keys.Get(res.DID); err != nil {
		t.Fatalf("the refused membership's key: %v", err)
	}
	if _, err := custody.LoadPersisted(filepath.Join(homes[i], "custody"), back.Store); !errors.Is(err, custody.ErrNoLeaseState) {
		t.Fatalf("LoadPersisted (fsck) on the damaged home: %v", err)
	}
	rest := []*Mesh{ms[0], ms[3-i]}
	eventually(t, "the agent to run on in its group", 20*time.Second, func() error {
		if holderOf(rest, res.DID) == nil {
			return fmt.Errorf("nobody runs it")
		}
		return nil
	})
	// The repair (igor-node fsck --forget) on the stopped node: refused
	// while it runs, then the membership is gone and the key stays.
	if err := ForgetMembership(homes[i], res.DID); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("ForgetMembership on a running node's home: %v", err)
	}
	back.Close()
	if err := ForgetMembership(homes[i], res.DID); err != nil {
		t.Fatalf("ForgetMembership: %v", err)
	}
	cs, err = contentstore.Open(filepath.Join(homes[i], "store"), contentstore.WithPack(0))
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	if ps, err := custody.LoadPersisted(filepath.Join(homes[i], "custody"), cs); err != nil || len(ps) != 0 {
		t.Fatalf("after ForgetMembership: LoadPersisted = %+v, %v; want no membership", ps, err)
	}
	cs.Close()
	if err := ForgetMembership(homes[i], res.DID); !errors.Is(err, custody.ErrNotMember) {
		t.Fatalf("ForgetMembership of a forgotten membership: %v, want ErrNotMember", err)
	}
	if _, err := os.Stat(filepath.Join(homes[i], "keys", agents.AgentID(res.DID)+".key")); err != nil {
		t.Fatalf("the agent key after ForgetMembership: %v", err)
	}
}

// TestEngineCarriesLeaseTraffic: at steady state (no checkpoint due) the
// heartbeats, acknowledgements and ticks of every group are stepped by the
// engine without waking the groups' driver goroutines (DECISIONS D53), and
// the agents keep running exactly once.
func TestEngineCarriesLeaseTraffic(t *testing.T) {
	ms := benchMeshes(t, 3, 8, hosting.RunOptions{TickInterval: 100 * time.Millisecond, CheckpointEvery: 1000, Price: -1})
	waitHosts(t, ms, 3)
	wasm, man := testagents.Bytes(t, "counter")
	const agents = 6
	var dids []string
	for i := 0; i < agents; i++ {
		res, err := ms[i%3].Publish(context.Background(), wasm, man, 100_000_000, nil)
		if err != nil {
			t.Fatal(err)
		}
		dids = append(dids, res.DID)
	}
	eventually(t, "every agent to run", 20*time.Second, func() error {
		for _, did := range dids {
			if holderOf(ms, did) == nil {
				return fmt.Errorf("%s runs nowhere", did)
			}
		}
		return nil
	})
	time.Sleep(2 * time.Second) // the groups' first commits and fetches settle
	stats := func() (s custody.EngineStats) {
		for _, m := range ms {
			e := m.Custody.EngineStats()
			s.Inline += e.Inline
			s.Loop += e.Loop
		}
		return s
	}
	const window = 4 * time.Second
	before := stats()
	time.Sleep(window)
	after := stats()
	inline, loop := after.Inline-before.Inline, after.Loop-before.Loop
	timing, err := custodyTiming(custody.DefaultTiming())
	if err != nil {
		t.Fatal(err)
	}
	if timing.PairLeases {
		// Pair leases (on unless IGOR_PAIR_LEASES=0, D69): the beats renew every
		// lease; an idle group steps about once a second on its holder (its
		// lease end) and its followers not at all — per-group rounds would
		// be ≥ 8 steps per group-second.
		if limit := uint64(agents * 2 * window / time.Second); inline > limit || loop > limit {
			t.Fatalf("%d inline steps and %d driver wake-ups in %v for %d idle groups with pair leases, want ≤ %d each", inline, loop, window, agents, limit)
		}
	} else {
		// Each group sends 2 heartbeat rounds a second to 2 standbys, and each
		// heartbeat is acknowledged: ≥ 8 steps per group-second, counted at
		// half for slack.
		if want := uint64(agents * 4 * window / time.Second); inline < want {
			t.Fatalf("%d inline steps in %v for %d groups, want ≥ %d", inline, window, agents, want)
		}
		if loop*10 > inline {
			t.Fatalf("driver goroutines woke %d times against %d inline steps: lease traffic is not carried by the engine", loop, inline)
		}
	}
	for _, did := range dids {
		n := 0
		for _, m := range ms {
			if st, err := m.Custody.Agent(did); err == nil && st.Running {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("%s runs on %d nodes", did, n)
		}
	}
	t.Logf("%v: %d inline steps, %d driver wake-ups", window, inline, loop)
}

// IGOR_PAIR_LEASES: unset keeps the timing given, 0 and 1 set pair leases
// off and on, anything else is refused with what to write instead.
func TestPairLeasesSetting(t *testing.T) {
	for _, c := range []struct {
		env  string
		want bool
		bad  bool
	}{{"", true, false}, {"0", false, false}, {"1", true, false}, {"off", false, true}, {"true", false, true}} {
		t.Setenv("IGOR_PAIR_LEASES", c.env)
		got, err := custodyTiming(custody.Timing{})
		switch {
		case c.bad:
			if err == nil || !strings.Contains(err.Error(), "want 0") {
				t.Errorf("IGOR_PAIR_LEASES=%q: %v; want a refusal saying what to write", c.env, err)
			}
		case err != nil:
			t.Errorf("IGOR_PAIR_LEASES=%q: %v", c.env, err)
		case c.env == "" && got != (custody.Timing{}):
			t.Errorf("unset: the timing given changed to %+v", got)
		case c.env != "" && got.PairLeases != c.want:
			t.Errorf("IGOR_PAIR_LEASES=%q: pair leases %t, want %t", c.env, got.PairLeases, c.want)
		}
	}
}
