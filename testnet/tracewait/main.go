// Command tracewait reads a Go execution trace — a daemon's GET /debug/flight
// (IGOR_DEBUG_FLIGHT=1) or any runtime/trace output — and says, in buckets of
// wall time, which kinds of goroutine ran and which waited to run.
//
// It is how session 22 found what set off the custody collapse: the engine's
// goroutine, preempted mid-round, waited 1.07 s runnable behind the agents'
// runners while a GC mark phase ran long (docs/DECISIONS.md D79). Go's
// scheduler has no priorities, so "who was runnable, for how long, behind
// whom" is the question a trace answers and a CPU profile does not.
//
// A goroutine's kind is the two outermost frames of its stack outside the
// runtime (for example "custody.(*Manager).runEngine > custody.(*engine).round").
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"golang.org/x/exp/trace"
)

const usage = `usage: go run ./testnet/tracewait [flags] TRACE

Reads a Go execution trace (curl -o flight.trace http://API/debug/flight on a
daemon started with IGOR_DEBUG_FLIGHT=1, or runtime/trace output) and prints,
for each bucket of wall time: the CPU the goroutines ran (in cores), the time a
GC was in its concurrent mark phase, the kinds of goroutine that ran most, and the kinds that waited
longest to run (runnable, not blocked) with their longest single wait.

Flags:
`

type options struct {
	bucket time.Duration
	from   string // an offset from the trace's first event ("12.5s") or an RFC 3339 time
	to     string
	top    int // kinds listed per bucket by running time
	waits  int // kinds listed per bucket by longest wait
}

func (o options) validate() error {
	if o.bucket <= 0 {
		return fmt.Errorf("-bucket %v: must be positive (e.g. 250ms)", o.bucket)
	}
	if o.top < 0 || o.waits < 0 {
		return errors.New("-top and -waits must be 0 or more")
	}
	return nil
}

// stat is what one kind of goroutine did in one bucket.
type stat struct {
	run     time.Duration // running
	wait    time.Duration // runnable, summed over the waits that ended in the bucket
	waitMax time.Duration // the longest of those waits
}

type bucket struct {
	kinds map[string]*stat
	gc    time.Duration // time a GC mark phase was running (gcMark)
}

func (b *bucket) kind(k string) *stat {
	if b.kinds == nil {
		b.kinds = map[string]*stat{}
	}
	s := b.kinds[k]
	if s == nil {
		s = &stat{}
		b.kinds[k] = s
	}
	return s
}

// report covers [from, to) of the trace, in buckets of width.
type report struct {
	wall0   time.Time     // the wall time of the trace's first event; zero if the trace has no clock snapshot
	from    time.Duration // the window, as offsets from the first event
	to      time.Duration // 0 until known: the trace's end
	width   time.Duration
	buckets []bucket
}

func (r *report) at(off time.Duration) *bucket {
	i := int((off - r.from) / r.width)
	for len(r.buckets) <= i {
		r.buckets = append(r.buckets, bucket{})
	}
	return &r.buckets[i]
}

// span adds d(a, b) to every bucket [a, b) overlaps, clipped to the window.
func (r *report) span(a, b time.Duration, add func(*bucket, time.Duration)) {
	a = max(a, r.from)
	if r.to > 0 {
		b = min(b, r.to)
	}
	for a < b {
		end := r.from + (a-r.from)/r.width*r.width + r.width
		end = min(end, b)
		add(r.at(a), end-a)
		a = end
	}
}

func (r *report) inWindow(off time.Duration) bool {
	return off >= r.from && (r.to == 0 || off < r.to)
}

type gstate struct {
	kind     string
	running  bool
	runFrom  time.Duration
	runnable bool
	rdyFrom  time.Duration
}

// kindOf names a goroutine by the two outermost frames of st outside the runtime.
func kindOf(st trace.Stack) string {
	var frames []string
	for f := range st.Frames() {
		frames = append(frames, f.Func)
	}
	var keep []string
	for i := len(frames) - 1; i >= 0 && len(keep) < 2; i-- {
		f := frames[i]
		if strings.HasPrefix(f, "runtime.") || f == "" {
			continue
		}
		if j := strings.LastIndex(f, "/"); j >= 0 {
			f = f[j+1:]
		}
		keep = append(keep, f)
	}
	return strings.Join(keep, " > ")
}

