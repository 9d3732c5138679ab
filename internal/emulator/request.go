package emulator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// DefaultMaxBodyBytes caps a request body, compressed or not, when
// Config.MaxBodyBytes is zero. Query texts with large array binds stay far
// below it; anything bigger is refused before it is decoded.
const DefaultMaxBodyBytes = 16 << 20

// errBodyTooLarge marks a body over the cap, on the wire or once inflated.
var errBodyTooLarge = errors.New("request body too large")

// readBody reads a request body of at most limit bytes and, when it starts
// with the gzip magic, inflates it, again to at most limit bytes. The drivers
// send plain JSON; other connectors gzip. The gateway decodes bodies with the
// same function, so the two agree on what a body is.
func readBody(r io.Reader, limit int64) ([]byte, error) {
	b, err := snowflake.ReadBody(r, "", snowflake.Limits{MaxBody: limit, MaxDecoded: limit})
	if errors.Is(err, snowflake.ErrBodyTooLarge) || errors.Is(err, snowflake.ErrDecodedTooLarge) {
		return nil, fmt.Errorf("%w: %w", errBodyTooLarge, err)
	}
	if err != nil {
		return nil, err
	}
	return b.Plain, nil
}

// DecodeRequest decodes a JSON request body (plain or gzip, detected by its
// magic bytes) into v, refusing bodies over limit bytes (limit ≤ 0: the
// snowflake package's default caps), trailing data and anything that is
// not a JSON object. It never panics on hostile input.
func DecodeRequest(body io.Reader, limit int64, v any) error {
	data, err := readBody(body, limit)
	if err != nil {
		return err
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 || data[0] != '{' {
		return errors.New("request body is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("decode JSON body: %w", err)
	}
	if dec.More() {
		return errors.New("trailing data after the JSON body")
	}
	return nil
}

// decodeJSON decodes the body of r into v, enforcing the content type and
// size cap, and turns failures into the Snowflake-shaped error to send.
func (s *Server) decodeJSON(r *http.Request, v any) *snowflake.Error {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
			return badRequest(http.StatusUnsupportedMediaType, fmt.Sprintf("unsupported content type %q; expected application/json", ct))
		}
	}
	if err := DecodeRequest(r.Body, s.maxBody, v); err != nil {
		if errors.Is(err, errBodyTooLarge) {
			return badRequest(http.StatusRequestEntityTooLarge, fmt.Sprintf("request body exceeds %d bytes", s.maxBody))
		}
		return badRequest(http.StatusBadRequest, "malformed request: "+err.Error())
	}
	return nil
}

// badRequest is the Snowflake-shaped reply to a request the emulator cannot
// parse. It uses a non-200 status: the drivers must not act on it as a
// session code, they report it.
func badRequest(status int, msg string) *snowflake.Error {
	return &snowflake.Error{Code: snowflake.CodeBadRequest, SQLState: snowflake.SQLStateGeneral, Message: msg, HTTPStatus: status}
}
