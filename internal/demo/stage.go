package demo

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Names of the demo's world. demo.snowflakecomputing.com resolves, through
// the gateway's DNS, to a documentation address nothing answers on: only the
// redirect makes it reachable.
const (
	demoAccount   = "demo"
	demoHost      = "demo.snowflakecomputing.com"
	demoAddr      = "192.0.2.10"
	demoIssuer    = "https://token.demo.snowgate.invalid"
	demoAudience  = "snowgate"
	demoRepo      = "snowgate/demo-agent"
	serviceUser   = "SNOWGATE_SVC"
	adminUser     = "PLATFORM_ADMIN"
	ruleName      = "demo-agents"
	ruleRole      = "AGENT_READER"
	ruleWarehouse = "AGENT_WH"
	reviewer      = "alice@demo"
	// proxyAddr is the gateway's address inside the demo's namespace.
	proxyAddr = "169.254.77.1"
	adminAddr = "127.0.0.1:9464"
)

// stage is the demo's state directory and the secrets made for it.
type stage struct {
	dir string
	// svcKey is the gateway's key-pair credential for the service user;
	// the emulator knows its public half.
	svcKey *rsa.PrivateKey
	// issuerKey signs workload tokens; its public half is in the JWKS file
	// the gateway trusts (an air-gapped runner's key source).
	issuerKey *ecdsa.PrivateKey
	issuerKID string
	// adminPassword is the emulator's platform admin, used to seed data.
	adminPassword string
	// reviewerToken authenticates the demo's reviewer on the admin API.
	reviewerToken string
}

func (s *stage) path(name string) string { return filepath.Join(s.dir, name) }

// newStage creates the state directory's secrets and files.
func newStage(dir string) (*stage, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("state directory: %w", err)
	}
	s := &stage{dir: dir}
	var err error
	if s.svcKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		return nil, fmt.Errorf("service key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(s.svcKey)
	if err != nil {
		return nil, fmt.Errorf("service key: %w", err)
	}
	if err := writeFile(s.path("service-user.p8"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})); err != nil {
		return nil, err
	}
	if s.issuerKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, fmt.Errorf("issuer key: %w", err)
	}
	s.issuerKID = "demo-" + randomHex(4)
	jwks := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &s.issuerKey.PublicKey, KeyID: s.issuerKID, Algorithm: string(jose.ES256), Use: "sig"}}}
	b, err := json.MarshalIndent(jwks, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("issuer JWKS: %w", err)
	}
	if err := writeFile(s.path("issuer-jwks.json"), b); err != nil {
		return nil, err
	}
	s.adminPassword = "admin-" + randomHex(12)
	s.reviewerToken = "reviewer-" + randomHex(16)
	if err := writeFile(s.path("reviewer.token"), []byte(s.reviewerToken+"\n")); err != nil {
		return nil, err
	}
	return s, nil
}

// mintToken signs a GitHub-Actions-shaped workload token for the demo
// agent, valid for five minutes as GitHub's are.
func (s *stage) mintToken() (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.issuerKey},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", s.issuerKID))
	if err != nil {
		return "", fmt.Errorf("token signer: %w", err)
	}
	now := time.Now()
	claims := map[string]any{
		"iss":              demoIssuer,
		"aud":              demoAudience,
		"sub":              "repo:" + demoRepo + ":ref:refs/heads/main",
		"repository":       demoRepo,
		"repository_owner": "snowgate",
		"ref":              "refs/heads/main",
		"workflow":         "agent",
		"actor":            "coding-agent",
		"run_id":           "1",
		"jti":              randomHex(8),
		"iat":              now.Unix(),
		"nbf":              now.Add(-5 * time.Second).Unix(),
		"exp":              now.Add(5 * time.Minute).Unix(),
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return tok, nil
}

func writeFile(path string, b []byte) error {
	if err := os.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
