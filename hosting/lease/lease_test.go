package lease

import (
	"errors"
	"strings"
	"testing"
)

func validConfig() Config {
	return Config{Self: "b", Group: []string{"a", "b", "c"}, Rank: 1, HeartbeatTicks: 2, LeaseTicks: 10,
		WaitTicks: 12, DriftTicks: 2, Rand: func() uint64 { return 4 }}
}

func TestNewRejectsBadConfig(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no self", func(c *Config) { c.Self = "" }, "Self is empty"},
		{"empty group", func(c *Config) { c.Group = nil }, "Group is empty"},
		{"unsorted", func(c *Config) { c.Group = []string{"b", "a", "c"} }, "not sorted"},
		{"duplicate", func(c *Config) { c.Group = []string{"a", "b", "b"} }, "twice"},
		{"self missing", func(c *Config) { c.Self = "z" }, "does not contain Self"},
		{"rank", func(c *Config) { c.Rank = 3 }, "Rank 3"},
		{"lease too short", func(c *Config) { c.LeaseTicks = 2 }, "must exceed HeartbeatTicks"},
		{"no drift", func(c *Config) { c.DriftTicks = 0 }, "DriftTicks 0"},
		{"wait too short", func(c *Config) { c.WaitTicks = 11 }, "LeaseTicks+DriftTicks = 12"},
		{"no rand", func(c *Config) { c.Rand = nil }, "Rand is nil"},
		{"corrupt state", func(c *Config) { c.HardState = HardState{Epoch: 1, AcceptedAt: 2} }, "corrupt"},
	}
	for _, tc := range cases {
		cfg := validConfig()
		tc.edit(&cfg)
		_, err := New(cfg)
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want ErrInvalidConfig mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := New(validConfig()); err != nil {
		t.Fatalf("valid config: %v", err)
	}
}

func TestStepRejectsForeignMessages(t *testing.T) {
	m, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, msg := range []Message{
		{Type: MsgAppend, From: "a", To: "c", Epoch: 1},   // not for us
		{Type: MsgAppend, From: "x", To: "b", Epoch: 1},   // not a member
		{Type: MsgAppend, From: "b", To: "b", Epoch: 1},   // from ourselves
		{Type: MsgAppend, From: "a", To: "b", Epoch: 0},   // epoch 0 is never held
		{Type: MsgType(99), From: "a", To: "b", Epoch: 1}, // unknown type
	} {
		if err := m.Step(msg); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("Step(%s) = %v, want ErrInvalidMessage", DescribeMessage(msg), err)
		}
	}
	if rd := m.Ready(); !rd.Empty() {
		t.Errorf("rejected messages produced output: %s", DescribeReady("", rd))
	}
	if err := m.Propose(Checkpoint{Seq: 1, ID: "x"}); !errors.Is(err, ErrNotHolder) {
		t.Errorf("Propose on a follower = %v, want ErrNotHolder", err)
	}
	if err := m.Transfer("a"); !errors.Is(err, ErrNotHolder) {
		t.Errorf("Transfer on a follower = %v, want ErrNotHolder", err)
	}
}

// A single-node group holds the lease alone: useful for a node that hosts
// an agent with no standby (R = 0), and the degenerate case of the quorum.
func TestSingleNodeGroup(t *testing.T) {
	cfg := validConfig()
	cfg.Self, cfg.Group, cfg.Rank = "a", []string{"a"}, 0
	cfg.HardState = HardState{Accepted: Checkpoint{ID: "g"}}
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m.Tick()
	rd := m.Ready()
	if rd.Start == nil || rd.Start.ID != "g" || rd.Persist == nil || rd.Persist.Epoch != 1 || len(rd.Messages) != 0 {
		t.Fatalf("first tick: %s", DescribeReady("", rd))
	}
	m.Advance()
	for i := range 100 {
		m.Tick()
		if !m.Running() {
			t.Fatalf("alone, the holder stopped at tick %d: %s", i, m.Describe())
		}
		m.Advance()
	}
}

// A machine that restarts (or joins) at a non-zero epoch waits WaitTicks
// before it promises or campaigns — unless Released says no lease at that
// epoch can depend on it (a regroup's new group): then it campaigns and
// promises at once.
func TestReleasedSkipsTheWait(t *testing.T) {
	for _, released := range []bool{false, true} {
		cfg := validConfig()
		cfg.HardState = HardState{Epoch: 3, Accepted: Checkpoint{Seq: 7, ID: "f"}, AcceptedAt: 3}
		cfg.Released = released
		m, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		err = m.Campaign()
		if released != (err == nil) {
			t.Fatalf("released %v: Campaign = %v", released, err)
		}
		// A candidate of another member asks for epoch 4: only a released
		// machine promises before WaitTicks.
		p, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := p.Step(Message{Type: MsgPromiseRequest, From: "a", To: "b", Epoch: 4}); err != nil {
			t.Fatal(err)
		}
		rd := p.Ready()
		promised := false
		for _, msg := range rd.Messages {
			if msg.Type == MsgPromise && !msg.Reject {
				promised = true
			}
		}
		if promised != released {
			t.Fatalf("released %v: answer to a request at epoch 4: %s", released, DescribeReady("", rd))
		}
	}
}

// TickTo after a pause does only what is due at the target tick, once: a
// candidate asks again once or, past its deadline, gives up and backs off
// from the target; a follower campaigns once. (Holders: testdata/pause.txt.)
func TestTickToSkipsMissedTicks(t *testing.T) {
	m, err := New(validConfig()) // b, rank 1, H=2 (asks every tick), T=8, Rand 4
	if err != nil {
		t.Fatal(err)
	}
	requests := func(step string) int {
		t.Helper()
		rd := m.Ready()
		m.Advance()
		n := 0
		for _, msg := range rd.Messages {
			if msg.Type != MsgPromiseRequest || msg.Epoch != 1 {
				t.Fatalf("%s: %s", step, DescribeReady("", rd))
			}
			n++
		}
		return n
	}
	if err := m.Campaign(); err != nil {
		t.Fatal(err)
	}
	if n := requests("campaign"); n != 2 {
		t.Fatalf("campaign sent %d requests, want 2", n)
	}
	m.TickTo(5)
	if n := requests("TickTo(5)"); n != 2 || m.Role() != Candidate {
		t.Fatalf("TickTo(5) within the attempt: %d requests, role %s; want one request per member", n, m.Role())
	}
	m.TickTo(20) // deadline 8 passed: give up, back off 8/2+1+4 from 20
	if n := requests("TickTo(20)"); n != 0 || m.Role() != Follower || m.NextTick() != 29 {
		t.Fatalf("TickTo(20) past the deadline: %d requests, role %s, next tick %d; want a follower backing off until 29", n, m.Role(), m.NextTick())
	}
	m.TickTo(28)
	if n := requests("TickTo(28)"); n != 0 {
		t.Fatalf("TickTo(28) before the backoff ends sent %d requests", n)
	}
	m.TickTo(60)
	if n := requests("TickTo(60)"); n != 2 || m.Role() != Candidate {
		t.Fatalf("TickTo(60) after the backoff: %d requests, role %s; want one campaign", n, m.Role())
	}
	m.TickTo(60)
	m.TickTo(3)
	if n := requests("TickTo(past)"); n != 0 || m.Now() != 60 {
		t.Fatalf("TickTo to the past: %d requests, now %d", n, m.Now())
	}
}
