package sqlengine

import (
	"database/sql"
	"strings"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// insert runs INSERT [OVERWRITE] INTO … VALUES/SELECT.
func (x *execution) insert() (*Result, error) {
	toks := x.toks
	overwrite := len(toks) > 1 && toks[1].is("OVERWRITE")
	if len(toks) > 1 && (toks[1].is("ALL") || toks[1].is("FIRST")) {
		return nil, compileError(codeUnsupported, "Multi-table INSERT is not supported by the emulator.")
	}
	if !overwrite {
		res, err := x.dml(snowflake.StatementInsert, []string{"number of rows inserted"})
		return res, err
	}
	// INSERT OVERWRITE INTO t …: empty t, then insert, atomically.
	idx := 2
	if !x.tok(idx).is("INTO") {
		return nil, syntaxErrorAt(x.tok(idx))
	}
	ref, end, err := x.tableName(idx + 1)
	if err != nil {
		return nil, err
	}
	_ = end
	rest := make([]token, 0, len(toks))
	rest = append(rest, toks[0])
	rest = append(rest, toks[2:]...)
	x2 := *x
	x2.toks = rest
	tr := newTranslator(x.e, x.s, x.src, rest, nextExecID.Add(1))
	q := tr.translate(0, len(rest))
	if tr.err != nil {
		return nil, tr.err
	}
	var n int64
	err = x.e.inTx(x.ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(x.ctx, "DELETE FROM "+quoteIdent(ref.sqlite())); err != nil {
			return x.wrapErr(err, tr)
		}
		args, err := x2.args(tr, 0)
		if err != nil {
			return err
		}
		res, err := tx.ExecContext(x.ctx, q, args...)
		if err != nil {
			return x.wrapErr(err, tr)
		}
		n, _ = res.RowsAffected()
		return nil
	})
	if err != nil {
		return nil, err
	}
	return countResult(snowflake.StatementInsert, []string{"number of rows inserted"}, []int64{n}), nil
}

// dml runs a single-table INSERT, UPDATE or DELETE.
func (x *execution) dml(typeID int64, names []string) (*Result, error) {
	tr := newTranslator(x.e, x.s, x.src, x.toks, nextExecID.Add(1))
	q := tr.translate(0, len(x.toks))
	if tr.err != nil {
		return nil, tr.err
	}
	n, err := x.execStatement(tr, q)
	if err != nil {
		return nil, err
	}
	counts := make([]int64, len(names))
	counts[0] = n
	return countResult(typeID, names, counts), nil
}

func (x *execution) tok(i int) token {
	if i < 0 || i >= len(x.toks) {
		last := token{kind: tkEOF, line: 1}
		if len(x.toks) > 0 {
			l := x.toks[len(x.toks)-1]
			last.line, last.col = l.line, l.col+len(l.text)
		}
		return last
	}
	return x.toks[i]
}

// tableName reads a one- to three-part object name at i.
func (x *execution) tableName(i int) (tableRef, int, error) {
	if !isName(x.tok(i)) {
		return tableRef{}, i, syntaxErrorAt(x.tok(i))
	}
	parts := []string{identName(x.tok(i))}
	j := i
	for x.tok(j+1).isOp(".") && isName(x.tok(j+2)) {
		parts = append(parts, identName(x.tok(j+2)))
		j += 2
	}
	ref, err := x.s.resolve(parts)
	if err != nil {
		return tableRef{}, j, err
	}
	return ref, j + 1, nil
}

