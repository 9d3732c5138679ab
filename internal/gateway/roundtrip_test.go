package gateway

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// roundTripEnv is a real emulator over TLS and a gateway upstream to it, so
// that handler.roundTrip is exercised exactly as forward calls it.
type roundTripEnv struct {
	inst   *emulatortest.Instance
	token  string // a session token
	master string
	qid    string // a finished query
}

func newRoundTripEnv(t *testing.T) *roundTripEnv {
	t.Helper()
	inst := emulatortest.Start(t, emulator.Config{
		Account: "acme",
		Users:   map[string]string{"alice": "pw-roundtrip-1234"},
		Logger:  slog.New(slog.DiscardHandler),
	})
	e := &roundTripEnv{inst: inst}
	var login struct {
		Data struct {
			Token       string `json:"token"`
			MasterToken string `json:"masterToken"`
		} `json:"data"`
		Success bool `json:"success"`
	}
	e.post(t, "/session/v1/login-request", "", loginJSON, &login)
	if !login.Success || login.Data.Token == "" {
		t.Fatalf("login: %+v", login)
	}
	e.token, e.master = login.Data.Token, login.Data.MasterToken
	var q struct {
		Data struct {
			QueryID string `json:"queryId"`
		} `json:"data"`
		Success bool `json:"success"`
	}
	e.post(t, "/queries/v1/query-request?requestId="+newRequestID(t), e.token, `{"sqlText":"CREATE TABLE rt (n INT)","sequenceId":1}`, &q)
	if !q.Success || q.Data.QueryID == "" {
		t.Fatalf("create table: %+v", q)
	}
	e.qid = q.Data.QueryID
	return e
}

const loginJSON = `{"data":{"CLIENT_APP_ID":"Go","ACCOUNT_NAME":"acme","LOGIN_NAME":"alice","PASSWORD":"pw-roundtrip-1234"}}`

// post sends a request straight to the emulator (set-up, not under test).
func (e *roundTripEnv) post(t *testing.T, uri, token, body string, v any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.inst.URL+uri, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", `Snowflake Token="`+token+`"`)
	}
	resp, err := e.inst.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("%s: %v", uri, err)
	}
}

