package recording

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// secretRecords carry one distinctive secret value per place the gateway
// meets one. Every value contains "S3KR1T".
var secretRecords = []struct {
	name   string
	rec    Record
	secret string
	keep   string // a non-secret value that must survive
}{
	{"login password and token", Record{Kind: KindLoginRequest, Body: json.RawMessage(
		`{"data":{"LOGIN_NAME":"agent","PASSWORD":"pw-S3KR1T-1","TOKEN":"tok-S3KR1T-2","CLIENT_APP_ID":"Go","SESSION_PARAMETERS":{"X":12345678901234567890123}}}`)},
		"S3KR1T", `12345678901234567890123`},
	{"login response tokens", Record{Kind: KindLoginResponse, Body: json.RawMessage(
		`{"data":{"token":"st-S3KR1T-3","masterToken":"mt-S3KR1T-4","validityInSeconds":3600},"success":true}`)},
		"S3KR1T", `"validityInSeconds":3600`},
	{"renew tokens", Record{Kind: KindRenew, Body: json.RawMessage(
		`{"oldSessionToken":"old-S3KR1T-5","requestType":"RENEW","data":{"sessionToken":"new-S3KR1T-6"}}`)},
		"S3KR1T", "RENEW"},
	{"authorization header", Record{Kind: KindQueryRequest, Headers: map[string]string{
		"Authorization": `Snowflake Token="hdr-S3KR1T-7"`, "User-Agent": "Go/1.19.1"}},
		"S3KR1T", "Go/1.19.1"},
	{"stage credentials", Record{Kind: KindQueryResponse, Body: json.RawMessage(
		`{"data":{"stageInfo":{"locationType":"S3","location":"bucket/prefix/","creds":{"AWS_KEY_ID":"ASIA-S3KR1T-8","AWS_SECRET_KEY":"sk-S3KR1T-9","AWS_TOKEN":"at-S3KR1T-10"}},"encryptionMaterial":{"queryStageMasterKey":"qsmk-S3KR1T-11","smkId":42}}}`)},
		"S3KR1T", "bucket/prefix/"},
	{"result chunk keys and presigned URLs", Record{Kind: KindQueryResponse, Body: json.RawMessage(
		`{"data":{"qrmk":"qrmk-S3KR1T-12","chunkHeaders":{"x-amz-server-side-encryption-customer-algorithm":"AES256","x-amz-server-side-encryption-customer-key":"sse-S3KR1T-13"},"chunks":[{"url":"https://b.s3.us-west-2.amazonaws.com/r/data_0?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=cred-S3KR1T-14&X-Amz-Signature=sig-S3KR1T-15&X-Amz-Security-Token=st-S3KR1T-16","rowCount":1000}]}}`)},
		"S3KR1T", "AES256"},
	{"chunk fetch path and headers", Record{Kind: KindChunk, Path: "/r/data_0?Signature=sig-S3KR1T-17&Expires=1700000000",
		Headers: map[string]string{"x-amz-server-side-encryption-customer-key": "sse-S3KR1T-18"}},
		"S3KR1T", "Expires=1700000000"},
	{"SQL credentials", Record{Kind: KindQueryRequest,
		SQL: `CREATE USER bob PASSWORD = 'pw-S3KR1T-19'; COPY INTO t FROM 's3://b/p' CREDENTIALS = (AWS_KEY_ID='ak-S3KR1T-20' AWS_SECRET_KEY = "sk-S3KR1T-21") ENCRYPTION = (MASTER_KEY = 'mk-S3KR1T-22')`},
		"S3KR1T", "CREATE USER bob"},
	{"error text", Record{Kind: KindError, Error: &Error{Code: "390100", Message: `upstream said {"token":"tok-S3KR1T-23"} at https://x/y?sig=sig-S3KR1T-24`}},
		"S3KR1T", "390100"},
	{"body that is not JSON", Record{Kind: KindResponse, Body: json.RawMessage(`token: "x" PASSWORD='pw-S3KR1T-25' <html>`)},
		"S3KR1T", "html"},
	{"bindings", Record{Kind: KindQueryRequest, SQL: "select ?", Bindings: json.RawMessage(`{"1":{"type":"TEXT","value":"https://h/p?X-Amz-Signature=sig-S3KR1T-26"}}`)},
		"S3KR1T", "TEXT"},
}

