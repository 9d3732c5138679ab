// Package clienthello reads the TLS ClientHello at the start of a connection
// without consuming it. The gateway decides by the server name (SNI) whether
// to terminate TLS, pass the connection through or refuse it, and then hands
// the connection, with the peeked bytes replayed, to crypto/tls or to a
// byte-for-byte relay.
//
// Everything read here comes from an untrusted client: reads are capped in
// size and time, and malformed input gives a clear error, never a panic.
package clienthello

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/cryptobyte"
)

// Errors of Peek and Parse; test with errors.Is.
var (
	// ErrNotTLS: the first bytes are not a TLS handshake record.
	ErrNotTLS = errors.New("not a TLS handshake")
	// ErrNotClientHello: a handshake message other than ClientHello came first.
	ErrNotClientHello = errors.New("first handshake message is not a ClientHello")
	// ErrTruncated: the connection ended before the ClientHello was complete.
	ErrTruncated = errors.New("truncated ClientHello")
	// ErrTooLarge: the ClientHello exceeds the size cap.
	ErrTooLarge = errors.New("ClientHello exceeds the size limit")
	// ErrMalformed: the ClientHello does not follow RFC 8446 / RFC 6066.
	ErrMalformed = errors.New("malformed ClientHello")
)

const (
	recordTypeHandshake   = 0x16
	handshakeClientHello  = 1
	recordHeaderLen       = 5
	maxPlaintextRecordLen = 1 << 14 // RFC 8446 §5.1

	extServerName           = 0
	extALPN                 = 16
	extSupportedVersions    = 43
	extEncryptedClientHello = 0xfe0d
)

// DefaultMaxSize caps the ClientHello handshake message. Hellos with
// post-quantum key shares are about 1.8 KiB; 64 KiB leaves room for any
// legitimate client.
const DefaultMaxSize = 64 << 10

// DefaultTimeout bounds the time a client may take to send its ClientHello.
const DefaultTimeout = 10 * time.Second

// Hello is what the gateway learns from a ClientHello.
type Hello struct {
	// ServerName is the SNI host name, lower-cased; "" when absent.
	ServerName string
	// ALPN lists the offered application protocols, in order.
	ALPN []string
	// SupportedVersions lists the supported_versions extension (TLS 1.3
	// clients); empty for TLS 1.2-only clients.
	SupportedVersions []uint16
	// LegacyVersion is the ClientHello's legacy_version field.
	LegacyVersion uint16
	// ECH reports an encrypted_client_hello extension: the SNI is then the
	// outer, public name, not the real one.
	ECH bool
}

// Options tunes Peek. Zero fields take the defaults.
type Options struct {
	// MaxSize caps the ClientHello handshake message in bytes.
	MaxSize int
	// Timeout bounds the whole read of the ClientHello.
	Timeout time.Duration
}

