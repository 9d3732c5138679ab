package policy

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// TokenKind says what a lexed token is.
type TokenKind int

// Token kinds of the Snowflake lexer.
const (
	// TokWord is an unquoted identifier or keyword; Value is upper-cased.
	TokWord TokenKind = iota
	// TokQuoted is a "double-quoted" identifier; Value is exact, "" unescaped.
	TokQuoted
	// TokString is a 'single-quoted' string; Value is the raw body.
	TokString
	// TokDollarString is a $$…$$ string; Value is the body.
	TokDollarString
	// TokNumber is a numeric literal.
	TokNumber
	// TokVariable is a session variable or positional column: $name, $1.
	TokVariable
	// TokBind is a bind marker: ?, :1 or :name.
	TokBind
	// TokStage is a stage reference: @name, @~, @%table, with its path.
	TokStage
	// TokFileURI is the local file argument of PUT and GET: file://….
	TokFileURI
	// TokOperator is punctuation other than ';': ( ) , . = :: and so on.
	TokOperator
	// TokSemicolon separates statements.
	TokSemicolon
	// TokComment is a --, // or /* */ comment.
	TokComment
	// TokSpace is ASCII whitespace.
	TokSpace
)

var kindNames = [...]string{"word", "quoted", "string", "dollar_string", "number", "variable", "bind", "stage", "file_uri", "operator", "semicolon", "comment", "space"}

// String names the kind.
func (k TokenKind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("kind(%d)", int(k))
}

// Token is one lexeme of a statement text.
type Token struct {
	Kind TokenKind
	// Pos is the byte offset of the token in the text.
	Pos int
	// Text is the token exactly as written.
	Text string
	// Value is the normalised token: upper-cased for words, unescaped for
	// quoted identifiers, the body for strings.
	Value string
}

// significant reports whether the token takes part in classification.
func (t Token) significant() bool { return t.Kind != TokComment && t.Kind != TokSpace }

// LexError is why a text could not be lexed unambiguously. The classifier
// turns it into ClassUnknown rather than guessing.
type LexError struct {
	Pos    int
	Reason string
}

// Error implements error.
func (e *LexError) Error() string { return fmt.Sprintf("at byte %d: %s", e.Pos, e.Reason) }

// lexOptions select lexer dialect details.
type lexOptions struct {
	// noBackslash lexes '…' strings without backslash escapes (standard
	// SQL). The classifier lexes both ways when a string holds a backslash
	// and keeps the stricter reading, so a divergence between this lexer and
	// Snowflake's cannot make a statement look safer than it is.
	noBackslash bool
	// significantOnly drops whitespace and comments, which classification
	// does not read; it halves the memory of long statements.
	significantOnly bool
}

// Lex splits a Snowflake SQL text into tokens, comments and whitespace
// included. Anything this lexer cannot read with certainty — an unterminated
// string or comment, a block comment that contains "/*" (nesting differs
// between dialects), a bare carriage return or Unicode line separator in a
// line comment, non-ASCII outside strings, quoted identifiers and comments
// (look-alike letters, NBSP, zero-width characters) — is reported as a
// *LexError together with the tokens read so far.
func Lex(sql string) ([]Token, error) {
	toks, _, err := lex(sql, lexOptions{})
	return toks, err
}

var twoCharOps = map[string]bool{"<=": true, ">=": true, "<>": true, "!=": true, "=>": true, "->": true, "||": true}

func isIdentStart(c byte) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
}

