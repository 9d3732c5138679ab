package session

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/upstream"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestLookup(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	st := NewStore(Options{IdleTimeout: time.Hour, Now: c.now})
	b := Binding{CgroupID: 42, UID: 1000}
	s, sh, mh, err := st.Create(b, Tokens{Session: upstream.NewSecret("real-session"), Master: upstream.NewSecret("real-master")}, "principal")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(sh, SessionPrefix) || !strings.HasPrefix(mh, MasterPrefix) || sh == mh {
		t.Fatalf("handles %q %q", sh, mh)
	}
	if strings.Contains(sh, "real") || strings.Contains(mh, "real") {
		t.Fatal("a handle carries the real token")
	}
	tests := []struct {
		name  string
		token string
		kind  Kind
		b     Binding
		want  error
	}{
		{"session handle", sh, KindSession, b, nil},
		{"master handle", mh, KindMaster, b, nil},
		{"master handle as session token", mh, KindSession, b, ErrUnknown},
		{"session handle as master token", sh, KindMaster, b, ErrUnknown},
		{"other cgroup", sh, KindSession, Binding{CgroupID: 43, UID: 1000}, ErrBinding},
		{"other uid", sh, KindSession, Binding{CgroupID: 42, UID: 0}, ErrBinding},
		{"real token", "real-session", KindSession, b, ErrUnknown},
		{"forged handle", SessionPrefix + strings.Repeat("A", 43), KindSession, b, ErrUnknown},
		{"empty", "", KindSession, b, ErrUnknown},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := st.Lookup(tc.token, tc.kind, tc.b)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
			if tc.want == nil && got != s {
				t.Fatal("another session")
			}
		})
	}
	tok, _ := s.Tokens()
	if tok.Session.Reveal() != "real-session" || s.Data != "principal" || st.Get(s.ID) != s {
		t.Fatal("session content")
	}

	// Idle sessions end; used ones do not.
	c.add(50 * time.Minute)
	if _, err := st.Lookup(sh, KindSession, b); err != nil {
		t.Fatal(err)
	}
	c.add(50 * time.Minute)
	if _, err := st.Lookup(sh, KindSession, b); err != nil {
		t.Fatalf("used 50 minutes ago: %v", err)
	}
	c.add(61 * time.Minute)
	if _, err := st.Lookup(sh, KindSession, b); !errors.Is(err, ErrUnknown) {
		t.Fatalf("idle session: %v", err)
	}
	if n := st.Sweep(); n != 1 || st.Len() != 0 {
		t.Fatalf("swept %d, %d left", n, st.Len())
	}
}

