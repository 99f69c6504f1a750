package custody

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/contentstore"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/lease"
)

// The engine simulation: many groups on a few nodes, each node a real
// Manager (real drivers, real lease machines, the real engine stepping
// them inline and the real lease-state log), connected by an in-memory
// network that delays, drops and partitions, running agents in a fake
// runner that honours the lease fence like hosting's. After every tick of
// every agent it checks the invariants of issue "Custody engine":
//   - one runner per agent: no two nodes' ticks of an agent overlap in time;
//   - nothing committed is lost: a holder starts from a checkpoint at or
//     above every one a majority committed before;
//   - epochs only grow at each node.
// At the end, with the faults healed, every agent runs on exactly one node.
//
// IGOR_ENGINE_SIM_SECONDS lengthens the faulty phase (make bench-scale runs
// a long one); the default keeps it short for make test.

type simWorld struct {
	t     testing.TB
	start time.Time
	rng   *rand.Rand
	rngMu sync.Mutex

	mu        sync.Mutex
	cut       map[string]bool // isolated nodes: nothing in or out
	seqOf     map[string]uint64
	committed map[string]uint64                      // did → highest committed seq
	last      map[string]map[string][2]time.Duration // did → node → last tick interval
	epochs    map[string]map[string]uint64           // did → node → highest epoch seen
	fail      error
	ticks     atomic.Int64
	dropped   atomic.Int64

	nodes map[string]*simNode
}

type simNode struct {
	w     *simWorld
	self  string
	m     *Manager
	store *contentstore.Store
	keys  *simKeys

	mu     sync.Mutex
	out    map[string]chan simFrame // per destination: one ordered "stream"
	held   map[string][]simFrame
	corks  int
	runs   map[string]*simRun
	closed bool
	// slow: Stop waits this long before it stops the run (a stop held up
	// by a tick in flight, or a starved process): only the fence keeps the
	// runner from ticking past the lease meanwhile.
	slow atomic.Int64
}

type simFrame struct {
	did string
	gid GroupID
	msg lease.Message
}

func (w *simWorld) randN(n int) int {
	w.rngMu.Lock()
	defer w.rngMu.Unlock()
	return w.rng.IntN(n)
}

func (w *simWorld) failf(format string, a ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail == nil {
		w.fail = fmt.Errorf(format, a...)
	}
}

func (w *simWorld) now() time.Duration { return time.Since(w.start) }

// Net.

func (n *simNode) Send(did string, gid GroupID, msg lease.Message) {
	f := simFrame{did: did, gid: gid, msg: msg}
	n.mu.Lock()
	if n.corks > 0 {
		if n.held == nil {
			n.held = map[string][]simFrame{}
		}
		n.held[msg.To] = append(n.held[msg.To], f)
		n.mu.Unlock()
		return
	}
	n.mu.Unlock()
	n.push(msg.To, []simFrame{f})
}

func (n *simNode) Cork() {
	n.mu.Lock()
	n.corks++
	n.mu.Unlock()
}

func (n *simNode) Uncork() {
	n.mu.Lock()
	n.corks--
	var held map[string][]simFrame
	if n.corks == 0 {
		held, n.held = n.held, nil
	}
	n.mu.Unlock()
	for to, fs := range held {
		n.push(to, fs)
	}
}

// push hands frames to the ordered stream to a peer, whose reader delivers
// them after a random delay (in order), unless either end is isolated or
// the frame is lost.
func (n *simNode) push(to string, fs []simFrame) {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	q, ok := n.out[to]
	if !ok {
		q = make(chan simFrame, 4096)
		n.out[to] = q
		go n.w.reader(n.self, to, q)
	}
	n.mu.Unlock()
	for _, f := range fs {
		select {
		case q <- f:
		default:
			n.w.dropped.Add(1)
		}
	}
}

func (w *simWorld) reader(from, to string, q chan simFrame) {
	for f := range q {
		time.Sleep(time.Duration(w.randN(3000)) * time.Microsecond)
		w.mu.Lock()
		cut := w.cut[from] || w.cut[to]
		dst := w.nodes[to]
		w.mu.Unlock()
		if cut || dst == nil || w.randN(100) < 2 {
			w.dropped.Add(1)
			continue
		}
		if err := dst.m.Deliver(f.did, f.gid, from, f.msg); err != nil && !errors.Is(err, ErrNotMember) && !errors.Is(err, ErrClosed) {
			w.failf("deliver %s→%s: %v", from, to, err)
		}
	}
}

