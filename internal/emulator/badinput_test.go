package emulator_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
)

// envelope is the part of a Snowflake reply the raw tests read.
type envelope struct {
	Data    json.RawMessage `json:"data"`
	Code    *string         `json:"code"`
	Message *string         `json:"message"`
	Success bool            `json:"success"`
}

type rawReply struct {
	status int
	header http.Header
	body   []byte
	env    envelope
}

// do sends one raw request to the instance.
func do(t *testing.T, inst *emulatortest.Instance, method, target, token, contentType string, body []byte, hdr map[string]string) rawReply {
	t.Helper()
	u := target
	if !strings.HasPrefix(u, "http") {
		u = inst.URL + target
	}
	req, err := http.NewRequestWithContext(ctxT(t), method, u, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if token != "" {
		req.Header.Set("Authorization", `Snowflake Token="`+token+`"`)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := inst.HTTPClient().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	r := rawReply{status: resp.StatusCode, header: resp.Header, body: b}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &r.env); err != nil {
			t.Fatalf("%s %s: reply is not JSON: %v: %s", method, target, err, b)
		}
	}
	return r
}

func (r rawReply) code() string {
	if r.env.Code == nil {
		return ""
	}
	return *r.env.Code
}

const loginBody = `{"data":{"CLIENT_APP_ID":"Go","ACCOUNT_NAME":"demo","LOGIN_NAME":"alice","PASSWORD":"s3cret-pw"}}`

// rawLogin logs in over raw HTTP and returns the session and master tokens.
func rawLogin(t *testing.T, inst *emulatortest.Instance) (token, master string) {
	t.Helper()
	r := do(t, inst, "POST", "/session/v1/login-request", "", "application/json", []byte(loginBody), nil)
	var d struct{ Token, MasterToken string }
	if !r.env.Success || json.Unmarshal(r.env.Data, &d) != nil || d.Token == "" {
		t.Fatalf("login failed: %d %s", r.status, r.body)
	}
	return d.Token, d.MasterToken
}

func gz(t *testing.T, s string) []byte {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	_, _ = w.Write([]byte(s))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestBadInput(t *testing.T) {
	inst := start(t, func(c *emulator.Config) { c.MaxBodyBytes = 4096 })
	token, _ := rawLogin(t, inst)
	query := []byte(`{"sqlText":"SELECT 1"}`)
	cases := []struct {
		name, method, path, token, ctype string
		body                             []byte
		status                           int
		code                             string
		success                          bool
	}{
		{"malformed JSON login", "POST", "/session/v1/login-request", "", "application/json", []byte(`{"data":`), 400, "390400", false},
		{"JSON array body", "POST", "/session/v1/login-request", "", "application/json", []byte(`[1,2]`), 400, "390400", false},
		{"trailing garbage", "POST", "/queries/v1/query-request", token, "application/json", []byte(`{"sqlText":"SELECT 1"} x`), 400, "390400", false},
		{"wrong content type", "POST", "/queries/v1/query-request", token, "text/plain", query, 415, "390400", false},
		{"oversized body", "POST", "/queries/v1/query-request", token, "application/json", []byte(`{"sqlText":"` + strings.Repeat("x", 5000) + `"}`), 413, "390400", false},
		{"gzip bomb over the cap", "POST", "/queries/v1/query-request", token, "application/json", gz(t, `{"sqlText":"`+strings.Repeat("x", 100000)+`"}`), 413, "390400", false},
		{"missing token", "POST", "/queries/v1/query-request", "", "application/json", query, 401, "390104", false},
		{"foreign token", "POST", "/queries/v1/query-request", "someone-elses-token", "application/json", query, 200, "390104", false},
		{"unknown endpoint", "POST", "/api/v2/statements", token, "application/json", query, 404, "390400", false},
		{"wrong method", "GET", "/queries/v1/query-request", token, "application/json", nil, 405, "390400", false},
		{"logout without delete", "POST", "/session", token, "application/json", nil, 404, "390400", false},
		{"unknown query result", "GET", "/queries/01234567-0000-0000-0000-000000000000/result", token, "application/json", nil, 200, "000709", false},
		{"bad bind value", "POST", "/queries/v1/query-request", token, "application/json", []byte(`{"sqlText":"SELECT ?","bindings":{"1":{"type":"TEXT","value":{"a":1}}}}`), 400, "390400", false},
		{"renew with a session token", "POST", "/session/token-request", token, "application/json", []byte(`{"oldSessionToken":"x","requestType":"RENEW"}`), 200, "390104", false},
		{"gzip query works", "POST", "/queries/v1/query-request", token, "application/json", gz(t, `{"sqlText":"SELECT 1"}`), 200, "", true},
		{"telemetry accepted", "POST", "/telemetry/send", token, "application/json", []byte(`{"logs":[]}`), 200, "", true},
		{"heartbeat", "POST", "/session/heartbeat", token, "application/json", nil, 200, "", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, inst, tc.method, tc.path, tc.token, tc.ctype, tc.body, nil)
			if r.status != tc.status || r.code() != tc.code || r.env.Success != tc.success {
				t.Fatalf("got %d code %q success %v, want %d %q %v: %s", r.status, r.code(), r.env.Success, tc.status, tc.code, tc.success, r.body)
			}
			if !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
				t.Fatalf("reply content type %q is not JSON", r.header.Get("Content-Type"))
			}
		})
	}
}

