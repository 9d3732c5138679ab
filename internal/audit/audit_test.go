package audit_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/audit"
)

func TestEmitSchema(t *testing.T) {
	tests := []struct {
		name string
		ev   audit.Event
		want map[string]any // fields that must be present with these values
		gone []string       // fields that must be absent
	}{
		{
			name: "login failure",
			ev:   audit.Event{Type: audit.LoginFailure, Outcome: "refused", Reason: "token expired", Workload: &audit.Workload{CgroupID: 7, PID: 42, UID: 1001, Comm: "python3"}},
			want: map[string]any{"v": 1.0, "type": "login.failure", "outcome": "refused", "reason": "token expired"},
			gone: []string{"session_id", "sql", "claims", "detail"},
		},
		{
			name: "query decision",
			ev:   audit.Event{Type: audit.QueryDecision, SessionID: "s1", SQL: "DELETE FROM t", Class: "dml", Decision: "approve", Rule: "r"},
			want: map[string]any{"v": 1.0, "type": "query.decision", "session_id": "s1", "class": "dml", "decision": "approve", "rule": "r", "sql": "DELETE FROM t"},
			gone: []string{"workload", "reason"},
		},
		{
			name: "bypass",
			ev:   audit.Event{Type: audit.BypassRefused, Detail: map[string]any{"hook": "sendmsg4", "proto": 17}},
			want: map[string]any{"type": "bypass.refused"},
			gone: []string{"outcome", "user"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			l, err := audit.New(audit.Options{Writers: []io.Writer{&buf}})
			if err != nil {
				t.Fatal(err)
			}
			before := time.Now().Add(-time.Second)
			l.Emit(tc.ev)
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			line := buf.String()
			if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") {
				t.Fatalf("want exactly one line, got %q", line)
			}
			var got map[string]any
			if err := json.Unmarshal([]byte(line), &got); err != nil {
				t.Fatal(err)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s = %v, want %v", k, got[k], v)
				}
			}
			for _, k := range tc.gone {
				if _, ok := got[k]; ok {
					t.Errorf("%s present, want it omitted when empty", k)
				}
			}
			ts, err := time.Parse(time.RFC3339Nano, got["time"].(string))
			if err != nil || ts.Before(before) || ts.Location() != time.UTC || !strings.HasSuffix(got["time"].(string), "Z") {
				t.Errorf("time %v (%v): want a UTC RFC 3339 time set by Emit", got["time"], err)
			}
		})
	}
}

func TestNilLoggerDiscards(t *testing.T) {
	var l *audit.Logger
	l.Emit(audit.Event{Type: audit.SessionStart})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestNoOutputRefused(t *testing.T) {
	if _, err := audit.New(audit.Options{}); err == nil {
		t.Fatal("a logger without outputs was accepted")
	}
	if _, err := audit.New(audit.Options{Syslog: &audit.SyslogOptions{Network: "udp", Address: "127.0.0.1:1", Facility: "kernel"}}); err == nil {
		t.Fatal("an unknown facility was accepted")
	}
}

// TestFileConcurrent checks that concurrent emitters produce whole lines and
// that a reopened file is appended to.
func TestFileConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	const workers, each = 8, 200
	for round := range 2 {
		l, err := audit.New(audit.Options{File: path})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for w := range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					l.Emit(audit.Event{Type: audit.QueryDecision, SessionID: "s", RequestID: strings.Repeat("x", w+i%50), Decision: "allow"})
				}
			}()
		}
		wg.Wait()
		if err := l.Close(); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			var e audit.Event
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
				t.Fatalf("line %d: %v", n+1, err)
			}
			n++
		}
		f.Close()
		if want := (round + 1) * workers * each; n != want {
			t.Fatalf("round %d: %d lines, want %d", round, n, want)
		}
		if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
			t.Errorf("mode %v, want 0600", fi.Mode().Perm())
		}
	}
}

// TestSyslog sends events to a syslog server on loopback UDP and reads them
// back as RFC 3164 messages carrying the JSON line.
func TestSyslog(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	l, err := audit.New(audit.Options{Syslog: &audit.SyslogOptions{Network: "udp", Address: pc.LocalAddr().String(), Facility: "local3", Tag: "sgtest"}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Emit(audit.Event{Type: audit.LoginSuccess, Outcome: "ok", SessionID: "s-42"})
	buf := make([]byte, 4096)
	_ = pc.SetReadDeadline(time.Now().Add(30 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	// local3 (19) * 8 + notice (5) = 157.
	if !strings.HasPrefix(msg, "<157>") {
		t.Errorf("priority: %q", msg)
	}
	if !strings.Contains(msg, "sgtest[") {
		t.Errorf("tag missing: %q", msg)
	}
	i := strings.Index(msg, "{")
	if i < 0 {
		t.Fatalf("no JSON in %q", msg)
	}
	var e audit.Event
	if err := json.Unmarshal([]byte(strings.TrimSpace(msg[i:])), &e); err != nil {
		t.Fatalf("%q: %v", msg[i:], err)
	}
	if e.Type != audit.LoginSuccess || e.SessionID != "s-42" || e.V != audit.Version {
		t.Errorf("event %+v", e)
	}
}