func (n *simNode) Ensure(ctx context.Context, did string, c cid.Cid, peers []string, stop map[string]bool) error {
	n.w.mu.Lock()
	_, ok := n.w.seqOf[c.String()]
	n.w.mu.Unlock()
	if !ok {
		return fmt.Errorf("sim: unknown checkpoint %s", c)
	}
	return nil
}

func (n *simNode) Push(string, GroupID, cid.Cid, []string) {}

// Keys and blocks.

type simKeys struct {
	mu   sync.Mutex
	keys map[string]ed25519.PrivateKey
}

func (k *simKeys) Put(priv ed25519.PrivateKey) (string, error) {
	did := agents.DID(priv.Public().(ed25519.PublicKey))
	k.mu.Lock()
	k.keys[did] = priv
	k.mu.Unlock()
	return did, nil
}

func (k *simKeys) Get(did string) (ed25519.PrivateKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p, ok := k.keys[did]; ok {
		return p, nil
	}
	return nil, os.ErrNotExist
}

func (k *simKeys) Delete(did string) error {
	k.mu.Lock()
	delete(k.keys, did)
	k.mu.Unlock()
	return nil
}

type simBlocks struct{}

func (simBlocks) Pin(cid.Cid) error   { return nil }
func (simBlocks) Unpin(cid.Cid) error { return nil }

// The runner: an agent that ticks every simTick, each tick lasting
// simTickLen, and only when the tick would end before the lease fence (as
// hosting's runner); a checkpoint every simCheckpointEvery ticks.

const (
	simTick            = 10 * time.Millisecond
	simTickLen         = 2 * time.Millisecond
	simCheckpointEvery = 3
)

type simRun struct {
	did   string
	epoch uint64
	seq   uint64
	l     hosting.Lease
	stop  chan bool // true: final checkpoint
	done  chan hosting.Head
}

func (w *simWorld) checkpointCID(did, node string, epoch, seq uint64) cid.Cid {
	h, _ := multihash.Sum([]byte(fmt.Sprintf("%s/%s/%d/%d", did, node, epoch, seq)), multihash.SHA2_256, -1)
	c := cid.NewCidV1(cid.DagCBOR, h)
	w.mu.Lock()
	w.seqOf[c.String()] = seq
	w.mu.Unlock()
	return c
}

