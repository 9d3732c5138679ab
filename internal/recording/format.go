package recording

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Magic opens every recording file: format name and version.
const Magic = "SGREC\x00v1\n"

// FileExt is the extension of recording files.
const FileExt = ".sgrec"

// Frame kinds (FORMAT.md §2).
const (
	frameHeader  byte = 'H'
	frameSegment byte = 'S'
	frameSeal    byte = 'Z'
)

const (
	frameHeadLen  = 1 + 8 + 4 // kind, seq, length
	frameHashLen  = sha256.Size
	maxFrameBody  = 256 << 20 // no segment or header may exceed this
	maxRecordLen  = 256 << 20
	frameHashSalt = "snowgate-recording-frame-v1\x00"
	sealSigPrefix = "snowgate-recording-seal-v1\x00"
)

// frame is one stored unit: kind, sequence number, body and the chained hash.
type frame struct {
	kind   byte
	seq    uint64
	body   []byte
	hash   [frameHashLen]byte // as stored
	offset int64              // where the frame starts in the file
}

// frameHash is H_i = SHA-256(salt || H_{i-1} || kind || seq || len || body).
func frameHash(prev [frameHashLen]byte, kind byte, seq uint64, body []byte) [frameHashLen]byte {
	h := sha256.New()
	h.Write([]byte(frameHashSalt))
	h.Write(prev[:])
	var hdr [frameHeadLen]byte
	putFrameHead(hdr[:], kind, seq, len(body))
	h.Write(hdr[:])
	h.Write(body)
	var out [frameHashLen]byte
	h.Sum(out[:0])
	return out
}

func putFrameHead(b []byte, kind byte, seq uint64, n int) {
	b[0] = kind
	binary.BigEndian.PutUint64(b[1:9], seq)
	binary.BigEndian.PutUint32(b[9:13], uint32(n))
}

// appendFrame encodes a frame chained to prev and returns the bytes and the
// new chain head.
func appendFrame(dst []byte, prev [frameHashLen]byte, kind byte, seq uint64, body []byte) ([]byte, [frameHashLen]byte) {
	var hdr [frameHeadLen]byte
	putFrameHead(hdr[:], kind, seq, len(body))
	dst = append(dst, hdr[:]...)
	dst = append(dst, body...)
	h := frameHash(prev, kind, seq, body)
	dst = append(dst, h[:]...)
	return dst, h
}

// errTorn marks a frame cut short by the end of the file.
var errTorn = errors.New("file ends inside a frame")

// frameScanner reads frames from a recording after the magic.
type frameScanner struct {
	r   *bufio.Reader
	off int64
}

func newFrameScanner(r io.Reader) (*frameScanner, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	m := make([]byte, len(Magic))
	n, err := io.ReadFull(br, m)
	if err != nil || string(m) != Magic {
		if n == 0 && (err == io.EOF) {
			return nil, fmt.Errorf("empty file, not a snowgate recording")
		}
		return nil, fmt.Errorf("not a snowgate recording (bad magic %q)", m[:n])
	}
	return &frameScanner{r: br, off: int64(len(Magic))}, nil
}

// next returns the next frame, io.EOF at a clean end, or errTorn (wrapped)
// when the file ends mid-frame.
func (s *frameScanner) next() (frame, error) {
	f := frame{offset: s.off}
	var hdr [frameHeadLen]byte
	n, err := io.ReadFull(s.r, hdr[:])
	if err == io.EOF {
		return f, io.EOF
	}
	if err != nil {
		return f, fmt.Errorf("frame at offset %d: header of %d bytes: %w", s.off, n, errTorn)
	}
	f.kind = hdr[0]
	f.seq = binary.BigEndian.Uint64(hdr[1:9])
	size := int64(binary.BigEndian.Uint32(hdr[9:13]))
	if size > maxFrameBody {
		return f, fmt.Errorf("frame at offset %d: length %d exceeds the %d limit", s.off, size, maxFrameBody)
	}
	// Grow with the data actually present: a forged length cannot force a
	// large allocation.
	body, err := io.ReadAll(io.LimitReader(s.r, size))
	if err != nil {
		return f, fmt.Errorf("frame at offset %d: %w", s.off, err)
	}
	if int64(len(body)) < size {
		return f, fmt.Errorf("frame at offset %d: body %d of %d bytes: %w", s.off, len(body), size, errTorn)
	}
	f.body = body
	if n, err := io.ReadFull(s.r, f.hash[:]); err != nil {
		return f, fmt.Errorf("frame at offset %d: hash %d of %d bytes: %w", s.off, n, frameHashLen, errTorn)
	}
	s.off += frameHeadLen + size + frameHashLen
	return f, nil
}
