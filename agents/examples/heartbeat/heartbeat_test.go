//go:build !wasip1

package main

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

func newHeartbeat() sdk.Agent { return &Heartbeat{} }

func TestHeartbeatUnderMock(t *testing.T) {
	m := mock.New(7)
	state, err := m.Drive(newHeartbeat, 4)
	if err != nil {
		t.Fatal(err)
	}
	var h Heartbeat
	h.Unmarshal(state)
	// The mock clock reads StartUnixNano, +1s, ...: one read per tick.
	if h.Ticks != 4 || h.FirstNs != mock.StartUnixNano || h.LastNs != mock.StartUnixNano+3*mock.ClockStep {
		t.Fatalf("state %+v", h)
	}
	if h.Pulse == 0 {
		t.Fatal("pulse never folded in random bytes")
	}
	want := []string{"tick=1 age=0s", "tick=2 age=1s", "tick=3 age=2s", "tick=4 age=3s"}
	if got := m.Logs(); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("logs %q, want %q", got, want)
	}
	if len(state) != 33 {
		t.Fatalf("state is %d bytes, want 33", len(state))
	}
}

func TestHeartbeatDeterministicGivenObservations(t *testing.T) {
	a, err := mock.New(99).Drive(newHeartbeat, 10)
	if err != nil {
		t.Fatal(err)
	}
	b, err := mock.New(99).Drive(newHeartbeat, 10)
	if err != nil {
		t.Fatal(err)
	}
	c, err := mock.New(100).Drive(newHeartbeat, 10)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("same observations, different state")
	}
	if bytes.Equal(a, c) {
		t.Fatal("different random bytes, same pulse")
	}
}

func TestHeartbeatRandFailureIsLoggedNotFatal(t *testing.T) {
	m := mock.New(1).Install()
	defer sdk.SetBackend(nil)
	m.SetRandCode(-4)
	h := &Heartbeat{}
	h.Tick()
	if h.Ticks != 1 || h.Pulse != 0 {
		t.Fatalf("state %+v", h)
	}
	if logs := m.Logs(); len(logs) != 2 || !strings.Contains(logs[0], "rand_bytes failed") {
		t.Fatalf("logs %q", logs)
	}
}

func TestHeartbeatRejectsCorruptState(t *testing.T) {
	good := (&Heartbeat{Ticks: 1}).Marshal()
	bad := map[string][]byte{
		"truncated":     good[:20],
		"trailing":      append(bytes.Clone(good), 0),
		"wrong version": append([]byte{9}, good[1:]...),
	}
	for name, b := range bad {
		t.Run(name, func(t *testing.T) {
			defer func() {
				if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "heartbeat:") {
					t.Fatalf("panic %v, want a heartbeat error", r)
				}
			}()
			(&Heartbeat{}).Unmarshal(b)
		})
	}
	// Empty state is a reset, not an error.
	h := &Heartbeat{Ticks: 5}
	h.Unmarshal(nil)
	if h.Ticks != 0 {
		t.Fatal("empty state did not reset")
	}
}
