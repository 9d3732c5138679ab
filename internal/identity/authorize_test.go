package identity_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
)

func TestAuthorize(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	cfg := githubIssuerConfig(is)
	v := newVerifier(t, is, clk, cfg)
	rules, _, err := identity.CompileRules([]identity.RuleConfig{{
		Name: "main-ro", Issuer: "github", Account: "acme", Grant: identity.Grant{User: "SVC_RO", Role: "AGENT_RO"},
		Claims: map[string][]string{"repository_id": {repoID}, "ref": {"refs/heads/main"}},
	}}, []identity.IssuerConfig{cfg})
	if err != nil {
		t.Fatal(err)
	}
	az := &identity.Authorizer{Verifier: v, Rules: rules, Admissions: identity.NewAdmissions(0), Now: clk.Now}
	ctx := context.Background()
	a, b := identity.Binding{CgroupID: 7, UID: 1000}, identity.Binding{CgroupID: 8, UID: 1000}

	raw := is.Sign(t, ghToken(is, clk.Now()))
	unseen := is.Sign(t, ghToken(is, clk.Now()))
	other := ghToken(is, clk.Now())
	other.Claims["ref"] = "refs/heads/dev"
	otherRaw := is.Sign(t, other)

	steps := []struct {
		name    string
		advance time.Duration
		token   string
		binding identity.Binding
		want    identity.Reason
		cont    bool
	}{
		{"fresh", 0, raw, a, "", false},
		{"no matching rule", 0, otherRaw, a, identity.ReasonNoMatchingRule, false},
		{"replay from another cgroup", 0, raw, b, identity.ReasonReplay, false},
		{"continuation after expiry", 10 * time.Minute, raw, a, "", true},
		{"continuation after a restart (state saved and loaded)", 0, raw, a, "", true},
		{"expired and never admitted", 0, unseen, a, identity.ReasonExpired, false},
		{"tampered", 0, raw[:len(raw)-4] + "AAAA", a, identity.ReasonBadSignature, false},
		{"continuation window over", time.Hour, raw, a, identity.ReasonContinuationExpired, false},
	}
	state := filepath.Join(t.TempDir(), "admissions.json")
	for _, s := range steps {
		clk.Advance(s.advance)
		if strings.Contains(s.name, "restart") {
			if err := az.Admissions.SaveFile(state, clk.Now()); err != nil {
				t.Fatal(err)
			}
			az.Admissions = identity.NewAdmissions(0)
			if n, err := az.Admissions.LoadFile(state, clk.Now()); err != nil || n != 1 {
				t.Fatalf("LoadFile = %d, %v; want 1 admission", n, err)
			}
		}
		d, err := az.Authorize(ctx, s.token, s.binding)
		if r := identity.ReasonOf(err); r != s.want || (s.want == "" && err != nil) {
			t.Fatalf("%s: reason %q, want %q (err %v)", s.name, r, s.want, err)
		}
		if err != nil {
			continue
		}
		if d.Continuation != s.cont || d.Rule.Grant.Role != "AGENT_RO" || d.Identity.IssuerName != "github" {
			t.Fatalf("%s: decision %+v", s.name, d)
		}
	}
}
