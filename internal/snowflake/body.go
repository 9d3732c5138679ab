package snowflake

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"github.com/klauspost/compress/gzip"
)

// Default caps of a decoded body. Login, query and renew bodies are a few
// kilobytes; a query text with array binds below the stage threshold stays far
// below DefaultMaxBody. Responses with inline rowsets can be large, so callers
// reading replies pass their own Limits.
const (
	DefaultMaxBody        = 16 << 20
	DefaultMaxDecodedBody = 64 << 20
)

// Errors of body decoding. They are wrapped with context; test with errors.Is.
var (
	// ErrBodyTooLarge: the body on the wire exceeds Limits.MaxBody.
	ErrBodyTooLarge = errors.New("body exceeds the size limit")
	// ErrDecodedTooLarge: the gzip body inflates beyond Limits.MaxDecoded
	// (a compression bomb, or simply too much).
	ErrDecodedTooLarge = errors.New("decompressed body exceeds the size limit")
	// ErrBadGzip: the body starts with the gzip magic but is not valid gzip.
	ErrBadGzip = errors.New("malformed gzip body")
	// ErrUnsupportedEncoding: Content-Encoding names a coding other than gzip
	// or identity, or claims gzip for a body that is not.
	ErrUnsupportedEncoding = errors.New("unsupported content encoding")
)

// gzipMagic is ID1, ID2 and CM=8 (deflate) of RFC 1952. Detection is by these
// bytes, not by the header: Python connectors gzip request bodies, and
// headers have not always told the truth (Teleport's engine learned the same).
var gzipMagic = []byte{0x1f, 0x8b, 0x08}

// Limits caps a body before and after decompression. Zero fields take the
// defaults.
type Limits struct {
	// MaxBody caps the bytes read from the wire.
	MaxBody int64
	// MaxDecoded caps the bytes after gzip inflation.
	MaxDecoded int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxBody <= 0 {
		l.MaxBody = DefaultMaxBody
	}
	if l.MaxDecoded <= 0 {
		l.MaxDecoded = DefaultMaxDecodedBody
	}
	return l
}

// Body is a decoded message body.
type Body struct {
	// Plain is the body after decompression.
	Plain []byte
	// Gzipped records that the wire form was gzip, so a rewritten body can be
	// sent back in the same form.
	Gzipped bool
	// WireSize is the number of bytes read from the wire.
	WireSize int64
	// Wire is the body as it came from the wire (Plain itself when it was
	// not compressed), so an unchanged body can be forwarded without being
	// compressed again.
	Wire []byte
}

// IsGzip reports whether b starts with the gzip magic bytes.
func IsGzip(b []byte) bool { return bytes.HasPrefix(b, gzipMagic) }

// ReadBody reads r to its end, at most lim.MaxBody bytes, and inflates it when
// it starts with the gzip magic, at most lim.MaxDecoded bytes. contentEncoding
// is the Content-Encoding header ("" when absent): gzip and identity are
// accepted; a body claiming gzip without the magic, or any other coding, is
// refused. Memory stays bounded by the limits whatever the input.
func ReadBody(r io.Reader, contentEncoding string, lim Limits) (Body, error) {
	lim = lim.withDefaults()
	coding := strings.ToLower(strings.TrimSpace(contentEncoding))
	switch coding {
	case "", "identity", "gzip", "x-gzip":
	default:
		return Body{}, fmt.Errorf("content-encoding %q: %w", contentEncoding, ErrUnsupportedEncoding)
	}
	raw, err := io.ReadAll(io.LimitReader(r, lim.MaxBody+1))
	if err != nil {
		return Body{}, fmt.Errorf("read body: %w", err)
	}
	if int64(len(raw)) > lim.MaxBody {
		return Body{}, fmt.Errorf("read body: more than %d bytes: %w", lim.MaxBody, ErrBodyTooLarge)
	}
	b := Body{Plain: raw, WireSize: int64(len(raw)), Wire: raw}
	if !IsGzip(raw) {
		if (coding == "gzip" || coding == "x-gzip") && len(raw) > 0 {
			return Body{}, fmt.Errorf("content-encoding gzip but the body has no gzip header: %w", ErrUnsupportedEncoding)
		}
		return b, nil
	}
	plain, err := Gunzip(raw, lim.MaxDecoded)
	if err != nil {
		return Body{}, err
	}
	b.Plain, b.Gzipped = plain, true
	return b, nil
}

// gzipReaders reuses decompressors (*inflater): a fresh one allocates about
// 40 KiB of state, which cost more than inflating a small request or reply.
var gzipReaders sync.Pool

