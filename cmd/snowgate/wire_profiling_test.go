package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/config"
)

// TestWireProfiling: the runtime profiles are on the admin listener only
// when admin.profiling is set; otherwise the path says how to turn them on.
func TestWireProfiling(t *testing.T) {
	tests := []struct {
		name      string
		profiling bool
		path      string
		status    int
		body      string
	}{
		{"heap on", true, "/debug/pprof/heap?debug=1", http.StatusOK, "heap profile"},
		{"goroutines on", true, "/debug/pprof/goroutine?debug=1", http.StatusOK, "goroutine profile"},
		{"index on", true, "/debug/pprof/", http.StatusOK, "Types of profiles available"},
		{"heap off", false, "/debug/pprof/heap?debug=1", http.StatusNotFound, "admin.profiling: true"},
		{"index off", false, "/debug/pprof/", http.StatusNotFound, "admin.profiling: true"},
		{"healthz either way", false, "/healthz", http.StatusOK, "ok"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &daemon{cfg: &config.Config{Admin: config.Admin{Listen: "127.0.0.1:0", Profiling: tc.profiling}},
				log: slog.New(slog.NewTextHandler(io.Discard, nil)), admin: adminMux()}
			if err := d.wireProfiling(context.Background()); err != nil {
				t.Fatal(err)
			}
			srv := httptest.NewServer(d.admin)
			defer srv.Close()
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.body) {
				t.Fatalf("GET %s: %d %.200q, want %d with %q", tc.path, resp.StatusCode, b, tc.status, tc.body)
			}
		})
	}
}
