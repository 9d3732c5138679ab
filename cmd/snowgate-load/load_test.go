package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
)

func TestParseMix(t *testing.T) {
	tests := []struct {
		in      string
		want    []weighted
		wantErr bool
	}{
		{in: "small=80,large=5,dml=15", want: []weighted{{opSmall, 80}, {opLarge, 5}, {opDML, 15}}},
		{in: "small=1", want: []weighted{{opSmall, 1}}},
		{in: "small=1, large=0", want: []weighted{{opSmall, 1}}},
		{in: "small=0", wantErr: true},
		{in: "ddl=3", wantErr: true},
		{in: "small", wantErr: true},
		{in: "small=-1", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		got, err := parseMix(tc.in)
		if (err != nil) != tc.wantErr {
			t.Errorf("parseMix(%q) error %v, want error %v", tc.in, err, tc.wantErr)
			continue
		}
		if fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("parseMix(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
		check   func(*testing.T, *options)
	}{
		{name: "password login", args: []string{"--cgroup", "/x", "--user", "u"}, check: func(t *testing.T, o *options) {
			if o.directDuration != time.Minute || o.workloads != 4 || o.sessions != 5 {
				t.Errorf("defaults: %+v", o)
			}
		}},
		{name: "short run caps the baseline", args: []string{"--cgroup", "/x", "--user", "u", "--duration", "20s"}, check: func(t *testing.T, o *options) {
			if o.directDuration != 20*time.Second {
				t.Errorf("direct duration %v", o.directDuration)
			}
		}},
		{name: "token command", args: []string{"--cgroup", "/x", "--token-command", "echo t"}},
		{name: "emulator CA defaults to the direct CA", args: []string{"--cgroup", "/x", "--user", "u", "--direct-ca-file", "d.pem"}, check: func(t *testing.T, o *options) {
			if o.emulatorCA != "d.pem" {
				t.Errorf("emulator CA %q", o.emulatorCA)
			}
		}},
		{name: "no cgroup", args: []string{"--user", "u"}, wantErr: "--cgroup is required"},
		{name: "no credential", args: []string{"--cgroup", "/x"}, wantErr: "need --user"},
		{name: "two token sources", args: []string{"--cgroup", "/x", "--token-command", "a", "--token-file", "b"}, wantErr: "exclude each other"},
		{name: "faults need the emulator", args: []string{"--cgroup", "/x", "--user", "u", "--fault", "query,status=503"}, wantErr: "need --emulator-admin"},
		{name: "bad fault", args: []string{"--cgroup", "/x", "--user", "u", "--emulator-admin", "https://e", "--fault", "query"}, wantErr: "needs latency"},
		{name: "bad mix", args: []string{"--cgroup", "/x", "--user", "u", "--mix", "small=x"}, wantErr: "--mix"},
		{name: "no sessions", args: []string{"--cgroup", "/x", "--user", "u", "--sessions", "0"}, wantErr: "at least 1"},
		{name: "stray argument", args: []string{"--cgroup", "/x", "--user", "u", "extra"}, wantErr: "unexpected arguments"},
		{name: "negative drain", args: []string{"--cgroup", "/x", "--user", "u", "--drain", "-1s"}, wantErr: "--drain"},
		{name: "drain", args: []string{"--cgroup", "/x", "--user", "u", "--drain", "30s"}, check: func(t *testing.T, o *options) {
			if o.drain != 30*time.Second || o.approveWorkers != 8 {
				t.Errorf("drain %v, approve workers %d", o.drain, o.approveWorkers)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, o)
			}
		})
	}
}

func TestErrorKind(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{&gosnowflake.SnowflakeError{Number: 390112}, "snowflake-390112"},
		{fmt.Errorf("wrapped: %w", &gosnowflake.SnowflakeError{Number: 261000}), "snowflake-261000"},
		{&gosnowflake.SnowflakeError{Number: 261000, Message: "failed to POST. HTTP: %v, URL: %v", MessageArgs: []any{401, "https://x"}}, "snowflake-261000-http-401"},
		{&gosnowflake.SnowflakeError{Number: 3001, Message: "SQL access control error:\nsnowgate: statement held for approval apr_1 was denied by alice: no"}, "snowflake-3001"},
		{&gosnowflake.SnowflakeError{Number: 3001, Message: "SQL access control error:\nsnowgate: the statement approved in apr_1 already ran; it runs only once"}, "snowflake-3001-already-ran"},
		{context.DeadlineExceeded, "timeout"},
		{fmt.Errorf("dial: %w", syscall.ECONNREFUSED), "connection-refused"},
		{fmt.Errorf("read: %w", syscall.ECONNRESET), "connection-reset"},
		{io.ErrUnexpectedEOF, "eof"},
		{fmt.Errorf("%w: row 3", errWrongResult), "wrong-result"},
		{fmt.Errorf("%w: in flight 3m0s (%v)", errStuckAtEnd, context.DeadlineExceeded), "stuck-at-end"},
		{errors.New("Post \"https://x\": dial tcp 1.2.3.4:443: connect: connection refused"), "connection-refused"},
		{errors.New("x509: certificate signed by unknown authority"), "tls"},
		{errors.New("something else"), "other"},
	}
	for _, tc := range tests {
		if got := errorKind(tc.err); got != tc.want {
			t.Errorf("errorKind(%v) = %q, want %q", tc.err, got, tc.want)
		}
	}
}

