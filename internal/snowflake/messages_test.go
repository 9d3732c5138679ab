package snowflake

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const goWIFLogin = `{"data":{"CLIENT_APP_ID":"Go","CLIENT_APP_VERSION":"1.19.1","SVN_REVISION":"","ACCOUNT_NAME":"myacct",` +
	`"AUTHENTICATOR":"WORKLOAD_IDENTITY","PROVIDER":"OIDC","TOKEN":"eyJ.workload.jwt",` +
	`"SESSION_PARAMETERS":{"CLIENT_VALIDATE_DEFAULT_PARAMETERS":true,"QUERY_TAG":"x"},` +
	`"CLIENT_ENVIRONMENT":{"APPLICATION":"Go","OS":"linux","OCSP_MODE":""}}}`

func TestLoginRequestRewrite(t *testing.T) {
	tests := []struct {
		name, body         string
		authenticator, tok string
		wantErr            bool
	}{
		{"go workload identity", goWIFLogin, "WORKLOAD_IDENTITY", "eyJ.workload.jwt", false},
		{"go password", `{"data":{"CLIENT_APP_ID":"Go","ACCOUNT_NAME":"a","LOGIN_NAME":"u","PASSWORD":"p"}}`, "", "", false},
		{"numeric app version", `{"data":{"CLIENT_APP_VERSION":3.1,"AUTHENTICATOR":"SNOWFLAKE","LOGIN_NAME":"u","PASSWORD":"p"}}`, "SNOWFLAKE", "", false},
		{"no data", `{"DATA":{}}`, "", "", true},
		{"token not a string", `{"data":{"TOKEN":1}}`, "", "", true},
		{"case-smuggled authenticator", `{"data":{"AUTHENTICATOR":"X","authenticator":"Y"}}`, "", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr, err := ParseLoginRequest([]byte(tt.body))
			if tt.wantErr {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if lr.Authenticator != tt.authenticator || lr.Token != tt.tok {
				t.Fatalf("authenticator %q token %q", lr.Authenticator, lr.Token)
			}
			if err := lr.SetKeyPairLogin("ACME", "SVC_AGENT", "gw.jwt"); err != nil {
				t.Fatal(err)
			}
			out := string(lr.Body.Bytes())
			for _, secret := range []string{`"PASSWORD"`, `"PROVIDER"`, "eyJ.workload.jwt", `"p"`} {
				if strings.Contains(out, secret) {
					t.Fatalf("rewritten login still holds %s: %s", secret, out)
				}
			}
			again, err := ParseLoginRequest([]byte(out))
			if err != nil {
				t.Fatal(err)
			}
			if again.Authenticator != "SNOWFLAKE_JWT" || again.Token != "gw.jwt" || again.AccountName != "ACME" || again.LoginName != "SVC_AGENT" {
				t.Fatalf("rewritten login: %+v", again)
			}
			if string(again.ClientAppVersion) != string(lr.ClientAppVersion) {
				t.Fatalf("CLIENT_APP_VERSION %s → %s", lr.ClientAppVersion, again.ClientAppVersion)
			}
		})
	}
	lr, err := ParseLoginRequest([]byte(goWIFLogin))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := lr.SessionParameters()
	if err != nil || sp == nil || !sp.Has("QUERY_TAG") {
		t.Fatalf("session parameters %v %v", sp, err)
	}
}

