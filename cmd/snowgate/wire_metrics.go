package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snowgate/snowgate/internal/approval"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/metrics"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/session"
)

// wireMetrics adds the metrics stage: the exchange observer on the gateway,
// /metrics and /readyz on the admin listener. It runs after the other
// stages, so it finds their hooks in d.gw: a hook that keeps figures
// implements one of metrics' Source interfaces (metrics.SessionSource,
// ApprovalSource, RecordingSource, DNSSource), or prometheus.Collector for
// families of its own (named snowgate_...), and is picked up here.
func (d *daemon) wireMetrics(ctx context.Context) error {
	// The report the daemon checked at start is not kept; probing again
	// costs one load of the programs, once.
	report, _ := redirect.CheckKernel()
	src := metrics.Sources{
		Gateway: func() *gateway.Stats {
			if g := d.gateway; g != nil {
				return &g.Stats
			}
			return nil
		},
		Limits: func() (gateway.LimitStats, bool) {
			if g := d.gateway; g != nil {
				return g.LimitStats(), true
			}
			return gateway.LimitStats{}, false
		},
		Redirect: func() *redirect.Redirect { return d.redirect },
		Kernel:   &report,
	}
	for _, hook := range d.metricHooks() {
		if s, ok := hook.(metrics.SessionSource); ok && src.Sessions == nil {
			src.Sessions = s
		}
		// The credential swap keeps the session store.
		if s, ok := hook.(interface{ Store() *session.Store }); ok && src.Sessions == nil && s.Store() != nil {
			src.Sessions = storeSessions{s.Store()}
		}
		if s, ok := hook.(metrics.ApprovalSource); ok && src.Approvals == nil {
			src.Approvals = s
		}
		// Until the approval service counts its decisions itself, the
		// pending ones are read from its store.
		if s, ok := hook.(*approval.Service); ok && s != nil && src.Approvals == nil {
			src.Approvals = pendingApprovals{s}
		}
		if s, ok := hook.(metrics.RecordingSource); ok && src.Recording == nil {
			src.Recording = s
		}
		if s, ok := hook.(metrics.DNSSource); ok && src.DNS == nil {
			src.DNS = s
		}
	}
	m, err := metrics.New(metrics.Options{Version: version, Sources: src, Logger: d.log})
	if err != nil {
		return err
	}
	// A hook with families of its own registers them itself.
	for _, hook := range d.metricHooks() {
		if c, ok := hook.(prometheus.Collector); ok {
			if err := m.Register(c); err != nil {
				return err
			}
		}
	}
	d.gw.Observers = append(d.gw.Observers, m.Observer())
	d.admin.Handle("GET /metrics", m.Handler())
	d.admin.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		if problems := d.notReady(ctx); len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %s\n", strings.Join(problems, "; "))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	return nil
}

// storeSessions counts the session store's live sessions.
type storeSessions struct{ st *session.Store }

func (s storeSessions) ActiveSessions() int { return s.st.Len() }

// pendingApprovals counts the held statements in the approval store. It
// reports no decided counts: the store holds every gateway's history, not
// this daemon's.
type pendingApprovals struct{ svc *approval.Service }

// pendingScan bounds one scrape's look at the store.
const pendingScan = 10000

func (p pendingApprovals) PendingApprovals() int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := p.svc.Store().List(ctx, approval.Pending, pendingScan)
	if err != nil {
		slog.Warn("metrics: list pending approvals", "err", err)
		return 0
	}
	return len(rs)
}

func (p pendingApprovals) DecidedApprovals() map[string]uint64 { return nil }

func (p pendingApprovals) ResumedRuns() uint64 { return p.svc.ResumedRuns() }

// metricHooks are the stages' hooks that may report figures, each once
// (the recorder is an observer too).
func (d *daemon) metricHooks() []any {
	candidates := []any{d.gw.Credentials, d.gw.Recorder, &d.dns}
	if st := d.gw.Statements; st != nil {
		candidates = append(candidates, st)
		if st.Approvals != nil {
			candidates = append(candidates, st.Approvals)
		}
	}
	for _, o := range d.gw.Observers {
		candidates = append(candidates, o)
	}
	var hooks []any
	for _, c := range candidates {
		if c == nil || slices.ContainsFunc(hooks, func(h any) bool { return sameHook(h, c) }) {
			continue
		}
		hooks = append(hooks, c)
	}
	return hooks
}

// sameHook reports whether a and b are the same hook; values of types that
// cannot be compared are never the same.
func sameHook(a, b any) (same bool) {
	defer func() {
		if recover() != nil {
			same = false
		}
	}()
	return a == b
}

// notReady says why the daemon cannot take agents' traffic: ready means the
// redirect's programs are in force on the agents' cgroup and the gateway is
// serving (not yet started, or stopping, is not ready).
func (d *daemon) notReady(ctx context.Context) []string {
	var problems []string
	if ctx.Err() != nil {
		problems = append(problems, "stopping")
	}
	if d.gateway == nil {
		problems = append(problems, "gateway not serving")
	}
	if d.redirect == nil {
		problems = append(problems, "redirect not installed")
	} else if err := redirect.VerifyAttached(d.cfg.Intercept.Cgroup, d.redirect.PinDir()); err != nil {
		problems = append(problems, "redirect not in force: "+err.Error())
	}
	return problems
}
