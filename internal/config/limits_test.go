package config

import (
	"errors"
	"strings"
	"testing"
)

func TestLimitsDefaults(t *testing.T) {
	c, err := Parse("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := Limits{
		MaxRequests:      DefaultMaxRequests,
		MaxQueries:       DefaultMaxQueries,
		MaxBufferedBytes: ByteSize{Bytes: DefaultMaxBufferedBytes},
		PerWorkload: WorkloadLimits{
			MaxRequests:      DefaultWorkloadMaxRequests,
			MaxQueries:       DefaultWorkloadMaxQueries,
			MaxBufferedBytes: ByteSize{Bytes: DefaultWorkloadMaxBufferedBytes},
		},
	}
	if got := c.Limits; got != want {
		t.Errorf("limits %+v, want %+v", got, want)
	}
}

func TestLimitsValues(t *testing.T) {
	tests := []struct {
		name, yaml string
		check      func(Limits) bool
	}{
		{"units", "limits:\n  max_buffered_bytes: 2GiB\n  per_workload: {max_buffered_bytes: 64MiB}\n",
			func(l Limits) bool {
				return l.MaxBufferedBytes.Bytes == 2<<30 && l.PerWorkload.MaxBufferedBytes.Bytes == 64<<20
			}},
		{"plain bytes", "limits:\n  max_buffered_bytes: 10485760\n  per_workload: {max_buffered_bytes: 5MB}\n",
			func(l Limits) bool {
				return l.MaxBufferedBytes.Bytes == 10<<20 && l.PerWorkload.MaxBufferedBytes.Bytes == 5e6
			}},
		{"zero is no limit", "limits:\n  max_requests: 0\n  max_queries: 0\n  max_buffered_bytes: 0\n",
			func(l Limits) bool {
				return l.MaxRequests == 0 && l.MaxQueries == 0 && l.MaxBufferedBytes.Bytes == 0 && l.PerWorkload.MaxRequests == DefaultWorkloadMaxRequests
			}},
		{"counts", "limits:\n  max_requests: 30\n  max_queries: 20\n  per_workload: {max_requests: 3, max_queries: 2}\n",
			func(l Limits) bool {
				return l.MaxRequests == 30 && l.MaxQueries == 20 && l.PerWorkload.MaxRequests == 3 && l.PerWorkload.MaxQueries == 2
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("limits.yaml", []byte(minimal+tc.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c.Limits) {
				t.Errorf("limits %+v", c.Limits)
			}
		})
	}
}

func TestLimitsProblems(t *testing.T) {
	tests := []struct {
		name, yaml, key, reason string
	}{
		{"negative", "limits:\n  max_requests: -1\n", "limits.max_requests", "negative"},
		{"negative per workload", "limits:\n  per_workload: {max_queries: -5}\n", "limits.per_workload.max_queries", "negative"},
		{"not a size", "limits:\n  max_buffered_bytes: lots\n", "limits.max_buffered_bytes", "not a size"},
		{"negative size", "limits:\n  max_buffered_bytes: -1MiB\n", "limits.max_buffered_bytes", "not a size"},
		{"tiny size", "limits:\n  per_workload: {max_buffered_bytes: 4KiB}\n", "limits.per_workload.max_buffered_bytes", "below 1MiB"},
		{"workload above global", "limits:\n  max_requests: 10\n  max_queries: 5\n  per_workload: {max_requests: 20}\n", "limits.per_workload.max_requests", "above the gateway-wide"},
		{"queries above requests", "limits:\n  max_requests: 10\n  max_queries: 50\n  per_workload: {max_requests: 5, max_queries: 5}\n", "limits.max_queries", "above limits.max_requests"},
		{"unknown key", "limits:\n  max_sessions: 10\n", "limits.max_sessions", "unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("limits.yaml", []byte(minimal+tc.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err %v, want a config error", err)
			}
			for _, p := range ce.Problems {
				if p.Key == tc.key && strings.Contains(p.Reason, tc.reason) {
					if p.Line == 0 {
						t.Errorf("%s: no line", p.Key)
					}
					return
				}
			}
			t.Fatalf("problems %v, want %s: …%s…", ce.Problems, tc.key, tc.reason)
		})
	}
}
