package gateway

import (
	"testing"

	"github.com/snowgate/snowgate/internal/policy"
)

// TestClassifyRequest: bodies built to make the gateway read one statement
// while the service reads another land in unknown (or the real class).
func TestClassifyRequest(t *testing.T) {
	cases := []struct {
		name, body string
		want       policy.Class
	}{
		{"plain", `{"sqlText":"SELECT 1","sequenceId":1}`, policy.ClassRead},
		{"escaped keyword", `{"sqlText":"\u0044ROP TABLE t"}`, policy.ClassDDL},
		{"escaped semicolon", `{"sqlText":"SELECT 1\u003b DROP TABLE t"}`, policy.ClassMultiStatement},
		{"duplicate sqlText", `{"sqlText":"SELECT 1","sqlText":"DROP TABLE t"}`, policy.ClassUnknown},
		{"case-folded duplicate", `{"sqlText":"SELECT 1","SQLTEXT":"DROP TABLE t"}`, policy.ClassUnknown},
		{"long-s-folded duplicate", `{"sqlText":"SELECT 1","\u017FqlText":"DROP TABLE t"}`, policy.ClassUnknown},
		{"sqlText not a string", `{"sqlText":["DROP TABLE t"]}`, policy.ClassUnknown},
		{"no sqlText", `{"sequenceId":1}`, policy.ClassUnknown},
		{"empty sqlText", `{"sqlText":""}`, policy.ClassUnknown},
		{"trailing garbage", `{"sqlText":"SELECT 1"} {"sqlText":"DROP TABLE t"}`, policy.ClassUnknown},
		{"not JSON", `SELECT 1`, policy.ClassUnknown},
		{"array", `[{"sqlText":"SELECT 1"}]`, policy.ClassUnknown},
		{"nul in text", `{"sqlText":"SELECT 1\u0000; DROP TABLE t"}`, policy.ClassUnknown},
		{"line separator escape", `{"sqlText":"SELECT 1 -- x\u2028; DROP TABLE t"}`, policy.ClassUnknown},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, st := classifyRequest([]byte(tc.body))
			if st.Class != tc.want {
				t.Fatalf("class %s (%s), want %s", st.Class, st.Reason, tc.want)
			}
		})
	}
}

// FuzzClassifyRequest: any body classifies without panicking, into a valid
// class; a body the parser refuses is unknown.
func FuzzClassifyRequest(f *testing.F) {
	for _, s := range []string{`{"sqlText":"SELECT 1"}`, `{"sqlText":"SELECT 1","SQLTEXT":"DROP TABLE t"}`, `{"sqlText":"INSERT INTO t VALUES (?)","bindings":{"1":{"type":"FIXED","value":"1"}}}`, `{}`, `[`, ``} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		q, st := classifyRequest(body)
		if !st.Class.Valid() {
			t.Fatalf("invalid class %q", st.Class)
		}
		if q == nil && st.Class != policy.ClassUnknown {
			t.Fatalf("unreadable body classified %s", st.Class)
		}
	})
}
