package upstream_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/upstream"
)

var (
	keyOnce sync.Once
	testKey *rsa.PrivateKey
)

func rsaKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	keyOnce.Do(func() {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
		testKey = k
	})
	return testKey
}

func pkcs8PEM(t testing.TB, key any) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
}

func TestJWTAccountName(t *testing.T) {
	cases := []struct{ account, host, want string }{
		{"myorg-myacct", "myorg-myacct.snowflakecomputing.com", "MYORG-MYACCT"},
		{"xy12345", "xy12345.snowflakecomputing.com", "XY12345"},
		{"xy12345.eu-west-1", "xy12345.eu-west-1.snowflakecomputing.com", "XY12345"},
		{"xy12345.eu-west-1.privatelink", "xy12345.eu-west-1.privatelink.snowflakecomputing.com", "XY12345"},
		{"xy12345.us-east-2.aws", "", "XY12345"},
		{"myorg.myacct", "", "MYORG"}, // gosnowflake's rule; documented as a misconfiguration
		{"xy12345-abcdefg", "xy12345-abcdefg.global.snowflakecomputing.com", "XY12345"},
		{"myorg-myacct", "myorg-myacct.GLOBAL.snowflakecomputing.com", "MYORG"},
		{"MyOrg-MyAcct", "", "MYORG-MYACCT"},
		{"acme_prod", "acme_prod.snowflakecomputing.com", "ACME_PROD"},
	}
	for _, c := range cases {
		if got := upstream.JWTAccountName(c.account, c.host); got != c.want {
			t.Errorf("JWTAccountName(%q, %q) = %q, want %q", c.account, c.host, got, c.want)
		}
	}
}

