package metrics

import (
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// Label values the observer uses besides the closed sets it copies.
const (
	// labelNone stands for "no rule" (a login refused before any rule
	// matched, observe-only) and "no policy decision".
	labelNone = "none"
	// classUnclassified is the class of a query request no policy saw.
	classUnclassified = "unclassified"
)

// Login results (snowgate_logins_total{result}).
const (
	// LoginSucceeded: Snowflake accepted the login and the client got a
	// session.
	LoginSucceeded = "succeeded"
	// LoginFailed: Snowflake (or the gateway in Snowflake's shape) answered
	// the login with success false or an HTTP error.
	LoginFailed = "failed"
	// LoginRefused: the gateway refused the login itself (no valid workload
	// token, no matching rule, upstream unreachable).
	LoginRefused = "refused"
)

// Chunk stream results (snowgate_chunk_streams_total{result}).
const (
	ChunkStreamed = "streamed"
	ChunkRefused  = "refused"
	ChunkFailed   = "failed"
	ChunkBroken   = "broken"
)

// Observer counts exchanges as the gateway releases them. It implements
// gateway.Observer and prometheus.Collector; Observe only updates atomic
// counters, so it never blocks the request path.
type Observer struct {
	requests      *prometheus.CounterVec
	duration      *prometheus.HistogramVec
	upstream      *prometheus.HistogramVec
	requestBytes  *prometheus.CounterVec
	responseBytes *prometheus.CounterVec
	logins        *prometheus.CounterVec
	queries       *prometheus.CounterVec
	chunks        *prometheus.CounterVec
}

var _ gateway.Observer = (*Observer)(nil)

// latencyBuckets span a cached OCSP answer (milliseconds) to a long query
// the service holds (minutes).
var latencyBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600}

func newObserver() *Observer {
	return &Observer{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "requests_total",
			Help: "Client requests served by the gateway, by Snowflake endpoint and HTTP status returned to the client.",
		}, []string{"endpoint", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "request_duration_seconds",
			Help:    "Time from a client request to the end of its reply, by Snowflake endpoint.",
			Buckets: latencyBuckets,
		}, []string{"endpoint"}),
		upstream: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: Namespace, Name: "upstream_request_duration_seconds",
			Help:    "Time spent in the upstream round trip to Snowflake or its result storage (for chunks: the whole stream), by endpoint.",
			Buckets: latencyBuckets,
		}, []string{"endpoint"}),
		requestBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "request_body_bytes_total",
			Help: "Decoded request body bytes received from clients, by endpoint.",
		}, []string{"endpoint"}),
		responseBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "response_body_bytes_total",
			Help: "Response body bytes sent to clients, by endpoint.",
		}, []string{"endpoint"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "logins_total",
			Help: "Login requests by result (succeeded, failed, refused) and the identity rule that matched (none: no rule).",
		}, []string{"result", "rule"}),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "queries_total",
			Help: "Query requests by statement class, policy decision (allow, deny, approve; none: no policy) and mode (enforce, observe).",
		}, []string{"class", "decision", "mode"}),
		chunks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: Namespace, Name: "chunk_streams_total",
			Help: "Result chunk fetches through the gateway by result (streamed, refused, failed, broken).",
		}, []string{"result"}),
	}
}

func (o *Observer) collectors() []prometheus.Collector {
	return []prometheus.Collector{o.requests, o.duration, o.upstream, o.requestBytes, o.responseBytes, o.logins, o.queries, o.chunks}
}

// Describe implements prometheus.Collector.
func (o *Observer) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range o.collectors() {
		c.Describe(ch)
	}
}

// Collect implements prometheus.Collector.
func (o *Observer) Collect(ch chan<- prometheus.Metric) {
	for _, c := range o.collectors() {
		c.Collect(ch)
	}
}

// Observe implements gateway.Observer.
func (o *Observer) Observe(x *gateway.Exchange) {
	ep := x.Kind
	if ep == "" {
		ep = snowflake.KindUnknown.String()
	}
	o.requests.WithLabelValues(ep, strconv.Itoa(x.Status)).Inc()
	o.duration.WithLabelValues(ep).Observe(x.Duration.Seconds())
	o.requestBytes.WithLabelValues(ep).Add(float64(len(x.RequestBody)))
	o.responseBytes.WithLabelValues(ep).Add(float64(max(x.ResponseSize, 0)))
	switch ep {
	case snowflake.KindLogin.String():
		rule := labelNone
		if x.Principal != nil && x.Principal.Rule != "" {
			rule = x.Principal.Rule
		}
		o.logins.WithLabelValues(loginResult(x), rule).Inc()
	case snowflake.KindQueryRequest.String():
		class, decision, mode := classUnclassified, labelNone, "enforce"
		if v := x.Verdict; v != nil {
			if v.Class != "" {
				class = v.Class
			}
			if v.Action != "" {
				decision = v.Action
			}
			if v.Observe {
				mode = "observe"
			}
		}
		o.queries.WithLabelValues(class, decision, mode).Inc()
	case snowflake.KindChunk.String():
		result := chunkResult(x)
		o.chunks.WithLabelValues(result).Inc()
		if result != ChunkRefused {
			// The chunk handler streams as it fetches: its duration is
			// the upstream's.
			o.upstream.WithLabelValues(ep).Observe(x.Duration.Seconds())
		}
		return
	}
	if x.UpstreamDuration > 0 {
		o.upstream.WithLabelValues(ep).Observe(x.UpstreamDuration.Seconds())
	}
}

// loginResult classifies a login exchange. Snowflake answers a failed login
// with HTTP 200 and success false, so the body decides.
func loginResult(x *gateway.Exchange) string {
	if x.Error != "" {
		return LoginRefused
	}
	if x.Status != http.StatusOK {
		return LoginFailed
	}
	var body struct {
		Success *bool `json:"success"`
	}
	if err := json.Unmarshal(x.ResponseBody, &body); err != nil || body.Success == nil || !*body.Success {
		return LoginFailed
	}
	return LoginSucceeded
}

// chunkResult classifies a chunk fetch (gateway/chunk.go sets Error).
func chunkResult(x *gateway.Exchange) string {
	switch {
	case x.Status == http.StatusNotFound && x.QueryID == "":
		// The id was not issued to this workload: nothing was fetched.
		return ChunkRefused
	case x.Error != "" && x.Status >= 200 && x.Status < 300:
		return ChunkBroken
	case x.Error != "" || x.Status < 200 || x.Status >= 300:
		return ChunkFailed
	}
	return ChunkStreamed
}