// inflater is a pooled decompressor and the reader it inflates from; src is
// emptied after use, so the pool holds no body.
type inflater struct {
	src bytes.Reader
	zr  *gzip.Reader
}

// gzipSizeHint returns how many bytes to reserve for inflating compressed:
// the size its trailer claims (ISIZE, the last member's size mod 2^32),
// bounded by max, by what deflate can expand to (1032:1) and by 8 MiB, so a
// lying trailer reserves little. A wrong hint only costs a regrowth.
func gzipSizeHint(compressed []byte, max int64) int64 {
	if len(compressed) < 18 {
		return 0
	}
	hint := int64(binary.LittleEndian.Uint32(compressed[len(compressed)-4:]))
	return min(hint, max, 1032*int64(len(compressed)), 8<<20)
}

// Gunzip inflates a gzip stream (all members) to at most max bytes.
func Gunzip(compressed []byte, max int64) ([]byte, error) {
	in, _ := gzipReaders.Get().(*inflater)
	if in == nil {
		in = &inflater{}
	}
	defer func() {
		in.src.Reset(nil)
		gzipReaders.Put(in)
	}()
	in.src.Reset(compressed)
	var err error
	if in.zr == nil {
		in.zr, err = gzip.NewReader(&in.src)
	} else {
		err = in.zr.Reset(&in.src)
	}
	if err != nil {
		in.zr = nil
		return nil, fmt.Errorf("gunzip body: %v: %w", err, ErrBadGzip)
	}
	var out bytes.Buffer
	// Room for the whole body and the read that finds its end.
	out.Grow(int(gzipSizeHint(compressed, max)) + bytes.MinRead)
	n, err := out.ReadFrom(io.LimitReader(in.zr, max+1))
	if err != nil {
		return nil, fmt.Errorf("gunzip body after %d bytes: %v: %w", n, err, ErrBadGzip)
	}
	if n > max {
		return nil, fmt.Errorf("gunzip body: more than %d bytes: %w", max, ErrDecodedTooLarge)
	}
	return out.Bytes(), nil
}

// gzipWriters reuses compressors: a fresh one allocates its whole state
// (hundreds of KiB), which dominated the cost of small bodies.
var gzipWriters = sync.Pool{New: func() any { return gzip.NewWriter(io.Discard) }}

// Gzip compresses plain into one gzip member.
func Gzip(plain []byte) ([]byte, error) {
	var buf bytes.Buffer
	buf.Grow(len(plain)/4 + 64)
	zw := gzipWriters.Get().(*gzip.Writer)
	defer gzipWriters.Put(zw)
	zw.Reset(&buf)
	if _, err := zw.Write(plain); err != nil {
		return nil, fmt.Errorf("gzip body: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip body: %w", err)
	}
	return buf.Bytes(), nil
}

// Encode returns the wire form of plain: gzip-compressed when gzipped is set,
// else plain itself.
func Encode(plain []byte, gzipped bool) ([]byte, error) {
	if !gzipped {
		return plain, nil
	}
	return Gzip(plain)
}

// SetRequestBody replaces the body of r with wire, fixing Content-Length,
// dropping Transfer-Encoding and letting the client replay the body on a
// redirect or retry. contentEncoding is the coding of wire ("gzip" or "").
func SetRequestBody(r *http.Request, wire []byte, contentEncoding string) {
	r.Body = io.NopCloser(bytes.NewReader(wire))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(wire)), nil }
	r.ContentLength = int64(len(wire))
	r.TransferEncoding = nil
	if r.Header == nil {
		r.Header = http.Header{}
	}
	setLengthHeaders(r.Header, len(wire), contentEncoding)
}

// SetResponseBody replaces the body of resp with wire, fixing Content-Length
// and Content-Encoding and dropping Transfer-Encoding.
func SetResponseBody(resp *http.Response, wire []byte, contentEncoding string) {
	resp.Body = io.NopCloser(bytes.NewReader(wire))
	resp.ContentLength = int64(len(wire))
	resp.TransferEncoding = nil
	resp.Uncompressed = false
	if resp.Header == nil {
		resp.Header = http.Header{}
	}
	setLengthHeaders(resp.Header, len(wire), contentEncoding)
}

func setLengthHeaders(h http.Header, n int, contentEncoding string) {
	h.Set("Content-Length", strconv.Itoa(n))
	h.Del("Transfer-Encoding")
	if contentEncoding == "" {
		h.Del("Content-Encoding")
	} else {
		h.Set("Content-Encoding", contentEncoding)
	}
}
