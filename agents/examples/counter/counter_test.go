//go:build !wasip1

package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"strings"
	"testing"

	"github.com/igor-mesh/igor-node/agents/sdk"
	"github.com/igor-mesh/igor-node/agents/sdk/mock"
)

func newCounter() sdk.Agent { return &Counter{} }

func TestCounterSizesAndCounts(t *testing.T) {
	for _, c := range []struct {
		args string
		size int
	}{{"", 64}, {"state_size=8", 8}, {"state_size=65536", 65536}, {" state_size=10000 , ", 10000}} {
		m := mock.New(1).SetArgs(c.args)
		state, err := m.Drive(newCounter, 20)
		if err != nil {
			t.Fatalf("args %q: %v", c.args, err)
		}
		if len(state) != c.size || binary.LittleEndian.Uint64(state) != 20 {
			t.Fatalf("args %q: %d bytes, counter %d", c.args, len(state), binary.LittleEndian.Uint64(state))
		}
		if logs := m.Logs(); len(logs) != 1 || logs[0] != fmt.Sprintf("counter: state_size=%d", c.size) {
			t.Fatalf("logs %q", logs)
		}
	}
}

func TestCounterTouchesOnePagePerTick(t *testing.T) {
	mock.New(1).SetArgs("state_size=40008").Install() // 10 pages: last one short
	defer sdk.SetBackend(nil)
	c := &Counter{}
	c.Init()
	prev := bytes.Clone(c.Marshal())
	for tick := 1; tick <= 25; tick++ {
		c.Tick()
		cur := c.Marshal()
		page := (tick - 1) % 10
		for i := 8; i < len(cur); i++ {
			if cur[i] != prev[i] && (i-8)/pageSize != page {
				t.Fatalf("tick %d changed byte %d outside page %d", tick, i, page)
			}
		}
		if bytes.Equal(cur[8:], prev[8:]) {
			t.Fatalf("tick %d did not change the payload", tick)
		}
		prev = bytes.Clone(cur)
	}
}

func TestCounterBadArgsPanicInInit(t *testing.T) {
	for _, args := range []string{"state_size=4", "state_size=x", "state_size=67108865", "size=10", "state_size"} {
		_, err := mock.New(1).SetArgs(args).Drive(newCounter, 1)
		if err == nil || !strings.Contains(err.Error(), "in Init") || !strings.Contains(err.Error(), "counter: bad args") {
			t.Errorf("args %q: err %v, want a panic in Init", args, err)
		}
	}
}

func TestCounterRejectsStateOfWrongSize(t *testing.T) {
	mock.New(1).SetArgs("state_size=16").Install()
	defer sdk.SetBackend(nil)
	c := &Counter{}
	c.Init()
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "state_size=16") {
			t.Fatalf("panic %v", r)
		}
	}()
	c.Unmarshal(make([]byte, 64))
}
