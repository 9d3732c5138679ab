package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"
	"time"
)

// report is the outcome of a run; it is printed as text and, with --json,
// written as JSON.
type report struct {
	Command  string                  `json:"command"`
	Started  time.Time               `json:"started"`
	Settings settings                `json:"settings"`
	Phases   map[string]*phaseReport `json:"phases"`
	// Overhead is, per operation kind, the gateway phase's latency minus
	// the direct phase's, in milliseconds.
	Overhead map[string]overhead `json:"overhead,omitempty"`
	Gateway  *gatewayReport      `json:"gateway,omitempty"`
	// Executions is the emulator's query-log check.
	Executions *executionReport `json:"executions,omitempty"`
	// Expiries counts forced session expiries (renewals by every session).
	Expiries int `json:"expiries,omitempty"`
	// Approved counts held statements the load generator approved;
	// ApproveConflicts the decisions answered 409 (decided or expired
	// meanwhile: benign); ApproveFailures the lists and decisions that
	// failed (a failed decision is tried again on the next list).
	Approved         int `json:"approved,omitempty"`
	ApproveConflicts int `json:"approveConflicts,omitempty"`
	ApproveFailures  int `json:"approveFailures,omitempty"`
	// ApproverError is the reviewer's first failure (the API unreachable
	// while the gateway restarts, say); not a failure of the run by itself.
	ApproverError string   `json:"approverError,omitempty"`
	Faults        []string `json:"faults,omitempty"`
	// Problems lists everything that makes the run fail.
	Problems []string `json:"problems,omitempty"`
}

// settings echo what was run.
type settings struct {
	Workloads int           `json:"workloads"`
	Sessions  int           `json:"sessionsPerWorkload"`
	Duration  time.Duration `json:"duration"`
	Direct    time.Duration `json:"directDuration"`
	Ramp      time.Duration `json:"ramp"`
	Think     time.Duration `json:"think"`
	Mix       string        `json:"mix"`
	LargeRows int           `json:"largeRows"`
}

// phaseReport summarises one phase (direct or gateway).
type phaseReport struct {
	// Window is the time sessions ran: ramp plus duration.
	Window   time.Duration         `json:"window"`
	Sessions int                   `json:"sessions"`
	Ops      map[string]*opSummary `json:"ops"`
	// OpsPerSecond counts the mix's operations (not logins or logouts).
	OpsPerSecond float64           `json:"opsPerSecond"`
	Errors       map[string]int    `json:"errors,omitempty"`
	Samples      map[string]string `json:"samples,omitempty"`
	Fatal        []string          `json:"fatal,omitempty"`
	// Cut counts the operations cut by the end of the run (in flight when
	// the duration ended, still running after the drain): not errors.
	Cut int `json:"cut,omitempty"`
	lat map[string][]int64
	cut map[string][]int64
}

// opSummary are the latencies of one operation kind, in milliseconds.
type opSummary struct {
	Count  int            `json:"count"`
	Errors map[string]int `json:"errors,omitempty"`
	// Cut operations were in flight at the end of the run and cancelled
	// then; CutAgeMaxMS is the oldest one's age (its time in flight).
	Cut         int     `json:"cut,omitempty"`
	CutAgeMaxMS float64 `json:"cutAgeMaxMs,omitempty"`
	P50         float64 `json:"p50ms"`
	P90         float64 `json:"p90ms"`
	P99         float64 `json:"p99ms"`
	P999        float64 `json:"p999ms"`
	Max         float64 `json:"maxms"`
}

// overhead is the gateway's added latency for one operation kind.
type overhead struct {
	P50 float64 `json:"p50ms"`
	P90 float64 `json:"p90ms"`
	P99 float64 `json:"p99ms"`
}

// gatewayReport is the gateway process over the gateway phase.
type gatewayReport struct {
	PID        int          `json:"pid"`
	CPUSeconds float64      `json:"cpuSeconds"`
	CPUPercent float64      `json:"cpuPercent"` // of one core, averaged
	RSSMB      [5]float64   `json:"rssMB"`      // at 0, 25, 50, 75 and 100 % of the phase
	RSSMaxMB   float64      `json:"rssMaxMB"`
	HWMMB      float64      `json:"hwmMB"`
	SlopeMBMin float64      `json:"rssSlopeMBPerMin"` // over the second half
	FDs        [3]int       `json:"fds"`              // start, end, max
	Threads    [3]int       `json:"threads"`          // start, end, max
	Samples    []procSample `json:"samples"`
	Error      string       `json:"error,omitempty"`
}