func TestEnd(t *testing.T) {
	st := NewStore(Options{})
	b := Binding{CgroupID: 1}
	s, sh, mh, err := st.Create(b, Tokens{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.End(s)
	for _, h := range []struct {
		tok  string
		kind Kind
	}{{sh, KindSession}, {mh, KindMaster}} {
		if _, err := st.Lookup(h.tok, h.kind, b); !errors.Is(err, ErrUnknown) {
			t.Fatalf("after End: %v", err)
		}
	}
	if !s.Ended() || st.Len() != 0 {
		t.Fatal("session not ended")
	}
	if _, err := s.Renew(0, func(Tokens) (Tokens, error) { return Tokens{}, nil }); !errors.Is(err, ErrUnknown) {
		t.Fatalf("renew of an ended session: %v", err)
	}
}

func TestFull(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	st := NewStore(Options{MaxSessions: 2, IdleTimeout: time.Minute, Now: c.now})
	for range 2 {
		if _, _, _, err := st.Create(Binding{}, Tokens{}, nil); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, _, err := st.Create(Binding{}, Tokens{}, nil); !errors.Is(err, ErrFull) {
		t.Fatalf("third session: %v", err)
	}
	// Idle sessions make room.
	c.add(2 * time.Minute)
	if _, _, _, err := st.Create(Binding{}, Tokens{}, nil); err != nil {
		t.Fatalf("after idle timeout: %v", err)
	}
}

// TestRenewOnce: concurrent requests that saw the same expired token renew
// once; the rest get the renewed tokens.
func TestRenewOnce(t *testing.T) {
	st := NewStore(Options{})
	s, _, _, err := st.Create(Binding{}, Tokens{Session: upstream.NewSecret("s0")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	_, gen := s.Tokens()
	var calls atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := s.Renew(gen, func(old Tokens) (Tokens, error) {
				calls.Add(1)
				if old.Session.Reveal() != "s0" {
					t.Errorf("renewing %q", old.Session.Reveal())
				}
				return Tokens{Session: upstream.NewSecret("s1")}, nil
			})
			if err != nil || got.Session.Reveal() != "s1" {
				t.Errorf("renew: %q %v", got.Session.Reveal(), err)
			}
		}()
	}
	wg.Wait()
	if calls.Load() != 1 {
		t.Fatalf("%d renewals, want 1", calls.Load())
	}
	// A failed renewal keeps the tokens.
	_, gen = s.Tokens()
	if _, err := s.Renew(gen, func(Tokens) (Tokens, error) { return Tokens{}, errors.New("boom") }); err == nil {
		t.Fatal("no error")
	}
	if tok, g := s.Tokens(); tok.Session.Reveal() != "s1" || g != gen {
		t.Fatal("failed renewal changed the tokens")
	}
}

// TestSaveLoad: a successor gateway loads the sessions its predecessor
// saved: the same handles work from the same binding only, with the same
// real tokens and data; idle and already present sessions are skipped.
func TestSaveLoad(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	file := filepath.Join(t.TempDir(), "sessions.json")
	old := NewStore(Options{IdleTimeout: time.Hour, Now: c.now})
	b := Binding{CgroupID: 9, UID: 1000}
	s1, sh, mh, err := old.Create(b, Tokens{Session: upstream.NewSecret("real-s"), Master: upstream.NewSecret("real-m"), SnowflakeID: "123456789012345678901"}, "p1")
	if err != nil {
		t.Fatal(err)
	}
	_, idleHandle, _, err := old.Create(b, Tokens{}, "p2")
	if err != nil {
		t.Fatal(err)
	}
	c.add(59 * time.Minute)
	if _, err := old.Lookup(sh, KindSession, b); err != nil {
		t.Fatal(err)
	}
	c.add(2 * time.Minute) // idle is now past the timeout; s1 is not
	encode := func(d any) (json.RawMessage, error) { return json.Marshal(d) }
	if err := old.SaveFile(file, encode); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("file mode %v (%v)", fi.Mode(), err)
	}
	raw, _ := os.ReadFile(file)
	if strings.Contains(string(raw), sh) || strings.Contains(string(raw), mh) {
		t.Fatal("the file holds a handle")
	}
	decode := func(m json.RawMessage) (any, error) {
		var s string
		err := json.Unmarshal(m, &s)
		return s, err
	}
	succ := NewStore(Options{IdleTimeout: time.Hour, Now: c.now})
	n, err := succ.LoadFile(file, decode)
	if err != nil || n != 1 {
		t.Fatalf("loaded %d (%v), want 1", n, err)
	}
	got, err := succ.Lookup(sh, KindSession, b)
	if err != nil || got.ID != s1.ID || got.Data != "p1" {
		t.Fatalf("lookup after load: %+v %v", got, err)
	}
	if tok, _ := got.Tokens(); tok.Session.Reveal() != "real-s" || tok.Master.Reveal() != "real-m" || tok.SnowflakeID != "123456789012345678901" {
		t.Fatalf("tokens %+v", tok)
	}
	if _, err := succ.Lookup(mh, KindMaster, b); err != nil {
		t.Fatal(err)
	}
	if _, err := succ.Lookup(sh, KindSession, Binding{CgroupID: 10, UID: 1000}); !errors.Is(err, ErrBinding) {
		t.Fatalf("other binding after load: %v", err)
	}
	if _, err := succ.Lookup(idleHandle, KindSession, b); !errors.Is(err, ErrUnknown) {
		t.Fatalf("idle session after load: %v", err)
	}
	if n, err := succ.LoadFile(file, decode); err != nil || n != 0 {
		t.Fatalf("second load added %d (%v)", n, err)
	}
	if n, err := NewStore(Options{}).LoadFile(filepath.Join(t.TempDir(), "missing.json"), decode); err != nil || n != 0 {
		t.Fatalf("missing file: %d %v", n, err)
	}
}

// TestSaveFileReencodesOnlyChanges: a save encodes a session's Data once
// and re-encodes its entry only when its tokens, handles or (by more than
// savedUseSlack) last use changed; the file always says what a fresh
// encoding would.
func TestSaveFileReencodesOnlyChanges(t *testing.T) {
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	file := filepath.Join(t.TempDir(), "sessions.json")
	st := NewStore(Options{IdleTimeout: time.Hour, Now: c.now})
	b := Binding{CgroupID: 9, UID: 1000}
	var encoded atomic.Int64
	encode := func(d any) (json.RawMessage, error) { encoded.Add(1); return json.Marshal(d) }
	var sessions []*Session
	var handles []string
	for i := range 3 {
		s, sh, _, err := st.Create(b, Tokens{Session: upstream.NewSecret("real-s" + string(rune('a'+i)))}, "data")
		if err != nil {
			t.Fatal(err)
		}
		sessions, handles = append(sessions, s), append(handles, sh)
	}
	load := func() savedFile {
		t.Helper()
		if err := st.SaveFile(file, encode); err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var f savedFile
		if err := json.Unmarshal(raw, &f); err != nil {
			t.Fatalf("state file is not JSON: %v\n%s", err, raw)
		}
		return f
	}
	entry := func(f savedFile, id string) savedSession {
		t.Helper()
		for _, s := range f.Sessions {
			if s.ID == id {
				return s
			}
		}
		t.Fatalf("session %s not in the file", id)
		return savedSession{}
	}
	first := load()
	if len(first.Sessions) != 3 || first.Version != savedFileVersion || encoded.Load() != 3 {
		t.Fatalf("%d sessions (version %d), %d encodings; want 3, %d, 3", len(first.Sessions), first.Version, encoded.Load(), savedFileVersion)
	}
	steps := []struct {
		name  string
		do    func()
		check func(savedSession) bool
	}{
		{"nothing changed", func() {}, func(e savedSession) bool { return e.Session == "real-sa" }},
		{"tokens renewed", func() { sessions[0].SetTokens(Tokens{Session: upstream.NewSecret("renewed")}) },
			func(e savedSession) bool { return e.Session == "renewed" }},
		{"handles replaced", func() {
			sh, _, err := st.Rehandle(sessions[0])
			if err != nil {
				t.Fatal(err)
			}
			handles[0] = sh
		}, func(e savedSession) bool { return e.SessionHash == hex.EncodeToString(sessions[0].sHash[:]) }},
		{"used within the slack", func() {
			c.add(savedUseSlack / 2)
			if _, err := st.Lookup(handles[1], KindSession, b); err != nil {
				t.Fatal(err)
			}
		}, func(e savedSession) bool { return e.LastUsed.Equal(c.now().Add(-savedUseSlack / 2)) }},
		{"used past the slack", func() {
			c.add(2 * savedUseSlack)
			if _, err := st.Lookup(handles[0], KindSession, b); err != nil {
				t.Fatal(err)
			}
		}, func(e savedSession) bool { return e.LastUsed.Equal(c.now()) }},
		{"ended", func() { st.End(sessions[2]) }, nil},
	}
	for _, step := range steps {
		step.do()
		f := load()
		if encoded.Load() != 3 {
			t.Fatalf("%s: Data encoded %d times, want once per session", step.name, encoded.Load())
		}
		if step.check == nil {
			if len(f.Sessions) != 2 {
				t.Fatalf("%s: %d sessions in the file", step.name, len(f.Sessions))
			}
			continue
		}
		if e := entry(f, sessions[0].ID); !step.check(e) {
			t.Fatalf("%s: entry %+v", step.name, e)
		}
		if e := entry(f, sessions[1].ID); string(e.Data) != `"data"` {
			t.Fatalf("%s: data %s", step.name, e.Data)
		}
	}
}

// TestChanges: every change a state file must reflect moves the counter;
// look-ups do not.
func TestChanges(t *testing.T) {
	st := NewStore(Options{})
	b := Binding{CgroupID: 7, UID: 1000}
	last := st.Changes()
	moved := func(what string) {
		t.Helper()
		if now := st.Changes(); now == last {
			t.Errorf("%s did not move the change counter", what)
		} else {
			last = now
		}
	}
	s, sh, _, err := st.Create(b, Tokens{Session: upstream.NewSecret("s1"), Master: upstream.NewSecret("m1")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	moved("Create")
	if _, err := st.Lookup(sh, KindSession, b); err != nil {
		t.Fatal(err)
	}
	if st.Changes() != last {
		t.Error("a look-up moved the change counter")
	}
	s.SetTokens(Tokens{Session: upstream.NewSecret("s2"), Master: upstream.NewSecret("m2")})
	moved("SetTokens")
	if _, err := s.Renew(s.gen, func(Tokens) (Tokens, error) {
		return Tokens{Session: upstream.NewSecret("s3"), Master: upstream.NewSecret("m3")}, nil
	}); err != nil {
		t.Fatal(err)
	}
	moved("Renew")
	if _, _, err := st.Rehandle(s); err != nil {
		t.Fatal(err)
	}
	moved("Rehandle")
	st.End(s)
	moved("End")
}