// Peek reads the ClientHello from conn and parses it. It returns a Conn that
// replays every byte read, whatever the outcome, so the caller can hand a
// good connection to crypto/tls or a relay, and answer or close a bad one.
// The read deadline is set for the peek and cleared afterwards.
func Peek(conn net.Conn, opts Options) (*Hello, *Conn, error) {
	if opts.MaxSize <= 0 {
		opts.MaxSize = DefaultMaxSize
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if err := conn.SetReadDeadline(time.Now().Add(opts.Timeout)); err != nil {
		return nil, &Conn{Conn: conn}, fmt.Errorf("peek ClientHello: set deadline: %w", err)
	}
	var buf bytes.Buffer
	msg, err := readHandshake(conn, &buf, opts.MaxSize)
	c := &Conn{Conn: conn, prefix: buf.Bytes()}
	// Clearing fails only on a connection that is already closed (or, for
	// net.Pipe, whose peer closed after sending its hello); later reads
	// then report that themselves.
	_ = conn.SetReadDeadline(time.Time{})
	if err != nil {
		return nil, c, fmt.Errorf("peek ClientHello from %s: %w", conn.RemoteAddr(), err)
	}
	h, err := ParseHandshake(msg)
	if err != nil {
		return nil, c, fmt.Errorf("peek ClientHello from %s: %w", conn.RemoteAddr(), err)
	}
	return h, c, nil
}

// readHandshake reads TLS records into buf until the first handshake message
// is complete, and returns that message (type and length header included).
func readHandshake(r io.Reader, buf *bytes.Buffer, maxSize int) ([]byte, error) {
	var msg []byte
	var hdr [recordHeaderLen]byte
	for {
		if n, err := io.ReadFull(r, hdr[:]); err != nil {
			buf.Write(hdr[:n])
			if len(msg) == 0 && buf.Len() > 0 && buf.Bytes()[0] != recordTypeHandshake {
				return nil, notTLS(buf.Bytes())
			}
			return nil, readErr("record header", err)
		}
		buf.Write(hdr[:])
		if hdr[0] != recordTypeHandshake {
			if len(msg) > 0 {
				return nil, fmt.Errorf("record of type %d inside the ClientHello: %w", hdr[0], ErrMalformed)
			}
			return nil, notTLS(buf.Bytes())
		}
		if hdr[1] != 3 {
			return nil, fmt.Errorf("record version %d.%d: %w", hdr[1], hdr[2], ErrNotTLS)
		}
		n := int(hdr[3])<<8 | int(hdr[4])
		if n == 0 || n > maxPlaintextRecordLen {
			return nil, fmt.Errorf("record length %d: %w", n, ErrMalformed)
		}
		if len(msg)+n > maxSize+4 {
			return nil, fmt.Errorf("more than %d bytes: %w", maxSize, ErrTooLarge)
		}
		start := buf.Len()
		if _, err := io.CopyN(buf, r, int64(n)); err != nil {
			return nil, readErr("record body", err)
		}
		msg = append(msg, buf.Bytes()[start:]...)
		if len(msg) >= 4 {
			if msg[0] != handshakeClientHello {
				return nil, fmt.Errorf("handshake type %d: %w", msg[0], ErrNotClientHello)
			}
			total := 4 + (int(msg[1])<<16 | int(msg[2])<<8 | int(msg[3]))
			if total-4 > maxSize {
				return nil, fmt.Errorf("ClientHello of %d bytes, limit %d: %w", total-4, maxSize, ErrTooLarge)
			}
			if len(msg) >= total {
				// Bytes past the message (a second handshake message in the
				// same record) stay in the replayed prefix only.
				return msg[:total], nil
			}
		}
	}
}

func readErr(what string, err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("connection closed in the %s: %w", what, ErrTruncated)
	}
	return fmt.Errorf("read %s: %w", what, err)
}

// notTLS names what the client sent instead, when it is recognisable.
func notTLS(b []byte) error {
	for _, m := range []string{"GET ", "POST", "PUT ", "HEAD", "CONN", "OPTI", "DELE", "PATC", "PRI "} {
		if len(b) >= 4 && string(b[:4]) == m {
			return fmt.Errorf("plain-text HTTP (%q): %w", strings.TrimSpace(m), ErrNotTLS)
		}
	}
	if len(b) > 0 && b[0] == 0x80 {
		return fmt.Errorf("SSLv2-style hello: %w", ErrNotTLS)
	}
	if len(b) > 0 {
		return fmt.Errorf("first byte 0x%02x: %w", b[0], ErrNotTLS)
	}
	return ErrNotTLS
}

// ParseHandshake parses a ClientHello handshake message (type and 3-byte
// length included, as it appears inside the handshake records).
func ParseHandshake(msg []byte) (*Hello, error) {
	s := cryptobyte.String(msg)
	var typ uint8
	var body cryptobyte.String
	if !s.ReadUint8(&typ) {
		return nil, fmt.Errorf("empty handshake: %w", ErrMalformed)
	}
	if typ != handshakeClientHello {
		return nil, fmt.Errorf("handshake type %d: %w", typ, ErrNotClientHello)
	}
	if !s.ReadUint24LengthPrefixed(&body) {
		return nil, fmt.Errorf("handshake length: %w", ErrTruncated)
	}
	if !s.Empty() {
		return nil, fmt.Errorf("data after the ClientHello: %w", ErrMalformed)
	}
	return parseClientHello(body)
}

// ParseRecords parses the ClientHello from the raw bytes of TLS records, as
// a client sends them (for captures and tests).
func ParseRecords(records []byte) (*Hello, error) {
	var buf bytes.Buffer
	msg, err := readHandshake(bytes.NewReader(records), &buf, DefaultMaxSize)
	if err != nil {
		return nil, err
	}
	return ParseHandshake(msg)
}