func TestMintJWTClaims(t *testing.T) {
	key := rsaKey(t)
	cred, err := upstream.NewKeyPairCredential("gateway_svc", key, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The fingerprint must equal the emulator's (independent) computation,
	// which is Snowflake's RSA_PUBLIC_KEY_FP.
	fp, err := emulator.PublicKeyFingerprint(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	if cred.Fingerprint() != fp || !strings.HasPrefix(fp, "SHA256:") || !strings.HasSuffix(fp, "=") {
		t.Fatalf("fingerprint %q, want %q", cred.Fingerprint(), fp)
	}
	now := time.Date(2026, 11, 26, 23, 0, 0, 700_000_000, time.UTC)
	cases := []struct {
		account, host, user string
		sub                 string
	}{
		{"myorg-myacct", "myorg-myacct.snowflakecomputing.com", "", "MYORG-MYACCT.GATEWAY_SVC"},
		{"xy12345.eu-west-1.privatelink", "", "agent_ro", "XY12345.AGENT_RO"},
		{"xy12345-abcdefg", "xy12345-abcdefg.global.snowflakecomputing.com", "Svc.User", "XY12345.SVC.USER"},
	}
	for _, c := range cases {
		tok, err := cred.MintJWT(c.account, c.host, c.user, now)
		if err != nil {
			t.Fatal(err)
		}
		parsed, err := jwt.ParseSigned(tok.Reveal(), []jose.SignatureAlgorithm{jose.RS256})
		if err != nil {
			t.Fatalf("parse minted JWT: %v", err)
		}
		h := parsed.Headers[0]
		if h.Algorithm != "RS256" || h.ExtraHeaders["typ"] != "JWT" {
			t.Errorf("header = %+v", h)
		}
		var claims map[string]any
		if err := parsed.Claims(&key.PublicKey, &claims); err != nil {
			t.Fatalf("verify minted JWT: %v", err)
		}
		want := map[string]any{
			"iss": c.sub + "." + fp, "sub": c.sub,
			"iat": float64(now.Unix()), "exp": float64(now.Unix() + 60), "nbf": float64(1444478400),
		}
		if fmt.Sprint(claims) != fmt.Sprint(want) {
			t.Errorf("claims\n got %v\nwant %v", claims, want)
		}
	}
	// Only key-pair credentials mint.
	dir := t.TempDir()
	pat := writeFile(t, dir, "pat", secretValue, 0o600)
	pc, err := upstream.LoadCredential(upstream.CredentialConfig{Type: upstream.KindPAT, User: "svc", TokenFile: pat})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := pc.MintJWT("acme", "", "", now); err == nil {
		t.Fatal("a PAT credential minted a JWT")
	}
}

func TestLoadCredential(t *testing.T) {
	dir := t.TempDir()
	keyFile := writeFile(t, dir, "key.p8", pkcs8PEM(t, rsaKey(t)), 0o600)
	pkcs1 := writeFile(t, dir, "key.pem", string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey(t))})), 0o600)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecFile := writeFile(t, dir, "ec.p8", pkcs8PEM(t, ec), 0o600)
	encFile := writeFile(t, dir, "enc.p8", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n", 0o600)
	loose := writeFile(t, dir, "loose.p8", pkcs8PEM(t, rsaKey(t)), 0o644)
	patFile := writeFile(t, dir, "pat", secretValue, 0o600)
	pwFile := writeFile(t, dir, "pw", "hunter2-"+secretValue, 0o600)
	now := time.Now()
	cases := []struct {
		name string
		cfg  upstream.CredentialConfig
		want string // error substring; "" means success
		auth string
	}{
		{"keypair PKCS#8", upstream.CredentialConfig{Type: "keypair", User: "svc", PrivateKeyFile: keyFile}, "", upstream.AuthKeyPair},
		{"keypair PKCS#1", upstream.CredentialConfig{Type: "keypair", User: "svc", PrivateKeyFile: pkcs1}, "", upstream.AuthKeyPair},
		{"pat", upstream.CredentialConfig{Type: "pat", User: "svc", TokenFile: patFile}, "", upstream.AuthPAT},
		{"password", upstream.CredentialConfig{Type: "password", User: "svc", PasswordFile: pwFile}, "", upstream.AuthPassword},
		{"ECDSA key", upstream.CredentialConfig{Type: "keypair", User: "svc", PrivateKeyFile: ecFile}, "needs RSA", ""},
		{"encrypted key", upstream.CredentialConfig{Type: "keypair", User: "svc", PrivateKeyFile: encFile}, "encrypted", ""},
		{"world-readable key", upstream.CredentialConfig{Type: "keypair", User: "svc", PrivateKeyFile: loose}, "mode 0644", ""},
		{"not a key", upstream.CredentialConfig{Type: "keypair", User: "svc", PrivateKeyFile: patFile}, "no PEM block", ""},
		{"no user", upstream.CredentialConfig{Type: "pat", TokenFile: patFile}, "user is required", ""},
		{"pat without file", upstream.CredentialConfig{Type: "pat", User: "svc"}, "token_file", ""},
		{"unknown type", upstream.CredentialConfig{Type: "oauth", User: "svc"}, "not keypair, pat or password", ""},
		{"lifetime too long", upstream.CredentialConfig{Type: "keypair", User: "svc", PrivateKeyFile: keyFile, JWTLifetime: 2 * time.Hour}, "jwt_lifetime", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cred, err := upstream.LoadCredential(c.cfg)
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("error %v, want one containing %q", err, c.want)
				}
				if strings.Contains(err.Error(), "Very-Secret") || strings.Contains(err.Error(), "PRIVATE KEY-----") {
					t.Errorf("error leaks secret material: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			l, err := cred.Login("acme", "acme.snowflakecomputing.com", "", now)
			if err != nil {
				t.Fatal(err)
			}
			if l.Authenticator != c.auth || l.LoginName != "svc" || (l.Token.IsZero() == l.Password.IsZero()) {
				t.Errorf("login = %+v", l)
			}
			for _, out := range []string{fmt.Sprint(cred), fmt.Sprintf("%+v", cred), fmt.Sprintf("%#v", cred), fmt.Sprintf("%+v", l)} {
				if strings.Contains(out, "Very-Secret") || strings.Contains(out, "PRIVATE") || strings.Contains(out, "eyJ") {
					t.Errorf("output leaks a secret: %s", out)
				}
			}
		})
	}
}

