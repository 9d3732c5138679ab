package policy

import (
	"fmt"
	"strings"
)

// Normalize returns the canonical form of a SQL text for binding approvals
// to it (workload-identity.md §5.3): comments dropped, tokens separated by
// one space, unquoted words upper-cased (Snowflake resolves them that way);
// strings, quoted identifiers and everything else exactly as written. Two
// texts with the same form run the same statements. A text the lexer cannot
// read has no normal form.
func Normalize(sql string) (string, error) {
	if len(sql) > MaxStatementBytes {
		return "", fmt.Errorf("normalize: statement of %d bytes exceeds %d", len(sql), MaxStatementBytes)
	}
	toks, _, err := lex(sql, lexOptions{significantOnly: true})
	if err != nil {
		return "", fmt.Errorf("normalize: %w", err)
	}
	var b strings.Builder
	b.Grow(len(sql))
	for i, t := range toks {
		if i > 0 {
			b.WriteByte(' ')
		}
		if t.Kind == TokWord {
			b.WriteString(t.Value)
		} else {
			b.WriteString(t.Text)
		}
	}
	return b.String(), nil
}