func (n *simNode) Accept(ctx context.Context, l hosting.Lease) (hosting.Status, error) {
	w := n.w
	did := agents.DID(l.Key.Public().(ed25519.PublicKey))
	w.mu.Lock()
	seq, ok := w.seqOf[l.Head.String()]
	if ok && seq < w.committed[did] {
		w.mu.Unlock()
		w.failf("%s starts %s at epoch %d from seq %d, below the committed seq %d", n.self, short(did), l.Epoch, seq, w.committed[did])
		return hosting.Status{}, errors.New("sim: committed checkpoint lost")
	}
	w.mu.Unlock()
	if !ok {
		return hosting.Status{}, fmt.Errorf("sim: unknown head %s", l.Head)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.runs[did]; ok {
		return hosting.Status{}, hosting.ErrAlreadyHosted
	}
	r := &simRun{did: did, epoch: l.Epoch, seq: seq, l: l, stop: make(chan bool, 1), done: make(chan hosting.Head, 1)}
	n.runs[did] = r
	go n.run(r)
	return hosting.Status{DID: did, Running: true, Epoch: l.Epoch}, nil
}

func (n *simNode) run(r *simRun) {
	w := n.w
	t := time.NewTicker(simTick)
	defer t.Stop()
	ticks := 0
	checkpoint := func() hosting.Head {
		r.seq++
		c := w.checkpointCID(r.did, n.self, r.epoch, r.seq)
		return hosting.Head{CID: c, Checkpoint: &agents.Checkpoint{Agent: r.did, Seq: r.seq, Epoch: r.epoch}}
	}
	for {
		select {
		case final := <-r.stop:
			var h hosting.Head
			if final {
				h = checkpoint()
			}
			r.done <- h
			return
		case <-t.C:
		}
		start := time.Now()
		if !start.Add(simTickLen).Before(r.l.Fence()) {
			continue // fenced: the lease may end before the tick would
		}
		time.Sleep(simTickLen)
		w.tick(r.did, n.self, start.Sub(w.start), time.Since(w.start))
		if ticks++; ticks%simCheckpointEvery == 0 {
			r.l.OnCheckpoint(checkpoint())
		}
	}
}

// tick records one tick of did on node over [from, to] and checks that no
// other node ticked the agent at an overlapping time.
func (w *simWorld) tick(did, node string, from, to time.Duration) {
	w.ticks.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	per := w.last[did]
	if per == nil {
		per = map[string][2]time.Duration{}
		w.last[did] = per
	}
	for other, iv := range per {
		if other != node && from < iv[1] && iv[0] < to && w.fail == nil {
			w.fail = fmt.Errorf("%s ticked on %s over [%v, %v] and on %s over [%v, %v]: two runners", short(did), node, from, to, other, iv[0], iv[1])
		}
	}
	per[node] = [2]time.Duration{from, to}
}

func (n *simNode) Stop(ctx context.Context, did string, final bool) (hosting.Head, error) {
	n.mu.Lock()
	r, ok := n.runs[did]
	delete(n.runs, did)
	n.mu.Unlock()
	if !ok {
		return hosting.Head{}, hosting.ErrNotHosted
	}
	time.Sleep(time.Duration(n.slow.Load()))
	r.stop <- final
	select {
	case h := <-r.done:
		return h, nil
	case <-ctx.Done():
		return hosting.Head{}, ctx.Err()
	}
}

func (n *simNode) Forget(did string) error { return nil }

func short(did string) string { return did[len(did)-6:] }

func (w *simWorld) committedHook(c Commit) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if c.Seq > w.committed[c.DID] {
		w.committed[c.DID] = c.Seq
	}
}

// sampleEpochs checks that every node's epoch for every agent only grows.
func (w *simWorld) sampleEpochs() {
	for _, n := range w.nodes {
		for _, st := range n.m.Status() {
			w.mu.Lock()
			per := w.epochs[st.DID]
			if per == nil {
				per = map[string]uint64{}
				w.epochs[st.DID] = per
			}
			if st.Epoch < per[n.self] && w.fail == nil {
				w.fail = fmt.Errorf("%s: epoch of %s went from %d down to %d", n.self, short(st.DID), per[n.self], st.Epoch)
			}
			per[n.self] = st.Epoch
			w.mu.Unlock()
		}
	}
}

func simSeconds(tb testing.TB) time.Duration {
	s := os.Getenv("IGOR_ENGINE_SIM_SECONDS")
	if s == "" {
		if testing.Short() {
			return 4 * time.Second
		}
		return 8 * time.Second
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		tb.Fatalf("IGOR_ENGINE_SIM_SECONDS=%q: want a positive number of seconds", s)
	}
	return time.Duration(n) * time.Second
}

