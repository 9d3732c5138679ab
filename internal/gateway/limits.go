package gateway

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// Limits bound what the gateway takes on at once, for the whole gateway and
// for each workload (the agent's cgroup), so one runaway job cannot starve
// the others or the machine. A request over a limit is refused at once,
// never queued, with a Snowflake-shaped error the driver reports as it is.
// Zero means no limit.
type Limits struct {
	// MaxRequests caps API requests in progress, every kind but the ones
	// that end work (logout, abort), which are never refused.
	MaxRequests int
	// MaxQueries caps statements in progress (query-request).
	MaxQueries int
	// MaxBufferedBytes caps the API request and reply bodies held in
	// memory at once (see Gateway.charge); streamed result chunks are not
	// counted.
	MaxBufferedBytes int64
	// PerWorkload are the same caps for each cgroup.
	PerWorkload WorkloadLimits
}

// WorkloadLimits are the caps of one workload. Zero means no limit.
type WorkloadLimits struct {
	MaxRequests      int
	MaxQueries       int
	MaxBufferedBytes int64
}

// SQLSTATEs of limit refusals (class 53, insufficient resources).
const (
	SQLStateTooManyRequests = "53300"
	SQLStateOutOfMemory     = "53200"
)

// LimitStats are the limiter's live figures (the metrics stage exports
// them).
type LimitStats struct {
	// Requests, Queries and BufferedBytes are in progress now.
	Requests, Queries int
	BufferedBytes     int64
	// Workloads is the number of workloads with work in progress.
	Workloads int
	// Refused counts refusals by limit: "requests", "queries",
	// "buffered_bytes" (gateway-wide) and the same with a "workload_"
	// prefix.
	Refused map[string]int64
}

// usage is what one scope (the gateway, a workload) has in progress.
type usage struct {
	requests, queries int
	bytes             int64
}

func (u *usage) idle() bool { return u.requests == 0 && u.queries == 0 && u.bytes == 0 }

// limiter keeps the usage; its zero value is ready.
type limiter struct {
	mu    sync.Mutex
	total usage
	// byWorkload holds only workloads with work in progress, so it
	// cannot grow with the number of workloads ever seen.
	byWorkload map[uint64]*usage
	// leases are the admitted calls, for charge.
	leases  map[*Call]*lease
	refused sync.Map // limit name → *atomic.Int64
}

// lease is one admitted call's share of the usage.
type lease struct {
	workload uint64
	query    bool
	bytes    int64
}

// exempt reports whether a kind ends work and must get through even at the
// limit: refusing it would keep the load from falling.
func exempt(k snowflake.Kind) bool {
	switch k {
	case snowflake.KindLogout, snowflake.KindAbortByRequestID, snowflake.KindAbortByQueryID:
		return true
	}
	return false
}

// admit decides whether one more API request may proceed under the
// gateway's resource limits; release ends it and gives back what it held.
func (g *Gateway) admit(call *Call) (release func(), err error) {
	if exempt(call.Kind) {
		return func() {}, nil
	}
	lim, l := &g.limits, g.cfg.Limits
	query := call.Kind == snowflake.KindQueryRequest
	wl := call.Workload.CgroupID
	lim.mu.Lock()
	defer lim.mu.Unlock()
	w := lim.byWorkload[wl]
	if w == nil {
		w = &usage{}
	}
	switch {
	case over(lim.total.requests, l.MaxRequests):
		return nil, g.limitError(call, "requests", false, int64(l.MaxRequests), "limits.max_requests")
	case over(w.requests, l.PerWorkload.MaxRequests):
		return nil, g.limitError(call, "requests", true, int64(l.PerWorkload.MaxRequests), "limits.per_workload.max_requests")
	case query && over(lim.total.queries, l.MaxQueries):
		return nil, g.limitError(call, "queries", false, int64(l.MaxQueries), "limits.max_queries")
	case query && over(w.queries, l.PerWorkload.MaxQueries):
		return nil, g.limitError(call, "queries", true, int64(l.PerWorkload.MaxQueries), "limits.per_workload.max_queries")
	}
	if lim.byWorkload == nil {
		lim.byWorkload = map[uint64]*usage{}
		lim.leases = map[*Call]*lease{}
	}
	lim.byWorkload[wl] = w
	ls := &lease{workload: wl, query: query}
	lim.leases[call] = ls
	lim.total.requests++
	w.requests++
	if query {
		lim.total.queries++
		w.queries++
	}
	var once sync.Once
	return func() { once.Do(func() { lim.release(call, ls) }) }, nil
}

