// Package oidctest runs a local OIDC issuer for tests: discovery and JWKS
// served over real TLS on 127.0.0.1, and GitHub- and GitLab-shaped workload
// tokens signed with go-jose v4.
//
// The issuer can rotate its key, go down (answer 503) and count its JWKS
// fetches, so tests can prove key-refresh behaviour of a verifier.
package oidctest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Paths the issuer serves.
const (
	DiscoveryPath = "/.well-known/openid-configuration"
	JWKSPath      = "/.well-known/jwks"
)

// Issuer is a running test OIDC issuer.
type Issuer struct {
	// URL is the issuer URL (the iss claim), https://127.0.0.1:PORT.
	URL string
	// Client trusts the issuer's TLS certificate; hand it to the verifier.
	Client *http.Client
	// CAPool holds the issuer's certificate.
	CAPool *x509.CertPool

	srv         *httptest.Server
	mu          sync.Mutex
	key         *rsa.PrivateKey
	kid         string
	published   []jose.JSONWebKey // public keys in the JWKS
	down        atomic.Bool
	jwksFetches atomic.Int64
}

// Start runs an issuer on 127.0.0.1 over TLS until the test ends.
func Start(tb testing.TB) *Issuer {
	tb.Helper()
	is := &Issuer{}
	if err := is.Rotate(false); err != nil {
		tb.Fatalf("oidctest: %v", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc(DiscoveryPath, is.serveDiscovery)
	mux.HandleFunc(JWKSPath, is.serveJWKS)
	is.srv = httptest.NewTLSServer(mux)
	is.URL = is.srv.URL
	is.Client = is.srv.Client()
	is.CAPool = x509.NewCertPool()
	is.CAPool.AddCert(is.srv.Certificate())
	tb.Cleanup(is.srv.Close)
	return is
}

// Rotate generates a new RSA 2048 signing key with a new kid (its RFC 7638
// thumbprint). With keepOld the previous public key stays in the JWKS;
// otherwise the JWKS holds only the new key.
func (is *Issuer) Rotate(keepOld bool) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generate issuer key: %w", err)
	}
	pub := jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(jose.RS256), Use: "sig"}
	tp, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return fmt.Errorf("thumbprint issuer key: %w", err)
	}
	pub.KeyID = base64.RawURLEncoding.EncodeToString(tp)
	is.mu.Lock()
	defer is.mu.Unlock()
	is.key, is.kid = key, pub.KeyID
	if keepOld {
		is.published = append(is.published, pub)
	} else {
		is.published = []jose.JSONWebKey{pub}
	}
	return nil
}

// KeyID is the kid of the current signing key.
func (is *Issuer) KeyID() string {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.kid
}

// PrivateKey is the current signing key (for crafting hostile tokens).
func (is *Issuer) PrivateKey() *rsa.PrivateKey {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.key
}

// SetDown makes discovery and JWKS answer 503 (true) or serve again (false).
func (is *Issuer) SetDown(down bool) { is.down.Store(down) }

// JWKSFetches is how many JWKS requests the issuer has answered or refused.
func (is *Issuer) JWKSFetches() int64 { return is.jwksFetches.Load() }

// JWKS returns the current public key set as JSON.
func (is *Issuer) JWKS() []byte {
	is.mu.Lock()
	set := jose.JSONWebKeySet{Keys: append([]jose.JSONWebKey(nil), is.published...)}
	is.mu.Unlock()
	b, err := json.Marshal(set)
	if err != nil {
		panic(fmt.Sprintf("oidctest: marshal JWKS: %v", err)) // cannot happen for RSA keys
	}
	return b
}

// WriteJWKSFile writes the JWKS to a file in a temporary directory of the
// test (an air-gapped jwks_file) and returns its path.
func (is *Issuer) WriteJWKSFile(tb testing.TB) string {
	tb.Helper()
	p := filepath.Join(tb.TempDir(), "jwks.json")
	if err := os.WriteFile(p, is.JWKS(), 0o600); err != nil {
		tb.Fatalf("oidctest: write JWKS: %v", err)
	}
	return p
}

func (is *Issuer) serveDiscovery(w http.ResponseWriter, r *http.Request) {
	if is.down.Load() {
		http.Error(w, "issuer down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"issuer":                                is.URL,
		"jwks_uri":                              is.URL + JWKSPath,
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"response_types_supported":              []string{"id_token"},
		"subject_types_supported":               []string{"public", "pairwise"},
		"claims_supported":                      []string{"sub", "aud", "exp", "iat", "iss", "jti", "nbf"},
	})
}

