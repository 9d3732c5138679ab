package recording

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// SyncPolicy says when appended records reach stable storage.
type SyncPolicy int

const (
	// SyncBoundary (the default) writes and fsyncs a segment when a record of
	// a boundary kind (Kind.Boundary) is appended, so nothing the agent saw is
	// lost; other records are buffered until then.
	SyncBoundary SyncPolicy = iota
	// SyncAlways writes and fsyncs a segment on every Append.
	SyncAlways
	// SyncNever writes segments at boundaries but leaves fsync to the kernel
	// (and to Seal): a gateway crash loses nothing written, a machine crash
	// may lose the tail.
	SyncNever
)

// ResultMode says how much of a result is recorded.
type ResultMode int

const (
	// ResultsFull records every row and raw result payload (the default).
	ResultsFull ResultMode = iota
	// ResultsFirstRows records the first ResultPolicy.Rows rows of each query.
	ResultsFirstRows
	// ResultsNone records result metadata only.
	ResultsNone
)

// ResultPolicy says how much of each result is recorded.
type ResultPolicy struct {
	Mode ResultMode
	// Rows is the per-query row budget of ResultsFirstRows.
	Rows int64
}

// Reasons a session is sealed.
const (
	SealSessionEnd = "session-end"
	SealShutdown   = "gateway-shutdown"
	SealIdle       = "idle"
	SealClosed     = "closed"
)

// Options configure a Writer.
type Options struct {
	// Recipients receive every segment; none means compressed only.
	Recipients []age.Recipient
	// SigningKey signs the seal. Required.
	SigningKey ed25519.PrivateKey
	// Sync is the durability policy (default SyncBoundary).
	Sync SyncPolicy
	// Results is the result policy (default ResultsFull).
	Results ResultPolicy
	// MaxBytes caps the result bytes (rows and raw data) recorded in the
	// session; 0 means no cap. What the cap leaves out is counted in each
	// record's Result and in the seal.
	MaxBytes int64
	// Redactor removes secrets from a record before it is encoded. Nil
	// means RedactRecord; the gateway may wrap it but should not replace it.
	Redactor func(*Record)
	// SegmentBytes flushes (without fsync) a segment once this many record
	// bytes are buffered, bounding memory between boundaries. Default 1 MiB.
	SegmentBytes int
}

// ErrSealed is returned by Append on a sealed recording.
var ErrSealed = errors.New("recording is sealed")

// Writer appends records to one recording. It is safe for concurrent use;
// records are ordered as their Append calls are.
type Writer struct {
	mu   sync.Mutex
	path string
	f    *os.File
	opts Options
	enc  *zstd.Encoder

	sessionID string
	start     time.Time // carries the monotonic clock
	off       int64     // end of the last complete frame on disk
	frameSeq  uint64
	frameHead [frameHashLen]byte
	recSeq    uint64 // next record sequence number
	recHead   [sha256.Size]byte
	pending   []byte // encoded entries not yet in a segment on disk
	lastMono  time.Duration
	unsynced  bool // a segment was written but not fsynced
	sealed    bool

	resultBytes  int64
	omittedBytes int64
	omittedRows  int64
	// queryRows are the rows recorded so far per query (ResultsFirstRows),
	// for the maxQueryRows most recent queries; queryOrder is their ring
	// (queryNext its oldest once full).
	queryRows  map[string]int64
	queryOrder []string
	queryNext  int
}

// maxQueryRows bounds the queries whose recorded rows a Writer remembers
// for ResultsFirstRows, so a long-lived session running a million
// statements does not hold a million entries (and 1,000 open sessions not
// a million between them). A query's rows arrive in its reply and in the
// chunks the driver fetches right after it, so only the most recent
// queries are still counting; 64 leaves a margin for clients that
// interleave statements. A chunk of an evicted query starts a fresh
// budget: it may record up to Rows more rows, never fewer.
const maxQueryRows = 64

