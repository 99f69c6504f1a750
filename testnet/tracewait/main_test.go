package main

import (
	"bytes"
	"runtime"
	rtrace "runtime/trace"
	"strings"
	"sync"
	"testing"
	"time"
)

//go:noinline
func spinner(wg *sync.WaitGroup, d time.Duration) {
	defer wg.Done()
	for start := time.Now(); time.Since(start) < d; {
	}
}

// A real trace of three goroutines spinning on one P, then a GC: the tool must
// charge their running time to their kind, see them wait for each other, never
// report more CPU in a bucket than the one P could give, and see the mark phase.
func TestRunAndWaitOfARealTrace(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	var buf bytes.Buffer
	if err := rtrace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	const spin = 60 * time.Millisecond
	begin := time.Now()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go spinner(&wg, spin)
	}
	wg.Wait()
	runtime.GC() // a mark phase the report must show
	elapsed := time.Since(begin)
	rtrace.Stop()

	o := options{bucket: 20 * time.Millisecond, top: 4, waits: 3}
	rep, err := analyze(bytes.NewReader(buf.Bytes()), o)
	if err != nil {
		t.Fatal(err)
	}
	var run, waitMax, gc time.Duration
	var kind string
	for i, b := range rep.buckets {
		gc += b.gc
		var all time.Duration
		for k, s := range b.kinds {
			all += s.run
			if strings.Contains(k, "spinner") {
				kind = k
				run += s.run
				waitMax = max(waitMax, s.waitMax)
			}
		}
		// One P: a bucket holds at most its width of running (a little slack for
		// the trace's clock against the buckets' edges).
		if all > o.bucket+o.bucket/10 {
			t.Errorf("bucket %d: %v of running on one P in %v", i, all, o.bucket)
		}
	}
	if kind == "" {
		t.Fatalf("no goroutine kind names the spinner; kinds: %v", rep.buckets)
	}
	if !strings.Contains(kind, "tracewait.spinner") {
		t.Errorf("kind %q: want the function's package-qualified name", kind)
	}
	// The three spin until 60 ms of wall time each passed, together on one P:
	// they ran at least ~60 ms between them, at most the whole run.
	if run < spin*3/4 || run > elapsed+o.bucket {
		t.Errorf("spinners ran %v in all; want between %v and %v", run, spin*3/4, elapsed)
	}
	// Each is preempted (10 ms slices) and waits while the other two run.
	if waitMax < 5*time.Millisecond {
		t.Errorf("longest wait of a spinner %v; three on one P must wait for each other", waitMax)
	}
	if gc <= 0 {
		t.Error("runtime.GC ran inside the trace, but no bucket shows a mark phase")
	}
	var out bytes.Buffer
	rep.print(&out, o)
	if !strings.Contains(out.String(), "longest waits: ") || !strings.Contains(out.String(), "spinner") {
		t.Errorf("report does not name the spinners' waits:\n%s", out.String())
	}
}

func TestBadInputIsRefusedClearly(t *testing.T) {
	var buf bytes.Buffer
	if err := rtrace.Start(&buf); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	rtrace.Stop()
	good := buf.Bytes()
	ok := options{bucket: time.Second, top: 1, waits: 1}
	for _, tc := range []struct {
		name string
		in   []byte
		o    options
		want string
	}{
		{"not a trace", []byte("hello, this is not a trace"), ok, "not a Go execution trace"},
		{"empty", nil, ok, "not a Go execution trace"},
		{"zero bucket", good, options{top: 1}, "-bucket"},
		{"bad from", good, options{bucket: time.Second, from: "yesterday"}, "neither an offset"},
		{"negative from", good, options{bucket: time.Second, from: "-1s"}, "must not be negative"},
		{"to before from", good, options{bucket: time.Second, from: "2s", to: "1s"}, "not after"},
		{"window past the end", good, options{bucket: time.Second, from: "1h"}, "after the trace's last event"},
		{"time before the trace", good, options{bucket: time.Second, from: "2001-01-01T00:00:00Z"}, "before the trace's start"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := analyze(bytes.NewReader(tc.in), tc.o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v; want one saying %q", err, tc.want)
			}
		})
	}
}
