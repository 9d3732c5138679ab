package identity_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
)

// TestHostileKeyServers points a jwks_url or discovery source at servers
// that answer badly; the verifier must refuse with keys_unavailable and not
// read unbounded bodies. Symmetric keys in a JWKS are ignored.
func TestHostileKeyServers(t *testing.T) {
	is := oidctest.Start(t)
	var jwks map[string]any
	if err := json.Unmarshal(is.JWKS(), &jwks); err != nil {
		t.Fatal(err)
	}
	withOct := map[string]any{"keys": append([]any{map[string]any{"kty": "oct", "kid": is.KeyID(), "k": "c2VjcmV0"}}, jwks["keys"].([]any)...)}
	encKey := jwks["keys"].([]any)[0].(map[string]any)
	encOnly := map[string]any{"keys": []any{map[string]any{"kty": encKey["kty"], "kid": encKey["kid"], "n": encKey["n"], "e": encKey["e"], "use": "enc"}}}
	cases := []struct {
		name      string
		discovery bool
		handler   http.HandlerFunc
		want      identity.Reason
	}{
		{"JWKS over 1 MiB", false, func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"keys":[` + strings.Repeat(" ", 1<<20) + `]}`))
		}, identity.ReasonKeysUnavailable},
		{"not JSON", false, func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("<html>")) }, identity.ReasonKeysUnavailable},
		{"HTTP 500", false, func(w http.ResponseWriter, r *http.Request) { http.Error(w, "x", 500) }, identity.ReasonKeysUnavailable},
		{"encryption keys only", false, func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(encOnly) }, identity.ReasonKeysUnavailable},
		{"symmetric key listed first", false, func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(withOct) }, ""},
		{"discovery names another issuer", true, func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.URL + "/", "jwks_uri": is.URL + oidctest.JWKSPath})
		}, identity.ReasonKeysUnavailable},
		{"discovery with http jwks_uri", true, func(w http.ResponseWriter, r *http.Request) {
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.URL, "jwks_uri": "http://keys.example.com/jwks"})
		}, identity.ReasonKeysUnavailable},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(c.handler)
			defer srv.Close()
			clk := newClock()
			cfg := githubIssuerConfig(is)
			cfg.Keys = identity.KeySource{Source: identity.SourceJWKSURL, URL: srv.URL + "/jwks"}
			if c.discovery {
				// The issuer URL must be the token's iss; serve discovery for
				// it from the hostile server by pointing the issuer there.
				cfg.Issuer = srv.URL
				cfg.Keys = identity.KeySource{Source: identity.SourceDiscovery}
			}
			v := newVerifier(t, is, clk, cfg)
			tok := ghToken(is, clk.Now())
			tok.Issuer = cfg.Issuer
			_, err := v.Verify(context.Background(), is.Sign(t, tok))
			if got := identity.ReasonOf(err); got != c.want || (c.want == "" && err != nil) {
				t.Fatalf("reason %q, want %q (err %v)", got, c.want, err)
			}
		})
	}
}

func TestJWKSCacheSurvivesRestart(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	cfg := githubIssuerConfig(is)
	cfg.Keys.CacheFile = filepath.Join(t.TempDir(), "github.jwks")
	ctx := context.Background()
	v := newVerifier(t, is, clk, cfg)
	if _, err := v.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(cfg.Keys.CacheFile)
	if err != nil {
		t.Fatalf("cache not written: %v", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		t.Errorf("cache mode %v, want no group/other access", st.Mode().Perm())
	}
	// "Restart" while the issuer is down: the persisted keys verify.
	is.SetDown(true)
	v2 := newVerifier(t, is, clk, cfg)
	if _, err := v2.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); err != nil {
		t.Fatalf("after restart with the issuer down: %v", err)
	}
	// Without the cache the same restart cannot verify.
	cfg.Keys.CacheFile = ""
	v3 := newVerifier(t, is, clk, cfg)
	if _, err := v3.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); identity.ReasonOf(err) != identity.ReasonKeysUnavailable {
		t.Fatalf("without cache: %v", err)
	}
}

func TestMultipleAudiences(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	v := newVerifier(t, is, clk, githubIssuerConfig(is))
	tok := ghToken(is, clk.Now())
	tok.Audience = []string{"https://github.com/acme", aud}
	id, err := v.Verify(context.Background(), is.Sign(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	if len(id.Audience) != 2 {
		t.Errorf("audience = %q", id.Audience)
	}
}