// countRows adds n recorded rows to query key, remembering key among the
// maxQueryRows most recent queries.
func (w *Writer) countRows(key string, n int64) {
	if _, ok := w.queryRows[key]; !ok {
		if len(w.queryOrder) < maxQueryRows {
			w.queryOrder = append(w.queryOrder, key)
		} else {
			delete(w.queryRows, w.queryOrder[w.queryNext])
			w.queryOrder[w.queryNext] = key
			w.queryNext = (w.queryNext + 1) % maxQueryRows
		}
	}
	w.queryRows[key] += n
}

// idlePendingCap is the largest segment buffer that goes back to
// pendingPool after a segment is written; a larger one (a large result
// passed through) is left to the garbage collector.
const idlePendingCap = 256 << 10

// pendingPool holds segment buffers between segments. A session takes one
// when it appends its first record after a segment and gives it back once
// that segment is on disk, so an idle open session holds no buffer and
// 1,000 open sessions cost as many buffers as records being written at once,
// not 1,000.
var pendingPool = sync.Pool{New: func() any { return new([]byte) }}

// maxPending bounds the records kept in memory while the disk refuses them.
const maxPending = 64 << 20

var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,200}$`)

// fileHeader is the body of the header frame, stored in the clear.
type fileHeader struct {
	Version     int       `json:"version"`
	SessionID   string    `json:"session_id"`
	Created     time.Time `json:"created"`
	Compression string    `json:"compression"`
	Encryption  string    `json:"encryption"`
	Signer      string    `json:"signer"` // base64 Ed25519 public key
}

// sealInfo is the signed part of the seal frame.
type sealInfo struct {
	Version      int       `json:"version"`
	SessionID    string    `json:"session_id"`
	Reason       string    `json:"reason"`
	SealedAt     time.Time `json:"sealed_at"`
	Records      uint64    `json:"records"`
	RecordHead   string    `json:"record_head"`
	Frames       uint64    `json:"frames"`
	FrameHead    string    `json:"frame_head"`
	ResultBytes  int64     `json:"result_bytes"`
	OmittedBytes int64     `json:"omitted_bytes,omitempty"`
	OmittedRows  int64     `json:"omitted_rows,omitempty"`
	Signer       string    `json:"signer"`
}

// NewWriter creates <dir>/<meta.SessionID>.sgrec, writes the header and the
// session-start record holding meta, and makes them durable.
func NewWriter(dir string, meta Meta, opts Options) (*Writer, error) {
	if !sessionIDPattern.MatchString(meta.SessionID) || meta.SessionID == "." || meta.SessionID == ".." {
		return nil, fmt.Errorf("new recording: session id %q: want 1-200 of [A-Za-z0-9._-]", meta.SessionID)
	}
	if len(opts.SigningKey) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("new recording %s: an Ed25519 signing key is required", meta.SessionID)
	}
	if opts.SegmentBytes <= 0 {
		opts.SegmentBytes = 1 << 20
	}
	if opts.Redactor == nil {
		opts.Redactor = RedactRecord
	}
	enc, err := segmentEncoder()
	if err != nil {
		return nil, fmt.Errorf("new recording %s: zstd: %w", meta.SessionID, err)
	}
	path := filepath.Join(dir, meta.SessionID+FileExt)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("new recording: %w", err)
	}
	w := &Writer{path: path, f: f, opts: opts, enc: enc, sessionID: meta.SessionID, start: time.Now(), queryRows: map[string]int64{}}
	if meta.Started.IsZero() {
		meta.Started = w.start
	}
	fail := func(err error) (*Writer, error) {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("new recording %s: %w", path, err)
	}
	encName := "none"
	if len(opts.Recipients) > 0 {
		encName = "age"
	}
	hdr, err := json.Marshal(fileHeader{
		Version: 1, SessionID: meta.SessionID, Created: meta.Started.UTC(),
		Compression: "zstd", Encryption: encName,
		Signer: base64.StdEncoding.EncodeToString(opts.SigningKey.Public().(ed25519.PublicKey)),
	})
	if err != nil {
		return fail(err)
	}
	buf, head := appendFrame([]byte(Magic), [frameHashLen]byte{}, frameHeader, 0, hdr)
	if _, err := f.Write(buf); err != nil {
		return fail(err)
	}
	w.off, w.frameSeq, w.frameHead = int64(len(buf)), 1, head
	w.recHead = head // the record chain starts at the header frame
	if err := w.append(Record{Kind: KindSessionStart, Wall: meta.Started, Meta: &meta}); err != nil {
		return fail(err)
	}
	if err := w.flush(true); err != nil {
		return fail(err)
	}
	if err := syncDir(dir); err != nil {
		return fail(err)
	}
	return w, nil
}

// Idle is how long ago the last record was appended (monotonic clock). The
// gateway seals a recording with SealIdle once it has been idle too long.
func (w *Writer) Idle() time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return time.Since(w.start) - w.lastMono
}

// Sealed reports whether Seal has completed.
func (w *Writer) Sealed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sealed
}

// Path is the recording's file.
func (w *Writer) Path() string { return w.path }

// Append records rec. It returns once rec is durable as the sync policy
// says (ctx is checked on entry; the write itself is not interruptible). An
// error means the record (and any buffered before it) could not be stored:
// the gateway must refuse the query. The file is left as it was
// before the failed write, and the records stay pending, so the next
// successful Append or Seal stores them in order.
func (w *Writer) Append(ctx context.Context, rec Record) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record %s: %w", rec.Kind, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.add(rec); err != nil {
		return err
	}
	switch {
	case w.opts.Sync == SyncAlways:
		return w.flush(true)
	case rec.Kind.Boundary():
		return w.flush(w.opts.Sync == SyncBoundary)
	case len(w.pending) >= w.opts.SegmentBytes:
		return w.flush(false)
	}
	return nil
}

// add checks, trims, redacts and chains rec into the pending buffer;
// w.mu is held.
func (w *Writer) add(rec Record) error {
	if w.sealed {
		return fmt.Errorf("record %s in %s: %w", rec.Kind, w.sessionID, ErrSealed)
	}
	if rec.Kind == KindSessionStart {
		return fmt.Errorf("record %s in %s: written by NewWriter only", rec.Kind, w.sessionID)
	}
	if len(w.pending) >= maxPending {
		// Earlier flushes failed and the backlog is full: store it first or
		// refuse this record without chaining it.
		if err := w.flush(w.opts.Sync != SyncNever); err != nil {
			return fmt.Errorf("record %s refused, %d bytes still pending: %w", rec.Kind, len(w.pending), err)
		}
	}
	rec.Meta = nil
	w.applyResultPolicy(&rec)
	w.opts.Redactor(&rec)
	return w.append(rec)
}

// AppendSeal records recs and seals the recording with reason, durable with
// one fsync (Append then Seal would take two): the session's last exchange,
// its logout, is released only once durable, and 1,000 sessions logging out
// at once wait on 1,000 fsyncs, not 2,000. On an error the recording is not
// sealed and the records stay pending, as with Append.
func (w *Writer) AppendSeal(ctx context.Context, recs []Record, reason string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, rec := range recs {
		if err := w.add(rec); err != nil {
			return err
		}
	}
	return w.seal(reason)
}

// Flush writes buffered records and fsyncs them, whatever the policy.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.sealed {
		return nil
	}
	return w.flush(true)
}

// append chains and encodes rec into the pending buffer.
func (w *Writer) append(rec Record) error {
	rec.Seq = w.recSeq
	rec.Prev = hex.EncodeToString(w.recHead[:])
	if rec.Wall.IsZero() {
		rec.Wall = time.Now()
	}
	rec.Wall = rec.Wall.UTC()
	rec.Mono = time.Since(w.start)
	w.lastMono = rec.Mono
	b, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("record %d (%s) in %s: encode: %w", rec.Seq, rec.Kind, w.sessionID, err)
	}
	if len(b) > maxRecordLen {
		return fmt.Errorf("record %d (%s) in %s: %d bytes exceeds the %d limit", rec.Seq, rec.Kind, w.sessionID, len(b), maxRecordLen)
	}
	if w.pending == nil {
		w.pending = (*pendingPool.Get().(*[]byte))[:0]
	}
	w.pending = binary.BigEndian.AppendUint32(w.pending, uint32(len(b)))
	w.pending = append(w.pending, b...)
	w.recHead = sha256.Sum256(b)
	w.recSeq++
	return nil
}

// flush writes the pending records as one segment frame; with sync it also
// fsyncs. On failure the file is cut back to its last complete frame.
func (w *Writer) flush(sync bool) error {
	if len(w.pending) > 0 {
		body, err := sealSegment(w.enc, w.pending, w.opts.Recipients)
		if err != nil {
			return fmt.Errorf("recording %s: segment: %w", w.sessionID, err)
		}
		if len(body) > maxFrameBody {
			return fmt.Errorf("recording %s: segment of %d bytes exceeds the %d limit", w.sessionID, len(body), maxFrameBody)
		}
		buf, head := appendFrame(nil, w.frameHead, frameSegment, w.frameSeq, body)
		if err := w.writeFrame(buf, sync); err != nil {
			return err
		}
		w.frameHead = head
		w.frameSeq++
		// The segment is on disk: the buffer goes back to the pool (unless
		// a large result made it large), so an idle session holds none.
		if cap(w.pending) <= idlePendingCap {
			b := w.pending[:0]
			pendingPool.Put(&b)
		}
		w.pending = nil
		return nil
	}
	if sync && w.unsynced {
		if err := w.f.Sync(); err != nil {
			return fmt.Errorf("recording %s: fsync: %w", w.sessionID, err)
		}
		w.unsynced = false
	}
	return nil
}

// writeFrame writes a whole frame at the end of the file, or nothing.
func (w *Writer) writeFrame(buf []byte, sync bool) error {
	_, err := w.f.WriteAt(buf, w.off)
	if err == nil && sync {
		if err = w.f.Sync(); err == nil {
			w.unsynced = false
		}
	}
	if err != nil {
		// Cut back so no partial frame remains; the data is rewritten by
		// the next flush rather than trusted after a failed fsync.
		if terr := w.f.Truncate(w.off); terr != nil {
			return fmt.Errorf("recording %s: write: %w (and cutting back the partial frame: %v)", w.sessionID, err, terr)
		}
		return fmt.Errorf("recording %s: write: %w", w.sessionID, err)
	}
	if !sync {
		w.unsynced = true
	}
	w.off += int64(len(buf))
	return nil
}

// segmentEncoder is the one zstd encoder every writer shares: EncodeAll is
// safe for concurrent use, and an encoder per open session cost about
// 1.7 MB each.
var segmentEncoder = sync.OnceValues(func() (*zstd.Encoder, error) {
	return zstd.NewWriter(nil, zstd.WithEncoderConcurrency(runtime.GOMAXPROCS(0)), zstd.WithEncoderLevel(zstd.SpeedFastest))
})

// sealSegment compresses, then (with recipients) encrypts one segment.
func sealSegment(enc *zstd.Encoder, plain []byte, recipients []age.Recipient) ([]byte, error) {
	z := enc.EncodeAll(plain, make([]byte, 0, len(plain)/2+64))
	if len(recipients) == 0 {
		return z, nil
	}
	var out bytes.Buffer
	out.Grow(len(z) + 256*len(recipients))
	wc, err := age.Encrypt(&out, recipients...)
	if err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	if _, err := wc.Write(z); err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	if err := wc.Close(); err != nil {
		return nil, fmt.Errorf("age: %w", err)
	}
	return out.Bytes(), nil
}

// Seal stores any pending records, appends the signed seal and closes the
// file. Sealing twice is a no-op.
func (w *Writer) Seal(reason string) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.seal(reason)
}

// seal is Seal with w.mu held.
func (w *Writer) seal(reason string) error {
	if w.sealed {
		return nil
	}
	if err := w.flush(false); err != nil {
		return err
	}
	pub := w.opts.SigningKey.Public().(ed25519.PublicKey)
	info, err := json.Marshal(sealInfo{
		Version: 1, SessionID: w.sessionID, Reason: reason, SealedAt: time.Now().UTC(),
		Records: w.recSeq, RecordHead: hex.EncodeToString(w.recHead[:]),
		Frames: w.frameSeq, FrameHead: hex.EncodeToString(w.frameHead[:]),
		ResultBytes: w.resultBytes, OmittedBytes: w.omittedBytes, OmittedRows: w.omittedRows,
		Signer: base64.StdEncoding.EncodeToString(pub),
	})
	if err != nil {
		return fmt.Errorf("seal %s: %w", w.sessionID, err)
	}
	sig := ed25519.Sign(w.opts.SigningKey, append([]byte(sealSigPrefix), info...))
	buf, _ := appendFrame(nil, w.frameHead, frameSeal, w.frameSeq, append(info, sig...))
	if err := w.writeFrame(buf, true); err != nil {
		return fmt.Errorf("seal: %w", err)
	}
	w.sealed = true
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("seal %s: close: %w", w.sessionID, err)
	}
	return nil
}

// Close seals the recording with SealClosed unless it is already sealed.
func (w *Writer) Close() error { return w.Seal(SealClosed) }

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// applyResultPolicy trims rec.Result to the result policy and the session
// byte cap, counting what it leaves out.
func (w *Writer) applyResultPolicy(rec *Record) {
	r := rec.Result
	if r == nil || (len(r.Rows) == 0 && len(r.Data) == 0) {
		return
	}
	res := *r
	rec.Result = &res
	omit := func(rows [][]*string, data bool, reason string) {
		var n int64
		for _, row := range rows {
			n += rowSize(row)
		}
		if data {
			n += int64(len(res.Data))
			res.Data = nil
		}
		res.OmittedRows += int64(len(rows))
		res.OmittedBytes += n
		w.omittedRows += int64(len(rows))
		w.omittedBytes += n
		if res.OmittedReason == "" {
			res.OmittedReason = reason
		}
	}
	switch w.opts.Results.Mode {
	case ResultsNone:
		omit(res.Rows, true, "result policy: none")
		res.Rows = nil
		return
	case ResultsFirstRows:
		key := rec.QueryID
		budget := w.opts.Results.Rows - w.queryRows[key]
		if budget < 0 {
			budget = 0
		}
		if int64(len(res.Rows)) > budget {
			omit(res.Rows[budget:], false, fmt.Sprintf("result policy: first %d rows", w.opts.Results.Rows))
			res.Rows = res.Rows[:budget]
		}
		if len(res.Data) > 0 {
			omit(nil, true, fmt.Sprintf("result policy: first %d rows (raw data not split)", w.opts.Results.Rows))
		}
		if key != "" {
			w.countRows(key, int64(len(res.Rows)))
		}
	}
	if w.opts.MaxBytes > 0 {
		left := w.opts.MaxBytes - w.resultBytes
		keep := 0
		for _, row := range res.Rows {
			s := rowSize(row)
			if s > left {
				break
			}
			left -= s
			keep++
		}
		if keep < len(res.Rows) {
			omit(res.Rows[keep:], false, "session byte cap")
			res.Rows = res.Rows[:keep]
		}
		if int64(len(res.Data)) > left {
			omit(nil, true, "session byte cap")
		}
	}
	for _, row := range res.Rows {
		w.resultBytes += rowSize(row)
	}
	w.resultBytes += int64(len(res.Data))
}

// rowSize is the bytes a row counts against the cap: its cells plus a small
// per-cell cost, so rows of nulls are not free.
func rowSize(row []*string) int64 {
	n := int64(0)
	for _, c := range row {
		n += 4
		if c != nil {
			n += int64(len(*c))
		}
	}
	return n
}