func newRequestID(t *testing.T) string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// handlerTo returns a handler whose account upstream is the emulator,
// dialling through control (nil: plain).
func (e *roundTripEnv) handlerTo(t *testing.T, control func(string, string, syscall.RawConn) error) (*handler, *upstream) {
	t.Helper()
	g := &Gateway{
		cfg: Config{
			Dialer:          &net.Dialer{Timeout: 10 * time.Second, Control: control},
			UpstreamTLS:     e.inst.ClientTLS.Clone(),
			UpstreamTimeout: time.Minute,
		},
		log: slog.New(slog.DiscardHandler),
	}
	up, err := g.newUpstream("acme", "acme.snowflakecomputing.com", e.inst.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(up.transport.CloseIdleConnections)
	return &handler{g: g, host: "acme.snowflakecomputing.com", log: g.log}, up
}

// TestRoundTripRetries drives roundTrip through each upstream fault and
// checks the three promises: what is safe is retried (the emulator sees the
// request again), what is not safe is sent once, and no statement ever
// executes twice (the emulator's query log has at most one entry per
// requestId).
func TestRoundTripRetries(t *testing.T) {
	e := newRoundTripEnv(t)
	faults := e.inst.Server.Faults()
	tests := []struct {
		name     string
		kind     snowflake.Kind
		method   string
		path     string // without requestId
		body     string
		noReqID  bool
		fault    []emulator.Fault
		failDial int // dials refused before the request is written
		endpoint string
		// want: the status the caller gets (0: an error), the requests
		// the emulator saw, and the statements it executed.
		wantStatus int
		wantHits   int64
		wantExec   int
	}{
		{
			name: "query: 503 burst absorbed", kind: snowflake.KindQueryRequest,
			method: "POST", path: "/queries/v1/query-request", body: `{"sqlText":"INSERT INTO rt VALUES (1)","sequenceId":2}`,
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointQuery, Status: 503, Count: 2}},
			endpoint: emulator.EndpointQuery, wantStatus: 200, wantHits: 3, wantExec: 1,
		},
		{
			name: "query: lost reply, retried with the same requestId, executed once", kind: snowflake.KindQueryRequest,
			method: "POST", path: "/queries/v1/query-request", body: `{"sqlText":"INSERT INTO rt VALUES (2)","sequenceId":3}`,
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointQuery, Reset: true, After: true, Count: 1}},
			endpoint: emulator.EndpointQuery, wantStatus: 200, wantHits: 2, wantExec: 1,
		},
		{
			name: "query: executed, then 503, then the duplicate's answer", kind: snowflake.KindQueryRequest,
			method: "POST", path: "/queries/v1/query-request", body: `{"sqlText":"INSERT INTO rt VALUES (3)","sequenceId":4}`,
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointQuery, Status: 503, After: true, Count: 1}},
			endpoint: emulator.EndpointQuery, wantStatus: 200, wantHits: 2, wantExec: 1,
		},
		{
			name: "query: a long outage goes to the driver after 3 attempts", kind: snowflake.KindQueryRequest,
			method: "POST", path: "/queries/v1/query-request", body: `{"sqlText":"INSERT INTO rt VALUES (4)","sequenceId":5}`,
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointQuery, Status: 503, Count: 10}},
			endpoint: emulator.EndpointQuery, wantStatus: 503, wantHits: retryAttempts, wantExec: 0,
		},
		{
			name: "query without a requestId is never resent", kind: snowflake.KindQueryRequest, noReqID: true,
			method: "POST", path: "/queries/v1/query-request", body: `{"sqlText":"INSERT INTO rt VALUES (6)","sequenceId":7}`,
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointQuery, Reset: true, After: true, Count: 1}},
			endpoint: emulator.EndpointQuery, wantStatus: 0, wantHits: 1, wantExec: 1,
		},
		{
			name: "result GET: 503 absorbed", kind: snowflake.KindQueryResult, method: "GET",
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointResult, Status: 503, Count: 1}},
			endpoint: emulator.EndpointResult, wantStatus: 200, wantHits: 2,
		},
		{
			name: "result GET: reset absorbed", kind: snowflake.KindQueryResult, method: "GET",
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointResult, Reset: true, Count: 1}},
			endpoint: emulator.EndpointResult, wantStatus: 200, wantHits: 2,
		},
		{
			name: "login: lost reply is not resent (it made a session)", kind: snowflake.KindLogin,
			method: "POST", path: "/session/v1/login-request", body: loginJSON,
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointLogin, Reset: true, After: true, Count: 1}},
			endpoint: emulator.EndpointLogin, wantStatus: 0, wantHits: 1,
		},
		{
			name: "login: 503 goes to the driver", kind: snowflake.KindLogin,
			method: "POST", path: "/session/v1/login-request", body: loginJSON,
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointLogin, Status: 503, Count: 1}},
			endpoint: emulator.EndpointLogin, wantStatus: 503, wantHits: 1,
		},
		{
			name: "login: refused dials are retried (nothing was sent)", kind: snowflake.KindLogin,
			method: "POST", path: "/session/v1/login-request", body: loginJSON, failDial: 2,
			endpoint: emulator.EndpointLogin, wantStatus: 200, wantHits: 1,
		},
		{
			name: "renewal: lost reply is not resent", kind: snowflake.KindTokenRequest,
			method: "POST", path: "/session/token-request", body: `{"oldSessionToken":"x","requestType":"RENEW"}`,
			fault:    []emulator.Fault{{Endpoint: emulator.EndpointToken, Reset: true, Count: 1}},
			endpoint: emulator.EndpointToken, wantStatus: 0, wantHits: 1,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			faults.Clear()
			for _, f := range tc.fault {
				faults.Add(f)
			}
			var dials atomic.Int32
			var control func(string, string, syscall.RawConn) error
			if tc.failDial > 0 {
				control = func(string, string, syscall.RawConn) error {
					if dials.Add(1) <= int32(tc.failDial) {
						return errors.New("injected dial failure")
					}
					return nil
				}
			}
			h, up := e.handlerTo(t, control)
			path := tc.path
			if tc.kind == snowflake.KindQueryResult {
				path = "/queries/" + e.qid + "/result"
			}
			reqID := ""
			if !tc.noReqID && tc.kind != snowflake.KindQueryResult {
				reqID = newRequestID(t)
				path += "?requestId=" + reqID
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			out, err := http.NewRequestWithContext(ctx, tc.method, up.base.String()+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			out.Header.Set("Content-Type", "application/json")
			out.Header.Set("Accept", "application/snowflake")
			auth := e.token
			if tc.kind == snowflake.KindTokenRequest {
				auth = e.master
			}
			if tc.kind != snowflake.KindLogin {
				out.Header.Set("Authorization", `Snowflake Token="`+auth+`"`)
			}
			if tc.body != "" {
				snowflake.SetRequestBody(out, []byte(tc.body), "")
			}
			before := faults.Hits(tc.endpoint)
			call := &Call{Kind: tc.kind, Account: "acme", Host: h.host, RequestID: reqID}
			resp, err := h.roundTrip(up, call, out)
			status := 0
			if err == nil {
				status = resp.StatusCode
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if status != tc.wantStatus {
				t.Errorf("status %d (err %v), want %d", status, err, tc.wantStatus)
			}
			if hits := faults.Hits(tc.endpoint) - before; hits != tc.wantHits {
				t.Errorf("the emulator saw %d requests, want %d", hits, tc.wantHits)
			}
			if tc.kind == snowflake.KindQueryRequest {
				sql := ""
				var b struct {
					SQLText string `json:"sqlText"`
				}
				if json.Unmarshal([]byte(tc.body), &b) == nil {
					sql = b.SQLText
				}
				exec := 0
				for _, q := range e.inst.Server.QueryLog() {
					if q.SQL == sql {
						exec++
					}
				}
				if exec != tc.wantExec {
					t.Errorf("%q executed %d times, want %d", sql, exec, tc.wantExec)
				}
			}
			if tc.failDial > 0 && dials.Load() != int32(tc.failDial)+1 {
				t.Errorf("%d dials, want %d", dials.Load(), tc.failDial+1)
			}
		})
	}
	faults.Clear()
}