// executionReport is the emulator's query log over the run.
type executionReport struct {
	Statements int      `json:"statements"`
	Duplicates int      `json:"duplicates"`
	Examples   []string `json:"examples,omitempty"`
}

// merge adds a workload's result to the phase.
func (p *phaseReport) merge(r workerResult) {
	if p.Ops == nil {
		p.Ops, p.lat, p.Errors, p.Samples = map[string]*opSummary{}, map[string][]int64{}, map[string]int{}, map[string]string{}
		p.cut = map[string][]int64{}
	}
	if r.Fatal != "" {
		p.Fatal = append(p.Fatal, fmt.Sprintf("workload %d: %s", r.Index, r.Fatal))
	}
	for op, s := range r.Ops {
		sum := p.Ops[op]
		if sum == nil {
			sum = &opSummary{}
			p.Ops[op] = sum
		}
		p.lat[op] = append(p.lat[op], s.LatencyUS...)
		p.cut[op] = append(p.cut[op], s.CutUS...)
		for k, n := range s.Errors {
			if sum.Errors == nil {
				sum.Errors = map[string]int{}
			}
			sum.Errors[k] += n
			p.Errors[k] += n
		}
	}
	for k, v := range r.Samples {
		if _, ok := p.Samples[k]; !ok {
			p.Samples[k] = v
		}
	}
}

// finish computes the percentiles.
func (p *phaseReport) finish() {
	total := 0
	for op, sum := range p.Ops {
		lat := p.lat[op]
		slices.Sort(lat)
		sum.Count = len(lat)
		sum.P50, sum.P90, sum.P99, sum.P999 = pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 99.9)
		if len(lat) > 0 {
			sum.Max = float64(lat[len(lat)-1]) / 1e3
		}
		if op == opLogin {
			p.Sessions = len(lat)
		}
		sum.Cut = len(p.cut[op])
		p.Cut += sum.Cut
		for _, a := range p.cut[op] {
			sum.CutAgeMaxMS = max(sum.CutAgeMaxMS, float64(a)/1e3)
		}
		if op != opLogin && op != opLogout {
			total += len(lat)
		}
	}
	if p.Window > 0 {
		p.OpsPerSecond = float64(total) / p.Window.Seconds()
	}
}

// pct is the q-th percentile of sorted µs values, in ms (nearest rank).
func pct(sorted []int64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(sorted))/100-1e-9)) - 1
	i = max(0, min(i, len(sorted)-1))
	return float64(sorted[i]) / 1e3
}

// summarize derives the gateway figures from the samples.
func summarize(pid int, samples []procSample, err error) *gatewayReport {
	g := &gatewayReport{PID: pid, Samples: samples}
	if err != nil {
		g.Error = err.Error()
	}
	if len(samples) == 0 {
		return g
	}
	first, last := samples[0], samples[len(samples)-1]
	g.CPUSeconds = (last.CPU - first.CPU).Seconds()
	if span := (last.At - first.At).Seconds(); span > 0 {
		g.CPUPercent = 100 * g.CPUSeconds / span
	}
	for i := range g.RSSMB {
		s := samples[min(len(samples)-1, i*(len(samples)-1)/4)]
		g.RSSMB[i] = float64(s.RSSKB) / 1024
	}
	g.FDs = [3]int{first.FDs, last.FDs, 0}
	g.Threads = [3]int{first.Threads, last.Threads, 0}
	for _, s := range samples {
		g.RSSMaxMB = max(g.RSSMaxMB, float64(s.RSSKB)/1024)
		g.HWMMB = max(g.HWMMB, float64(s.HWMKB)/1024)
		g.FDs[2] = max(g.FDs[2], s.FDs)
		g.Threads[2] = max(g.Threads[2], s.Threads)
	}
	// Least-squares slope of RSS over the second half: flat memory is ~0.
	half := samples[len(samples)/2:]
	if len(half) >= 3 {
		var sx, sy, sxx, sxy float64
		for _, s := range half {
			x, y := s.At.Minutes(), float64(s.RSSKB)/1024
			sx, sy, sxx, sxy = sx+x, sy+y, sxx+x*x, sxy+x*y
		}
		n := float64(len(half))
		if d := n*sxx - sx*sx; d != 0 {
			g.SlopeMBMin = (n*sxy - sx*sy) / d
		}
	}
	return g
}

