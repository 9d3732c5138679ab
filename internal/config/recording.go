package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"filippo.io/age"
)

// Recording configures the session recordings, their upload and the audit
// trail.
type Recording struct {
	// Dir holds local recordings. Required.
	Dir string `yaml:"dir"`
	// EncryptTo lists age recipients (age1…) the recordings are encrypted to.
	EncryptTo []string `yaml:"encrypt_to"`
	// SigningKeyFile is the Ed25519 private key (PKCS#8 PEM) that seals
	// recordings; created (0600) at first start when missing. Default
	// <dir>/signing-key.pem. Auditors verify with its public key
	// (`snowgate sessions verify`).
	SigningKeyFile string `yaml:"signing_key_file"`
	// Sync is when records reach stable storage: boundary (default: before
	// every response is released), always (every record) or never (left
	// to the kernel; a machine crash may lose the tail).
	Sync string `yaml:"sync"`
	// OnFailure is what happens when a record cannot be stored: refuse
	// (default: the reply is withheld and the agent gets an error) or
	// continue (the reply is released unrecorded, and the failure is
	// audited).
	OnFailure string `yaml:"on_failure"`
	// Results is how much of each result is recorded: full (default), none
	// or first_rows.
	Results string `yaml:"results"`
	// FirstRows is the row count kept with results: first_rows; default 100.
	FirstRows int `yaml:"first_rows"`
	// MaxSessionBytes caps the result bytes recorded per session; what is
	// left out is counted in the recording. 0 (default): no cap.
	MaxSessionBytes int64 `yaml:"max_session_bytes"`
	// IdleSeal seals a session's recording after this long without a
	// request; a later request of the session opens a continuation.
	// Default 15m, 1m – 24h.
	IdleSeal Duration `yaml:"idle_seal"`
	// MaxChunkBytes caps a result chunk held in memory while it is
	// recorded (a chunk is released only once recorded); a larger chunk is
	// refused. Default 256 MiB.
	MaxChunkBytes int64 `yaml:"max_chunk_bytes"`
	// ExchangeLog is the JSON-lines file of redacted exchanges the gateway
	// writes; default <dir>/exchanges.jsonl.
	ExchangeLog string `yaml:"exchange_log"`
	// Upload sends sealed recordings to S3-compatible storage.
	Upload *Upload `yaml:"upload"`
	// Audit is where audit events go.
	Audit Audit `yaml:"audit"`
}

// Upload is the S3-compatible object storage sealed recordings go to.
type Upload struct {
	// Endpoint is host[:port] of the S3 API (s3.amazonaws.com, a MinIO).
	Endpoint string `yaml:"endpoint"`
	// Bucket and Prefix say where objects go: <prefix><session>.sgrec.
	Bucket string `yaml:"bucket"`
	Prefix string `yaml:"prefix"`
	// Region; default us-east-1.
	Region string `yaml:"region"`
	// Insecure uses plain HTTP (a test or in-cluster MinIO only).
	Insecure bool `yaml:"insecure"`
	// AccessKeyFile and SecretKeyFile hold the credentials (never the
	// secret itself in this file).
	AccessKeyFile string `yaml:"access_key_file"`
	SecretKeyFile string `yaml:"secret_key_file"`
	// Interval between upload passes; default 1m.
	Interval Duration `yaml:"interval"`
	// KeepLocal is how long an uploaded recording stays in dir; default 0
	// (removed once uploaded and checked).
	KeepLocal Duration `yaml:"keep_local"`
	// Retention deletes uploaded objects older than this; 0 (default)
	// keeps them (the bucket's own lifecycle rules may apply).
	Retention Duration `yaml:"retention"`
}

// Audit says where audit events go (internal/audit).
type Audit struct {
	// File is a JSON-lines file; default <dir>/audit.jsonl. "-" disables
	// the file.
	File string `yaml:"file"`
	// Stdout also writes every event to standard output.
	Stdout bool `yaml:"stdout"`
	// Syslog sends events to syslog.
	Syslog *Syslog `yaml:"syslog"`
}

// Syslog is a syslog destination.
type Syslog struct {
	// Network and Address: "udp"/"tcp" and host:port; both empty means the
	// local syslog daemon.
	Network string `yaml:"network"`
	Address string `yaml:"address"`
	// Facility: auth, authpriv (default), daemon, user, local0 … local7.
	Facility string `yaml:"facility"`
	// Tag; default snowgate.
	Tag string `yaml:"tag"`
}

// Values of Recording.Results.
const (
	ResultsFull      = "full"
	ResultsNone      = "none"
	ResultsFirstRows = "first_rows"
)

// Values of Recording.Sync.
const (
	SyncBoundary = "boundary"
	SyncAlways   = "always"
	SyncNever    = "never"
)

// Values of Recording.OnFailure.
const (
	OnFailureRefuse   = "refuse"
	OnFailureContinue = "continue"
)

