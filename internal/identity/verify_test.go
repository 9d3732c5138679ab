package identity_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
)

// clock is a settable clock shared by the verifier and the token minting,
// so tests move time instead of sleeping.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Now().Truncate(time.Second)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const (
	aud     = "snowgate"
	ownerID = "123456"
	repoID  = "456789"
)

func ghToken(is *oidctest.Issuer, now time.Time) oidctest.Token {
	t := oidctest.GitHub(aud, "acme", ownerID, "app", repoID)
	t.Now = now
	return t
}

func githubIssuerConfig(is *oidctest.Issuer) identity.IssuerConfig {
	return identity.IssuerConfig{
		Name:             "github",
		Issuer:           is.URL,
		Audiences:        []string{aud},
		Keys:             identity.KeySource{Source: identity.SourceDiscovery},
		ClockSkew:        30 * time.Second,
		MaxTokenLifetime: 15 * time.Minute,
		MaxTokenAge:      4 * time.Minute,
		RequiredClaims:   []string{"jti", "repository_id", "run_id"},
		Tenant:           map[string]string{"repository_owner_id": ownerID},
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func newVerifier(t *testing.T, is *oidctest.Issuer, clk *clock, cfgs ...identity.IssuerConfig) *identity.Verifier {
	t.Helper()
	v, err := identity.NewVerifier(cfgs, identity.Options{HTTPClient: is.Client, Now: clk.Now, Logger: quietLogger()})
	if err != nil {
		t.Fatalf("NewVerifier: %v", err)
	}
	return v
}

// sign signs claims with key under alg and kid, bypassing the issuer.
func sign(t *testing.T, key any, alg jose.SignatureAlgorithm, kid string, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		t.Fatalf("signer: %v", err)
	}
	raw, err := jwt.Signed(s).Claims(claims).Serialize()
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	return raw
}

func b64(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

func TestVerifyAcceptsGitHubAndGitLab(t *testing.T) {
	gh, gl := oidctest.Start(t), oidctest.Start(t)
	clk := newClock()
	glCfg := identity.IssuerConfig{
		Name: "gitlab", Issuer: gl.URL, Audiences: []string{aud},
		Keys:             identity.KeySource{Source: identity.SourceJWKSFile, File: gl.WriteJWKSFile(t)},
		MaxTokenLifetime: 3 * time.Hour,
		Tenant:           map[string]string{"namespace_id": "42"},
	}
	v := newVerifier(t, gh, clk, githubIssuerConfig(gh), glCfg)
	ctx := context.Background()

	id, err := v.Verify(ctx, gh.Sign(t, ghToken(gh, clk.Now())))
	if err != nil {
		t.Fatalf("GitHub token: %v", err)
	}
	if id.IssuerName != "github" || id.Subject != "repo:acme/app:ref:refs/heads/main" || id.ID == "" || !id.Expiry.Equal(clk.Now().Add(5*time.Minute)) {
		t.Errorf("GitHub identity = %+v", id)
	}
	glTok := oidctest.GitLab(aud, "grp", "42", "proj", "991")
	glTok.Now = clk.Now()
	id, err = v.Verify(ctx, gl.Sign(t, glTok))
	if err != nil {
		t.Fatalf("GitLab token (jwks_file): %v", err)
	}
	if id.IssuerName != "gitlab" || id.Claims["ref_protected"] != "true" {
		t.Errorf("GitLab identity = %+v", id)
	}
	if n := gl.JWKSFetches(); n != 0 {
		t.Errorf("jwks_file issuer was fetched %d times over the network", n)
	}
}

func TestVerifyRefusals(t *testing.T) {
	is := oidctest.Start(t)
	other := oidctest.Start(t)
	clk := newClock()
	v := newVerifier(t, is, clk, githubIssuerConfig(is))
	now := clk.Now()
	ctx := context.Background()
	// Warm the key set so "unknown key" cases are about the kid.
	if _, err := v.Verify(ctx, is.Sign(t, ghToken(is, now))); err != nil {
		t.Fatalf("valid token: %v", err)
	}

	mod := func(f func(*oidctest.Token)) string {
		tok := ghToken(is, now)
		f(&tok)
		return is.Sign(t, tok)
	}
	valid := is.Sign(t, ghToken(is, now))
	parts := strings.Split(valid, ".")

	pubDER, err := x509.MarshalPKIXPublicKey(&is.PrivateKey().PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	hsHeader := b64(map[string]string{"alg": "HS256", "typ": "JWT", "kid": is.KeyID()})
	mac := hmac.New(sha256.New, pubDER)
	mac.Write([]byte(hsHeader + "." + parts[1]))
	hs256 := hsHeader + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil))

	tampered := is.Claims(ghToken(is, now))
	tampered["repository_id"] = "999999"
	tamperedTok := parts[0] + "." + b64(tampered) + "." + parts[2]

	cases := []struct {
		name  string
		token string
		want  identity.Reason
	}{
		{"expired", mod(func(t *oidctest.Token) { t.IssuedAt = now.Add(-7 * time.Minute) }), identity.ReasonExpired},
		{"not yet valid", mod(func(t *oidctest.Token) { t.NotBefore = now.Add(2 * time.Minute) }), identity.ReasonNotYetValid},
		{"issued in the future", mod(func(t *oidctest.Token) {
			t.IssuedAt, t.NotBefore = now.Add(2*time.Minute), now.Add(-time.Minute)
		}), identity.ReasonIssuedInFuture},
		{"wrong audience", mod(func(t *oidctest.Token) { t.Audience = []string{"https://github.com/acme"} }), identity.ReasonWrongAudience},
		{"no audience", mod(func(t *oidctest.Token) { t.Audience = nil }), identity.ReasonWrongAudience},
		{"wrong issuer", mod(func(t *oidctest.Token) { t.Issuer = "https://token.example.com" }), identity.ReasonUnknownIssuer},
		{"issuer with trailing slash", mod(func(t *oidctest.Token) { t.Issuer = is.URL + "/" }), identity.ReasonUnknownIssuer},
		{"unknown key", mod(func(t *oidctest.Token) { t.KeyID = "no-such-kid" }), identity.ReasonUnknownKey},
		{"alg none", b64(map[string]string{"alg": "none", "typ": "JWT"}) + "." + parts[1] + ".", identity.ReasonAlgNone},
		{"alg none with signature", b64(map[string]string{"alg": "none"}) + "." + parts[1] + "." + parts[2], identity.ReasonAlgNone},
		{"HS256 signed with the public key", hs256, identity.ReasonAlgSymmetric},
		{"RS384 outside the allow-list", sign(t, is.PrivateKey(), jose.RS384, is.KeyID(), is.Claims(ghToken(is, now))), identity.ReasonAlgNotAllowed},
		{"tampered payload", tamperedTok, identity.ReasonBadSignature},
		{"other issuer's key with a colliding kid", sign(t, other.PrivateKey(), jose.RS256, is.KeyID(), is.Claims(ghToken(is, now))), identity.ReasonBadSignature},
		{"oversized", mod(func(t *oidctest.Token) { t.Claims["pad"] = strings.Repeat("x", identity.MaxTokenSize) }), identity.ReasonOversized},
		{"JWE shape", "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d", identity.ReasonMalformed},
		{"garbage", "not a token", identity.ReasonMalformed},
		{"lifetime over the cap", mod(func(t *oidctest.Token) { t.Lifetime = time.Hour }), identity.ReasonLifetimeTooLong},
		{"too old", mod(func(t *oidctest.Token) { t.IssuedAt, t.Lifetime = now.Add(-6*time.Minute), 10*time.Minute }), identity.ReasonTooOld},
		{"required claim missing", mod(func(t *oidctest.Token) { delete(t.Claims, "run_id") }), identity.ReasonMissingClaim},
		{"required claim is an object", mod(func(t *oidctest.Token) { t.Claims["repository_id"] = map[string]any{"id": 1} }), identity.ReasonMissingClaim},
		{"tenant mismatch", mod(func(t *oidctest.Token) { t.Claims["repository_owner_id"] = "654321" }), identity.ReasonTenantMismatch},
		{"tenant claim wrongly typed", mod(func(t *oidctest.Token) { t.Claims["repository_owner_id"] = []any{map[string]any{}} }), identity.ReasonTenantMismatch},
		{"tenant claim as an array holding the pin", mod(func(t *oidctest.Token) { t.Claims["repository_owner_id"] = []any{ownerID, "1"} }), identity.ReasonTenantMismatch},
		{"required claim is a boolean", mod(func(t *oidctest.Token) { t.Claims["run_id"] = true }), identity.ReasonMissingClaim},
		{"required claim is empty", mod(func(t *oidctest.Token) { t.Claims["run_id"] = "" }), identity.ReasonMissingClaim},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			id, err := v.Verify(ctx, c.token)
			if err == nil {
				t.Fatalf("accepted: %+v", id)
			}
			if got := identity.ReasonOf(err); got != c.want {
				t.Fatalf("reason = %q, want %q (err: %v)", got, c.want, err)
			}
			if strings.Contains(err.Error(), parts[2]) || strings.Contains(err.Error(), parts[1]) {
				t.Errorf("error message contains token material: %v", err)
			}
		})
	}
}