func TestSessionCodes(t *testing.T) {
	inst := start(t, nil)
	token, master := rawLogin(t, inst)
	query := []byte(`{"sqlText":"SELECT 1"}`)
	inst.Server.Faults().ExpireSessions()
	if r := do(t, inst, "POST", "/queries/v1/query-request", token, "application/json", query, nil); r.code() != "390112" || r.status != 200 {
		t.Fatalf("expired session: %d %q", r.status, r.code())
	}
	renew := []byte(`{"oldSessionToken":"` + token + `","requestType":"RENEW"}`)
	r := do(t, inst, "POST", "/session/token-request", master, "application/json", renew, nil)
	var d struct {
		SessionToken, MasterToken string
		ValidityInSecondsST       int64
	}
	if !r.env.Success || json.Unmarshal(r.env.Data, &d) != nil || d.SessionToken == "" || d.ValidityInSecondsST <= 0 {
		t.Fatalf("renewal: %s", r.body)
	}
	if r := do(t, inst, "POST", "/queries/v1/query-request", d.SessionToken, "application/json", query, nil); !r.env.Success {
		t.Fatalf("query with the renewed token: %s", r.body)
	}
	if r := do(t, inst, "POST", "/queries/v1/query-request", token, "application/json", query, nil); r.code() != "390112" {
		t.Fatalf("old token after renewal: %q, want 390112", r.code())
	}
	inst.Server.Faults().ExpireMasters()
	renew = []byte(`{"oldSessionToken":"` + d.SessionToken + `","requestType":"RENEW"}`)
	if r := do(t, inst, "POST", "/session/token-request", d.MasterToken, "application/json", renew, nil); r.code() != "390114" {
		t.Fatalf("renewal with expired master: %q, want 390114", r.code())
	}
	if r := do(t, inst, "POST", "/session?delete=true", d.SessionToken, "application/json", nil, nil); !r.env.Success {
		t.Fatalf("logout: %s", r.body)
	}
	if r := do(t, inst, "POST", "/queries/v1/query-request", d.SessionToken, "application/json", query, nil); r.code() != "390104" {
		t.Fatalf("token after logout: %q, want 390104", r.code())
	}
}

