package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestSetupLogging(t *testing.T) {
	defer slog.SetDefault(slog.Default())
	for _, tc := range []struct {
		level, format string
		wantErr       string
		debugShown    bool
		json          bool
	}{
		{"info", "text", "", false, false},
		{"debug", "text", "", true, false},
		{"debug", "json", "", true, true},
		{"warn", "json", "", false, true},
		{"loud", "text", "--log-level", false, false},
		{"info", "xml", "--log-format", false, false},
	} {
		var buf bytes.Buffer
		err := setupLogging(&buf, tc.level, tc.format)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s/%s: error %v, want one naming %s", tc.level, tc.format, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s/%s: %v", tc.level, tc.format, err)
		}
		slog.Debug("debug line")
		slog.Warn("warn line")
		out := buf.String()
		if got := strings.Contains(out, "debug line"); got != tc.debugShown {
			t.Errorf("%s/%s: debug shown %v, want %v: %q", tc.level, tc.format, got, tc.debugShown, out)
		}
		if !strings.Contains(out, "warn line") {
			t.Errorf("%s/%s: warn line missing: %q", tc.level, tc.format, out)
		}
		if got := strings.HasPrefix(out, "{"); got != tc.json {
			t.Errorf("%s/%s: JSON %v, want %v: %q", tc.level, tc.format, got, tc.json, out)
		}
	}
}
