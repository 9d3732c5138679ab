package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snowgate/snowgate/internal/redirect"
)

// Workload is who opened a connection, as the redirect recorded it.
type Workload struct {
	CgroupID uint64 `json:"cgroup_id"`
	PID      uint32 `json:"pid"`
	UID      uint32 `json:"uid"`
	// Comm is the process name from /proc/<pid>/comm at accept time; empty
	// when the process is already gone.
	Comm string `json:"comm,omitempty"`
}

func newWorkload(o redirect.Origin) Workload {
	w := Workload{CgroupID: o.CgroupID, PID: o.PID, UID: o.UID}
	if o.PID != 0 {
		if b, err := os.ReadFile("/proc/" + strconv.FormatUint(uint64(o.PID), 10) + "/comm"); err == nil {
			w.Comm = strings.TrimSpace(string(b))
		}
	}
	return w
}

// Exchange is one request/response pair that went through the gateway.
// Bodies are the decoded (decompressed) JSON; chunk bodies are not kept,
// only their size.
type Exchange struct {
	Start    time.Time     `json:"start"`
	Duration time.Duration `json:"duration_ns"`
	// Kind is the endpoint (snowflake.Kind.String()).
	Kind     string   `json:"kind"`
	Account  string   `json:"account,omitempty"`
	Host     string   `json:"host"`
	Workload Workload `json:"workload"`

	Method         string      `json:"method"`
	Path           string      `json:"path"`
	RequestHeader  http.Header `json:"request_header,omitempty"`
	RequestBody    []byte      `json:"-"`
	Status         int         `json:"status"`
	ResponseHeader http.Header `json:"response_header,omitempty"`
	ResponseBody   []byte      `json:"-"`
	// ResponseSize is the number of body bytes sent to the client.
	ResponseSize int64 `json:"response_size"`
	// ChunkID and QueryID are set for chunk fetches.
	ChunkID string `json:"chunk_id,omitempty"`
	QueryID string `json:"query_id,omitempty"`
	// Error says why the gateway answered itself or the exchange broke.
	Error string `json:"error,omitempty"`
}

// ExchangeSink receives every exchange. Record is called after the reply
// went to the client; an implementation must not keep secrets.
type ExchangeSink interface {
	Record(ctx context.Context, x Exchange) error
}

// JSONLinesSink writes one redacted JSON object per exchange to a file.
type JSONLinesSink struct {
	mu sync.Mutex
	f  *os.File
}

// NewJSONLinesSink opens (appends to, creating with mode 0600) path.
func NewJSONLinesSink(path string) (*JSONLinesSink, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("exchange log: %w", err)
	}
	return &JSONLinesSink{f: f}, nil
}

// Record implements ExchangeSink.
func (s *JSONLinesSink) Record(_ context.Context, x Exchange) error {
	line, err := MarshalRedacted(x)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.f.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("exchange log: %w", err)
	}
	return nil
}

// Close closes the file.
func (s *JSONLinesSink) Close() error { return s.f.Close() }

// MarshalRedacted renders x as one JSON object with every secret replaced
// by "[REDACTED]": credential headers, tokens, passwords, keys and presigned
// URLs in bodies. Bodies that are not JSON are summarised by their size.
func MarshalRedacted(x Exchange) ([]byte, error) {
	type out struct {
		Exchange
		RequestBody  json.RawMessage `json:"request_body,omitempty"`
		ResponseBody json.RawMessage `json:"response_body,omitempty"`
	}
	o := out{Exchange: x}
	o.RequestHeader = redactHeader(x.RequestHeader)
	o.ResponseHeader = redactHeader(x.ResponseHeader)
	o.RequestBody = redactBody(x.RequestBody)
	o.ResponseBody = redactBody(x.ResponseBody)
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("marshal exchange: %w", err)
	}
	return b, nil
}

const redacted = "[REDACTED]"

// secretHeaders are redacted wherever they appear (lower case).
var secretHeaders = map[string]bool{
	"authorization": true, "proxy-authorization": true, "cookie": true, "set-cookie": true,
	"x-amz-server-side-encryption-customer-key":     true,
	"x-amz-server-side-encryption-customer-key-md5": true,
	"x-ms-encryption-key":                           true,
	"x-ms-encryption-key-sha256":                    true,
	"x-goog-encryption-key":                         true,
	"x-goog-encryption-key-sha256":                  true,
}

func redactHeader(h http.Header) http.Header {
	if h == nil {
		return nil
	}
	out := make(http.Header, len(h))
	for k, v := range h {
		if secretHeaders[strings.ToLower(k)] {
			out[k] = []string{redacted}
			continue
		}
		out[k] = v
	}
	return out
}

// secretFields are JSON member names (compared case-insensitively) whose
// values are credentials: login secrets (protocol notes §3, §10), tokens,
// result keys, stage credentials and presigned URLs.
var secretFields = map[string]bool{
	"password": true, "passcode": true, "token": true, "mastertoken": true,
	"sessiontoken": true, "oldsessiontoken": true, "idtoken": true, "mfatoken": true,
	"raw_saml_response": true, "proof_key": true, "ext_authn_duo_method": true,
	"qrmk": true, "querystagemasterkey": true, "chunkheaders": true,
	"creds": true, "aws_key_id": true, "aws_secret_key": true, "aws_token": true,
	"azure_sas_token": true, "gcs_access_token": true, "presignedurl": true,
	"url": true, "private_key": true, "privatekey": true, "client_secret": true,
	"x-amz-server-side-encryption-customer-key": true,
}

// redactBody returns the JSON body with secrets replaced, or a JSON string
// summarising a non-JSON body.
func redactBody(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		s, _ := json.Marshal(fmt.Sprintf("<%d bytes, not JSON>", len(b)))
		return s
	}
	out, err := json.Marshal(redactValue(v))
	if err != nil {
		s, _ := json.Marshal(fmt.Sprintf("<%d bytes>", len(b)))
		return s
	}
	return out
}

func redactValue(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, val := range t {
			if secretFields[strings.ToLower(k)] {
				if val != nil {
					t[k] = redacted
				}
				continue
			}
			t[k] = redactValue(val)
		}
	case []any:
		for i := range t {
			t[i] = redactValue(t[i])
		}
	}
	return v
}
