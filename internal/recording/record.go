// Package recording is snowgate's tamper-evident session recording: one file
// per Snowflake session holding every request and response that crossed the
// gateway, in order.
//
// A recording is append-only and framed. Records are grouped into segments;
// each segment is compressed (zstd) and, when recipients are configured,
// encrypted to them as its own age stream, so every fsync leaves a file whose
// complete frames decrypt and verify. Two hash chains protect it: one over the
// plaintext records (proves content once decrypted) and one over the stored
// frames (proves order and completeness without any key). Closing a session
// appends a seal: an Ed25519 signature over both chain heads and the session
// metadata. FORMAT.md in this directory is the byte-level specification.
//
// The writer side:
//
//	w, err := recording.NewWriter(dir, meta, recording.Options{
//		Recipients: recipients, SigningKey: key,
//	})
//	err = w.Append(ctx, recording.Record{Kind: recording.KindQueryRequest, SQL: "select 1"})
//	err = w.Seal(recording.SealSessionEnd)
//
// and the reading side:
//
//	r, err := recording.Open(path, identity) // r.Meta(), r.Next()
//	rep, err := recording.Verify(path, pub, identity) // rep.OK(), rep.Problems
//
// Append returns an error when the record cannot be stored (disk full,
// permission): the gateway must then refuse the query. A recording whose
// writer was killed reads and verifies up to its last complete frame and
// reports ProblemMissingSeal; Recover seals it with SealRecovered.
package recording

import (
	"encoding/json"
	"time"
)

// Kind names what a record describes.
type Kind string

// Record kinds. A record of a boundary kind (see Kind.Boundary) describes
// something the gateway is about to release to the agent; under the default
// sync policy it is durable before Append returns.
const (
	KindSessionStart  Kind = "session-start" // written by NewWriter: the Meta
	KindLoginRequest  Kind = "login-request"
	KindLoginResponse Kind = "login-response"
	KindQueryRequest  Kind = "query-request"
	KindQueryResponse Kind = "query-response"
	KindChunk         Kind = "chunk"   // a result chunk fetched through the gateway
	KindRenew         Kind = "renew"   // a session token renewal
	KindRequest       Kind = "request" // any other request (heartbeat, abort, logout, …)
	KindResponse      Kind = "response"
	KindError         Kind = "error"  // an error released to the agent
	KindPolicy        Kind = "policy" // a policy or approval decision on its own
	KindNote          Kind = "note"   // gateway-side events (recorder recovered, idle, …)
)

// Boundary reports whether records of this kind precede a response released
// to the agent, which is where the default sync policy makes them durable.
func (k Kind) Boundary() bool {
	switch k {
	case KindLoginResponse, KindQueryResponse, KindChunk, KindRenew, KindResponse, KindError, KindSessionStart:
		return true
	}
	return false
}

// Meta is the context of one session, recorded as its first record.
type Meta struct {
	// SessionID names the recording; the file is <dir>/<SessionID>.sgrec.
	// Letters, digits, '.', '_' and '-' only.
	SessionID string    `json:"session_id"`
	Started   time.Time `json:"started"`
	Identity  Identity  `json:"identity"`
	// Rule is the identity rule that granted the session.
	Rule      string    `json:"rule,omitempty"`
	Snowflake Snowflake `json:"snowflake"`
	Workload  Workload  `json:"workload"`
	Client    Client    `json:"client"`
	// Source is the agent's address as the gateway saw it.
	Source string `json:"source,omitempty"`
	// Gateway is the gateway's version and host name.
	Gateway string `json:"gateway,omitempty"`
}

// Identity is the verified workload identity and the claims the rule matched.
type Identity struct {
	Issuer  string            `json:"issuer,omitempty"`
	Subject string            `json:"subject,omitempty"`
	Claims  map[string]string `json:"claims,omitempty"`
}

