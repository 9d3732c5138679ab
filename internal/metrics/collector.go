package metrics

import (
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snowgate/snowgate/internal/redirect"
)

// collector reads the counters the gateway, the redirect and the later
// stages keep themselves, at scrape time.
type collector struct {
	src Sources
	log *slog.Logger

	connections, accepted, ocsp                    *prometheus.Desc
	inRequests, inQueries, buffered, busy, limited *prometheus.Desc
	installed, openConns                           *prometheus.Desc
	redirected, refused, dnsRedirected, dnsRestore *prometheus.Desc
	tuplesRecorded, tuplesDeleted, tupleFailures   *prometheus.Desc
	otherCounters                                  *prometheus.Desc
	kernel                                         *prometheus.Desc
	sessions                                       *prometheus.Desc
	approvalsPending, approvalsDecided             *prometheus.Desc
	approvalRunsResumed                            *prometheus.Desc
	recordingBytes, recordingErrors                *prometheus.Desc
	dnsAnswers, dnsAddresses                       *prometheus.Desc
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, labels, nil)
}

func newCollector(src Sources, log *slog.Logger) *collector {
	return &collector{
		src: src,
		log: log,
		connections: desc("connections_total",
			"Redirected connections by the gateway's decision (intercepted, passed_through, refused) and, for refusals, why (not_redirected, bad_client_hello, server_name).",
			"decision", "reason"),
		accepted: desc("connections_accepted_total",
			"Connections the gateway accepted that the redirect had recorded (plain-HTTP OCSP connections included)."),
		ocsp: desc("ocsp_requests_total",
			"OCSP and OCSP cache-server requests answered by the gateway's responder."),
		inRequests: desc("requests_in_progress",
			"API requests the gateway is serving now (limits.max_requests caps them)."),
		inQueries: desc("queries_in_progress",
			"Query requests and result polls in progress now (limits.max_queries caps them)."),
		buffered: desc("buffered_body_bytes",
			"Request and reply bodies the gateway holds in memory now (limits.max_buffered_bytes caps them)."),
		busy: desc("workloads_in_progress",
			"Workloads (cgroups) with requests in progress now."),
		limited: desc("limit_refusals_total",
			"Requests refused at a limit, by limit (requests, queries, buffered_bytes; workload_ prefixed: per workload).",
			"limit"),
		installed: desc("redirect_installed",
			"1 when the eBPF redirect is installed and its pinned maps are open, else 0."),
		openConns: desc("redirect_open_connections",
			"Redirected connections the redirect's tuple table holds now."),
		redirected: desc("redirect_redirected_total",
			"Connections the eBPF programs redirected to the gateway, by address family (counted in the kernel, across daemon restarts).",
			"family"),
		refused: desc("redirect_refused_total",
			"Packets and sockets the eBPF programs refused, by reason (v6, quic, dot, proto, raw, no_target, no_storage, egress_dropped).",
			"reason"),
		dnsRedirected: desc("redirect_dns_redirected_total",
			"DNS queries the eBPF programs redirected to the gateway's forwarder."),
		dnsRestore: desc("redirect_dns_replies_restored_total",
			"DNS replies whose source the eBPF programs restored to the address the client asked."),
		tuplesRecorded: desc("redirect_tuples_recorded_total",
			"Connection tuples the eBPF programs recorded for the gateway's original-destination look-up."),
		tuplesDeleted: desc("redirect_tuples_deleted_total",
			"Connection tuples removed when their connection closed."),
		tupleFailures: desc("redirect_tuple_update_failures_total",
			"Connections refused because their tuple could not be recorded (full table)."),
		otherCounters: desc("redirect_counter_total",
			"eBPF redirect counters this build has no dedicated metric for, by counter name.",
			"counter"),
		kernel: desc("kernel_feature_info",
			"Kernel features the redirect uses, as probed at start: state is ok, missing or degraded (value 1).",
			"feature", "state", "mandatory"),
		sessions: desc("sessions_active",
			"Gateway sessions now open."),
		approvalsPending: desc("approvals_pending",
			"Held statements waiting for a reviewer's decision."),
		approvalsDecided: desc("approvals_decided_total",
			"Approval requests decided, by outcome.",
			"decision"),
		approvalRunsResumed: desc("approval_runs_resumed_total",
			"Approved statements whose run this gateway took over from a gateway instance that died (or whose lease passed) before the run's reply; each was sent again with the driver's requestId."),
		recordingBytes: desc("recording_bytes_total",
			"Bytes written to session recordings."),
		recordingErrors: desc("recording_errors_total",
			"Recording commits that failed (each refused the reply it guarded)."),
		dnsAnswers: desc("dns_learned_answers_total",
			"DNS answers for Snowflake names whose addresses the forwarder learned."),
		dnsAddresses: desc("dns_learned_addresses",
			"Distinct Snowflake addresses the forwarder knows now."),
	}
}