func TestVerifyClockSkew(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	v := newVerifier(t, is, clk, githubIssuerConfig(is)) // skew 30s
	now := clk.Now()
	cases := []struct {
		name string
		tok  func(*oidctest.Token)
		want identity.Reason
	}{
		{"expired 20s ago, within skew", func(t *oidctest.Token) { t.IssuedAt, t.Expiry = now.Add(-2*time.Minute), now.Add(-20*time.Second) }, ""},
		{"expired 40s ago", func(t *oidctest.Token) { t.IssuedAt, t.Expiry = now.Add(-2*time.Minute), now.Add(-40*time.Second) }, identity.ReasonExpired},
		{"iat 20s ahead, within skew", func(t *oidctest.Token) { t.IssuedAt = now.Add(20 * time.Second) }, ""},
		{"iat 40s ahead", func(t *oidctest.Token) { t.IssuedAt = now.Add(40 * time.Second) }, identity.ReasonIssuedInFuture},
		{"nbf 40s ahead", func(t *oidctest.Token) { t.NotBefore = now.Add(40 * time.Second) }, identity.ReasonNotYetValid},
		{"age 4m20s, within cap and skew", func(t *oidctest.Token) { t.IssuedAt = now.Add(-260 * time.Second) }, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tok := ghToken(is, now)
			c.tok(&tok)
			_, err := v.Verify(context.Background(), is.Sign(t, tok))
			if got := identity.ReasonOf(err); got != c.want || (c.want == "" && err != nil) {
				t.Fatalf("reason %q, want %q (err %v)", got, c.want, err)
			}
		})
	}
}

