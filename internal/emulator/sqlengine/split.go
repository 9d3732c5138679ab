package sqlengine

import "strings"

// SplitStatements splits multi-statement text on semicolons that are not
// inside string literals ('…' with ” and backslash escapes, $$…$$),
// double-quoted identifiers or comments. Statements that hold nothing but
// whitespace and comments are dropped; the others are returned trimmed.
func SplitStatements(sqlText string) []string {
	toks, _ := lex(sqlText)
	var out []string
	start := 0
	meaningful := false
	flush := func(end int) {
		if meaningful {
			if s := strings.TrimSpace(sqlText[start:end]); s != "" {
				out = append(out, s)
			}
		}
		meaningful = false
	}
	for _, t := range toks {
		switch {
		case t.kind == tkOp && t.text == ";":
			flush(t.pos)
			start = t.pos + 1
		case t.kind != tkSpace && t.kind != tkComment:
			meaningful = true
		}
	}
	flush(len(sqlText))
	return out
}

// IsFileTransfer reports whether sqlText is a PUT or GET file-transfer
// command (after any leading whitespace and comments), returning "PUT" or
// "GET".
func IsFileTransfer(sqlText string) (kind string, ok bool) {
	toks, _ := lex(sqlText)
	for _, t := range toks {
		if t.kind == tkSpace || t.kind == tkComment {
			continue
		}
		if t.is("PUT") || t.is("GET") {
			return t.upper(), true
		}
		return "", false
	}
	return "", false
}