// Snowflake is where the session runs upstream.
type Snowflake struct {
	Account   string `json:"account,omitempty"`
	User      string `json:"user,omitempty"`
	Role      string `json:"role,omitempty"`
	Warehouse string `json:"warehouse,omitempty"`
	Database  string `json:"database,omitempty"`
}

// Workload is the process that opened the connection.
type Workload struct {
	Cgroup   string `json:"cgroup,omitempty"`
	CgroupID uint64 `json:"cgroup_id,omitempty"`
	PID      int    `json:"pid,omitempty"`
	UID      int    `json:"uid,omitempty"`
	Process  string `json:"process,omitempty"`
}

// Client is the driver the agent used, as it announced itself.
type Client struct {
	Driver      string `json:"driver,omitempty"`
	Version     string `json:"version,omitempty"`
	Application string `json:"application,omitempty"`
}

// Record is one event of a session. The writer fills Seq, Prev, Wall (when
// zero) and Mono; the gateway fills the rest that applies.
type Record struct {
	Seq  uint64 `json:"seq"`
	Prev string `json:"prev"` // hex SHA-256 of the previous record's stored bytes
	Kind Kind   `json:"kind"`
	// Wall is the wall-clock time of the event; Mono the monotonic time since
	// the writer was created, immune to clock steps.
	Wall time.Time     `json:"wall"`
	Mono time.Duration `json:"mono_ns"`
	// Duration is the time the request took upstream, when known.
	Duration time.Duration `json:"duration_ns,omitempty"`

	Method    string            `json:"method,omitempty"`
	Path      string            `json:"path,omitempty"` // URL path and query, redacted
	Status    int               `json:"status,omitempty"`
	RequestID string            `json:"request_id,omitempty"`
	QueryID   string            `json:"query_id,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
	SQL       string            `json:"sql,omitempty"`
	Bindings  json.RawMessage   `json:"bindings,omitempty"`
	// Body is the request or response body (JSON), redacted.
	Body json.RawMessage `json:"body,omitempty"`

	// ChunkIndex is a chunk record's position in its result (0-based).
	ChunkIndex *int `json:"chunk_index,omitempty"`

	Statement *Statement `json:"statement,omitempty"`
	Result    *Result    `json:"result,omitempty"`
	Error     *Error     `json:"error,omitempty"`
	// Meta is set on the session-start record only.
	Meta *Meta `json:"meta,omitempty"`
	// Note is free text for KindNote and annotations.
	Note string `json:"note,omitempty"`
}

// Statement is the classification of a statement and the policy decision.
type Statement struct {
	Class      string `json:"class,omitempty"`    // read, dml, ddl, file_transfer, …
	Decision   string `json:"decision,omitempty"` // allow, deny, approve, …
	Rule       string `json:"rule,omitempty"`
	Reason     string `json:"reason,omitempty"`
	ApprovalID string `json:"approval_id,omitempty"`
}

// Column is a result column.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type,omitempty"`
}

// Result is result metadata and (per ResultPolicy) rows.
type Result struct {
	Format    string   `json:"format,omitempty"` // json, arrow
	Columns   []Column `json:"columns,omitempty"`
	TotalRows int64    `json:"total_rows,omitempty"`
	Chunks    int      `json:"chunks,omitempty"`
	// Rows are JSON-format rows (cells are strings or null).
	Rows [][]*string `json:"rows,omitempty"`
	// Data is a raw result payload (an Arrow chunk, for instance).
	Data []byte `json:"data,omitempty"`
	// OmittedRows and OmittedBytes say what the result policy or the session
	// byte cap left out of this record, and OmittedReason why.
	OmittedRows   int64  `json:"omitted_rows,omitempty"`
	OmittedBytes  int64  `json:"omitted_bytes,omitempty"`
	OmittedReason string `json:"omitted_reason,omitempty"`
}

// Error is an error released to the agent (or met by the gateway).
type Error struct {
	Code     string `json:"code,omitempty"`
	SQLState string `json:"sql_state,omitempty"`
	Message  string `json:"message,omitempty"`
}
