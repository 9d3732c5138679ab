package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// Retries of chunk fetches. A presigned storage GET is idempotent, so the
// gateway fetches a chunk again when storage answered "not now" (500, 502,
// 503, 504) or the connection failed, as long as nothing of the chunk has
// reached the client: a short blip then costs the driver nothing (its own
// retry backs off for seconds). Once a byte is sent, a break stays a broken
// stream, which the driver fetches again itself.
const (
	// chunkAttempts is the most fetches of one chunk, the first included.
	chunkAttempts = 3
	// chunkPrefix is how much of a streamed chunk is read before its
	// reply is committed to the client: a break within it is retried.
	chunkPrefix = 32 << 10
)

// chunk streams one result chunk from its original presigned URL, with the
// client's SSE-C headers, and the reply's Content-Encoding unchanged.
func (h *handler) chunk(w http.ResponseWriter, r *http.Request, ep snowflake.Endpoint, x *Exchange) {
	x.ChunkID = ep.ChunkID
	// The path names the chunk; the query holds its sealed reference
	// (snowflake/chunktoken.go), which is logged nowhere.
	ref, err := h.g.cfg.Chunks.Open(ep.ChunkID, r.URL.Query().Get(snowflake.ChunkTokenParam), h.owner())
	if err != nil {
		// Whatever the cause, the driver hears of an unknown chunk; the
		// operator's log says which (another key: the key file changed).
		x.Status, x.Error = http.StatusNotFound, "chunk id not issued to this workload"
		h.log.Warn("refused chunk fetch", "reason", x.Error, "detail", err)
		http.Error(w, "unknown chunk", http.StatusNotFound)
		return
	}
	x.QueryID = ref.QueryID
	x.Chunk = &ChunkPlace{Index: ref.Index, Count: ref.Count}
	// The fetch carries no session token; the URL names the session the
	// reply was issued to (sealed, so only the gateway could have), and
	// the session, if still open, its principal: the chunk is recorded,
	// counted and audited as part of that session.
	x.Principal = h.g.sessionPrincipal(ref.Session, h.workload.CgroupID)
	x.RequestHeader = r.Header.Clone()
	ctx, cancel := context.WithTimeout(r.Context(), h.g.cfg.UpstreamTimeout)
	defer cancel()
	out, err := http.NewRequestWithContext(ctx, http.MethodGet, ref.URL, nil)
	if err != nil {
		x.Status, x.Error = http.StatusBadGateway, "chunk URL unusable"
		http.Error(w, "bad chunk", http.StatusBadGateway)
		return
	}
	copyHeader(out.Header, r.Header, "Host", "Authorization", "Cookie", "Content-Length")
	for k, v := range ref.Headers {
		if out.Header.Get(k) == "" {
			out.Header.Set(k, v)
		}
	}
	// With a recorder the whole chunk is read (and so retryable) before
	// anything is released; without, only its first chunkPrefix bytes.
	var limit int64
	if h.g.cfg.Recorder != nil {
		limit = h.maxChunkBytes()
	}
	t0 := time.Now()
	f, err := h.fetchChunk(out, ref, limit)
	x.UpstreamDuration = time.Since(t0)
	if err != nil {
		x.Status, x.Error = http.StatusBadGateway, "chunk fetch failed"
		if f.broken {
			x.Error = "chunk stream broken"
		}
		h.log.Warn("chunk fetch failed", "query", ref.QueryID, "index", ref.Index, "attempts", f.attempts, "err", err)
		http.Error(w, "chunk fetch failed", http.StatusBadGateway)
		return
	}
	defer f.resp.Body.Close()
	if limit > 0 {
		h.recordedChunk(ctx, w, f, limit, x)
		return
	}
	resp := f.resp
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.g.cfg.UpstreamTimeout))
	x.Status, x.ResponseHeader = resp.StatusCode, resp.Header.Clone()
	n, err := w.Write(f.body)
	x.ResponseSize = int64(n)
	if err == nil && !f.eof {
		var m int64
		m, err = io.Copy(w, resp.Body)
		x.ResponseSize += m
	}
	if err != nil {
		x.Error = "chunk stream broken"
	}
}

// fetchedChunk is a chunk's reply from storage: the status and headers
// (resp) and the first bytes of its body (body; all of it when eof), the
// rest unread in resp.Body.
type fetchedChunk struct {
	resp *http.Response
	body []byte
	eof  bool
	// attempts is the number of GETs sent; broken says the last one
	// failed while its body was read (else before a reply).
	attempts int
	broken   bool
}