func isIdentPart(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') || c == '$' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// lex is Lex with options; it also reports whether a '…' string held a
// backslash.
func lex(s string, opt lexOptions) (toks []Token, sawBackslash bool, err error) {
	fail := func(pos int, format string, a ...any) ([]Token, bool, error) {
		return toks, sawBackslash, &LexError{Pos: pos, Reason: fmt.Sprintf(format, a...)}
	}
	// Roughly one token per four bytes; growing a large slice repeatedly
	// dominated the cost of long statements.
	toks = make([]Token, 0, len(s)/3+8)
	i := 0
	emit := func(kind TokenKind, start, end int, value string) {
		if opt.significantOnly && (kind == TokSpace || kind == TokComment) {
			return
		}
		toks = append(toks, Token{Kind: kind, Pos: start, Text: s[start:end], Value: value})
	}
	for i < len(s) {
		c := s[i]
		start := i
		switch {
		case isSpace(c):
			for i < len(s) && isSpace(s[i]) {
				i++
			}
			emit(TokSpace, start, i, "")
		case c == '-' && i+1 < len(s) && s[i+1] == '-', c == '/' && i+1 < len(s) && s[i+1] == '/':
			for i < len(s) && s[i] != '\n' {
				if s[i] == '\r' && !(i+1 < len(s) && s[i+1] == '\n') {
					return fail(i, "bare carriage return in a line comment: where the comment ends is ambiguous")
				}
				if strings.HasPrefix(s[i:], "\u2028") || strings.HasPrefix(s[i:], "\u2029") || strings.HasPrefix(s[i:], "\u0085") {
					return fail(i, "Unicode line separator in a line comment: where the comment ends is ambiguous")
				}
				i++
			}
			emit(TokComment, start, i, "")
		case c == '/' && i+1 < len(s) && s[i+1] == '*':
			end := strings.Index(s[i+2:], "*/")
			if end < 0 {
				return fail(i, "unterminated /* comment")
			}
			// Include the closing '*' so that an overlapping "/*/" counts too.
			body := s[i+2 : i+2+end+1]
			if strings.Contains(body, "/*") {
				return fail(i, "/* inside a block comment: nesting is ambiguous")
			}
			i += 2 + end + 2
			emit(TokComment, start, i, "")
		case c == '\'':
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				switch {
				case s[i] == '\\' && !opt.noBackslash:
					sawBackslash = true
					if i+1 >= len(s) {
						return fail(start, "unterminated string")
					}
					b.WriteByte(s[i])
					b.WriteByte(s[i+1])
					i += 2
					continue
				case s[i] == '\\':
					sawBackslash = true
				case s[i] == '\'' && i+1 < len(s) && s[i+1] == '\'':
					b.WriteString("''")
					i += 2
					continue
				case s[i] == '\'':
					closed = true
				}
				if closed {
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return fail(start, "unterminated string")
			}
			emit(TokString, start, i, b.String())
		case c == '"':
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					closed = true
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed {
				return fail(start, "unterminated quoted identifier")
			}
			if b.Len() == 0 {
				return fail(start, "empty quoted identifier")
			}
			emit(TokQuoted, start, i, b.String())
		case c == '$' && i+1 < len(s) && s[i+1] == '$':
			end := strings.Index(s[i+2:], "$$")
			if end < 0 {
				return fail(i, "unterminated $$ string")
			}
			i += 2 + end + 2
			emit(TokDollarString, start, i, s[start+2:i-2])
		case c == '$':
			i++
			for i < len(s) && (isIdentStart(s[i]) || isDigit(s[i])) {
				i++
			}
			if i == start+1 {
				return fail(start, "lone $")
			}
			emit(TokVariable, start, i, strings.ToUpper(s[start:i]))
		case isIdentStart(c):
			for i < len(s) && isIdentPart(s[i]) {
				i++
			}
			word := s[start:i]
			if i < len(s) && s[i] >= utf8.RuneSelf {
				return fail(i, "non-ASCII character in an unquoted word (look-alike letters are not keywords)")
			}
			if strings.Contains(word, "$$") {
				return fail(start, "$$ inside an unquoted word: string start is ambiguous")
			}
			if strings.EqualFold(word, "file") && strings.HasPrefix(s[i:], "://") {
				for i < len(s) && !isSpace(s[i]) && s[i] != ';' {
					if s[i] >= utf8.RuneSelf || s[i] == '\'' || s[i] == '"' {
						return fail(i, "unexpected character in a file:// argument")
					}
					i++
				}
				emit(TokFileURI, start, i, s[start:i])
				continue
			}
			emit(TokWord, start, i, strings.ToUpper(word))
		case isDigit(c) || (c == '.' && i+1 < len(s) && isDigit(s[i+1])):
			for i < len(s) && (isDigit(s[i]) || s[i] == '.') {
				i++
			}
			if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
				j := i + 1
				if j < len(s) && (s[j] == '+' || s[j] == '-') {
					j++
				}
				if j < len(s) && isDigit(s[j]) {
					for j < len(s) && isDigit(s[j]) {
						j++
					}
					i = j
				}
			}
			emit(TokNumber, start, i, s[start:i])
		case c == '@':
			i++
			for i < len(s) {
				d := s[i]
				if d == '"' {
					j := strings.IndexByte(s[i+1:], '"')
					if j < 0 {
						return fail(i, "unterminated quoted identifier in a stage reference")
					}
					i += j + 2
					continue
				}
				if isIdentPart(d) || d == '.' || d == '~' || d == '%' || d == '/' || d == '-' || d == '=' || d == '+' {
					i++
					continue
				}
				break
			}
			ref := s[start:i]
			if strings.Contains(ref, "//") || strings.Contains(ref, "--") || strings.Contains(ref, "/*") {
				return fail(start, "comment marker inside a stage reference is ambiguous")
			}
			if i < len(s) && s[i] >= utf8.RuneSelf {
				return fail(i, "non-ASCII character in a stage reference")
			}
			emit(TokStage, start, i, ref)
		case c == '?':
			i++
			emit(TokBind, start, i, "?")
		case c == ':':
			switch {
			case i+1 < len(s) && s[i+1] == ':':
				i += 2
				emit(TokOperator, start, i, "::")
			case i+1 < len(s) && (isDigit(s[i+1]) || isIdentStart(s[i+1])):
				i++
				for i < len(s) && isIdentPart(s[i]) {
					i++
				}
				emit(TokBind, start, i, strings.ToUpper(s[start:i]))
			default:
				i++
				emit(TokOperator, start, i, ":")
			}
		case c == ';':
			i++
			emit(TokSemicolon, start, i, ";")
		case strings.IndexByte("(),.=<>!+-*/%|&^~[]{}", c) >= 0:
			i++
			// Two-character operators are kept whole so that "=>" or "||"
			// read as one token.
			if i < len(s) && twoCharOps[s[start:i+1]] {
				i++
				// ->> is Snowflake's flow operator, which chains statements.
				if s[start:i] == "->" && i < len(s) && s[i] == '>' {
					i++
				}
			}
			emit(TokOperator, start, i, s[start:i])
		case c >= utf8.RuneSelf:
			r, _ := utf8.DecodeRuneInString(s[i:])
			return fail(i, "non-ASCII character %U outside strings and quoted identifiers", r)
		default:
			return fail(i, "unexpected character %q", c)
		}
	}
	return toks, sawBackslash, nil
}
