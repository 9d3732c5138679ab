package upstream

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Kinds of credential.
const (
	KindKeyPair  = "keypair"
	KindPAT      = "pat"
	KindPassword = "password"
)

// Authenticator values a credential logs in with.
const (
	AuthKeyPair  = "SNOWFLAKE_JWT"
	AuthPAT      = "PROGRAMMATIC_ACCESS_TOKEN"
	AuthPassword = "SNOWFLAKE"
)

// DefaultJWTLifetime is exp - iat of a minted key-pair JWT, as gosnowflake's
// default jwtTimeout.
const DefaultJWTLifetime = 60 * time.Second

// MaxJWTLifetime is the longest key-pair JWT Snowflake accepts.
const MaxJWTLifetime = time.Hour

// jwtNotBefore is the fixed nbf gosnowflake writes (2015-10-10 12:00 UTC).
var jwtNotBefore = time.Date(2015, 10, 10, 12, 0, 0, 0, time.UTC)

// CredentialConfig is the gateway's credential for one Snowflake account.
type CredentialConfig struct {
	// Type is keypair, pat or password.
	Type string `yaml:"type"`
	// User is the default Snowflake login name; a rule may name another
	// user registered with the same key.
	User string `yaml:"user"`
	// PrivateKeyFile holds an unencrypted PKCS#8 (or PKCS#1) RSA key in PEM.
	PrivateKeyFile string `yaml:"private_key_file"`
	// TokenFile holds a programmatic access token.
	TokenFile string `yaml:"token_file"`
	// PasswordFile holds a password.
	PasswordFile string `yaml:"password_file"`
	// JWTLifetime is exp - iat of minted JWTs; default 60s, at most 1h.
	JWTLifetime time.Duration `yaml:"jwt_lifetime"`
}

// Credential is a loaded gateway credential. Its String and Format never
// show secrets.
type Credential struct {
	// Kind is keypair, pat or password.
	Kind string
	// User is the default login name.
	User string

	key         *rsa.PrivateKey
	fingerprint string // SHA256:<base64>
	secret      Secret // PAT or password
	lifetime    time.Duration
}

// LoadCredential reads the credential's secret file (see ReadSecretFile
// for the permission rules) and prepares it.
func LoadCredential(c CredentialConfig) (*Credential, error) {
	if strings.TrimSpace(c.User) == "" {
		return nil, fmt.Errorf("credential: user is required")
	}
	cr := &Credential{Kind: c.Type, User: c.User, lifetime: c.JWTLifetime}
	switch c.Type {
	case KindKeyPair:
		if c.PrivateKeyFile == "" {
			return nil, fmt.Errorf("credential %s: private_key_file is required for type keypair", c.User)
		}
		switch {
		case cr.lifetime == 0:
			cr.lifetime = DefaultJWTLifetime
		case cr.lifetime < 0 || cr.lifetime > MaxJWTLifetime:
			return nil, fmt.Errorf("credential %s: jwt_lifetime %s is outside 0..%s", c.User, cr.lifetime, MaxJWTLifetime)
		}
		s, err := ReadSecretFile(c.PrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("credential %s: %w", c.User, err)
		}
		key, err := ParsePrivateKey([]byte(s.Reveal()))
		if err != nil {
			return nil, fmt.Errorf("credential %s: private key %s: %w", c.User, c.PrivateKeyFile, err)
		}
		fp, err := Fingerprint(&key.PublicKey)
		if err != nil {
			return nil, fmt.Errorf("credential %s: %w", c.User, err)
		}
		cr.key, cr.fingerprint = key, fp
	case KindPAT, KindPassword:
		file := c.TokenFile
		if c.Type == KindPassword {
			file = c.PasswordFile
		}
		if file == "" {
			return nil, fmt.Errorf("credential %s: %s needs %s", c.User, c.Type, map[string]string{KindPAT: "token_file", KindPassword: "password_file"}[c.Type])
		}
		s, err := ReadSecretFile(file)
		if err != nil {
			return nil, fmt.Errorf("credential %s: %w", c.User, err)
		}
		cr.secret = s
	default:
		return nil, fmt.Errorf("credential %s: type %q is not keypair, pat or password", c.User, c.Type)
	}
	return cr, nil
}

// NewKeyPairCredential makes a key-pair credential from a key in memory.
func NewKeyPairCredential(user string, key *rsa.PrivateKey, lifetime time.Duration) (*Credential, error) {
	if lifetime == 0 {
		lifetime = DefaultJWTLifetime
	}
	if lifetime < 0 || lifetime > MaxJWTLifetime {
		return nil, fmt.Errorf("jwt lifetime %s is outside 0..%s", lifetime, MaxJWTLifetime)
	}
	fp, err := Fingerprint(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	return &Credential{Kind: KindKeyPair, User: user, key: key, fingerprint: fp, lifetime: lifetime}, nil
}

// ParsePrivateKey parses an unencrypted RSA private key in PEM (PKCS#8
// "PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY"). Errors never include key
// material.
func ParsePrivateKey(pemBytes []byte) (*rsa.PrivateKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, fmt.Errorf("no PEM block found")
	}
	switch block.Type {
	case "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("the key is encrypted; store it unencrypted in a file only the gateway can read (or a systemd encrypted credential)")
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#8 key: invalid key data")
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("key is %T, Snowflake key-pair login needs RSA", k)
		}
		return rk, nil
	case "RSA PRIVATE KEY":
		if _, encrypted := block.Headers["DEK-Info"]; encrypted {
			return nil, fmt.Errorf("the key is encrypted; store it unencrypted")
		}
		k, err := x509.ParsePKCS1PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse PKCS#1 key: invalid key data")
		}
		return k, nil
	}
	return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
}

