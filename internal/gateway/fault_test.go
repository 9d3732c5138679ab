package gateway_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
)

// buildLoad builds cmd/snowgate-load for the test.
func buildLoad(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "snowgate-load")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/snowgate/snowgate/cmd/snowgate-load").CombinedOutput(); err != nil {
		t.Fatalf("go build snowgate-load: %v\n%s", err, out)
	}
	return bin
}

// loadReport is the part of snowgate-load's JSON report the tests read.
type loadReport struct {
	Phases map[string]struct {
		Sessions int                       `json:"sessions"`
		Errors   map[string]int            `json:"errors"`
		Samples  map[string]string         `json:"samples"`
		Ops      map[string]map[string]any `json:"ops"`
	} `json:"phases"`
	Executions *struct {
		Statements int `json:"statements"`
		Duplicates int `json:"duplicates"`
	} `json:"executions"`
	Expiries int      `json:"expiries"`
	Problems []string `json:"problems"`
}

// runLoad runs snowgate-load against the fixture: its workloads in child
// cgroups of the agents' cgroup and in the agents' namespace, the gateway
// phase only, faults through the emulator's admin endpoint.
func (f *fixture) runLoad(t *testing.T, bin string, args ...string) (loadReport, string) {
	t.Helper()
	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(testPassword), 0o600); err != nil {
		t.Fatal(err)
	}
	jsonOut := filepath.Join(t.TempDir(), "report.json")
	all := append([]string{
		"--cgroup", f.cg.Path, "--netns", f.ns.Path(), "--ca-file", f.caFile,
		"--account", testAccount, "--host", testHost, "--user", testUser, "--password-file", pw,
		"--emulator-admin", f.inst.URL, "--emulator-ca-file", f.inst.CAFile,
		"--gateway-pid", strconv.Itoa(os.Getpid()), "--sample-every", "2s",
		"--json", jsonOut,
	}, args...)
	cmd := exec.Command(bin, all...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(8 * time.Minute):
		_ = cmd.Process.Kill()
		<-done
		t.Fatalf("snowgate-load did not finish within 8 minutes:\n%s", out.String())
	}
	var rep loadReport
	b, err := os.ReadFile(jsonOut)
	if err != nil {
		t.Fatalf("snowgate-load wrote no report (%v):\n%s", err, out.String())
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report: %v", err)
	}
	return rep, out.String()
}

// injected counts the requests that met an emulator fault so far.
func injected(f *fixture) int64 {
	var n int64
	for _, ep := range []string{emulator.EndpointLogin, emulator.EndpointToken, emulator.EndpointQuery,
		emulator.EndpointResult, emulator.EndpointChunk, emulator.EndpointLogout, emulator.EndpointHeartbeat,
		emulator.EndpointMonitoring, emulator.EndpointAbort, emulator.EndpointTelemetry} {
		n += f.inst.Server.Faults().Injected(ep)
	}
	return n
}

