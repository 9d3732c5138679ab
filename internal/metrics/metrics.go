// Package metrics is snowgate's Prometheus registry: the families every
// stage reports, an exchange Observer that counts what flows through the
// gateway's choke point, and a collector that reads the gateway's and the
// redirect's counters at scrape time.
//
// Names follow the Prometheus conventions: the snowgate_ prefix, counters end
// in _total, durations are _seconds histograms, sizes are _bytes. Label values
// come from closed sets (endpoint kinds, configured rule names, statement
// classes, counter names), never from request data, so the series count stays
// bounded whatever agents send.
//
// Stages that are built after this package add their figures without
// touching it: they implement one of the small Source interfaces below
// (SessionSource, ApprovalSource, RecordingSource, DNSSource) and the daemon
// hands the implementation in through Sources, or they register their own
// collector with Metrics.Register.
package metrics

import (
	"fmt"
	"log/slog"
	"net/http"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/redirect"
)

// Namespace prefixes every snowgate metric name.
const Namespace = "snowgate"

// The Source interfaces are how later stages report figures kept in their
// own state. Their methods return plain values, so an implementation needs
// no import of this package (package gateway, which this package imports,
// can implement them too). Each is read at scrape time: it must be cheap and
// safe for concurrent use.

// SessionSource reports the gateway sessions now open (the session store).
type SessionSource interface {
	ActiveSessions() int
}

// ApprovalSource reports the approval stage's figures: statements held for
// a reviewer now, approval requests decided since start by outcome
// ("approved", "denied", "expired", ...), and approved runs this gateway
// took over since start from an instance that died (or whose lease passed)
// while running them.
type ApprovalSource interface {
	PendingApprovals() int
	DecidedApprovals() map[string]uint64
	ResumedRuns() uint64
}

// RecordingSource reports the recorder's figures since start: bytes written
// to recordings (after compression and encryption) and failed commits (each
// one refused a reply).
type RecordingSource interface {
	RecordedBytes() uint64
	RecordingErrors() uint64
}

// DNSSource reports what the DNS forwarder learned: Snowflake answers whose
// addresses it recorded since start, and the distinct addresses known now.
type DNSSource interface {
	LearnedAnswers() uint64
	LearnedAddresses() int
}

// Sources are what the collector reads at scrape time. Every field may be
// nil (or return nil): its families are then left out of the scrape, so a
// stage that is not running shows as absent, not as zero.
type Sources struct {
	// Gateway returns the running gateway's counters.
	Gateway func() *gateway.Stats
	// Limits returns the gateway's limiter figures (false: not running).
	Limits func() (gateway.LimitStats, bool)
	// Redirect returns the redirect in force (its pinned counters and
	// connection table).
	Redirect func() *redirect.Redirect
	// Kernel is the kernel-feature report taken at start.
	Kernel *redirect.Report
	// Sessions, Approvals, Recording and DNS are the later stages'
	// figures.
	Sessions  SessionSource
	Approvals ApprovalSource
	Recording RecordingSource
	DNS       DNSSource
}

// Options configure New.
type Options struct {
	// Version is the build's version string (snowgate_build_info).
	Version string
	// Sources are read at scrape time.
	Sources Sources
	// Logger reports collection errors; default slog.Default().
	Logger *slog.Logger
}

// Metrics is the daemon's registry with snowgate's families registered.
type Metrics struct {
	reg      *prometheus.Registry
	log      *slog.Logger
	observer *Observer
}

// New returns a registry with the Go runtime and process collectors, the
// build info, the scrape-time collector over o.Sources and the exchange
// observer's families.
func New(o Options) (*Metrics, error) {
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	reg := prometheus.NewRegistry()
	m := &Metrics{reg: reg, log: o.Logger, observer: newObserver()}
	version := o.Version
	if version == "" {
		version = "dev"
	}
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace,
		Name:      "build_info",
		Help:      "The running snowgate build: version and Go version (value 1).",
		ConstLabels: prometheus.Labels{
			"version":   version,
			"goversion": runtime.Version(),
		},
	})
	build.Set(1)
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		build,
		m.observer,
		newCollector(o.Sources, o.Logger),
	} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register metrics: %w", err)
		}
	}
	return m, nil
}

// Observer is the gateway Observer that counts exchanges; add it to
// gateway.Config.Observers.
func (m *Metrics) Observer() *Observer { return m.observer }

// Register adds a stage's own collector. Its metric names must start with
// "snowgate_" and follow the conventions of this package.
func (m *Metrics) Register(c prometheus.Collector) error {
	if err := m.reg.Register(c); err != nil {
		return fmt.Errorf("register metrics: %w", err)
	}
	return nil
}

// Gatherer is the registry, for tests and for exposition in other formats.
func (m *Metrics) Gatherer() prometheus.Gatherer { return m.reg }

// Handler serves the registry in the Prometheus exposition formats. A
// family that cannot be collected is logged and left out; the rest of the
// scrape is served.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog:          slogPrinter{m.log},
		ErrorHandling:     promhttp.ContinueOnError,
		Registry:          m.reg,
		EnableOpenMetrics: true,
	})
}

// slogPrinter adapts slog to promhttp's Logger.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Println(v ...any) { p.log.Warn("metrics", "err", fmt.Sprint(v...)) }
