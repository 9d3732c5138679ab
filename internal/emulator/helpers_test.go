package emulator_test

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"errors"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
)

// Credentials of the test account.
const (
	testAccount  = "demo"
	testUser     = "alice"
	testPassword = "s3cret-pw"
	keyUser      = "keyuser"
	patUser      = "patuser"
	testPAT      = "pat-token-0123456789"
	oauthUser    = "oauthuser"
	testOAuth    = "oauth-access-token-abc"
)

var (
	keyOnce  sync.Once
	testKey  *rsa.PrivateKey
	otherKey *rsa.PrivateKey
)

// keys returns the registered key-pair user's key and an unregistered one.
func keys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	keyOnce.Do(func() {
		var err error
		if testKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if otherKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
	})
	return testKey, otherKey
}

// baseConfig is the account every test starts from.
func baseConfig(t testing.TB) emulator.Config {
	k, _ := keys(t)
	return emulator.Config{
		Account:     testAccount,
		Users:       map[string]string{testUser: testPassword},
		PublicKeys:  map[string]crypto.PublicKey{keyUser: &k.PublicKey},
		PATs:        map[string]string{patUser: testPAT},
		OAuthTokens: map[string]string{testOAuth: oauthUser},
		QueryWait:   20 * time.Second,
		ResultWait:  10 * time.Second,
	}
}

// start runs an emulator over TLS with baseConfig changed by mod.
func start(t testing.TB, mod func(*emulator.Config), opts ...emulatortest.Option) *emulatortest.Instance {
	t.Helper()
	cfg := baseConfig(t)
	if mod != nil {
		mod(&cfg)
	}
	return emulatortest.Start(t, cfg, opts...)
}

// privateKeyParam is the DSN form of a key-pair private key.
func privateKeyParam(t testing.TB, k *rsa.PrivateKey) string {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return base64.URLEncoding.EncodeToString(der)
}

// open opens a database/sql handle on dsn, closed when the test ends.
func open(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("snowflake", dsn)
	if err != nil {
		t.Fatalf("sql.Open: %v", err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// passwordDB opens a password session handle for alice.
func passwordDB(t testing.TB, inst *emulatortest.Instance, params url.Values) *sql.DB {
	return open(t, inst.DSN(testUser, testPassword, params))
}

// ctxT is a generous per-test deadline for a loaded machine.
func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// sfError unwraps a *gosnowflake.SnowflakeError.
func sfError(t testing.TB, err error) *gosnowflake.SnowflakeError {
	t.Helper()
	var se *gosnowflake.SnowflakeError
	if !errors.As(err, &se) {
		t.Fatalf("error %v (%T) is not a *gosnowflake.SnowflakeError", err, err)
	}
	return se
}

// waitFor polls cond until it holds or a generous deadline passes.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
