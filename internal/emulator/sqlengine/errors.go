package sqlengine

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// Error is a Snowflake-shaped statement failure the driver must see: the
// code it reports (e.g. "002003"), the SQL state, and the message text, plus
// the line and position of a syntax error.
type Error struct {
	Code, SQLState, Message string
	Line, Pos               int
}

// Error implements error.
func (e *Error) Error() string { return e.Code + " (" + e.SQLState + "): " + e.Message }

// Codes this engine returns beyond those in package snowflake.
const (
	codeInvalidIdentifier = "000904"
	codeDivisionByZero    = "100051"
	codeUnknownFunction   = "002140"
	codeNotNull           = "100072"
	codeAlreadyExists     = "002002"
	codeNoSuchObject      = "002043"
	codeCancelled         = "000604"
	codeNumericParse      = "100038"
	codeDateParse         = "100040"
	codeUnsupported       = "002031"
	codeBindCount         = "002049"
	codeGeneric           = "000603"
	codeDuplicateKey      = "100090"
)

func syntaxError(line, pos int, near string) *Error {
	return &Error{Code: snowflake.CodeSyntaxError, SQLState: snowflake.SQLStateSyntax, Line: line, Pos: pos,
		Message: fmt.Sprintf("SQL compilation error:\nsyntax error line %d at position %d unexpected '%s'.", line, pos, near)}
}

func syntaxErrorAt(t token) *Error {
	near := t.text
	if t.kind == tkEOF {
		near = "<EOF>"
	}
	return syntaxError(t.line, t.col, near)
}

func objectNotFound(name string) *Error {
	return &Error{Code: snowflake.CodeObjectNotFound, SQLState: snowflake.SQLStateObjectMissing,
		Message: fmt.Sprintf("SQL compilation error:\nObject '%s' does not exist or not authorized.", name)}
}

func invalidIdentifier(name string, line, pos int) *Error {
	return &Error{Code: codeInvalidIdentifier, SQLState: snowflake.SQLStateSyntax, Line: line, Pos: pos,
		Message: fmt.Sprintf("SQL compilation error: error line %d at position %d\ninvalid identifier '%s'", line, pos, name)}
}

func compileError(code, msg string) *Error {
	return &Error{Code: code, SQLState: snowflake.SQLStateSyntax, Message: "SQL compilation error:\n" + msg}
}

func cancelledError() *Error {
	return &Error{Code: codeCancelled, SQLState: "57014", Message: "SQL execution canceled"}
}

var (
	reNoTable    = regexp.MustCompile(`no such table: (?:main\.)?(.+)$`)
	reNoColumn   = regexp.MustCompile(`no such column: (.+)$`)
	reNoFunction = regexp.MustCompile(`no such function: (.+)$`)
	reNear       = regexp.MustCompile(`near "((?:[^"]|"")*)": syntax error`)
	reNotNull    = regexp.MustCompile(`NOT NULL constraint failed: (.+)$`)
	reErrSuffix  = regexp.MustCompile(`\s*\(\d+\)$`)
	reValueError = regexp.MustCompile(`(?s)sg:(\d{6}):(\w{5}): (.*?)(?: \(\d+\))?$`)
)

// errDivZero is raised by the division guard function.
var errDivZero = errors.New("sg: division by zero")

// translateError maps an SQLite failure into the Snowflake error a driver
// would see for the same mistake. sqlText is the original statement, used to
// locate the token a syntax error names.
func translateError(err error, sqlText string) error {
	if err == nil {
		return nil
	}
	var se *Error
	if errors.As(err, &se) {
		return se
	}
	msg := reErrSuffix.ReplaceAllString(err.Error(), "")
	switch {
	case strings.Contains(msg, errDivZero.Error()):
		return &Error{Code: codeDivisionByZero, SQLState: "22012", Message: "Division by zero"}
	case strings.Contains(msg, "interrupted") || strings.Contains(msg, "context canceled") || strings.Contains(msg, "context deadline exceeded"):
		return cancelledError()
	}
	if m := reNoTable.FindStringSubmatch(msg); m != nil {
		return objectNotFound(strings.Trim(m[1], `"`))
	}
	if m := reNoColumn.FindStringSubmatch(msg); m != nil {
		name := m[1]
		if i := strings.LastIndexByte(name, '.'); i >= 0 && !strings.Contains(name[i:], `"`) {
			name = name[:i] + "." + name[i+1:]
		}
		name = strings.ToUpper(strings.ReplaceAll(name, `"`, ""))
		last := name
		if i := strings.LastIndexByte(last, '.'); i >= 0 {
			last = last[i+1:]
		}
		line, pos := locate(sqlText, last)
		return invalidIdentifier(name, line, pos)
	}
	if m := reNoFunction.FindStringSubmatch(msg); m != nil {
		return compileError(codeUnknownFunction, fmt.Sprintf("Unknown function %s", strings.ToUpper(m[1])))
	}
	if m := reNear.FindStringSubmatch(msg); m != nil {
		near := strings.ReplaceAll(m[1], `""`, `"`)
		line, pos := locate(sqlText, near)
		return syntaxError(line, pos, near)
	}
	if strings.Contains(msg, "incomplete input") {
		line, pos := endOf(sqlText)
		return syntaxError(line, pos, "<EOF>")
	}
	if m := reNotNull.FindStringSubmatch(msg); m != nil {
		col := m[1]
		if i := strings.LastIndexByte(col, '.'); i >= 0 {
			col = col[i+1:]
		}
		return &Error{Code: codeNotNull, SQLState: "22000", Message: fmt.Sprintf("NULL result in a non-nullable column '%s'", strings.Trim(col, `"`))}
	}
	if strings.Contains(msg, "CHECK constraint failed: sg_numeric") {
		return &Error{Code: codeNumericParse, SQLState: "22018", Message: "Numeric value is not recognized"}
	}
	if strings.Contains(msg, "UNIQUE constraint failed") {
		return &Error{Code: codeDuplicateKey, SQLState: "23505", Message: "Duplicate key value violates unique constraint"}
	}
	if strings.Contains(msg, "syntax error") || strings.Contains(msg, "unrecognized token") {
		return syntaxError(1, 0, firstWord(sqlText))
	}
	if strings.Contains(msg, "sg: ") {
		i := strings.Index(msg, "sg: ")
		return &Error{Code: codeGeneric, SQLState: "22000", Message: msg[i+4:]}
	}
	return nil
}

// locate finds the first occurrence of a token's text outside quotes and
// returns its 1-based line and 0-based column.
func locate(sqlText, near string) (int, int) {
	toks, _ := lex(sqlText)
	for _, t := range toks {
		if strings.EqualFold(t.text, near) {
			return t.line, t.col
		}
	}
	return 1, 0
}

func endOf(sqlText string) (int, int) {
	line, col := 1, 0
	for i := 0; i < len(sqlText); i++ {
		if sqlText[i] == '\n' {
			line++
			col = 0
		} else {
			col++
		}
	}
	return line, col
}

func firstWord(sqlText string) string {
	toks, _ := lex(sqlText)
	for _, t := range toks {
		if t.kind != tkSpace && t.kind != tkComment {
			return t.text
		}
	}
	return "<EOF>"
}
