// Package snowflake holds the wire types and codecs of Snowflake's client REST
// protocol: the response envelope every endpoint uses, the error codes the
// drivers react to, and (as the gateway grows) the request and response
// messages it reads and rewrites. Both the emulator and the gateway speak
// through this package, so the two cannot drift apart.
package snowflake

import (
	"encoding/json"
	"net/http"
)

// Response is the envelope of every Snowflake REST reply:
// {"data":…,"code":…,"message":…,"success":…}.
//
// Code stays a JSON string (or null): Go decodes it into a string and Node
// compares it with string literals such as '390112'.
type Response struct {
	Data    any     `json:"data"`
	Code    *string `json:"code"`
	Message *string `json:"message"`
	Success bool    `json:"success"`
	// Headers is null in real replies; kept so the shape matches byte for byte.
	Headers any `json:"headers,omitempty"`
}

// OK wraps data in a successful envelope.
func OK(data any) Response {
	return Response{Data: data, Success: true}
}

// ErrorData is the "data" object of a failed query reply. The drivers read
// errorCode, sqlState and queryId from it.
type ErrorData struct {
	InternalError bool   `json:"internalError"`
	ErrorCode     string `json:"errorCode"`
	Age           int    `json:"age"`
	SQLState      string `json:"sqlState"`
	QueryID       string `json:"queryId,omitempty"`
	Line          int    `json:"line,omitempty"`
	Pos           int    `json:"pos,omitempty"`
	Type          string `json:"type,omitempty"`
}

// Error is a Snowflake-shaped failure: the code the drivers act on, the SQL
// state they surface, and a message for the human reading the driver's error.
type Error struct {
	Code     string
	SQLState string
	Message  string
	// QueryID is set when the failure belongs to a statement.
	QueryID string
	// Type is e.g. "COMPILATION" for SQL errors; empty for session errors.
	Type string
	// HTTPStatus is the status to reply with; zero means 200, which is what
	// the drivers need to act on the code at all (§5.2 of the protocol notes).
	HTTPStatus int
}

// Error implements error.
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// Response renders the error as the envelope the drivers expect.
func (e *Error) Response() Response {
	code, msg := e.Code, e.Message
	return Response{
		Data: ErrorData{
			ErrorCode: e.Code,
			SQLState:  e.SQLState,
			QueryID:   e.QueryID,
			Type:      e.Type,
		},
		Code:    &code,
		Message: &msg,
		Success: false,
	}
}

// Status is the HTTP status to send the error with.
func (e *Error) Status() int {
	if e.HTTPStatus == 0 {
		return http.StatusOK
	}
	return e.HTTPStatus
}

// WriteJSON writes v as an application/json reply with the given status.
func WriteJSON(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

// WriteError writes e as a Snowflake-shaped error reply.
func WriteError(w http.ResponseWriter, e *Error) error {
	return WriteJSON(w, e.Status(), e.Response())
}
