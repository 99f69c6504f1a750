package custody

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"

	"github.com/igor-mesh/igor-node/agents"
	"github.com/igor-mesh/igor-node/hosting"
	"github.com/igor-mesh/igor-node/hosting/lease"
	"github.com/igor-mesh/igor-node/internal/transcript"
)

var rewriteDriver = flag.Bool("rewrite", false, "rewrite testdata/driver/*.txt transcripts with the actual output")

// Driver transcripts (testdata/driver/*.txt): one real driver — its lease
// machine, phase machine, store and Manager — on node a, with a fake clock,
// the other members' messages written by hand, and fakes for the runner,
// the network and the node's hooks that print what the driver asks of
// them. The format is internal/transcript's: a command, ----, its output.
//
// Commands:
//
//	init members=a,b,c [campaign]       join a new group (self is a)
//	tick [n=N] [quiet]                  advance the clock N lease ticks, stepping
//	                                    the driver as the engine and its loop would
//	pause d=DURATION                    the clock moves on, nothing is stepped
//	term                                a lease term ends (placement review)
//	deliver FROM TYPE e=N [r=N] [cp=SEQ:NAME] [at=N] [commit=N] [seq=N] [reject] [hint=N]
//	checkpoint seq=N                    the running agent wrote checkpoint cpN
//	exit                                the agent stopped by itself (budget)
//	superseded e=N                      a head record at epoch N was seen
//	drain                               the node starts draining
//	autoack PEER...                     these peers acknowledge every Append from now on
//	answer KIND=VALUE                   what the next calls return: review=PEER,
//	                                    replace=PEER,PEER|err|nochange, regroup=ok|err,
//	                                    accept=ok|full|exhausted, ensure=ok|err,
//	                                    control=ok|REASON (the check), apply=ok|inside,
//	                                    jobs=hold|run (hold: what the driver spawns — fetches,
//	                                    reviews — waits until jobs=run)
//	status                              the membership's status
//
// After each command the driver's phase, role and epoch are printed when
// they changed, and every refused phase move fails the test.
func TestDriverTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/driver/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in testdata/driver: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			runDriverTranscript(t, f)
		})
	}
}

func runDriverTranscript(t *testing.T, path string) {
	e := &denv{t: t, names: map[string]string{}, cids: map[string]cid.Cid{}, seqs: map[string]uint64{}, now: time.Unix(1_000_000, 0),
		answers: map[string]string{}}
	defer e.close()
	transcript.Run(t, path, *rewriteDriver, e.run)
	if e.m != nil {
		if bad := e.m.badMoves.Load(); bad != 0 {
			t.Errorf("%d phase moves refused", bad)
		}
	}
}

// denv is the driver's world: it implements Net, Runner, Meta and the
// hooks, printing every call into out.
type denv struct {
	t   *testing.T
	m   *Manager
	d   *driver
	did string

	mu      sync.Mutex // guards everything below (jobs call in from goroutines)
	now     time.Time
	out     strings.Builder
	names   map[string]string // CID → name
	cids    map[string]cid.Cid
	seqs    map[string]uint64 // checkpoint name → seq
	jobs    []func()
	answers map[string]string
	meta    memMeta
	lease   *hosting.Lease // the runner's current lease
	runSeq  uint64         // the seq the running agent is at
	last    string         // the state line printed last
	mute    bool           // tick ... quiet: lease traffic not printed
	muted   int
	autoack map[string]bool  // peers that acknowledge every Append (autoack)
	replies []lease.Message  // their acknowledgements, delivered by settle
	ctlDone chan controlDone // the answer to the latest control command
}

func (e *denv) printf(format string, a ...any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	line := fmt.Sprintf(format, a...)
	if e.mute && (strings.HasPrefix(line, "send ") || strings.HasPrefix(line, "recv ")) {
		e.muted++
		return
	}
	e.out.WriteString(line + "\n")
}

func (e *denv) answer(kind, def string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	if v, ok := e.answers[kind]; ok {
		return v
	}
	return def
}

// cid names checkpoints: "g" is the genesis, cpN the agent's checkpoint N.
func (e *denv) cid(name string) cid.Cid {
	e.mu.Lock()
	defer e.mu.Unlock()
	if c, ok := e.cids[name]; ok {
		return c
	}
	h, _ := multihash.Sum([]byte(name), multihash.SHA2_256, -1)
	c := cid.NewCidV1(cid.DagCBOR, h)
	e.cids[name], e.names[c.String()] = c, name
	return c
}