// TestFaultsUnderLoad runs each of the emulator's fault knobs under
// concurrent load through the gateway: real gosnowflake sessions in child
// cgroups of the agents' cgroup logging in, running small and multi-chunk
// SELECTs and INSERTs, and logging out. For every knob: every session
// logged in and every operation succeeded (the drivers and the gateway
// retried what failed), no statement executed twice (the emulator's own
// query log), and no session was left open upstream nor a connection at
// the gateway.
func TestFaultsUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load test")
	}
	f := newFixture(t, fixtureOptions{})
	bin := buildLoad(t)
	tests := []struct {
		name   string
		args   []string
		faults []string
		// orphans is how many upstream sessions a knob may leave behind:
		// a login whose reply was lost made a session nobody knows.
		orphans func(hits int64) int
	}{
		{name: "no fault"},
		{name: "latency", faults: []string{"query,latency=300ms", "chunk,latency=200ms", "login,latency=500ms"}},
		{name: "503 bursts", faults: []string{"query,status=503,count=4", "result,status=503,count=2", "login,status=503,count=2", "chunk,status=503,count=2"}},
		{name: "resets before the reply", faults: []string{"query,reset,count=3", "chunk,reset,count=2", "login,reset,count=1"}},
		{name: "lost query replies", faults: []string{"query,reset,after,count=3", "query,status=503,after,count=2"}},
		// Inside the first 32 KiB the gateway holds before it answers:
		// the gateway fetches again (chunk.go).
		{name: "resets early in a chunk", faults: []string{"chunk,resetafter=30000,count=3"}},
		// Past them: the stream breaks at the driver, which fetches again.
		{name: "resets mid-chunk", faults: []string{"chunk,resetafter=100000,count=3"}},
		{name: "slow chunk downloads", faults: []string{"chunk,rate=3000000"}},
		{name: "expired sessions", args: []string{"--expire-every", "3s"}},
		{name: "lost login replies", faults: []string{"login,reset,after,count=1"},
			orphans: func(hits int64) int { return int(hits) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			goroutinesBefore := runtime.NumGoroutine()
			sessionsBefore := f.inst.Server.Sessions()
			logBefore := len(f.inst.Server.QueryLog())
			args := append([]string{"--workloads", "2", "--sessions", "4", "--duration", "12s", "--ramp", "2s",
				"--think", "200ms", "--mix", "small=60,large=10,dml=30", "--large-rows", "60000",
				"--fault-every", "3s"}, tc.args...)
			for _, fl := range tc.faults {
				args = append(args, "--fault", fl)
			}
			loginHits := f.inst.Server.Faults().Hits(emulator.EndpointLogin)
			injectedBefore := injected(f)
			rep, out := f.runLoad(t, bin, args...)
			t.Logf("snowgate-load:\n%s", out)
			if len(rep.Problems) > 0 {
				t.Errorf("problems: %q", rep.Problems)
			}
			g, ok := rep.Phases["gateway"]
			if !ok || g.Sessions != 8 {
				t.Errorf("%d of 8 sessions logged in", g.Sessions)
			}
			for k, n := range g.Errors {
				t.Errorf("agents saw %d errors %s (e.g. %s)", n, k, g.Samples[k])
			}
			if tc.name == "expired sessions" && rep.Expiries == 0 {
				t.Error("no session expiry was forced")
			}
			if n := injected(f) - injectedBefore; len(tc.faults) > 0 && n == 0 {
				t.Error("no request met a fault")
			} else if n > 0 {
				t.Logf("%d requests met a fault", n)
			}
			// No statement twice, by the emulator's own log.
			seen := map[string]bool{}
			log := f.inst.Server.QueryLog()[logBefore:]
			if len(log) == 0 {
				t.Fatal("the emulator executed nothing")
			}
			for _, e := range log {
				if e.RequestID == "" || e.ParentQueryID != "" {
					continue
				}
				k := fmt.Sprint(e.SessionID, "/", e.RequestID)
				if seen[k] {
					t.Errorf("executed twice: session %d requestId %s %q", e.SessionID, e.RequestID, e.SQL)
				}
				seen[k] = true
			}
			// Every session the agents opened was closed upstream.
			allowed := 0
			if tc.orphans != nil {
				allowed = tc.orphans(f.inst.Server.Faults().Hits(emulator.EndpointLogin) - loginHits)
			}
			if left := f.inst.Server.Sessions() - sessionsBefore; left > allowed {
				t.Errorf("%d sessions left open upstream (at most %d from lost login replies)", left, allowed)
			}
			// The gateway let go of every connection: its goroutines come
			// back to where they were (idle upstream keep-alives aside).
			deadline := time.Now().Add(90 * time.Second)
			for {
				n := runtime.NumGoroutine()
				if n <= goroutinesBefore+80 {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("%d goroutines after the load, %d before", n, goroutinesBefore)
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	if t.Failed() {
		return
	}
	// The faults are gone once the load ends.
	if left := f.inst.Server.Faults().List(); len(left) != 0 {
		t.Errorf("faults left installed: %+v", left)
	}
}
