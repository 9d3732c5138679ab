package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestLoadFull(t *testing.T) {
	c, err := Load("testdata/full.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if c.Intercept.OtherTLS != OtherTLSDeny || !reflect.DeepEqual(c.Intercept.SnowflakeDomains, []string{"snowflakecomputing.com", "snowflakecomputing.cn"}) {
		t.Fatalf("intercept %+v", c.Intercept)
	}
	if c.CA.LeafValidity.Duration != 24*time.Hour || c.DNS.Timeout.Duration != 5*time.Second || c.Approvals.Timeout.Duration != 30*time.Minute {
		t.Fatal("durations")
	}
	if c.DNS.Upstreams[0] != "127.0.0.53:53" || c.DNS.Static["demo.snowflakecomputing.com"][0] != "169.254.77.2" {
		t.Fatalf("dns %+v", c.DNS)
	}
	a := c.Accounts["acme"]
	if a.Host != "acme-prod.snowflakecomputing.com" || a.Credential.Type != CredentialKeyPair || a.Credential.User != "SVC_AGENT" {
		t.Fatalf("account %+v", a)
	}
	if c.Recording.ExchangeLog != "/var/lib/snowgate/recordings/exchanges.jsonl" || a.UpstreamCAFile != "" || c.Intercept.TLSPort != 443 {
		t.Fatalf("exchange log %q, upstream CA %q, port %d", c.Recording.ExchangeLog, a.UpstreamCAFile, c.Intercept.TLSPort)
	}
	r := c.Rules[0]
	if r.Match.Claims["ref"] != "refs/heads/main" || r.Statements.DML != DecisionApprove || r.Snowflake.Database != "ANALYTICS" {
		t.Fatalf("rule %+v", r)
	}
}

// minimal is the smallest valid configuration; the defaults fill the rest.
const minimal = `intercept:
  cgroup: /sys/fs/cgroup/agents.slice
ca:
  cert_file: /etc/snowgate/ca.pem
  key_file: /etc/snowgate/ca.key
accounts:
  acme:
    host: acme.snowflakecomputing.com
    credential: {type: pat, user: SVC, token_file: /etc/credstore/acme.pat}
identity:
  issuers:
    - issuer: http://127.0.0.1:8080
      audiences: [snowgate]
rules:
  - name: r
    match: {issuer: "http://127.0.0.1:8080"}
    account: acme
    snowflake: {role: R}
recording:
  dir: /var/lib/snowgate/recordings
`

func TestDefaults(t *testing.T) {
	c, err := Parse("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name      string
		got, want any
	}{
		{"proxy address", c.Intercept.ProxyAddress, "169.254.77.1"},
		{"port", c.Intercept.TLSPort, 443},
		{"domains", c.Intercept.SnowflakeDomains, []string{"snowflakecomputing.com"}},
		{"other tls", c.Intercept.OtherTLS, "deny"},
		{"leaf validity", c.CA.LeafValidity.Duration, 24 * time.Hour},
		{"ocsp url", c.CA.OCSPURL, "http://169.254.77.1/_snowgate/ocsp"},
		{"dns listen", c.DNS.Listen, "169.254.77.1:53"},
		{"dns timeout", c.DNS.Timeout.Duration, 5 * time.Second},
		{"statements", c.Rules[0].Statements, Statements{Read: "allow", DML: "deny", DDL: "deny", FileTransfer: "deny"}},
		{"results", c.Recording.Results, "full"},
		{"exchange log", c.Recording.ExchangeLog, "/var/lib/snowgate/recordings/exchanges.jsonl"},
		{"upstream ca", c.Accounts["acme"].UpstreamCAFile, ""},
		{"approval timeout", c.Approvals.Timeout.Duration, 30 * time.Minute},
		{"admin", c.Admin.Listen, "127.0.0.1:9464"},
	}
	for _, w := range want {
		if !reflect.DeepEqual(w.got, w.want) {
			t.Errorf("%s = %v, want %v", w.name, w.got, w.want)
		}
	}
}

