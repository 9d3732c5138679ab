package snowflake

import (
	"fmt"
	"sync"
	"time"
)

// Defaults of a ChunkTable.
const (
	// DefaultChunkTTL is how long a rewritten chunk URL stays valid. The
	// presigned storage URLs behind them last hours; Node refreshes them
	// through /queries/<qid>/result when they fail, which rewrites anew.
	DefaultChunkTTL = 6 * time.Hour
	// DefaultMaxChunks bounds the table; the oldest entries go first.
	DefaultMaxChunks = 1 << 16
)

// ChunkRef is what the gateway keeps for one rewritten chunk URL.
type ChunkRef struct {
	// URL is the original presigned storage URL. It is a bearer secret:
	// never log it.
	URL string
	// Headers are the reply's chunkHeaders (SSE-C), nil when it had none:
	// the gateway then forwards the driver's own SSE-C headers.
	Headers map[string]string
	// Owner binds the chunk to the session that received the reply; a
	// fetch by another owner is refused.
	Owner string
	// QueryID is the statement the chunk belongs to, for the recording.
	QueryID string
	// Index is the chunk's position in the result.
	Index   int
	Expires time.Time
}

// ChunkTable maps opaque chunk ids to original chunk URLs: RewriteReply puts
// gateway URLs into a reply, Lookup serves the driver's GET of one. It is
// safe for concurrent use and bounded in size.
type ChunkTable struct {
	ttl time.Duration
	max int
	now func() time.Time

	mu    sync.Mutex
	refs  map[string]ChunkRef
	order []string // ids, oldest first
}

// NewChunkTable returns a table; zero arguments take the defaults. now is
// the clock (nil: time.Now).
func NewChunkTable(max int, ttl time.Duration, now func() time.Time) *ChunkTable {
	if max <= 0 {
		max = DefaultMaxChunks
	}
	if ttl <= 0 {
		ttl = DefaultChunkTTL
	}
	if now == nil {
		now = time.Now
	}
	return &ChunkTable{ttl: ttl, max: max, now: now, refs: map[string]ChunkRef{}}
}

// RewriteReply registers every chunk of q for owner and points its URL at
// ChunkURL(host, id). It returns the number of chunks rewritten. URLs that
// already point at the gateway are left alone.
func (t *ChunkTable) RewriteReply(q *QueryResponse, host, owner string) (int, error) {
	headers, err := q.ChunkHeaders()
	if err != nil {
		return 0, err
	}
	return q.RewriteChunkURLs(func(i int, orig string) (string, error) {
		if IsGatewayChunkURL(orig) {
			return orig, nil
		}
		if orig == "" {
			return "", fmt.Errorf("chunk %d has an empty url", i)
		}
		id := NewChunkID()
		t.put(id, ChunkRef{URL: orig, Headers: headers, Owner: owner, QueryID: q.QueryID, Index: i})
		return ChunkURL(host, id), nil
	})
}

func (t *ChunkTable) put(id string, ref ChunkRef) {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	ref.Expires = now.Add(t.ttl)
	t.refs[id] = ref
	t.order = append(t.order, id)
	for len(t.order) > 0 {
		oldest := t.order[0]
		r, ok := t.refs[oldest]
		if ok && len(t.refs) <= t.max && now.Before(r.Expires) {
			break
		}
		delete(t.refs, oldest)
		t.order = t.order[1:]
	}
}

// Lookup returns the chunk id names, when it exists, has not expired and
// belongs to owner.
func (t *ChunkTable) Lookup(id, owner string) (ChunkRef, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	r, ok := t.refs[id]
	if !ok || r.Owner != owner || !t.now().Before(r.Expires) {
		return ChunkRef{}, false
	}
	return r, true
}

// Len is the number of chunks held.
func (t *ChunkTable) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.refs)
}
