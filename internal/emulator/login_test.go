package emulator

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"log/slog"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

func TestVerifyJWT(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: slog.New(slog.DiscardHandler), cfg: Config{Account: "demo", PublicKeys: map[string]crypto.PublicKey{"svc_user": &key.PublicKey}}}
	fp, err := PublicKeyFingerprint(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	type claims struct {
		Iss string `json:"iss"`
		Sub string `json:"sub"`
		Iat int64  `json:"iat"`
		Exp int64  `json:"exp"`
	}
	good := claims{Iss: "DEMO.SVC_USER." + fp, Sub: "DEMO.SVC_USER", Iat: now.Unix(), Exp: now.Add(time.Minute).Unix()}
	sign := func(k *rsa.PrivateKey, alg jose.SignatureAlgorithm, c claims) string {
		signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: k}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(signer).Claims(c).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	with := func(f func(*claims)) claims { c := good; f(&c); return c }
	cases := []struct {
		name  string
		token string
		login string
		ok    bool
	}{
		{"valid, seconds (Go)", sign(key, jose.RS256, good), "", true},
		{"valid, milliseconds (Node)", sign(key, jose.RS256, with(func(c *claims) { c.Iat, c.Exp = now.UnixMilli(), now.Add(2*time.Minute).UnixMilli() })), "svc_user", true},
		{"signed by another key", sign(other, jose.RS256, good), "", false},
		{"RS512", sign(key, jose.RS512, good), "", false},
		{"wrong fingerprint", sign(key, jose.RS256, with(func(c *claims) { c.Iss = "DEMO.SVC_USER.SHA256:AAAA" })), "", false},
		{"wrong account", sign(key, jose.RS256, with(func(c *claims) { c.Sub = "OTHER.SVC_USER"; c.Iss = "OTHER.SVC_USER." + fp })), "", false},
		{"lower-case subject", sign(key, jose.RS256, with(func(c *claims) { c.Sub = "demo.svc_user"; c.Iss = "demo.svc_user." + fp })), "", false},
		{"expired", sign(key, jose.RS256, with(func(c *claims) { c.Iat, c.Exp = now.Add(-time.Hour).Unix(), now.Add(-time.Minute).Unix() })), "", false},
		{"lifetime over an hour", sign(key, jose.RS256, with(func(c *claims) { c.Exp = now.Add(3 * time.Hour).Unix() })), "", false},
		{"issued in the future", sign(key, jose.RS256, with(func(c *claims) { c.Iat = now.Add(time.Hour).Unix(); c.Exp = now.Add(90 * time.Minute).Unix() })), "", false},
		{"login name of another user", sign(key, jose.RS256, good), "alice", false},
		{"not a JWT", "not.a.jwt", "", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			user, e := s.verifyJWT(tc.token, tc.login)
			if tc.ok != (e == nil) {
				t.Fatalf("verify: user %q err %v, want ok=%v", user, e, tc.ok)
			}
			if tc.ok && user != "svc_user" {
				t.Fatalf("user %q", user)
			}
			if !tc.ok && e.Code != "390144" {
				t.Fatalf("code %s, want 390144", e.Code)
			}
		})
	}
}
