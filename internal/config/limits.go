package config

import (
	"math"
	"strconv"
	"strings"
)

// Limits bound what the gateway takes on at once, for the whole gateway and
// for each workload (the cgroup of the agent process), so one runaway job
// cannot starve the others or the machine. A request over a limit is refused
// at once with a Snowflake-shaped error the driver reports (and may retry);
// nothing is queued. Zero means no limit.
type Limits struct {
	// MaxRequests caps API requests in progress (login, statements,
	// result polls, renewals, ...; logout and abort requests are never
	// refused). Default 2000.
	MaxRequests int `yaml:"max_requests"`
	// MaxQueries caps statements in progress (query-request); polls of
	// a running statement's result count as requests only. Default 1000.
	MaxQueries int `yaml:"max_queries"`
	// MaxBufferedBytes caps the request and reply bodies the gateway
	// holds in memory at once (it reads an API body whole to rewrite it;
	// result chunks stream and are not counted). Default 1GiB.
	MaxBufferedBytes ByteSize `yaml:"max_buffered_bytes"`
	// PerWorkload are the same caps for each workload (cgroup).
	PerWorkload WorkloadLimits `yaml:"per_workload"`
}

// WorkloadLimits are the caps for one workload. Zero means no limit.
type WorkloadLimits struct {
	// MaxRequests per workload; default 200.
	MaxRequests int `yaml:"max_requests"`
	// MaxQueries per workload; default 50.
	MaxQueries int `yaml:"max_queries"`
	// MaxBufferedBytes per workload; default 256MiB.
	MaxBufferedBytes ByteSize `yaml:"max_buffered_bytes"`
}

// Defaults of Limits.
const (
	DefaultMaxRequests              = 2000
	DefaultMaxQueries               = 1000
	DefaultMaxBufferedBytes         = 1 << 30
	DefaultWorkloadMaxRequests      = 200
	DefaultWorkloadMaxQueries       = 50
	DefaultWorkloadMaxBufferedBytes = 256 << 20
	minBufferedBytes                = 1 << 20
)

// ByteSize is a size written as a number of bytes or with a binary or
// decimal unit: 1048576, "512KiB", "256MiB", "1GiB", "100MB". 0 is no limit.
type ByteSize struct {
	Bytes int64
	raw   string
	set   bool
}

// UnmarshalText implements encoding.TextUnmarshaler. Parsing happens in
// validation, where the error can name the line.
func (b *ByteSize) UnmarshalText(text []byte) error {
	b.raw, b.set = string(text), true
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(strconv.FormatInt(b.Bytes, 10)), nil }

var byteUnits = []struct {
	suffix string
	factor int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12},
	{"B", 1},
}

// parseByteSize reads a ByteSize's text.
func parseByteSize(s string) (int64, bool) {
	s = strings.TrimSpace(s)
	factor := int64(1)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, factor = strings.TrimSpace(rest), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/factor {
		return 0, false
	}
	return n * factor, true
}

func (v *validator) limits(l *Limits) {
	v.limitCount("limits.max_requests", &l.MaxRequests, DefaultMaxRequests)
	v.limitCount("limits.max_queries", &l.MaxQueries, DefaultMaxQueries)
	v.limitBytes("limits.max_buffered_bytes", &l.MaxBufferedBytes, DefaultMaxBufferedBytes)
	w := &l.PerWorkload
	v.limitCount("limits.per_workload.max_requests", &w.MaxRequests, DefaultWorkloadMaxRequests)
	v.limitCount("limits.per_workload.max_queries", &w.MaxQueries, DefaultWorkloadMaxQueries)
	v.limitBytes("limits.per_workload.max_buffered_bytes", &w.MaxBufferedBytes, DefaultWorkloadMaxBufferedBytes)
	// A workload cap above the global one would never bite.
	over := func(path string, per, global int64) {
		if per > 0 && global > 0 && per > global {
			v.bad(path, "%d is above the gateway-wide limit %d", per, global)
		}
	}
	over("limits.per_workload.max_requests", int64(w.MaxRequests), int64(l.MaxRequests))
	over("limits.per_workload.max_queries", int64(w.MaxQueries), int64(l.MaxQueries))
	over("limits.per_workload.max_buffered_bytes", w.MaxBufferedBytes.Bytes, l.MaxBufferedBytes.Bytes)
	if l.MaxQueries > 0 && l.MaxRequests > 0 && l.MaxQueries > l.MaxRequests {
		v.bad("limits.max_queries", "%d is above limits.max_requests (%d): every query is a request", l.MaxQueries, l.MaxRequests)
	}
}

// limitCount applies the default to an absent count; 0 written out means
// no limit.
func (v *validator) limitCount(path string, n *int, def int) {
	switch {
	case !v.present(path):
		*n = def
	case *n < 0:
		v.bad(path, "must not be negative (0 means no limit)")
	}
}

func (v *validator) limitBytes(path string, b *ByteSize, def int64) {
	if !b.set {
		b.Bytes = def
		return
	}
	n, ok := parseByteSize(b.raw)
	switch {
	case !ok:
		v.bad(path, "%q is not a size (bytes, or a number with KiB, MiB, GiB, KB, MB, GB)", b.raw)
	case n > 0 && n < minBufferedBytes:
		v.bad(path, "%s is below 1MiB: a single login would not fit (0 means no limit)", b.raw)
	default:
		b.Bytes = n
	}
}
