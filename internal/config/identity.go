package config

import (
	"fmt"
	"net/netip"
	"net/url"
	"strings"
)

// Identity configures the workload-identity token issuers the gateway trusts.
type Identity struct {
	Issuers []Issuer `yaml:"issuers"`
}

// Issuer is one trusted OIDC issuer.
type Issuer struct {
	// Issuer is the exact iss claim and discovery base URL. Required; https,
	// or http only on a loopback address.
	Issuer string `yaml:"issuer"`
	// Audiences are the accepted aud values. At least one.
	Audiences []string `yaml:"audiences"`
	// JWKSURL overrides discovery of the signing keys.
	JWKSURL string `yaml:"jwks_url"`
}

// Rule maps a verified workload identity to a Snowflake session and a
// statement policy. Rules are tried in order; the first match wins.
type Rule struct {
	// Name identifies the rule in logs and recordings. Required, unique.
	Name  string `yaml:"name"`
	Match Match  `yaml:"match"`
	// Account names an entry of accounts. Required.
	Account    string     `yaml:"account"`
	Snowflake  Session    `yaml:"snowflake"`
	Statements Statements `yaml:"statements"`
}

// Match selects tokens: the issuer and exact claim values.
type Match struct {
	// Issuer must be one of identity.issuers. Required.
	Issuer string `yaml:"issuer"`
	// Claims must all be present with exactly these string values.
	Claims map[string]string `yaml:"claims"`
}

// Session is the Snowflake context a rule grants; the request never chooses
// it.
type Session struct {
	// Role is required.
	Role      string `yaml:"role"`
	Warehouse string `yaml:"warehouse"`
	Database  string `yaml:"database"`
	Schema    string `yaml:"schema"`
}

func (v *validator) identity(id *Identity) map[string]bool {
	issuers := map[string]bool{}
	if len(id.Issuers) == 0 {
		v.bad("identity.issuers", "at least one issuer is required")
	}
	for i, is := range id.Issuers {
		path := fmt.Sprintf("identity.issuers[%d]", i)
		if is.Issuer == "" {
			v.bad(path+".issuer", "required")
		} else if err := issuerURL(is.Issuer); err != nil {
			v.bad(path+".issuer", "%v", err)
		} else if issuers[is.Issuer] {
			v.bad(path+".issuer", "%q is listed twice", is.Issuer)
		}
		issuers[is.Issuer] = true
		if len(is.Audiences) == 0 {
			v.bad(path+".audiences", "at least one audience is required")
		}
		for j, a := range is.Audiences {
			if strings.TrimSpace(a) == "" {
				v.bad(fmt.Sprintf("%s.audiences[%d]", path, j), "empty audience")
			}
		}
		if is.JWKSURL != "" {
			if err := issuerURL(is.JWKSURL); err != nil {
				v.bad(path+".jwks_url", "%v", err)
			}
		}
	}
	return issuers
}

// issuerURL accepts https URLs, and http on loopback (a local test issuer).
func issuerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%q is not an absolute URL without query or fragment", s)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if ip, err := netip.ParseAddr(u.Hostname()); (err == nil && ip.IsLoopback()) || u.Hostname() == "localhost" {
			return nil
		}
		return fmt.Errorf("%q: http is allowed only on loopback; use https", s)
	}
	return fmt.Errorf("%q: scheme must be https", s)
}

func (v *validator) rules(rules []Rule, accts map[string]Account, issuers map[string]bool) {
	if len(rules) == 0 {
		v.bad("rules", "at least one rule is required: without one no workload can log in")
	}
	names := map[string]bool{}
	for i := range rules {
		r := &rules[i]
		path := fmt.Sprintf("rules[%d]", i)
		switch {
		case r.Name == "":
			v.bad(path+".name", "required")
		case names[r.Name]:
			v.bad(path+".name", "%q is used by an earlier rule", r.Name)
		}
		names[r.Name] = true
		switch {
		case r.Match.Issuer == "":
			v.bad(path+".match.issuer", "required")
		case !issuers[r.Match.Issuer]:
			v.bad(path+".match.issuer", "%q is not in identity.issuers", r.Match.Issuer)
		}
		for k := range r.Match.Claims {
			if k == "" {
				v.bad(path+".match.claims", "empty claim name")
			}
		}
		switch {
		case r.Account == "":
			v.bad(path+".account", "required")
		default:
			if _, ok := accts[r.Account]; !ok {
				v.bad(path+".account", "no account named %q", r.Account)
			}
		}
		if r.Snowflake.Role == "" {
			v.bad(path+".snowflake.role", "required: the role the session runs as")
		}
		for k, val := range map[string]string{"role": r.Snowflake.Role, "warehouse": r.Snowflake.Warehouse, "database": r.Snowflake.Database, "schema": r.Snowflake.Schema} {
			if val != "" && !identifier.MatchString(val) {
				v.bad(path+".snowflake."+k, "%q is not a Snowflake identifier", val)
			}
		}
		v.statements(path+".statements", &r.Statements)
	}
}