func TestChunkStorage(t *testing.T) {
	inst := start(t, func(c *emulator.Config) { c.InlineRows = 10; c.ChunkRows = 100 })
	token, _ := rawLogin(t, inst)
	r := do(t, inst, "POST", "/queries/v1/query-request", token, "application/json", []byte(`{"sqlText":"`+selectSQL(1000)+`"}`), nil)
	var d struct {
		Chunks       []struct{ URL string }
		ChunkHeaders map[string]string
		Qrmk         string
	}
	if err := json.Unmarshal(r.env.Data, &d); err != nil || len(d.Chunks) == 0 {
		t.Fatalf("no chunks in %s", r.body)
	}
	chunk, err := url.Parse(d.Chunks[0].URL)
	if err != nil {
		t.Fatal(err)
	}
	if chunk.Hostname() == inst.Host || chunk.Hostname() != emulatortest.StorageHost {
		t.Fatalf("chunk host %q, want the storage host %q", chunk.Hostname(), emulatortest.StorageHost)
	}
	apiOnStorage := "https://" + chunk.Host + "/session/v1/login-request"
	if r := do(t, inst, "POST", apiOnStorage, "", "application/json", []byte(loginBody), nil); r.status != 403 || !strings.Contains(string(r.body), "AccessDenied") {
		t.Fatalf("login on the storage host: %d %s, want 403 AccessDenied", r.status, r.body)
	}
	onAccountHost := *chunk
	onAccountHost.Host = strings.Replace(chunk.Host, chunk.Hostname(), inst.Host, 1)
	tampered := *chunk
	q := tampered.Query()
	q.Set("X-Sg-Expires", "9999999999")
	tampered.RawQuery = q.Encode()
	wrongKey := map[string]string{}
	for k, v := range d.ChunkHeaders {
		wrongKey[k] = v
	}
	wrongKey["x-amz-server-side-encryption-customer-key"] = "AAAA" + d.Qrmk[4:]
	cases := []struct {
		name    string
		url     string
		headers map[string]string
		status  int
		s3code  string
	}{
		{"presigned with SSE-C headers", chunk.String(), d.ChunkHeaders, 200, ""},
		{"no SSE-C headers", chunk.String(), nil, 400, "InvalidRequest"},
		{"wrong SSE-C key", chunk.String(), wrongKey, 403, "AccessDenied"},
		{"tampered expiry", tampered.String(), d.ChunkHeaders, 403, "SignatureDoesNotMatch"},
		{"account host instead of storage host", onAccountHost.String(), d.ChunkHeaders, 403, "SignatureDoesNotMatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequestWithContext(ctxT(t), "GET", tc.url, nil)
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			req.Header.Set("Accept-Encoding", "gzip")
			resp, err := inst.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d: %s", resp.StatusCode, tc.status, body)
			}
			if tc.status == 200 {
				if resp.Header.Get("Content-Encoding") != "gzip" || len(body) < 2 || body[0] != 0x1f || body[1] != 0x8b {
					t.Fatalf("chunk not served as gzip with Content-Encoding (%q)", resp.Header.Get("Content-Encoding"))
				}
				return
			}
			if resp.Header.Get("Content-Type") != "application/xml" || !strings.Contains(string(body), "<Code>"+tc.s3code+"</Code>") {
				t.Fatalf("error body %q (%s), want S3 code %s", body, resp.Header.Get("Content-Type"), tc.s3code)
			}
		})
	}
}

func TestAdminEndpoint(t *testing.T) {
	inst := start(t, nil)
	r := do(t, inst, "POST", "/__emulator/faults", "", "application/json", []byte(`{"faults":[{"endpoint":"login","status":503,"count":1},{"endpoint":"heartbeat","latency":"10ms"}]}`), nil)
	if r.status != 200 || !strings.Contains(string(r.body), `"latency":"10ms"`) {
		t.Fatalf("admin: %d %s", r.status, r.body)
	}
	if r := do(t, inst, "POST", "/__emulator/faults", "", "application/json", []byte(`{"faults":[{"endpoint":"login","status":1}]}`), nil); r.status != 400 {
		t.Fatalf("fault with a bad status: %d, want 400", r.status)
	}
	if r := do(t, inst, "POST", "/session/v1/login-request", "", "application/json", []byte(loginBody), nil); r.status != 503 {
		t.Fatalf("login under the fault: %d, want 503", r.status)
	}
	rawLogin(t, inst) // the fault was used up
	if r := do(t, inst, "POST", "/__emulator/faults", "", "application/json", []byte(`{"faults":[{"endpoint":""}]}`), nil); r.status != 400 {
		t.Fatalf("fault without endpoint: %d, want 400", r.status)
	}
}

