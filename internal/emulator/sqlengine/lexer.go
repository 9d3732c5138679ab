package sqlengine

import (
	"strings"
)

// tokKind classifies a lexical token of Snowflake SQL.
type tokKind int

const (
	tkEOF     tokKind = iota
	tkWord            // unquoted identifier or keyword
	tkQuoted          // "double-quoted identifier"
	tkString          // 'string' or $$string$$
	tkNumber          // 12, 1.5, 1e3
	tkParam           // ? or :1 or :name
	tkOp              // operators and punctuation
	tkSpace           // whitespace
	tkComment         // -- or /* */ comment
)

// token is one lexeme with its position in the statement text.
type token struct {
	kind tokKind
	text string // raw text as written
	val  string // decoded value: identifier name, string contents, param key
	pos  int    // byte offset
	line int    // 1-based line
	col  int    // 0-based column within the line
}

// upper is the token's text upper-cased (for keyword comparison).
func (t token) upper() string { return strings.ToUpper(t.text) }

// is reports whether t is the unquoted word w (case-insensitive).
func (t token) is(w string) bool { return t.kind == tkWord && strings.EqualFold(t.text, w) }

// isOp reports whether t is the operator o.
func (t token) isOp(o string) bool { return t.kind == tkOp && t.text == o }

// lexError is an unterminated literal or comment.
type lexError struct {
	pos, line, col int
	what           string
}

// lex splits sql into tokens, keeping whitespace and comments so the
// original text can be rebuilt. It never fails: an unterminated literal
// or comment becomes a token that runs to the end and is reported in err.
func lex(sql string) (toks []token, err *lexError) {
	line, lineStart := 1, 0
	i := 0
	n := len(sql)
	emit := func(k tokKind, start, end int, val string) {
		toks = append(toks, token{kind: k, text: sql[start:end], val: val, pos: start, line: line, col: start - lineStart})
	}
	advanceLines := func(start, end int) {
		for j := start; j < end; j++ {
			if sql[j] == '\n' {
				line++
				lineStart = j + 1
			}
		}
	}
	for i < n {
		c := sql[i]
		start := i
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			for i < n && (sql[i] == ' ' || sql[i] == '\t' || sql[i] == '\n' || sql[i] == '\r' || sql[i] == '\f' || sql[i] == '\v') {
				i++
			}
			emit(tkSpace, start, i, "")
			advanceLines(start, i)
		case c == '-' && i+1 < n && sql[i+1] == '-', c == '/' && i+1 < n && sql[i+1] == '/':
			for i < n && sql[i] != '\n' {
				i++
			}
			emit(tkComment, start, i, "")
		case c == '/' && i+1 < n && sql[i+1] == '*':
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				i = n
				if err == nil {
					err = &lexError{pos: start, line: line, col: start - lineStart, what: "comment"}
				}
			} else {
				i = i + 2 + end + 2
			}
			emit(tkComment, start, i, "")
			advanceLines(start, i)
		case c == '\'':
			var b strings.Builder
			i++
			closed := false
			for i < n {
				ch := sql[i]
				if ch == '\\' && i+1 < n {
					b.WriteByte(unescape(sql[i+1]))
					i += 2
					continue
				}
				if ch == '\'' {
					if i+1 < n && sql[i+1] == '\'' {
						b.WriteByte('\'')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(ch)
				i++
			}
			if !closed && err == nil {
				err = &lexError{pos: start, line: line, col: start - lineStart, what: "string"}
			}
			emit(tkString, start, i, b.String())
			advanceLines(start, i)
		case c == '$' && i+1 < n && sql[i+1] == '$':
			end := strings.Index(sql[i+2:], "$$")
			var val string
			if end < 0 {
				val = sql[i+2:]
				i = n
				if err == nil {
					err = &lexError{pos: start, line: line, col: start - lineStart, what: "string"}
				}
			} else {
				val = sql[i+2 : i+2+end]
				i = i + 2 + end + 2
			}
			emit(tkString, start, i, val)
			advanceLines(start, i)
		case c == '"':
			var b strings.Builder
			i++
			closed := false
			for i < n {
				if sql[i] == '"' {
					if i+1 < n && sql[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					i++
					closed = true
					break
				}
				b.WriteByte(sql[i])
				i++
			}
			if !closed && err == nil {
				err = &lexError{pos: start, line: line, col: start - lineStart, what: "identifier"}
			}
			emit(tkQuoted, start, i, b.String())
			advanceLines(start, i)
		case isDigit(c) || (c == '.' && i+1 < n && isDigit(sql[i+1])):
			for i < n && isDigit(sql[i]) {
				i++
			}
			if i < n && sql[i] == '.' {
				i++
				for i < n && isDigit(sql[i]) {
					i++
				}
			}
			if i < n && (sql[i] == 'e' || sql[i] == 'E') {
				j := i + 1
				if j < n && (sql[j] == '+' || sql[j] == '-') {
					j++
				}
				if j < n && isDigit(sql[j]) {
					i = j
					for i < n && isDigit(sql[i]) {
						i++
					}
				}
			}
			emit(tkNumber, start, i, "")
		case isIdentStart(c):
			for i < n && isIdentPart(sql[i]) {
				i++
			}
			emit(tkWord, start, i, strings.ToUpper(sql[start:i]))
		case c == '?':
			i++
			emit(tkParam, start, i, "")
		case c == ':' && i+1 < n && isDigit(sql[i+1]) && !(i > 0 && sql[i-1] == ':'):
			i++
			for i < n && isDigit(sql[i]) {
				i++
			}
			emit(tkParam, start, i, sql[start+1:i])
		default:
			// Multi-character operators first.
			for _, op := range []string{"::", "=>", "<=", ">=", "<>", "!=", "||", "->"} {
				if strings.HasPrefix(sql[i:], op) {
					i += len(op)
					break
				}
			}
			if i == start {
				i++
			}
			emit(tkOp, start, i, "")
		}
	}
	return toks, err
}

func unescape(c byte) byte {
	switch c {
	case 'n':
		return '\n'
	case 't':
		return '\t'
	case 'r':
		return '\r'
	case '0':
		return 0
	case 'b':
		return '\b'
	case 'f':
		return '\f'
	default:
		return c
	}
}

func isDigit(c byte) bool      { return c >= '0' && c <= '9' }
func isIdentStart(c byte) bool { return c == '_' || (c|0x20 >= 'a' && c|0x20 <= 'z') || c >= 0x80 }
func isIdentPart(c byte) bool  { return isIdentStart(c) || isDigit(c) || c == '$' }

// significant returns the tokens that are neither whitespace nor comments.
func significant(toks []token) []token {
	out := make([]token, 0, len(toks))
	for _, t := range toks {
		if t.kind != tkSpace && t.kind != tkComment {
			out = append(out, t)
		}
	}
	return out
}