// TestRetryReason is the decision table of roundTrip on its own.
func TestRetryReason(t *testing.T) {
	reply := func(code int, retryAfter string) *http.Response {
		h := http.Header{}
		if retryAfter != "" {
			h.Set("Retry-After", retryAfter)
		}
		return &http.Response{StatusCode: code, Header: h, Body: io.NopCloser(bytes.NewReader(nil))}
	}
	boom := errors.New("connection reset by peer")
	tests := []struct {
		name  string
		call  Call
		resp  *http.Response
		err   error
		sent  bool
		want  string
		class retryClass
	}{
		{"login unsent", Call{Kind: snowflake.KindLogin}, nil, boom, false, "unsent", retryUnsent},
		{"login sent, reset", Call{Kind: snowflake.KindLogin}, nil, boom, true, "", retryUnsent},
		{"login 503", Call{Kind: snowflake.KindLogin}, reply(503, ""), nil, true, "", retryUnsent},
		{"renew sent, reset", Call{Kind: snowflake.KindTokenRequest}, nil, boom, true, "", retryUnsent},
		{"logout sent, reset", Call{Kind: snowflake.KindLogout}, nil, boom, true, "", retryUnsent},
		{"telemetry 503", Call{Kind: snowflake.KindTelemetry}, reply(503, ""), nil, true, "", retryUnsent},
		{"query with id, reset", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, nil, boom, true, "transport", retryIdempotent},
		{"query with id, 503", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(503, ""), nil, true, "503", retryIdempotent},
		{"query with id, 502", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(502, ""), nil, true, "502", retryIdempotent},
		{"query with id, 504", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(504, ""), nil, true, "504", retryIdempotent},
		{"query with id, 500", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(500, ""), nil, true, "", retryIdempotent},
		{"query with id, 429", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(429, ""), nil, true, "", retryIdempotent},
		{"query with id, 200", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(200, ""), nil, true, "", retryIdempotent},
		{"query with id, 503 Retry-After 1", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(503, "1"), nil, true, "503", retryIdempotent},
		{"query with id, 503 Retry-After 30", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(503, "30"), nil, true, "", retryIdempotent},
		{"query with id, 503 Retry-After date", Call{Kind: snowflake.KindQueryRequest, RequestID: "r"}, reply(503, "Wed, 21 Oct 2026 07:28:00 GMT"), nil, true, "", retryIdempotent},
		{"query without id, reset", Call{Kind: snowflake.KindQueryRequest}, nil, boom, true, "", retryUnsent},
		{"query without id, unsent", Call{Kind: snowflake.KindQueryRequest}, nil, boom, false, "unsent", retryUnsent},
		{"result GET, 503", Call{Kind: snowflake.KindQueryResult}, reply(503, ""), nil, true, "503", retryIdempotent},
		{"monitoring, reset", Call{Kind: snowflake.KindMonitoring}, nil, boom, true, "transport", retryIdempotent},
		{"abort, reset", Call{Kind: snowflake.KindAbortByRequestID}, nil, boom, true, "transport", retryIdempotent},
		{"heartbeat, 503", Call{Kind: snowflake.KindHeartbeat}, reply(503, ""), nil, true, "503", retryIdempotent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			class := retryClassOf(&tc.call)
			if class != tc.class {
				t.Fatalf("class %d, want %d", class, tc.class)
			}
			if got := retryReason(class, tc.resp, tc.err, tc.sent); got != tc.want {
				t.Fatalf("retryReason = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestRetryRequestMarksQueryRetries checks the resent query-request: the
// driver's requestId unchanged, the retry marked as the driver marks its own,
// the body intact.
func TestRetryRequestMarksQueryRetries(t *testing.T) {
	body := []byte(`{"sqlText":"SELECT 1"}`)
	out, err := http.NewRequest(http.MethodPost, "https://acme.snowflakecomputing.com/queries/v1/query-request?requestId=abc&request_guid=g1&retryCount=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	snowflake.SetRequestBody(out, body, "")
	start := time.UnixMilli(1795722768293)
	r, err := retryRequest(out, &Call{Kind: snowflake.KindQueryRequest, RequestID: "abc"}, "503", start)
	if err != nil {
		t.Fatal(err)
	}
	q := r.URL.Query()
	for k, want := range map[string]string{"requestId": "abc", "request_guid": "g1", "retryCount": "2", "retryReason": "503", "clientStartTime": "1795722768293"} {
		if got := q.Get(k); got != want {
			t.Errorf("%s = %q, want %q", k, got, want)
		}
	}
	got, _ := io.ReadAll(r.Body)
	if !bytes.Equal(got, body) {
		t.Errorf("resent body %q, want %q", got, body)
	}
	if out.URL.Query().Get("retryCount") != "1" {
		t.Error("retryRequest changed the original request")
	}
}