func TestPercentilesAndMerge(t *testing.T) {
	var p phaseReport
	p.Window = 10 * time.Second
	lat := make([]int64, 1000)
	for i := range lat {
		lat[i] = int64(i+1) * 1000 // 1..1000 ms
	}
	rand.Shuffle(len(lat), func(i, j int) { lat[i], lat[j] = lat[j], lat[i] })
	p.merge(workerResult{Index: 0, Ops: map[string]*opStats{
		opSmall: {LatencyUS: lat[:500], Errors: map[string]int{"timeout": 2}},
		opLogin: {LatencyUS: []int64{5000, 6000}},
	}, Samples: map[string]string{"timeout": "small: deadline"}})
	p.merge(workerResult{Index: 1, Ops: map[string]*opStats{opSmall: {LatencyUS: lat[500:]},
		opDML: {LatencyUS: []int64{1000}, CutUS: []int64{61_000_000, 75_500_000}}}, Fatal: "boom"})
	p.finish()
	// Operations cut by the end of the run are counted apart: neither
	// errors nor latencies.
	if d := p.Ops[opDML]; d.Count != 1 || d.Cut != 2 || d.CutAgeMaxMS != 75_500 || len(d.Errors) != 0 || p.Cut != 2 || p.Errors["timeout"] != 2 {
		t.Errorf("dml %+v, phase cut %d, errors %v", d, p.Cut, p.Errors)
	}
	s := p.Ops[opSmall]
	if s.Count != 1000 || s.P50 != 500 || s.P90 != 900 || s.P99 != 990 || s.P999 != 999 || s.Max != 1000 {
		t.Errorf("small: %+v", s)
	}
	if p.Sessions != 2 || p.OpsPerSecond != 100.1 {
		t.Errorf("sessions %d, ops/s %v", p.Sessions, p.OpsPerSecond)
	}
	if p.Errors["timeout"] != 2 || s.Errors["timeout"] != 2 || len(p.Fatal) != 1 {
		t.Errorf("errors %v %v fatal %v", p.Errors, s.Errors, p.Fatal)
	}
}

func TestSummarizeGateway(t *testing.T) {
	var samples []procSample
	for i := range 9 {
		samples = append(samples, procSample{
			At: time.Duration(i) * time.Minute, CPU: time.Duration(i) * 30 * time.Second,
			RSSKB: int64(100+10*i) * 1024, HWMKB: 200 * 1024, FDs: 10 + i, Threads: 5,
		})
	}
	g := summarize(42, samples, nil)
	if g.CPUSeconds != 240 || g.CPUPercent != 50 {
		t.Errorf("cpu %v s, %v %%", g.CPUSeconds, g.CPUPercent)
	}
	if g.RSSMB != [5]float64{100, 120, 140, 160, 180} || g.RSSMaxMB != 180 || g.HWMMB != 200 {
		t.Errorf("rss %v max %v hwm %v", g.RSSMB, g.RSSMaxMB, g.HWMMB)
	}
	if g.SlopeMBMin < 9.99 || g.SlopeMBMin > 10.01 {
		t.Errorf("slope %v MB/min, want 10", g.SlopeMBMin)
	}
	if g.FDs != [3]int{10, 18, 18} {
		t.Errorf("fds %v", g.FDs)
	}
	// The process's own figures come from /proc.
	self, err := readProc(os.Getpid())
	if err != nil || self.RSSKB == 0 || self.Threads == 0 || self.FDs == 0 {
		t.Errorf("readProc(self) = %+v, %v", self, err)
	}
}

