package wasmexec

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Defaults for Config.AgentLogRate and Config.AgentLogBurst: far above what
// a well-behaved agent logs (one line per tick at the 10 ms fast path is
// 100 lines/s), far below what a flooding one can emit (millions per second).
const (
	DefaultAgentLogRate  = 100  // lines per second, per instance
	DefaultAgentLogBurst = 1000 // lines
)

// logReportEvery is how often, at most, an instance reports dropped lines.
const logReportEvery = time.Second

// logLimiter is one instance's token bucket for the agent lines that reach
// the node's log: log_emit lines and guest stdout/stderr lines. Dropping a
// line only keeps it out of the node's log; log_emit lines are still
// recorded in the tick log, so replay and the tick log are unaffected (the
// limiter reads the host's clock, which the guest never observes).
//
// Instances of one agent (DID) share a bucket, so re-creating a failed
// instance does not refill it: an agent that traps after every flood gets no
// fresh burst per restart. A bucket no instance uses is dropped once it has
// refilled (a full bucket is the same as a new one).
type logLimiter struct {
	rate, burst float64
	did         string
	refs        int // live instances using it; guarded by Runtime.mu

	mu         sync.Mutex
	tokens     float64
	last       time.Time // last refill
	dropped    uint64    // total
	unreported uint64    // dropped since the last report
	lastReport time.Time
}

func newLogLimiter(rate float64, burst int) *logLimiter {
	return &logLimiter{rate: rate, burst: float64(burst), tokens: float64(burst)}
}

// allow takes a token for one line; false means drop it.
func (l *logLimiter) allow(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.last.IsZero() {
		l.tokens = min(l.burst, l.tokens+now.Sub(l.last).Seconds()*l.rate)
	}
	l.last = now
	if l.tokens >= 1 {
		l.tokens--
		return true
	}
	l.dropped++
	l.unreported++
	return false
}

// full reports whether the bucket has refilled by now.
func (l *logLimiter) full(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.tokens+now.Sub(l.last).Seconds()*l.rate >= l.burst
}

// logLimiterFor returns the bucket of agent did (a new one for every
// instance without a DID) and counts the instance as its user.
func (r *Runtime) logLimiterFor(did string) *logLimiter {
	if did == "" {
		return newLogLimiter(r.logRate, r.logBurst)
	}
	now := time.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	for d, l := range r.idleLimiters {
		if l.full(now) {
			delete(r.idleLimiters, d)
			delete(r.limiters, d)
		}
	}
	l := r.limiters[did]
	if l == nil {
		l = newLogLimiter(r.logRate, r.logBurst)
		l.did = did
		r.limiters[did] = l
	}
	delete(r.idleLimiters, did)
	l.refs++
	return l
}

// releaseLogLimiter undoes logLimiterFor when an instance closes.
func (r *Runtime) releaseLogLimiter(l *logLimiter) {
	if l.did == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if l.refs--; l.refs == 0 {
		r.idleLimiters[l.did] = l
	}
}

// report returns the lines dropped since the last report if one is due
// (force: at close), else 0.
func (l *logLimiter) report(now time.Time, force bool) uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.unreported == 0 || (!force && !l.lastReport.IsZero() && now.Sub(l.lastReport) < logReportEvery) {
		return 0
	}
	n := l.unreported
	l.unreported = 0
	l.lastReport = now
	return n
}

func (l *logLimiter) total() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.dropped
}

// logLimits validates and defaults Config's log limits.
func logLimits(cfg Config) (rate float64, burst int, err error) {
	rate, burst = cfg.AgentLogRate, cfg.AgentLogBurst
	if math.IsNaN(rate) || math.IsInf(rate, 0) || rate < 0 {
		return 0, 0, fmt.Errorf("%w: AgentLogRate %v: want a finite number of lines per second ≥ 0 (0: the default, %d)", ErrBadConfig, rate, DefaultAgentLogRate)
	}
	if burst < 0 {
		return 0, 0, fmt.Errorf("%w: AgentLogBurst %d: want a number of lines ≥ 0 (0: the default, %d)", ErrBadConfig, burst, DefaultAgentLogBurst)
	}
	if rate == 0 {
		rate = DefaultAgentLogRate
	}
	if burst == 0 {
		burst = DefaultAgentLogBurst
	}
	return rate, burst, nil
}

// allowLog reports whether the instance may show one more agent line now.
func (i *Instance) allowLog() bool {
	if i.logLimit.allow(time.Now()) {
		return true
	}
	i.rt.logDropped.Add(1)
	return false
}

// reportDroppedLogs logs one warning for lines dropped since the last one,
// at most once per second unless force.
func (i *Instance) reportDroppedLogs(force bool) {
	if n := i.logLimit.report(time.Now(), force); n > 0 {
		i.rt.logger.Warn("agent log lines dropped by the rate limit", "agent", i.did, "dropped", n,
			"limit_lines_per_second", i.logLimit.rate, "burst", i.logLimit.burst)
	}
}

// LogLinesDropped is how many log lines (log_emit and stdout/stderr) of
// this instance's agent the rate limit kept out of the node's log, counted
// over the agent's instances that shared the bucket (same AgentDID).
func (i *Instance) LogLinesDropped() uint64 { return i.logLimit.total() }

// LogLinesDropped is how many agent log lines the rate limit kept out of the
// node's log, over all instances since the Runtime was created (a metric).
func (r *Runtime) LogLinesDropped() uint64 { return r.logDropped.Load() }
