package gateway

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
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
	resp, err := h.g.storage.RoundTrip(out)
	if err != nil {
		// The error text may hold the presigned URL: keep it out.
		x.Status, x.Error = http.StatusBadGateway, "chunk fetch failed"
		h.log.Warn("chunk fetch failed", "query", ref.QueryID, "index", ref.Index, "err", redactURLError(err))
		http.Error(w, "chunk fetch failed", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	if h.g.cfg.Recorder != nil {
		h.recordedChunk(ctx, w, resp, x)
		return
	}
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.g.cfg.UpstreamTimeout))
	n, err := io.Copy(w, resp.Body)
	x.Status, x.ResponseHeader, x.ResponseSize = resp.StatusCode, resp.Header.Clone(), n
	if err != nil {
		x.Error = "chunk stream broken"
	}
}

// DefaultMaxChunkBytes caps a chunk held for the recorder when the
// Recorder does not say (MaxChunkBytes() int64).
const DefaultMaxChunkBytes = 256 << 20

// recordedChunk reads the whole chunk (up to the recorder's cap), commits
// it, and only then releases it: nothing the agent receives is missing from
// its recording. A chunk over the cap, or one the recorder cannot store, is
// refused (the driver reports the failed fetch).
func (h *handler) recordedChunk(ctx context.Context, w http.ResponseWriter, resp *http.Response, x *Exchange) {
	limit := int64(DefaultMaxChunkBytes)
	if l, ok := h.g.cfg.Recorder.(interface{ MaxChunkBytes() int64 }); ok && l.MaxChunkBytes() > 0 {
		limit = l.MaxChunkBytes()
	}
	t0 := time.Now()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	x.UpstreamDuration = time.Since(t0)
	x.Status, x.ResponseHeader = resp.StatusCode, resp.Header.Clone()
	switch {
	case err != nil:
		x.Status, x.Error = http.StatusBadGateway, "chunk stream broken"
		http.Error(w, "chunk fetch failed", http.StatusBadGateway)
		return
	case int64(len(body)) > limit:
		x.Status, x.Error = http.StatusBadGateway, fmt.Sprintf("chunk larger than the %d bytes the recorder holds", limit)
		h.log.Warn("refused chunk", "query", x.QueryID, "reason", x.Error)
		http.Error(w, "chunk too large to record", http.StatusBadGateway)
		return
	}
	x.ResponseBody = body
	err = h.g.commit(context.WithoutCancel(ctx), x)
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