// edit returns minimal with old replaced by new (which must occur once).
func edit(t *testing.T, old, new string) string {
	t.Helper()
	if strings.Count(minimal, old) != 1 {
		t.Fatalf("%q occurs %d times", old, strings.Count(minimal, old))
	}
	return strings.Replace(minimal, old, new, 1)
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // each a whole problem line
	}{
		{"unknown top-level key", minimal + "bogus: 1\n", []string{"x.yaml:21: bogus: unknown key"}},
		{"unknown nested key", edit(t, "  cgroup: /sys/fs/cgroup/agents.slice\n", "  cgroup: /sys/fs/cgroup/agents.slice\n  proxy_adress: 10.0.0.1\n"),
			[]string{"x.yaml:3: intercept.proxy_adress: unknown key"}},
		{"unknown key in a map value", edit(t, "    host: acme.snowflakecomputing.com\n", "    host: acme.snowflakecomputing.com\n    hots: x\n"),
			[]string{"x.yaml:9: accounts.acme.hots: unknown key"}},
		{"unknown key in a list item", edit(t, "    account: acme\n", "    account: acme\n    acount: acme\n"),
			[]string{"x.yaml:18: rules[0].acount: unknown key"}},
		{"rule names an unknown account", edit(t, "    account: acme\n", "    account: acne\n"),
			[]string{`x.yaml:17: rules[0].account: no account named "acne"`}},
		{"bad proxy address", edit(t, "  cgroup: /sys/fs/cgroup/agents.slice\n", "  cgroup: /sys/fs/cgroup/agents.slice\n  proxy_address: 169.254.77\n"),
			[]string{`x.yaml:3: intercept.proxy_address: "169.254.77" is not an IP address`}},
		{"bad enum", edit(t, "    snowflake: {role: R}\n", "    snowflake: {role: R}\n    statements: {dml: maybe}\n"),
			[]string{`x.yaml:19: rules[0].statements.dml: "maybe" is not one of allow, deny, approve`}},
		{"missing required keys", edit(t, "  cert_file: /etc/snowgate/ca.pem\n", ""),
			[]string{"x.yaml:3: ca.cert_file: required"}},
		{"missing section", strings.Replace(minimal, "recording:\n  dir: /var/lib/snowgate/recordings\n", "", 1),
			[]string{"x.yaml:1: recording.dir: required"}},
		{"wrong type", edit(t, "  cgroup: /sys/fs/cgroup/agents.slice\n", "  cgroup: /sys/fs/cgroup/agents.slice\n  tls_port: https\n"),
			[]string{`x.yaml:3: intercept.tls_port: "https" is not a whole number`}},
		{"bad duration", minimal + "approvals: {timeout: soon}\n",
			[]string{`x.yaml:21: approvals.timeout: "soon" is not a duration like 30s, 10m or 24h`}},
		{"duration out of range", edit(t, "  key_file: /etc/snowgate/ca.key\n", "  key_file: /etc/snowgate/ca.key\n  leaf_validity: 720h\n"),
			[]string{"x.yaml:6: ca.leaf_validity: 720h0m0s is outside 1h0m0s – 144h0m0s"}},
		{"host outside the domains", edit(t, "    host: acme.snowflakecomputing.com\n", "    host: acme.example.com\n"),
			[]string{`x.yaml:8: accounts.acme.host: "acme.example.com" is not under intercept.snowflake_domains (snowflakecomputing.com)`}},
		{"credential field of another type", edit(t, "token_file: /etc/credstore/acme.pat}", "token_file: /etc/credstore/acme.pat, password_file: /p}"),
			[]string{"x.yaml:9: accounts.acme.credential.password_file: not used by a pat credential"}},
		{"unknown issuer in a rule", edit(t, `    match: {issuer: "http://127.0.0.1:8080"}`, `    match: {issuer: "https://other.example"}`),
			[]string{`x.yaml:16: rules[0].match.issuer: "https://other.example" is not in identity.issuers`}},
		{"plain http issuer", strings.ReplaceAll(minimal, "http://127.0.0.1:8080", "http://issuer.example"),
			[]string{`x.yaml:12: identity.issuers[0].issuer: "http://issuer.example": http is allowed only on loopback; use https`}},
		{"bad admin listen", minimal + "admin: {listen: 9464}\n",
			[]string{`x.yaml:21: admin.listen: "9464" is not host:port`}},
		{"bad age recipient", edit(t, "  dir: /var/lib/snowgate/recordings\n", "  dir: /var/lib/snowgate/recordings\n  encrypt_to: [age1nope]\n"),
			[]string{"x.yaml:21: recording.encrypt_to[0]: not an age recipient (age1…)"}},
		{"duplicate key", minimal + "admin: {}\nadmin: {}\n", []string{"x.yaml:22: "}},
		{"several problems, in file order", edit(t, "    account: acme\n", "    account: nope\n") + "admin: {listen: x}\n",
			[]string{`x.yaml:17: rules[0].account: no account named "nope"`, `x.yaml:21: admin.listen: "x" is not host:port`}},
		{"bad static address", minimal + "dns:\n  static:\n    demo.snowflakecomputing.com: [169.254.77.2, nope]\n",
			[]string{`x.yaml:23: dns.static.demo.snowflakecomputing.com[1]: "nope" is not an IP address`}},
		{"bad upstream", minimal + "dns: {upstreams: [\"8.8.8.8:0\"]}\n",
			[]string{`x.yaml:21: dns.upstreams[0]: "8.8.8.8:0" is not an IP address or IP:port`}},
		{"empty domain list", edit(t, "  cgroup: /sys/fs/cgroup/agents.slice\n", "  cgroup: /sys/fs/cgroup/agents.slice\n  snowflake_domains: []\n"),
			[]string{"x.yaml:3: intercept.snowflake_domains: at least one domain is required", "x.yaml:9: accounts.acme.host: "}},
		{"relative cgroup", edit(t, "  cgroup: /sys/fs/cgroup/agents.slice\n", "  cgroup: agents.slice\n"),
			[]string{`x.yaml:2: intercept.cgroup: "agents.slice" is not a clean absolute path`}},
		{"http_port is gone", edit(t, "  cgroup: /sys/fs/cgroup/agents.slice\n", "  cgroup: /sys/fs/cgroup/agents.slice\n  http_port: 8080\n"),
			[]string{"x.yaml:3: intercept.http_port: unknown key"}},
		{"ocsp url on another port", edit(t, "  key_file: /etc/snowgate/ca.key\n", "  key_file: /etc/snowgate/ca.key\n  ocsp_url: http://169.254.77.1:8080/_snowgate/ocsp\n"),
			[]string{`x.yaml:6: ca.ocsp_url: "http://169.254.77.1:8080/_snowgate/ocsp": the port must be 80`}},
		{"relative upstream CA", edit(t, "    host: acme.snowflakecomputing.com\n", "    host: acme.snowflakecomputing.com\n    upstream_ca_file: ca.pem\n"),
			[]string{`x.yaml:9: accounts.acme.upstream_ca_file: "ca.pem" is not an absolute path`}},
		{"relative exchange log", edit(t, "  dir: /var/lib/snowgate/recordings\n", "  dir: /var/lib/snowgate/recordings\n  exchange_log: x.jsonl\n"),
			[]string{`x.yaml:21: recording.exchange_log: "x.jsonl" is not an absolute path`}},
		{"syntax error", "intercept:\n  cgroup: [\n", []string{"x.yaml:"}},
		{"empty file", "# nothing\n", []string{"x.yaml: empty configuration"}},
		{"not a mapping", "- a\n- b\n", []string{"x.yaml:1: the configuration must be a mapping of sections"}},
		{"two documents", minimal + "---\n" + minimal, []string{"x.yaml:1: more than one YAML document"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("x.yaml", []byte(tt.yaml))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err = %v (%T), want *Error", err, err)
			}
			if len(ce.Problems) != len(tt.want) {
				t.Fatalf("problems:\n%v\nwant %d", err, len(tt.want))
			}
			for i, w := range tt.want {
				if got := ce.Problems[i].String(); !strings.HasPrefix(got, w) {
					t.Errorf("problem %d = %q, want %q", i, got, w)
				}
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := Load(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file: %v", err)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte(strings.Repeat("#", MaxFileSize+1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Fatalf("big file: %v", err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(minimal+"bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(bad); err == nil || !strings.HasPrefix(err.Error(), bad+":21: bogus: unknown key") {
		t.Fatalf("bad file: %v", err)
	}
}

func TestSecretPath(t *testing.T) {
	for _, tc := range []struct {
		in, problem string
	}{
		{"/etc/credstore/acme.p8", ""},
		{"$CREDENTIALS_DIRECTORY/snowflake_acme.p8", ""},
		{"$CREDENTIALS_DIRECTORY/", "without a slash"},
		{"$CREDENTIALS_DIRECTORY/a/b", "without a slash"},
		{"$CREDENTIALS_DIRECTORY/..", "without a slash"},
		{"relative.p8", "not an absolute path"},
		{"", "required"},
	} {
		v := &validator{file: "x.yaml", pos: &posIndex{lines: map[string]int{}, at: map[[2]int]string{}}}
		v.secretPath("k", tc.in)
		got := ""
		if len(v.problems) > 0 {
			got = v.problems[0].Reason
		}
		if (tc.problem == "") != (got == "") || !strings.Contains(got, tc.problem) {
			t.Errorf("secretPath(%q): problem %q, want one containing %q", tc.in, got, tc.problem)
		}
	}
}