func TestLoginResponseRewrite(t *testing.T) {
	tests := []struct {
		name, body      string
		session, master string
		sessionID       string
		rewriteErr      bool
	}{
		{"login", `{"data":{"masterToken":"M","token":"S","validityInSeconds":3600,"masterValidityInSeconds":14400,` +
			`"sessionId":9223372036854775807123,"parameters":[{"name":"TIMEZONE","value":"UTC"}],"idToken":null},` +
			`"code":null,"message":null,"success":true}`, "S", "M", "9223372036854775807123", false},
		{"renew", `{"data":{"sessionToken":"S2","validityInSecondsST":3600,"masterToken":"M2","validityInSecondsMT":14400,` +
			`"sessionId":1172562260498},"code":null,"message":null,"success":true}`, "S2", "M2", "1172562260498", false},
		{"failed login", `{"data":null,"code":"390100","message":"Incorrect username or password","success":false}`, "", "", "", true},
		{"success without token", `{"data":{"masterToken":"M"},"success":true}`, "", "M", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr, err := ParseLoginResponse([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if lr.Token != tt.session || lr.MasterToken != tt.master || lr.SessionID.String() != tt.sessionID {
				t.Fatalf("parsed %q %q %q", lr.Token, lr.MasterToken, lr.SessionID)
			}
			err = lr.ReplaceTokens("snowgate:s", "snowgate:m")
			if tt.rewriteErr {
				if err == nil {
					t.Fatal("rewrote a reply without a session token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			out := string(lr.Body.Bytes())
			if strings.Contains(out, `"`+tt.session+`"`) || strings.Contains(out, `"`+tt.master+`"`) {
				t.Fatalf("real token left in %s", out)
			}
			again, err := ParseLoginResponse([]byte(out))
			if err != nil {
				t.Fatal(err)
			}
			if again.Token != "snowgate:s" || again.MasterToken != "snowgate:m" || again.SessionID != lr.SessionID || !again.Success {
				t.Fatalf("re-parsed %+v", again)
			}
		})
	}
}

func TestRenewRequest(t *testing.T) {
	r, err := ParseRenewRequest([]byte(`{"oldSessionToken":"handle","requestType":"RENEW"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.OldSessionToken != "handle" || r.RequestType != "RENEW" {
		t.Fatalf("%+v", r)
	}
	if err := r.SetOldSessionToken("real"); err != nil {
		t.Fatal(err)
	}
	if got := string(r.Body.Bytes()); got != `{"oldSessionToken":"real","requestType":"RENEW"}` {
		t.Fatal(got)
	}
}

func TestQueryRequest(t *testing.T) {
	body := `{"sqlText":"SELECT ?, ?","asyncExec":false,"sequenceId":4,"isInternal":false,` +
		`"parameters":{"MULTI_STATEMENT_COUNT":2,"QUERY_TAG":"x"},` +
		`"bindings":{"1":{"type":"FIXED","value":"42"}},` +
		`"queryContextDTO":{"entries":[{"context":{},"id":0,"priority":0,"timestamp":1795722174809164}]}}`
	q, err := ParseQueryRequest([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if q.SQLText != "SELECT ?, ?" || q.AsyncExec || q.SequenceID != "4" || q.Parameters == nil || len(q.Bindings) == 0 {
		t.Fatalf("%+v", q)
	}
	if string(q.Body.Bytes()) != body {
		t.Fatal("untouched query request changed")
	}
	node, err := ParseQueryRequest([]byte(`{"disableOfflineChunks":false,"sqlText":"select 1","asyncExec":true}`))
	if err != nil || !node.AsyncExec || node.SequenceID != "" || node.Parameters != nil {
		t.Fatalf("node request %+v %v", node, err)
	}
	for _, bad := range []string{`{"sqlText":1}`, `{"asyncExec":"yes"}`, `{"parameters":[]}`, `{"sequenceId":"4"}`} {
		if _, err := ParseQueryRequest([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	a, err := ParseAbortRequest([]byte(`{"requestId":"9a24"}`))
	if err != nil || a.RequestID != "9a24" {
		t.Fatalf("abort %+v %v", a, err)
	}
}

func TestQueryResponseChunks(t *testing.T) {
	body := `{"data":{"rowtype":[{"name":"C"}],"rowset":[["0"]],"total":2001,"returned":1,"queryResultFormat":"json",` +
		`"chunks":[{"url":"https://b.s3.amazonaws.com/r/data_0_0_0?sig=a&x=1","rowCount":1000,"uncompressedSize":24890,"compressedSize":4123},` +
		`{"url":"https://b.s3.amazonaws.com/r/data_0_0_1?sig=b","rowCount":1000}],` +
		`"qrmk":"a2V5","chunkHeaders":{"x-amz-server-side-encryption-customer-algorithm":"AES256"},` +
		`"statementTypeId":4096,"queryId":"01ba13b4-0104-e9fd-0000-0111029ca00e"},"success":true,"code":null,"message":null}`
	q, err := ParseQueryResponse([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	if q.QueryID != "01ba13b4-0104-e9fd-0000-0111029ca00e" || q.StatementTypeID != "4096" || q.InProgress() {
		t.Fatalf("%+v", q)
	}
	h, err := q.ChunkHeaders()
	if err != nil || h["x-amz-server-side-encryption-customer-algorithm"] != "AES256" {
		t.Fatalf("chunk headers %v %v", h, err)
	}
	table := map[string]string{}
	n, err := q.RewriteChunkURLs(func(i int, orig string) (string, error) {
		id := NewChunkID()
		table[id] = orig
		return ChunkURL("acme.snowflakecomputing.com", id), nil
	})
	if err != nil || n != 2 {
		t.Fatalf("rewrote %d: %v", n, err)
	}
	again, err := ParseQueryResponse(q.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	chunks, _ := again.Data.Array("chunks")
	for i := 0; i < chunks.Len(); i++ {
		c, _ := chunks.Object(i)
		u, _, _ := c.String("url")
		if !IsGatewayChunkURL(u) || !strings.HasPrefix(u, "https://acme.snowflakecomputing.com/_snowgate/chunk/") {
			t.Fatalf("chunk %d url %s", i, u)
		}
		id := u[strings.LastIndex(u, "/")+1:]
		if !strings.Contains(table[id], "data_0_0_"+fmt.Sprint(i)) {
			t.Fatalf("id %s maps to %s", id, table[id])
		}
		if rc, _, _ := c.Number("rowCount"); rc != "1000" {
			t.Fatalf("rowCount lost: %s", c.Bytes())
		}
	}
	if strings.Contains(string(q.Body.Bytes()), "amazonaws") {
		t.Fatal("original chunk URL left in the reply")
	}
	stop := errors.New("stop")
	if _, err := q.RewriteChunkURLs(func(int, string) (string, error) { return "", stop }); !errors.Is(err, stop) {
		t.Fatalf("rewrite error not returned: %v", err)
	}

	inProgress, err := ParseQueryResponse([]byte(`{"code":"333334","success":true,"message":"Asynchronous execution in progress.",` +
		`"data":{"getResultUrl":"/queries/01bf/result","queryAbortsAfterSecs":300,"queryId":"01bf"}}`))
	if err != nil || !inProgress.InProgress() || inProgress.GetResultURL != "/queries/01bf/result" {
		t.Fatalf("%+v %v", inProgress, err)
	}
	if n, err := inProgress.RewriteChunkURLs(nil); n != 0 || err != nil {
		t.Fatalf("no chunks: %d %v", n, err)
	}
	numeric, err := ParseEnvelope([]byte(`{"code":390112,"success":false}`))
	if err != nil || numeric.Code != "390112" {
		t.Fatalf("numeric code %+v %v", numeric, err)
	}
	for _, bad := range []string{`{"data":{"chunks":{}}}`, `{"data":{"chunks":[{"rowCount":1}]}}`, `{"data":{"chunks":[1]}}`} {
		q, err := ParseQueryResponse([]byte(bad))
		if err != nil {
			continue
		}
		if _, err := q.RewriteChunkURLs(func(int, string) (string, error) { return "x", nil }); err == nil {
			t.Errorf("rewrote %s", bad)
		}
	}
}
