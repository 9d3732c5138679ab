package policy

import (
	"strings"
	"testing"
)

// BenchmarkClassify measures classification of typical statements and of a
// long one. The "baseline" sub-benchmark scans the same texts for ';' with
// strings.Count, so results can be read as ratios measured in the same run.
func BenchmarkClassify(b *testing.B) {
	typical := []string{
		"SELECT a, b FROM analytics.public.orders o JOIN analytics.public.users u ON o.uid = u.id WHERE o.ts > '2026-01-01'",
		"WITH s AS (SELECT 1 a) INSERT INTO t SELECT a FROM s",
		"USE WAREHOUSE wh",
		"GRANT ROLE r TO USER u",
		"SELECT 'it''s; DROP' /* c */ FROM t -- x",
	}
	long := "SELECT " + strings.Repeat("col_a + 'str' * 3, ", 20000) + "1 FROM analytics.public.t"
	cases := []struct {
		name  string
		texts []string
	}{{"typical", typical}, {"long-400KB", []string{long}}}
	for _, c := range cases {
		var bytes int64
		for _, s := range c.texts {
			bytes += int64(len(s))
		}
		b.Run(c.name+"/baseline", func(b *testing.B) {
			b.SetBytes(bytes)
			n := 0
			for b.Loop() {
				for _, s := range c.texts {
					n += strings.Count(s, ";")
				}
			}
			_ = n
		})
		b.Run(c.name+"/classify", func(b *testing.B) {
			b.SetBytes(bytes)
			b.ReportAllocs()
			for b.Loop() {
				for _, s := range c.texts {
					Classify(s)
				}
			}
		})
	}
	p, err := New(Config{Name: "bench", Rules: []RuleConfig{{Objects: []string{"ANALYTICS.PII.*"}, Action: Deny}}})
	if err != nil {
		b.Fatal(err)
	}
	b.Run("typical/decide", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, s := range typical {
				p.DecideSQL(s, Namespace{Database: "ANALYTICS", Schema: "PUBLIC"})
			}
		}
	})
}