func (is *Issuer) serveJWKS(w http.ResponseWriter, r *http.Request) {
	is.jwksFetches.Add(1)
	if is.down.Load() {
		http.Error(w, "issuer down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(is.JWKS())
}

// Token describes a token to mint. Zero times get defaults from Now.
type Token struct {
	// Audience is the aud claim; empty means no aud claim.
	Audience []string
	// Now is the reference time; zero means time.Now().
	Now time.Time
	// IssuedAt, NotBefore and Expiry override the defaults (iat = Now,
	// nbf = Now - 10 min as GitHub does, exp = Now + Lifetime).
	IssuedAt, NotBefore, Expiry time.Time
	// Lifetime is exp - iat when Expiry is zero; default 5 min.
	Lifetime time.Duration
	// Issuer overrides the iss claim (default: the issuer's URL).
	Issuer string
	// Subject is the sub claim.
	Subject string
	// ID is the jti claim; empty means a random one.
	ID string
	// Claims are extra claims, merged over the registered ones.
	Claims map[string]any
	// KeyID overrides the kid header (default: the current key's kid).
	KeyID string
}

// Sign mints a signed RS256 JWT for t with the current key.
func (is *Issuer) Sign(tb testing.TB, t Token) string {
	tb.Helper()
	is.mu.Lock()
	key, kid := is.key, is.kid
	is.mu.Unlock()
	if t.KeyID != "" {
		kid = t.KeyID
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		tb.Fatalf("oidctest: signer: %v", err)
	}
	raw, err := jwt.Signed(signer).Claims(is.claims(t)).Serialize()
	if err != nil {
		tb.Fatalf("oidctest: sign: %v", err)
	}
	return raw
}

// Claims returns the claim set Sign would mint for t, for tests that sign
// by other means.
func (is *Issuer) Claims(t Token) map[string]any { return is.claims(t) }

func (is *Issuer) claims(t Token) map[string]any {
	now := t.Now
	if now.IsZero() {
		now = time.Now()
	}
	iat, nbf, exp := t.IssuedAt, t.NotBefore, t.Expiry
	if iat.IsZero() {
		iat = now
	}
	if nbf.IsZero() {
		nbf = now.Add(-10 * time.Minute)
	}
	if exp.IsZero() {
		life := t.Lifetime
		if life == 0 {
			life = 5 * time.Minute
		}
		exp = iat.Add(life)
	}
	iss := t.Issuer
	if iss == "" {
		iss = is.URL
	}
	id := t.ID
	if id == "" {
		var b [16]byte
		_, _ = rand.Read(b[:])
		id = base64.RawURLEncoding.EncodeToString(b[:])
	}
	c := map[string]any{
		"iss": iss, "jti": id,
		"iat": iat.Unix(), "nbf": nbf.Unix(), "exp": exp.Unix(),
	}
	if t.Subject != "" {
		c["sub"] = t.Subject
	}
	switch len(t.Audience) {
	case 0:
	case 1:
		c["aud"] = t.Audience[0]
	default:
		c["aud"] = t.Audience
	}
	maps.Copy(c, t.Claims)
	return c
}

// GitHub returns a GitHub Actions-shaped token description for a push to
// refs/heads/main of owner/repo, with numeric IDs as strings as GitHub
// sends them.
func GitHub(audience, owner, ownerID, repo, repoID string) Token {
	full := owner + "/" + repo
	return Token{
		Audience: []string{audience},
		Subject:  "repo:" + full + ":ref:refs/heads/main",
		Claims: map[string]any{
			"ref": "refs/heads/main", "ref_type": "branch", "sha": "5f3b9c0a1d2e4f60718293a4b5c6d7e8f9012345",
			"repository": full, "repository_id": repoID,
			"repository_owner": owner, "repository_owner_id": ownerID,
			"repository_visibility": "private",
			"run_id":                "9876543210", "run_number": "42", "run_attempt": "1",
			"actor": "octocat", "actor_id": "583231",
			"workflow": "agent", "event_name": "push",
			"job_workflow_ref":   full + "/.github/workflows/agent.yml@refs/heads/main",
			"runner_environment": "github-hosted",
		},
	}
}

// GitLab returns a GitLab CI-shaped token description for a protected
// branch pipeline of group/project. ref_protected is the string "true", and
// namespace_id/project_id are strings, as GitLab sends them.
func GitLab(audience, group, namespaceID, project, projectID string) Token {
	path := group + "/" + project
	return Token{
		Audience: []string{audience},
		Subject:  "project_path:" + path + ":ref_type:branch:ref:main",
		Lifetime: time.Hour, // GitLab: exp = job timeout
		Claims: map[string]any{
			"namespace_id": namespaceID, "namespace_path": group,
			"project_id": projectID, "project_path": path,
			"user_id": "17", "user_login": "dev", "user_email": "dev@example.com",
			"pipeline_id": "1234", "pipeline_source": "push",
			"job_id": "5678", "ref": "main", "ref_type": "branch", "ref_protected": "true",
			"runner_id": 3, "runner_environment": "self-hosted",
			"sha": "0123456789abcdef0123456789abcdef01234567",
		},
	}
}
