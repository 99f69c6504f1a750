package lease

import (
	"flag"
	"fmt"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/internal/transcript"
)

var rewrite = flag.Bool("rewrite", false, "rewrite testdata/*.txt transcripts with the actual output")

// TestTranscripts runs testdata/*.txt (internal/transcript's format); with
// -rewrite it rewrites them with the actual output.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no transcripts in testdata: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) {
			env := &tenv{t: t}
			transcript.Run(t, f, *rewrite, env.run)
		})
	}
}

// tenv is a deterministic network of machines for transcripts: one global
// tick count, a FIFO of messages in flight, partitions and crashes.
type tenv struct {
	t     *testing.T
	cfg   Config // template
	names []string
	nodes map[string]*tnode
	queue []Message
	held  []Message          // taken out of the network by hold, back with unhold
	side  map[string]int     // partition side; nil = healed
	cut   map[[2]string]bool // one-way cuts from→to
	now   int
	// reserved: the configuration the latest join reserved (reconfigure
	// proposes it).
	reserved Conf
}

type tnode struct {
	m    *Machine
	hs   HardState
	rank int
	up   bool
	rnd  uint64
	// paused (since global tick pausedAt): neither ticks nor steps;
	// messages to it wait in deferred.
	paused   bool
	pausedAt int
	deferred []Message
	left     bool // removed by a configuration change
}

// runs reports whether the node's agent may run now. A paused node's agent
// is frozen with it, and the driver fences it by LeaseEnd on the monotonic
// clock, which runs on while the machine's Now stands still.
func (nd *tnode) runs(now int) bool {
	if !nd.up || !nd.m.Running() {
		return false
	}
	return !nd.paused || nd.m.Now()+int64(now-nd.pausedAt) < nd.m.LeaseEnd()
}

func (e *tenv) fail(format string, a ...any) string { return "error: " + fmt.Sprintf(format, a...) }

