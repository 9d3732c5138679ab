package recording

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"filippo.io/age"
	"github.com/klauspost/compress/zstd"
)

// ProblemKind names what is wrong with a recording.
type ProblemKind string

// Problem kinds reported by Verify.
const (
	ProblemBadMagic        ProblemKind = "bad-magic"        // not a recording, or an unknown version
	ProblemBadHeader       ProblemKind = "bad-header"       // header frame missing or unreadable
	ProblemModified        ProblemKind = "modified"         // a frame's bytes do not match its chained hash
	ProblemMissingFrames   ProblemKind = "missing-frames"   // frame sequence numbers skip
	ProblemReordered       ProblemKind = "reordered"        // frames or records out of order
	ProblemDecrypt         ProblemKind = "decrypt-failed"   // a segment does not decrypt with the identities
	ProblemCorruptSegment  ProblemKind = "corrupt-segment"  // a segment does not decompress or parse
	ProblemMissingRecords  ProblemKind = "missing-records"  // record sequence numbers skip
	ProblemChainBreak      ProblemKind = "chain-break"      // a record does not chain to its predecessor
	ProblemTruncated       ProblemKind = "truncated"        // the file ends inside a frame
	ProblemMissingSeal     ProblemKind = "missing-seal"     // the recording was never sealed (crash, or cut)
	ProblemBadSeal         ProblemKind = "bad-seal"         // the seal frame does not parse
	ProblemBadSignature    ProblemKind = "bad-signature"    // the seal signature is not valid
	ProblemUntrustedSigner ProblemKind = "untrusted-signer" // validly signed, by another key
	ProblemSealMismatch    ProblemKind = "seal-mismatch"    // the seal does not describe this content
	ProblemTrailingData    ProblemKind = "trailing-data"    // frames after the seal
	ProblemUnknownFrame    ProblemKind = "unknown-frame"
)

// Problem is one thing wrong with a recording. Frame and Record are -1 when
// they do not apply.
type Problem struct {
	Kind   ProblemKind
	Frame  int64
	Record int64
	Offset int64
	Detail string
}

func (p Problem) Error() string {
	var b strings.Builder
	b.WriteString(string(p.Kind))
	if p.Frame >= 0 {
		fmt.Fprintf(&b, " at frame %d (offset %d)", p.Frame, p.Offset)
	}
	if p.Record >= 0 {
		fmt.Fprintf(&b, " record %d", p.Record)
	}
	b.WriteString(": ")
	b.WriteString(p.Detail)
	return b.String()
}

// SealSummary is what a valid seal states.
type SealSummary struct {
	Reason       string
	SealedAt     time.Time
	Records      uint64
	ResultBytes  int64
	OmittedBytes int64
	OmittedRows  int64
}

// Report is the outcome of Verify.
type Report struct {
	Path      string
	SessionID string
	Encrypted bool
	// RecordsChecked is false when the segments are encrypted and no
	// identity opened them: then only the frame chain and seal are checked.
	RecordsChecked bool
	Frames         int64
	Records        uint64 // records read (when RecordsChecked)
	Sealed         bool   // a seal frame was found and verified
	Seal           *SealSummary
	Problems       []Problem
}

// OK reports a sealed recording with no problem.
func (r Report) OK() bool { return len(r.Problems) == 0 && r.Sealed }

// Has reports whether a problem of kind k was found.
func (r Report) Has(k ProblemKind) bool {
	for _, p := range r.Problems {
		if p.Kind == k {
			return true
		}
	}
	return false
}

// Intact reports that every complete frame verifies: the only problems are
// the ones a crash leaves (no seal, a torn last frame).
func (r Report) Intact() bool {
	for _, p := range r.Problems {
		if p.Kind != ProblemMissingSeal && p.Kind != ProblemTruncated {
			return false
		}
	}
	return true
}

// Verify checks a recording: the frame chain, the record chain (when
// identities open the segments, or they are not encrypted), and the seal,
// whose signature must be by pub. Every problem found is listed; the error
// is only for a file that cannot be read at all.
func Verify(path string, pub ed25519.PublicKey, identities ...age.Identity) (Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return Report{Path: path}, fmt.Errorf("verify: %w", err)
	}
	defer f.Close()
	rep := VerifyReader(f, pub, identities...)
	rep.Path = path
	return rep, nil
}