func (v *validator) recording(r *Recording) {
	v.requiredPath("recording.dir", r.Dir)
	for i, rcpt := range r.EncryptTo {
		if _, err := age.ParseX25519Recipient(rcpt); err != nil {
			v.bad(fmt.Sprintf("recording.encrypt_to[%d]", i), "not an age recipient (age1…)")
		}
	}
	if r.Results == "" {
		r.Results = ResultsFull
	}
	v.enum("recording.results", r.Results, ResultsFull, ResultsNone, ResultsFirstRows)
	switch {
	case r.FirstRows < 0:
		v.bad("recording.first_rows", "must not be negative")
	case r.FirstRows > 0 && r.Results != ResultsFirstRows:
		v.bad("recording.first_rows", "only used with results: first_rows")
	case r.FirstRows == 0 && r.Results == ResultsFirstRows:
		r.FirstRows = 100
	}
	if r.Sync == "" {
		r.Sync = SyncBoundary
	}
	v.enum("recording.sync", r.Sync, SyncBoundary, SyncAlways, SyncNever)
	if r.OnFailure == "" {
		r.OnFailure = OnFailureRefuse
	}
	v.enum("recording.on_failure", r.OnFailure, OnFailureRefuse, OnFailureContinue)
	if r.MaxSessionBytes < 0 {
		v.bad("recording.max_session_bytes", "must not be negative")
	}
	switch {
	case r.MaxChunkBytes == 0:
		r.MaxChunkBytes = 256 << 20
	case r.MaxChunkBytes < 1<<20:
		v.bad("recording.max_chunk_bytes", "%d is below 1 MiB (1048576)", r.MaxChunkBytes)
	}
	v.duration("recording.idle_seal", &r.IdleSeal, 15*time.Minute, time.Minute, 24*time.Hour)
	r.ExchangeLog = v.defaultPath("recording.exchange_log", r.ExchangeLog, r.Dir, "exchanges.jsonl")
	r.SigningKeyFile = v.defaultPath("recording.signing_key_file", r.SigningKeyFile, r.Dir, "signing-key.pem")
	if r.Audit.File != "-" {
		r.Audit.File = v.defaultPath("recording.audit.file", r.Audit.File, r.Dir, "audit.jsonl")
	}
	if s := r.Audit.Syslog; s != nil {
		switch {
		case s.Network == "" && s.Address != "", s.Network != "" && s.Address == "":
			v.bad("recording.audit.syslog", "network and address go together (both empty: the local syslog)")
		case s.Network != "":
			v.enum("recording.audit.syslog.network", s.Network, "udp", "tcp", "unix", "unixgram")
			if s.Network == "udp" || s.Network == "tcp" {
				v.hostPort("recording.audit.syslog.address", s.Address)
			}
		}
		fac := strings.ToLower(s.Facility)
		if fac != "" {
			v.enum("recording.audit.syslog.facility", fac, "auth", "authpriv", "daemon", "user",
				"local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")
		}
	}
	if u := r.Upload; u != nil {
		v.upload(u)
	}
}

func (v *validator) upload(u *Upload) {
	if u.Endpoint == "" {
		v.bad("recording.upload.endpoint", "required: host[:port] of the S3 API")
	} else if strings.Contains(u.Endpoint, "/") {
		if p, err := url.Parse(u.Endpoint); err != nil || p.Host == "" || p.Path != "" {
			v.bad("recording.upload.endpoint", "%q: want host[:port], without a scheme or path", u.Endpoint)
		} else {
			v.bad("recording.upload.endpoint", "%q: want host[:port] (%s), without the scheme; set insecure for plain HTTP", u.Endpoint, p.Host)
		}
	}
	if u.Bucket == "" {
		v.bad("recording.upload.bucket", "required")
	}
	if strings.HasPrefix(u.Prefix, "/") {
		v.bad("recording.upload.prefix", "must not start with /")
	}
	if u.Region == "" {
		u.Region = "us-east-1"
	}
	v.requiredPath("recording.upload.access_key_file", u.AccessKeyFile)
	v.requiredPath("recording.upload.secret_key_file", u.SecretKeyFile)
	v.duration("recording.upload.interval", &u.Interval, time.Minute, time.Second, 24*time.Hour)
	v.duration("recording.upload.keep_local", &u.KeepLocal, 0, 0, 10*365*24*time.Hour)
	v.duration("recording.upload.retention", &u.Retention, 0, 0, 100*365*24*time.Hour)
	if u.Retention.Duration > 0 && u.Retention.Duration < time.Hour {
		v.bad("recording.upload.retention", "%s is shorter than an hour", u.Retention.Duration)
	}
}

// defaultPath returns p, or <dir>/<name> when p is empty; a set p must be
// absolute.
func (v *validator) defaultPath(key, p, dir, name string) string {
	switch {
	case p == "" && dir != "":
		return filepath.Join(dir, name)
	case p != "" && !filepath.IsAbs(p):
		v.bad(key, "%q is not an absolute path", p)
	}
	return p
}
