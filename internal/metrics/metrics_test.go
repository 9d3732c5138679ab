package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/redirect"
)

// TestObserverCounts feeds exchanges shaped as the gateway's handler leaves
// them and checks which series each one moves.
func TestObserverCounts(t *testing.T) {
	principal := &gateway.Principal{Rule: "pipelines-main"}
	tests := []struct {
		name string
		x    gateway.Exchange
		// series is "family{label values joined by ,}" → expected value.
		series map[string]float64
	}{
		{
			name: "login succeeded under a rule",
			x: gateway.Exchange{Kind: "login", Status: 200, Principal: principal,
				RequestBody: []byte(`{"data":{}}`), ResponseBody: []byte(`{"success":true,"data":{}}`), ResponseSize: 40,
				Duration: 30 * time.Millisecond, UpstreamDuration: 20 * time.Millisecond},
			series: map[string]float64{
				"logins{succeeded,pipelines-main}": 1,
				"requests{login,200}":              1,
				"requestBytes{login}":              11,
				"responseBytes{login}":             40,
				"upstreamCount{login}":             1,
			},
		},
		{
			name: "login Snowflake rejected (HTTP 200, success false)",
			x:    gateway.Exchange{Kind: "login", Status: 200, ResponseBody: []byte(`{"success":false,"code":"390100"}`)},
			series: map[string]float64{
				"logins{failed,none}": 1,
			},
		},
		{
			name: "login the gateway refused",
			x:    gateway.Exchange{Kind: "login", Status: 401, Error: "identity: no valid workload token"},
			series: map[string]float64{
				"logins{refused,none}": 1,
				"requests{login,401}":  1,
				"upstreamCount{login}": 0,
			},
		},
		{
			name: "query without a policy",
			x:    gateway.Exchange{Kind: "query-request", Status: 200, UpstreamDuration: time.Second},
			series: map[string]float64{
				"queries{unclassified,none,enforce}": 1,
				"upstreamCount{query-request}":       1,
			},
		},
		{
			name: "query denied by policy",
			x:    gateway.Exchange{Kind: "query-request", Status: 200, Verdict: &gateway.Verdict{Class: "ddl", Action: "deny"}},
			series: map[string]float64{
				"queries{ddl,deny,enforce}":    1,
				"upstreamCount{query-request}": 0,
			},
		},
		{
			name: "query held in observe mode",
			x:    gateway.Exchange{Kind: "query-request", Status: 200, Verdict: &gateway.Verdict{Class: "dml", Action: "approve", Observe: true}},
			series: map[string]float64{
				"queries{dml,approve,observe}": 1,
			},
		},
		{
			name: "chunk streamed",
			x:    gateway.Exchange{Kind: "chunk", Status: 200, QueryID: "q1", ResponseSize: 1 << 20, Duration: time.Second},
			series: map[string]float64{
				"chunks{streamed}":     1,
				"responseBytes{chunk}": 1 << 20,
				"upstreamCount{chunk}": 1,
			},
		},
		{
			name: "chunk id not issued",
			x:    gateway.Exchange{Kind: "chunk", Status: 404, Error: "chunk id not issued to this workload"},
			series: map[string]float64{
				"chunks{refused}":      1,
				"upstreamCount{chunk}": 0,
			},
		},
		{
			name: "chunk storage failed",
			x:    gateway.Exchange{Kind: "chunk", Status: 502, QueryID: "q1", Error: "chunk fetch failed"},
			series: map[string]float64{
				"chunks{failed}": 1,
			},
		},
		{
			name: "chunk stream broken",
			x:    gateway.Exchange{Kind: "chunk", Status: 200, QueryID: "q1", Error: "chunk stream broken"},
			series: map[string]float64{
				"chunks{broken}": 1,
			},
		},
		{
			name: "unknown endpoint",
			x:    gateway.Exchange{Status: 404, Error: "not a Snowflake endpoint"},
			series: map[string]float64{
				"requests{unknown,404}": 1,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := newObserver()
			o.Observe(&tt.x)
			for key, want := range tt.series {
				family, rest, _ := strings.Cut(key, "{")
				labels := strings.Split(strings.TrimSuffix(rest, "}"), ",")
				var got float64
				switch family {
				case "logins":
					got = testutil.ToFloat64(o.logins.WithLabelValues(labels...))
				case "requests":
					got = testutil.ToFloat64(o.requests.WithLabelValues(labels...))
				case "requestBytes":
					got = testutil.ToFloat64(o.requestBytes.WithLabelValues(labels...))
				case "responseBytes":
					got = testutil.ToFloat64(o.responseBytes.WithLabelValues(labels...))
				case "queries":
					got = testutil.ToFloat64(o.queries.WithLabelValues(labels...))
				case "chunks":
					got = testutil.ToFloat64(o.chunks.WithLabelValues(labels...))
				case "upstreamCount":
					got = float64(testutil.CollectAndCount(o.upstream))
				default:
					t.Fatalf("bad series key %q", key)
				}
				if got != want {
					t.Errorf("%s = %v, want %v", key, got, want)
				}
			}
		})
	}
}

