package main

import (
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/igor-mesh/igor-node/internal/testagents"
	"github.com/igor-mesh/igor-node/internal/testutil"
)

type syncBuffer = testutil.SyncBuffer

var slowTickLine = regexp.MustCompile(`slowtick: tick (\d+)`)

// TestHostPauseNotChargedToAgent (DECISIONS D54): the real binary runs an
// agent whose ticks take 400 ms of every 500; the process is stopped
// (SIGSTOP) for 1.5 s, past the 1 s tick deadline, three times. A pause
// inside a tick moves that tick's deadline by the pause: the tick ends
// normally after the resume, nothing is counted against the agent, and no
// tick is run again from a checkpoint.
func TestHostPauseNotChargedToAgent(t *testing.T) {
	home := t.TempDir()
	wasm, _ := testagents.Path(t, "slowtick")
	cmd := exec.Command(binPath, "--home", home, "run", "--budget", "100000", "--tick-interval", "100ms", "--checkpoint-every", "1000", wasm)
	var out, errb syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	ticks := func() int { return len(slowTickLine.FindAllString(out.String(), -1)) }
	waitTicks := func(n int) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for ticks() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d ticks, want %d:\n%s\n%s", ticks(), n, out.String(), errb.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitTicks(2)
	for i := 0; i < 3; i++ {
		time.Sleep(time.Duration(100+150*i) * time.Millisecond) // land inside a tick (80 % of the time is)
		cmd.Process.Signal(syscall.SIGSTOP)
		time.Sleep(1500 * time.Millisecond)
		cmd.Process.Signal(syscall.SIGCONT)
		waitTicks(ticks() + 2)
	}
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("run after SIGINT: %v\n%s", err, errb.String())
	}
	logs := errb.String()
	for _, bad := range []string{"ran longer than", "agent tick failed", "host paused during the call"} {
		if strings.Contains(logs, bad) {
			t.Fatalf("a host pause was charged to the agent (%q in the log):\n%s", bad, logs)
		}
	}
	if n := strings.Count(logs, "the host paused during a call"); n == 0 {
		t.Fatalf("no pause landed inside a tick in 3 tries (or none was noticed):\n%s", logs)
	}
	// Ticks 1, 2, 3, … exactly once each: none was run again.
	var seq []int
	for _, m := range slowTickLine.FindAllStringSubmatch(out.String(), -1) {
		n, _ := strconv.Atoi(m[1])
		seq = append(seq, n)
	}
	for i, n := range seq {
		if n != i+1 {
			t.Fatalf("tick numbers %v: tick %d logged at position %d (a tick was run again)", seq, n, i+1)
		}
	}
	t.Logf("%d ticks, %d pauses granted inside a tick", len(seq), strings.Count(logs, "the host paused during a call"))
}
