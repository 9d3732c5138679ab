package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"filippo.io/age"

	"github.com/snowgate/snowgate/internal/archive"
	"github.com/snowgate/snowgate/internal/audit"
	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/redirect"
)

// wireRecording adds the recording stage: the session recorder (every
// exchange durable before its reply is released), the audit trail, and
// the audit observer.
func (d *daemon) wireRecording(ctx context.Context) error {
	rc := d.cfg.Recording
	al, err := d.auditLog()
	if err != nil {
		return err
	}
	key, created, err := recording.LoadOrCreateSigningKey(rc.SigningKeyFile)
	if err != nil {
		return fmt.Errorf("recording.signing_key_file: %w", err)
	}
	if created {
		d.log.Info("created the recording signing key; auditors verify with its public half", "key", rc.SigningKeyFile, "public", rc.SigningKeyFile+recording.PublicKeySuffix)
	}
	up, err := newUploader(rc, key.Public().(ed25519.PublicKey), d.log)
	if err != nil {
		return err
	}
	var sealed func(string)
	if up != nil {
		sealed = up.Notify
	}
	rec, err := newRecorder(rc, key, al, d.log, sealed)
	if err != nil {
		return err
	}
	if up != nil {
		bg, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); up.Run(bg) }()
		// Registered before the recorder's closer, so it runs after it: a
		// last pass is not waited for (the next start uploads the rest).
		d.onClose(func() error { stop(); <-done; return nil })
	}
	d.gw.Recorder = rec
	// The credential swap audits logins itself (to the daemon's trail);
	// without one, the observer does.
	selfAudit := false
	if s, ok := d.gw.Credentials.(interface{ SetAudit(*audit.Logger) }); ok {
		s.SetAudit(al)
		selfAudit = true
	}
	d.gw.Observers = append(d.gw.Observers, rec, gateway.AuditObserver{Log: al, Logins: !selfAudit})
	// Closers run last-added first: the recorder seals (and audits
	// session.end) before the audit trail closes.
	d.onClose(rec.Close)
	return nil
}

// newRecorder builds the session recorder of the configuration.
func newRecorder(rc config.Recording, key ed25519.PrivateKey, al *audit.Logger, log *slog.Logger, sealed func(string)) (*gateway.SessionRecorder, error) {
	var rcpts []age.Recipient
	for i, s := range rc.EncryptTo {
		r, err := age.ParseX25519Recipient(s)
		if err != nil {
			return nil, fmt.Errorf("recording.encrypt_to[%d]: %w", i, err)
		}
		rcpts = append(rcpts, r)
	}
	opts := recording.Options{Recipients: rcpts, SigningKey: key, MaxBytes: rc.MaxSessionBytes}
	switch rc.Sync {
	case config.SyncAlways:
		opts.Sync = recording.SyncAlways
	case config.SyncNever:
		opts.Sync = recording.SyncNever
	}
	switch rc.Results {
	case config.ResultsNone:
		opts.Results = recording.ResultPolicy{Mode: recording.ResultsNone}
	case config.ResultsFirstRows:
		opts.Results = recording.ResultPolicy{Mode: recording.ResultsFirstRows, Rows: int64(rc.FirstRows)}
	}
	host, _ := os.Hostname()
	return gateway.NewSessionRecorder(gateway.SessionRecorderConfig{
		Dir:               rc.Dir,
		Writer:            opts,
		IdleSeal:          rc.IdleSeal.Duration,
		ContinueOnFailure: rc.OnFailure == config.OnFailureContinue,
		MaxChunkBytes:     rc.MaxChunkBytes,
		Gateway:           "snowgate " + version + " on " + host,
		Audit:             al,
		Sealed:            sealed,
		Logger:            log,
	})
}

