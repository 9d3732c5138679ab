// Package session keeps the gateway's side of every Snowflake session it
// opened for a workload: the opaque gateway tokens (handles) the agent holds,
// the real session and master tokens they stand for, the binding to the
// cgroup and uid that logged in, and the renewal state.
//
// The agent only ever sees handles. A handle is 256 random bits with a
// recognisable prefix; the store keeps only its SHA-256, so a dump of the
// store cannot be replayed against the gateway. A handle is accepted only
// from the binding that logged in (workload-identity.md §9).
package session

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowgate/snowgate/internal/upstream"
)

// Prefixes of the two kinds of handle. They are recognisable in logs and
// headers and never collide with Snowflake's own token formats.
const (
	SessionPrefix = "snowgate-s1."
	MasterPrefix  = "snowgate-m1."
)

// Defaults of Options.
const (
	DefaultMaxSessions = 10_000
	DefaultIdleTimeout = 4 * time.Hour
)

// Errors of Lookup.
var (
	// ErrUnknown: the token is not a handle this gateway issued, or its
	// session ended (logout, idle timeout, restart).
	ErrUnknown = errors.New("session: not a gateway token of a live session")
	// ErrBinding: the handle is live but presented from another cgroup or
	// uid than the one that logged in (replay).
	ErrBinding = errors.New("session: gateway token presented from another workload")
	// ErrFull: the store holds Options.MaxSessions live sessions.
	ErrFull = errors.New("session: too many live sessions")
)

// Kind is the kind of handle: the session token or the master token.
type Kind int

// Handle kinds.
const (
	KindSession Kind = iota
	KindMaster
)

// Binding is where a session was opened from: the client socket's cgroup
// and uid, as the redirect recorded them.
type Binding struct {
	CgroupID uint64
	UID      uint32
}

// String formats the binding for logs.
func (b Binding) String() string { return fmt.Sprintf("cgroup %d uid %d", b.CgroupID, b.UID) }

// Tokens are the real Snowflake tokens of a session. They never leave the
// gateway except towards Snowflake.
type Tokens struct {
	Session, Master upstream.Secret
	// SessionExpiry and MasterExpiry are when Snowflake said they lapse
	// (zero: unknown).
	SessionExpiry, MasterExpiry time.Time
	// SnowflakeID is Snowflake's sessionId (digits kept as sent).
	SnowflakeID string
}

