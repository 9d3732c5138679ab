package identity_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
)

func claimsJSON(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("claims %s: %v", s, err)
	}
	return m
}

func TestMatchClaim(t *testing.T) {
	claims := claimsJSON(t, `{
		"repository_id": "456789", "run_id": 9876543210, "big": 12345678901234567890123,
		"ref_protected": "true", "flag": true, "ratio": 1.50, "exp_num": 1e3,
		"groups": ["dev", "ops", 7], "nested": {"a": "b"}, "null": null,
		"oidc.circleci.com/project-id": "p-1",
		"kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "agent"}},
		"a/b": {"c~d": "x"},
		"job_workflow_ref": "acme/ci/.github/workflows/agent.yml@refs/tags/v1.2"
	}`)
	cases := []struct {
		key    string
		values []string
		want   bool
	}{
		{"repository_id", []string{"456789"}, true},
		{"repository_id", []string{"45678"}, false},
		{"repository_id", []string{"other", "456789"}, true}, // list = any-of
		{"run_id", []string{"9876543210"}, true},             // number as canonical decimal
		{"big", []string{"12345678901234567890123"}, true},   // beyond int64, exact
		{"ratio", []string{"1.5"}, true},
		{"exp_num", []string{"1000"}, true},
		{"ref_protected", []string{"true"}, true}, // GitLab's string
		{"flag", []string{"true"}, true},          // JSON boolean
		{"flag", []string{"True"}, false},
		{"groups", []string{"ops"}, true}, // array: any element
		{"groups", []string{"7"}, true},
		{"groups", []string{"qa"}, false},
		{"nested", []string{"b"}, false}, // objects never match
		{"nested", []string{`{"a":"b"}`}, false},
		{"null", []string{"null"}, false},
		{"missing", []string{"x"}, false}, // a missing claim never matches
		{"missing", []string{"glob:?*"}, false},
		{"oidc.circleci.com/project-id", []string{"p-1"}, true}, // literal key with dots and slashes
		{"/kubernetes.io/namespace", []string{"ci"}, true},      // JSON pointer
		{"/kubernetes.io/serviceaccount/name", []string{"agent"}, true},
		{"/kubernetes.io/missing", []string{"ci"}, false},
		{"/a~1b/c~0d", []string{"x"}, true},
		{"kubernetes.io", []string{"ci"}, false},
		{"job_workflow_ref", []string{"glob:acme/ci/.github/workflows/agent.yml@refs/tags/v*"}, true},
		{"job_workflow_ref", []string{"glob:acme/ci/*@refs/heads/*"}, false},
		{"job_workflow_ref", []string{"acme/ci/.github/workflows/agent.yml@refs/tags/v*"}, false}, // no glob without opt-in
		{"repository_id", []string{"glob:4567?9"}, true},
	}
	for _, c := range cases {
		if got := identity.MatchClaim(claims, c.key, c.values); got != c.want {
			t.Errorf("MatchClaim(%q, %q) = %v, want %v", c.key, c.values, got, c.want)
		}
	}
}

func TestGlob(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"a*c", "ac", true},
		{"a*c", "a/b/c", true}, // * crosses slashes
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*", "", true},
		{"*a*b*", "xxaxxbxx", true},
		{"*a*b", "xxaxxbxx", false},
		{"é?", "éx", true},
		{"?", "é", true},  // runes, not bytes
		{"*", "*0", true}, // a literal * in the subject
		{"a*", "a*", true},
		{"?*?", "**", true},
	}
	for _, c := range cases {
		if got := identity.Glob(c.pattern, c.s); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pattern, c.s, got, c.want)
		}
	}
}

func testIssuers() []identity.IssuerConfig {
	return []identity.IssuerConfig{
		{Name: "github", Issuer: "https://token.actions.githubusercontent.com", Audiences: []string{aud},
			Tenant: map[string]string{"repository_owner_id": ownerID}},
		{Name: "gitlab", Issuer: "https://gitlab.acme.internal", Audiences: []string{aud}},
	}
}

func grant(user, role string) identity.Grant { return identity.Grant{User: user, Role: role} }