func (e *tenv) run(line string) string {
	fields := strings.Fields(line)
	cmd, args := fields[0], fields[1:]
	kv := map[string]string{}
	var pos []string
	for _, a := range args {
		if k, v, ok := strings.Cut(a, "="); ok {
			kv[k] = v
		} else {
			pos = append(pos, a)
		}
	}
	num := func(k string, def int) int {
		if v, ok := kv[k]; ok {
			n, err := strconv.Atoi(v)
			if err != nil {
				e.t.Fatalf("%s: %s=%q is not a number", line, k, v)
			}
			return n
		}
		return def
	}
	var out strings.Builder
	switch cmd {
	case "init":
		e.names = strings.Split(kv["nodes"], ",")
		group := slices.Sorted(slices.Values(e.names))
		e.cfg = Config{Group: group, HeartbeatTicks: num("heartbeat", 2), LeaseTicks: num("lease", 10),
			WaitTicks: num("wait", 12), DriftTicks: num("drift", 2), StaggerTicks: num("stagger", 0), RetryTicks: num("retry", 0),
			GraceTicks: num("grace", 0)}
		e.nodes = map[string]*tnode{}
		genesis := Checkpoint{ID: "g"}
		for i, n := range e.names { // rank = order in nodes=
			e.nodes[n] = &tnode{rank: i, rnd: uint64(i + 1), hs: HardState{Accepted: genesis}}
			if s := e.start(n); s != "" {
				return s
			}
		}
		for _, n := range e.names {
			out.WriteString(e.nodes[n].m.Describe() + "\n")
		}
	case "tick":
		n := 1
		if len(pos) > 0 {
			n, _ = strconv.Atoi(pos[0])
			pos = pos[1:]
		}
		who := pos
		if len(who) == 0 {
			who = e.names
		}
		for range n {
			e.now++
			for _, name := range who {
				nd := e.nodes[name]
				if !nd.up || nd.paused {
					continue
				}
				nd.m.Tick()
				out.WriteString(e.handle(name))
			}
		}
	case "run":
		// run n: n times (tick every up node, then stabilize); heartbeat
		// traffic is left out of the output.
		n, _ := strconv.Atoi(pos[0])
		for range n {
			var all strings.Builder
			all.WriteString(e.run("tick"))
			all.WriteString(e.run("stabilize"))
			for _, l := range strings.SplitAfter(all.String(), "\n") {
				if (strings.Contains(l, " Append ") || strings.Contains(l, " AppendAck ")) && !strings.Contains(l, "REJECT") {
					continue
				}
				out.WriteString(l)
			}
		}
	case "pause":
		// pause name n: the process of name is paused (SIGSTOP, a long GC)
		// for n ticks while the others run (as run n); then it calls
		// TickTo(now) once (its output in full) and the messages that
		// reached it meanwhile go back in flight.
		name := pos[0]
		n, _ := strconv.Atoi(pos[1])
		nd := e.nodes[name]
		nd.paused, nd.pausedAt = true, e.now
		out.WriteString(e.run(fmt.Sprintf("run %d", n)))
		nd.paused = false
		if nd.up {
			// Its clock ran on; the machine's Now counts from its own start.
			target := nd.m.Now() + int64(e.now-nd.pausedAt)
			fmt.Fprintf(&out, "t=%d %s: wakes, TickTo(%d) from %d\n", e.now, name, target, nd.m.Now())
			nd.m.TickTo(target)
			out.WriteString(e.handle(name))
		}
		e.queue = append(e.queue, nd.deferred...)
		nd.deferred = nil
	case "deliver", "stabilize":
		rounds := 1
		if cmd == "stabilize" {
			rounds = 100
		}
		for r := 0; r < rounds && len(e.queue) > 0; r++ {
			var keep, batch []Message
			for _, m := range e.queue {
				if (kv["from"] == "" || kv["from"] == m.From) && (kv["to"] == "" || kv["to"] == m.To) {
					batch = append(batch, m)
				} else {
					keep = append(keep, m)
				}
			}
			if len(batch) == 0 {
				break
			}
			e.queue = keep
			for _, m := range batch {
				out.WriteString(e.deliver(m))
			}
		}
	case "drop":
		var keep []Message
		for _, m := range e.queue {
			if (kv["from"] == "" || kv["from"] == m.From) && (kv["to"] == "" || kv["to"] == m.To) {
				fmt.Fprintf(&out, "dropped %s\n", DescribeMessage(m))
			} else {
				keep = append(keep, m)
			}
		}
		e.queue = keep
	case "hold":
		var keep []Message
		for _, m := range e.queue {
			if (kv["from"] == "" || kv["from"] == m.From) && (kv["to"] == "" || kv["to"] == m.To) {
				fmt.Fprintf(&out, "held %s\n", DescribeMessage(m))
				e.held = append(e.held, m)
			} else {
				keep = append(keep, m)
			}
		}
		e.queue = keep
	case "unhold":
		e.queue = append(e.queue, e.held...)
		e.held = nil
	case "partition":
		e.side = map[string]int{}
		s := 0
		for _, a := range args {
			if a == "|" {
				s++
				continue
			}
			e.side[a] = s
		}
	case "cut":
		if e.cut == nil {
			e.cut = map[[2]string]bool{}
		}
		for _, a := range pos {
			from, to, _ := strings.Cut(a, ">")
			e.cut[[2]string{from, to}] = true
		}
	case "heal":
		e.side, e.cut = nil, nil
	case "crash":
		for _, name := range pos {
			nd := e.nodes[name]
			if nd.up && nd.m.Running() {
				fmt.Fprintf(&out, "t=%d %s: crashed; its agent dies with it\n", e.now, name)
			}
			nd.up, nd.m = false, nil
		}
	case "restart":
		for _, name := range pos {
			if s := e.start(name); s != "" {
				return s
			}
			out.WriteString(e.nodes[name].m.Describe() + "\n")
		}
	case "propose":
		name := pos[0]
		seq := uint64(num("seq", 0))
		id := kv["id"]
		if id == "" {
			id = fmt.Sprintf("cp%d", seq)
		}
		if err := e.nodes[name].m.Propose(Checkpoint{Seq: seq, ID: id}); err != nil {
			return e.fail("%v", err)
		}
		out.WriteString(e.handle(name))
	case "transfer":
		name := pos[0]
		if err := e.nodes[name].m.Transfer(kv["to"]); err != nil {
			return e.fail("%v", err)
		}
		out.WriteString(e.handle(name))
	case "join":
		// join n via=h members=a,b,n: n joins as the holder h's driver
		// adds it (custody JoinParams.Conf): its epoch, its committed
		// checkpoint (at epoch 0) and the joint configuration h's
		// ChangeConfig(members) will propose.
		name, h := pos[0], e.nodes[kv["via"]]
		jc, err := h.m.JoinConf(strings.Split(kv["members"], ","))
		if err != nil {
			return e.fail("%v", err)
		}
		if e.nodes[name] == nil {
			e.names = append(e.names, name)
		}
		e.nodes[name] = &tnode{rank: len(e.names) - 1, rnd: uint64(len(e.names)),
			hs: HardState{Epoch: h.m.Epoch(), Accepted: h.m.Committed(), AcceptedAt: h.m.Epoch(), Conf: jc}}
		e.reserved = jc
		if s := e.start(name); s != "" {
			return s
		}
		out.WriteString(e.nodes[name].m.Describe() + "\n")
	case "reconfigure":
		name := pos[0]
		if err := e.nodes[name].m.ChangeConfig(e.reserved); err != nil {
			return e.fail("%v", err)
		}
		out.WriteString(e.handle(name))
	case "campaign":
		name := pos[0]
		if err := e.nodes[name].m.Campaign(); err != nil {
			return e.fail("%v", err)
		}
		out.WriteString(e.handle(name))
	case "status":
		for _, n := range e.names {
			if nd := e.nodes[n]; nd.up {
				out.WriteString(nd.m.Describe() + "\n")
			} else if nd.left {
				fmt.Fprintf(&out, "%s left the group\n", n)
			} else {
				fmt.Fprintf(&out, "%s down, persisted %s\n", n, nd.hs)
			}
		}
	default:
		e.t.Fatalf("unknown command %q", line)
	}
	return out.String()
}

