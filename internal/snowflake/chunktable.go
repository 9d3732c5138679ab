package snowflake

import (
	"crypto/rand"
	"fmt"
	"net/url"
	"sync/atomic"
	"time"
)

// Defaults of a ChunkTable.
const (
	// DefaultChunkTTL is how long a rewritten chunk URL stays valid. The
	// presigned storage URLs behind them last hours; Node refreshes them
	// through /queries/<qid>/result when they fail, which rewrites anew.
	DefaultChunkTTL = 6 * time.Hour
)

// ChunkRef is what a rewritten chunk URL stands for.
type ChunkRef struct {
	// URL is the original presigned storage URL. It is a bearer secret:
	// never log it.
	URL string
	// Headers are the reply's chunkHeaders (SSE-C), nil when it had none:
	// the gateway then forwards the driver's own SSE-C headers.
	Headers map[string]string
	// Owner binds the chunk to the workload that received the reply; a
	// fetch by another owner is refused.
	Owner string
	// QueryID is the statement the chunk belongs to, for the recording.
	QueryID string
	// Index is the chunk's position in the result; Count is the number
	// of chunks the reply issued (0 in a URL sealed before the count was
	// sealed with it).
	Index int
	Count int
	// Session is the gateway session the reply was issued to (empty
	// outside a session, e.g. in observe-only mode, and in URLs sealed
	// before it was): a chunk fetch carries no session token, so this is
	// how its record finds the session's recording, in this process or
	// the one that succeeds it.
	Session string
	// Expires is when the rewritten URL stops being served (second
	// precision).
	Expires time.Time
}

// ChunkTable turns the chunk URLs of a reply into gateway URLs and back:
// RewriteReply puts gateway URLs into a reply, Lookup serves the driver's
// GET of one. Despite its name it holds nothing per chunk: each gateway URL
// carries its ChunkRef sealed (chunktoken.go) with a key the table holds,
// so a URL stays good across a restart of the gateway with the same key,
// and any number of results may be in flight. It is safe for concurrent use.
type ChunkTable struct {
	ttl  time.Duration
	now  func() time.Time
	keys atomic.Pointer[chunkKeyring]
}

// NewChunkTable returns a table sealing with a fresh random key, which dies
// with the process: its URLs do not survive a restart (tests, defaults).
// ttl 0 is DefaultChunkTTL; now is the clock (nil: time.Now).
func NewChunkTable(ttl time.Duration, now func() time.Time) *ChunkTable {
	key := make([]byte, ChunkKeySize)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go ≥ 1.24)
	t, err := NewSealedChunkTable(ChunkKeys{Current: key}, ttl, now)
	if err != nil {
		// A 32-byte key is always accepted.
		panic(fmt.Sprintf("chunk table with a fresh key: %v", err))
	}
	return t
}

// NewSealedChunkTable returns a table sealing with keys.Current and opening
// what it or keys.Previous sealed. ttl 0 is DefaultChunkTTL; now is the
// clock (nil: time.Now).
func NewSealedChunkTable(keys ChunkKeys, ttl time.Duration, now func() time.Time) (*ChunkTable, error) {
	if ttl <= 0 {
		ttl = DefaultChunkTTL
	}
	if now == nil {
		now = time.Now
	}
	ring, err := newChunkKeyring(keys)
	if err != nil {
		return nil, err
	}
	t := &ChunkTable{ttl: ttl, now: now}
	t.keys.Store(ring)
	return t, nil
}

// KeyID is the id of the key the table seals with, as URLs carry it (for
// the operator's log: it is not secret).
func (t *ChunkTable) KeyID() string { return fmt.Sprintf("%08x", t.keys.Load().current.id) }

// RewriteReply points every chunk URL of q at a gateway URL
// (ChunkURL(host, id) with the sealed reference in its query) bound to
// owner and naming session (see ChunkRef.Session; may be empty). It returns
// the number of chunks rewritten. URLs that already point at the gateway
// are left alone.
func (t *ChunkTable) RewriteReply(q *QueryResponse, host, owner, session string) (int, error) {
	headers, err := q.ChunkHeaders()
	if err != nil {
		return 0, err
	}
	expires := t.now().Add(t.ttl)
	keys := t.keys.Load()
	count := q.ChunkCount()
	return q.RewriteChunkURLs(func(i int, orig string) (string, error) {
		if IsGatewayChunkURL(orig) {
			return orig, nil
		}
		if orig == "" {
			return "", fmt.Errorf("chunk %d has an empty url", i)
		}
		id, sealed, err := keys.seal(ChunkRef{URL: orig, Headers: headers, Owner: owner, QueryID: q.QueryID, Index: i, Count: count, Session: session, Expires: expires})
		if err != nil {
			return "", err
		}
		u := url.URL{Scheme: "https", Host: host, Path: ChunkPathPrefix + id, RawQuery: ChunkTokenParam + "=" + sealed}
		return u.String(), nil
	})
}

// Lookup returns the chunk that the gateway URL with path id id and query
// parameter ChunkTokenParam sealed names, when this table (or its previous
// key) sealed it for owner and it has not expired. Anything else —
// unknown, forged, tampered, expired, another owner's, another key's — is
// one answer: false.
func (t *ChunkTable) Lookup(id, sealed, owner string) (ChunkRef, bool) {
	ref, err := t.Open(id, sealed, owner)
	return ref, err == nil
}

// Open is Lookup with the reason of a refusal (ErrChunkToken wrapped). The
// reason is for tests and the operator; a driver is told only that the
// chunk is unknown.
func (t *ChunkTable) Open(id, sealed, owner string) (ChunkRef, error) {
	ref, err := t.keys.Load().open(id, sealed, owner, t.now())
	if err != nil {
		return ChunkRef{}, err
	}
	return ref, nil
}

// Rotate makes key the sealing key. The key it replaces still opens what
// it sealed, until every URL it sealed has expired (one TTL from now); a
// key retired before that is forgotten. Rotations must not run
// concurrently with each other (lookups and rewrites may).
func (t *ChunkTable) Rotate(key []byte) error {
	prev := t.keys.Load()
	next, err := newChunkKeyring(ChunkKeys{Current: key, Previous: prev.current.key, PreviousUntil: t.now().Add(t.ttl), Bind: prev.bind})
	if err != nil {
		return err
	}
	t.keys.Store(next)
	return nil
}
