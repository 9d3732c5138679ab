package config

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// identityBase is a valid configuration with a full identity section.
const identityBase = `intercept:
  cgroup: /sys/fs/cgroup/agents.slice
ca:
  cert_file: /etc/snowgate/ca.pem
  key_file: /etc/snowgate/ca.key
accounts:
  acme:
    host: acme.snowflakecomputing.com
    credential: {type: keypair, user: SVC_AGENT, private_key_file: /etc/credstore/acme.p8}
identity:
  state_file: /var/lib/snowgate/admissions.json
  sessions: {max: 500, idle_timeout: 2h}
  issuers:
    - name: github
      issuer: https://token.actions.githubusercontent.com
      audiences: [snowgate]
      algorithms: [RS256, ES256]
      keys: {source: discovery, refresh: 30m, min_refetch_interval: 45s, cache_file: /var/lib/snowgate/github-jwks.json}
      clock_skew: 45s
      max_token_lifetime: 15m
      max_token_age: 4m
      required_claims: [jti, repository_id]
      tenant: {repository_owner_id: 123456}
      continuation: {max: 0s}
    - name: gitlab
      issuer: https://gitlab.acme.internal
      audiences: [snowgate]
      keys: {source: jwks_file, file: /etc/snowgate/jwks/gitlab.json}
rules:
  - name: app-main
    match:
      issuer: github
      claims: {repository_id: 456789, ref: refs/heads/main, event_name: [push, schedule], job_workflow_ref: "glob:acme/ci/*@refs/tags/v*"}
    account: acme
    snowflake: {user: SVC_RO, role: AGENT_RO, warehouse: AGENT_XS, database: ANALYTICS, schema: PUBLIC, query_tag: "snowgate:{{repository}}:{{run_id}}"}
  - name: gitlab-protected
    match: {issuer: "https://gitlab.acme.internal", claims: {project_id: "991", ref_protected: true}}
    account: acme
    snowflake: {role: AGENT_GL}
    observe_only: true
recording:
  dir: /var/lib/snowgate/recordings
`

func TestIdentitySection(t *testing.T) {
	c, err := Parse("id.yaml", []byte(identityBase))
	if err != nil {
		t.Fatal(err)
	}
	gh, gl := c.Identity.Issuers[0], c.Identity.Issuers[1]
	r0, r1 := c.Rules[0], c.Rules[1]
	tests := []struct {
		name      string
		got, want any
	}{
		{"issuer name", gh.Name, "github"},
		{"algorithms", gh.Algorithms, []string{"RS256", "ES256"}},
		{"keys", gh.Keys.Source + " " + gh.Keys.CacheFile, "discovery /var/lib/snowgate/github-jwks.json"},
		{"refresh", gh.Keys.Refresh.Duration, 30 * time.Minute},
		{"min refetch", gh.Keys.MinRefetchInterval.Duration, 45 * time.Second},
		{"clock skew", gh.ClockSkew.Duration, 45 * time.Second},
		{"lifetime", gh.MaxTokenLifetime.Duration, 15 * time.Minute},
		{"age", gh.MaxTokenAge.Duration, 4 * time.Minute},
		{"tenant as strings", gh.TenantValues(), map[string]string{"repository_owner_id": "123456"}},
		{"strict continuation is set", gh.Continuation.Set, true},
		{"strict continuation is zero", gh.Continuation.Max.Duration, time.Duration(0)},
		{"default continuation unset", gl.Continuation.Set, false},
		{"jwks file", gl.Keys.Source + " " + gl.Keys.File, "jwks_file /etc/snowgate/jwks/gitlab.json"},
		{"claims as strings", r0.Match.ClaimValues(), map[string][]string{
			"repository_id": {"456789"}, "ref": {"refs/heads/main"}, "event_name": {"push", "schedule"},
			"job_workflow_ref": {"glob:acme/ci/*@refs/tags/v*"}}},
		{"boolean claim", r1.Match.ClaimValues()["ref_protected"], []string{"true"}},
		{"grant", r0.Snowflake, Session{User: "SVC_RO", Role: "AGENT_RO", Warehouse: "AGENT_XS", Database: "ANALYTICS", Schema: "PUBLIC", QueryTag: "snowgate:{{repository}}:{{run_id}}"}},
		{"observe only", r1.ObserveOnly, true},
		{"sessions", c.Identity.Sessions.Max, 500},
		{"idle timeout", c.Identity.Sessions.IdleTimeout.Duration, 2 * time.Hour},
	}
	for _, tc := range tests {
		if !reflect.DeepEqual(tc.got, tc.want) {
			t.Errorf("%s = %#v, want %#v", tc.name, tc.got, tc.want)
		}
	}
}