// fetchChunk GETs out from storage, retrying (chunkAttempts, with
// back-off, within out's context) a 5xx "not now", a connection that
// failed before a reply, and a body that broke while being read. It reads
// the whole body when limit > 0 (up to limit+1 bytes, for the recorder),
// else the first chunkPrefix bytes. Nothing has reached the client yet, so
// every failure here may be retried. An error means no attempt produced a
// reply (the last error, without the URL); its body is closed then.
func (h *handler) fetchChunk(out *http.Request, ref snowflake.ChunkRef, limit int64) (fetchedChunk, error) {
	ctx := out.Context()
	f := fetchedChunk{}
	for {
		f.attempts++
		f.broken = false
		resp, err := h.g.storage.RoundTrip(out.Clone(ctx))
		reason := ""
		if err != nil {
			// The error text may hold the presigned URL: keep it out.
			err, reason = redactURLError(err), "transport"
		} else {
			f.resp = resp
			if limit > 0 {
				f.body, err = io.ReadAll(io.LimitReader(resp.Body, limit+1))
				f.eof = true
			} else {
				f.body, f.eof, err = readPrefix(resp.Body, chunkPrefix)
			}
			switch {
			case err != nil:
				resp.Body.Close()
				f.resp, f.broken = nil, true
				err, reason = fmt.Errorf("read chunk body: %w", err), "body"
			default:
				reason = chunkRetryStatus(resp)
			}
		}
		if reason == "" || f.attempts >= chunkAttempts || ctx.Err() != nil {
			return f, err
		}
		if f.resp != nil {
			f.resp.Body.Close()
			f.resp = nil
		}
		attrs := []any{"query", ref.QueryID, "index", ref.Index, "attempt", f.attempts + 1, "reason", reason}
		if err != nil {
			attrs = append(attrs, "err", err)
		}
		h.log.Info("retrying chunk fetch", attrs...)
		if !sleepCtx(ctx, backoff(f.attempts)) {
			if err == nil {
				err = fmt.Errorf("chunk fetch: %w", context.Cause(ctx))
			}
			return f, err
		}
	}
}

// chunkRetryStatus returns the status of a storage reply that says "not
// now" ("" for an answer): 500, 502, 503 and 504, unless it asks for a
// longer wait than the gateway takes itself (the driver then waits).
func chunkRetryStatus(resp *http.Response) string {
	switch resp.StatusCode {
	case http.StatusInternalServerError, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
	default:
		return ""
	}
	if ra := resp.Header.Get("Retry-After"); ra != "" {
		if s, err := strconv.Atoi(ra); err != nil || time.Duration(s)*time.Second > retryAfterMax {
			return ""
		}
	}
	return strconv.Itoa(resp.StatusCode)
}

// readPrefix reads up to n bytes of r; eof says r ended within them.
func readPrefix(r io.Reader, n int) ([]byte, bool, error) {
	buf := make([]byte, n)
	got := 0
	for got < n {
		m, err := r.Read(buf[got:])
		got += m
		if errors.Is(err, io.EOF) {
			return buf[:got], true, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	return buf[:got], false, nil
}

// DefaultMaxChunkBytes caps a chunk held for the recorder when the
// Recorder does not say (MaxChunkBytes() int64).
const DefaultMaxChunkBytes = 256 << 20

// maxChunkBytes is the largest chunk the recorder holds.
func (h *handler) maxChunkBytes() int64 {
	if l, ok := h.g.cfg.Recorder.(interface{ MaxChunkBytes() int64 }); ok && l.MaxChunkBytes() > 0 {
		return l.MaxChunkBytes()
	}
	return DefaultMaxChunkBytes
}

// recordedChunk commits the whole chunk f (read up to limit+1 bytes) and
// only then releases it: nothing the agent receives is missing from its
// recording. A chunk over the limit, or one the recorder cannot store, is
// refused (the driver reports the failed fetch).
func (h *handler) recordedChunk(ctx context.Context, w http.ResponseWriter, f fetchedChunk, limit int64, x *Exchange) {
	resp, body := f.resp, f.body
	x.Status, x.ResponseHeader = resp.StatusCode, resp.Header.Clone()
	if int64(len(body)) > limit {
		x.Status, x.Error = http.StatusBadGateway, fmt.Sprintf("chunk larger than the %d bytes the recorder holds", limit)
		h.log.Warn("refused chunk", "query", x.QueryID, "reason", x.Error)
		http.Error(w, "chunk too large to record", http.StatusBadGateway)
		return
	}
	x.ResponseBody = body
	err := h.g.commit(context.WithoutCancel(ctx), x)
	x.ResponseBody = nil
	if err != nil {
		h.log.Error("recording failed: chunk withheld", "query", x.QueryID, "err", err)
		x.Status, x.Error = http.StatusServiceUnavailable, "recording failed: "+err.Error()
		http.Error(w, "snowgate: the gateway cannot record this session; chunk withheld", http.StatusServiceUnavailable)
		return
	}
	copyHeader(w.Header(), resp.Header, "Content-Length")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(resp.StatusCode)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.g.cfg.UpstreamTimeout))
	n, err := w.Write(body)
	x.ResponseSize = int64(n)
	if err != nil {
		x.Error = "chunk stream broken"
	}
}