type sessionsNow int

func (s sessionsNow) ActiveSessions() int { return int(s) }

type approvalsNow struct {
	pending int
	decided map[string]uint64
	resumed uint64
}

func (a approvalsNow) PendingApprovals() int               { return a.pending }
func (a approvalsNow) DecidedApprovals() map[string]uint64 { return a.decided }
func (a approvalsNow) ResumedRuns() uint64                 { return a.resumed }

type recordingNow struct{ bytes, errors uint64 }

func (r recordingNow) RecordedBytes() uint64   { return r.bytes }
func (r recordingNow) RecordingErrors() uint64 { return r.errors }

type dnsNow struct {
	answers   uint64
	addresses int
}

func (d dnsNow) LearnedAnswers() uint64 { return d.answers }
func (d dnsNow) LearnedAddresses() int  { return d.addresses }

// TestCollector reads a gateway's live counters and the stages' figures at
// scrape time, and leaves out the families whose source is absent.
func TestCollector(t *testing.T) {
	var stats gateway.Stats
	kernel := &redirect.Report{Probes: []redirect.Probe{
		{Name: "cgroup v2 hierarchy", State: redirect.ProbeOK, Mandatory: true},
		{Name: "BPF LSM", State: redirect.ProbeDegraded},
	}}
	m, err := New(Options{Version: "v1.2.3", Sources: Sources{
		Gateway: func() *gateway.Stats { return &stats },
		Limits: func() (gateway.LimitStats, bool) {
			return gateway.LimitStats{Requests: 4, Queries: 3, BufferedBytes: 1 << 20, Workloads: 2,
				Refused: map[string]int64{"queries": 5, "workload_requests": 1}}, true
		},
		Redirect:  func() *redirect.Redirect { return nil },
		Kernel:    kernel,
		Sessions:  sessionsNow(3),
		Approvals: approvalsNow{pending: 2, decided: map[string]uint64{"approved": 5, "denied": 1}, resumed: 3},
		Recording: recordingNow{bytes: 4096, errors: 1},
		DNS:       dnsNow{answers: 7, addresses: 2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	stats.Accepted.Add(10)
	stats.Terminated.Add(6)
	stats.PassedThrough.Add(1)
	stats.Refused.Add(2)
	stats.BadHello.Add(1)
	stats.NotRedirected.Add(4)
	stats.OCSP.Add(9)

	want := `
# HELP snowgate_connections_total Redirected connections by the gateway's decision (intercepted, passed_through, refused) and, for refusals, why (not_redirected, bad_client_hello, server_name).
# TYPE snowgate_connections_total counter
snowgate_connections_total{decision="intercepted",reason=""} 6
snowgate_connections_total{decision="passed_through",reason=""} 1
snowgate_connections_total{decision="refused",reason="bad_client_hello"} 1
snowgate_connections_total{decision="refused",reason="not_redirected"} 4
snowgate_connections_total{decision="refused",reason="server_name"} 2
# HELP snowgate_connections_accepted_total Connections the gateway accepted that the redirect had recorded (plain-HTTP OCSP connections included).
# TYPE snowgate_connections_accepted_total counter
snowgate_connections_accepted_total 10
# HELP snowgate_ocsp_requests_total OCSP and OCSP cache-server requests answered by the gateway's responder.
# TYPE snowgate_ocsp_requests_total counter
snowgate_ocsp_requests_total 9
# HELP snowgate_requests_in_progress API requests the gateway is serving now (limits.max_requests caps them).
# TYPE snowgate_requests_in_progress gauge
snowgate_requests_in_progress 4
# HELP snowgate_queries_in_progress Query requests and result polls in progress now (limits.max_queries caps them).
# TYPE snowgate_queries_in_progress gauge
snowgate_queries_in_progress 3
# HELP snowgate_buffered_body_bytes Request and reply bodies the gateway holds in memory now (limits.max_buffered_bytes caps them).
# TYPE snowgate_buffered_body_bytes gauge
snowgate_buffered_body_bytes 1.048576e+06
# HELP snowgate_workloads_in_progress Workloads (cgroups) with requests in progress now.
# TYPE snowgate_workloads_in_progress gauge
snowgate_workloads_in_progress 2
# HELP snowgate_limit_refusals_total Requests refused at a limit, by limit (requests, queries, buffered_bytes; workload_ prefixed: per workload).
# TYPE snowgate_limit_refusals_total counter
snowgate_limit_refusals_total{limit="queries"} 5
snowgate_limit_refusals_total{limit="workload_requests"} 1
# HELP snowgate_redirect_installed 1 when the eBPF redirect is installed and its pinned maps are open, else 0.
# TYPE snowgate_redirect_installed gauge
snowgate_redirect_installed 0
# HELP snowgate_kernel_feature_info Kernel features the redirect uses, as probed at start: state is ok, missing or degraded (value 1).
# TYPE snowgate_kernel_feature_info gauge
snowgate_kernel_feature_info{feature="BPF LSM",mandatory="false",state="degraded"} 1
snowgate_kernel_feature_info{feature="cgroup v2 hierarchy",mandatory="true",state="ok"} 1
# HELP snowgate_sessions_active Gateway sessions now open.
# TYPE snowgate_sessions_active gauge
snowgate_sessions_active 3
# HELP snowgate_approvals_pending Held statements waiting for a reviewer's decision.
# TYPE snowgate_approvals_pending gauge
snowgate_approvals_pending 2
# HELP snowgate_approvals_decided_total Approval requests decided, by outcome.
# TYPE snowgate_approvals_decided_total counter
snowgate_approvals_decided_total{decision="approved"} 5
snowgate_approvals_decided_total{decision="denied"} 1
# HELP snowgate_approval_runs_resumed_total Approved statements whose run this gateway took over from a gateway instance that died (or whose lease passed) before the run's reply; each was sent again with the driver's requestId.
# TYPE snowgate_approval_runs_resumed_total counter
snowgate_approval_runs_resumed_total 3
# HELP snowgate_recording_bytes_total Bytes written to session recordings.
# TYPE snowgate_recording_bytes_total counter
snowgate_recording_bytes_total 4096
# HELP snowgate_recording_errors_total Recording commits that failed (each refused the reply it guarded).
# TYPE snowgate_recording_errors_total counter
snowgate_recording_errors_total 1
# HELP snowgate_dns_learned_answers_total DNS answers for Snowflake names whose addresses the forwarder learned.
# TYPE snowgate_dns_learned_answers_total counter
snowgate_dns_learned_answers_total 7
# HELP snowgate_dns_learned_addresses Distinct Snowflake addresses the forwarder knows now.
# TYPE snowgate_dns_learned_addresses gauge
snowgate_dns_learned_addresses 2
`
	names := []string{
		"snowgate_connections_total", "snowgate_connections_accepted_total", "snowgate_ocsp_requests_total",
		"snowgate_requests_in_progress", "snowgate_queries_in_progress", "snowgate_buffered_body_bytes",
		"snowgate_workloads_in_progress", "snowgate_limit_refusals_total",
		"snowgate_redirect_installed", "snowgate_kernel_feature_info", "snowgate_sessions_active",
		"snowgate_approvals_pending", "snowgate_approvals_decided_total", "snowgate_approval_runs_resumed_total", "snowgate_recording_bytes_total",
		"snowgate_recording_errors_total", "snowgate_dns_learned_answers_total", "snowgate_dns_learned_addresses",
	}
	if err := testutil.GatherAndCompare(m.Gatherer(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}

	// Without sources, their families are absent rather than zero.
	bare, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if n, err := testutil.GatherAndCount(bare.Gatherer(), name); err != nil || n != 0 {
			t.Errorf("%s: %d series without a source (err %v), want none", name, n, err)
		}
	}
	if n, _ := testutil.GatherAndCount(bare.Gatherer(), "snowgate_build_info"); n != 1 {
		t.Errorf("snowgate_build_info: %d series, want 1", n)
	}
}

// TestLint runs promlint over every family, the observer's included after
// one exchange of each kind, as served by the handler.
func TestLint(t *testing.T) {
	var stats gateway.Stats
	m, err := New(Options{Sources: Sources{
		Gateway: func() *gateway.Stats { return &stats },
		Limits: func() (gateway.LimitStats, bool) {
			return gateway.LimitStats{Refused: map[string]int64{"requests": 1}}, true
		},
		Redirect:  func() *redirect.Redirect { return nil },
		Kernel:    &redirect.Report{Probes: []redirect.Probe{{Name: "BTF", State: redirect.ProbeOK}}},
		Sessions:  sessionsNow(1),
		Approvals: approvalsNow{decided: map[string]uint64{"approved": 1}},
		Recording: recordingNow{},
		DNS:       dnsNow{},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"login", "query-request", "chunk"} {
		m.Observer().Observe(&gateway.Exchange{Kind: kind, Status: 200, UpstreamDuration: time.Millisecond})
	}
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s\n%s", resp.Status, body)
	}
	problems, err := promlint.New(strings.NewReader(string(body))).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	for _, name := range []string{"snowgate_logins_total", "snowgate_queries_total", "snowgate_chunk_streams_total",
		"snowgate_upstream_request_duration_seconds_bucket", "snowgate_build_info"} {
		if !strings.Contains(string(body), name) {
			t.Errorf("scrape lacks %s", name)
		}
	}
}

// TestDashboardNamesExist keeps appliance/grafana-dashboard.json in step
// with the families this package defines: every snowgate_ name a panel
// queries must be one of them.
func TestDashboardNamesExist(t *testing.T) {
	b, err := os.ReadFile("../../appliance/grafana-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var stats gateway.Stats
	m, err := New(Options{Sources: Sources{
		Gateway:   func() *gateway.Stats { return &stats },
		Redirect:  func() *redirect.Redirect { return nil },
		Kernel:    &redirect.Report{Probes: []redirect.Probe{{Name: "BTF", State: redirect.ProbeOK}}},
		Sessions:  sessionsNow(0),
		Approvals: approvalsNow{decided: map[string]uint64{"approved": 0}},
		Recording: recordingNow{},
		DNS:       dnsNow{},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range []string{"login", "query-request", "chunk"} {
		m.Observer().Observe(&gateway.Exchange{Kind: kind, Status: 200, UpstreamDuration: time.Millisecond})
	}
	mfs, err := m.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, mf := range mfs {
		known[mf.GetName()] = true
	}
	// Families only a live redirect fills: known from their descriptions.
	ch := make(chan *prometheus.Desc, 64)
	go func() { newCollector(Sources{}, nil).Describe(ch); close(ch) }()
	fq := regexp.MustCompile(`fqName: "([^"]+)"`)
	for d := range ch {
		if mm := fq.FindStringSubmatch(d.String()); mm != nil {
			known[mm[1]] = true
		}
	}
	used := regexp.MustCompile(`snowgate_[a-z_]+`).FindAllString(string(b), -1)
	if len(used) == 0 {
		t.Fatal("the dashboard queries no snowgate metric")
	}
	for _, name := range used {
		base := name
		for _, suffix := range []string{"_bucket", "_count", "_sum"} {
			base = strings.TrimSuffix(base, suffix)
		}
		if !known[base] {
			t.Errorf("the dashboard queries %s, which no family provides", name)
		}
	}
}