func TestIdentityDefaults(t *testing.T) {
	c, err := Parse("id.yaml", []byte(strings.Replace(identityBase, "  sessions: {max: 500, idle_timeout: 2h}\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	gl := c.Identity.Issuers[1]
	if gl.Name != "gitlab" || len(gl.Algorithms) != 0 || gl.ClockSkew.Duration != 0 || c.Identity.Sessions.IdleTimeout.Duration != 4*time.Hour {
		t.Fatalf("defaults: %+v %+v", gl, c.Identity.Sessions)
	}
	// An issuer without a name is named by its URL.
	c, err = Parse("id.yaml", []byte(strings.Replace(identityBase, "    - name: gitlab\n      issuer:", "    - issuer:", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Identity.Issuers[1].Name != "https://gitlab.acme.internal" {
		t.Fatalf("name %q", c.Identity.Issuers[1].Name)
	}
}

func TestIdentityErrors(t *testing.T) {
	edit := func(old, new string) string {
		t.Helper()
		if strings.Count(identityBase, old) != 1 {
			t.Fatalf("%q occurs %d times", old, strings.Count(identityBase, old))
		}
		return strings.Replace(identityBase, old, new, 1)
	}
	tests := []struct {
		name, yaml, want string
	}{
		{"alg none", edit("algorithms: [RS256, ES256]", "algorithms: [none]"), `identity.issuers[0].algorithms[0]: "none" is never accepted`},
		{"HMAC", edit("algorithms: [RS256, ES256]", "algorithms: [HS256]"), `identity.issuers[0].algorithms[0]: "HS256" is never accepted`},
		{"unknown alg", edit("algorithms: [RS256, ES256]", "algorithms: [XY1]"), `identity.issuers[0].algorithms[0]: "XY1" is not one of`},
		{"skew too wide", edit("clock_skew: 45s", "clock_skew: 5m"), "identity.issuers[0].clock_skew: 5m0s is outside"},
		{"bad source", edit("source: discovery,", "source: magic,"), `identity.issuers[0].keys.source: "magic" is not one of discovery, jwks_url, jwks_file`},
		{"jwks_url without url", edit("source: discovery,", "source: jwks_url,"), "identity.issuers[0].keys.url: required with source jwks_url"},
		{"relative jwks file", edit("file: /etc/snowgate/jwks/gitlab.json", "file: gitlab.json"), `identity.issuers[1].keys.file: "gitlab.json" is not an absolute path`},
		{"tenant glob", edit("tenant: {repository_owner_id: 123456}", `tenant: {repository_owner_id: "glob:*"}`), "identity.issuers[0].tenant.repository_owner_id: a tenant pin is one exact value"},
		{"duplicate name", edit("    - name: gitlab\n", "    - name: github\n"), `identity.issuers[1].name: "github" is used by an earlier issuer`},
		{"unknown issuer name", edit("      issuer: github\n", "      issuer: gitbuh\n"), `rules[0].match.issuer: "gitbuh" is not in identity.issuers`},
		{"object claim", edit("ref: refs/heads/main,", "ref: {a: b},"), "rules[0].match.claims.ref: a claim matches a string, a number, true/false, or a list of them"},
		{"empty claim value", edit("ref: refs/heads/main,", `ref: "",`), "rules[0].match.claims.ref: empty value"},
		{"bad user", edit("user: SVC_RO,", `user: "svc ro",`), `rules[0].snowflake.user: "svc ro" is not a Snowflake identifier`},
		{"unknown key", edit("    observe_only: true\n", "    observe: true\n"), "rules[1].observe: unknown key"},
		{"relative state file", edit("state_file: /var/lib/snowgate/admissions.json", "state_file: admissions.json"), `identity.state_file: "admissions.json" is not an absolute path`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("id.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want %q", err, tc.want)
			}
		})
	}
}

// TestApplianceIdentity loads the appliance's documented default
// configuration and checks its identity section and rules.
func TestApplianceIdentity(t *testing.T) {
	c, err := Load("../../appliance/snowgate.yaml")
	if err != nil {
		t.Fatal(err)
	}
	gh := c.Identity.Issuers[0]
	if gh.Name != "github" || gh.Keys.Source != KeysDiscovery || gh.TenantValues()["repository_owner_id"] != "123456" ||
		!gh.Continuation.Set || gh.Continuation.Max.Duration != time.Hour {
		t.Errorf("github issuer %+v", gh)
	}
	r := c.Rules[0]
	if r.Match.Issuer != "github" || !reflect.DeepEqual(r.Match.ClaimValues()["event_name"], []string{"push", "schedule", "workflow_dispatch"}) ||
		r.Match.ClaimValues()["repository_id"][0] != "456789" || r.Snowflake.Role != "AGENT_RO" || r.ObserveOnly {
		t.Errorf("rule %+v", r)
	}
}