// name is the printed name of a CID (in a message or a hard state).
func (e *denv) name(s string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	for id, n := range e.names {
		s = strings.ReplaceAll(s, id, n)
	}
	return s
}

func (e *denv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *denv) spawn(f func()) {
	e.mu.Lock()
	e.jobs = append(e.jobs, f)
	e.mu.Unlock()
}

// Net

func (e *denv) Send(did string, gid GroupID, msg lease.Message) {
	e.printf("send %s", e.name(lease.DescribeMessage(msg)))
	e.mu.Lock()
	defer e.mu.Unlock()
	if msg.Type == lease.MsgAppend && e.autoack[msg.To] {
		e.replies = append(e.replies, lease.Message{Type: lease.MsgAppendAck, From: msg.To, To: msg.From, Epoch: msg.Epoch, Round: msg.Round,
			Checkpoint: lease.Checkpoint{Seq: msg.Checkpoint.Seq}, Conf: lease.Conf{Index: msg.Conf.Index}})
	}
}

func (e *denv) Ensure(ctx context.Context, did string, c cid.Cid, peers []string, stop map[string]bool) error {
	if ctx.Err() != nil {
		e.printf("ensure %s from %v → cancelled", e.name(c.String()), peers)
		return ctx.Err()
	}
	ans := e.answer("ensure", "ok")
	e.printf("ensure %s from %v → %s", e.name(c.String()), peers, ans)
	if ans != "ok" {
		return errors.New("transcript: fetch failed")
	}
	return nil
}

func (e *denv) Push(did string, gid GroupID, h hosting.Head, to []string) {
	e.printf("push %s to %v", e.name(h.CID.String()), to)
}

// Runner

func (e *denv) Accept(ctx context.Context, l hosting.Lease) (hosting.Status, error) {
	ans := e.answer("accept", "ok")
	name := e.name(l.Head.String())
	e.printf("runner: start e%d from %s → %s", l.Epoch, name, ans)
	switch ans {
	case "full":
		return hosting.Status{}, hosting.ErrNoCapacity
	case "exhausted":
		return hosting.Status{}, hosting.ErrBudgetExhausted
	case "stopped":
		return hosting.Status{}, hosting.ErrAgentStopped
	}
	e.mu.Lock()
	e.lease, e.runSeq = &l, e.seqs[name]
	e.mu.Unlock()
	return hosting.Status{DID: e.did, Running: true, Epoch: l.Epoch}, nil
}

func (e *denv) Stop(ctx context.Context, did string, final bool) (hosting.Head, error) {
	e.mu.Lock()
	running := e.lease != nil
	e.lease = nil
	seq := e.runSeq + 1
	e.mu.Unlock()
	if !running {
		e.printf("runner: stop: not running")
		return hosting.Head{}, hosting.ErrNotHosted
	}
	if !final {
		e.printf("runner: stop")
		return hosting.Head{}, nil
	}
	name := fmt.Sprintf("final%d", seq)
	e.mu.Lock()
	e.seqs[name] = seq
	e.mu.Unlock()
	e.printf("runner: stop with a final checkpoint %d:%s", seq, name)
	return hosting.Head{CID: e.cid(name), Checkpoint: &agents.Checkpoint{Agent: did, Seq: seq, Budget: 1}}, nil
}

func (e *denv) Forget(did string) error { return nil }

func (e *denv) ControlHead(c cid.Cid, ctl *agents.Control) (hosting.Head, error) {
	name := e.name(c.String())
	ans := e.answer("control", "ok")
	e.printf("runner: check %s on %s → %s", ctl.Kind, name, ans)
	if ans != "ok" {
		return hosting.Head{}, fmt.Errorf("%w: %s", agents.ErrControl, ans)
	}
	e.mu.Lock()
	seq := e.seqs[name]
	e.mu.Unlock()
	return hosting.Head{CID: c, Checkpoint: &agents.Checkpoint{Agent: e.did, Seq: seq, Budget: 1}}, nil
}