// VerifyReader is Verify over a stream.
func VerifyReader(r io.Reader, pub ed25519.PublicKey, identities ...age.Identity) Report {
	d := newDecoder(r, pub, identities, true)
	for d.step() {
		d.queue = d.queue[:0]
	}
	return d.report()
}

// decoder walks a recording frame by frame, checking as it goes.
type decoder struct {
	sc         *frameScanner
	pub        ed25519.PublicKey
	identities []age.Identity
	zdec       *zstd.Decoder

	rep       Report
	header    *fileHeader
	index     int64 // frames read
	nextFrame uint64
	prevFrame [frameHashLen]byte
	nextRec   uint64
	recHead   [sha256.Size]byte
	seenSeal  bool
	queue     []Record
	done      bool
	seenFrame map[uint64]bool
	seenRec   map[uint64]bool
	// altPrev is the recomputed hash of the previous frame when its stored
	// hash did not match; altProblem the index of that problem.
	altPrev    *[frameHashLen]byte
	altProblem int
	// checkSig is false for Reader, which has no trusted key.
	checkSig bool
}

func newDecoder(r io.Reader, pub ed25519.PublicKey, ids []age.Identity, checkSig bool) *decoder {
	d := &decoder{pub: pub, identities: ids, checkSig: checkSig, seenFrame: map[uint64]bool{}, seenRec: map[uint64]bool{}}
	d.rep.RecordsChecked = true
	sc, err := newFrameScanner(r)
	if err != nil {
		d.problem(ProblemBadMagic, -1, -1, 0, "%v", err)
		d.done = true
		return d
	}
	d.sc = sc
	// Segments are bounded by maxFrameBody; so is what they decompress to.
	d.zdec, _ = zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(maxFrameBody))
	return d
}

func (d *decoder) problem(k ProblemKind, frame, rec, off int64, format string, args ...any) {
	d.rep.Problems = append(d.rep.Problems, Problem{Kind: k, Frame: frame, Record: rec, Offset: off, Detail: fmt.Sprintf(format, args...)})
}

// step reads and checks one frame; false at the end of the file.
func (d *decoder) step() bool {
	if d.done {
		return false
	}
	f, err := d.sc.next()
	if err != nil {
		d.done = true
		switch {
		case err == io.EOF:
		case errors.Is(err, errTorn):
			d.problem(ProblemTruncated, d.index, -1, f.offset, "%v (%d complete frames before it)", err, d.index)
		default:
			d.problem(ProblemTruncated, d.index, -1, f.offset, "%v", err)
		}
		if !d.seenSeal {
			d.problem(ProblemMissingSeal, -1, -1, f.offset, "the recording is not sealed: it ends after %d frames and %d records (crash or truncation)", d.index, d.nextRec)
		}
		if d.zdec != nil {
			d.zdec.Close()
		}
		return false
	}
	i := d.index
	d.index++
	d.rep.Frames = d.index
	d.seenFrame[f.seq] = true
	want := frameHash(d.prevFrame, f.kind, f.seq, f.body)
	switch {
	case f.seq != d.nextFrame:
		if f.seq < d.nextFrame {
			d.problem(ProblemReordered, i, -1, f.offset, "frame has sequence number %d, expected %d", f.seq, d.nextFrame)
		} else {
			d.problem(ProblemMissingFrames, i, -1, f.offset, "frames %d..%d are missing (found %d)", d.nextFrame, f.seq-1, f.seq)
		}
	case want != f.hash:
		if d.altPrev != nil && frameHash(*d.altPrev, f.kind, f.seq, f.body) == f.hash {
			// The previous frame's stored hash was altered, not its content:
			// this frame chains to its true hash.
			d.rep.Problems[d.altProblem].Detail = "the stored hash of the frame was altered"
			d.prevFrame = *d.altPrev
			break
		}
		d.problem(ProblemModified, i, -1, f.offset, "frame content does not match its chained hash")
		d.altPrev, d.altProblem = &want, len(d.rep.Problems)-1
		d.prevFrame = f.hash
		d.nextFrame = f.seq + 1
		return d.frameBody(i, f, d.prevFrame)
	}
	d.altPrev = nil
	// Resynchronise on what is stored, so one damaged frame is one problem.
	sealHead := d.prevFrame
	d.prevFrame = f.hash
	d.nextFrame = f.seq + 1
	return d.frameBody(i, f, sealHead)
}

