package emulator

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"sync"
	"time"

	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
)

// session is one logged-in Snowflake session.
type session struct {
	id        int64
	user      string
	clientApp string // CLIENT_APP_ID of the login ("Go", "JavaScript", …)
	engine    *sqlengine.Session
	// execMu serialises the statements of a session: the engine session
	// (current database, ALTER SESSION values) is not shared concurrently.
	execMu chan struct{}

	// Guarded by sessionStore.mu.
	token, master             string
	tokenExpiry, masterExpiry time.Time
	// retired session tokens of this session: requests with them get
	// 390112, so a driver that raced a renewal renews again.
	retired map[string]bool
	closed  bool
}

// sessionStore indexes sessions by token.
type sessionStore struct {
	mu         sync.Mutex
	byToken    map[string]*session // current and retired session tokens
	byMaster   map[string]*session
	byID       map[int64]*session
	sessionTTL time.Duration
	masterTTL  time.Duration
	now        func() time.Time
}

func newSessionStore(sessionTTL, masterTTL time.Duration) *sessionStore {
	return &sessionStore{
		byToken:    map[string]*session{},
		byMaster:   map[string]*session{},
		byID:       map[int64]*session{},
		sessionTTL: sessionTTL,
		masterTTL:  masterTTL,
		now:        time.Now,
	}
}

// randomToken returns an opaque token with a recognisable prefix.
func randomToken(prefix string) string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return prefix + base64.RawURLEncoding.EncodeToString(b[:])
}

// randomSessionID returns a positive id below 2^53, so that JavaScript
// clients read it exactly.
func randomSessionID() int64 {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return int64(binary.BigEndian.Uint64(b[:])>>11) | 1
}

// create registers a new session.
func (st *sessionStore) create(user, clientApp string, eng *sqlengine.Session) *session {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	s := &session{
		id:           randomSessionID(),
		user:         user,
		clientApp:    clientApp,
		engine:       eng,
		execMu:       make(chan struct{}, 1),
		token:        randomToken("ver:1-emu-st:"),
		master:       randomToken("ver:1-emu-mt:"),
		tokenExpiry:  now.Add(st.sessionTTL),
		masterExpiry: now.Add(st.masterTTL),
		retired:      map[string]bool{},
	}
	for st.byID[s.id] != nil {
		s.id = randomSessionID()
	}
	st.byToken[s.token] = s
	st.byMaster[s.master] = s
	st.byID[s.id] = s
	return s
}

// tokenState is the outcome of looking up a session token.
type tokenState int

const (
	tokenUnknown tokenState = iota
	tokenValid
	tokenExpired
)

// lookup finds the session of a session token.
func (st *sessionStore) lookup(token string) (*session, tokenState) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s := st.byToken[token]
	if s == nil || s.closed {
		return nil, tokenUnknown
	}
	if s.retired[token] || !st.now().Before(s.tokenExpiry) {
		return s, tokenExpired
	}
	return s, tokenValid
}

// renew issues a new session token for the session of master, provided
// oldToken belongs to it. It returns the new tokens, or the state that
// refused it.
func (st *sessionStore) renew(master, oldToken string) (s *session, state tokenState) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s = st.byMaster[master]
	if s == nil || s.closed {
		return nil, tokenUnknown
	}
	now := st.now()
	if !now.Before(s.masterExpiry) {
		return s, tokenExpired
	}
	if owner := st.byToken[oldToken]; owner != s {
		return nil, tokenUnknown
	}
	s.retired[s.token] = true
	s.token = randomToken("ver:1-emu-st:")
	s.tokenExpiry = now.Add(st.sessionTTL)
	st.byToken[s.token] = s
	return s, tokenValid
}

// tokens returns the current tokens of s and their validity in seconds.
func (st *sessionStore) tokens(s *session) (token, master string, validST, validMT int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	now := st.now()
	return s.token, s.master, int64(s.tokenExpiry.Sub(now) / time.Second), int64(s.masterExpiry.Sub(now) / time.Second)
}

// expire expires the session tokens (and with masters also the master
// tokens) of one session, or of all when id is 0.
func (st *sessionStore) expire(id int64, sessions, masters bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	past := st.now().Add(-time.Second)
	for _, s := range st.byID {
		if id != 0 && s.id != id {
			continue
		}
		if sessions {
			s.tokenExpiry = past
		}
		if masters {
			s.masterExpiry = past
		}
	}
}

// remove ends a session: its tokens stop working.
func (st *sessionStore) remove(s *session) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s.closed = true
	delete(st.byID, s.id)
	delete(st.byMaster, s.master)
	delete(st.byToken, s.token)
	for t := range s.retired {
		delete(st.byToken, t)
	}
}

// stale returns sessions whose master token expired more than grace ago:
// no driver can renew them any more.
func (st *sessionStore) stale(grace time.Duration) []*session {
	st.mu.Lock()
	defer st.mu.Unlock()
	cut := st.now().Add(-grace)
	var out []*session
	for _, s := range st.byID {
		if s.masterExpiry.Before(cut) {
			out = append(out, s)
		}
	}
	return out
}

// all returns every live session.
func (st *sessionStore) all() []*session {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make([]*session, 0, len(st.byID))
	for _, s := range st.byID {
		out = append(out, s)
	}
	return out
}