// write prints the report for people.
func (r *report) write(w io.Writer) {
	s := r.Settings
	fmt.Fprintf(w, "snowgate-load: %d workloads × %d sessions = %d sessions; %v (ramp %v, think %v); mix %s; large = %d rows\n",
		s.Workloads, s.Sessions, s.Workloads*s.Sessions, s.Duration, s.Ramp, s.Think, s.Mix, s.LargeRows)
	for _, name := range []string{"direct", "gateway"} {
		p := r.Phases[name]
		if p == nil {
			continue
		}
		fmt.Fprintf(w, "\n%s: %d sessions logged in, %.1f ops/s over %v\n", name, p.Sessions, p.OpsPerSecond, p.Window.Round(time.Second))
		fmt.Fprintf(w, "  %-7s %8s %7s %5s %9s %9s %9s %9s %9s\n", "op", "count", "errors", "cut", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms")
		for _, op := range sortedOps(p.Ops) {
			o := p.Ops[op]
			errs := 0
			for _, n := range o.Errors {
				errs += n
			}
			fmt.Fprintf(w, "  %-7s %8d %7d %5d %9.1f %9.1f %9.1f %9.1f %9.1f\n", op, o.Count, errs, o.Cut, o.P50, o.P90, o.P99, o.P999, o.Max)
		}
		if p.Cut > 0 {
			fmt.Fprintf(w, "  cut by the end of the run (in flight when the duration ended, cancelled after the drain; not errors): %d", p.Cut)
			for _, op := range sortedOps(p.Ops) {
				if o := p.Ops[op]; o.Cut > 0 {
					fmt.Fprintf(w, "; %s %d (oldest %.1f s in flight)", op, o.Cut, o.CutAgeMaxMS/1e3)
				}
			}
			fmt.Fprintln(w)
		}
		for _, k := range slices.Sorted(maps.Keys(p.Errors)) {
			fmt.Fprintf(w, "  error %s: %d (e.g. %s)\n", k, p.Errors[k], p.Samples[k])
		}
		for _, f := range p.Fatal {
			fmt.Fprintf(w, "  FATAL %s\n", f)
		}
	}
	if len(r.Overhead) > 0 {
		fmt.Fprintf(w, "\ngateway overhead against direct (ms):\n")
		for _, op := range sortedOps(r.Overhead) {
			o := r.Overhead[op]
			fmt.Fprintf(w, "  %-7s p50 %+8.1f  p90 %+8.1f  p99 %+8.1f\n", op, o.P50, o.P90, o.P99)
		}
	}
	if g := r.Gateway; g != nil {
		fmt.Fprintf(w, "\ngateway process %d: CPU %.1f s (%.0f%% of a core); RSS MB at 0/25/50/75/100%%: %.0f %.0f %.0f %.0f %.0f (max %.0f, peak %.0f, slope %+.1f MB/min over the second half); fds %d→%d (max %d); threads %d→%d (max %d)\n",
			g.PID, g.CPUSeconds, g.CPUPercent, g.RSSMB[0], g.RSSMB[1], g.RSSMB[2], g.RSSMB[3], g.RSSMB[4], g.RSSMaxMB, g.HWMMB, g.SlopeMBMin,
			g.FDs[0], g.FDs[1], g.FDs[2], g.Threads[0], g.Threads[1], g.Threads[2])
		if g.Error != "" {
			fmt.Fprintf(w, "  sampling: %s\n", g.Error)
		}
	}
	if len(r.Faults) > 0 || r.Expiries > 0 || r.Approved > 0 {
		fmt.Fprintf(w, "\nfaults: %s; forced session expiries: %d; statements approved: %d (409 decided meanwhile: %d; failed and retried: %d)\n",
			strings.Join(r.Faults, " "), r.Expiries, r.Approved, r.ApproveConflicts, r.ApproveFailures)
	}
	if r.ApproverError != "" {
		fmt.Fprintf(w, "reviewer: %s\n", r.ApproverError)
	}
	if e := r.Executions; e != nil {
		fmt.Fprintf(w, "emulator query log: %d statements, %d executed twice\n", e.Statements, e.Duplicates)
		for _, x := range e.Examples {
			fmt.Fprintf(w, "  twice: %s\n", x)
		}
	}
	if len(r.Problems) == 0 {
		fmt.Fprintf(w, "\nresult: PASS\n")
		return
	}
	fmt.Fprintf(w, "\nresult: FAIL\n")
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  %s\n", p)
	}
}

// sortedOps orders operation kinds: the mix first, then login and logout.
func sortedOps[V any](m map[string]V) []string {
	rank := map[string]int{opSmall: 0, opLarge: 1, opDML: 2, opLogin: 3, opLogout: 4}
	keys := slices.Collect(maps.Keys(m))
	sort.Slice(keys, func(i, j int) bool {
		ri, iok := rank[keys[i]]
		rj, jok := rank[keys[j]]
		if iok != jok {
			return iok
		}
		if ri != rj {
			return ri < rj
		}
		return keys[i] < keys[j]
	})
	return keys
}
