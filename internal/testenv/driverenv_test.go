package testenv

import (
	"os"
	"slices"
	"strings"
	"testing"
)

func TestDriverEnv(t *testing.T) {
	tests := []struct {
		name  string
		extra []string
	}{
		{name: "no extra"},
		{name: "helper switch and DSN", extra: []string{"SNOWGATE_TEST_CLIENT=1", "SNOWGATE_TEST_DSN=acme/?x=1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := DriverEnv(t, "/ca.pem", tc.extra...)
			vars := map[string]string{}
			for _, kv := range env {
				k, v, _ := strings.Cut(kv, "=")
				vars[k] = v // the last one wins, as in exec
			}
			home := vars["HOME"]
			if st, err := os.Stat(home); err != nil || !st.IsDir() || !strings.HasPrefix(home, os.TempDir()) {
				t.Fatalf("HOME %q: %v; want a fresh temporary directory", home, err)
			}
			want := map[string]string{
				"SSL_CERT_FILE":                        "/ca.pem",
				"SSL_CERT_DIR":                         home,
				"SF_OCSP_RESPONSE_CACHE_DIR":           home,
				"SNOWFLAKE_DISABLE_PLATFORM_DETECTION": "true",
			}
			for k, v := range want {
				if vars[k] != v {
					t.Errorf("%s=%q, want %q", k, vars[k], v)
				}
			}
			for _, kv := range tc.extra {
				if !slices.Contains(env, kv) {
					t.Errorf("%q missing", kv)
				}
			}
			if len(env) != len(os.Environ())+len(tc.extra)+5 {
				t.Errorf("%d entries, want this process's %d, %d extra and 5", len(env), len(os.Environ()), len(tc.extra))
			}
		})
	}
}
