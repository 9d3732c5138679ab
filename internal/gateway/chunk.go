package gateway

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// chunk streams one result chunk from its original presigned URL, with the
// client's SSE-C headers, and the reply's Content-Encoding unchanged.
func (h *handler) chunk(w http.ResponseWriter, r *http.Request, ep snowflake.Endpoint, x *Exchange) {
	x.ChunkID = ep.ChunkID
	ref, ok := h.g.cfg.Chunks.Lookup(ep.ChunkID, h.owner())
	if !ok {
		x.Status, x.Error = http.StatusNotFound, "chunk id not issued to this workload"
		h.log.Warn("refused chunk fetch", "reason", x.Error)
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
	copyHeader(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(h.g.cfg.UpstreamTimeout))
	n, err := io.Copy(w, resp.Body)
	x.Status, x.ResponseHeader, x.ResponseSize = resp.StatusCode, resp.Header.Clone(), n
	if err != nil {
		x.Error = "chunk stream broken"
	}
}
