// Package audit writes snowgate's audit trail: one JSON object per line for
// each security-relevant event (a session started or ended, a login
// succeeded or failed, the statement policy decided, a reviewer approved or
// denied, the redirect refused a bypass), to a file, to stdout and to
// syslog, for a SIEM.
//
// The schema is stable (AUDIT.md in this directory): fields are only ever
// added, never renamed or retyped, and "v" says which version wrote a line.
//
// Use:
//
//	l, err := audit.New(audit.Options{File: "/var/log/snowgate/audit.jsonl"})
//	l.Emit(audit.Event{Type: audit.LoginFailure, Reason: "token expired"})
//	l.Close()
//
// A nil *Logger discards events, so callers need not check.
package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// Version is the schema version written in every event's "v".
const Version = 1

// Type names what happened. The values are part of the schema.
type Type string

// Event types.
const (
	// SessionStart: the gateway opened a session (and its recording).
	SessionStart Type = "session.start"
	// SessionEnd: a session ended (logout, idle, gateway shutdown); Reason
	// says which.
	SessionEnd Type = "session.end"
	// LoginSuccess and LoginFailure: a login through the gateway.
	LoginSuccess Type = "login.success"
	LoginFailure Type = "login.failure"
	// QueryDecision: the statement policy decided on a statement.
	QueryDecision Type = "query.decision"
	// ApprovalDecision: a reviewer (or the timeout) decided on a held
	// statement.
	ApprovalDecision Type = "approval.decision"
	// BypassRefused: the redirect refused a connection that tried to get
	// around the gateway (QUIC, raw sockets, DoT, …).
	BypassRefused Type = "bypass.refused"
	// RecordingFailed: the recorder could not store an exchange and the
	// reply was refused.
	RecordingFailed Type = "recording.failed"
)

// Workload is the process an event concerns, as the redirect recorded it.
type Workload struct {
	CgroupID uint64 `json:"cgroup_id,omitempty"`
	PID      uint32 `json:"pid,omitempty"`
	UID      uint32 `json:"uid"`
	Comm     string `json:"comm,omitempty"`
}

// Event is one audit event. Only Type is required; empty fields are left
// out of the line. No field may hold a secret: SQL is redacted by the
// caller (recording.RedactSQL) and tokens are never passed.
type Event struct {
	// V is the schema version (set by Emit).
	V int `json:"v"`
	// Time is when it happened (set by Emit when zero), UTC.
	Time time.Time `json:"time"`
	Type Type      `json:"type"`
	// Outcome is "ok", "refused", "denied", "allowed", "held", "error", …:
	// the short result, fit for alerting.
	Outcome string `json:"outcome,omitempty"`
	// Reason is a human-readable explanation.
	Reason string `json:"reason,omitempty"`

	// Who: the gateway session and the verified identity behind it.
	SessionID string `json:"session_id,omitempty"`
	Issuer    string `json:"issuer,omitempty"`
	Subject   string `json:"subject,omitempty"`
	// Claims are the verified, non-secret claims the rule matched.
	Claims map[string]any `json:"claims,omitempty"`
	Rule   string         `json:"rule,omitempty"`
	// Where: the Snowflake account, user, role and host.
	Account string `json:"account,omitempty"`
	User    string `json:"user,omitempty"`
	Role    string `json:"role,omitempty"`
	Host    string `json:"host,omitempty"`
	// Workload is the process; nil when unknown.
	Workload *Workload `json:"workload,omitempty"`

	// What: the statement and the decision.
	RequestID  string `json:"request_id,omitempty"`
	QueryID    string `json:"query_id,omitempty"`
	SQL        string `json:"sql,omitempty"`
	Class      string `json:"class,omitempty"`
	Decision   string `json:"decision,omitempty"`
	ApprovalID string `json:"approval_id,omitempty"`
	// Reviewer is who decided on an approval.
	Reviewer string `json:"reviewer,omitempty"`
	// Recording is the session recording's file name.
	Recording string `json:"recording,omitempty"`
	// Detail holds event-specific extras (redirect hook and protocol, …).
	Detail map[string]any `json:"detail,omitempty"`
}

// Options say where events go. At least one output is needed.
type Options struct {
	// File is appended to (created 0600).
	File string
	// Stdout writes events to standard output.
	Stdout bool
	// Syslog, when set, sends each event as one syslog message.
	Syslog *SyslogOptions
	// Writers are extra outputs (a test's buffer, a pipe).
	Writers []io.Writer
	// Logger reports output failures; default slog.Default().
	Logger *slog.Logger
}

// Logger emits events to its outputs. It is safe for concurrent use; events
// are written in the order Emit is called, each line whole.
type Logger struct {
	mu     sync.Mutex
	outs   []io.Writer
	closer []io.Closer
	log    *slog.Logger
	failed map[int]bool
}

// New opens the outputs of opts.
func New(opts Options) (*Logger, error) {
	l := &Logger{log: opts.Logger, failed: map[int]bool{}}
	if l.log == nil {
		l.log = slog.Default()
	}
	if opts.File != "" {
		f, err := os.OpenFile(opts.File, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("audit file: %w", err)
		}
		l.outs = append(l.outs, f)
		l.closer = append(l.closer, f)
	}
	if opts.Stdout {
		l.outs = append(l.outs, os.Stdout)
	}
	if opts.Syslog != nil {
		s, err := dialSyslog(*opts.Syslog)
		if err != nil {
			l.Close()
			return nil, err
		}
		l.outs = append(l.outs, s)
		l.closer = append(l.closer, s)
	}
	l.outs = append(l.outs, opts.Writers...)
	if len(l.outs) == 0 {
		return nil, errors.New("audit: no output (file, stdout, syslog)")
	}
	return l, nil
}

// Emit writes e to every output. A failing output is reported in the log
// (once until it works again) and does not stop the others.
func (l *Logger) Emit(e Event) {
	if l == nil {
		return
	}
	e.V = Version
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	line, err := json.Marshal(e)
	if err != nil {
		l.log.Error("audit event not encodable", "type", e.Type, "err", err)
		return
	}
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, w := range l.outs {
		if _, err := w.Write(line); err != nil {
			if !l.failed[i] {
				l.log.Error("audit output failed", "output", i, "err", err)
			}
			l.failed[i] = true
			continue
		}
		delete(l.failed, i)
	}
}

// Close closes the file and syslog outputs.
func (l *Logger) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for _, c := range l.closer {
		errs = append(errs, c.Close())
	}
	l.closer = nil
	return errors.Join(errs...)
}
