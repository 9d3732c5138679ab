package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// allAlgs lets the key set parse any signature; the verifier has already
// enforced the issuer's allow-list.
var allAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA,
}

// keySet is one issuer's signing keys. It implements go-oidc's KeySet.
//
// Unlike go-oidc's RemoteKeySet it fetches at most once per
// MinRefetchInterval however many unknown kids arrive, refreshes on a
// timer (lazily, on use), keeps the last good keys when a fetch fails, and
// keeps the previous set for one refresh period after a rotation.
type keySet struct {
	issuer string // configured name, for errors
	iss    string // issuer URL
	src    KeySource
	client *http.Client
	now    func() time.Time
	log    *slog.Logger

	fetchMu sync.Mutex // single flight: one fetch at a time

	mu          sync.RWMutex
	keys        []jose.JSONWebKey
	prev        []jose.JSONWebKey
	prevUntil   time.Time
	fetched     time.Time // last successful fetch
	lastAttempt time.Time // last fetch attempt, successful or not
	jwksURL     string    // from discovery
	fileMod     time.Time // jwks_file modification time of keys
	fetches     int
}

// fetchTimeout bounds one key load (discovery and JWKS together); logins
// that trigger a refresh wait at most this long.
const fetchTimeout = 10 * time.Second

// errSlot carries the key set's typed refusal past go-oidc, which wraps
// signature errors with %v.
type errSlot struct{ err *Error }

type errSlotKey struct{}

// VerifySignature verifies jwt with the issuer's keys and returns its
// payload.
func (k *keySet) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	payload, e := k.verify(ctx, raw)
	if e != nil {
		if s, ok := ctx.Value(errSlotKey{}).(*errSlot); ok {
			s.err = e
		}
		return nil, e
	}
	return payload, nil
}

func (k *keySet) verify(ctx context.Context, raw string) ([]byte, *Error) {
	jws, err := jose.ParseSigned(raw, allAlgs)
	if err != nil {
		return nil, &Error{Reason: ReasonMalformed, Issuer: k.issuer, Detail: "parse signature", Err: err}
	}
	if len(jws.Signatures) != 1 {
		return nil, refuse(ReasonMalformed, k.issuer, "%d signatures, want exactly one", len(jws.Signatures))
	}
	hdr := jws.Signatures[0].Header
	k.mu.RLock()
	stale := k.lastAttempt.IsZero() || k.now().Sub(k.fetched) >= k.src.Refresh
	k.mu.RUnlock()
	if stale {
		// A timed refresh never queues behind another fetch: if one is
		// running, the current keys serve.
		k.refresh(ctx, false)
	}
	cands := k.candidates(hdr.KeyID, hdr.Algorithm)
	if len(cands) == 0 {
		// A new kid may mean the issuer rotated: refresh, rate-limited,
		// waiting for a fetch already running (single flight).
		k.refresh(ctx, true)
		cands = k.candidates(hdr.KeyID, hdr.Algorithm)
	}
	if len(cands) == 0 {
		k.mu.RLock()
		never := k.fetched.IsZero()
		k.mu.RUnlock()
		if never {
			return nil, refuse(ReasonKeysUnavailable, k.issuer, "no keys could be loaded yet")
		}
		return nil, refuse(ReasonUnknownKey, k.issuer, "no %s key with kid %q", hdr.Algorithm, truncate(hdr.KeyID, 64))
	}
	for _, key := range cands {
		if payload, err := jws.Verify(key.Key); err == nil {
			return payload, nil
		}
	}
	return nil, refuse(ReasonBadSignature, k.issuer, "signature does not verify with key %q", truncate(hdr.KeyID, 64))
}

// candidates are the current and retained keys that may have signed a
// token with this kid and alg. A token without kid may use any key.
func (k *keySet) candidates(kid, alg string) []jose.JSONWebKey {
	k.mu.RLock()
	defer k.mu.RUnlock()
	var out []jose.JSONWebKey
	sets := [][]jose.JSONWebKey{k.keys}
	if k.now().Before(k.prevUntil) {
		sets = append(sets, k.prev)
	}
	for _, set := range sets {
		for _, key := range set {
			if kid != "" && key.KeyID != kid {
				continue
			}
			if key.Algorithm != "" && key.Algorithm != alg {
				continue
			}
			out = append(out, key)
		}
	}
	return out
}

// refresh loads the keys again unless a load was attempted less than
// MinRefetchInterval ago. A failure keeps the last good keys. With wait
// false it returns at once when another fetch is running.
func (k *keySet) refresh(ctx context.Context, wait bool) {
	if wait {
		k.fetchMu.Lock()
	} else if !k.fetchMu.TryLock() {
		return
	}
	defer k.fetchMu.Unlock()
	k.mu.RLock()
	recent := !k.lastAttempt.IsZero() && k.now().Sub(k.lastAttempt) < k.src.MinRefetchInterval
	k.mu.RUnlock()
	if recent {
		return
	}
	k.mu.Lock()
	k.lastAttempt = k.now()
	k.fetches++
	k.mu.Unlock()
	// The fetch serves every waiting login: a caller that goes away must
	// not cancel it (fetchTimeout bounds it).
	keys, raw, mod, err := k.load(context.WithoutCancel(ctx))
	if err != nil {
		k.log.Warn("identity: key refresh failed, keeping last good keys", "issuer", k.issuer, "err", err)
		return
	}
	k.install(keys, mod, k.now())
	if k.src.CacheFile != "" && raw != nil {
		if err := writeCache(k.src.CacheFile, raw); err != nil {
			k.log.Warn("identity: persist JWKS", "issuer", k.issuer, "err", err)
		}
	}
}