func (e *denv) Control(head hosting.Head, key ed25519.PrivateKey, epoch uint64, ctl *agents.Control) (hosting.Head, error) {
	seq := head.Checkpoint.Seq + 1
	name := fmt.Sprintf("ctl%d", seq)
	if e.answer("apply", "ok") == "inside" {
		e.printf("runner: %s on %s → inside a tick", ctl.Kind, e.name(head.CID.String()))
		return hosting.Head{}, fmt.Errorf("%w: %s", hosting.ErrInsideTick, e.name(head.CID.String()))
	}
	e.mu.Lock()
	e.seqs[name] = seq
	e.mu.Unlock()
	e.printf("runner: %s on %s at e%d → %d:%s", ctl.Kind, e.name(head.CID.String()), epoch, seq, name)
	return hosting.Head{CID: e.cid(name), Checkpoint: &agents.Checkpoint{Agent: e.did, Seq: seq, Budget: 1,
		Stopped: ctl.Kind == agents.ControlStop, Control: ctl}}, nil
}

// Meta prints each lease state persisted.

type dmeta struct{ e *denv }

func (m dmeta) PutMeta(k string, v []byte) error {
	if hs, err := lease.DecodeHardState(v); err == nil {
		m.e.printf("persist %s", m.e.name(hs.String()))
	}
	return m.e.meta.PutMeta(k, v)
}
func (m dmeta) PutMetaDeferred(k string, v []byte) error { return m.PutMeta(k, v) }
func (m dmeta) GetMeta(k string) ([]byte, error)         { return m.e.meta.GetMeta(k) }
func (m dmeta) DeleteMeta(k string) error                { return m.e.meta.DeleteMeta(k) }
func (m dmeta) MetaKeys(p string) ([]string, error)      { return m.e.meta.MetaKeys(p) }

// Hooks

func (e *denv) hooks() Hooks {
	return Hooks{
		Committed: func(c Commit) {
			e.printf("committed %d:%s e%d publish=%t", c.Seq, e.name(c.CID.String()), c.Epoch, c.Publish)
		},
		Review: func(ctx context.Context, did string, live []string, away bool) string {
			ans := e.answer("review", "")
			e.printf("hook: review live=%v away=%t → %q", live, away, ans)
			return ans
		},
		Replace: func(ctx context.Context, p ReplaceParams) ([]string, error) {
			ans := e.answer("replace", "nochange")
			e.printf("hook: replace members=%v dead=%v → %s", p.Members, p.Dead, ans)
			switch ans {
			case "nochange":
				return nil, ErrNoChange
			case "err":
				return nil, errors.New("transcript: no host")
			}
			members := strings.Split(ans, ",")
			conf, err := p.Conf(ctx, members)
			if err != nil {
				return nil, err
			}
			e.printf("hook: replace reserved %s", conf)
			return members, nil
		},
		Regroup: func(p RegroupParams) error {
			ans := e.answer("regroup", "ok")
			e.printf("hook: regroup from %d:%s e%d members=%v dead=%v toward=%q → %s", p.Seq, e.name(p.Head.String()), p.Epoch, p.Members, p.Dead, p.Toward, ans)
			if ans != "ok" {
				return errors.New("transcript: regroup failed")
			}
			return nil
		},
	}
}

func (e *denv) close() {
	if e.m != nil {
		e.m.Close()
	}
}

