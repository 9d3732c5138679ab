package gateway_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/gateway"
)

func TestMarshalRedacted(t *testing.T) {
	cases := []struct {
		name     string
		x        gateway.Exchange
		secrets  []string // must not appear
		keep     []string // must appear
		notJSON  bool
		bodySize int
	}{
		{
			name:    "login request",
			x:       gateway.Exchange{Kind: "login", RequestBody: []byte(`{"data":{"LOGIN_NAME":"alice","PASSWORD":"hunter2-pw","ACCOUNT_NAME":"acme","TOKEN":"eyJjwt.abc.def"}}`)},
			secrets: []string{"hunter2-pw", "eyJjwt.abc.def"},
			keep:    []string{"alice", "acme"},
		},
		{
			name:    "login reply",
			x:       gateway.Exchange{Kind: "login", ResponseBody: []byte(`{"data":{"token":"ver:1-tok-SECRETSESSION","masterToken":"ver:1-mt-SECRETMASTER","sessionId":12345678901234567890},"success":true}`)},
			secrets: []string{"SECRETSESSION", "SECRETMASTER"},
			keep:    []string{"12345678901234567890"},
		},
		{
			name: "renew request",
			x: gateway.Exchange{Kind: "token-request", RequestBody: []byte(`{"oldSessionToken":"OLDSECRET","requestType":"RENEW"}`),
				RequestHeader: http.Header{"Authorization": {`Snowflake Token="MASTERSECRET"`}, "User-Agent": {"Go"}}},
			secrets: []string{"OLDSECRET", "MASTERSECRET"},
			keep:    []string{"RENEW", "Go"},
		},
		{
			name:    "query reply with chunks",
			x:       gateway.Exchange{Kind: "query-request", ResponseBody: []byte(`{"data":{"qrmk":"QRMKSECRET","chunkHeaders":{"x-amz-server-side-encryption-customer-key":"SSECSECRET"},"chunks":[{"url":"https://bucket/x?X-Amz-Signature=SIGSECRET","rowCount":10}],"stageInfo":{"creds":{"AWS_SECRET_KEY":"AWSSECRET"}}}}`)},
			secrets: []string{"QRMKSECRET", "SSECSECRET", "SIGSECRET", "AWSSECRET"},
			keep:    []string{"rowCount"},
		},
		{
			name:    "chunk fetch headers",
			x:       gateway.Exchange{Kind: "chunk", RequestHeader: http.Header{"X-Amz-Server-Side-Encryption-Customer-Key": {"KEYSECRET"}, "X-Amz-Server-Side-Encryption-Customer-Algorithm": {"AES256"}}},
			secrets: []string{"KEYSECRET"},
			keep:    []string{"AES256"},
		},
		{
			name:    "body that is not JSON",
			x:       gateway.Exchange{Kind: "unknown", RequestBody: []byte("PASSWORD=plain-secret")},
			secrets: []string{"plain-secret"},
			keep:    []string{"not JSON"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := gateway.MarshalRedacted(tc.x)
			if err != nil {
				t.Fatal(err)
			}
			if !json.Valid(b) || bytes.Contains(b, []byte("\n")) {
				t.Fatalf("not one JSON line: %s", b)
			}
			for _, s := range tc.secrets {
				if strings.Contains(string(b), s) {
					t.Errorf("output contains %q: %s", s, b)
				}
			}
			for _, s := range tc.keep {
				if !strings.Contains(string(b), s) {
					t.Errorf("output lost %q: %s", s, b)
				}
			}
		})
	}
}

// FuzzMarshalRedacted feeds untrusted bodies to the redactor: it must always
// produce one valid JSON line, whatever the input.
func FuzzMarshalRedacted(f *testing.F) {
	f.Add([]byte(`{"data":{"PASSWORD":"s3cr3t-value"}}`))
	f.Add([]byte(`[{"token":"s3cr3t-value"},1,2.5e300,null]`))
	f.Add([]byte(`{"a":`))
	f.Add([]byte("\x1f\x8b garbage"))
	f.Fuzz(func(t *testing.T, body []byte) {
		b, err := gateway.MarshalRedacted(gateway.Exchange{RequestBody: body, ResponseBody: body})
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) || bytes.Contains(b, []byte("\n")) {
			t.Fatalf("not one JSON line: %q", b)
		}
	})
}
