package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Endpoint names the fault knobs and request counters use.
const (
	EndpointLogin      = "login"
	EndpointToken      = "token"
	EndpointHeartbeat  = "heartbeat"
	EndpointLogout     = "logout"
	EndpointQuery      = "query"
	EndpointResult     = "result"
	EndpointMonitoring = "monitoring"
	EndpointAbort      = "abort"
	EndpointTelemetry  = "telemetry"
	EndpointChunk      = "chunk"
	EndpointStage      = "stage"
	EndpointOther      = "other"
	// EndpointAny matches every endpoint in a Fault.
	EndpointAny = "*"
)

// endpointOf classifies a request path.
func endpointOf(path string) string {
	switch {
	case path == "/session/v1/login-request":
		return EndpointLogin
	case path == "/session/token-request":
		return EndpointToken
	case path == "/session/heartbeat":
		return EndpointHeartbeat
	case path == "/session":
		return EndpointLogout
	case path == "/queries/v1/query-request":
		return EndpointQuery
	case path == "/queries/v1/abort-request":
		return EndpointAbort
	case strings.HasPrefix(path, "/queries/") && strings.HasSuffix(path, "/abort-request"):
		return EndpointAbort
	case strings.HasPrefix(path, "/queries/") && strings.HasSuffix(path, "/result"):
		return EndpointResult
	case strings.HasPrefix(path, "/monitoring/queries/"):
		return EndpointMonitoring
	case path == "/telemetry/send":
		return EndpointTelemetry
	case strings.HasPrefix(path, storagePrefix):
		return EndpointChunk
	}
	return EndpointOther
}

// Fault is one injected misbehaviour of an endpoint. Latency delays the
// request; Status answers it with that HTTP status (e.g. 503) and an empty
// body; Reset closes the connection without a reply. With After set, the
// request is first handled for real (a query executes) and the fault replaces
// the reply, which is how a lost reply and the driver's retry are simulated.
type Fault struct {
	Endpoint string        `json:"endpoint"`
	Latency  time.Duration `json:"latency,omitempty"`
	Status   int           `json:"status,omitempty"`
	Reset    bool          `json:"reset,omitempty"`
	After    bool          `json:"after,omitempty"`
	// Count is how many requests the fault affects; 0 means until cleared.
	Count int `json:"count,omitempty"`
}

// faultJSON is the wire form of a Fault: latency as a Go duration string
// ("250ms") or a number of nanoseconds.
type faultJSON struct {
	Endpoint string          `json:"endpoint"`
	Latency  json.RawMessage `json:"latency,omitempty"`
	Status   int             `json:"status,omitempty"`
	Reset    bool            `json:"reset,omitempty"`
	After    bool            `json:"after,omitempty"`
	Count    int             `json:"count,omitempty"`
}

// MarshalJSON writes latency as a duration string.
func (f Fault) MarshalJSON() ([]byte, error) {
	var lat json.RawMessage
	if f.Latency != 0 {
		lat, _ = json.Marshal(f.Latency.String())
	}
	return json.Marshal(faultJSON{Endpoint: f.Endpoint, Latency: lat, Status: f.Status, Reset: f.Reset, After: f.After, Count: f.Count})
}

// UnmarshalJSON reads latency as a duration string or nanoseconds.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var w faultJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*f = Fault{Endpoint: w.Endpoint, Status: w.Status, Reset: w.Reset, After: w.After, Count: w.Count}
	if len(w.Latency) > 0 && string(w.Latency) != "null" {
		var s string
		if err := json.Unmarshal(w.Latency, &s); err == nil {
			d, err := time.ParseDuration(s)
			if err != nil {
				return fmt.Errorf("fault latency: %w", err)
			}
			f.Latency = d
		} else {
			var ns int64
			if err := json.Unmarshal(w.Latency, &ns); err != nil {
				return fmt.Errorf("fault latency: %w", err)
			}
			f.Latency = time.Duration(ns)
		}
	}
	if f.Status != 0 && (f.Status < 100 || f.Status > 599) {
		return fmt.Errorf("fault status %d out of range", f.Status)
	}
	if f.Count < 0 {
		return errors.New("fault count is negative")
	}
	return nil
}

// ParseFault parses the command-line form of a fault:
// "ENDPOINT[,latency=DURATION][,status=CODE][,reset][,after][,count=N]",
// e.g. "query,status=503,count=2".
func ParseFault(spec string) (Fault, error) {
	parts := strings.Split(spec, ",")
	f := Fault{Endpoint: strings.TrimSpace(parts[0])}
	if f.Endpoint == "" {
		return Fault{}, errors.New("fault: missing endpoint")
	}
	for _, p := range parts[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		var err error
		switch k {
		case "latency":
			f.Latency, err = time.ParseDuration(v)
		case "status":
			f.Status, err = strconv.Atoi(v)
			if err == nil && (f.Status < 100 || f.Status > 599) {
				err = errors.New("out of range")
			}
		case "count":
			f.Count, err = strconv.Atoi(v)
			if err == nil && f.Count < 0 {
				err = errors.New("negative")
			}
		case "reset":
			f.Reset = true
		case "after":
			f.After = true
		default:
			return Fault{}, fmt.Errorf("fault %q: unknown option %q", spec, k)
		}
		if err != nil {
			return Fault{}, fmt.Errorf("fault %q: %s: %w", spec, k, err)
		}
	}
	if f.Latency == 0 && f.Status == 0 && !f.Reset {
		return Fault{}, fmt.Errorf("fault %q: needs latency, status or reset", spec)
	}
	return f, nil
}

