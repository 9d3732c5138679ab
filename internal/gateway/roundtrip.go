package gateway

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// The gateway's own retries of upstream API requests. They are few and
// quick: the drivers retry 5xx and transport errors themselves (7 attempts,
// 1–16 s back-off, the same requestId; protocol notes §4.4), so the gateway
// only absorbs a short blip and then passes the failure through for the
// driver's own machinery.
const (
	// retryAttempts is the most attempts of one request, the first included.
	retryAttempts = 3
	// retryBase is the first back-off; it doubles per attempt, with jitter.
	retryBase = 100 * time.Millisecond
	// retryAfterMax is the longest Retry-After the gateway waits out itself;
	// a longer one goes to the driver.
	retryAfterMax = time.Second
	// drainMax bounds how much of a failed reply is read to reuse its
	// connection.
	drainMax = 64 << 10
)

// retryClass says when a request may be sent again.
type retryClass int

const (
	// retryUnsent: only when nothing reached the upstream (the dial or the
	// connection failed before the request headers were written). A login
	// or renewal that arrived may have created or rotated a session.
	retryUnsent retryClass = iota
	// retryIdempotent: also after the request arrived, because sending it
	// again has no further effect: a query-request names its statement by
	// the driver's requestId, which the service de-duplicates (the driver
	// itself resends with the same id); result and monitoring GETs read;
	// aborts and heartbeats are idempotent.
	retryIdempotent
)

// retryClassOf returns the retry class of a call.
func retryClassOf(c *Call) retryClass {
	switch c.Kind {
	case snowflake.KindQueryRequest:
		if c.RequestID != "" {
			return retryIdempotent
		}
	case snowflake.KindQueryResult, snowflake.KindMonitoring, snowflake.KindAbortByRequestID,
		snowflake.KindAbortByQueryID, snowflake.KindHeartbeat:
		return retryIdempotent
	}
	return retryUnsent
}

// retryableStatus reports whether an upstream status means "not now" rather
// than an answer: the load balancer's 502, 503 and 504.
func retryableStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}

// retryReason returns why an attempt may be repeated ("" when it may not):
// the upstream status, or "unsent"/"transport" for errors.
func retryReason(class retryClass, resp *http.Response, err error, sent bool) string {
	if err != nil {
		switch {
		case !sent:
			return "unsent"
		case class == retryIdempotent:
			return "transport"
		}
		return ""
	}
	if class == retryIdempotent && retryableStatus(resp.StatusCode) {
		if ra := resp.Header.Get("Retry-After"); ra != "" {
			if s, perr := strconv.Atoi(ra); perr != nil || time.Duration(s)*time.Second > retryAfterMax {
				return ""
			}
		}
		return strconv.Itoa(resp.StatusCode)
	}
	return ""
}

// roundTrip sends one API request to the account's upstream, retrying what
// is safe to retry (see retryClass) a few times with a short back-off. It
// never invents a requestId: a query-request goes again with the driver's
// own id, marked as a retry the way the driver marks its own (retryCount,
// retryReason, clientStartTime). When the attempts are spent, the last
// reply or error is returned: forward passes a 5xx through and turns an
// error into a 502, both of which the drivers retry on their own terms.
func (h *handler) roundTrip(up *upstream, call *Call, out *http.Request) (*http.Response, error) {
	class := retryClassOf(call)
	ctx := out.Context()
	start := time.Now()
	req := out
	for attempt := 1; ; attempt++ {
		var sent atomic.Bool
		trace := &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }}
		resp, err := up.transport.RoundTrip(req.WithContext(httptrace.WithClientTrace(ctx, trace)))
		reason := retryReason(class, resp, err, sent.Load())
		if reason == "" || attempt >= retryAttempts || ctx.Err() != nil {
			return resp, err
		}
		next, cerr := retryRequest(out, call, reason, start)
		if cerr != nil {
			return resp, err
		}
		if resp != nil {
			_, _ = io.CopyN(io.Discard, resp.Body, drainMax)
			resp.Body.Close()
		}
		h.log.Info("retrying upstream request", "kind", call.Kind.String(), "account", up.account,
			"attempt", attempt+1, "reason", reason)
		if !sleepCtx(ctx, backoff(attempt)) {
			return nil, context.Cause(ctx)
		}
		req = next
	}
}

// retryRequest returns out ready to be sent again: a fresh body and, for a
// query-request, the driver's retry parameters.
func retryRequest(out *http.Request, call *Call, reason string, start time.Time) (*http.Request, error) {
	r := out.Clone(out.Context())
	if out.Body != nil && out.Body != http.NoBody {
		if out.GetBody == nil {
			return nil, errors.New("request body cannot be replayed")
		}
		b, err := out.GetBody()
		if err != nil {
			return nil, err
		}
		r.Body = b
	}
	if call.Kind == snowflake.KindQueryRequest {
		q := r.URL.Query()
		n, _ := strconv.Atoi(q.Get("retryCount"))
		q.Set("retryCount", strconv.Itoa(n+1))
		if reason == "unsent" || reason == "transport" {
			reason = "0"
		}
		q.Set("retryReason", reason)
		if q.Get("clientStartTime") == "" {
			q.Set("clientStartTime", strconv.FormatInt(start.UnixMilli(), 10))
		}
		u := *r.URL
		u.RawQuery = q.Encode()
		r.URL = &u
	}
	return r, nil
}

// backoff is the wait before attempt+1: retryBase doubled per attempt, with
// ±50% jitter so that many sessions hit by one burst do not come back in
// step.
func backoff(attempt int) time.Duration {
	d := retryBase << (attempt - 1)
	return d/2 + rand.N(d)
}

// sleepCtx waits d or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
