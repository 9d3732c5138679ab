package main

import (
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/redirect"
)

// daemon is what `snowgate run` assembles. Each stage of the data path has
// a wire method in its own file (wire_*.go) that adds its part: the
// gateway's hooks, admin routes, things to close at exit.
type daemon struct {
	cfg *config.Config
	log *slog.Logger
	// gw is the gateway configuration being assembled; runDaemon fills in
	// the listener-side fields and starts the gateway with it.
	gw gateway.Config
	// admin is the admin listener's mux (/healthz and what stages add).
	admin *http.ServeMux
	// gateway and redirect are set once running; collectors read them at
	// scrape time and must allow nil.
	gateway  *gateway.Gateway
	redirect *redirect.Redirect
	// dns counts what the DNS forwarder learned (a metrics source).
	dns     learnedDNS
	closers []func() error
}

// learnedDNS reports what the DNS forwarder learned: the Snowflake answers
// whose addresses went to the pinned map since start, and the addresses the
// map holds now.
type learnedDNS struct {
	answers atomic.Uint64
	addrs   atomic.Pointer[redirect.SnowflakeAddrs]
}

// LearnedAnswers implements metrics.DNSSource.
func (l *learnedDNS) LearnedAnswers() uint64 { return l.answers.Load() }

// LearnedAddresses implements metrics.DNSSource; expired entries still in
// the map are not counted.
func (l *learnedDNS) LearnedAddresses() int {
	m := l.addrs.Load()
	if m == nil {
		return 0
	}
	list, err := m.List()
	if err != nil {
		return 0
	}
	return len(list)
}

// onClose runs f at exit, after the gateway stopped (last added, first run).
func (d *daemon) onClose(f func() error) { d.closers = append(d.closers, f) }

func (d *daemon) close() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		errs = append(errs, d.closers[i]())
	}
	return errors.Join(errs...)
}
