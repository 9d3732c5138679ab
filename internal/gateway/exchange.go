package gateway

import (
	"bufio"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/snowgate/snowgate/internal/recording"
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
	// Cgroup is the process's cgroup v2 path (from /proc/<pid>/cgroup) at
	// accept time; empty when the process is already gone.
	Cgroup string `json:"cgroup,omitempty"`
	// Peer is the client's address and port as the gateway saw them.
	Peer string `json:"peer,omitempty"`
}

func newWorkload(o redirect.Origin, peer netip.AddrPort) Workload {
	w := Workload{CgroupID: o.CgroupID, PID: o.PID, UID: o.UID, Peer: peer.String()}
	if o.PID != 0 {
		proc := "/proc/" + strconv.FormatUint(uint64(o.PID), 10)
		if b, err := os.ReadFile(proc + "/comm"); err == nil {
			w.Comm = strings.TrimSpace(string(b))
		}
		if b, err := os.ReadFile(proc + "/cgroup"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if rest, ok := strings.CutPrefix(line, "0::"); ok {
					w.Cgroup = rest
					break
				}
			}
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
	// ChunkID is set for chunk fetches; QueryID for chunk fetches and for
	// query replies that name one. Chunk places a chunk fetch in its
	// result, as the chunk's URL says (nil for other exchanges).
	ChunkID string      `json:"chunk_id,omitempty"`
	Chunk   *ChunkPlace `json:"chunk,omitempty"`
	QueryID string      `json:"query_id,omitempty"`
	// RequestID is the driver's requestId (its retry key), when sent.
	RequestID string `json:"request_id,omitempty"`
	// UpstreamDuration is the time spent in the upstream round trip (zero
	// when the gateway answered itself).
	UpstreamDuration time.Duration `json:"upstream_duration_ns,omitempty"`
	// Principal is the session's verified party (nil before login and in
	// observe-only mode).
	Principal *Principal `json:"principal,omitempty"`
	// Verdict is the statement policy's decision on a query request.
	Verdict *Verdict `json:"verdict,omitempty"`
	// Error says why the gateway answered itself or the exchange broke.
	Error string `json:"error,omitempty"`
}

// Observer sees every exchange after its reply went to the client: the
// metrics, the exchange log, the audit trail. Observe runs on the request's
// goroutine, so it must be quick and must not block; it may keep x.
type Observer interface {
	Observe(x *Exchange)
}

// observe hands x to every observer.
func (g *Gateway) observe(x *Exchange) {
	for _, o := range g.cfg.Observers {
		o.Observe(x)
	}
}

// JSONLinesSink writes one redacted JSON object per exchange to a file. The
// marshalling and the write happen on its own goroutine, off the request
// path; a full queue makes Observe wait (back-pressure, nothing dropped).
type JSONLinesSink struct {
	f     *os.File
	queue chan sinkItem
	done  chan struct{}
	once  sync.Once
	log   *slog.Logger
	// headers caches redacted header values (used by run only): the same
	// few values come with every exchange, and redacting free text is
	// the costly part of a line.
	headers map[string]string
}

// Bounds of JSONLinesSink.headers.
const (
	headerCacheEntries = 512
	headerCacheValue   = 256 // longer values are redacted every time
)

// redactHeaderValue is recording.RedactText for header values, cached.
func (s *JSONLinesSink) redactHeaderValue(v string) string {
	if len(v) > headerCacheValue {
		return recording.RedactText(v)
	}
	if r, ok := s.headers[v]; ok {
		return r
	}
	if len(s.headers) >= headerCacheEntries {
		clear(s.headers)
	}
	r := recording.RedactText(v)
	s.headers[v] = r
	return r
}

// sinkItem is an exchange to write, or (ack set) a request to flush.
type sinkItem struct {
	x   *Exchange
	ack chan struct{}
}

// jsonLinesQueue bounds the exchanges waiting to be written.
const jsonLinesQueue = 1024

// NewJSONLinesSink opens (appends to, creating with mode 0600) path.
func NewJSONLinesSink(path string) (*JSONLinesSink, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("exchange log: %w", err)
	}
	s := &JSONLinesSink{f: f, queue: make(chan sinkItem, jsonLinesQueue), done: make(chan struct{}), log: slog.Default(), headers: map[string]string{}}
	go s.run()
	return s, nil
}