// Options configures a Store.
type Options struct {
	// MaxSessions bounds the live sessions; default DefaultMaxSessions.
	MaxSessions int
	// IdleTimeout ends sessions unused for this long; default
	// DefaultIdleTimeout (Snowflake's master token lifetime).
	IdleTimeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Store maps handles to sessions. Safe for concurrent use.
type Store struct {
	opts    Options
	mu      sync.Mutex
	handles map[[sha256.Size]byte]handleRef
	byID    map[string]*Session
	// changes counts every change worth saving: a session opened or
	// ended, new handles, new tokens.
	changes atomic.Uint64
}

// Changes is a counter that moves whenever a session is opened or ended or
// gets new handles or tokens: a state file saved at one value is current
// until it moves.
func (st *Store) Changes() uint64 { return st.changes.Load() }

type handleRef struct {
	s    *Session
	kind Kind
}

// NewStore returns an empty store.
func NewStore(o Options) *Store {
	if o.MaxSessions <= 0 {
		o.MaxSessions = DefaultMaxSessions
	}
	if o.IdleTimeout <= 0 {
		o.IdleTimeout = DefaultIdleTimeout
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Store{opts: o, handles: map[[sha256.Size]byte]handleRef{}, byID: map[string]*Session{}}
}

// Session is one gateway session: one Snowflake session opened with the
// gateway's credential for one workload login.
type Session struct {
	// ID is the gateway's id of the session, stable from login to logout
	// across renewals and upstream re-logins. It is not a credential.
	ID string
	// Binding is who logged in.
	Binding Binding
	// Data is the caller's description of the session (the gateway keeps
	// its Principal here). Set once at Create; read-only afterwards.
	Data any
	// Created is when the session was opened.
	Created time.Time

	// renew serialises renewals and re-logins, so concurrent requests that
	// all see an expired token renew once.
	renew sync.Mutex

	mu       sync.Mutex
	tokens   Tokens
	gen      uint64         // bumped by every token update
	changes  *atomic.Uint64 // the store's change counter
	lastUsed time.Time
	ended    bool
	sHash    [sha256.Size]byte
	mHash    [sha256.Size]byte
	// saved is the session's last entry in the state file.
	saved savedEntry
}

// savedEntry is a session's encoded entry in the state file and what it
// was made from: a save re-encodes a session only when its tokens or
// handles changed, or its last use moved by savedUseSlack. At 1,000
// sessions the file is rewritten several times a second under load, and
// encoding every session every time cost a tenth of the gateway's CPU.
type savedEntry struct {
	json  []byte
	data  json.RawMessage // the encoded Data, part of json
	gen   uint64
	sHash [sha256.Size]byte
	used  time.Time
}

// savedUseSlack is how stale a saved last use may be. It only decides
// whether a restored session is already idle, against an idle timeout of
// hours.
const savedUseSlack = time.Minute

// newHandle returns a fresh handle with prefix and its hash.
func newHandle(prefix string) (string, [sha256.Size]byte) {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	h := prefix + base64.RawURLEncoding.EncodeToString(b[:])
	return h, sha256.Sum256([]byte(h))
}

func newID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IsHandle reports whether s has the shape of a gateway handle (it says
// nothing about whether it is live).
func IsHandle(s string) bool {
	return strings.HasPrefix(s, SessionPrefix) || strings.HasPrefix(s, MasterPrefix)
}

// Create opens a session for binding b with the real tokens t and returns
// it with the session and master handles to give the agent.
func (st *Store) Create(b Binding, t Tokens, data any) (s *Session, sessionHandle, masterHandle string, err error) {
	now := st.opts.Now()
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.byID) >= st.opts.MaxSessions {
		st.sweepLocked(now)
		if len(st.byID) >= st.opts.MaxSessions {
			return nil, "", "", ErrFull
		}
	}
	s = &Session{ID: newID(), Binding: b, Data: data, Created: now, tokens: t, lastUsed: now, changes: &st.changes}
	st.changes.Add(1)
	sessionHandle, s.sHash = newHandle(SessionPrefix)
	masterHandle, s.mHash = newHandle(MasterPrefix)
	st.handles[s.sHash] = handleRef{s, KindSession}
	st.handles[s.mHash] = handleRef{s, KindMaster}
	st.byID[s.ID] = s
	return s, sessionHandle, masterHandle, nil
}

// Lookup returns the live session whose handle of kind k is token, if
// binding b is the one that opened it. A handle of the wrong kind, an
// unknown or ended one is ErrUnknown; the right handle from another
// binding is ErrBinding.
func (st *Store) Lookup(token string, k Kind, b Binding) (*Session, error) {
	if !IsHandle(token) {
		return nil, ErrUnknown
	}
	h := sha256.Sum256([]byte(token))
	now := st.opts.Now()
	st.mu.Lock()
	ref, ok := st.handles[h]
	st.mu.Unlock()
	if !ok || ref.kind != k {
		return nil, ErrUnknown
	}
	s := ref.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || now.Sub(s.lastUsed) >= st.opts.IdleTimeout {
		return nil, ErrUnknown
	}
	if s.Binding != b {
		return nil, fmt.Errorf("%w: opened from %s, presented from %s", ErrBinding, s.Binding, b)
	}
	s.lastUsed = now
	return s, nil
}

// End removes the session; its handles stop working at once.
func (st *Store) End(s *Session) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.endLocked(s)
}

func (st *Store) endLocked(s *Session) {
	s.mu.Lock()
	s.ended = true
	s.mu.Unlock()
	delete(st.handles, s.sHash)
	delete(st.handles, s.mHash)
	delete(st.byID, s.ID)
	st.changes.Add(1)
}

// Sweep ends sessions idle for longer than the idle timeout and returns
// how many it ended.
func (st *Store) Sweep() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.sweepLocked(st.opts.Now())
}

func (st *Store) sweepLocked(now time.Time) int {
	n := 0
	for _, s := range st.byID {
		s.mu.Lock()
		idle := now.Sub(s.lastUsed) >= st.opts.IdleTimeout
		s.mu.Unlock()
		if idle {
			st.endLocked(s)
			n++
		}
	}
	return n
}

// Len is the number of live sessions.
func (st *Store) Len() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.byID)
}

// Get returns the live session with the gateway id, or nil.
func (st *Store) Get(id string) *Session {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.byID[id]
}

// Tokens returns the session's current real tokens and their generation,
// which Renew uses to tell whether another request renewed meanwhile.
func (s *Session) Tokens() (Tokens, uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tokens, s.gen
}