func (c *collector) descs() []*prometheus.Desc {
	return []*prometheus.Desc{
		c.connections, c.accepted, c.ocsp, c.installed, c.openConns,
		c.inRequests, c.inQueries, c.buffered, c.busy, c.limited,
		c.redirected, c.refused, c.dnsRedirected, c.dnsRestore,
		c.tuplesRecorded, c.tuplesDeleted, c.tupleFailures, c.otherCounters,
		c.kernel, c.sessions, c.approvalsPending, c.approvalsDecided, c.approvalRunsResumed,
		c.recordingBytes, c.recordingErrors, c.dnsAnswers, c.dnsAddresses,
	}
}

// Describe implements prometheus.Collector.
func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs() {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *collector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}

	if c.src.Gateway != nil {
		if s := c.src.Gateway(); s != nil {
			counter(c.connections, float64(s.Terminated.Load()), "intercepted", "")
			counter(c.connections, float64(s.PassedThrough.Load()), "passed_through", "")
			counter(c.connections, float64(s.NotRedirected.Load()), "refused", "not_redirected")
			counter(c.connections, float64(s.BadHello.Load()), "refused", "bad_client_hello")
			counter(c.connections, float64(s.Refused.Load()), "refused", "server_name")
			counter(c.accepted, float64(s.Accepted.Load()))
			counter(c.ocsp, float64(s.OCSP.Load()))
		}
	}

	if c.src.Limits != nil {
		if s, ok := c.src.Limits(); ok {
			gauge(c.inRequests, float64(s.Requests))
			gauge(c.inQueries, float64(s.Queries))
			gauge(c.buffered, float64(s.BufferedBytes))
			gauge(c.busy, float64(s.Workloads))
			for limit, n := range s.Refused {
				counter(c.limited, float64(n), limit)
			}
		}
	}

	if c.src.Redirect != nil {
		r := c.src.Redirect()
		if r == nil {
			gauge(c.installed, 0)
		} else {
			gauge(c.installed, 1)
			c.collectRedirect(ch, r, counter, gauge)
		}
	}

	if k := c.src.Kernel; k != nil {
		for _, p := range k.Probes {
			mandatory := "false"
			if p.Mandatory {
				mandatory = "true"
			}
			gauge(c.kernel, 1, p.Name, string(p.State), mandatory)
		}
	}

	if c.src.Sessions != nil {
		gauge(c.sessions, float64(c.src.Sessions.ActiveSessions()))
	}
	if c.src.Approvals != nil {
		gauge(c.approvalsPending, float64(c.src.Approvals.PendingApprovals()))
		for decision, n := range c.src.Approvals.DecidedApprovals() {
			counter(c.approvalsDecided, float64(n), decision)
		}
		counter(c.approvalRunsResumed, float64(c.src.Approvals.ResumedRuns()))
	}
	if c.src.Recording != nil {
		counter(c.recordingBytes, float64(c.src.Recording.RecordedBytes()))
		counter(c.recordingErrors, float64(c.src.Recording.RecordingErrors()))
	}
	if c.src.DNS != nil {
		counter(c.dnsAnswers, float64(c.src.DNS.LearnedAnswers()))
		gauge(c.dnsAddresses, float64(c.src.DNS.LearnedAddresses()))
	}
}

// redirectCounters are the redirect counters with a metric of their own;
// the refusal reasons are the counters named refused_* and egress_dropped.
var redirectCounters = map[string]string{
	"redirected4":         "redirected:ipv4",
	"redirected6":         "redirected:ipv6",
	"dns_redirected":      "dns_redirected",
	"dns_reply_restored":  "dns_reply_restored",
	"tuple_recorded":      "tuple_recorded",
	"tuple_deleted":       "tuple_deleted",
	"tuple_update_failed": "tuple_update_failed",
	"egress_dropped":      "refused:egress_dropped",
}

type emit func(d *prometheus.Desc, v float64, labels ...string)

func (c *collector) collectRedirect(ch chan<- prometheus.Metric, r *redirect.Redirect, counter, gauge emit) {
	counts, err := r.Counters()
	if err != nil {
		c.log.Warn("metrics: read redirect counters", "err", err)
		ch <- prometheus.NewInvalidMetric(c.redirected, err)
	}
	for name, v := range counts {
		f := float64(v)
		target, ok := redirectCounters[name]
		if !ok && strings.HasPrefix(name, "refused_") {
			target, ok = "refused:"+strings.TrimPrefix(name, "refused_"), true
		}
		switch {
		case !ok:
			counter(c.otherCounters, f, name)
		case strings.HasPrefix(target, "redirected:"):
			counter(c.redirected, f, strings.TrimPrefix(target, "redirected:"))
		case strings.HasPrefix(target, "refused:"):
			counter(c.refused, f, strings.TrimPrefix(target, "refused:"))
		case target == "dns_redirected":
			counter(c.dnsRedirected, f)
		case target == "dns_reply_restored":
			counter(c.dnsRestore, f)
		case target == "tuple_recorded":
			counter(c.tuplesRecorded, f)
		case target == "tuple_deleted":
			counter(c.tuplesDeleted, f)
		case target == "tuple_update_failed":
			counter(c.tupleFailures, f)
		}
	}
	conns, err := r.Connections()
	if err != nil {
		c.log.Warn("metrics: read redirect connections", "err", err)
		ch <- prometheus.NewInvalidMetric(c.openConns, err)
		return
	}
	gauge(c.openConns, float64(len(conns)))
}
