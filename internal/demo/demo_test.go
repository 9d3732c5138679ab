package demo

import (
	"strings"
	"testing"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// TestStageToken checks that the demo's workload token verifies against the
// JWKS file the gateway is configured with, and carries the claims the demo
// rule matches.
func TestStageToken(t *testing.T) {
	st, err := newStage(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	raw, err := st.mintToken()
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	var claims map[string]any
	if err := tok.Claims(&st.issuerKey.PublicKey, &claims); err != nil {
		t.Fatalf("token does not verify with the issuer key: %v", err)
	}
	for k, want := range map[string]string{"iss": demoIssuer, "aud": demoAudience, "repository": demoRepo} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %s", k, claims[k], want)
		}
	}
	cfg := demoConfig(st, "/sys/fs/cgroup/x", "https://localhost:1", "/ca.pem", 1)
	if strings.Contains(cfg, st.adminPassword) || strings.Contains(cfg, st.reviewerToken) {
		t.Error("the configuration holds a secret instead of a file name")
	}
}

func TestIDsOf(t *testing.T) {
	for _, tc := range []struct {
		in, state string
		want      string
	}{
		{`[{"id":"a","state":"pending"},{"id":"b","state":"approved"}]`, "pending", "a"},
		{`[{"id":"a"},{"id":"b"}]`, "", "a,b"},
		{"{\"id\":\"x\",\"state\":\"pending\"}\n{\"id\":\"y\",\"state\":\"pending\"}\n", "pending", "x,y"},
		{`[]`, "", ""},
	} {
		got, err := idsOf(tc.in, tc.state)
		if err != nil {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("idsOf(%s, %q) = %v, want %s", tc.in, tc.state, got, tc.want)
		}
	}
	if _, err := idsOf("not json", ""); err == nil {
		t.Error("idsOf accepted garbage")
	}
}