func TestKeyRotationRefreshesOnceRateLimited(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	v := newVerifier(t, is, clk, githubIssuerConfig(is))
	ctx := context.Background()

	old := is.Sign(t, ghToken(is, clk.Now()))
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatalf("first token: %v", err)
	}
	if n := is.JWKSFetches(); n != 1 {
		t.Fatalf("JWKS fetches after first token = %d, want 1", n)
	}

	// A flood of tokens with unknown kids right after the fetch: no fetch.
	for i := range 20 {
		tok := ghToken(is, clk.Now())
		tok.KeyID = fmt.Sprintf("forged-%d", i)
		if _, err := v.Verify(ctx, is.Sign(t, tok)); identity.ReasonOf(err) != identity.ReasonUnknownKey {
			t.Fatalf("forged kid %d: %v", i, err)
		}
	}
	if n := is.JWKSFetches(); n != 1 {
		t.Fatalf("JWKS fetches after a forged-kid flood = %d, want 1", n)
	}

	// The issuer rotates (old key gone from its JWKS); once the rate limit
	// allows, the new kid triggers exactly one refresh.
	if err := is.Rotate(false); err != nil {
		t.Fatal(err)
	}
	clk.Advance(identity.DefaultMinRefetchInterval + time.Second)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		tok := is.Sign(t, ghToken(is, clk.Now()))
		wg.Go(func() { _, errs[i] = v.Verify(ctx, tok) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("token %d with the new kid: %v", i, err)
		}
	}
	if n := is.JWKSFetches(); n != 2 {
		t.Fatalf("JWKS fetches after rotation = %d, want 2", n)
	}
	// Tokens under the previous key still verify during the overlap.
	if _, err := v.Verify(ctx, old); err != nil {
		t.Fatalf("token under the retained previous key: %v", err)
	}
	// Another flood after the interval: exactly one more fetch.
	clk.Advance(identity.DefaultMinRefetchInterval + time.Second)
	for i := range 10 {
		tok := ghToken(is, clk.Now())
		tok.KeyID = fmt.Sprintf("forged-again-%d", i)
		_, _ = v.Verify(ctx, is.Sign(t, tok))
	}
	if n := is.JWKSFetches(); n != 3 {
		t.Fatalf("JWKS fetches after a second flood = %d, want 3", n)
	}
}