func TestCompileRulesErrors(t *testing.T) {
	cases := []struct {
		name string
		rule identity.RuleConfig
		want string
	}{
		{"unknown issuer", identity.RuleConfig{Name: "r", Issuer: "nope", Account: "acme", Grant: grant("u", "R"),
			Claims: map[string][]string{"repository_id": {"1"}}}, "not configured"},
		{"only the tenant pin", identity.RuleConfig{Name: "r", Issuer: "github", Account: "acme", Grant: grant("u", "R"),
			Claims: map[string][]string{"repository_owner_id": {ownerID}}}, "besides the issuer's tenant pin"},
		{"no claims", identity.RuleConfig{Name: "r", Issuer: "gitlab", Account: "acme", Grant: grant("u", "R")}, "besides"},
		{"glob on an ID", identity.RuleConfig{Name: "r", Issuer: "github", Account: "acme", Grant: grant("u", "R"),
			Claims: map[string][]string{"repository_id": {"glob:45*"}}}, "globs are not allowed"},
		{"glob on an ID pointer", identity.RuleConfig{Name: "r", Issuer: "gitlab", Account: "acme", Grant: grant("u", "R"),
			Claims: map[string][]string{"/x/project_id": {"glob:9*"}}}, "globs are not allowed"},
		{"match-all glob", identity.RuleConfig{Name: "r", Issuer: "gitlab", Account: "acme", Grant: grant("u", "R"),
			Claims: map[string][]string{"ref": {"glob:**"}}}, "matches anything"},
		{"empty value", identity.RuleConfig{Name: "r", Issuer: "gitlab", Account: "acme", Grant: grant("u", "R"),
			Claims: map[string][]string{"ref": {""}}}, "empty value"},
		{"no role", identity.RuleConfig{Name: "r", Issuer: "gitlab", Account: "acme", Grant: grant("u", ""),
			Claims: map[string][]string{"ref": {"main"}}}, "required"},
		{"no account", identity.RuleConfig{Name: "r", Issuer: "gitlab", Grant: grant("u", "R"),
			Claims: map[string][]string{"ref": {"main"}}}, "required"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := identity.CompileRules([]identity.RuleConfig{c.rule}, testIssuers())
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
	dup := identity.RuleConfig{Name: "r", Issuer: "gitlab", Account: "acme", Grant: grant("u", "R"), Claims: map[string][]string{"ref": {"main"}}}
	if _, _, err := identity.CompileRules([]identity.RuleConfig{dup, dup}, testIssuers()); err == nil || !strings.Contains(err.Error(), "used twice") {
		t.Fatalf("duplicate names: %v", err)
	}
}

func TestRulesOrderAndShadowing(t *testing.T) {
	rules := []identity.RuleConfig{
		{Name: "main-ro", Issuer: "github", Account: "acme", Grant: identity.Grant{User: "SVC_RO", Role: "AGENT_RO", QueryTag: "snowgate:{{repository}}:{{run_id}}:{{missing}}"},
			Claims: map[string][]string{"repository_id": {repoID}, "ref": {"refs/heads/main"}}},
		{Name: "any-branch", Issuer: "github", Account: "acme", Grant: grant("SVC_DEV", "AGENT_DEV"),
			Claims: map[string][]string{"repository_id": {repoID}, "ref": {"glob:refs/heads/*"}}},
		{Name: "shadowed", Issuer: "github", Account: "acme", Grant: grant("SVC_X", "X"),
			Claims: map[string][]string{"repository_id": {repoID}, "ref": {"refs/heads/main"}, "event_name": {"push"}}},
		{Name: "gitlab-protected", Issuer: "gitlab", Account: "acme", Grant: grant("SVC_GL", "AGENT_GL"),
			Claims: map[string][]string{"project_id": {"991"}, "ref_protected": {"true"}, "pipeline_source": {"push", "schedule", "web"}}},
	}
	compiled, warnings, err := identity.CompileRules(rules, testIssuers())
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "shadowed") || !strings.Contains(warnings[0], "main-ro") {
		t.Errorf("warnings = %q, want one about rule shadowed by main-ro", warnings)
	}
	gh := func(mod func(map[string]any)) *identity.Identity {
		tok := oidctest.GitHub(aud, "acme", ownerID, "app", repoID)
		c := map[string]any{"sub": tok.Subject}
		for k, v := range tok.Claims {
			c[k] = v
		}
		mod(c)
		return &identity.Identity{IssuerName: "github", Subject: tok.Subject, Claims: c}
	}
	gl := func(mod func(map[string]any)) *identity.Identity {
		tok := oidctest.GitLab(aud, "grp", "42", "proj", "991")
		c := map[string]any{}
		for k, v := range tok.Claims {
			c[k] = v
		}
		mod(c)
		return &identity.Identity{IssuerName: "gitlab", Subject: tok.Subject, Claims: c}
	}
	cases := []struct {
		name string
		id   *identity.Identity
		want string // rule name; "" means no match
	}{
		{"main push", gh(func(map[string]any) {}), "main-ro"},
		{"feature branch", gh(func(c map[string]any) { c["ref"] = "refs/heads/feature/x" }), "any-branch"},
		{"tag", gh(func(c map[string]any) { c["ref"] = "refs/tags/v1" }), ""},
		{"other repository", gh(func(c map[string]any) { c["repository_id"] = "1" }), ""},
		{"repository_id missing", gh(func(c map[string]any) { delete(c, "repository_id") }), ""},
		{"numeric repository_id", gh(func(c map[string]any) { c["repository_id"] = json.Number(repoID) }), "main-ro"},
		{"gitlab protected push", gl(func(map[string]any) {}), "gitlab-protected"},
		{"gitlab unprotected", gl(func(c map[string]any) { c["ref_protected"] = "false" }), ""},
		{"gitlab boolean true", gl(func(c map[string]any) { c["ref_protected"] = true }), "gitlab-protected"},
		{"gitlab merge request", gl(func(c map[string]any) { c["pipeline_source"] = "merge_request_event" }), ""},
		{"claims of the other issuer", &identity.Identity{IssuerName: "gitlab", Claims: gh(func(map[string]any) {}).Claims}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, err := compiled.Match(c.id)
			if c.want == "" {
				if identity.ReasonOf(err) != identity.ReasonNoMatchingRule {
					t.Fatalf("matched %v (err %v), want no_matching_rule", r, err)
				}
				return
			}
			if err != nil || r.Name != c.want {
				t.Fatalf("rule %v (err %v), want %s", r, err, c.want)
			}
		})
	}
	r, _ := compiled.Match(gh(func(map[string]any) {}))
	if got := r.Grant.ExpandQueryTag(gh(func(c map[string]any) { c["repository"] = "acme/app'; DROP" }).Claims); got != "snowgate:acme/app_; DROP:9876543210:" {
		t.Errorf("query tag = %q", got)
	}
}