// window resolves -from/-to: an offset ("12.5s") or, when the trace carries a
// clock snapshot, an RFC 3339 time.
func window(s string, wall0 time.Time) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil {
		if d < 0 {
			return 0, fmt.Errorf("%q: an offset must not be negative", s)
		}
		return d, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, fmt.Errorf("%q is neither an offset from the trace's start (12.5s) nor an RFC 3339 time (2026-12-07T07:14:44.2Z)", s)
	}
	if wall0.IsZero() {
		return 0, fmt.Errorf("%q: this trace has no wall-clock snapshot; give an offset from its start (12.5s)", s)
	}
	if t.Before(wall0) {
		return 0, fmt.Errorf("%q is before the trace's start (%s)", s, wall0.Format(time.RFC3339Nano))
	}
	return t.Sub(wall0), nil
}

// gcMark is the trace's range for a GC's concurrent mark phase: while it runs,
// allocating goroutines are slowed by mark assists and a quarter of GOMAXPROCS
// goes to the collector.
const gcMark = "GC concurrent mark phase"

// analyze reads the trace in r into a report.
func analyze(in io.Reader, o options) (*report, error) {
	if err := o.validate(); err != nil {
		return nil, err
	}
	tr, err := trace.NewReader(in)
	if err != nil {
		return nil, fmt.Errorf("not a Go execution trace this tool can read: %w", err)
	}
	rep := &report{width: o.bucket}
	var (
		t0      trace.Time
		started bool
		gs      = map[trace.GoID]*gstate{}
		gcFrom  = time.Duration(-1)
		lastOff time.Duration
	)
	for {
		ev, err := tr.ReadEvent()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("reading the trace: %w", err)
		}
		if !started {
			started, t0 = true, ev.Time()
			if ev.Kind() == trace.EventSync {
				if s := ev.Sync(); s.ClockSnapshot != nil {
					rep.wall0 = s.ClockSnapshot.Wall.Add(-time.Duration(s.ClockSnapshot.Trace - t0))
				}
			}
			if o.from != "" {
				if rep.from, err = window(o.from, rep.wall0); err != nil {
					return nil, fmt.Errorf("-from %w", err)
				}
			}
			if o.to != "" {
				if rep.to, err = window(o.to, rep.wall0); err != nil {
					return nil, fmt.Errorf("-to %w", err)
				}
				if rep.to <= rep.from {
					return nil, fmt.Errorf("-to %s is not after -from %s", o.to, o.from)
				}
			}
		}
		off := time.Duration(ev.Time() - t0)
		lastOff = max(lastOff, off)
		switch ev.Kind() {
		case trace.EventRangeBegin:
			if ev.Range().Name == gcMark && gcFrom < 0 {
				gcFrom = off
			}
		case trace.EventRangeEnd:
			if ev.Range().Name == gcMark && gcFrom >= 0 {
				rep.span(gcFrom, off, func(b *bucket, d time.Duration) { b.gc += d })
				gcFrom = -1
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			g := gs[id]
			if g == nil {
				g = &gstate{}
				gs[id] = g
			}
			if g.kind == "" {
				g.kind = kindOf(st.Stack)
			}
			_, next := st.Goroutine()
			if g.running && next != trace.GoRunning {
				kind := g.kind
				rep.span(g.runFrom, off, func(b *bucket, d time.Duration) { b.kind(kindName(kind)).run += d })
				g.running = false
			}
			switch next {
			case trace.GoRunnable:
				if !g.runnable {
					g.runnable, g.rdyFrom = true, off
				}
			case trace.GoRunning:
				if g.runnable && rep.inWindow(off) {
					w := off - g.rdyFrom
					s := rep.at(off).kind(kindName(g.kind))
					s.wait += w
					s.waitMax = max(s.waitMax, w)
				}
				g.runnable = false
				g.running, g.runFrom = true, off
			default:
				g.runnable = false
			}
		}
	}
	if !started {
		return nil, errors.New("the trace has no events")
	}
	// Whatever still ran or marked at the end ran until the last event.
	for _, g := range gs {
		if g.running {
			kind := g.kind
			rep.span(g.runFrom, lastOff, func(b *bucket, d time.Duration) { b.kind(kindName(kind)).run += d })
		}
	}
	if gcFrom >= 0 {
		rep.span(gcFrom, lastOff, func(b *bucket, d time.Duration) { b.gc += d })
	}
	if rep.to == 0 {
		rep.to = lastOff
	}
	if rep.from >= lastOff {
		return nil, fmt.Errorf("the window starts at %v, after the trace's last event (%v)", rep.from, lastOff)
	}
	// Buckets past the window's end or the trace's end would only be empty.
	if n := int((min(rep.to, lastOff) - rep.from + rep.width - 1) / rep.width); len(rep.buckets) < n {
		rep.at(rep.from + time.Duration(n-1)*rep.width)
	}
	return rep, nil
}

