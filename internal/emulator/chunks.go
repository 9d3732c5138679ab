package emulator

import (
	"crypto/hmac"
	"crypto/md5"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// storagePrefix is the path prefix of the emulator's "cloud storage"
// endpoint, which serves result chunks by presigned URL.
const storagePrefix = "/__storage/"

// Query parameters of a presigned chunk URL.
const (
	paramExpires   = "X-Sg-Expires"
	paramSignature = "X-Sg-Signature"
)

// SSE-C header names, as S3 uses them for customer-provided keys.
const (
	headerSSEAlgorithm = "x-amz-server-side-encryption-customer-algorithm"
	headerSSEKey       = "x-amz-server-side-encryption-customer-key"
	headerSSEKeyMD5    = "x-amz-server-side-encryption-customer-key-md5"
)

// sseHeaders are the chunkHeaders of a result with query result master key qrmk.
func sseHeaders(qrmk string) map[string]string {
	key, _ := base64.StdEncoding.DecodeString(qrmk)
	sum := md5.Sum(key)
	return map[string]string{
		headerSSEAlgorithm: "AES256",
		headerSSEKey:       qrmk,
		headerSSEKeyMD5:    base64.StdEncoding.EncodeToString(sum[:]),
	}
}

// storageBase is the base URL chunk links point at: Config.StorageURL, or
// the request's own scheme and port on the other loopback name.
func (s *Server) storageBase(r *http.Request) string {
	if s.storage != nil {
		return s.storage.Scheme + "://" + s.storage.Host
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, port = r.Host, ""
	}
	alt := "127.0.0.1"
	if host == "127.0.0.1" {
		alt = "localhost"
	}
	if port == "" {
		return scheme + "://" + alt
	}
	return scheme + "://" + net.JoinHostPort(alt, port)
}

// sign is the HMAC of a chunk URL's host, path and expiry.
func (s *Server) sign(host, path string, expires int64) string {
	m := hmac.New(sha256.New, s.signKey)
	m.Write([]byte(strings.ToLower(host) + "\n" + path + "\n" + strconv.FormatInt(expires, 10)))
	return hex.EncodeToString(m.Sum(nil))
}

// chunkURL is the presigned URL of chunk i of query id.
func (s *Server) chunkURL(base, id string, i int) string {
	u, _ := url.Parse(base)
	path := storagePrefix + "results/" + id + "/main/data_0_0_" + strconv.Itoa(i)
	exp := time.Now().Add(s.cfg.ChunkURLTTL).Unix()
	v := url.Values{}
	v.Set(headerSSEAlgorithm, "AES256")
	v.Set("response-content-encoding", "gzip")
	v.Set(paramExpires, strconv.FormatInt(exp, 10))
	v.Set(paramSignature, s.sign(u.Hostname(), path, exp))
	return base + path + "?" + v.Encode()
}

// s3Error is the XML error body cloud storage sends.
type s3Error struct {
	XMLName   xml.Name `xml:"Error"`
	Code      string   `xml:"Code"`
	Message   string   `xml:"Message"`
	RequestID string   `xml:"RequestId"`
}

func storageError(w http.ResponseWriter, status int, code, msg string) {
	body, _ := xml.Marshal(s3Error{Code: code, Message: msg, RequestID: newQueryID()})
	w.Header().Set("Content-Type", "application/xml")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

// handleChunk serves GET /__storage/results/<qid>/main/data_0_0_<i>: a
// presigned, expiring URL on the storage host name, SSE-C headers
// required, the gzip body sent with Content-Encoding: gzip.
func (s *Server) handleChunk(w http.ResponseWriter, r *http.Request) {
	rest := strings.TrimPrefix(r.URL.Path, storagePrefix+"results/")
	id, file, ok := strings.Cut(rest, "/main/data_0_0_")
	idx, err := strconv.Atoi(file)
	if !ok || err != nil || idx < 0 || strings.Contains(id, "/") {
		storageError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	qv := r.URL.Query()
	exp, err := strconv.ParseInt(qv.Get(paramExpires), 10, 64)
	sig := qv.Get(paramSignature)
	if err != nil || sig == "" {
		storageError(w, http.StatusForbidden, "AccessDenied", "Query-string authentication requires the signature and expiry parameters.")
		return
	}
	want := s.sign(hostOnly(r.Host), r.URL.Path, exp)
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		storageError(w, http.StatusForbidden, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
		return
	}
	if time.Now().Unix() > exp {
		storageError(w, http.StatusForbidden, "AccessDenied", "Request has expired")
		return
	}
	q := s.queries.get(id)
	if q == nil || !q.finished() || q.page == nil || idx >= len(q.page.Chunks) {
		storageError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	alg, key, sum := r.Header.Get(headerSSEAlgorithm), r.Header.Get(headerSSEKey), r.Header.Get(headerSSEKeyMD5)
	if alg == "" || key == "" {
		storageError(w, http.StatusBadRequest, "InvalidRequest", "The object was stored using a form of Server Side Encryption. The correct parameters must be provided to retrieve the object.")
		return
	}
	expect := sseHeaders(q.qrmk)
	if alg != "AES256" || subtle.ConstantTimeCompare([]byte(key), []byte(q.qrmk)) != 1 || (sum != "" && sum != expect[headerSSEKeyMD5]) {
		storageError(w, http.StatusForbidden, "AccessDenied", "The provided encryption key does not match the object's key.")
		return
	}
	c := q.page.Chunks[idx]
	f, err := os.Open(c.File)
	if err != nil {
		storageError(w, http.StatusNotFound, "NoSuchKey", "The specified key does not exist.")
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		storageError(w, http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Encoding", "gzip")
	h.Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	h.Set(headerSSEAlgorithm, "AES256")
	h.Set(headerSSEKeyMD5, expect[headerSSEKeyMD5])
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	buf := make([]byte, 256<<10)
	for {
		n, rerr := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
		}
		if rerr != nil {
			return
		}
	}
}
