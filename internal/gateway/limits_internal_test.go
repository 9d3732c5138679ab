package gateway

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// limitGateway is a gateway with limits and nothing else: admit and charge
// need no listener or upstream.
func limitGateway(l Limits) *Gateway {
	return &Gateway{cfg: Config{Limits: l}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func call(kind snowflake.Kind, cgroup uint64) *Call {
	return &Call{Kind: kind, Workload: Workload{CgroupID: cgroup}}
}

// TestAdmit walks sequences of requests through the limiter: each step is
// admitted or refused with the named limit, and a step may release an
// earlier one.
func TestAdmit(t *testing.T) {
	q, r := snowflake.KindQueryRequest, snowflake.KindQueryResult
	type step struct {
		kind    snowflake.Kind
		cgroup  uint64
		release int    // release step n (1-based) before this one
		refuse  string // the limit key the refusal names; "" admits
	}
	tests := []struct {
		name   string
		limits Limits
		steps  []step
	}{
		{"no limits", Limits{}, []step{{kind: q, cgroup: 1}, {kind: q, cgroup: 1}, {kind: r, cgroup: 1}}},
		{"gateway requests", Limits{MaxRequests: 2}, []step{
			{kind: q, cgroup: 1}, {kind: r, cgroup: 2},
			{kind: snowflake.KindLogin, cgroup: 3, refuse: "limits.max_requests"},
			{kind: snowflake.KindTokenRequest, cgroup: 3, release: 1},
		}},
		{"workload requests", Limits{PerWorkload: WorkloadLimits{MaxRequests: 1}}, []step{
			{kind: r, cgroup: 1}, {kind: r, cgroup: 2},
			{kind: q, cgroup: 1, refuse: "limits.per_workload.max_requests"},
			{kind: q, cgroup: 1, release: 1},
		}},
		{"gateway queries", Limits{MaxQueries: 1}, []step{
			{kind: q, cgroup: 1},
			{kind: r, cgroup: 2}, // a result poll is no new statement
			{kind: q, cgroup: 2, refuse: "limits.max_queries"},
			{kind: q, cgroup: 2, release: 1},
		}},
		{"workload queries", Limits{PerWorkload: WorkloadLimits{MaxQueries: 2}}, []step{
			{kind: q, cgroup: 1}, {kind: q, cgroup: 1}, {kind: q, cgroup: 2},
			{kind: q, cgroup: 1, refuse: "limits.per_workload.max_queries"},
			{kind: q, cgroup: 1, release: 2},
		}},
		{"ending work is never refused", Limits{MaxRequests: 1, PerWorkload: WorkloadLimits{MaxRequests: 1}}, []step{
			{kind: q, cgroup: 1},
			{kind: snowflake.KindAbortByRequestID, cgroup: 1},
			{kind: snowflake.KindAbortByQueryID, cgroup: 1},
			{kind: snowflake.KindLogout, cgroup: 1},
			{kind: snowflake.KindHeartbeat, cgroup: 1, refuse: "limits.max_requests"},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := limitGateway(tc.limits)
			releases := make([]func(), len(tc.steps))
			for i, s := range tc.steps {
				if s.release > 0 {
					releases[s.release-1]()
				}
				rel, err := g.admit(call(s.kind, s.cgroup))
				if s.refuse == "" {
					if err != nil {
						t.Fatalf("step %d (%s, cgroup %d): refused: %v", i+1, s.kind, s.cgroup, err)
					}
					releases[i] = rel
					continue
				}
				var se *snowflake.Error
				if !errors.As(err, &se) || !strings.Contains(se.Message, s.refuse) || se.Status() != 200 || se.Code != snowflake.CodeBadRequest || se.SQLState != SQLStateTooManyRequests {
					t.Fatalf("step %d (%s, cgroup %d): %v; want a 200 Snowflake error naming %s", i+1, s.kind, s.cgroup, err, s.refuse)
				}
			}
			for _, rel := range releases {
				if rel != nil {
					rel()
					rel() // twice is harmless
				}
			}
			if s := g.LimitStats(); s.Requests != 0 || s.Queries != 0 || s.Workloads != 0 || s.BufferedBytes != 0 {
				t.Errorf("after every release: %+v", s)
			}
		})
	}
}

// TestCharge checks the buffered-bytes limits: bodies are counted against
// the call's workload and the gateway until the call is released.
func TestCharge(t *testing.T) {
	const mb = 1 << 20
	g := limitGateway(Limits{MaxBufferedBytes: 10 * mb, PerWorkload: WorkloadLimits{MaxBufferedBytes: 6 * mb}})
	a, b := call(snowflake.KindQueryRequest, 1), call(snowflake.KindQueryRequest, 2)
	relA, err := g.admit(a)
	if err != nil {
		t.Fatal(err)
	}
	relB, err := g.admit(b)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		call   *Call
		n      int64
		refuse string
	}{
		{a, 4 * mb, ""},
		{a, 2 * mb, ""},
		{a, 1, "limits.per_workload.max_buffered_bytes"},
		{b, 5 * mb, "limits.max_buffered_bytes"},
		{b, 4 * mb, ""},
		{b, 0, ""},
		{call(snowflake.KindLogout, 2), 100 * mb, ""}, // never admitted: not counted
	}
	for i, s := range steps {
		err := g.charge(s.call, s.n)
		if s.refuse == "" {
			if err != nil {
				t.Fatalf("step %d: %v", i+1, err)
			}
			continue
		}
		var se *snowflake.Error
		if !errors.As(err, &se) || !strings.Contains(se.Message, s.refuse) || se.SQLState != SQLStateOutOfMemory {
			t.Fatalf("step %d: %v; want a refusal naming %s", i+1, err, s.refuse)
		}
	}
	if got := g.LimitStats().BufferedBytes; got != 10*mb {
		t.Errorf("buffered %d bytes, want %d", got, 10*mb)
	}
	relA()
	if err := g.charge(b, 2*mb); err != nil {
		t.Errorf("after a's release: %v", err)
	}
	relB()
	s := g.LimitStats()
	if s.BufferedBytes != 0 || s.Workloads != 0 {
		t.Errorf("after every release: %+v", s)
	}
	if s.Refused["buffered_bytes"] != 1 || s.Refused["workload_buffered_bytes"] != 1 {
		t.Errorf("refusals %v, want one of each", s.Refused)
	}
}

// TestAdmitConcurrent admits and releases from many goroutines at once
// (run with -race): the counts never pass the limits and end at zero.
func TestAdmitConcurrent(t *testing.T) {
	g := limitGateway(Limits{MaxQueries: 8, PerWorkload: WorkloadLimits{MaxQueries: 3}})
	var wg sync.WaitGroup
	var mu sync.Mutex
	peak := map[uint64]int{}
	inFlight := map[uint64]int{}
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cg := uint64(w % 4)
			for range 200 {
				rel, err := g.admit(call(snowflake.KindQueryRequest, cg))
				if err != nil {
					continue
				}
				mu.Lock()
				inFlight[cg]++
				peak[cg] = max(peak[cg], inFlight[cg])
				total := 0
				for _, n := range inFlight {
					total += n
				}
				if total > 8 {
					t.Errorf("%d statements in progress, limit 8", total)
				}
				mu.Unlock()
				mu.Lock()
				inFlight[cg]--
				mu.Unlock()
				rel()
			}
		}()
	}
	wg.Wait()
	for cg, p := range peak {
		if p > 3 {
			t.Errorf("workload %d peaked at %d statements, limit 3", cg, p)
		}
	}
	if s := g.LimitStats(); s.Queries != 0 || s.Requests != 0 || s.Workloads != 0 {
		t.Errorf("after the run: %+v", s)
	}
}