// Ended reports whether the session was ended.
func (s *Session) Ended() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ended
}

// Renew replaces the session's tokens with what renew returns, once for any
// number of concurrent callers: a caller whose generation seen is older than
// the current one gets the current tokens without calling renew (another
// request already renewed). renew runs with the session's renewal lock
// held and gets the tokens it is to replace.
func (s *Session) Renew(seen uint64, renew func(old Tokens) (Tokens, error)) (Tokens, error) {
	s.renew.Lock()
	defer s.renew.Unlock()
	cur, gen := s.Tokens()
	if gen != seen {
		return cur, nil
	}
	if s.Ended() {
		return Tokens{}, ErrUnknown
	}
	t, err := renew(cur)
	if err != nil {
		return Tokens{}, err
	}
	s.mu.Lock()
	s.tokens = t
	s.gen++
	s.mu.Unlock()
	if s.changes != nil {
		s.changes.Add(1)
	}
	return t, nil
}

// SetTokens replaces the session's tokens (after a renewal the driver
// asked for and the gateway forwarded).
func (s *Session) SetTokens(t Tokens) {
	s.renew.Lock()
	defer s.renew.Unlock()
	s.mu.Lock()
	s.tokens = t
	s.gen++
	s.mu.Unlock()
	if s.changes != nil {
		s.changes.Add(1)
	}
}

// Rehandle gives the session fresh handles and returns them; the old ones
// stop working at once. The gateway does this when the driver renewed.
func (st *Store) Rehandle(s *Session) (sessionHandle, masterHandle string, err error) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.byID[s.ID] != s {
		return "", "", ErrUnknown
	}
	delete(st.handles, s.sHash)
	delete(st.handles, s.mHash)
	sessionHandle, s.sHash = newHandle(SessionPrefix)
	masterHandle, s.mHash = newHandle(MasterPrefix)
	st.handles[s.sHash] = handleRef{s, KindSession}
	st.handles[s.mHash] = handleRef{s, KindMaster}
	st.changes.Add(1)
	return sessionHandle, masterHandle, nil
}

// savedSession is one session as SaveFile writes it. The handles are kept
// as their hashes only, so the file cannot be replayed at the gateway; the
// real tokens are in it, hence mode 0600 and the gateway's user only.
type savedSession struct {
	ID            string          `json:"id"`
	Binding       Binding         `json:"binding"`
	Created       time.Time       `json:"created"`
	LastUsed      time.Time       `json:"last_used"`
	SessionHash   string          `json:"session_hash"`
	MasterHash    string          `json:"master_hash"`
	Session       string          `json:"session_token"`
	Master        string          `json:"master_token"`
	SessionExpiry time.Time       `json:"session_expiry"`
	MasterExpiry  time.Time       `json:"master_expiry"`
	SnowflakeID   string          `json:"snowflake_id"`
	Data          json.RawMessage `json:"data"`
}

// savedFile is the file SaveFile writes.
type savedFile struct {
	Version  int            `json:"version"`
	Sessions []savedSession `json:"sessions"`
}

// savedFileVersion is savedFile.Version as SaveFile writes it.
const savedFileVersion = 1

// SaveFile writes the live sessions to file (mode 0600, replaced
// atomically), so a gateway that restarts or hands over to its successor
// keeps its agents' sessions. encode renders each session's Data; since
// Data never changes, a session's entry is encoded once and again only
// when its tokens or handles change (encode must be the same function on
// every call).
func (st *Store) SaveFile(file string, encode func(data any) (json.RawMessage, error)) error {
	now := st.opts.Now()
	st.mu.Lock()
	sessions := make([]*Session, 0, len(st.byID))
	for _, s := range st.byID {
		sessions = append(sessions, s)
	}
	st.mu.Unlock()
	b := fmt.Appendf(nil, `{"version":%d,"sessions":[`, savedFileVersion)
	n := 0
	for _, sess := range sessions {
		entry, err := sess.savedJSON(now, st.opts.IdleTimeout, encode)
		if err != nil {
			return err
		}
		if entry == nil {
			continue
		}
		if n > 0 {
			b = append(b, ',')
		}
		b = append(b, entry...)
		n++
	}
	b = append(b, "]}"...)
	if err := writeFileAtomic(file, b); err != nil {
		return fmt.Errorf("save sessions %s: %w", file, err)
	}
	return nil
}

