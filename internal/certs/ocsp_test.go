package certs

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ocsp"
)

type ocspFixture struct {
	ca     *CA
	minter *Minter
	resp   *Responder
	srv    *httptest.Server
}

func newOCSPFixture(t *testing.T) *ocspFixture {
	t.Helper()
	ca := newTestCA(t, "snowflakecomputing.com")
	f := &ocspFixture{ca: ca}
	var err error
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.resp.ServeHTTP(w, r) }))
	t.Cleanup(f.srv.Close)
	if f.minter, err = NewMinter(ca, MinterOptions{OCSPURL: f.srv.URL + "/_snowgate/ocsp"}); err != nil {
		t.Fatal(err)
	}
	if f.resp, err = NewResponder(ca, f.minter, ResponderOptions{}); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *ocspFixture) leaf(t *testing.T, name string) *x509.Certificate {
	t.Helper()
	c, err := f.minter.Certificate(name)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

func post(t *testing.T, url string, body []byte) []byte {
	t.Helper()
	r, err := http.Post(url, "application/ocsp-request", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	out, _ := io.ReadAll(r.Body)
	if r.StatusCode != 200 || r.Header.Get("Content-Type") != "application/ocsp-response" {
		t.Fatalf("POST: %s %q", r.Status, r.Header.Get("Content-Type"))
	}
	return out
}

func get(t *testing.T, url string) (int, []byte) {
	t.Helper()
	r, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	out, _ := io.ReadAll(r.Body)
	return r.StatusCode, out
}

// TestOCSPRoundTrip asks the responder over real HTTP, as the drivers do,
// and checks the answers with golang.org/x/crypto/ocsp, which gosnowflake
// uses.
func TestOCSPRoundTrip(t *testing.T) {
	f := newOCSPFixture(t)
	leaf := f.leaf(t, "acme.snowflakecomputing.com")
	// A leaf of the same CA the minter never issued (another process).
	strayMinter, _ := NewMinter(f.ca, MinterOptions{})
	stray, _ := strayMinter.Certificate("acme.snowflakecomputing.com")
	// A leaf of another CA.
	otherCA := newTestCA(t)
	otherMinter, _ := NewMinter(otherCA, MinterOptions{})
	foreign, _ := otherMinter.Certificate("acme.snowflakecomputing.com")

	tests := []struct {
		name   string
		cert   *x509.Certificate
		issuer *x509.Certificate
		hash   crypto.Hash
		get    bool
		status int
		errIs  error // ocsp.ResponseError for unsigned answers
	}{
		{"good sha1 post", leaf, f.ca.Cert, crypto.SHA1, false, ocsp.Good, nil},
		{"good sha256 post", leaf, f.ca.Cert, crypto.SHA256, false, ocsp.Good, nil},
		{"good sha1 get", leaf, f.ca.Cert, crypto.SHA1, true, ocsp.Good, nil},
		{"good sha512 get", leaf, f.ca.Cert, crypto.SHA512, true, ocsp.Good, nil},
		{"never issued", stray.Leaf, f.ca.Cert, crypto.SHA1, false, ocsp.Unknown, nil},
		{"other issuer", foreign.Leaf, otherCA.Cert, crypto.SHA1, false, 0, ocsp.ResponseError{Status: ocsp.Unauthorized}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := ocsp.CreateRequest(tt.cert, tt.issuer, &ocsp.RequestOptions{Hash: tt.hash})
			if err != nil {
				t.Fatal(err)
			}
			var raw []byte
			if tt.get {
				code, body := get(t, f.srv.URL+"/_snowgate/ocsp/"+base64.StdEncoding.EncodeToString(req))
				if code != 200 {
					t.Fatalf("GET status %d", code)
				}
				raw = body
			} else {
				raw = post(t, f.srv.URL+"/_snowgate/ocsp", req)
			}
			resp, err := ocsp.ParseResponseForCert(raw, tt.cert, f.ca.Cert)
			if tt.errIs != nil {
				if !errors.Is(err, tt.errIs) && err != tt.errIs {
					var re ocsp.ResponseError
					if !errors.As(err, &re) || re != tt.errIs {
						t.Fatalf("err = %v, want %v", err, tt.errIs)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if resp.Status != tt.status || resp.SerialNumber.Cmp(tt.cert.SerialNumber) != 0 {
				t.Fatalf("status %d serial %x", resp.Status, resp.SerialNumber)
			}
			now := time.Now()
			if resp.ThisUpdate.After(now) || !resp.NextUpdate.After(now) {
				t.Fatalf("window %v – %v", resp.ThisUpdate, resp.NextUpdate)
			}
			if tt.status == ocsp.Good && !resp.NextUpdate.Equal(tt.cert.NotAfter.Truncate(time.Second)) {
				t.Fatalf("nextUpdate %v, leaf expires %v", resp.NextUpdate, tt.cert.NotAfter)
			}
			if err := resp.CheckSignatureFrom(f.ca.Cert); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestOCSPNonceAndCertID: a nonce is echoed in responseExtensions and the
// CertID is echoed byte for byte.
func TestOCSPNonceAndCertID(t *testing.T) {
	f := newOCSPFixture(t)
	leaf := f.leaf(t, "acme.snowflakecomputing.com")
	plain, err := ocsp.CreateRequest(leaf, f.ca.Cert, &ocsp.RequestOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatal(err)
	}
	var req ocspRequestASN1
	if _, err := asn1.Unmarshal(plain, &req); err != nil {
		t.Fatal(err)
	}
	nonce, _ := asn1.Marshal([]byte("0123456789abcdef"))
	req.TBSRequest.RequestExtensions = []pkix.Extension{{Id: oidNonce, Value: nonce}}
	withNonce, err := asn1.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := f.resp.Respond(withNonce)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ocsp.ParseResponseForCert(raw, leaf, f.ca.Cert); err != nil {
		t.Fatalf("x/crypto/ocsp refuses the response with a nonce: %v", err)
	}
	var outer struct {
		Status        asn1.Enumerated
		ResponseBytes responseBytesASN1 `asn1:"explicit,tag:0"`
	}
	if _, err := asn1.Unmarshal(raw, &outer); err != nil {
		t.Fatal(err)
	}
	var basic basicResponseASN1
	if _, err := asn1.Unmarshal(outer.ResponseBytes.Response, &basic); err != nil {
		t.Fatal(err)
	}
	var data responseDataASN1
	if _, err := asn1.Unmarshal(basic.TBSResponseData.FullBytes, &data); err != nil {
		t.Fatal(err)
	}
	if len(data.ResponseExtensions) != 1 || !data.ResponseExtensions[0].Id.Equal(oidNonce) || !bytes.Equal(data.ResponseExtensions[0].Value, nonce) {
		t.Fatalf("nonce not echoed: %+v", data.ResponseExtensions)
	}
	if !bytes.Equal(data.Responses[0].CertID.FullBytes, req.TBSRequest.RequestList[0].CertID.FullBytes) {
		t.Fatal("CertID not echoed")
	}
	// Without a nonce there are no response extensions.
	raw, _ = f.resp.Respond(plain)
	_, _ = asn1.Unmarshal(raw, &outer)
	_, _ = asn1.Unmarshal(outer.ResponseBytes.Response, &basic)
	data = responseDataASN1{}
	_, _ = asn1.Unmarshal(basic.TBSResponseData.FullBytes, &data)
	if len(data.ResponseExtensions) != 0 {
		t.Fatal("extensions without a nonce")
	}
}

func TestOCSPBadRequests(t *testing.T) {
	f := newOCSPFixture(t)
	leaf := f.leaf(t, "acme.snowflakecomputing.com")
	good, _ := ocsp.CreateRequest(leaf, f.ca.Cert, nil)
	var req ocspRequestASN1
	_, _ = asn1.Unmarshal(good, &req)
	md5ID, _ := asn1.Marshal(certIDASN1{HashAlgorithm: pkix.AlgorithmIdentifier{Algorithm: asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}}, IssuerNameHash: []byte{1}, IssuerKeyHash: []byte{2}, SerialNumber: leaf.SerialNumber})
	md5Req := req
	md5Req.TBSRequest.RequestList = []singleRequestASN1{{CertID: asn1.RawValue{FullBytes: md5ID}}}
	md5DER, _ := asn1.Marshal(md5Req)
	tooMany := req
	for range 9 {
		tooMany.TBSRequest.RequestList = append(tooMany.TBSRequest.RequestList, req.TBSRequest.RequestList[0])
	}
	tooManyDER, _ := asn1.Marshal(tooMany)
	critical := req
	critical.TBSRequest.RequestExtensions = []pkix.Extension{{Id: asn1.ObjectIdentifier{1, 2, 3}, Critical: true, Value: []byte{5, 0}}}
	criticalDER, _ := asn1.Marshal(critical)
	tests := []struct {
		name string
		in   []byte
	}{
		{"empty", nil},
		{"garbage", []byte("not DER at all")},
		{"truncated", good[:len(good)-3]},
		{"trailing", append(bytes.Clone(good), 0, 0)},
		{"md5 cert id", md5DER},
		{"too many certs", tooManyDER},
		{"unknown critical extension", criticalDER},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw, err := f.resp.Respond(tt.in)
			if !errors.Is(err, ErrMalformedOCSPRequest) {
				t.Fatalf("err = %v", err)
			}
			if _, perr := ocsp.ParseResponse(raw, nil); perr != (ocsp.ResponseError{Status: ocsp.Malformed}) {
				t.Fatalf("response parses as %v, want malformed", perr)
			}
		})
	}
	// Over HTTP: bad base64, wrong method, oversized body, unknown path.
	if code, body := get(t, f.srv.URL+"/_snowgate/ocsp/!!!"); code != 200 || !bytes.Equal(body, errorResponse(ocspMalformedRequest)) {
		t.Fatalf("bad base64: %d %x", code, body)
	}
	if code, _ := get(t, f.srv.URL+"/elsewhere"); code != http.StatusNotFound {
		t.Fatalf("unknown path: %d", code)
	}
	r, err := http.Post(f.srv.URL+"/_snowgate/ocsp", "application/ocsp-request", bytes.NewReader(make([]byte, 1<<20)))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("1 MiB body: %s", r.Status)
	}
	dr, _ := http.NewRequest(http.MethodDelete, f.srv.URL+"/_snowgate/ocsp", nil)
	if r, err := http.DefaultClient.Do(dr); err != nil || r.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("DELETE: %v %v", r, err)
	}
}

// TestOCSPCacheServer: the drivers' cache look-ups are answered at once, and
// gosnowflake's privatelink retry form reaches the responder.
func TestOCSPCacheServer(t *testing.T) {
	f := newOCSPFixture(t)
	code, body := get(t, f.srv.URL+"/ocsp_response_cache.json")
	if code != 200 || string(body) != "{}" {
		t.Fatalf("cache server: %d %q", code, body)
	}
	leaf := f.leaf(t, "acme.snowflakecomputing.com")
	req, _ := ocsp.CreateRequest(leaf, f.ca.Cert, nil)
	host := strings.TrimPrefix(f.srv.URL, "http://")
	code, body = get(t, f.srv.URL+"/retry/"+host+"/_snowgate/ocsp/"+base64.StdEncoding.EncodeToString(req))
	if code != 200 {
		t.Fatalf("retry form: %d", code)
	}
	resp, err := ocsp.ParseResponseForCert(body, leaf, f.ca.Cert)
	if err != nil || resp.Status != ocsp.Good {
		t.Fatalf("retry form: %v %v", resp, err)
	}
}

func FuzzOCSPRequest(f *testing.F) {
	ca, err := NewCA(CAOptions{})
	if err != nil {
		f.Fatal(err)
	}
	m, _ := NewMinter(ca, MinterOptions{})
	leaf, _ := m.Certificate("acme.snowflakecomputing.com")
	r, err := NewResponder(ca, m, ResponderOptions{})
	if err != nil {
		f.Fatal(err)
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256} {
		req, _ := ocsp.CreateRequest(leaf.Leaf, ca.Cert, &ocsp.RequestOptions{Hash: h})
		f.Add(req)
	}
	f.Add([]byte{0x30, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		raw, err := r.Respond(in)
		if len(raw) == 0 {
			t.Fatal("no response")
		}
		resp, perr := ocsp.ParseResponse(raw, ca.Cert)
		if err != nil {
			if perr == nil {
				t.Fatalf("refused (%v) but the response parses as an answer", err)
			}
			return
		}
		if perr != nil {
			// x/crypto/ocsp reads single-certificate responses only.
			if req, _ := ParseOCSPRequest(in); req != nil && len(req.Certs) > 1 {
				return
			}
			t.Fatalf("answer does not parse: %v", perr)
		}
		if resp.Status == ocsp.Good {
			if _, ok := m.Issued(resp.SerialNumber); !ok {
				t.Fatalf("good for serial %x never issued", resp.SerialNumber)
			}
		}
	})
}
