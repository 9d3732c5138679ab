package identity

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"testing"

	"github.com/go-jose/go-jose/v4"
)

// FuzzParseJWKS feeds untrusted JWKS documents (an issuer's, fetched over
// the network) to parseJWKS. It never panics, and what it keeps is only
// public signature keys: never a symmetric key, a private key or a key for
// encryption.
func FuzzParseJWKS(f *testing.F) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		f.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	_, edk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	var all []any
	for _, k := range []jose.JSONWebKey{
		{Key: rk.Public(), KeyID: "rsa", Algorithm: "RS256", Use: "sig"},
		{Key: ek.Public(), KeyID: "ec", Algorithm: "ES256"},
		{Key: rk, KeyID: "rsa-private", Algorithm: "RS256"},
		{Key: edk, KeyID: "ed-private", Algorithm: "EdDSA"},
		{Key: ek.Public(), KeyID: "ec-enc", Use: "enc"},
		{Key: []byte("a symmetric secret"), KeyID: "oct", Algorithm: "HS256"},
	} {
		b, err := k.MarshalJSON()
		if err != nil {
			f.Fatal(err)
		}
		var m any
		_ = json.Unmarshal(b, &m)
		all = append(all, m)
		one, _ := json.Marshal(map[string]any{"keys": []any{m}})
		f.Add(one)
	}
	doc, _ := json.Marshal(map[string]any{"keys": all})
	f.Add(doc)
	f.Add([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`))
	f.Add([]byte(`{"keys":null}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := parseJWKS(b)
		if err != nil {
			if keys != nil {
				t.Fatal("keys with an error")
			}
			return
		}
		if len(keys) == 0 {
			t.Fatal("no keys and no error")
		}
		for _, k := range keys {
			if k.Use != "" && k.Use != "sig" {
				t.Fatalf("kept a key for %q", k.Use)
			}
			switch k.Key.(type) {
			case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
			default:
				t.Fatalf("kept a %T", k.Key)
			}
			if !k.IsPublic() {
				t.Fatalf("kept a non-public key %s", k.KeyID)
			}
		}
	})
}
