package identity_test

import (
	"encoding/base64"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/snowgate/snowgate/internal/identity"
)

func FuzzParseUnverified(f *testing.F) {
	enc := base64.RawURLEncoding.EncodeToString
	f.Add(enc([]byte(`{"alg":"RS256","kid":"k"}`)) + "." + enc([]byte(`{"iss":"https://x","aud":"a"}`)) + ".c2ln")
	f.Add(enc([]byte(`{"alg":"none"}`)) + "." + enc([]byte(`{"iss":"x"}`)) + ".")
	f.Add(enc([]byte(`{"alg":"HS256"}`)) + "." + enc([]byte(`{"iss":"x"}`)) + ".c2ln")
	f.Add("a.b.c.d.e")
	f.Add("")
	f.Add(enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(`{"iss":"x"} {}`)) + ".c2ln")
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := identity.ParseUnverified(raw)
		if err != nil {
			if identity.ReasonOf(err) == "" {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		if len(raw) > identity.MaxTokenSize {
			t.Fatalf("accepted %d bytes", len(raw))
		}
		if u.Issuer == "" || u.Algorithm == "" || strings.EqualFold(u.Algorithm, "none") || strings.HasPrefix(strings.ToUpper(u.Algorithm), "HS") {
			t.Fatalf("accepted alg %q iss %q", u.Algorithm, u.Issuer)
		}
		if strings.Count(raw, ".") != 2 {
			t.Fatalf("accepted %d parts", strings.Count(raw, ".")+1)
		}
	})
}

// globRegexp is an independent implementation of Glob for comparison.
func globRegexp(pattern string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`(?s)\A`)
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	b.WriteString(`\z`)
	return regexp.MustCompile(b.String())
}

func FuzzGlob(f *testing.F) {
	f.Add("acme/*@refs/tags/v*", "acme/ci/x.yml@refs/tags/v1")
	f.Add("a?c", "abc")
	f.Add("**a", "xa")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if len(pattern) > 64 || len(s) > 256 || !utf8.ValidString(pattern) || !utf8.ValidString(s) {
			return
		}
		if got, want := identity.Glob(pattern, s), globRegexp(pattern).MatchString(s); got != want {
			t.Fatalf("Glob(%q, %q) = %v, regexp says %v", pattern, s, got, want)
		}
	})
}

func FuzzMatchClaim(f *testing.F) {
	f.Add(`{"a":"b","n":1,"arr":["x",2,{"o":1}],"obj":{"k":"v"}}`, "a", "b")
	f.Add(`{"kubernetes.io":{"namespace":"ci"}}`, "/kubernetes.io/namespace", "ci")
	f.Add(`{"n":1e400}`, "n", "glob:1*")
	f.Fuzz(func(t *testing.T, doc, key, value string) {
		dec := json.NewDecoder(strings.NewReader(doc))
		dec.UseNumber()
		var claims map[string]any
		if dec.Decode(&claims) != nil || claims == nil {
			return
		}
		got := identity.MatchClaim(claims, key, []string{value})
		// A missing claim never matches.
		if !strings.HasPrefix(key, "/") {
			if _, ok := claims[key]; !ok && got {
				t.Fatalf("missing claim %q matched %q", key, value)
			}
		}
		// Objects never match.
		if v, ok := claims[key]; ok && !strings.HasPrefix(key, "/") {
			if _, isObj := v.(map[string]any); isObj && got {
				t.Fatalf("object claim %q matched %q", key, value)
			}
			if s, isStr := v.(string); isStr && !strings.HasPrefix(value, identity.GlobPrefix) && got != (s == value) {
				t.Fatalf("string claim %q=%q vs %q: %v", key, s, value, got)
			}
		}
	})
}
