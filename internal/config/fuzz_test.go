package config

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// FuzzParse feeds untrusted YAML to the configuration loader. Whatever the
// input, Parse returns either a configuration or an *Error listing at least
// one problem with a reason (never both, never neither, never a panic), and
// the same input always gives the same answer.
func FuzzParse(f *testing.F) {
	for _, p := range []string{"testdata/full.yaml", "../../appliance/snowgate.yaml"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	for _, s := range []string{
		"",
		"---\n",
		"intercept: {}\n",
		"intercept: {}\n---\nintercept: {}\n",
		"- a\n- b\n",
		"intercept:\n  domains: [a.snowflakecomputing.com]\n  domains: [b]\n",
		"intercept: &a\n  x: *a\n",
		"a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nd: [*c, *c]\n",
		"accounts:\n  x:\n    upstream: \"[::1\"\n",
		"recording:\n  retention: -1h\n",
		"dns: {listen: \"1.2.3.4:99999\"}\n",
		"credential: {private_key: $CREDENTIALS_DIRECTORY/../x}\n",
		"\t\"a\": !!binary x\n",
		"{a: 1, A: 2}\n",
		"? [a]\n: b\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > MaxFileSize {
			return // Load refuses larger files before parsing
		}
		c, err := Parse("fuzz.yaml", data)
		if (c == nil) == (err == nil) {
			t.Fatalf("Parse returned config %v and error %v", c != nil, err)
		}
		if err != nil {
			var ce *Error
			if !errors.As(err, &ce) || len(ce.Problems) == 0 {
				t.Fatalf("Parse error %T %q lists no problems", err, err)
			}
			for _, p := range ce.Problems {
				if strings.TrimSpace(p.Reason) == "" || p.Line < 0 {
					t.Fatalf("problem without a reason or with a negative line: %+v", p)
				}
			}
			if !strings.Contains(err.Error(), "fuzz.yaml") {
				t.Fatalf("error does not name the file: %q", err)
			}
		}
		c2, err2 := Parse("fuzz.yaml", data)
		if (c2 == nil) != (c == nil) || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Fatalf("Parse is not deterministic: %v / %v", err, err2)
		}
	})
}

// TestUnknownKeyFirstInFile pins the fix for a FuzzParse finding: with
// several unknown keys go-yaml named one at random, so the same file gave
// different messages from run to run. The first unknown key of the file is
// reported, at any depth.
func TestUnknownKeyFirstInFile(t *testing.T) {
	cases := []struct {
		name, yaml, key string
		line            int
	}{
		{"top level", "zz: 1\nyy: 2\nxx: 3\nww: 4\n", "zz", 1},
		{"nested", "intercept:\n  qq: 1\n  pp: 2\n  oo: 3\n", "intercept.qq", 2},
		{"in a map of accounts", "accounts:\n  a:\n    nope: 1\n    nah: 2\n", "accounts.a.nope", 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 {
				_, err := Parse("x.yaml", []byte(tc.yaml))
				var ce *Error
				if !errors.As(err, &ce) || len(ce.Problems) != 1 {
					t.Fatalf("Parse: %v", err)
				}
				if p := ce.Problems[0]; p.Key != tc.key || p.Line != tc.line || p.Reason != "unknown key" {
					t.Fatalf("got %+v, want unknown key %s on line %d", p, tc.key, tc.line)
				}
			}
		})
	}
}