// Observe implements Observer.
func (s *JSONLinesSink) Observe(x *Exchange) { s.queue <- sinkItem{x: x} }

// Flush returns once every exchange observed before it is written to the
// file.
func (s *JSONLinesSink) Flush() {
	ack := make(chan struct{})
	s.queue <- sinkItem{ack: ack}
	<-ack
}

func (s *JSONLinesSink) run() {
	defer close(s.done)
	w := bufio.NewWriterSize(s.f, 64<<10)
	for it := range s.queue {
		if it.ack != nil {
			if err := w.Flush(); err != nil {
				s.log.Error("exchange log write failed", "err", err)
			}
			close(it.ack)
			continue
		}
		line, err := marshalRedacted(*it.x, s.redactHeaderValue)
		if err != nil {
			s.log.Error("exchange log", "err", err)
			continue
		}
		_, _ = w.Write(append(line, '\n'))
		if len(s.queue) == 0 {
			if err := w.Flush(); err != nil {
				s.log.Error("exchange log write failed", "err", err)
			}
		}
	}
	if err := w.Flush(); err != nil {
		s.log.Error("exchange log write failed", "err", err)
	}
}

// Close writes what is queued and closes the file. Observe must not be
// called after Close.
func (s *JSONLinesSink) Close() error {
	s.once.Do(func() { close(s.queue) })
	<-s.done
	return s.f.Close()
}

// MarshalRedacted renders x as one JSON object with every secret replaced
// by "[REDACTED]": credential headers, tokens, passwords, keys and presigned
// URLs in bodies. Bodies that are not JSON are summarised by their size.
func MarshalRedacted(x Exchange) ([]byte, error) {
	return marshalRedacted(x, recording.RedactText)
}

// marshalRedacted is MarshalRedacted with redactValue redacting the values
// of headers that are not secret by name.
func marshalRedacted(x Exchange, redactValue func(string) string) ([]byte, error) {
	type out struct {
		Exchange
		RequestBody  json.RawMessage `json:"request_body,omitempty"`
		ResponseBody json.RawMessage `json:"response_body,omitempty"`
	}
	o := out{Exchange: x}
	o.RequestHeader = redactHeader(x.RequestHeader, redactValue)
	o.ResponseHeader = redactHeader(x.ResponseHeader, redactValue)
	o.RequestBody = redactBody(x.RequestBody)
	o.ResponseBody = redactBody(x.ResponseBody)
	b, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("marshal exchange: %w", err)
	}
	return b, nil
}

// redactHeader replaces the values of credential headers and redacts the
// others' with redactValue.
func redactHeader(h http.Header, redactValue func(string) string) http.Header {
	if h == nil {
		return nil
	}
	out := make(http.Header, len(h))
	for k, v := range h {
		if recording.IsSecretKey(k) {
			out[k] = []string{recording.Redacted}
			continue
		}
		red := make([]string, len(v))
		for i, s := range v {
			red[i] = redactValue(s)
		}
		out[k] = red
	}
	return out
}

// redactBody returns the JSON body with secrets removed by the recorder's
// own redactor (secret members, credentials in SQL text and URLs), or a JSON
// string summarising a body that is not JSON (a result chunk).
func redactBody(b []byte) json.RawMessage {
	if len(b) == 0 {
		return nil
	}
	if !json.Valid(b) {
		s, _ := json.Marshal(fmt.Sprintf("<%d bytes, not JSON>", len(b)))
		return s
	}
	return recording.RedactJSON(b)
}

// ChunkPlace is a fetched chunk's place in its result.
type ChunkPlace struct {
	// Index is the chunk's position (0-based); Count the number of chunks
	// of the result, 0 when the URL did not say (issued by a gateway
	// before the count was sealed into it).
	Index int `json:"index"`
	Count int `json:"count,omitempty"`
}
