package identity

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Unverified is what the size and format checks learn from a token before
// any cryptography: nothing in it is trusted.
type Unverified struct {
	// Algorithm and KeyID are the alg and kid headers.
	Algorithm, KeyID string
	// Issuer is the iss claim.
	Issuer string
	// Claims is the decoded payload (numbers as json.Number).
	Claims map[string]any
}

// ParseUnverified checks a token's size and shape without verifying it:
// at most MaxTokenSize bytes, a compact JWS of three base64url parts, a JSON
// header with an asymmetric alg, a JSON object payload with a string iss,
// and a signature. JWE, JSON serialisation, none and HMAC are refused here.
func ParseUnverified(raw string) (*Unverified, error) {
	if len(raw) > MaxTokenSize {
		return nil, refuse(ReasonOversized, "", "%d bytes, limit %d", len(raw), MaxTokenSize)
	}
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return nil, refuse(ReasonMalformed, "", "%d parts, want a compact JWS of 3 (JWE and JSON serialisation are not accepted)", len(parts))
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return nil, &Error{Reason: ReasonMalformed, Detail: "header is not base64url", Err: err}
	}
	var hdr map[string]any
	if err := json.Unmarshal(hb, &hdr); err != nil || hdr == nil {
		return nil, refuse(ReasonMalformed, "", "header is not a JSON object")
	}
	alg, _ := hdr["alg"].(string)
	switch {
	case alg == "" || strings.EqualFold(alg, "none"):
		return nil, refuse(ReasonAlgNone, "", "unsigned token (alg %q)", truncate(alg, 16))
	case strings.HasPrefix(strings.ToUpper(alg), "HS"):
		return nil, refuse(ReasonAlgSymmetric, "", "symmetric algorithm %s is never accepted", truncate(alg, 16))
	}
	if _, ok := hdr["enc"]; ok {
		return nil, refuse(ReasonMalformed, "", "encrypted tokens (JWE) are not accepted")
	}
	if _, ok := hdr["crit"]; ok {
		return nil, refuse(ReasonMalformed, "", "critical header extensions are not supported")
	}
	kid, _ := hdr["kid"].(string)
	if parts[2] == "" {
		return nil, refuse(ReasonMalformed, "", "empty signature")
	}
	if _, err := base64.RawURLEncoding.DecodeString(parts[2]); err != nil {
		return nil, &Error{Reason: ReasonMalformed, Detail: "signature is not base64url", Err: err}
	}
	pb, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, &Error{Reason: ReasonMalformed, Detail: "payload is not base64url", Err: err}
	}
	claims, err := decodeClaims(pb)
	if err != nil {
		return nil, &Error{Reason: ReasonMalformed, Detail: "payload", Err: err}
	}
	iss, _ := claims["iss"].(string)
	if iss == "" {
		return nil, refuse(ReasonMalformed, "", "no iss claim")
	}
	return &Unverified{Algorithm: alg, KeyID: kid, Issuer: iss, Claims: claims}, nil
}

// decodeClaims decodes a JSON object, keeping numbers exact.
func decodeClaims(b []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("decode JSON: %w", err)
	}
	if m == nil {
		return nil, errors.New("not a JSON object")
	}
	if dec.More() {
		return nil, errors.New("trailing data after JSON object")
	}
	return m, nil
}

// Identity is a verified workload identity.
type Identity struct {
	// IssuerName is the configured issuer's name.
	IssuerName string
	// Issuer, Subject and ID are the iss, sub and jti claims.
	Issuer, Subject, ID string
	// Audience is the aud claim.
	Audience []string
	// IssuedAt and Expiry are iat and exp.
	IssuedAt, Expiry time.Time
	// Claims are all claims of the token (numbers as json.Number).
	Claims map[string]any
	// TokenHash is the SHA-256 of the token, the replay key when there is no jti.
	TokenHash [sha256.Size]byte
	// ContinuationMax is the issuer's continuation window (0: strict).
	ContinuationMax time.Duration
}

// Options configures a Verifier.
type Options struct {
	// HTTPClient fetches discovery documents and keys; default a client
	// with a 15s timeout. Its transport decides which CAs are trusted.
	HTTPClient *http.Client
	// Now is the clock; default time.Now.
	Now func() time.Time
	// Logger receives key-refresh warnings; default slog.Default().
	Logger *slog.Logger
}