// merge runs MERGE INTO target USING source ON cond WHEN … as UPDATE,
// DELETE and INSERT statements in one transaction.
func (x *execution) merge() (*Result, error) {
	if !x.tok(1).is("INTO") {
		return nil, syntaxErrorAt(x.tok(1))
	}
	target, i, err := x.tableName(2)
	if err != nil {
		return nil, err
	}
	talias := target.Name
	if x.tok(i).is("AS") {
		i++
	}
	if isName(x.tok(i)) && !x.tok(i).is("USING") {
		talias = identName(x.tok(i))
		i++
	}
	if !x.tok(i).is("USING") {
		return nil, syntaxErrorAt(x.tok(i))
	}
	i++
	// Source: a table name or a parenthesised query, with an optional alias.
	srcStart := i
	if x.tok(i).isOp("(") {
		tr := newTranslator(x.e, x.s, x.src, x.toks, 0)
		m := tr.matchParen(i)
		if m < 0 {
			return nil, syntaxErrorAt(x.tok(len(x.toks)))
		}
		i = m + 1
	} else {
		_, j, err := x.tableName(i)
		if err != nil {
			return nil, err
		}
		i = j
	}
	if x.tok(i).is("AS") {
		i++
	}
	if isName(x.tok(i)) && !x.tok(i).is("ON") {
		i++
	}
	srcEnd := i
	if !x.tok(i).is("ON") {
		return nil, syntaxErrorAt(x.tok(i))
	}
	i++
	onStart := i
	for i < len(x.toks) && !x.toks[i].is("WHEN") {
		i++
	}
	onEnd := i
	type clause struct {
		matched    bool
		condStart  int
		condEnd    int
		action     string
		bodyStart  int
		bodyEnd    int
		valuesOpen int
	}
	var clauses []clause
	for i < len(x.toks) {
		if !x.toks[i].is("WHEN") {
			return nil, syntaxErrorAt(x.toks[i])
		}
		c := clause{condStart: -1}
		i++
		if x.tok(i).is("NOT") {
			i++
		} else {
			c.matched = true
		}
		if !x.tok(i).is("MATCHED") {
			return nil, syntaxErrorAt(x.tok(i))
		}
		i++
		if x.tok(i).is("AND") {
			i++
			c.condStart = i
			for i < len(x.toks) && !x.toks[i].is("THEN") {
				i++
			}
			c.condEnd = i
		}
		if !x.tok(i).is("THEN") {
			return nil, syntaxErrorAt(x.tok(i))
		}
		i++
		c.action = x.tok(i).upper()
		i++
		c.bodyStart = i
		depth := 0
		for i < len(x.toks) && !(depth == 0 && x.toks[i].is("WHEN")) {
			if x.toks[i].isOp("(") {
				depth++
			} else if x.toks[i].isOp(")") {
				depth--
			}
			i++
		}
		c.bodyEnd = i
		clauses = append(clauses, c)
	}
	if len(clauses) == 0 {
		return nil, syntaxErrorAt(x.tok(i))
	}

	// Build the statements as Snowflake token streams, then translate each.
	srcText := x.text(srcStart, srcEnd)
	onText := x.text(onStart, onEnd)
	tgt := quoteIdentSF(target) + " AS " + quoteIdent(talias)
	var stmts []string
	var kinds []string
	for _, c := range clauses {
		cond := onText
		if c.condStart >= 0 {
			cond = "(" + onText + ") AND (" + x.text(c.condStart, c.condEnd) + ")"
		}
		switch {
		case c.matched && c.action == "UPDATE":
			body := x.text(c.bodyStart, c.bodyEnd) // SET a = b, …
			stmts = append(stmts, "UPDATE "+tgt+" "+body+" FROM "+srcText+" WHERE "+cond)
			kinds = append(kinds, "updated")
		case c.matched && c.action == "DELETE":
			stmts = append(stmts, "DELETE FROM "+tgt+" WHERE EXISTS (SELECT 1 FROM "+srcText+" WHERE "+cond+")")
			kinds = append(kinds, "deleted")
		case !c.matched && c.action == "INSERT":
			// INSERT [(cols)] VALUES (exprs)
			j := c.bodyStart
			cols := ""
			if x.tok(j).isOp("(") {
				k := j
				for k < c.bodyEnd && !x.toks[k].isOp(")") {
					k++
				}
				cols = x.text(j, k+1)
				j = k + 1
			}
			if !x.tok(j).is("VALUES") {
				return nil, syntaxErrorAt(x.tok(j))
			}
			vals := strings.TrimSpace(x.text(j+1, c.bodyEnd))
			vals = strings.TrimSuffix(strings.TrimPrefix(vals, "("), ")")
			where := "NOT EXISTS (SELECT 1 FROM " + tgt + " WHERE " + onText + ")"
			if c.condStart >= 0 {
				where += " AND (" + x.text(c.condStart, c.condEnd) + ")"
			}
			stmts = append(stmts, "INSERT INTO "+quoteIdentSF(target)+" "+cols+" SELECT "+vals+" FROM "+srcText+" WHERE "+where)
			kinds = append(kinds, "inserted")
		default:
			return nil, syntaxErrorAt(x.tok(c.bodyStart - 1))
		}
	}
	// Updates and deletes first, inserts last, so inserted rows are not
	// matched again.
	order := make([]int, 0, len(stmts))
	for k := range stmts {
		if kinds[k] != "inserted" {
			order = append(order, k)
		}
	}
	for k := range stmts {
		if kinds[k] == "inserted" {
			order = append(order, k)
		}
	}
	counts := map[string]int64{}
	err = x.e.inTx(x.ctx, func(tx *sql.Tx) error {
		for _, k := range order {
			toks, lerr := lex(stmts[k])
			if lerr != nil {
				return syntaxError(1, 0, "<EOF>")
			}
			sig := significant(toks)
			tr := newTranslator(x.e, x.s, stmts[k], sig, 0)
			tr.itemsFound = true
			q := tr.translate(0, len(sig))
			if tr.err != nil {
				return tr.err
			}
			// Binds keep their numbering: rebuild args from the parameter keys.
			args, err := x.args(tr, 0)
			if err != nil {
				return err
			}
			res, err := tx.ExecContext(x.ctx, q, args...)
			if err != nil {
				return x.wrapErr(err, tr)
			}
			n, _ := res.RowsAffected()
			counts[kinds[k]] += n
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var names []string
	var vals []int64
	for _, k := range []string{"inserted", "updated", "deleted"} {
		for _, kk := range kinds {
			if kk == k {
				names = append(names, "number of rows "+k)
				vals = append(vals, counts[k])
				break
			}
		}
	}
	return countResult(snowflake.StatementMerge, names, vals), nil
}

// text is the original statement text of tokens [from, to).
func (x *execution) text(from, to int) string {
	if from >= to || from >= len(x.toks) {
		return ""
	}
	last := x.toks[to-1]
	return x.src[x.toks[from].pos : last.pos+len(last.text)]
}

// quoteIdentSF renders a resolved reference as a fully qualified, quoted
// Snowflake name (which the translator resolves back to the same table).
func quoteIdentSF(r tableRef) string {
	return quoteIdent(r.DB) + "." + quoteIdent(r.Schema) + "." + quoteIdent(r.Name)
}

// deleteStmt runs DELETE, rewriting Snowflake's DELETE … USING into a
// correlated EXISTS that SQLite understands.
func (x *execution) deleteStmt() (*Result, error) {
	names := []string{"number of rows deleted"}
	using, where := -1, len(x.toks)
	depth := 0
	for i, tk := range x.toks {
		switch {
		case tk.isOp("("):
			depth++
		case tk.isOp(")"):
			depth--
		case depth == 0 && tk.is("USING") && using < 0:
			using = i
		case depth == 0 && tk.is("WHERE") && using >= 0 && where == len(x.toks):
			where = i
		}
	}
	if using < 0 {
		return x.dml(snowflake.StatementDelete, names)
	}
	text := x.text(0, using) + " WHERE EXISTS (SELECT 1 FROM " + x.text(using+1, where)
	if where < len(x.toks) {
		text += " WHERE " + x.text(where+1, len(x.toks))
	}
	text += ")"
	toks, lerr := lex(text)
	if lerr != nil {
		return nil, syntaxError(lerr.line, lerr.col, "<EOF>")
	}
	x2 := *x
	x2.src, x2.toks = text, significant(toks)
	return x2.dml(snowflake.StatementDelete, names)
}