// loadCache installs the persisted JWKS, if any, as keys fetched at the
// file's modification time; the first use still tries a fresh fetch.
func (k *keySet) loadCache() error {
	if k.src.CacheFile == "" {
		return nil
	}
	st, err := os.Stat(k.src.CacheFile)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat JWKS cache: %w", err)
	}
	if st.Size() > maxJWKSBody {
		return fmt.Errorf("JWKS cache %s is larger than %d bytes", k.src.CacheFile, maxJWKSBody)
	}
	b, err := os.ReadFile(k.src.CacheFile)
	if err != nil {
		return fmt.Errorf("read JWKS cache: %w", err)
	}
	keys, err := parseJWKS(b)
	if err != nil {
		return fmt.Errorf("JWKS cache %s: %w", k.src.CacheFile, err)
	}
	k.install(keys, time.Time{}, st.ModTime())
	return nil
}

// writeCache replaces file with b atomically.
func writeCache(file string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".jwks-*")
	if err != nil {
		return fmt.Errorf("create temporary file: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), file); err != nil {
		return fmt.Errorf("replace %s: %w", file, err)
	}
	return nil
}

// install makes keys current and keeps the previous set for one refresh
// period, so tokens signed just before a rotation still verify.
func (k *keySet) install(keys []jose.JSONWebKey, mod, fetched time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) > 0 && !sameKeys(k.keys, keys) {
		k.prev, k.prevUntil = k.keys, k.now().Add(k.src.Refresh)
	}
	k.keys, k.fetched, k.fileMod = keys, fetched, mod
}

func sameKeys(a, b []jose.JSONWebKey) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].KeyID != b[i].KeyID {
			return false
		}
	}
	return true
}

// load reads the key set from its source.
func (k *keySet) load(ctx context.Context) (keys []jose.JSONWebKey, raw []byte, mod time.Time, err error) {
	if k.src.Source == SourceJWKSFile {
		st, err := os.Stat(k.src.File)
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("stat jwks_file: %w", err)
		}
		k.mu.RLock()
		same := len(k.keys) > 0 && st.ModTime().Equal(k.fileMod)
		cur := k.keys
		k.mu.RUnlock()
		if same {
			return cur, nil, st.ModTime(), nil
		}
		if st.Size() > maxJWKSBody {
			return nil, nil, time.Time{}, fmt.Errorf("jwks_file %s is larger than %d bytes", k.src.File, maxJWKSBody)
		}
		b, err := os.ReadFile(k.src.File)
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("read jwks_file: %w", err)
		}
		keys, err = parseJWKS(b)
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("jwks_file %s: %w", k.src.File, err)
		}
		return keys, nil, st.ModTime(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	u, err := k.jwksLocation(ctx)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	b, err := k.get(ctx, u)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("fetch JWKS: %w", err)
	}
	keys, err = parseJWKS(b)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("JWKS from %s: %w", u, err)
	}
	return keys, b, time.Time{}, nil
}

// jwksLocation is the configured JWKS URL, or the one discovery names.
func (k *keySet) jwksLocation(ctx context.Context) (string, error) {
	if k.src.Source == SourceJWKSURL {
		return k.src.URL, nil
	}
	k.mu.RLock()
	u := k.jwksURL
	k.mu.RUnlock()
	if u != "" {
		return u, nil
	}
	b, err := k.get(ctx, strings.TrimSuffix(k.iss, "/")+"/.well-known/openid-configuration")
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", fmt.Errorf("discovery: decode: %w", err)
	}
	if doc.Issuer != k.iss {
		return "", fmt.Errorf("discovery: document names issuer %q, want exactly %q", doc.Issuer, k.iss)
	}
	if err := checkURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery: jwks_uri: %w", err)
	}
	k.mu.Lock()
	k.jwksURL = doc.JWKSURI
	k.mu.Unlock()
	return doc.JWKSURI, nil
}

// get fetches u with a bounded body.
func (k *keySet) get(ctx context.Context, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("request %s: %w", u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("get %s: HTTP %d", u, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBody+1))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", u, err)
	}
	if len(b) > maxJWKSBody {
		return nil, fmt.Errorf("get %s: body larger than %d bytes", u, maxJWKSBody)
	}
	return b, nil
}

// parseJWKS keeps the public signature keys of a JWKS document and drops
// symmetric, private and encryption keys.
func parseJWKS(b []byte) ([]jose.JSONWebKey, error) {
	var raw struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("decode JWKS: %w", err)
	}
	var keys []jose.JSONWebKey
	for _, r := range raw.Keys {
		var key jose.JSONWebKey
		if err := key.UnmarshalJSON(r); err != nil {
			continue // unsupported key types are skipped, as issuers may list them
		}
		if key.Use != "" && key.Use != "sig" {
			continue
		}
		switch key.Key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no usable public signing keys")
	}
	return keys, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