func (e *denv) run(line string) string {
	e.t.Helper()
	f := strings.Fields(line)
	cmd, args := f[0], map[string]string{}
	var pos []string
	for _, a := range f[1:] {
		if k, v, ok := strings.Cut(a, "="); ok {
			args[k] = v
		} else {
			pos = append(pos, a)
		}
	}
	num := func(k string, def uint64) uint64 {
		v, ok := args[k]
		if !ok {
			return def
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			e.t.Fatalf("%s: %s=%q is not a number", line, k, v)
		}
		return n
	}
	if cmd != "init" && cmd != "answer" && e.d == nil {
		e.t.Fatalf("%s: init first", line)
	}
	switch cmd {
	case "init":
		e.init(strings.Split(args["members"], ","), slices.Contains(pos, "campaign"))
	case "tick":
		e.mu.Lock()
		e.mute = slices.Contains(pos, "quiet")
		e.mu.Unlock()
		for range num("n", 1) {
			e.mu.Lock()
			e.now = e.now.Add(e.m.cfg.Timing.Interval)
			e.mu.Unlock()
			e.tick()
		}
	case "pause":
		// The process stands still (SIGSTOP, a VM pause): the clock moves
		// on and nothing is stepped until the next command.
		d, err := time.ParseDuration(args["d"])
		if err != nil {
			e.t.Fatalf("%s: d=%q: %v", line, args["d"], err)
		}
		e.mu.Lock()
		e.now = e.now.Add(d)
		e.mu.Unlock()
	case "term":
		e.iterate(nil, true)
	case "deliver":
		if len(pos) != 2 {
			e.t.Fatalf("%s: want deliver FROM TYPE", line)
		}
		msg := lease.Message{From: pos[0], To: "a", Epoch: num("e", 0), Round: num("r", 0), Commit: num("commit", 0),
			AcceptedAt: num("at", 0), Reject: slices.Contains(pos, "reject"), Hint: num("hint", 0)}
		types := map[string]lease.MsgType{"Append": lease.MsgAppend, "AppendAck": lease.MsgAppendAck, "PromiseRequest": lease.MsgPromiseRequest,
			"Promise": lease.MsgPromise, "Release": lease.MsgRelease, "Handoff": lease.MsgHandoff}
		typ, ok := types[pos[1]]
		if !ok {
			e.t.Fatalf("%s: unknown message type %q", line, pos[1])
		}
		msg.Type = typ
		if cp, ok := args["cp"]; ok {
			s, n, _ := strings.Cut(cp, ":")
			seq, _ := strconv.ParseUint(s, 10, 64)
			msg.Checkpoint = lease.Checkpoint{Seq: seq, ID: e.cid(n).String()}
			e.mu.Lock()
			e.seqs[n] = seq
			e.mu.Unlock()
		}
		if seq, ok := args["seq"]; ok {
			msg.Checkpoint.Seq, _ = strconv.ParseUint(seq, 10, 64)
		}
		e.deliver(msg)
	case "autoack":
		e.mu.Lock()
		e.autoack = map[string]bool{}
		for _, p := range pos {
			e.autoack[p] = true
		}
		e.mu.Unlock()
	case "checkpoint":
		e.mu.Lock()
		l := e.lease
		e.mu.Unlock()
		if l == nil {
			e.t.Fatalf("%s: the agent does not run", line)
		}
		seq := num("seq", 0)
		name := fmt.Sprintf("cp%d", seq)
		e.mu.Lock()
		e.runSeq, e.seqs[name] = seq, seq
		e.mu.Unlock()
		l.OnCheckpoint(hosting.Head{CID: e.cid(name), Checkpoint: &agents.Checkpoint{Agent: e.did, Seq: seq}})
	case "exit":
		e.mu.Lock()
		l := e.lease
		e.lease = nil
		e.mu.Unlock()
		l.OnExit(hosting.Result{}, hosting.ErrBudgetExhausted)
	case "superseded":
		e.printf("superseded: %t", e.m.Superseded(e.did, num("e", 0)))
	case "final":
		// The node stops with nowhere to hand the agent (Manager.Checkpoint).
		e.ctlDone = make(chan controlDone, 1)
		e.d.send(e.m.ctx, event{kind: evFinal, done: e.ctlDone})
	case "control":
		// An owner's record (not signed: the fake runner checks nothing
		// but its answer=control); its answer is printed when it comes.
		if len(pos) != 1 {
			e.t.Fatalf("%s: want control KIND", line)
		}
		e.ctlDone = make(chan controlDone, 1)
		e.d.send(e.m.ctx, event{kind: evControl, ctl: &agents.Control{Kind: agents.ControlKind(pos[0]), Agent: e.did, Seq: 1}, done: e.ctlDone})
	case "drain":
		e.m.BeginDrain()
		e.d.send(e.m.ctx, event{kind: evReview})
	case "answer":
		e.mu.Lock()
		for k, v := range args {
			e.answers[k] = v
		}
		e.mu.Unlock()
	case "status":
		st, _ := e.m.Agent(e.did)
		e.printf("status: role=%s phase=%s running=%t moving=%t epoch=%d accepted=%d:%s committed=%s holder=%s members=%v",
			st.Role, st.Phase, st.Running, st.Moving, st.Epoch, st.AcceptedSeq, e.name(st.Accepted), e.name(st.Committed), st.Holder, st.Members)
	default:
		e.t.Fatalf("%s: unknown command", line)
	}
	if e.d != nil {
		e.settle()
	}
	if e.ctlDone != nil {
		select {
		case r := <-e.ctlDone:
			e.printf("control answered: %s err=%v", e.name(r.id), r.err)
			e.ctlDone = nil
		default:
		}
	}
	e.mu.Lock()
	if e.mute {
		fmt.Fprintf(&e.out, "(%d messages sent and received)\n", e.muted)
		e.mute, e.muted = false, 0
	}
	e.mu.Unlock()
	if e.d != nil {
		e.state()
	}
	e.mu.Lock()
	s := e.out.String()
	e.out.Reset()
	e.mu.Unlock()
	return s
}

