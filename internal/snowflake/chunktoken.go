package snowflake

import (
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// Sealed chunk references. A gateway chunk URL is
//
//	https://<host>/_snowgate/chunk/<id>?token=<sealed>
//	id     = "c1" base64url(key id [4] | nonce [24])             (40 characters)
//	sealed = base64url(XChaCha20-Poly1305(key, nonce, plain, ad))
//	ad     = id | uvarint len(bind) | bind | owner
//	plain  = uvarint expires (Unix seconds) | uvarint index | str query id
//	         | str URL | uvarint n | n × (name | str value)
//	         [ | uvarint count | str session ]
//	name   = uvarint k ≥ 1: chunkHeaderNames[k-1] | 0 | str
//	str    = uvarint length | bytes
//
// The id is short, random and carries no secret: it is what the exchange
// log and the recording name the chunk by. The sealed part holds the
// presigned URL and the SSE-C headers, bearer secrets the driver never sees
// in clear; it travels in the query, which the gateway does not log, and
// recorded replies have it redacted. The owner is authenticated, not
// stored: a URL opened for another workload fails like a forged one, and so
// does one opened by a table with another bind (the daemon binds to the
// boot: cgroup ids, and so owners, start afresh at boot while the key
// survives). "c1" is the format's version; the key id picks the key (the
// current one or the one it replaced), so keys rotate without breaking the
// URLs in flight.

const (
	// ChunkKeySize is the size of a chunk sealing key.
	ChunkKeySize = chacha20poly1305.KeySize
	// ChunkTokenParam is the query parameter of a gateway chunk URL that
	// holds the sealed reference. Its name is one the recorder's and the
	// exchange log's redaction treats as a secret, so the sealed part of
	// the chunk URLs in a recorded reply is redacted like any token.
	ChunkTokenParam = "token"

	chunkIDVersion = "c1"
	chunkKeyIDLen  = 4
	chunkIDBytes   = chunkKeyIDLen + chacha20poly1305.NonceSizeX
	// chunkIDLen is the length of a version 1 chunk id.
	chunkIDLen = len(chunkIDVersion) + (chunkIDBytes*8+5)/6
	// maxChunkSealed bounds the sealed parameter (base64 characters) both
	// ways: a reply whose chunk URL would not fit is refused, and a longer
	// parameter is not decoded.
	maxChunkSealed = 12 << 10
	// maxChunkHeaders bounds the chunkHeaders carried.
	maxChunkHeaders = 32
	// maxChunkIndex bounds a chunk's index and count.
	maxChunkIndex = 1 << 31
	// maxChunkSession bounds the session id carried.
	maxChunkSession = 256
)

// ErrChunkToken is wrapped by every refusal of a gateway chunk URL.
var ErrChunkToken = errors.New("chunk url refused")

// The reasons of a refusal; all wrap ErrChunkToken.
var (
	errChunkMalformed  = fmt.Errorf("%w: malformed", ErrChunkToken)
	errChunkUnknownKey = fmt.Errorf("%w: sealed with a key this gateway does not hold", ErrChunkToken)
	errChunkForged     = fmt.Errorf("%w: does not open (forged, altered, or another workload's)", ErrChunkToken)
	errChunkExpired    = fmt.Errorf("%w: expired", ErrChunkToken)
)

var chunkB64 = base64.RawURLEncoding.Strict()

// chunkHeaderNames are the SSE-C header names of the clouds, sealed as one
// byte each. Part of format c1: append only.
var chunkHeaderNames = []string{
	"x-amz-server-side-encryption-customer-algorithm",
	"x-amz-server-side-encryption-customer-key",
	"x-amz-server-side-encryption-customer-key-md5",
	"x-ms-encryption-algorithm",
	"x-ms-encryption-key",
	"x-ms-encryption-key-sha256",
	"x-goog-encryption-algorithm",
	"x-goog-encryption-key",
	"x-goog-encryption-key-sha256",
}

// ChunkKeys are the keys of a ChunkTable: Current seals and opens; Previous,
// if set, only opens, until PreviousUntil (zero: no limit but the URLs' own
// expiry). Each is ChunkKeySize random bytes. Bind, when set, is
// authenticated with every URL: only a table with the same Bind opens it
// (the daemon uses the kernel's boot id).
type ChunkKeys struct {
	Current       []byte
	Previous      []byte
	PreviousUntil time.Time
	Bind          string
}

// ChunkKeyID is the id URLs sealed with key carry: the first 4 bytes of a
// SHA-256 of the key, so a key file needs no id of its own.
func ChunkKeyID(key []byte) uint32 {
	h := sha256.New()
	h.Write([]byte("snowgate chunk key id\x00"))
	h.Write(key)
	return binary.BigEndian.Uint32(h.Sum(nil))
}

type chunkKey struct {
	id    uint32
	key   []byte
	aead  cipher.AEAD
	until time.Time // zero: no limit
}

func newChunkKey(key []byte, until time.Time) (*chunkKey, error) {
	if len(key) != ChunkKeySize {
		return nil, fmt.Errorf("chunk key: %d bytes, want %d", len(key), ChunkKeySize)
	}
	aead, err := chacha20poly1305.NewX(key)
	if err != nil {
		return nil, fmt.Errorf("chunk key: %w", err)
	}
	return &chunkKey{id: ChunkKeyID(key), key: slices.Clone(key), aead: aead, until: until}, nil
}

// chunkKeyring is the sealing key and the key it replaced; immutable.
type chunkKeyring struct {
	current  *chunkKey
	previous *chunkKey
	bind     string
}

func newChunkKeyring(k ChunkKeys) (*chunkKeyring, error) {
	cur, err := newChunkKey(k.Current, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("current %w", err)
	}
	r := &chunkKeyring{current: cur, bind: k.Bind}
	if k.Previous != nil {
		if r.previous, err = newChunkKey(k.Previous, k.PreviousUntil); err != nil {
			return nil, fmt.Errorf("previous %w", err)
		}
		if r.previous.id == cur.id {
			// Same key twice is harmless; two keys with one id would
			// make one of them unusable.
			if string(r.previous.key) != string(cur.key) {
				return nil, errors.New("chunk keys: the current and previous keys share an id; make a new key")
			}
			r.previous = nil
		}
	}
	return r, nil
}

// seal returns the id and sealed parameter of ref's gateway URL.
func (r *chunkKeyring) seal(ref ChunkRef) (id, sealed string, err error) {
	plain, err := encodeChunkRef(ref)
	if err != nil {
		return "", "", err
	}
	k := r.current
	var raw [chunkIDBytes]byte
	binary.BigEndian.PutUint32(raw[:chunkKeyIDLen], k.id)
	nonce := raw[chunkKeyIDLen:]
	_, _ = rand.Read(nonce)
	id = chunkIDVersion + chunkB64.EncodeToString(raw[:])
	ct := k.aead.Seal(nil, nonce, plain, chunkAD(id, r.bind, ref.Owner))
	if chunkB64.EncodedLen(len(ct)) > maxChunkSealed {
		return "", "", fmt.Errorf("chunk %d: url and headers too long to seal (%d bytes)", ref.Index, len(plain))
	}
	return id, chunkB64.EncodeToString(ct), nil
}

// open checks and opens one gateway URL's id and sealed parameter for owner
// at now.
func (r *chunkKeyring) open(id, sealed, owner string, now time.Time) (ChunkRef, error) {
	if len(id) != chunkIDLen || id[:len(chunkIDVersion)] != chunkIDVersion ||
		len(sealed) > maxChunkSealed || len(sealed) < chunkB64.EncodedLen(chacha20poly1305.Overhead) {
		return ChunkRef{}, errChunkMalformed
	}
	raw, err := chunkB64.DecodeString(id[len(chunkIDVersion):])
	if err != nil || len(raw) != chunkIDBytes {
		return ChunkRef{}, errChunkMalformed
	}
	ct, err := chunkB64.DecodeString(sealed)
	if err != nil {
		return ChunkRef{}, errChunkMalformed
	}
	kid := binary.BigEndian.Uint32(raw[:chunkKeyIDLen])
	var k *chunkKey
	switch {
	case kid == r.current.id:
		k = r.current
	case r.previous != nil && kid == r.previous.id && (r.previous.until.IsZero() || now.Before(r.previous.until)):
		k = r.previous
	default:
		return ChunkRef{}, errChunkUnknownKey
	}
	plain, err := k.aead.Open(nil, raw[chunkKeyIDLen:], ct, chunkAD(id, r.bind, owner))
	if err != nil {
		return ChunkRef{}, errChunkForged
	}
	ref, err := decodeChunkRef(plain)
	if err != nil {
		// Authentic but unreadable: only a bug writes that.
		return ChunkRef{}, fmt.Errorf("%w: %v", errChunkMalformed, err)
	}
	if !now.Before(ref.Expires) {
		return ChunkRef{}, errChunkExpired
	}
	ref.Owner = owner
	return ref, nil
}

// chunkAD is the associated data: the id (version, key id, nonce), the
// bind and the owner, so none can be swapped.
func chunkAD(id, bind, owner string) []byte {
	ad := make([]byte, 0, len(id)+binary.MaxVarintLen64+len(bind)+len(owner))
	ad = append(ad, id...)
	ad = appendChunkStr(ad, bind)
	return append(ad, owner...)
}

// encodeChunkRef is the version 1 plaintext of ref (its owner excepted).
// The count and session close it when either is set: a reference sealed
// before they were added ends after its headers, and still opens.
func encodeChunkRef(ref ChunkRef) ([]byte, error) {
	switch {
	case ref.Index < 0 || ref.Count < 0 || ref.Index > maxChunkIndex || ref.Count > maxChunkIndex:
		return nil, fmt.Errorf("chunk %d of %d: out of range", ref.Index, ref.Count)
	case len(ref.Headers) > maxChunkHeaders:
		return nil, fmt.Errorf("chunk %d: %d headers, at most %d", ref.Index, len(ref.Headers), maxChunkHeaders)
	case len(ref.Session) > maxChunkSession:
		return nil, fmt.Errorf("chunk %d: session id of %d bytes, at most %d", ref.Index, len(ref.Session), maxChunkSession)
	}
	exp := ref.Expires.Unix()
	if exp < 0 {
		exp = 0
	}
	n := 2*binary.MaxVarintLen64 + 5*binary.MaxVarintLen64 + len(ref.QueryID) + len(ref.URL) + len(ref.Session)
	for k, v := range ref.Headers {
		n += 2*binary.MaxVarintLen64 + len(k) + len(v)
	}
	b := make([]byte, 0, n)
	b = binary.AppendUvarint(b, uint64(exp))
	b = binary.AppendUvarint(b, uint64(ref.Index))
	b = appendChunkStr(b, ref.QueryID)
	b = appendChunkStr(b, ref.URL)
	b = binary.AppendUvarint(b, uint64(len(ref.Headers)))
	// Sorted: one reply's chunks seal the same header bytes.
	for _, k := range slices.Sorted(maps.Keys(ref.Headers)) {
		if i := slices.Index(chunkHeaderNames, k); i >= 0 {
			b = binary.AppendUvarint(b, uint64(i+1))
		} else {
			b = appendChunkStr(append(b, 0), k)
		}
		b = appendChunkStr(b, ref.Headers[k])
	}
	if ref.Count > 0 || ref.Session != "" {
		b = binary.AppendUvarint(b, uint64(ref.Count))
		b = appendChunkStr(b, ref.Session)
	}
	return b, nil
}

func appendChunkStr(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// decodeChunkRef reads what encodeChunkRef wrote; every length is checked
// against what is left.
func decodeChunkRef(b []byte) (ChunkRef, error) {
	d := chunkDecoder{b: b}
	var ref ChunkRef
	exp := d.uvarint()
	idx := d.uvarint()
	ref.QueryID = d.str()
	ref.URL = d.str()
	n := d.uvarint()
	if d.err == nil && n > maxChunkHeaders {
		d.err = fmt.Errorf("%d headers", n)
	}
	if d.err == nil && n > 0 {
		ref.Headers = make(map[string]string, n)
		for range n {
			k := ""
			switch c := d.uvarint(); {
			case c == 0:
				k = d.str()
			case c <= uint64(len(chunkHeaderNames)):
				k = chunkHeaderNames[c-1]
			case d.err == nil:
				d.err = fmt.Errorf("header name %d", c)
			}
			ref.Headers[k] = d.str()
		}
	}
	var count uint64
	if d.err == nil && len(d.b) > 0 {
		count = d.uvarint()
		ref.Session = d.str()
	}
	switch {
	case d.err != nil:
		return ChunkRef{}, d.err
	case len(d.b) != 0:
		return ChunkRef{}, fmt.Errorf("%d bytes after the reference", len(d.b))
	case exp > 1<<40 || idx > maxChunkIndex || count > maxChunkIndex:
		return ChunkRef{}, errors.New("expiry, index or count out of range")
	case len(ref.Session) > maxChunkSession:
		return ChunkRef{}, fmt.Errorf("session id of %d bytes", len(ref.Session))
	}
	ref.Index, ref.Count = int(idx), int(count)
	ref.Expires = time.Unix(int64(exp), 0)
	return ref, nil
}

type chunkDecoder struct {
	b   []byte
	err error
}

func (d *chunkDecoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = errors.New("bad varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *chunkDecoder) str() string {
	n := d.uvarint()
	if d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("string of %d bytes, %d left", n, len(d.b))
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}
