package main

import (
	"errors"
	"log/slog"
	"net/http"

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
	closers  []func() error
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