// emulatorLogin posts a raw login request and returns success and the code.
func emulatorLogin(t *testing.T, inst *emulatortest.Instance, data map[string]any) (bool, string) {
	t.Helper()
	body, err := json.Marshal(map[string]any{"data": data})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, inst.URL+"/session/v1/login-request", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/snowflake")
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: inst.ClientTLS}}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("login request: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var r struct {
		Success bool   `json:"success"`
		Code    string `json:"code"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("login response %s: %v", b, err)
	}
	return r.Success, r.Code
}

// TestLoginAgainstEmulator logs in to the emulator with every credential
// kind. For minted JWTs the emulator checks RS256 against the registered
// key, iss/sub with the fingerprint, and the lifetime, as Snowflake does.
func TestLoginAgainstEmulator(t *testing.T) {
	key := rsaKey(t)
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	inst := emulatortest.Start(t, emulator.Config{
		Account:    "myorg-myacct",
		PublicKeys: map[string]crypto.PublicKey{"gateway_svc": &key.PublicKey, "agent_ro": &key.PublicKey},
		PATs:       map[string]string{"pat_svc": secretValue},
		Users:      map[string]string{"pw_svc": "pw-" + secretValue},
		Dir:        t.TempDir(),
	})
	dir := t.TempDir()
	cred, err := upstream.LoadCredential(upstream.CredentialConfig{
		Type: upstream.KindKeyPair, User: "gateway_svc",
		PrivateKeyFile: writeFile(t, dir, "key.p8", pkcs8PEM(t, key), 0o600),
	})
	if err != nil {
		t.Fatal(err)
	}
	wrong, err := upstream.NewKeyPairCredential("gateway_svc", otherKey, 0)
	if err != nil {
		t.Fatal(err)
	}
	host := "myorg-myacct.snowflakecomputing.com"
	load := func(cfg upstream.CredentialConfig) *upstream.Credential {
		c, err := upstream.LoadCredential(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	patCred := load(upstream.CredentialConfig{Type: upstream.KindPAT, User: "pat_svc", TokenFile: writeFile(t, dir, "pat", secretValue+"\n", 0o600)})
	badPAT := load(upstream.CredentialConfig{Type: upstream.KindPAT, User: "pat_svc", TokenFile: writeFile(t, dir, "badpat", "nope", 0o600)})
	pwCred := load(upstream.CredentialConfig{Type: upstream.KindPassword, User: "pw_svc", PasswordFile: writeFile(t, dir, "pw", "pw-"+secretValue, 0o600)})
	cases := []struct {
		name    string
		cred    *upstream.Credential
		account string
		user    string
		at      time.Time
		ok      bool
	}{
		{"default user", cred, "myorg-myacct", "", time.Now(), true},
		{"rule's user, same key", cred, "myorg-myacct", "agent_ro", time.Now(), true},
		{"lower/upper case account", cred, "MyOrg-MyAcct.eu-west-1", "", time.Now(), true},
		{"unknown user", cred, "myorg-myacct", "intruder", time.Now(), false},
		{"wrong key", wrong, "myorg-myacct", "", time.Now(), false},
		{"other account", cred, "otherorg-acct", "", time.Now(), false},
		{"minted long ago (expired)", cred, "myorg-myacct", "", time.Now().Add(-10 * time.Minute), false},
		{"programmatic access token", patCred, "myorg-myacct", "", time.Now(), true},
		{"wrong programmatic access token", badPAT, "myorg-myacct", "", time.Now(), false},
		{"password", pwCred, "myorg-myacct", "", time.Now(), true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := c.cred.Login(c.account, host, c.user, c.at)
			if err != nil {
				t.Fatal(err)
			}
			data := map[string]any{
				"CLIENT_APP_ID": "snowgate", "ACCOUNT_NAME": "myorg-myacct",
				"AUTHENTICATOR": l.Authenticator, "LOGIN_NAME": l.LoginName,
			}
			if !l.Token.IsZero() {
				data["TOKEN"] = l.Token.Reveal()
			}
			if !l.Password.IsZero() {
				data["PASSWORD"] = l.Password.Reveal()
			}
			ok, code := emulatorLogin(t, inst, data)
			if ok != c.ok {
				t.Fatalf("login success = %v (code %s), want %v", ok, code, c.ok)
			}
		})
	}
}
