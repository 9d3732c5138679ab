package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Errors of OCSP request parsing; test with errors.Is.
var (
	// ErrMalformedOCSPRequest: the request is not a DER OCSPRequest, or
	// uses a hash algorithm the responder does not know.
	ErrMalformedOCSPRequest = errors.New("malformed OCSP request")
	// ErrNotOurIssuer: the request asks about a certificate of another CA.
	ErrNotOurIssuer = errors.New("OCSP request for another issuer")
)

// OCSP response statuses (RFC 6960 §4.2.1) the responder sends without a
// signed body.
const (
	ocspMalformedRequest = 1
	ocspInternalError    = 2
	ocspUnauthorized     = 6
)

// maxOCSPRequest caps a request body; real ones are under 100 bytes per
// certificate.
const maxOCSPRequest = 8 << 10

// maxCertsPerRequest caps the certificates one request may ask about.
const maxCertsPerRequest = 8

var (
	oidSHA1      = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA256    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512    = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
	oidECDSA256  = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	oidRSA256    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	oidBasicOCSP = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 1}
	oidNonce     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1, 2}
)

// The ASN.1 of RFC 6960 §4.1 and §4.2, as far as the responder needs it.
type ocspRequestASN1 struct {
	TBSRequest        tbsRequestASN1
	OptionalSignature asn1.RawValue `asn1:"explicit,tag:0,optional"`
}

type tbsRequestASN1 struct {
	Version           int           `asn1:"explicit,tag:0,default:0,optional"`
	RequestorName     asn1.RawValue `asn1:"explicit,tag:1,optional"`
	RequestList       []singleRequestASN1
	RequestExtensions []pkix.Extension `asn1:"explicit,tag:2,optional"`
}

type singleRequestASN1 struct {
	CertID     asn1.RawValue
	Extensions []pkix.Extension `asn1:"explicit,tag:0,optional"`
}

type certIDASN1 struct {
	HashAlgorithm  pkix.AlgorithmIdentifier
	IssuerNameHash []byte
	IssuerKeyHash  []byte
	SerialNumber   *big.Int
}

type responseASN1 struct {
	Status        asn1.Enumerated
	ResponseBytes responseBytesASN1 `asn1:"explicit,tag:0"`
}

type responseBytesASN1 struct {
	ResponseType asn1.ObjectIdentifier
	Response     []byte
}

type basicResponseASN1 struct {
	TBSResponseData    asn1.RawValue
	SignatureAlgorithm pkix.AlgorithmIdentifier
	Signature          asn1.BitString
}

type responseDataASN1 struct {
	ResponderID        asn1.RawValue
	ProducedAt         time.Time `asn1:"generalized"`
	Responses          []singleResponseASN1
	ResponseExtensions []pkix.Extension `asn1:"explicit,tag:1,optional"`
}

type singleResponseASN1 struct {
	CertID     asn1.RawValue
	Good       asn1.Flag `asn1:"tag:0,optional"`
	Unknown    asn1.Flag `asn1:"tag:2,optional"`
	ThisUpdate time.Time `asn1:"generalized"`
	NextUpdate time.Time `asn1:"generalized,explicit,tag:0,optional"`
}

// OCSPRequest is a parsed OCSP request.
type OCSPRequest struct {
	// Certs are the certificates asked about, in order.
	Certs []OCSPCertID
	// Nonce is the value of the nonce extension (RFC 8954), echoed in the
	// response; nil when absent.
	Nonce []byte
}

// OCSPCertID identifies one certificate of a request.
type OCSPCertID struct {
	Hash           crypto.Hash
	IssuerNameHash []byte
	IssuerKeyHash  []byte
	Serial         *big.Int
	// Raw is the DER CertID, echoed verbatim in the response so clients
	// match it whatever hash they chose.
	Raw []byte
}

// ParseOCSPRequest parses a DER OCSPRequest. Unknown hash algorithms,
// trailing data and more than a few certificates are refused.
func ParseOCSPRequest(der []byte) (*OCSPRequest, error) {
	var req ocspRequestASN1
	rest, err := asn1.Unmarshal(der, &req)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, ErrMalformedOCSPRequest)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes after the request: %w", len(rest), ErrMalformedOCSPRequest)
	}
	list := req.TBSRequest.RequestList
	if len(list) == 0 || len(list) > maxCertsPerRequest {
		return nil, fmt.Errorf("%d certificates in one request: %w", len(list), ErrMalformedOCSPRequest)
	}
	out := &OCSPRequest{}
	for i, r := range list {
		var id certIDASN1
		rest, err := asn1.Unmarshal(r.CertID.FullBytes, &id)
		if err != nil || len(rest) != 0 || id.SerialNumber == nil {
			return nil, fmt.Errorf("certificate %d: bad CertID: %w", i, ErrMalformedOCSPRequest)
		}
		h, err := hashFor(id.HashAlgorithm.Algorithm)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %v: %w", i, err, ErrMalformedOCSPRequest)
		}
		out.Certs = append(out.Certs, OCSPCertID{
			Hash: h, IssuerNameHash: id.IssuerNameHash, IssuerKeyHash: id.IssuerKeyHash,
			Serial: id.SerialNumber, Raw: r.CertID.FullBytes,
		})
	}
	for _, ext := range req.TBSRequest.RequestExtensions {
		if ext.Id.Equal(oidNonce) {
			if len(ext.Value) == 0 || len(ext.Value) > 128 {
				return nil, fmt.Errorf("nonce of %d bytes: %w", len(ext.Value), ErrMalformedOCSPRequest)
			}
			out.Nonce = ext.Value
		} else if ext.Critical {
			return nil, fmt.Errorf("unknown critical extension %v: %w", ext.Id, ErrMalformedOCSPRequest)
		}
	}
	return out, nil
}

