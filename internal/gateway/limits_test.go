package gateway_test

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/testenv"
)

// TestLimitsThroughGateway hits each concurrency limit with the real
// driver: one agent's statement is held upstream (emulator latency) while a
// second agent, in the same workload or in another one, tries to work. The
// second is refused with a Snowflake-shaped error naming the limit, the
// held statement completes, and once it has, the second succeeds.
func TestLimitsThroughGateway(t *testing.T) {
	tests := []struct {
		name   string
		limits gateway.Limits
		// otherWorkload runs the second agent in a child cgroup (another
		// workload under the same redirect).
		otherWorkload bool
		// login: the second agent's refused request is its login;
		// otherwise a query after a login made before the hold.
		login   bool
		key     string
		refused string
	}{
		{"workload queries", gateway.Limits{PerWorkload: gateway.WorkloadLimits{MaxQueries: 1}}, false, false,
			"limits.per_workload.max_queries", "workload_queries"},
		{"gateway queries", gateway.Limits{MaxQueries: 1, PerWorkload: gateway.WorkloadLimits{MaxQueries: 1}}, true, false,
			"limits.max_queries", "queries"},
		{"workload requests", gateway.Limits{PerWorkload: gateway.WorkloadLimits{MaxRequests: 1}}, false, true,
			"limits.per_workload.max_requests", "workload_requests"},
		{"gateway requests", gateway.Limits{MaxRequests: 1}, true, true,
			"limits.max_requests", "requests"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, fixtureOptions{Limits: tc.limits})
			a1 := f.startAgent(t)
			second := testenv.Proc{Cgroup: f.cg, Netns: f.ns, Root: true}
			if tc.otherWorkload {
				second.Cgroup = testenv.NewCgroupUnder(t, f.cg.Path)
			}
			a2 := startClientProc(t, second, f.caFile)
			if r := a1.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
				t.Fatalf("first agent login: %s", r.Err)
			}
			if !tc.login {
				if r := a2.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
					t.Fatalf("second agent login: %s", r.Err)
				}
			}
			// Hold the first agent's statement upstream, long enough for
			// the second agent's request on a loaded machine.
			faults := f.inst.Server.Faults()
			faults.SetLatency(emulator.EndpointQuery, 15*time.Second)
			held := send(a1, clientCmd{Op: "query", SQL: "SELECT 41 + 1"})
			waitFor(t, "the held statement to be in progress", func() bool { return f.gw.LimitStats().Queries == 1 })

			var r clientReply
			if tc.login {
				r = <-send(a2, clientCmd{Op: "open", DSN: dsn()})
			} else {
				r = <-send(a2, clientCmd{Op: "query", SQL: "SELECT 1"})
			}
			if !strings.Contains(r.Err, "resource limit reached") || !strings.Contains(r.Err, tc.key) || r.Code != 390400 {
				t.Errorf("second agent at the limit: code %d, error %q; want 390400 naming %s", r.Code, r.Err, tc.key)
			}
			if got := <-held; got.Err != "" || fmt.Sprint(got.Rows) != "[[42]]" {
				t.Errorf("held statement: rows %v, error %q; want [[42]]", got.Rows, got.Err)
			}
			faults.SetLatency(emulator.EndpointQuery, 0)
			waitFor(t, "the limiter to be idle", func() bool {
				s := f.gw.LimitStats()
				return s.Requests == 0 && s.Queries == 0 && s.BufferedBytes == 0 && s.Workloads == 0
			})
			if tc.login {
				r = a2.do(t, clientCmd{Op: "open", DSN: dsn()})
			} else {
				r = a2.do(t, clientCmd{Op: "query", SQL: "SELECT 1"})
			}
			if r.Err != "" {
				t.Errorf("second agent below the limit: %s", r.Err)
			}
			if n := f.gw.LimitStats().Refused[tc.refused]; n != 1 {
				t.Errorf("refusals counted under %q: %d, want 1 (%v)", tc.refused, n, f.gw.LimitStats().Refused)
			}
		})
	}
}

// openFDs counts this process's open sockets: every connection the gateway
// (and the in-process emulator) holds. Other descriptors are left out: the
// harness keeps a cgroup directory open per agent it starts.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(target, "socket:") {
			n++
		}
	}
	return n
}

// TestLongRunNoGrowth runs rounds of whole agent lives through the gateway
// (start, login, statements, a multi-chunk result, exit) and checks that
// this process, which holds the gateway and the emulator, ends each round
// with no more goroutines and sockets than after the first: every
// connection, stream and limiter entry is released.
func TestLongRunNoGrowth(t *testing.T) {
	f := newFixture(t, fixtureOptions{Limits: gateway.Limits{MaxRequests: 100, MaxQueries: 50, MaxBufferedBytes: 256 << 20,
		PerWorkload: gateway.WorkloadLimits{MaxRequests: 50, MaxQueries: 20, MaxBufferedBytes: 128 << 20}}})
	round := func() {
		a := f.startAgent(t)
		if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
			t.Fatalf("login: %s", r.Err)
		}
		for i := range 20 {
			if r := a.do(t, clientCmd{Op: "query", SQL: "SELECT ?", Args: []any{i}}); r.Err != "" {
				t.Fatalf("query: %s", r.Err)
			}
		}
		if r := a.do(t, clientCmd{Op: "seq", SQL: "SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => 30000))", Rows: 30000}); r.Err != "" {
			t.Fatalf("multi-chunk select: %s", r.Err)
		}
		// The agent exits: stdin closed, its connections with it.
		a.p.Stdin().Close()
		_ = a.p.Wait(t, 2*time.Minute)
	}
	// settled waits until the goroutine and descriptor counts are at most
	// the limits; it returns the last counts.
	settled := func(maxG, maxFD int) (int, int) {
		deadline := time.Now().Add(90 * time.Second)
		for {
			g, fd := runtime.NumGoroutine(), openFDs(t)
			if (g <= maxG && fd <= maxFD) || time.Now().After(deadline) {
				return g, fd
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	round() // warm: pools, caches, lazily started goroutines
	// The baseline: the lowest counts over a few quiet seconds.
	g0, fd0 := runtime.NumGoroutine(), openFDs(t)
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		g0, fd0 = min(g0, runtime.NumGoroutine()), min(fd0, openFDs(t))
	}
	// Slack for goroutines that come and go on their own (timers of
	// pooled connections, the emulator's janitors).
	const slackG, slackFD = 8, 4
	for i := range 15 {
		round()
		g, fd := settled(g0+slackG, fd0+slackFD)
		t.Logf("round %d: %d goroutines (first %d), %d sockets (first %d)", i+1, g, g0, fd, fd0)
		if g > g0+slackG || fd > fd0+slackFD {
			t.Fatalf("round %d: %d goroutines and %d sockets, after the first round %d and %d: something leaks", i+1, g, fd, g0, fd0)
		}
	}
	if s := f.gw.LimitStats(); s.Requests != 0 || s.Queries != 0 || s.BufferedBytes != 0 || s.Workloads != 0 {
		t.Errorf("limiter not idle after the run: %+v", s)
	}
}