func TestEngineSimManyGroups(t *testing.T) {
	const nodes, groups = 5, 40
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("IGOR_ENGINE_SIM_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("seed %d (IGOR_ENGINE_SIM_SEED reruns it)", seed)
	w := &simWorld{t: t, start: time.Now(), rng: rand.New(rand.NewPCG(seed, 1)), cut: map[string]bool{},
		seqOf: map[string]uint64{}, committed: map[string]uint64{}, last: map[string]map[string][2]time.Duration{},
		epochs: map[string]map[string]uint64{}, nodes: map[string]*simNode{}}
	timing := DefaultTiming()
	timing.Interval = 10 * time.Millisecond // heartbeats every 50 ms, leases of 150 ms
	var names []string
	for i := 0; i < nodes; i++ {
		names = append(names, fmt.Sprintf("node%d", i))
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, name := range names {
		st, err := contentstore.Open(t.TempDir(), contentstore.WithPack(0), contentstore.WithDeferredPackSync())
		if err != nil {
			t.Fatal(err)
		}
		n := &simNode{w: w, self: name, store: st, keys: &simKeys{keys: map[string]ed25519.PrivateKey{}},
			out: map[string]chan simFrame{}, runs: map[string]*simRun{}}
		n.m, err = NewManager(Config{Dir: t.TempDir(), Self: name, Service: n, Blocks: simBlocks{}, Keys: n.keys, Net: n,
			Hooks: Hooks{Committed: w.committedHook}, Timing: timing, Logger: logger, Meta: st})
		if err != nil {
			t.Fatal(err)
		}
		w.nodes[name] = n
	}
	defer func() {
		for _, n := range w.nodes {
			n.m.Close()
			n.mu.Lock()
			n.closed = true
			for _, q := range n.out {
				close(q)
			}
			n.mu.Unlock()
			n.store.Close()
		}
	}()
	var dids []string
	for g := 0; g < groups; g++ {
		seedKey := sha256.Sum256([]byte(fmt.Sprintf("sim-agent-%d", g)))
		key := ed25519.NewKeyFromSeed(seedKey[:])
		did := agents.DID(key.Public().(ed25519.PublicKey))
		dids = append(dids, did)
		members := slices.Sorted(slices.Values([]string{names[g%nodes], names[(g+1)%nodes], names[(g+2)%nodes]}))
		genesis := w.checkpointCID(did, "genesis", 0, 0)
		for _, p := range members {
			grp := &Group{Version: 1, Agent: did, Members: members, Genesis: genesis.String(), TermMs: 600_000, Publisher: members[0]}
			if err := w.nodes[p].m.Join(JoinParams{Group: grp, Key: key, Campaign: p == names[g%nodes]}); err != nil {
				t.Fatal(err)
			}
		}
	}
	runningOnce := func() error {
		for _, did := range dids {
			var on []string
			for _, n := range w.nodes {
				if st, err := n.m.Agent(did); err == nil && st.Running {
					on = append(on, n.self)
				}
			}
			if len(on) != 1 {
				return fmt.Errorf("%s runs on %v", short(did), on)
			}
		}
		return nil
	}
	waitFor := func(what string, d time.Duration, cond func() error) {
		t.Helper()
		deadline := time.Now().Add(d)
		for {
			w.sampleEpochs()
			err := cond()
			if err == nil {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %v", what, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitFor("every agent running once", 20*time.Second, runningOnce)

	// Faults: every 200–700 ms a node is isolated for 100–600 ms, and its
	// stops take up to 400 ms meanwhile (the engine's inline steps then run
	// against lapsing leases, takeovers and step-downs; only the fence
	// keeps a stopping holder's runner from ticking past its lease), with
	// 2 % of frames lost and up to 3 ms of delay always.
	end := time.Now().Add(simSeconds(t))
	faults := 0
	for time.Now().Before(end) {
		victim := names[w.randN(nodes)]
		w.mu.Lock()
		w.cut[victim] = true
		w.mu.Unlock()
		w.nodes[victim].slow.Store(int64(time.Duration(w.randN(400)) * time.Millisecond))
		faults++
		hold := time.Duration(100+w.randN(500)) * time.Millisecond
		for stop := time.Now().Add(hold); time.Now().Before(stop); time.Sleep(20 * time.Millisecond) {
			w.sampleEpochs()
		}
		w.mu.Lock()
		delete(w.cut, victim)
		w.nodes[victim].slow.Store(0)
		fail := w.fail
		w.mu.Unlock()
		if fail != nil {
			t.Fatal(fail)
		}
		time.Sleep(time.Duration(100+w.randN(200)) * time.Millisecond)
	}
	waitFor("every agent running once after the faults healed", 30*time.Second, runningOnce)
	w.mu.Lock()
	fail := w.fail
	w.mu.Unlock()
	if fail != nil {
		t.Fatal(fail)
	}
	var inline, loops uint64
	for _, n := range w.nodes {
		s := n.m.EngineStats()
		inline += s.Inline
		loops += s.Loop
	}
	if inline == 0 {
		t.Fatal("no step ran inline: the engine was not exercised")
	}
	t.Logf("%d groups on %d nodes, %d isolations: %d ticks, %d frames lost, %d inline steps, %d driver wake-ups",
		groups, nodes, faults, w.ticks.Load(), w.dropped.Load(), inline, loops)
}