func (e *tenv) start(name string) string {
	nd := e.nodes[name]
	cfg := e.cfg
	cfg.Self, cfg.Rank, cfg.HardState = name, nd.rank, nd.hs
	cfg.Rand = func() uint64 { nd.rnd = nd.rnd*6364136223846793005 + 1442695040888963407; return nd.rnd >> 33 }
	m, err := New(cfg)
	if err != nil {
		return e.fail("%v", err)
	}
	nd.m, nd.up = m, true
	return ""
}

func (e *tenv) deliver(m Message) string {
	to := e.nodes[m.To]
	if e.side != nil && e.side[m.From] != e.side[m.To] || e.cut[[2]string{m.From, m.To}] {
		return ""
	}
	if to == nil || !to.up {
		return ""
	}
	if to.paused {
		to.deferred = append(to.deferred, m)
		return ""
	}
	if err := to.m.Step(m); err != nil {
		return fmt.Sprintf("t=%d %s: refused %s: %v\n", e.now, m.To, DescribeMessage(m), err)
	}
	return e.handle(m.To)
}

// handle processes one Ready the way a driver must, checking on the way
// that no two nodes run the agent at once.
func (e *tenv) handle(name string) string {
	nd := e.nodes[name]
	rd := nd.m.Ready()
	if rd.Empty() {
		nd.m.Advance()
		return ""
	}
	if rd.Persist != nil {
		nd.hs = *rd.Persist
	}
	if rd.Start != nil {
		for _, o := range e.names {
			if o != name && e.nodes[o].runs(e.now) {
				e.t.Errorf("t=%d: %s starts the agent while %s runs it", e.now, name, o)
			}
		}
	}
	e.queue = append(e.queue, rd.Messages...)
	nd.m.Advance()
	if rd.Removed {
		nd.up, nd.m, nd.left = false, nil, true // the driver leaves: state and key deleted
	}
	return DescribeReady(fmt.Sprintf("t=%d %s: ", e.now, name), rd)
}
