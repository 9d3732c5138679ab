package emulator

import (
	"strconv"
	"strings"

	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
)

// countPlaceholders counts the positional bind markers (?) of one statement,
// skipping string literals, quoted identifiers, comments and $$ blocks.
func countPlaceholders(sql string) int {
	n := 0
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == '?':
			n++
		case c == '\'' || c == '"':
			for i++; i < len(sql); i++ {
				if sql[i] == '\\' && c == '\'' {
					i++
					continue
				}
				if sql[i] == c {
					if i+1 < len(sql) && sql[i+1] == c {
						i++
						continue
					}
					break
				}
			}
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return n
			}
			i += end + 3
		case c == '$' && i+1 < len(sql) && sql[i+1] == '$':
			end := strings.Index(sql[i+2:], "$$")
			if end < 0 {
				return n
			}
			i += end + 3
		}
	}
	return n
}

// splitBinds hands each statement of a multi-statement request its share of
// the positional binds ("1","2",… numbered across the whole text, renumbered
// from 1 per statement); named binds go to every statement.
func splitBinds(stmts []string, binds map[string]sqlengine.Binding) []map[string]sqlengine.Binding {
	out := make([]map[string]sqlengine.Binding, len(stmts))
	next := 1
	for i, stmt := range stmts {
		m := map[string]sqlengine.Binding{}
		for k, v := range binds {
			if _, err := strconv.Atoi(k); err != nil {
				m[k] = v
			}
		}
		for j := 1; j <= countPlaceholders(stmt); j++ {
			if b, ok := binds[strconv.Itoa(next)]; ok {
				m[strconv.Itoa(j)] = b
			}
			next++
		}
		out[i] = m
	}
	return out
}
