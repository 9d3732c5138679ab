package certs

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// TestSnowflakeSDKOCSP: the real Node driver (snowflake-sdk) trusts the CA
// through NODE_EXTRA_CA_CERTS and accepts minted leaves in fail-open and
// fail-closed OCSP mode when they carry the responder's AIA URL, and the
// cache-server look-up is answered at once.
func TestSnowflakeSDKOCSP(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the real Node driver")
	}
	f := newDriverFixture(t)
	tests := []struct {
		name      string
		ocspURL   bool
		failOpen  bool
		cacheURL  bool // set SF_OCSP_RESPONSE_CACHE_SERVER_URL: privatelink-style GET /retry/…
		wantErr   string
		wantOCSPs bool
	}{
		{"fail-closed, AIA, POST to the responder", true, false, false, "", true},
		{"fail-closed, AIA, cache server and retry GET", true, false, true, "", true},
		{"fail-open, AIA and responder", true, true, false, "", true},
		{"fail-open, no AIA", false, true, true, "", false},
		{"fail-closed, no AIA: the driver refuses", false, false, false, "AuthorityInfoAccess", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.use(t, tt.ocspURL)
			c := testenv.NewNodeClient(t)
			c.CAFile = f.caFile
			if tt.cacheURL {
				// The driver asks the cache server (answered at once), then
				// the responder through GET /retry/<responder>/<b64>.
				c.Env = []string{
					"SF_OCSP_RESPONSE_CACHE_SERVER_ENABLED=true",
					"SF_OCSP_RESPONSE_CACHE_SERVER_URL=" + f.httpURL + snowflake.OCSPCacheServerPath,
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			connect := testenv.NodeConnect(testenv.NodeConnection{
				Account: "acme", AccessURL: fmt.Sprintf("https://localhost:%d", f.port),
				Username: "u", Password: "p",
			})
			if tt.wantErr != "" {
				// The driver retries the refused connection until its own
				// timeout; the refusal is in its log long before.
				connect.TimeoutMS = 30000
			}
			res, err := c.Run(ctx,
				testenv.NodeStep{Op: "configure", Options: map[string]any{"ocspFailOpen": tt.failOpen}},
				connect,
				testenv.NodeExecute("SELECT 1"),
			)
			if tt.wantErr != "" {
				var msg string
				switch {
				case err != nil:
					msg = err.Error()
				case len(res) > 1 && !res[1].OK:
					msg = res[1].Err().Error()
				}
				if !strings.Contains(msg, tt.wantErr) {
					t.Fatalf("connect did not fail with %q: %v %+v", tt.wantErr, err, res)
				}
				return
			}
			if err != nil {
				t.Fatalf("node harness: %v", err)
			}
			for _, r := range res {
				if err := r.Err(); err != nil {
					t.Fatalf("step %d (%s): %v", r.Step, r.Op, err)
				}
			}
			if len(res[2].Rows) != 1 || fmt.Sprint(res[2].Rows[0][0]) != "1" {
				t.Fatalf("SELECT 1 gave %v", res[2].Rows)
			}
			if got := f.resp.ocsp.Load() > 0; got != tt.wantOCSPs {
				t.Fatalf("OCSP requests: %d", f.resp.ocsp.Load())
			}
		})
	}
}