// frameBody interprets one frame; sealHead is the frame chain head before it.
func (d *decoder) frameBody(i int64, f frame, sealHead [frameHashLen]byte) bool {
	if d.seenSeal {
		d.problem(ProblemTrailingData, i, -1, f.offset, "frame of kind %q after the seal", f.kind)
	}
	switch {
	case i == 0 && f.kind != frameHeader:
		d.problem(ProblemBadHeader, i, -1, f.offset, "first frame has kind %q, not a header", f.kind)
		d.segment(i, f) // try it anyway
	case f.kind == frameHeader:
		if i != 0 {
			d.problem(ProblemUnknownFrame, i, -1, f.offset, "a second header frame")
			return true
		}
		d.recHead = f.hash
		var h fileHeader
		if err := json.Unmarshal(f.body, &h); err != nil {
			d.problem(ProblemBadHeader, i, -1, f.offset, "header does not parse: %v", err)
			return true
		}
		if h.Version != 1 {
			d.problem(ProblemBadHeader, i, -1, f.offset, "header version %d, want 1", h.Version)
			return true
		}
		d.header = &h
		d.rep.SessionID = h.SessionID
		d.rep.Encrypted = h.Encryption == "age"
		if d.rep.Encrypted && len(d.identities) == 0 {
			d.rep.RecordsChecked = false
		}
	case f.kind == frameSegment:
		d.segment(i, f)
	case f.kind == frameSeal:
		d.seal(i, f, sealHead)
	default:
		d.problem(ProblemUnknownFrame, i, -1, f.offset, "unknown frame kind %q", f.kind)
	}
	return true
}

// segment opens one segment and checks its records.
func (d *decoder) segment(i int64, f frame) {
	body := f.body
	encrypted := d.rep.Encrypted || (d.header == nil && bytes.HasPrefix(body, []byte("age-encryption.org/")))
	if encrypted {
		if len(d.identities) == 0 {
			d.rep.RecordsChecked = false
			return
		}
		r, err := age.Decrypt(bytes.NewReader(body), d.identities...)
		if err == nil {
			body, err = io.ReadAll(io.LimitReader(r, maxFrameBody+1))
		}
		if err != nil {
			d.problem(ProblemDecrypt, i, -1, f.offset, "%v", err)
			return
		}
	}
	plain, err := d.zdec.DecodeAll(body, nil)
	if err != nil {
		d.problem(ProblemCorruptSegment, i, -1, f.offset, "zstd: %v", err)
		return
	}
	for len(plain) > 0 {
		if len(plain) < 4 {
			d.problem(ProblemCorruptSegment, i, int64(d.nextRec), f.offset, "%d stray bytes at the end of the segment", len(plain))
			return
		}
		n := binary.BigEndian.Uint32(plain)
		if uint64(n) > uint64(len(plain)-4) {
			d.problem(ProblemCorruptSegment, i, int64(d.nextRec), f.offset, "record length %d exceeds the %d bytes left", n, len(plain)-4)
			return
		}
		b := plain[4 : 4+n]
		plain = plain[4+n:]
		var rec Record
		if err := json.Unmarshal(b, &rec); err != nil {
			d.problem(ProblemCorruptSegment, i, int64(d.nextRec), f.offset, "record does not parse: %v", err)
			return
		}
		d.seenRec[rec.Seq] = true
		switch {
		case rec.Seq < d.nextRec:
			d.problem(ProblemReordered, i, int64(rec.Seq), f.offset, "record has sequence number %d, expected %d", rec.Seq, d.nextRec)
		case rec.Seq > d.nextRec:
			d.problem(ProblemMissingRecords, i, int64(rec.Seq), f.offset, "records %d..%d are missing", d.nextRec, rec.Seq-1)
		case rec.Prev != hex.EncodeToString(d.recHead[:]):
			d.problem(ProblemChainBreak, i, int64(rec.Seq), f.offset, "record does not chain to its predecessor")
		case rec.Seq == 0 && (rec.Kind != KindSessionStart || rec.Meta == nil):
			d.problem(ProblemBadHeader, i, 0, f.offset, "record 0 is %q, not the session start", rec.Kind)
		}
		d.recHead = sha256.Sum256(b)
		d.nextRec = rec.Seq + 1
		d.rep.Records++
		d.queue = append(d.queue, rec)
	}
}