// kindName gives goroutines whose stacks the trace did not record a name.
func kindName(k string) string {
	if k == "" {
		return "?"
	}
	return k
}

type kv struct {
	k string
	v time.Duration
}

func sorted(m map[string]*stat, f func(*stat) time.Duration) []kv {
	var xs []kv
	for k, s := range m {
		if v := f(s); v > 0 {
			xs = append(xs, kv{k, v})
		}
	}
	sort.Slice(xs, func(i, j int) bool {
		if xs[i].v != xs[j].v {
			return xs[i].v > xs[j].v
		}
		return xs[i].k < xs[j].k
	})
	return xs
}

func ms(d time.Duration) string { return fmt.Sprintf("%.0fms", float64(d)/1e6) }

func (r *report) print(w io.Writer, o options) {
	for i := range r.buckets {
		b := &r.buckets[i]
		off := r.from + time.Duration(i)*r.width
		when := fmt.Sprintf("+%.3fs", off.Seconds())
		if !r.wall0.IsZero() {
			when = r.wall0.Add(off).UTC().Format("15:04:05.000") + " " + when
		}
		var run time.Duration
		for _, s := range b.kinds {
			run += s.run
		}
		fmt.Fprintf(w, "%s cpu=%.2f gc-mark=%s |", when, float64(run)/float64(r.width), ms(b.gc))
		for j, x := range sorted(b.kinds, func(s *stat) time.Duration { return s.run }) {
			if j >= o.top {
				break
			}
			fmt.Fprintf(w, " %s %s;", x.k, ms(x.v))
		}
		fmt.Fprint(w, " || longest waits:")
		for j, x := range sorted(b.kinds, func(s *stat) time.Duration { return s.waitMax }) {
			if j >= o.waits {
				break
			}
			fmt.Fprintf(w, " %s %s;", x.k, ms(x.v))
		}
		fmt.Fprintln(w)
	}
}

func main() {
	var o options
	fs := flag.NewFlagSet("tracewait", flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usage); fs.PrintDefaults() }
	fs.DurationVar(&o.bucket, "bucket", 250*time.Millisecond, "width of a bucket of wall time")
	fs.StringVar(&o.from, "from", "", "start of the window: an offset from the trace's first event (12.5s) or an RFC 3339 time")
	fs.StringVar(&o.to, "to", "", "end of the window, as -from (default: the trace's end)")
	fs.IntVar(&o.top, "top", 4, "kinds of goroutine listed per bucket by running time")
	fs.IntVar(&o.waits, "waits", 3, "kinds of goroutine listed per bucket by their longest wait to run")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "tracewait: give one trace file")
		fs.Usage()
		os.Exit(2)
	}
	f, err := os.Open(fs.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "tracewait:", err)
		os.Exit(1)
	}
	defer f.Close()
	rep, err := analyze(f, o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "tracewait: %s: %v\n", fs.Arg(0), err)
		os.Exit(1)
	}
	rep.print(os.Stdout, o)
}