func TestIssuerDownKeepsLastGoodKeys(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	v := newVerifier(t, is, clk, githubIssuerConfig(is))
	ctx := context.Background()
	if _, err := v.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); err != nil {
		t.Fatalf("first token: %v", err)
	}
	is.SetDown(true)
	// Past the timed refresh: the refresh fails, the cached keys serve.
	clk.Advance(identity.DefaultRefresh + time.Minute)
	if _, err := v.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); err != nil {
		t.Fatalf("token while the issuer is down: %v", err)
	}
	if n := is.JWKSFetches(); n != 2 {
		t.Errorf("JWKS fetches = %d, want 2 (one refresh attempt while down)", n)
	}
	// An issuer that was never reachable gives a distinct reason.
	fresh := newVerifier(t, is, clk, githubIssuerConfig(is))
	if _, err := fresh.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); identity.ReasonOf(err) != identity.ReasonKeysUnavailable {
		t.Fatalf("never-fetched issuer: %v", err)
	}
}

func TestJWKSFileRotation(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	cfg := githubIssuerConfig(is)
	file := is.WriteJWKSFile(t)
	cfg.Keys = identity.KeySource{Source: identity.SourceJWKSFile, File: file}
	v := newVerifier(t, is, clk, cfg)
	ctx := context.Background()
	if _, err := v.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); err != nil {
		t.Fatalf("token: %v", err)
	}
	if err := is.Rotate(false); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, is.JWKS(), 0o600); err != nil {
		t.Fatal(err)
	}
	// Make the modification time differ even on coarse file systems.
	future := time.Now().Add(time.Minute)
	if err := os.Chtimes(file, future, future); err != nil {
		t.Fatal(err)
	}
	clk.Advance(identity.DefaultMinRefetchInterval + time.Second)
	if _, err := v.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); err != nil {
		t.Fatalf("token after the file was updated: %v", err)
	}
	// A broken file keeps the last good keys.
	if err := os.WriteFile(file, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	clk.Advance(identity.DefaultRefresh + time.Minute)
	if _, err := v.Verify(ctx, is.Sign(t, ghToken(is, clk.Now()))); err != nil {
		t.Fatalf("token after the file broke: %v", err)
	}
	if n := is.JWKSFetches(); n != 0 {
		t.Errorf("network JWKS fetches = %d, want 0", n)
	}
}

func TestIssuerConfigValidation(t *testing.T) {
	good := identity.IssuerConfig{Name: "ci", Issuer: "https://ci.example.com", Audiences: []string{aud}}
	cases := []struct {
		name string
		mod  func(*identity.IssuerConfig)
		want string // substring of the error; "" means valid
	}{
		{"valid", func(*identity.IssuerConfig) {}, ""},
		{"no name", func(c *identity.IssuerConfig) { c.Name = "" }, "name is required"},
		{"http issuer", func(c *identity.IssuerConfig) { c.Issuer = "http://ci.example.com" }, "not an https URL"},
		{"http loopback issuer", func(c *identity.IssuerConfig) { c.Issuer = "http://127.0.0.1:8080" }, ""},
		{"no audience", func(c *identity.IssuerConfig) { c.Audiences = nil }, "audiences"},
		{"HS256", func(c *identity.IssuerConfig) { c.Algorithms = []string{"RS256", "HS256"} }, `algorithm "HS256" is not allowed`},
		{"none", func(c *identity.IssuerConfig) { c.Algorithms = []string{"none"} }, `algorithm "none" is not allowed`},
		{"skew too wide", func(c *identity.IssuerConfig) { c.ClockSkew = 5 * time.Minute }, "clock_skew"},
		{"GitHub without tenant", func(c *identity.IssuerConfig) { c.Issuer = "https://token.actions.githubusercontent.com" }, "repository_owner_id"},
		{"gitlab.com without tenant", func(c *identity.IssuerConfig) { c.Issuer = "https://gitlab.com" }, "namespace_id"},
		{"GitHub with tenant", func(c *identity.IssuerConfig) {
			c.Issuer, c.Tenant = "https://token.actions.githubusercontent.com", map[string]string{"repository_owner_id": "1"}
		}, ""},
		{"jwks_file without file", func(c *identity.IssuerConfig) { c.Keys.Source = identity.SourceJWKSFile }, "keys.file"},
		{"jwks_url plain http", func(c *identity.IssuerConfig) {
			c.Keys = identity.KeySource{Source: identity.SourceJWKSURL, URL: "http://x.example/jwks"}
		}, "keys.url"},
		{"unknown source", func(c *identity.IssuerConfig) { c.Keys.Source = "ldap" }, "keys.source"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := good
			c.mod(&cfg)
			_, err := identity.NewVerifier([]identity.IssuerConfig{cfg}, identity.Options{})
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}