// seal checks the seal frame against the trusted key and the chains.
func (d *decoder) seal(i int64, f frame, frameHead [frameHashLen]byte) {
	d.seenSeal = true
	if len(f.body) < ed25519.SignatureSize {
		d.problem(ProblemBadSeal, i, -1, f.offset, "seal of %d bytes is too short", len(f.body))
		return
	}
	info, sig := f.body[:len(f.body)-ed25519.SignatureSize], f.body[len(f.body)-ed25519.SignatureSize:]
	var s sealInfo
	if err := json.Unmarshal(info, &s); err != nil {
		d.problem(ProblemBadSeal, i, -1, f.offset, "seal does not parse: %v", err)
		return
	}
	msg := append([]byte(sealSigPrefix), info...)
	if d.checkSig && (len(d.pub) != ed25519.PublicKeySize || !ed25519.Verify(d.pub, msg, sig)) {
		signer, _ := base64.StdEncoding.DecodeString(s.Signer)
		if len(signer) == ed25519.PublicKeySize && ed25519.Verify(signer, msg, sig) {
			d.problem(ProblemUntrustedSigner, i, -1, f.offset, "seal is signed by %s, not by the trusted key", s.Signer)
		} else {
			d.problem(ProblemBadSignature, i, -1, f.offset, "seal signature does not verify with the trusted key")
		}
		return
	}
	ok := true
	mismatch := func(format string, args ...any) {
		ok = false
		d.problem(ProblemSealMismatch, i, -1, f.offset, format, args...)
	}
	if d.header != nil && s.SessionID != d.header.SessionID {
		mismatch("seal is for session %q, the header for %q", s.SessionID, d.header.SessionID)
	}
	if s.Frames != f.seq || s.FrameHead != hex.EncodeToString(frameHead[:]) {
		mismatch("seal covers %d frames ending in %.16s…, the file has %d ending in %.16s…", s.Frames, s.FrameHead, f.seq, hex.EncodeToString(frameHead[:]))
	}
	// A seal written by Recover over an encrypted recording has no record
	// head: the frame chain binds the content.
	recovered := s.Reason == SealRecovered && s.RecordHead == ""
	if d.rep.RecordsChecked && !recovered && (s.Records != d.nextRec || s.RecordHead != hex.EncodeToString(d.recHead[:])) {
		mismatch("seal covers %d records ending in %.16s…, the file has %d ending in %.16s…", s.Records, s.RecordHead, d.nextRec, hex.EncodeToString(d.recHead[:]))
	}
	d.rep.Seal = &SealSummary{Reason: s.Reason, SealedAt: s.SealedAt, Records: s.Records, ResultBytes: s.ResultBytes, OmittedBytes: s.OmittedBytes, OmittedRows: s.OmittedRows}
	d.rep.Sealed = ok
}

// report finishes the walk: gaps whose frames or records turned up later
// were reorderings, not losses.
func (d *decoder) report() Report {
	for d.step() {
		d.queue = d.queue[:0]
	}
	for i, p := range d.rep.Problems {
		var seen map[uint64]bool
		var from, to uint64
		switch p.Kind {
		case ProblemMissingFrames:
			seen = d.seenFrame
			fmt.Sscanf(p.Detail, "frames %d..%d", &from, &to)
		case ProblemMissingRecords:
			seen = d.seenRec
			fmt.Sscanf(p.Detail, "records %d..%d", &from, &to)
		default:
			continue
		}
		all := to >= from && to-from < 1<<20
		for s := from; all && s <= to; s++ {
			all = seen[s]
		}
		if all {
			d.rep.Problems[i].Kind = ProblemReordered
			d.rep.Problems[i].Detail = strings.Replace(p.Detail, "are missing", "come later: out of order", 1)
		}
	}
	return d.rep
}