// Fingerprint is Snowflake's RSA_PUBLIC_KEY_FP of a public key: "SHA256:"
// and the padded standard base64 of the SHA-256 of its SPKI DER.
func Fingerprint(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "SHA256:" + base64.StdEncoding.EncodeToString(sum[:]), nil
}

// Fingerprint returns the key-pair credential's public key fingerprint
// ("" for other kinds).
func (c *Credential) Fingerprint() string { return c.fingerprint }

// JWTAccountName is the account as key-pair JWTs name it, by gosnowflake's
// rules: for a host containing ".global." the last "-…" segment of the
// account is dropped first; then the account is cut at the first "." and
// upper-cased. Configure the ORGNAME-ACCOUNTNAME form (or the locator): a
// dotted "org.account" would wrongly become "ORG".
func JWTAccountName(account, host string) string {
	if i := strings.LastIndex(account, "-"); i > 0 && strings.Contains(strings.ToLower(host), ".global.") {
		account = account[:i]
	}
	if i := strings.Index(account, "."); i > 0 {
		account = account[:i]
	}
	return strings.ToUpper(account)
}

// MintJWT mints the RS256 key-pair JWT for logging in to account (reached
// at host) as user (the credential's User when empty), issued at now.
// Mint right before each login attempt and never cache the result:
// Snowflake refuses a JWT presented long after its iat.
func (c *Credential) MintJWT(account, host, user string, now time.Time) (Secret, error) {
	if c.Kind != KindKeyPair || c.key == nil {
		return Secret{}, fmt.Errorf("mint JWT: credential %s is %s, not keypair", c.User, c.Kind)
	}
	if user == "" {
		user = c.User
	}
	acct := JWTAccountName(account, host)
	if acct == "" || strings.TrimSpace(user) == "" {
		return Secret{}, fmt.Errorf("mint JWT: account and user are required")
	}
	sub := acct + "." + strings.ToUpper(user)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: c.key}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return Secret{}, fmt.Errorf("mint JWT: signer: %w", err)
	}
	iat := now.UTC().Truncate(time.Second)
	claims := struct {
		Issuer    string `json:"iss"`
		Subject   string `json:"sub"`
		IssuedAt  int64  `json:"iat"`
		NotBefore int64  `json:"nbf"`
		Expiry    int64  `json:"exp"`
	}{sub + "." + c.fingerprint, sub, iat.Unix(), jwtNotBefore.Unix(), iat.Add(c.lifetime).Unix()}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return Secret{}, fmt.Errorf("mint JWT: sign: %w", err)
	}
	return NewSecret(raw), nil
}

// Login is what a credential puts into a login request's data: the
// AUTHENTICATOR, LOGIN_NAME and either TOKEN or PASSWORD fields.
type Login struct {
	// Authenticator is SNOWFLAKE_JWT, PROGRAMMATIC_ACCESS_TOKEN or SNOWFLAKE.
	Authenticator string
	// LoginName is the Snowflake user.
	LoginName string
	// Token is the minted JWT or the PAT (empty for a password).
	Token Secret
	// Password is the password (empty otherwise).
	Password Secret
}

// Login returns the login fields for account at host as user (the
// credential's User when empty). A key-pair JWT is minted for this call, so
// call Login again for every attempt.
func (c *Credential) Login(account, host, user string, now time.Time) (Login, error) {
	if user == "" {
		user = c.User
	}
	switch c.Kind {
	case KindKeyPair:
		tok, err := c.MintJWT(account, host, user, now)
		if err != nil {
			return Login{}, err
		}
		return Login{Authenticator: AuthKeyPair, LoginName: user, Token: tok}, nil
	case KindPAT:
		return Login{Authenticator: AuthPAT, LoginName: user, Token: c.secret}, nil
	case KindPassword:
		return Login{Authenticator: AuthPassword, LoginName: user, Password: c.secret}, nil
	}
	return Login{}, fmt.Errorf("credential %s: unknown kind %q", c.User, c.Kind)
}

// String describes the credential without its secret.
func (c *Credential) String() string {
	if c.Kind == KindKeyPair {
		return fmt.Sprintf("%s credential for %s (%s)", c.Kind, c.User, c.fingerprint)
	}
	return fmt.Sprintf("%s credential for %s", c.Kind, c.User)
}

// Format prints String for every verb, so %v, %+v and %#v never reach the
// key or secret fields.
func (c *Credential) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(c.String())) }