// Faults holds the fault knobs of a Server. It is safe for concurrent use.
type Faults struct {
	s      *Server
	mu     sync.Mutex
	faults []*Fault
	hits   map[string]int64
}

// Add installs a fault.
func (f *Faults) Add(fl Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = append(f.faults, &fl)
}

// Clear removes every fault.
func (f *Faults) Clear() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.faults = nil
}

// List returns the installed faults with their remaining counts.
func (f *Faults) List() []Fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Fault, 0, len(f.faults))
	for _, fl := range f.faults {
		out = append(out, *fl)
	}
	return out
}

// SetLatency delays every request to endpoint by d (0 removes the delay).
func (f *Faults) SetLatency(endpoint string, d time.Duration) {
	f.mu.Lock()
	kept := f.faults[:0]
	for _, fl := range f.faults {
		if !(fl.Endpoint == endpoint && fl.Latency > 0 && fl.Status == 0 && !fl.Reset) {
			kept = append(kept, fl)
		}
	}
	f.faults = kept
	f.mu.Unlock()
	if d > 0 {
		f.Add(Fault{Endpoint: endpoint, Latency: d})
	}
}

// FailWith answers the next n requests to endpoint with HTTP status (a burst
// of 503s, say); n = 0 fails them until Clear.
func (f *Faults) FailWith(endpoint string, status, n int) {
	f.Add(Fault{Endpoint: endpoint, Status: status, Count: n})
}

// ResetConnections closes the connection of the next n requests to endpoint
// without a reply.
func (f *Faults) ResetConnections(endpoint string, n int) {
	f.Add(Fault{Endpoint: endpoint, Reset: true, Count: n})
}

// ExpireSessions makes every live session token expired: the next request
// with one gets 390112 and the driver renews with its master token.
func (f *Faults) ExpireSessions() { f.s.sessions.expire(0, true, false) }

// ExpireMasters makes every master token expired: renewals get 390114.
// Session tokens expire too, so the next request has to renew.
func (f *Faults) ExpireMasters() { f.s.sessions.expire(0, true, true) }

// ExpireSession expires the session token of one session (by sessionId).
func (f *Faults) ExpireSession(sessionID int64) { f.s.sessions.expire(sessionID, true, false) }

// Hits returns how many requests reached endpoint (counted before faults).
func (f *Faults) Hits(endpoint string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.hits[endpoint]
}

// take records a hit and returns the faults that apply to this request
// (latency faults first), consuming their counts.
func (f *Faults) take(endpoint string) (before, after []Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hits == nil {
		f.hits = map[string]int64{}
	}
	f.hits[endpoint]++
	kept := f.faults[:0]
	for _, fl := range f.faults {
		if fl.Endpoint == endpoint || fl.Endpoint == EndpointAny {
			if fl.After {
				after = append(after, *fl)
			} else {
				before = append(before, *fl)
			}
			if fl.Count > 0 {
				fl.Count--
				if fl.Count == 0 {
					continue
				}
			}
		}
		kept = append(kept, fl)
	}
	f.faults = kept
	return before, after
}

// applyFaults wraps h with the fault knobs.
func (s *Server) applyFaults(endpoint string, w http.ResponseWriter, r *http.Request, h func(http.ResponseWriter, *http.Request)) {
	before, after := s.faults.take(endpoint)
	for _, fl := range before {
		if fl.Latency > 0 {
			t := time.NewTimer(fl.Latency)
			select {
			case <-t.C:
			case <-r.Context().Done():
				t.Stop()
				return
			}
		}
		if terminal(w, fl) {
			s.log.Info("fault injected", "endpoint", endpoint, "status", fl.Status, "reset", fl.Reset)
			return
		}
	}
	if len(after) == 0 {
		h(w, r)
		return
	}
	// Handle for real into a buffer, then apply the fault instead of replying.
	rec := &bufferedWriter{header: http.Header{}}
	h(rec, r)
	for _, fl := range after {
		if fl.Latency > 0 {
			time.Sleep(fl.Latency)
		}
		if terminal(w, fl) {
			s.log.Info("fault injected after handling", "endpoint", endpoint, "status", fl.Status, "reset", fl.Reset)
			return
		}
	}
	rec.flush(w)
}

// terminal applies a status or reset fault; it reports whether the reply is done.
func terminal(w http.ResponseWriter, fl Fault) bool {
	switch {
	case fl.Reset:
		resetConn(w)
		return true
	case fl.Status != 0:
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(fl.Status)
		_, _ = w.Write([]byte(http.StatusText(fl.Status) + "\n"))
		return true
	}
	return false
}

// resetConn closes the client connection without a reply (RST when the
// connection is plain TCP underneath).
func resetConn(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		panic(http.ErrAbortHandler)
	}
	conn, _, err := hj.Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	raw := conn
	if nc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		raw = nc.NetConn()
	}
	if tcp, ok := raw.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = raw.Close()
}

// bufferedWriter captures a reply so an After fault can replace it.
type bufferedWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (b *bufferedWriter) Header() http.Header { return b.header }
func (b *bufferedWriter) WriteHeader(status int) {
	if b.status == 0 {
		b.status = status
	}
}
func (b *bufferedWriter) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	return b.body.Write(p)
}

func (b *bufferedWriter) flush(w http.ResponseWriter) {
	for k, v := range b.header {
		w.Header()[k] = v
	}
	if b.status == 0 {
		b.status = http.StatusOK
	}
	w.WriteHeader(b.status)
	_, _ = w.Write(b.body.Bytes())
}