// over reports whether n in progress leaves no room under max (0: no limit).
func over(n, max int) bool { return max > 0 && n >= max }

func (lim *limiter) release(call *Call, ls *lease) {
	lim.mu.Lock()
	defer lim.mu.Unlock()
	delete(lim.leases, call)
	lim.total.requests--
	lim.total.bytes -= ls.bytes
	if ls.query {
		lim.total.queries--
	}
	w := lim.byWorkload[ls.workload]
	w.requests--
	w.bytes -= ls.bytes
	if ls.query {
		w.queries--
	}
	if w.idle() {
		delete(lim.byWorkload, ls.workload)
	}
}

// charge counts n more bytes of body held in memory for an admitted call
// (its request body once read, its upstream reply once read); admit's
// release gives them back. Over a limit it charges nothing and returns the
// refusal. A call that was not admitted (an exempt kind) is not counted.
func (g *Gateway) charge(call *Call, n int64) error {
	if n <= 0 {
		return nil
	}
	lim, l := &g.limits, g.cfg.Limits
	lim.mu.Lock()
	defer lim.mu.Unlock()
	ls := lim.leases[call]
	if ls == nil {
		return nil
	}
	w := lim.byWorkload[ls.workload]
	switch {
	case l.MaxBufferedBytes > 0 && lim.total.bytes+n > l.MaxBufferedBytes:
		return g.limitError(call, "buffered_bytes", false, l.MaxBufferedBytes, "limits.max_buffered_bytes")
	case l.PerWorkload.MaxBufferedBytes > 0 && w.bytes+n > l.PerWorkload.MaxBufferedBytes:
		return g.limitError(call, "buffered_bytes", true, l.PerWorkload.MaxBufferedBytes, "limits.per_workload.max_buffered_bytes")
	}
	ls.bytes += n
	w.bytes += n
	lim.total.bytes += n
	return nil
}

// limitDescriptions say what each limit counts, for the driver's message.
var limitDescriptions = map[string]string{
	"requests":       "API requests in progress",
	"queries":        "statements in progress",
	"buffered_bytes": "bytes of request and reply bodies held in memory",
}

// limitError counts a refusal, logs it for the operator and returns the
// driver's error: HTTP 200 with success false, so the driver reports the
// message at once instead of retrying blindly.
func (g *Gateway) limitError(call *Call, limit string, perWorkload bool, max int64, key string) error {
	name, scope := limit, "the gateway"
	if perWorkload {
		name, scope = "workload_"+limit, "workload cgroup "+strconv.FormatUint(call.Workload.CgroupID, 10)
	}
	c, _ := g.limits.refused.LoadOrStore(name, new(atomic.Int64))
	c.(*atomic.Int64).Add(1)
	state := SQLStateTooManyRequests
	if limit == "buffered_bytes" {
		state = SQLStateOutOfMemory
	}
	msg := fmt.Sprintf("snowgate: resource limit reached: %s is at its limit of %d %s (%s); retry later", scope, max, limitDescriptions[limit], key)
	g.log.Warn("request refused: resource limit reached", "limit", key, "max", max, "kind", call.Kind.String(),
		"cgroup", call.Workload.CgroupID, "pid", call.Workload.PID, "comm", call.Workload.Comm)
	return &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: state, Message: msg}
}

// LimitStats returns the limiter's figures now.
func (g *Gateway) LimitStats() LimitStats {
	lim := &g.limits
	lim.mu.Lock()
	s := LimitStats{Requests: lim.total.requests, Queries: lim.total.queries, BufferedBytes: lim.total.bytes, Workloads: len(lim.byWorkload)}
	lim.mu.Unlock()
	s.Refused = map[string]int64{}
	lim.refused.Range(func(k, v any) bool {
		s.Refused[k.(string)] = v.(*atomic.Int64).Load()
		return true
	})
	return s
}