// newUploader builds the S3 uploader of recording.upload (nil when not
// configured). The seal key's public half verifies what it uploads.
func newUploader(rc config.Recording, pub ed25519.PublicKey, log *slog.Logger) (*archive.Uploader, error) {
	u := rc.Upload
	if u == nil {
		return nil, nil
	}
	access, err := readSecretFile(u.AccessKeyFile)
	if err != nil {
		return nil, fmt.Errorf("recording.upload.access_key_file: %w", err)
	}
	secret, err := readSecretFile(u.SecretKeyFile)
	if err != nil {
		return nil, fmt.Errorf("recording.upload.secret_key_file: %w", err)
	}
	up, err := archive.New(archive.Config{
		Endpoint: u.Endpoint, Secure: !u.Insecure, Region: u.Region,
		AccessKey: access, SecretKey: secret, Bucket: u.Bucket, Prefix: u.Prefix,
		Dir: rc.Dir, PublicKey: pub,
		KeepLocal: u.KeepLocal.Duration, Retention: u.Retention.Duration, Interval: u.Interval.Duration,
		Logger: log,
	})
	if err != nil {
		return nil, fmt.Errorf("recording.upload: %w", err)
	}
	return up, nil
}

// readSecretFile reads a one-line secret (trailing white space dropped).
func readSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// audits holds each daemon's audit logger, opened by the first stage that
// asks (the identity stage audits logins, the policy stage approvals).
var audits = struct {
	sync.Mutex
	m map[*daemon]*audit.Logger
}{m: map[*daemon]*audit.Logger{}}

// auditLog returns the daemon's audit logger, opening the outputs of
// recording.audit on first use (closed at exit).
func (d *daemon) auditLog() (*audit.Logger, error) {
	audits.Lock()
	defer audits.Unlock()
	if l := audits.m[d]; l != nil {
		return l, nil
	}
	l, err := openAudit(d.cfg.Recording.Audit)
	if err != nil {
		return nil, err
	}
	audits.m[d] = l
	d.onClose(func() error {
		audits.Lock()
		delete(audits.m, d)
		audits.Unlock()
		return l.Close()
	})
	return l, nil
}

// openAudit opens the configured audit outputs (nil when none).
func openAudit(a config.Audit) (*audit.Logger, error) {
	opts := audit.Options{Stdout: a.Stdout}
	if a.File != "" && a.File != "-" {
		if err := os.MkdirAll(filepath.Dir(a.File), 0o700); err != nil {
			return nil, fmt.Errorf("recording.audit.file: %w", err)
		}
		opts.File = a.File
	}
	if s := a.Syslog; s != nil {
		opts.Syslog = &audit.SyslogOptions{Network: s.Network, Address: s.Address, Facility: s.Facility, Tag: s.Tag}
	}
	if opts.File == "" && !opts.Stdout && opts.Syslog == nil {
		return nil, nil
	}
	l, err := audit.New(opts)
	if err != nil {
		return nil, fmt.Errorf("recording.audit: %w", err)
	}
	return l, nil
}

// startBypassAudit audits the redirect's refusals (bypass.refused) until
// ctx ends: runDaemon calls it once d.redirect is set. Without audit
// outputs it does nothing.
func (d *daemon) startBypassAudit(ctx context.Context) {
	al, err := d.auditLog()
	if err != nil || al == nil || d.redirect == nil {
		return
	}
	bg, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := auditRedirectEvents(bg, d.redirect, al); err != nil {
			d.log.Warn("bypass refusals are not audited", "err", err)
		}
	}()
	d.onClose(func() error { stop(); <-done; return nil })
}

// auditRedirectEvents turns the redirect's refusal events into
// bypass.refused audit events until ctx ends. The daemon runs it once the
// redirect is installed (one reader per redirect).
func auditRedirectEvents(ctx context.Context, redir *redirect.Redirect, al *audit.Logger) error {
	events, err := redir.Events(ctx)
	if err != nil {
		return fmt.Errorf("redirect events: %w", err)
	}
	for ev := range events {
		al.Emit(bypassEvent(ev))
	}
	return nil
}

// bypassEvent is the audit event of one redirect refusal.
func bypassEvent(ev redirect.Event) audit.Event {
	detail := map[string]any{"hook": ev.Hook, "proto": int(ev.Proto), "counter": ev.Reason}
	if ev.Dst.IsValid() {
		detail["dst"] = net.JoinHostPort(ev.Dst.Addr().String(), strconv.Itoa(int(ev.Dst.Port())))
	}
	return audit.Event{
		Type: audit.BypassRefused, Outcome: "refused", Reason: ev.Reason,
		Workload: &audit.Workload{CgroupID: ev.CgroupID, PID: ev.PID, UID: ev.UID},
		Detail:   detail,
	}
}
