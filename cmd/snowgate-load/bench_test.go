package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchEnv reads a setting of BenchmarkLoad from SNOWGATE_LOAD_<name>.
func benchEnv(name, def string) string {
	if v := os.Getenv("SNOWGATE_LOAD_" + name); v != "" {
		return v
	}
	return def
}

// BenchmarkLoad is the load figure of `make bench` (scripts/bench-load.sh):
// `snowgate run` on this machine with the emulator upstream, snowgate-load
// driving SNOWGATE_LOAD_WORKLOADS × SNOWGATE_LOAD_SESSIONS gosnowflake
// sessions through it for SNOWGATE_LOAD_DURATION, against the same load
// straight to the emulator in the same run. It reports the gateway's added
// latency, throughput, errors and the daemon's CPU and memory over time,
// and writes the full report to SNOWGATE_LOAD_JSON when set.
//
// Run it once (-benchtime 1x): the load generator takes its own samples.
func BenchmarkLoad(b *testing.B) {
	workloads, sessions := benchEnv("WORKLOADS", "4"), benchEnv("SESSIONS", "5")
	duration, err := time.ParseDuration(benchEnv("DURATION", "30s"))
	if err != nil {
		b.Fatal(err)
	}
	args := []string{"--workloads", workloads, "--sessions", sessions, "--duration", duration.String(),
		"--direct-duration", benchEnv("DIRECT_DURATION", min(duration, time.Minute).String()),
		"--ramp", benchEnv("RAMP", "10s"), "--think", benchEnv("THINK", "1s"),
		"--mix", benchEnv("MIX", "small=80,large=5,dml=15"), "--expire-every", benchEnv("EXPIRE_EVERY", "1m"),
		"--sample-every", benchEnv("SAMPLE_EVERY", "5s"), "--op-timeout", "5m",
		// Operations in flight when the duration ends get a minute; those
		// still running then are reported as cut by the end of the run.
		"--drain", benchEnv("DRAIN", "60s")}
	s := newStack(b)
	d := s.startDaemon(b)
	args = append(append(args, s.directLoadArgs()...), "--gateway-pid", strconv.Itoa(d.cmd.Process.Pid))
	if dir := os.Getenv(heapProfileEnv); dir != "" {
		defer s.heapProfiles(b, dir)()
	}
	for b.Loop() {
		l := s.startLoad(b, args...)
		rep := l.wait(b, 2*duration+15*time.Minute)
		fmt.Fprintf(os.Stdout, "%s\n", strings.TrimSpace(l.out.String()))
		if out := os.Getenv("SNOWGATE_LOAD_JSON"); out != "" {
			if raw, err := os.ReadFile(l.json); err == nil {
				_ = os.WriteFile(out, raw, 0o644)
			}
		}
		g, dr := rep.Phases["gateway"], rep.Phases["direct"]
		if g == nil || dr == nil {
			b.Fatalf("phases missing:\n%s", l.out.String())
		}
		errs := 0
		for _, n := range g.Errors {
			errs += n
		}
		b.ReportMetric(float64(g.Sessions), "sessions")
		b.ReportMetric(g.OpsPerSecond, "gateway-ops/s")
		b.ReportMetric(dr.OpsPerSecond, "direct-ops/s")
		if o, ok := rep.Overhead[opSmall]; ok {
			b.ReportMetric(g.Ops[opSmall].P50, "gateway-p50-ms")
			b.ReportMetric(g.Ops[opSmall].P99, "gateway-p99-ms")
			b.ReportMetric(dr.Ops[opSmall].P99, "direct-p99-ms")
			b.ReportMetric(o.P99, "overhead-p99-ms")
		}
		b.ReportMetric(float64(errs), "errors")
		b.ReportMetric(float64(g.Cut), "cut-at-end")
		if gw := rep.Gateway; gw != nil {
			b.ReportMetric(gw.RSSMaxMB, "gateway-rss-max-MB")
			b.ReportMetric(gw.SlopeMBMin, "gateway-rss-slope-MB/min")
			b.ReportMetric(gw.CPUPercent, "gateway-cpu-%")
		}
		if len(rep.Problems) > 0 {
			b.Errorf("problems: %q", rep.Problems)
		}
	}
}