func TestRedaction(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		k := newKeys(t)
		w, err := NewWriter(t.TempDir(), testMeta("redact"), k.options(encrypt))
		if err != nil {
			t.Fatal(err)
		}
		for _, tt := range secretRecords {
			if err := w.Append(context.Background(), tt.rec); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
		}
		if err := w.Seal(SealSessionEnd); err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(w.Path())
		if bytes.Contains(raw, []byte("S3KR1T")) {
			t.Errorf("encrypt=%v: a secret in the file bytes", encrypt)
		}
		if !encrypt {
			// Compression could hide a secret from the raw check: look inside.
			dec, _ := zstd.NewReader(nil)
			for _, f := range frames(t, raw) {
				if f.kind == frameSegment {
					plain, err := dec.DecodeAll(f.body, nil)
					if err != nil {
						t.Fatal(err)
					}
					if bytes.Contains(plain, []byte("S3KR1T")) {
						t.Errorf("a secret in a decompressed segment: %s", plain)
					}
				}
			}
			dec.Close()
		}
		_, recs, err := readAll(t, w.Path(), k.id)
		if err != nil {
			t.Fatal(err)
		}
		for i, tt := range secretRecords {
			b, _ := json.Marshal(recs[i+1])
			if strings.Contains(string(b), tt.secret) {
				t.Errorf("%s: secret survived: %s", tt.name, b)
			}
			if !strings.Contains(string(b), tt.keep) && !strings.Contains(string(b), strings.ReplaceAll(tt.keep, `"`, `\"`)) {
				t.Errorf("%s: %q was lost: %s", tt.name, tt.keep, b)
			}
			if !strings.Contains(string(b), "REDACTED") {
				t.Errorf("%s: no redaction marker: %s", tt.name, b)
			}
		}
	}
}

func TestRedactSQL(t *testing.T) {
	tests := []struct{ in, want string }{
		{"select 1", "select 1"},
		{"ALTER USER x SET PASSWORD='a''b'", "ALTER USER x SET PASSWORD='[REDACTED]'"},
		{"create stage s credentials=(aws_key_id=abc aws_secret_key=def)", "create stage s credentials=(aws_key_id='[REDACTED]' aws_secret_key='[REDACTED]')"},
		{"alter user u set password = $$x y$$", "alter user u set password = '[REDACTED]'"},
		{"select 'password' from t", "select 'password' from t"},
		{"create secret s type=generic_string secret_string='abc'", "create secret s type=generic_string secret_string='[REDACTED]'"},
		{"create security integration i oauth_client_secret = 'x', oauth_refresh_token='y'", "create security integration i oauth_client_secret = '[REDACTED]', oauth_refresh_token='[REDACTED]'"},
	}
	for _, tt := range tests {
		if got := RedactSQL(tt.in); got != tt.want {
			t.Errorf("RedactSQL(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestResultPolicy(t *testing.T) {
	rows := func(n int) [][]*string {
		out := make([][]*string, n)
		for i := range out {
			out[i] = []*string{str("0123456789")} // 14 bytes against the cap
		}
		return out
	}
	chunk := func(qid string, n int) Record {
		return Record{Kind: KindChunk, QueryID: qid, Result: &Result{Rows: rows(n)}}
	}
	tests := []struct {
		name        string
		policy      ResultPolicy
		maxBytes    int64
		recs        []Record
		wantRows    []int
		wantOmitted int64
	}{
		{"full", ResultPolicy{}, 0, []Record{chunk("q", 10), chunk("q", 10)}, []int{10, 10}, 0},
		{"none", ResultPolicy{Mode: ResultsNone}, 0, []Record{chunk("q", 10), {Kind: KindChunk, Result: &Result{Data: []byte("arrow")}}}, []int{0, 0}, 10},
		{"first rows across chunks", ResultPolicy{Mode: ResultsFirstRows, Rows: 15}, 0,
			[]Record{chunk("q", 10), chunk("q", 10), chunk("q2", 3)}, []int{10, 5, 3}, 5},
		{"session byte cap", ResultPolicy{}, 14 * 12, []Record{chunk("a", 10), chunk("b", 10), chunk("c", 1)}, []int{10, 2, 0}, 9},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newKeys(t)
			opts := k.options(false)
			opts.Results, opts.MaxBytes = tt.policy, tt.maxBytes
			w, err := NewWriter(t.TempDir(), testMeta("res"), opts)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range tt.recs {
				if err := w.Append(context.Background(), r); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Seal(SealSessionEnd); err != nil {
				t.Fatal(err)
			}
			_, recs, err := readAll(t, w.Path())
			if err != nil {
				t.Fatal(err)
			}
			var omitted int64
			for i, want := range tt.wantRows {
				r := recs[i+1].Result
				if len(r.Rows) != want {
					t.Errorf("record %d: %d rows, want %d", i+1, len(r.Rows), want)
				}
				if r.OmittedRows > 0 && r.OmittedReason == "" {
					t.Errorf("record %d: rows omitted without a reason", i+1)
				}
				omitted += r.OmittedRows
			}
			if omitted != tt.wantOmitted {
				t.Errorf("omitted %d rows, want %d", omitted, tt.wantOmitted)
			}
			rep, _ := Verify(w.Path(), k.pub)
			if !rep.OK() || rep.Seal.OmittedRows != tt.wantOmitted {
				t.Errorf("seal = %+v, problems %v", rep.Seal, rep.Problems)
			}
		})
	}
}