// Verifier verifies workload tokens against the configured issuers. It is
// safe for concurrent use.
type Verifier struct {
	byIss  map[string]*issuer
	byName map[string]*issuer
	now    func() time.Time
}

type issuer struct {
	cfg  IssuerConfig
	keys *keySet
	oidc *oidc.IDTokenVerifier
}

// NewVerifier validates the issuer configurations and prepares their key
// sets. It makes no network call: keys are fetched on first use (call
// Prefetch at start to warm them).
func NewVerifier(cfgs []IssuerConfig, opts Options) (*Verifier, error) {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	v := &Verifier{byIss: map[string]*issuer{}, byName: map[string]*issuer{}, now: opts.Now}
	for _, c := range cfgs {
		c, err := c.withDefaults()
		if err != nil {
			return nil, err
		}
		if _, dup := v.byName[c.Name]; dup {
			return nil, fmt.Errorf("issuer name %q is used twice", c.Name)
		}
		if _, dup := v.byIss[c.Issuer]; dup {
			return nil, fmt.Errorf("issuer %s: %s is configured twice", c.Name, c.Issuer)
		}
		ks := &keySet{issuer: c.Name, iss: c.Issuer, src: c.Keys, client: opts.HTTPClient, now: opts.Now, log: opts.Logger}
		if err := ks.loadCache(); err != nil {
			// A broken cache is not fatal: the keys are fetched instead.
			opts.Logger.Warn("identity: ignoring JWKS cache", "issuer", c.Name, "err", err)
		}
		is := &issuer{cfg: c, keys: ks}
		is.oidc = oidc.NewVerifier(c.Issuer, ks, &oidc.Config{
			SkipClientIDCheck:    true, // audiences are intersected below
			SkipExpiryCheck:      true, // exp/nbf/iat are checked below with the issuer's skew
			SupportedSigningAlgs: c.Algorithms,
			Now:                  opts.Now,
		})
		v.byIss[c.Issuer], v.byName[c.Name] = is, is
	}
	return v, nil
}

// Prefetch loads every issuer's keys once, logging failures; verification
// retries later within the refetch rate limit.
func (v *Verifier) Prefetch(ctx context.Context) {
	for _, is := range v.byName {
		is.keys.refresh(ctx, true)
	}
}

// KeyFetches reports how many key loads were attempted for the named
// issuer (for metrics and tests).
func (v *Verifier) KeyFetches(name string) int {
	is, ok := v.byName[name]
	if !ok {
		return 0
	}
	is.keys.mu.RLock()
	defer is.keys.mu.RUnlock()
	return is.keys.fetches
}

// Verify checks a token: size and format, issuer, algorithm, signature
// with that issuer's keys only, audience, exp/nbf/iat with the issuer's
// skew, lifetime and age caps, required claims and the tenant pin. Every
// refusal is an *Error with a Reason.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Identity, error) {
	return v.verify(ctx, raw, false)
}

// VerifyContinuation is Verify without the exp check and the
// max_token_age cap: everything else, the signature with the issuer's
// current or retained keys included, is still checked. It exists for
// workload-identity.md §10: use its result only through
// Admissions.Admit with fresh=false, which admits the token only if this
// gateway admitted it fresh before, from the same binding, within the
// issuer's continuation window.
func (v *Verifier) VerifyContinuation(ctx context.Context, raw string) (*Identity, error) {
	return v.verify(ctx, raw, true)
}