// savedJSON is s's entry in the state file at now, nil when the session
// ended or is idle past idle: the cached one while it is current, else
// encoded anew.
func (s *Session) savedJSON(now time.Time, idle time.Duration, encode func(data any) (json.RawMessage, error)) ([]byte, error) {
	s.mu.Lock()
	if s.ended || now.Sub(s.lastUsed) >= idle {
		s.mu.Unlock()
		return nil, nil
	}
	if c := &s.saved; c.json != nil && c.gen == s.gen && c.sHash == s.sHash && s.lastUsed.Sub(c.used) < savedUseSlack {
		b := c.json
		s.mu.Unlock()
		return b, nil
	}
	ss := savedSession{
		ID: s.ID, Binding: s.Binding, Created: s.Created, LastUsed: s.lastUsed,
		SessionHash: hex.EncodeToString(s.sHash[:]), MasterHash: hex.EncodeToString(s.mHash[:]),
		Session: s.tokens.Session.Reveal(), Master: s.tokens.Master.Reveal(),
		SessionExpiry: s.tokens.SessionExpiry, MasterExpiry: s.tokens.MasterExpiry, SnowflakeID: s.tokens.SnowflakeID,
	}
	gen, sHash := s.gen, s.sHash
	ss.Data = s.saved.data
	s.mu.Unlock()
	// Data is set once at Create: only the first save of a session
	// encodes it.
	if ss.Data == nil {
		d, err := encode(s.Data)
		if err != nil {
			return nil, fmt.Errorf("save sessions: session %s: %w", s.ID, err)
		}
		ss.Data = d
	}
	b, err := json.Marshal(ss)
	if err != nil {
		return nil, fmt.Errorf("save sessions: session %s: %w", s.ID, err)
	}
	s.mu.Lock()
	s.saved = savedEntry{json: b, data: ss.Data, gen: gen, sHash: sHash, used: ss.LastUsed}
	s.mu.Unlock()
	return b, nil
}

// writeFileAtomic writes b to a 0600 temporary file next to file and
// renames it into place.
func writeFileAtomic(file string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".sessions-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	err = tmp.Chmod(0o600)
	if err == nil {
		_, err = tmp.Write(b)
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// LoadFile adds the sessions saved in file that are not idle past the
// timeout and not already in the store, and returns how many it added. A
// missing file is not an error. decode restores each session's Data; a
// session it refuses is skipped.
func (st *Store) LoadFile(file string, decode func(json.RawMessage) (any, error)) (int, error) {
	b, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load sessions: %w", err)
	}
	var in savedFile
	if err := json.Unmarshal(b, &in); err != nil {
		return 0, fmt.Errorf("load sessions %s: %w", file, err)
	}
	if in.Version != 1 {
		return 0, fmt.Errorf("load sessions %s: unknown version %d", file, in.Version)
	}
	now := st.opts.Now()
	n := 0
	for _, ss := range in.Sessions {
		if now.Sub(ss.LastUsed) >= st.opts.IdleTimeout {
			continue
		}
		sh, err1 := hex.DecodeString(ss.SessionHash)
		mh, err2 := hex.DecodeString(ss.MasterHash)
		if err1 != nil || err2 != nil || len(sh) != sha256.Size || len(mh) != sha256.Size || ss.ID == "" {
			continue
		}
		data, err := decode(ss.Data)
		if err != nil {
			continue
		}
		s := &Session{ID: ss.ID, Binding: ss.Binding, Data: data, Created: ss.Created, lastUsed: ss.LastUsed, changes: &st.changes,
			tokens: Tokens{Session: upstream.NewSecret(ss.Session), Master: upstream.NewSecret(ss.Master),
				SessionExpiry: ss.SessionExpiry, MasterExpiry: ss.MasterExpiry, SnowflakeID: ss.SnowflakeID}}
		copy(s.sHash[:], sh)
		copy(s.mHash[:], mh)
		st.mu.Lock()
		_, dupID := st.byID[s.ID]
		_, dupS := st.handles[s.sHash]
		_, dupM := st.handles[s.mHash]
		if !dupID && !dupS && !dupM && len(st.byID) < st.opts.MaxSessions {
			st.byID[s.ID] = s
			st.handles[s.sHash] = handleRef{s, KindSession}
			st.handles[s.mHash] = handleRef{s, KindMaster}
			n++
		}
		st.mu.Unlock()
	}
	return n, nil
}
