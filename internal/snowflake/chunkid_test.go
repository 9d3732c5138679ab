package snowflake

import (
	"crypto/rand"
	"encoding/base64"
)

// NewChunkID returns an id of the shape the gateway issued before chunk URLs
// were sealed (128 random bits, base64url): the tests use it as a stale or
// forged id that must be refused.
func NewChunkID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return base64.RawURLEncoding.EncodeToString(b[:])
}