func (v *Verifier) verify(ctx context.Context, raw string, continuation bool) (*Identity, error) {
	u, err := ParseUnverified(raw)
	if err != nil {
		return nil, err
	}
	is, ok := v.byIss[u.Issuer]
	if !ok {
		return nil, refuse(ReasonUnknownIssuer, "", "iss %q is not a configured issuer", truncate(u.Issuer, 200))
	}
	name := is.cfg.Name
	if !slices.Contains(is.cfg.Algorithms, u.Algorithm) {
		return nil, refuse(ReasonAlgNotAllowed, name, "alg %s, allowed %v", truncate(u.Algorithm, 16), is.cfg.Algorithms)
	}
	slot := &errSlot{}
	if _, err := is.oidc.Verify(context.WithValue(ctx, errSlotKey{}, slot), raw); err != nil {
		if slot.err != nil {
			return nil, slot.err
		}
		return nil, &Error{Reason: ReasonMalformed, Issuer: name, Detail: "verify", Err: err}
	}
	// The signature covers the payload ParseUnverified decoded: go-oidc
	// checks the verified payload equals the one it parsed.
	var std jwt.Claims
	if err := json.Unmarshal(mustPayload(raw), &std); err != nil {
		return nil, &Error{Reason: ReasonMalformed, Issuer: name, Detail: "registered claims", Err: err}
	}
	if err := v.checkTimes(is, &std, continuation); err != nil {
		return nil, err
	}
	for _, c := range is.cfg.RequiredClaims {
		if v, ok := scalarClaim(u.Claims, c); !ok || v == "" {
			return nil, refuse(ReasonMissingClaim, name, "required claim %q is missing or not a string or number", c)
		}
	}
	for k, want := range is.cfg.Tenant {
		if v, ok := scalarClaim(u.Claims, k); !ok || v != want {
			return nil, refuse(ReasonTenantMismatch, name, "claim %q does not equal the tenant pin", k)
		}
	}
	return &Identity{
		IssuerName: name, Issuer: std.Issuer, Subject: std.Subject, ID: std.ID,
		Audience: []string(std.Audience), IssuedAt: std.IssuedAt.Time(), Expiry: std.Expiry.Time(),
		Claims: u.Claims, TokenHash: sha256.Sum256([]byte(raw)),
		ContinuationMax: is.cfg.continuationMax(),
	}, nil
}

func (v *Verifier) checkTimes(is *issuer, c *jwt.Claims, continuation bool) error {
	name, cfg := is.cfg.Name, is.cfg
	if c.Expiry == nil {
		return refuse(ReasonMissingClaim, name, "no exp claim")
	}
	if c.IssuedAt == nil {
		return refuse(ReasonMissingClaim, name, "no iat claim")
	}
	now := v.now()
	check := *c
	if continuation {
		check.Expiry = nil
	}
	err := check.ValidateWithLeeway(jwt.Expected{Issuer: cfg.Issuer, AnyAudience: cfg.Audiences, Time: now}, cfg.ClockSkew)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrInvalidAudience):
		return refuse(ReasonWrongAudience, name, "aud %q has none of %q", truncateList(c.Audience), cfg.Audiences)
	case errors.Is(err, jwt.ErrExpired):
		return refuse(ReasonExpired, name, "expired at %s (now %s, skew %s)", c.Expiry.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), cfg.ClockSkew)
	case errors.Is(err, jwt.ErrNotValidYet):
		return refuse(ReasonNotYetValid, name, "not valid before %s (now %s, skew %s)", c.NotBefore.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), cfg.ClockSkew)
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return refuse(ReasonIssuedInFuture, name, "issued at %s (now %s, skew %s)", c.IssuedAt.Time().UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339), cfg.ClockSkew)
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return refuse(ReasonUnknownIssuer, name, "iss differs from %s", cfg.Issuer)
	default:
		return &Error{Reason: ReasonMalformed, Issuer: name, Detail: "claims", Err: err}
	}
	if life := c.Expiry.Time().Sub(c.IssuedAt.Time()); life > cfg.MaxTokenLifetime {
		return refuse(ReasonLifetimeTooLong, name, "exp - iat = %s, limit %s", life, cfg.MaxTokenLifetime)
	}
	if cfg.MaxTokenAge > 0 && !continuation {
		if age := now.Sub(c.IssuedAt.Time()); age > cfg.MaxTokenAge+cfg.ClockSkew {
			return refuse(ReasonTooOld, name, "issued %s ago, limit %s", age.Round(time.Second), cfg.MaxTokenAge)
		}
	}
	return nil
}

func truncateList(a jwt.Audience) []string {
	out := make([]string, 0, min(len(a), 4))
	for i, s := range a {
		if i == 4 {
			break
		}
		out = append(out, truncate(s, 64))
	}
	return out
}

// mustPayload decodes the payload of a token ParseUnverified accepted.
func mustPayload(raw string) []byte {
	_, rest, _ := strings.Cut(raw, ".")
	p, _, _ := strings.Cut(rest, ".")
	b, _ := base64.RawURLEncoding.DecodeString(p)
	return b
}

// scalarClaim is the canonical form of a string or number claim; booleans,
// arrays, objects and null do not count (required claims and tenant pins).
func scalarClaim(claims map[string]any, key string) (string, bool) {
	v, ok := resolve(claims, key)
	if !ok {
		return "", false
	}
	switch v.(type) {
	case string, json.Number, float64:
		return canonical(v)
	}
	return "", false
}