// deliver hands msg to the manager as the node's stream reader does.
func (e *denv) deliver(msg lease.Message) {
	if err := e.m.Deliver(e.did, e.d.gid, msg.From, msg); err != nil {
		e.printf("deliver: %v", err)
	}
	e.d.own.Lock()
	quiet := e.d.quiet()
	e.d.own.Unlock()
	if !quiet {
		e.kick()
	}
}

func (e *denv) init(members []string, campaign bool) {
	key, did := simAgent(0)
	e.did = did
	g := e.cid("g")
	man := &manual{now: e.clock, spawn: e.spawn, rand: func() uint64 { return 0 }}
	m, err := newManager(Config{Dir: e.t.TempDir(), Self: "a", Service: e, Blocks: simBlocks{}, Keys: &simKeys{keys: map[string]ed25519.PrivateKey{}},
		Net: e, Hooks: e.hooks(), Meta: dmeta{e}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, man)
	if err != nil {
		e.t.Fatal(err)
	}
	e.m = m
	e.meta.m = map[string][]byte{}
	grp := &Group{Version: 1, Agent: did, Members: slices.Sorted(slices.Values(members)), Genesis: g.String(), TermMs: 30_000, Publisher: "a"}
	if err := m.Join(JoinParams{Group: grp, Key: key, Campaign: campaign}); err != nil {
		e.t.Fatal(err)
	}
	m.mu.Lock()
	e.d = m.drivers[did]
	m.mu.Unlock()
}

// tick is one lease tick of the clock: a quiet driver is stepped by the
// engine when its wake tick is due; any other by its loop's timer.
func (e *denv) tick() {
	now := int64(e.clock().Sub(e.m.t0) / e.m.cfg.Timing.Interval)
	e.d.own.Lock()
	quiet := e.d.quiet()
	e.d.own.Unlock()
	switch {
	case quiet && e.d.wake.Load() <= now:
		if !e.d.stepInline(nil) {
			e.kick()
		}
	case !quiet:
		e.iterate(nil, false)
	}
	e.settle()
}

func (e *denv) kick() {
	select {
	case <-e.d.poke:
	default:
	}
	e.iterate(nil, false)
}

// iterate is one turn of the driver's loop.
func (e *denv) iterate(ev *event, termEnd bool) {
	e.d.own.Lock()
	if ev != nil {
		e.d.queued.Add(-1)
	}
	if e.d.phase != phFailed {
		e.d.iterate(ev, termEnd)
		e.d.setWake()
	}
	e.d.own.Unlock()
}

// settle runs the jobs the driver spawned, one at a time, stepping the
// events they send (a job may wait for one: Replace's Conf), until
// nothing is left: the transcript's order is the driver's, not the
// scheduler's.
func (e *denv) settle() {
	for {
		select {
		case ev := <-e.d.inbox:
			e.iterate(ev, false)
			continue
		case <-e.d.poke:
			e.iterate(nil, false)
			continue
		default:
		}
		e.mu.Lock()
		if len(e.replies) > 0 {
			msg := e.replies[0]
			e.replies = e.replies[1:]
			e.mu.Unlock()
			e.printf("recv %s", lease.DescribeMessage(msg))
			e.deliver(msg)
			continue
		}
		if len(e.jobs) == 0 || e.answers["jobs"] == "hold" {
			e.mu.Unlock()
			return
		}
		job := e.jobs[0]
		e.jobs = e.jobs[1:]
		e.mu.Unlock()
		done := make(chan struct{})
		go func() {
			defer close(done)
			job()
		}()
		for running := true; running; {
			select {
			case <-done:
				running = false
			case ev := <-e.d.inbox:
				e.iterate(ev, false)
			case <-time.After(5 * time.Second):
				e.t.Fatal("a job the driver spawned did not end")
			}
		}
	}
}

// state prints the driver's phase, role and epoch when they changed.
func (e *denv) state() {
	if e.d == nil {
		return
	}
	e.d.own.Lock()
	s := fmt.Sprintf("state: %s %s e%d", e.d.phase, e.d.mc.Role(), e.d.mc.Epoch())
	if e.d.started {
		s += " agent running"
	}
	e.d.own.Unlock()
	if s != e.last {
		e.last = s
		e.printf("%s", s)
	}
}
