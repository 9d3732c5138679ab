package emulator

import (
	"bufio"
	"bytes"
	"context"
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
//
// Two faults shape a reply that is sent: ResetAfterBytes sends the status,
// the headers and that many bytes of the body, then resets the connection
// (a download broken mid-chunk; bytes still in the kernel's send buffer may
// be lost with the reset, so the client sees at most that many);
// BytesPerSecond trickles the body at that rate (a slow chunk download).
// They apply to the body as written on the wire (compressed, if it is).
type Fault struct {
	Endpoint string        `json:"endpoint"`
	Latency  time.Duration `json:"latency,omitempty"`
	Status   int           `json:"status,omitempty"`
	Reset    bool          `json:"reset,omitempty"`
	After    bool          `json:"after,omitempty"`
	// ResetAfterBytes > 0 resets the connection after that many body bytes.
	ResetAfterBytes int64 `json:"resetAfterBytes,omitempty"`
	// BytesPerSecond > 0 limits the reply body to that rate.
	BytesPerSecond int64 `json:"bytesPerSecond,omitempty"`
	// Count is how many requests the fault affects; 0 means until cleared.
	Count int `json:"count,omitempty"`
}

// shapes reports whether the fault shapes a reply instead of replacing it.
func (f Fault) shapes() bool { return f.ResetAfterBytes > 0 || f.BytesPerSecond > 0 }

// faultJSON is the wire form of a Fault: latency as a Go duration string
// ("250ms") or a number of nanoseconds.
type faultJSON struct {
	Endpoint string          `json:"endpoint"`
	Latency  json.RawMessage `json:"latency,omitempty"`
	Status   int             `json:"status,omitempty"`
	Reset    bool            `json:"reset,omitempty"`
	After    bool            `json:"after,omitempty"`
	// ResetAfterBytes and BytesPerSecond are as in Fault.
	ResetAfterBytes int64 `json:"resetAfterBytes,omitempty"`
	BytesPerSecond  int64 `json:"bytesPerSecond,omitempty"`
	Count           int   `json:"count,omitempty"`
}

// MarshalJSON writes latency as a duration string.
func (f Fault) MarshalJSON() ([]byte, error) {
	var lat json.RawMessage
	if f.Latency != 0 {
		lat, _ = json.Marshal(f.Latency.String())
	}
	return json.Marshal(faultJSON{Endpoint: f.Endpoint, Latency: lat, Status: f.Status, Reset: f.Reset, After: f.After,
		ResetAfterBytes: f.ResetAfterBytes, BytesPerSecond: f.BytesPerSecond, Count: f.Count})
}

// UnmarshalJSON reads latency as a duration string or nanoseconds.
func (f *Fault) UnmarshalJSON(b []byte) error {
	var w faultJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	*f = Fault{Endpoint: w.Endpoint, Status: w.Status, Reset: w.Reset, After: w.After,
		ResetAfterBytes: w.ResetAfterBytes, BytesPerSecond: w.BytesPerSecond, Count: w.Count}
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
	if f.ResetAfterBytes < 0 || f.BytesPerSecond < 0 {
		return errors.New("fault resetAfterBytes or bytesPerSecond is negative")
	}
	return nil
}

// ParseFault parses the command-line form of a fault:
// "ENDPOINT[,latency=DURATION][,status=CODE][,reset][,after][,resetafter=BYTES][,rate=BYTES/S][,count=N]",
// e.g. "query,status=503,count=2" or "chunk,resetafter=65536,count=3".
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
		case "resetafter":
			f.ResetAfterBytes, err = strconv.ParseInt(v, 10, 64)
			if err == nil && f.ResetAfterBytes <= 0 {
				err = errors.New("not positive")
			}
		case "rate":
			f.BytesPerSecond, err = strconv.ParseInt(v, 10, 64)
			if err == nil && f.BytesPerSecond <= 0 {
				err = errors.New("not positive")
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
	if f.Latency == 0 && f.Status == 0 && !f.Reset && !f.shapes() {
		return Fault{}, fmt.Errorf("fault %q: needs latency, status, reset, resetafter or rate", spec)
	}
	return f, nil
}

// Faults holds the fault knobs of a Server. It is safe for concurrent use.
type Faults struct {
	s        *Server
	mu       sync.Mutex
	faults   []*Fault
	hits     map[string]int64
	injected map[string]int64
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

// ResetMidBody sends the headers and the first n bytes of the next count
// replies of endpoint (say, result chunks), then resets the connection.
func (f *Faults) ResetMidBody(endpoint string, n int64, count int) {
	f.Add(Fault{Endpoint: endpoint, ResetAfterBytes: n, Count: count})
}

// Throttle sends the reply bodies of endpoint at bytesPerSecond (a slow
// download) for the next count requests; count = 0 until Clear.
func (f *Faults) Throttle(endpoint string, bytesPerSecond int64, count int) {
	f.Add(Fault{Endpoint: endpoint, BytesPerSecond: bytesPerSecond, Count: count})
}

// SetLatency delays every request to endpoint by d (0 removes the delay).
func (f *Faults) SetLatency(endpoint string, d time.Duration) {
	f.mu.Lock()
	kept := f.faults[:0]
	for _, fl := range f.faults {
		if !(fl.Endpoint == endpoint && fl.Latency > 0 && fl.Status == 0 && !fl.Reset && !fl.shapes()) {
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

// Injected returns how many requests to endpoint met at least one fault.
func (f *Faults) Injected(endpoint string) int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.injected[endpoint]
}

// take records a hit and returns the faults that apply to this request
// (latency faults first), consuming their counts.
func (f *Faults) take(endpoint string) (before, after []Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.hits == nil {
		f.hits, f.injected = map[string]int64{}, map[string]int64{}
	}
	f.hits[endpoint]++
	defer func() {
		if len(before)+len(after) > 0 {
			f.injected[endpoint]++
		}
	}()
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
	if sw := shapeWriter(r.Context(), w, before); sw != nil {
		s.log.Info("fault injected", "endpoint", endpoint, "resetAfterBytes", sw.resetAfter, "bytesPerSecond", sw.rate)
		w = sw
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
	if sw := shapeWriter(r.Context(), w, after); sw != nil {
		s.log.Info("fault injected after handling", "endpoint", endpoint, "resetAfterBytes", sw.resetAfter, "bytesPerSecond", sw.rate)
		w = sw
	}
	rec.flush(w)
}

// errFaultReset is what a shaped writer returns once it reset the
// connection.
var errFaultReset = errors.New("emulator: connection reset by fault")

// shapedWriter applies ResetAfterBytes and BytesPerSecond to a reply body.
type shapedWriter struct {
	http.ResponseWriter
	ctx        context.Context
	resetAfter int64 // 0: never
	rate       int64 // bytes per second; 0: unlimited
	written    int64
	reset      bool
}

// shapeWriter returns w wrapped for the shaping faults among fs, or nil
// when there are none. The smallest limit of each kind wins.
func shapeWriter(ctx context.Context, w http.ResponseWriter, fs []Fault) *shapedWriter {
	var sw *shapedWriter
	for _, fl := range fs {
		if !fl.shapes() {
			continue
		}
		if sw == nil {
			sw = &shapedWriter{ResponseWriter: w, ctx: ctx}
		}
		if fl.ResetAfterBytes > 0 && (sw.resetAfter == 0 || fl.ResetAfterBytes < sw.resetAfter) {
			sw.resetAfter = fl.ResetAfterBytes
		}
		if fl.BytesPerSecond > 0 && (sw.rate == 0 || fl.BytesPerSecond < sw.rate) {
			sw.rate = fl.BytesPerSecond
		}
	}
	return sw
}

// Write sends p within the limits: in slices of a tenth of a second at the
// rate, and no byte past resetAfter, where the connection is reset instead.
func (sw *shapedWriter) Write(p []byte) (int, error) {
	total := 0
	for len(p) > 0 {
		if sw.reset {
			return total, errFaultReset
		}
		n := len(p)
		if sw.rate > 0 {
			n = min(n, int(max(1, sw.rate/10)))
		}
		if sw.resetAfter > 0 {
			left := sw.resetAfter - sw.written
			if left <= 0 {
				sw.resetNow()
				return total, errFaultReset
			}
			n = min(n, int(left))
		}
		m, err := sw.ResponseWriter.Write(p[:n])
		total += m
		sw.written += int64(m)
		if err != nil {
			return total, err
		}
		p = p[n:]
		if sw.rate > 0 {
			_ = http.NewResponseController(sw.ResponseWriter).Flush()
			t := time.NewTimer(time.Duration(int64(n) * int64(time.Second) / sw.rate))
			select {
			case <-t.C:
			case <-sw.ctx.Done():
				t.Stop()
				return total, sw.ctx.Err()
			}
		}
	}
	return total, nil
}

// resetNow sends what was written so far and resets the connection.
func (sw *shapedWriter) resetNow() {
	sw.reset = true
	_ = http.NewResponseController(sw.ResponseWriter).Flush()
	resetConn(sw.ResponseWriter)
}

// Flush passes a flush through.
func (sw *shapedWriter) Flush() error {
	return http.NewResponseController(sw.ResponseWriter).Flush()
}

// Unwrap gives http.ResponseController the underlying writer.
func (sw *shapedWriter) Unwrap() http.ResponseWriter { return sw.ResponseWriter }

// Hijack lets the reset reach the connection.
func (sw *shapedWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return http.NewResponseController(sw.ResponseWriter).Hijack()
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