func TestResultFormatChoice(t *testing.T) {
	inst := start(t, nil)
	cases := []struct {
		name      string
		clientApp string
		loginPar  string // SESSION_PARAMETERS JSON
		alter     string
		sql       string
		want      string
	}{
		{"Go defaults to arrow", "Go", `{}`, "", "SELECT 1", "arrow"},
		{"Go login parameter json", "Go", `{"GO_QUERY_RESULT_FORMAT":"JSON"}`, "", "SELECT 1", "json"},
		{"Go ALTER SESSION json", "Go", `{}`, "ALTER SESSION SET GO_QUERY_RESULT_FORMAT = 'JSON'", "SELECT 1", "json"},
		{"Go QUERY_RESULT_FORMAT json", "Go", `{"QUERY_RESULT_FORMAT":"JSON"}`, "", "SELECT 1", "json"},
		{"Node always json", "JavaScript", `{"QUERY_RESULT_FORMAT":"ARROW"}`, "", "SELECT 1", "json"},
		{"other clients default json", "PythonConnector", `{}`, "", "SELECT 1", "json"},
		{"other clients may ask arrow", "PythonConnector", `{"QUERY_RESULT_FORMAT":"ARROW"}`, "", "SELECT 1", "arrow"},
		{"DML is json for Go", "Go", `{}`, "CREATE TABLE IF NOT EXISTS fmt_t (x NUMBER)", "INSERT INTO fmt_t VALUES (1)", "json"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := `{"data":{"CLIENT_APP_ID":"` + tc.clientApp + `","ACCOUNT_NAME":"demo","LOGIN_NAME":"alice","PASSWORD":"s3cret-pw","SESSION_PARAMETERS":` + tc.loginPar + `}}`
			r := do(t, inst, "POST", "/session/v1/login-request", "", "application/json", []byte(body), nil)
			var d struct{ Token string }
			if json.Unmarshal(r.env.Data, &d) != nil || d.Token == "" {
				t.Fatalf("login: %s", r.body)
			}
			if tc.alter != "" {
				if r := do(t, inst, "POST", "/queries/v1/query-request", d.Token, "application/json", []byte(`{"sqlText":"`+tc.alter+`"}`), nil); !r.env.Success {
					t.Fatalf("%s: %s", tc.alter, r.body)
				}
			}
			r = do(t, inst, "POST", "/queries/v1/query-request", d.Token, "application/json", []byte(`{"sqlText":"`+tc.sql+`"}`), nil)
			var q struct {
				QueryResultFormat string          `json:"queryResultFormat"`
				Rowset            json.RawMessage `json:"rowset"`
				RowsetBase64      *string         `json:"rowsetBase64"`
			}
			if err := json.Unmarshal(r.env.Data, &q); err != nil || !r.env.Success {
				t.Fatalf("query: %v %s", err, r.body)
			}
			if q.QueryResultFormat != tc.want {
				t.Fatalf("queryResultFormat %q, want %q", q.QueryResultFormat, tc.want)
			}
			if (tc.want == "json") != (q.Rowset != nil) || (tc.want == "arrow") != (q.RowsetBase64 != nil) {
				t.Fatalf("rowset/rowsetBase64 do not match the format: %s", r.body)
			}
		})
	}
}

func TestDescribeOnly(t *testing.T) {
	inst := start(t, nil)
	token, _ := rawLogin(t, inst)
	post := func(body string) rawReply {
		return do(t, inst, "POST", "/queries/v1/query-request", token, "application/json", []byte(body), nil)
	}
	if r := post(`{"sqlText":"CREATE TABLE d (x NUMBER, y VARCHAR)"}`); !r.env.Success {
		t.Fatalf("create: %s", r.body)
	}
	type reply struct {
		RowType []struct {
			Name string `json:"name"`
		} `json:"rowtype"`
		Rowset          [][]*string `json:"rowset"`
		StatementTypeID int64       `json:"statementTypeId"`
	}
	cases := []struct {
		sql      string
		typ      int64
		columns  string
		executed bool
	}{
		{"INSERT INTO d VALUES (1, 'a')", 0x3100, "", false},
		{"DELETE FROM d", 0x3300, "", false},
		{"SELECT x, y FROM d", 0x1000, "X,Y", true},
	}
	for _, tc := range cases {
		t.Run(tc.sql, func(t *testing.T) {
			before := len(inst.Server.QueryLog())
			r := post(`{"sqlText":"` + tc.sql + `","describeOnly":true}`)
			var d reply
			if err := json.Unmarshal(r.env.Data, &d); err != nil || !r.env.Success {
				t.Fatalf("describe: %v %s", err, r.body)
			}
			var cols []string
			for _, c := range d.RowType {
				cols = append(cols, c.Name)
			}
			if d.StatementTypeID != tc.typ || strings.Join(cols, ",") != tc.columns || len(d.Rowset) != 0 {
				t.Fatalf("describe %q: type %#x columns %v rows %d", tc.sql, d.StatementTypeID, cols, len(d.Rowset))
			}
			if ran := len(inst.Server.QueryLog()) > before; ran != tc.executed {
				t.Fatalf("executed = %v, want %v", ran, tc.executed)
			}
		})
	}
	r := post(`{"sqlText":"SELECT COUNT(*) FROM d","parameters":{"GO_QUERY_RESULT_FORMAT":"JSON"}}`)
	var d reply
	if err := json.Unmarshal(r.env.Data, &d); err != nil || len(d.Rowset) != 1 || *d.Rowset[0][0] != "0" {
		t.Fatalf("describeOnly changed the table: %s", r.body)
	}
}

