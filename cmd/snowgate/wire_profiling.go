package main

import (
	"context"
	"net/http"
	"net/http/pprof"
)

// wireProfiling serves Go's runtime profiles on the admin listener when
// admin.profiling is set: `go tool pprof http://<admin>/debug/pprof/heap`
// shows what holds the gateway's memory, /debug/pprof/goroutine?debug=1 what
// its goroutines wait on. The handlers are mounted on the admin mux only
// (never on http.DefaultServeMux, which nothing serves).
func (d *daemon) wireProfiling(context.Context) error {
	if !d.cfg.Admin.Profiling {
		d.admin.HandleFunc("GET /debug/pprof/", profilingOff)
		return nil
	}
	d.admin.HandleFunc("GET /debug/pprof/", pprof.Index)
	d.admin.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	d.admin.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	d.admin.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	d.admin.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	d.log.Warn("runtime profiles served on the admin listener (admin.profiling)", "path", "/debug/pprof/", "listen", d.cfg.Admin.Listen)
	return nil
}

// profilingOff answers what a profile URL would be when profiling is off, so
// an operator learns how to turn it on rather than meeting a bare 404.
func profilingOff(w http.ResponseWriter, _ *http.Request) {
	http.Error(w, "runtime profiles are off: set admin.profiling: true in the configuration and restart", http.StatusNotFound)
}
