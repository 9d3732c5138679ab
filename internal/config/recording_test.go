package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

// withRecording is the minimal configuration with extra lines in its
// recording section (indented by two spaces already).
func withRecording(extra string) string { return minimal + extra }

func TestRecordingDefaults(t *testing.T) {
	c, err := Parse("min.yaml", []byte(minimal))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Recording
	tests := []struct {
		name string
		got  any
		want any
	}{
		{"sync", r.Sync, SyncBoundary},
		{"on_failure", r.OnFailure, OnFailureRefuse},
		{"results", r.Results, ResultsFull},
		{"idle_seal", r.IdleSeal.Duration, 15 * time.Minute},
		{"max_chunk_bytes", r.MaxChunkBytes, int64(256 << 20)},
		{"signing_key_file", r.SigningKeyFile, "/var/lib/snowgate/recordings/signing-key.pem"},
		{"audit.file", r.Audit.File, "/var/lib/snowgate/recordings/audit.jsonl"},
		{"upload", r.Upload == nil, true},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, tc.got, tc.want)
		}
	}
}

func TestRecordingValues(t *testing.T) {
	c, err := Parse("rec.yaml", []byte(withRecording(`  sync: always
  on_failure: continue
  results: first_rows
  first_rows: 7
  max_session_bytes: 1000000
  idle_seal: 2m
  signing_key_file: /etc/snowgate/rec.pem
  audit:
    file: "-"
    stdout: true
    syslog: {network: udp, address: "127.0.0.1:514", facility: local4}
  upload:
    endpoint: minio.internal:9000
    bucket: recs
    prefix: fleet/
    access_key_file: /etc/credstore/s3.id
    secret_key_file: /etc/credstore/s3.secret
    retention: 2160h
`)))
	if err != nil {
		t.Fatal(err)
	}
	r := c.Recording
	if r.Sync != SyncAlways || r.OnFailure != OnFailureContinue || r.FirstRows != 7 || r.MaxSessionBytes != 1000000 ||
		r.IdleSeal.Duration != 2*time.Minute || r.SigningKeyFile != "/etc/snowgate/rec.pem" {
		t.Fatalf("recording %+v", r)
	}
	if r.Audit.File != "-" || !r.Audit.Stdout || r.Audit.Syslog.Facility != "local4" {
		t.Fatalf("audit %+v", r.Audit)
	}
	u := r.Upload
	if u.Region != "us-east-1" || u.Interval.Duration != time.Minute || u.Retention.Duration != 90*24*time.Hour || u.KeepLocal.Duration != 0 {
		t.Fatalf("upload %+v", u)
	}
}

func TestRecordingProblems(t *testing.T) {
	upload := `  upload:
    endpoint: %s
    bucket: b
    access_key_file: /k
    secret_key_file: /s
`
	tests := []struct {
		name, extra, key, reason string
	}{
		{"sync", "  sync: sometimes\n", "recording.sync", "not one of"},
		{"on_failure", "  on_failure: ignore\n", "recording.on_failure", "not one of"},
		{"negative cap", "  max_session_bytes: -1\n", "recording.max_session_bytes", "negative"},
		{"tiny chunk cap", "  max_chunk_bytes: 1000\n", "recording.max_chunk_bytes", "below 1 MiB"},
		{"idle too short", "  idle_seal: 5s\n", "recording.idle_seal", "outside"},
		{"idle not a duration", "  idle_seal: soon\n", "recording.idle_seal", "not a duration"},
		{"relative key", "  signing_key_file: key.pem\n", "recording.signing_key_file", "not an absolute path"},
		{"relative audit file", "  audit: {file: audit.jsonl}\n", "recording.audit.file", "not an absolute path"},
		{"syslog half", "  audit: {syslog: {network: udp}}\n", "recording.audit.syslog", "go together"},
		{"syslog facility", "  audit: {syslog: {facility: kern}}\n", "recording.audit.syslog.facility", "not one of"},
		{"syslog address", "  audit: {syslog: {network: udp, address: nowhere}}\n", "recording.audit.syslog.address", "host:port"},
		{"upload scheme", strings.Replace(upload, "%s", "https://s3.example.com", 1), "recording.upload.endpoint", "without the scheme"},
		{"upload bucket", "  upload: {endpoint: s3.example.com, access_key_file: /k, secret_key_file: /s}\n", "recording.upload.bucket", "required"},
		{"upload key files", "  upload: {endpoint: s3.example.com, bucket: b}\n", "recording.upload.access_key_file", "required"},
		{"upload retention", strings.Replace(upload, "%s", "s3.example.com", 1) + "    retention: 10m\n", "recording.upload.retention", "shorter than an hour"},
		{"unknown key", "  upload_to: s3\n", "recording.upload_to", "unknown key"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("rec.yaml", []byte(withRecording(tc.extra)))
			var ce *Error
			if !errors.As(err, &ce) {
				t.Fatalf("err %v, want a config error", err)
			}
			for _, p := range ce.Problems {
				if p.Key == tc.key && strings.Contains(p.Reason, tc.reason) {
					if p.Line == 0 {
						t.Errorf("%s: no line", p.Key)
					}
					return
				}
			}
			t.Fatalf("problems %v, want %s: …%s…", ce.Problems, tc.key, tc.reason)
		})
	}
}