// TestVerifyThenMatch runs a real token through verification and the rules.
func TestVerifyThenMatch(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	cfg := githubIssuerConfig(is)
	v := newVerifier(t, is, clk, cfg)
	rules, _, err := identity.CompileRules([]identity.RuleConfig{{
		Name: "main-ro", Issuer: "github", Account: "acme", Grant: grant("SVC_RO", "AGENT_RO"),
		Claims: map[string][]string{"repository_id": {repoID}, "ref": {"refs/heads/main"}, "runner_environment": {"github-hosted"}},
	}}, []identity.IssuerConfig{cfg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	id, err := v.Verify(ctx, is.Sign(t, ghToken(is, clk.Now())))
	if err != nil {
		t.Fatal(err)
	}
	if r, err := rules.Match(id); err != nil || r.Grant.Role != "AGENT_RO" {
		t.Fatalf("match: %v %v", r, err)
	}
	tok := ghToken(is, clk.Now())
	tok.Claims["runner_environment"] = "self-hosted"
	id, err = v.Verify(ctx, is.Sign(t, tok))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rules.Match(id); identity.ReasonOf(err) != identity.ReasonNoMatchingRule || !strings.Contains(err.Error(), "no rule matches") {
		t.Fatalf("self-hosted runner: %v", err)
	}
}
