package snowflake

import (
	"net/url"
	"testing"
)

func TestRoute(t *testing.T) {
	const qid = "01ba13b4-0104-e9fd-0000-0111029ca00e"
	tests := []struct {
		method, target string
		want           Endpoint
	}{
		{"POST", "/session/v1/login-request?databaseName=DB1&requestId=1&request_guid=2&roleName=R1", Endpoint{Kind: KindLogin}},
		{"GET", "/session/v1/login-request", Endpoint{}},
		{"POST", "/session/token-request?requestId=1", Endpoint{Kind: KindTokenRequest}},
		{"POST", "/session/heartbeat?requestId=1&request_guid=2", Endpoint{Kind: KindHeartbeat}},
		{"POST", "/session?delete=true&requestId=1", Endpoint{Kind: KindLogout}},
		{"POST", "/session", Endpoint{}},
		{"POST", "/session?delete=false", Endpoint{}},
		{"DELETE", "/session?delete=true", Endpoint{}},
		{"POST", "/session/authenticator-request", Endpoint{Kind: KindAuthenticatorRequest}},
		{"POST", "/queries/v1/query-request?requestId=9a24&retryCount=1", Endpoint{Kind: KindQueryRequest}},
		{"PUT", "/queries/v1/query-request", Endpoint{}},
		{"GET", "/queries/" + qid + "/result", Endpoint{Kind: KindQueryResult, QueryID: qid}},
		{"GET", "/queries/" + qid + "/result?disableOfflineChunks=false&request_guid=x", Endpoint{Kind: KindQueryResult, QueryID: qid}},
		{"POST", "/queries/" + qid + "/result", Endpoint{}},
		{"GET", "/queries/" + qid + "/result/", Endpoint{}},
		{"GET", "/queries//result", Endpoint{}},
		{"GET", "/queries/../session/result", Endpoint{}},
		{"GET", "/queries/a%2Fb/result", Endpoint{}},
		{"GET", "/monitoring/queries/" + qid, Endpoint{Kind: KindMonitoring, QueryID: qid}},
		{"GET", "/monitoring/queries/" + qid + "/x", Endpoint{}},
		{"GET", "/monitoring/queries/", Endpoint{}},
		{"POST", "/queries/v1/abort-request?requestId=2", Endpoint{Kind: KindAbortByRequestID}},
		{"POST", "/queries/" + qid + "/abort-request", Endpoint{Kind: KindAbortByQueryID, QueryID: qid}},
		{"GET", "/queries/" + qid + "/abort-request", Endpoint{}},
		{"POST", "/telemetry/send", Endpoint{Kind: KindTelemetry}},
		{"GET", ChunkPathPrefix + "AbC-_09", Endpoint{Kind: KindChunk, ChunkID: "AbC-_09"}},
		{"GET", ChunkPathPrefix, Endpoint{}},
		{"GET", ChunkPathPrefix + "a.b", Endpoint{}},
		{"POST", ChunkPathPrefix + "abc", Endpoint{}},
		{"POST", OCSPPathPrefix, Endpoint{Kind: KindOCSP}},
		{"GET", OCSPPathPrefix + "/MEMwQTA%2FMD0wOzAJBgUrDgMCGgUABBQ%3D", Endpoint{Kind: KindOCSP}},
		{"GET", "/retry/localhost:8080/_snowgate/ocsp/MEMw%2BQTA%2F", Endpoint{Kind: KindOCSP}},
		{"POST", OCSPPathPrefix + "/MEMw%2F", Endpoint{}},
		{"GET", "/queries/a%2Db/result", Endpoint{}},
		{"GET", OCSPPathPrefix + "/MEMwQTA/MD0wOzAJBgUrDgMCGgUABBQ=", Endpoint{Kind: KindOCSP}},
		{"GET", "/ocsp_response_cache.json", Endpoint{Kind: KindOCSP}},
		{"GET", "/retry/ocsp.example/MEMw", Endpoint{Kind: KindOCSP}},
		{"POST", "/oauth/token-request", Endpoint{}},
		{"GET", "/console/login", Endpoint{}},
		{"GET", "/", Endpoint{}},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.target, func(t *testing.T) {
			u, err := url.ParseRequestURI(tt.target)
			if err != nil {
				t.Fatal(err)
			}
			if got := Route(tt.method, u); got != tt.want {
				t.Fatalf("Route = %+v (%s), want %+v (%s)", got, got.Kind, tt.want, tt.want.Kind)
			}
		})
	}
	if got := Route("GET", nil); got.Kind != KindUnknown {
		t.Fatalf("nil URL: %v", got)
	}
}

func TestKindString(t *testing.T) {
	seen := map[string]bool{}
	for k := KindUnknown; k <= KindOCSP; k++ {
		s := k.String()
		if s == "" || seen[s] {
			t.Fatalf("kind %d has name %q (empty or repeated)", k, s)
		}
		seen[s] = true
	}
	if Kind(99).String() != "unknown" {
		t.Fatal("out-of-range kind")
	}
	if !KindQueryRequest.NeedsSession() || KindLogin.NeedsSession() || KindChunk.NeedsSession() {
		t.Fatal("NeedsSession")
	}
}