func hashFor(oid asn1.ObjectIdentifier) (crypto.Hash, error) {
	switch {
	case oid.Equal(oidSHA1):
		return crypto.SHA1, nil
	case oid.Equal(oidSHA256):
		return crypto.SHA256, nil
	case oid.Equal(oidSHA384):
		return crypto.SHA384, nil
	case oid.Equal(oidSHA512):
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("hash algorithm %v", oid)
}

func digest(h crypto.Hash, b []byte) []byte {
	switch h {
	case crypto.SHA1:
		s := sha1.Sum(b)
		return s[:]
	case crypto.SHA256:
		s := sha256.Sum256(b)
		return s[:]
	case crypto.SHA384:
		s := sha512.Sum384(b)
		return s[:]
	default:
		s := sha512.Sum512(b)
		return s[:]
	}
}

// StatusSource tells the responder which serials the gateway issued.
// *Minter implements it.
type StatusSource interface {
	Issued(serial *big.Int) (notAfter time.Time, ok bool)
}

// Responder answers OCSP requests about the leaves the gateway minted:
// "good" for serials the StatusSource knows, "unknown" for others of the
// CA, "unauthorized" for other issuers. Responses are signed by the CA key
// itself (RFC 6960 §4.2.2.2), which gosnowflake and snowflake-sdk accept.
// It also answers the drivers' OCSP cache-server look-ups with an empty
// cache, at once, so drivers go straight to the responder.
type Responder struct {
	ca        *CA
	src       StatusSource
	now       func() time.Time
	log       *slog.Logger
	nameHash  map[crypto.Hash][]byte
	keyHash   map[crypto.Hash][]byte
	keyID     []byte
	sigAlg    pkix.AlgorithmIdentifier
	pathStart string
}

// ResponderOptions controls a Responder. Zero fields take the defaults.
type ResponderOptions struct {
	// Path is the URL path of the responder (GET appends the base64
	// request to it); default "/_snowgate/ocsp".
	Path string
	// Logger receives one line per refused request; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// NewResponder returns a responder for the CA's leaves.
func NewResponder(ca *CA, src StatusSource, opts ResponderOptions) (*Responder, error) {
	if ca == nil || ca.key == nil || src == nil {
		return nil, errors.New("new OCSP responder: CA and status source required")
	}
	if opts.Path == "" {
		opts.Path = "/_snowgate/ocsp"
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	var spki struct {
		Algorithm pkix.AlgorithmIdentifier
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(ca.Cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil, fmt.Errorf("new OCSP responder: CA public key: %w", err)
	}
	r := &Responder{
		ca: ca, src: src, now: opts.Now, log: opts.Logger,
		nameHash: map[crypto.Hash][]byte{}, keyHash: map[crypto.Hash][]byte{},
		pathStart: strings.TrimSuffix(opts.Path, "/") + "/",
	}
	for _, h := range []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		r.nameHash[h] = digest(h, ca.Cert.RawSubject)
		r.keyHash[h] = digest(h, spki.PublicKey.RightAlign())
	}
	r.keyID = r.keyHash[crypto.SHA1]
	switch ca.key.(type) {
	case *ecdsa.PrivateKey:
		r.sigAlg = pkix.AlgorithmIdentifier{Algorithm: oidECDSA256}
	case *rsa.PrivateKey:
		r.sigAlg = pkix.AlgorithmIdentifier{Algorithm: oidRSA256, Parameters: asn1.NullRawValue}
	default:
		return nil, fmt.Errorf("new OCSP responder: unsupported CA key %T", ca.key)
	}
	return r, nil
}

// errorResponse is an OCSPResponse with only a status.
func errorResponse(status byte) []byte { return []byte{0x30, 0x03, 0x0a, 0x01, status} }

// Respond answers a DER OCSP request with a DER OCSP response. The response
// is always one to send; the error says why it is not a signed answer.
func (r *Responder) Respond(der []byte) ([]byte, error) {
	req, err := ParseOCSPRequest(der)
	if err != nil {
		return errorResponse(ocspMalformedRequest), err
	}
	now := r.now().UTC().Truncate(time.Second)
	var singles []singleResponseASN1
	for i, c := range req.Certs {
		if !bytes.Equal(c.IssuerNameHash, r.nameHash[c.Hash]) || !bytes.Equal(c.IssuerKeyHash, r.keyHash[c.Hash]) {
			return errorResponse(ocspUnauthorized), fmt.Errorf("certificate %d: %w", i, ErrNotOurIssuer)
		}
		s := singleResponseASN1{CertID: asn1.RawValue{FullBytes: c.Raw}, ThisUpdate: now.Add(-backdate)}
		if notAfter, ok := r.src.Issued(c.Serial); ok && now.Before(notAfter) {
			s.Good = true
			s.NextUpdate = notAfter.UTC().Truncate(time.Second)
		} else {
			s.Unknown = true
			s.NextUpdate = now.Add(time.Hour)
		}
		singles = append(singles, s)
	}
	keyID, err := asn1.Marshal(r.keyID)
	if err != nil {
		return errorResponse(ocspInternalError), fmt.Errorf("marshal responder id: %w", err)
	}
	data := responseDataASN1{
		ResponderID: asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 2, IsCompound: true, Bytes: keyID},
		ProducedAt:  now,
		Responses:   singles,
	}
	if req.Nonce != nil {
		data.ResponseExtensions = []pkix.Extension{{Id: oidNonce, Value: req.Nonce}}
	}
	tbs, err := asn1.Marshal(data)
	if err != nil {
		return errorResponse(ocspInternalError), fmt.Errorf("marshal response data: %w", err)
	}
	sum := sha256.Sum256(tbs)
	sig, err := r.ca.key.Sign(rand.Reader, sum[:], crypto.SHA256)
	if err != nil {
		return errorResponse(ocspInternalError), fmt.Errorf("sign OCSP response: %w", err)
	}
	basic, err := asn1.Marshal(basicResponseASN1{
		TBSResponseData:    asn1.RawValue{FullBytes: tbs},
		SignatureAlgorithm: r.sigAlg,
		Signature:          asn1.BitString{Bytes: sig, BitLength: 8 * len(sig)},
	})
	if err != nil {
		return errorResponse(ocspInternalError), fmt.Errorf("marshal basic response: %w", err)
	}
	out, err := asn1.Marshal(responseASN1{ResponseBytes: responseBytesASN1{ResponseType: oidBasicOCSP, Response: basic}})
	if err != nil {
		return errorResponse(ocspInternalError), fmt.Errorf("marshal OCSP response: %w", err)
	}
	return out, nil
}

// ServeHTTP serves the responder and the drivers' cache-server files:
//
//   - POST (any path): the body is a DER request;
//   - GET <Path>/<base64 request> (RFC 6960 appendix A), also when it is
//     wrapped in gosnowflake's privatelink form /retry/<host><Path>/<b64>;
//   - GET /ocsp_response_cache.json: an empty cache, "{}".
func (r *Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	var der []byte
	switch {
	case req.Method == http.MethodPost:
		body, err := io.ReadAll(io.LimitReader(req.Body, maxOCSPRequest+1))
		if err != nil {
			http.Error(w, "read OCSP request", http.StatusBadRequest)
			return
		}
		if len(body) > maxOCSPRequest {
			http.Error(w, "OCSP request too large", http.StatusRequestEntityTooLarge)
			return
		}
		der = body
	case req.Method == http.MethodGet && req.URL.Path == "/ocsp_response_cache.json":
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_, _ = io.WriteString(w, "{}")
		return
	case req.Method == http.MethodGet:
		i := strings.Index(req.URL.Path, r.pathStart)
		if i < 0 {
			http.NotFound(w, req)
			return
		}
		enc := req.URL.Path[i+len(r.pathStart):]
		if len(enc) > 2*maxOCSPRequest {
			http.Error(w, "OCSP request too large", http.StatusRequestEntityTooLarge)
			return
		}
		var err error
		der, err = decodeGETRequest(enc)
		if err != nil {
			w.Header().Set("Content-Type", "application/ocsp-response")
			_, _ = w.Write(errorResponse(ocspMalformedRequest))
			r.log.Info("ocsp: refused request", "remote", req.RemoteAddr, "reason", "bad base64 in GET path")
			return
		}
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	resp, err := r.Respond(der)
	if err != nil {
		r.log.Info("ocsp: refused request", "remote", req.RemoteAddr, "reason", err.Error())
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Header().Set("Cache-Control", "no-store")
	_, _ = w.Write(resp)
}

// decodeGETRequest decodes the base64 request of a GET path. Clients differ
// in whether they URL-escape it and in the alphabet and padding they use.
func decodeGETRequest(enc string) ([]byte, error) {
	if u, err := url.PathUnescape(enc); err == nil {
		enc = u
	}
	for _, e := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if der, err := e.DecodeString(enc); err == nil {
			return der, nil
		}
	}
	return nil, errors.New("not base64")
}