func TestDuplicates(t *testing.T) {
	log := []emulator.QueryLogEntry{
		{SessionID: 1, RequestID: "a", SQL: "INSERT 1"},
		{SessionID: 1, RequestID: "b", SQL: "INSERT 2"},
		{SessionID: 2, RequestID: "a", SQL: "INSERT 1"},                      // another session: fine
		{SessionID: 1, RequestID: "m", SQL: "S1", ParentQueryID: "p"},        // multi-statement children
		{SessionID: 1, RequestID: "m", SQL: "S2", ParentQueryID: "p"},        // share the parent's id
		{SessionID: 1, RequestID: "", SQL: "no id"}, {SessionID: 1, SQL: ""}, // no requestId: not comparable
		{SessionID: 1, RequestID: "b", SQL: "INSERT 2"}, // twice
	}
	dup := duplicates(log)
	if len(dup) != 1 || dup[0].RequestID != "b" {
		t.Fatalf("duplicates = %+v", dup)
	}
}

func TestReportText(t *testing.T) {
	rep := &report{
		Settings: settings{Workloads: 2, Sessions: 3, Duration: time.Minute, Mix: "small=1"},
		Phases: map[string]*phaseReport{"gateway": {Sessions: 6, Ops: map[string]*opSummary{opSmall: {Count: 10, P99: 3}, opDML: {Count: 4, Cut: 3, CutAgeMaxMS: 61_200}},
			Errors: map[string]int{"timeout": 1}, Samples: map[string]string{"timeout": "small: x"}, Cut: 3}},
		Overhead:   map[string]overhead{opSmall: {P99: 1.5}},
		Executions: &executionReport{Statements: 10},
		Problems:   []string{"gateway: 1 errors timeout"},
	}
	var b bytes.Buffer
	rep.write(&b)
	for _, want := range []string{"2 workloads × 3 sessions = 6 sessions", "error timeout: 1", "p99     +1.5", "10 statements, 0 executed twice", "result: FAIL",
		"cut by the end of the run (in flight when the duration ended, cancelled after the drain; not errors): 3; dml 3 (oldest 61.2 s in flight)"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestLoadThroughDaemon runs the load generator against `snowgate run`:
// workloads in child cgroups of the agents' cgroup, real gosnowflake
// sessions through the redirect and the gateway to the emulator, the same
// load straight to the emulator as the baseline, session renewals forced
// midway, and the daemon's CPU and memory sampled. The run must be clean:
// every session in, no error, no statement twice, nothing direct.
func TestLoadThroughDaemon(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	s := newStack(t)
	d := s.startDaemon(t)
	l := s.startLoad(t, append(s.directLoadArgs(),
		"--workloads", "2", "--sessions", "3", "--duration", "10s", "--direct-duration", "8s", "--ramp", "2s",
		"--think", "200ms", "--expire-every", "4s", "--gateway-pid", strconv.Itoa(d.cmd.Process.Pid), "--sample-every", "1s")...)
	rep := l.wait(t, 6*time.Minute)
	t.Logf("snowgate-load:\n%s", l.out.String())
	if len(rep.Problems) > 0 || l.err != nil {
		t.Errorf("exit %v, problems %q", l.err, rep.Problems)
	}
	for _, phase := range []string{"direct", "gateway"} {
		p := rep.Phases[phase]
		if p == nil || p.Sessions != 6 || p.Ops[opSmall] == nil || p.Ops[opSmall].Count == 0 {
			t.Fatalf("%s phase: %+v", phase, p)
		}
	}
	if _, ok := rep.Overhead[opSmall]; !ok {
		t.Error("no overhead figure for small queries")
	}
	if rep.Gateway == nil || len(rep.Gateway.Samples) < 3 || rep.Gateway.RSSMaxMB <= 0 || rep.Gateway.CPUSeconds <= 0 {
		t.Errorf("gateway figures: %+v", rep.Gateway)
	}
	if rep.Executions == nil || rep.Executions.Statements == 0 || rep.Executions.Duplicates != 0 {
		t.Errorf("executions: %+v", rep.Executions)
	}
	if rep.Expiries == 0 {
		t.Error("no forced expiry")
	}
	// Policy holds every INSERT for approval; the load generator's
	// reviewer approved each (the workloads create their tables once).
	if dml := rep.Phases["gateway"].Ops[opDML]; dml == nil || dml.Count == 0 || rep.Approved < dml.Count {
		t.Errorf("%d statements approved for %+v DML", rep.Approved, dml)
	}
	if n := s.direct.Load(); n != 0 {
		t.Errorf("%d agent connections reached the Snowflake address directly", n)
	}
	// Every agent logged out, and the gateway logged its upstream sessions
	// out with them.
	deadline := time.Now().Add(time.Minute)
	for n := s.inst.Server.Sessions(); n != 0; n = s.inst.Server.Sessions() {
		if time.Now().After(deadline) {
			t.Errorf("%d sessions left open upstream", n)
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
}