func TestAbortForms(t *testing.T) {
	inst := start(t, func(c *emulator.Config) { c.ResultWait = 2 * time.Second })
	token, _ := rawLogin(t, inst)
	post := func(path, body string) rawReply {
		return do(t, inst, "POST", path, token, "application/json", []byte(body), nil)
	}
	monitor := func(id string) string {
		r := do(t, inst, "GET", "/monitoring/queries/"+id, token, "application/json", nil, nil)
		var d struct {
			Queries []struct{ Status, ErrorCode string }
		}
		if err := json.Unmarshal(r.env.Data, &d); err != nil || len(d.Queries) != 1 {
			t.Fatalf("monitoring: %v %s", err, r.body)
		}
		return d.Queries[0].Status
	}

	// Async statement aborted by query id (Node's form).
	r := post("/queries/v1/query-request?requestId=req-1", `{"sqlText":"SELECT SYSTEM$WAIT(600)","asyncExec":true}`)
	var started struct{ QueryID, GetResultURL string }
	if err := json.Unmarshal(r.env.Data, &started); err != nil || r.code() != "333334" || started.GetResultURL != "/queries/"+started.QueryID+"/result" {
		t.Fatalf("async start: %v %s", err, r.body)
	}
	if s := monitor(started.QueryID); s != "RUNNING" {
		t.Fatalf("status %s, want RUNNING", s)
	}
	if r := do(t, inst, "GET", started.GetResultURL, token, "application/json", nil, nil); r.code() != "333334" {
		t.Fatalf("poll of a running async query: %q, want 333334", r.code())
	}
	if r := post("/queries/"+started.QueryID+"/abort-request", ""); !r.env.Success {
		t.Fatalf("abort: %s", r.body)
	}
	waitFor(t, "the statement to stop", func() bool { return inst.Server.Running() == 0 })
	if s := monitor(started.QueryID); s != "ABORTED" {
		t.Fatalf("status %s, want ABORTED", s)
	}
	if r := do(t, inst, "GET", started.GetResultURL, token, "application/json", nil, nil); r.code() != "000604" {
		t.Fatalf("result of the aborted query: %q, want 000604", r.code())
	}

	// An abort by requestId that overtakes its query (Go's form) cancels it on arrival.
	if r := post("/queries/v1/abort-request", `{"requestId":"req-2"}`); !r.env.Success {
		t.Fatalf("early abort: %s", r.body)
	}
	if r := post("/queries/v1/query-request?requestId=req-2", `{"sqlText":"SELECT SYSTEM$WAIT(600)"}`); r.code() != "000604" {
		t.Fatalf("query after its abort: %q, want 000604: %s", r.code(), r.body)
	}
	for _, e := range inst.Server.QueryLog() {
		if e.RequestID == "req-2" {
			t.Fatal("the statement aborted before it arrived was executed")
		}
	}
	// The same requestId again returns the first outcome and runs nothing.
	before := len(inst.Server.QueryLog())
	if r := post("/queries/v1/query-request?requestId=req-1", `{"sqlText":"SELECT 1"}`); r.code() != "000604" {
		t.Fatalf("repeated requestId: %q, want the original 000604", r.code())
	}
	if len(inst.Server.QueryLog()) != before {
		t.Fatal("a repeated requestId executed again")
	}
}

func TestReplyCompression(t *testing.T) {
	for _, disabled := range []bool{false, true} {
		t.Run(fmt.Sprintf("disabled=%v", disabled), func(t *testing.T) {
			inst := start(t, func(c *emulator.Config) { c.DisableCompression = disabled })
			req, _ := http.NewRequestWithContext(ctxT(t), "POST", inst.URL+"/session/v1/login-request", strings.NewReader(loginBody))
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Accept-Encoding", "gzip") // set by hand: the transport does not decode
			resp, err := inst.HTTPClient().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body io.Reader = resp.Body
			if got := resp.Header.Get("Content-Encoding") == "gzip"; got == disabled {
				t.Fatalf("Content-Encoding %q with compression disabled=%v", resp.Header.Get("Content-Encoding"), disabled)
			}
			if !disabled {
				zr, err := gzip.NewReader(resp.Body)
				if err != nil {
					t.Fatal(err)
				}
				body = zr
			}
			var env envelope
			if err := json.NewDecoder(body).Decode(&env); err != nil || !env.Success {
				t.Fatalf("login reply: %v %+v", err, env)
			}
		})
	}
}
