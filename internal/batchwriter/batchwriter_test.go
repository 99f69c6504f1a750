package batchwriter

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuf records each Write it gets, safe for the test to read.
type syncBuf struct {
	mu     sync.Mutex
	b      bytes.Buffer
	writes int
	delay  time.Duration
	fail   error
}

func (s *syncBuf) Write(p []byte) (int, error) {
	time.Sleep(s.delay)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return 0, s.fail
	}
	s.writes++
	return s.b.Write(p)
}

func (s *syncBuf) snapshot() (string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String(), s.writes
}

// Every line arrives once, each writer's lines in its order, and lines
// written together leave in fewer writes than lines.
func TestOrderAndCoalescing(t *testing.T) {
	out := &syncBuf{delay: 200 * time.Microsecond}
	w := New(out)
	const writers, lines = 8, 500
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				if _, err := fmt.Fprintf(w, "g%d %d\n", g, i); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	got, writes := out.snapshot()
	next := make([]int, writers)
	n := 0
	for _, l := range strings.Split(strings.TrimSuffix(got, "\n"), "\n") {
		var g, i int
		if _, err := fmt.Sscanf(l, "g%d %d", &g, &i); err != nil || g < 0 || g >= writers {
			t.Fatalf("line %q is not one written", l)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d after %d: order lost or a line lost or repeated", g, i, next[g]-1)
		}
		next[g]++
		n++
	}
	if n != writers*lines {
		t.Fatalf("%d lines arrived, want %d", n, writers*lines)
	}
	if writes >= n/2 {
		t.Fatalf("%d writes for %d lines: not coalesced", writes, n)
	}
	t.Logf("%d lines in %d writes", n, writes)
}

// A lone line is written without waiting for more or for Close.
func TestLoneLineWrittenPromptly(t *testing.T) {
	out := &syncBuf{}
	w := New(out)
	defer w.Close()
	fmt.Fprintln(w, "alone")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if got, _ := out.snapshot(); got == "alone\n" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("a lone line was not written within 5 s")
		}
		time.Sleep(time.Millisecond)
	}
}

// A slow writer makes Write wait once MaxPending is queued, and nothing is
// lost; writes after Close go straight through, after the queued ones.
func TestBackpressureAndClose(t *testing.T) {
	out := &syncBuf{delay: 20 * time.Millisecond}
	w := New(out)
	line := bytes.Repeat([]byte("x"), 64<<10)
	line[len(line)-1] = '\n'
	for range 40 { // 2.5 MiB through a 1 MiB window
		if _, err := w.Write(line); err != nil {
			t.Fatal(err)
		}
		w.mu.Lock()
		pending := len(w.buf)
		w.mu.Unlock()
		if pending > MaxPending {
			t.Fatalf("%d bytes pending, more than MaxPending", pending)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("late\n")); err != nil {
		t.Fatal(err)
	}
	got, _ := out.snapshot()
	if len(got) != 40*len(line)+len("late\n") || !strings.HasSuffix(got, "x\nlate\n") {
		t.Fatalf("%d bytes arrived, want %d ending with the late line", len(got), 40*len(line)+5)
	}
}

// The underlying writer's error reaches the callers and Close.
func TestWriteErrorReported(t *testing.T) {
	boom := errors.New("disk full")
	out := &syncBuf{fail: boom}
	w := New(out)
	fmt.Fprintln(w, "lost")
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := w.Write([]byte("x\n")); errors.Is(err, boom) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Write never reported the underlying error")
		}
		time.Sleep(time.Millisecond)
	}
	if err := w.Close(); !errors.Is(err, boom) {
		t.Fatalf("Close = %v, want the underlying error", err)
	}
}