func parseClientHello(body cryptobyte.String) (*Hello, error) {
	h := &Hello{}
	var random, sessionID, suites, compression cryptobyte.String
	if !body.ReadUint16(&h.LegacyVersion) ||
		!body.ReadBytes((*[]byte)(&random), 32) ||
		!body.ReadUint8LengthPrefixed(&sessionID) ||
		!body.ReadUint16LengthPrefixed(&suites) ||
		!body.ReadUint8LengthPrefixed(&compression) {
		return nil, fmt.Errorf("fixed fields: %w", ErrMalformed)
	}
	if len(sessionID) > 32 || len(suites) == 0 || len(suites)%2 != 0 || len(compression) == 0 {
		return nil, fmt.Errorf("session id, cipher suites or compression methods: %w", ErrMalformed)
	}
	if h.LegacyVersion>>8 != 3 {
		return nil, fmt.Errorf("legacy version 0x%04x: %w", h.LegacyVersion, ErrMalformed)
	}
	if body.Empty() {
		return h, nil // no extensions: an old client, no SNI
	}
	var exts cryptobyte.String
	if !body.ReadUint16LengthPrefixed(&exts) || !body.Empty() {
		return nil, fmt.Errorf("extensions block: %w", ErrMalformed)
	}
	seen := map[uint16]bool{}
	for !exts.Empty() {
		var typ uint16
		var data cryptobyte.String
		if !exts.ReadUint16(&typ) || !exts.ReadUint16LengthPrefixed(&data) {
			return nil, fmt.Errorf("extension header: %w", ErrMalformed)
		}
		if seen[typ] {
			return nil, fmt.Errorf("extension %d twice: %w", typ, ErrMalformed)
		}
		seen[typ] = true
		var err error
		switch typ {
		case extServerName:
			h.ServerName, err = parseServerName(data)
		case extALPN:
			h.ALPN, err = parseALPN(data)
		case extSupportedVersions:
			h.SupportedVersions, err = parseVersions(data)
		case extEncryptedClientHello:
			h.ECH = true
		}
		if err != nil {
			return nil, err
		}
	}
	return h, nil
}

func parseServerName(data cryptobyte.String) (string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
		return "", fmt.Errorf("server_name extension: %w", ErrMalformed)
	}
	name := ""
	for !list.Empty() {
		var typ uint8
		var host cryptobyte.String
		if !list.ReadUint8(&typ) || !list.ReadUint16LengthPrefixed(&host) {
			return "", fmt.Errorf("server_name entry: %w", ErrMalformed)
		}
		if typ != 0 {
			continue // only host_name (0) is defined
		}
		if name != "" {
			return "", fmt.Errorf("two host names in server_name: %w", ErrMalformed)
		}
		if err := validHostName(host); err != nil {
			return "", err
		}
		name = strings.ToLower(strings.TrimSuffix(string(host), "."))
	}
	return name, nil
}

// validHostName checks the letters-digits-hyphen (and underscore, which
// some resolvers allow) syntax of a DNS name; IDNs arrive as A-labels.
func validHostName(h []byte) error {
	if len(h) == 0 || len(h) > 253+1 {
		return fmt.Errorf("server name of %d bytes: %w", len(h), ErrMalformed)
	}
	label := 0
	for i, c := range h {
		switch {
		case c == '.':
			if label == 0 {
				return fmt.Errorf("server name %q has an empty label: %w", h, ErrMalformed)
			}
			label = 0
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-', c == '_':
			label++
			if label > 63 {
				return fmt.Errorf("server name label over 63 bytes: %w", ErrMalformed)
			}
		default:
			return fmt.Errorf("server name byte 0x%02x at %d: %w", c, i, ErrMalformed)
		}
	}
	return nil
}

func parseALPN(data cryptobyte.String) ([]string, error) {
	var list cryptobyte.String
	if !data.ReadUint16LengthPrefixed(&list) || !data.Empty() || list.Empty() {
		return nil, fmt.Errorf("ALPN extension: %w", ErrMalformed)
	}
	var protos []string
	for !list.Empty() {
		var p cryptobyte.String
		if !list.ReadUint8LengthPrefixed(&p) || p.Empty() {
			return nil, fmt.Errorf("ALPN protocol name: %w", ErrMalformed)
		}
		protos = append(protos, string(p))
	}
	return protos, nil
}

func parseVersions(data cryptobyte.String) ([]uint16, error) {
	var list cryptobyte.String
	if !data.ReadUint8LengthPrefixed(&list) || !data.Empty() || list.Empty() || len(list)%2 != 0 {
		return nil, fmt.Errorf("supported_versions extension: %w", ErrMalformed)
	}
	var vs []uint16
	for !list.Empty() {
		var v uint16
		list.ReadUint16(&v)
		vs = append(vs, v)
	}
	return vs, nil
}

// Conn is a net.Conn whose first reads return the bytes Peek consumed.
type Conn struct {
	net.Conn
	prefix []byte
}

// Read returns the peeked bytes first, then reads from the connection.
func (c *Conn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// Peeked returns the bytes read by Peek that have not been read back yet.
func (c *Conn) Peeked() []byte { return c.prefix }

// CloseWrite half-closes the connection when the underlying one supports it
// (TCP), as a byte relay needs.
func (c *Conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.Conn.Close()
}
