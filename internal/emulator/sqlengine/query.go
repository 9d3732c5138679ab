package sqlengine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// query runs a SELECT-like statement and streams its rows.
func (x *execution) query() (*Result, error) {
	if q := x.topLevel("QUALIFY"); q >= 0 {
		return x.qualify(q)
	}
	cols, it, err := x.openQuery(0, len(x.toks))
	if err != nil {
		return nil, err
	}
	return &Result{StatementTypeID: snowflake.StatementSelect, Columns: cols, Rows: it}, nil
}

// openQuery translates and starts the query in tokens [from, to), reading
// the first row so the column types can be settled before the caller sees
// them.
func (x *execution) openQuery(from, to int) ([]Column, *sqlRows, error) {
	id := nextExecID.Add(1)
	tr := newTranslator(x.e, x.s, x.src, x.toks, id)
	q := tr.translate(from, to)
	if tr.err != nil {
		return nil, nil, tr.err
	}
	args, err := x.args(tr, 0)
	if err != nil {
		return nil, nil, err
	}
	running.Store(id, x.ctx)
	rows, err := x.e.db.QueryContext(x.ctx, q, args...)
	if err != nil {
		running.Delete(id)
		return nil, nil, x.wrapErr(err, tr)
	}
	it, cols, err := x.startRows(rows, tr, id)
	if err != nil {
		return nil, nil, err
	}
	return cols, it, nil
}

func (x *execution) startRows(rows *sql.Rows, tr *translator, id int64) (*sqlRows, []Column, error) {
	fail := func(err error) (*sqlRows, []Column, error) {
		rows.Close()
		running.Delete(id)
		return nil, nil, x.wrapErr(err, tr)
	}
	cts, err := rows.ColumnTypes()
	if err != nil {
		return fail(err)
	}
	n := len(cts)
	it := &sqlRows{rows: rows, raw: make([]any, n), ptrs: make([]any, n), out: make([]any, n), id: id, x: x, tr: tr}
	for i := range it.raw {
		it.ptrs[i] = &it.raw[i]
	}
	if rows.Next() {
		if err := rows.Scan(it.ptrs...); err != nil {
			return fail(err)
		}
		it.pending = true
	} else if err := rows.Err(); err != nil {
		return fail(err)
	}
	cols := make([]Column, n)
	it.types = make([]sfType, n)
	useItems := len(tr.items) == n
	for _, item := range tr.items {
		if item.star {
			useItems = false
		}
	}
	for i, ct := range cts {
		var typ sfType
		ok := false
		nullable := true
		if useItems {
			typ, ok = tr.staticType(tr.items[i].start, tr.items[i].end, x.binds)
			if ok && tr.items[i].end-tr.items[i].start == 1 {
				switch tr.toks[tr.items[i].start].kind {
				case tkNumber, tkString:
					nullable = false
				}
			}
		}
		if !ok {
			typ, ok = typeFromDecl(ct.DatabaseTypeName())
		}
		if !ok {
			var first any
			if it.pending {
				first = it.raw[i]
			}
			typ = dynamicType(first)
		}
		it.types[i] = typ
		cols[i] = columnOf(ct.Name(), typ, nullable)
	}
	return it, cols, nil
}

// columnOf builds the rowtype entry of a column.
func columnOf(name string, t sfType, nullable bool) Column {
	c := Column{Name: name, Type: t.Name, Nullable: nullable}
	switch t.Name {
	case "fixed":
		c.Precision, c.Scale = t.Precision, t.Scale
	case "time", "timestamp_ntz", "timestamp_ltz", "timestamp_tz":
		c.Precision, c.Scale = 0, t.Scale
	case "text":
		c.Length = t.Length
		c.ByteLength = t.Length * 4
		if c.ByteLength > maxTextLength {
			c.ByteLength = maxTextLength
		}
	case "binary":
		c.Length, c.ByteLength = t.Length, t.Length
	}
	return c
}

// dynamicType picks a type for an expression column from its first value.
func dynamicType(v any) sfType {
	switch v.(type) {
	case int64:
		return typeFixed
	case float64:
		return typeReal
	case []byte:
		return typeBinary
	case bool:
		return typeBool
	}
	if _, ok := v.(interface{ UnixNano() int64 }); ok {
		return typeNTZ
	}
	return typeText
}

// args builds the SQLite arguments for the translator's placeholders from
// the request binds; row selects the element of array binds.
func (x *execution) args(tr *translator, row int) ([]any, error) {
	out := make([]any, len(tr.params))
	for i, key := range tr.params {
		b, ok := x.binds[key]
		if !ok {
			return nil, &Error{Code: codeBindCount, SQLState: "07002", Message: fmt.Sprintf("SQL compilation error:\nBind variable %s not set.", bindName(key))}
		}
		v := b.Value
		if len(b.Values) > 0 {
			if row >= len(b.Values) {
				return nil, &Error{Code: codeBindCount, SQLState: "07002", Message: "Array bind values have different lengths."}
			}
			v = b.Values[row]
		}
		sv, err := bindToStorage(b.Type, v)
		if err != nil {
			return nil, x.wrapErr(err, tr)
		}
		out[i] = sv
	}
	return out, nil
}

func bindName(key string) string {
	if _, err := strconv.Atoi(key); err == nil {
		return "?"
	}
	return ":" + key
}

// arrayRows is the number of rows of array binds (0 when there are none).
func (x *execution) arrayRows() int {
	n := 0
	for _, b := range x.binds {
		if len(b.Values) > n {
			n = len(b.Values)
		}
	}
	return n
}

// sqlRows streams SQLite rows, converting values to the column types.
type sqlRows struct {
	rows    *sql.Rows
	types   []sfType
	raw     []any
	ptrs    []any
	out     []any
	pending bool
	err     error
	closed  bool
	once    sync.Once
	id      int64
	x       *execution
	tr      *translator
}

// Next advances to the next row.
func (r *sqlRows) Next() bool {
	if r.closed || r.err != nil {
		return false
	}
	if r.pending {
		r.pending = false
	} else {
		if !r.rows.Next() {
			if err := r.rows.Err(); err != nil {
				r.err = r.x.wrapErr(err, r.tr)
			}
			r.Close()
			return false
		}
		if err := r.rows.Scan(r.ptrs...); err != nil {
			r.err = r.x.wrapErr(err, r.tr)
			r.Close()
			return false
		}
	}
	for i, v := range r.raw {
		o, err := fromStorage(v, r.types[i])
		if err != nil {
			r.err = r.x.wrapErr(err, r.tr)
			r.Close()
			return false
		}
		r.out[i] = o
	}
	return true
}

// Values returns the current row.
func (r *sqlRows) Values() []any { return r.out }

// Err returns the error that ended iteration, if any.
func (r *sqlRows) Err() error { return r.err }

// Close releases the statement; it is safe to call more than once.
func (r *sqlRows) Close() error {
	var err error
	r.once.Do(func() {
		r.closed = true
		err = r.rows.Close()
		running.Delete(r.id)
	})
	return err
}

// sliceRows is a RowIterator over rows held in memory (status replies).
type sliceRows struct {
	rows [][]any
	i    int
}

func (r *sliceRows) Next() bool {
	if r.i >= len(r.rows) {
		return false
	}
	r.i++
	return true
}
func (r *sliceRows) Values() []any { return r.rows[r.i-1] }
func (r *sliceRows) Err() error    { return nil }
func (r *sliceRows) Close() error  { r.i = len(r.rows); return nil }

// statusResult is the one-row "status" reply of DDL and session statements.
func statusResult(typeID int64, msg string) *Result {
	return &Result{
		StatementTypeID: typeID,
		Columns:         []Column{columnOf("status", typeText, false)},
		Rows:            &sliceRows{rows: [][]any{{msg}}},
	}
}

// countResult is the reply of a DML statement: one row of counts.
func countResult(typeID int64, names []string, counts []int64) *Result {
	cols := make([]Column, len(names))
	row := make([]any, len(names))
	var total int64
	for i, n := range names {
		cols[i] = columnOf(n, typeFixed, false)
		row[i] = counts[i]
		total += counts[i]
	}
	return &Result{StatementTypeID: typeID, Columns: cols, Rows: &sliceRows{rows: [][]any{row}}, RowsAffected: total}
}

// staticType infers the type of the expression in tokens [start, end) from
// its form alone; ok is false when only the values can tell.
func (t *translator) staticType(start, end int, binds map[string]Binding) (sfType, bool) {
	if end <= start {
		return sfType{}, false
	}
	toks := t.toks[start:end]
	n := len(toks)
	if n == 2 && toks[0].isOp("-") && toks[1].kind == tkNumber {
		toks, n = toks[1:], 1
	}
	if n == 1 {
		tk := toks[0]
		switch tk.kind {
		case tkNumber:
			return numberLiteralType(tk.text), true
		case tkString:
			l := int64(utf8.RuneCountInString(tk.val))
			if l == 0 {
				l = 1
			}
			return sfType{Name: "text", Length: l}, true
		case tkParam:
			key := tk.val
			if key == "" {
				k := 1
				for _, p := range t.toks[:start] {
					if p.kind == tkParam && p.val == "" {
						k++
					}
				}
				key = strconv.Itoa(k)
			}
			if b, ok := binds[key]; ok {
				return bindType(b.Type), true
			}
		case tkWord:
			switch tk.upper() {
			case "TRUE", "FALSE":
				return typeBool, true
			case "CURRENT_TIMESTAMP", "LOCALTIMESTAMP", "SYSTIMESTAMP":
				return typeLTZ, true
			case "CURRENT_DATE":
				return typeDate, true
			case "CURRENT_TIME", "LOCALTIME":
				return typeTime, true
			case "CURRENT_USER", "CURRENT_ROLE", "CURRENT_WAREHOUSE", "CURRENT_DATABASE", "CURRENT_SCHEMA":
				return typeText, true
			}
		}
		return sfType{}, false
	}
	// Trailing ::TYPE at the top level.
	depth := 0
	lastCast := -1
	boolOp, concat, path := false, false, false
	for i, tk := range toks {
		switch {
		case tk.isOp("("):
			depth++
		case tk.isOp(")"):
			depth--
		case tk.is("CASE"):
			depth++
		case tk.is("END"):
			depth--
		case depth == 0 && tk.isOp("::"):
			lastCast = i
		case depth == 0 && (tk.isOp("=") || tk.isOp("<") || tk.isOp(">") || tk.isOp("<=") || tk.isOp(">=") || tk.isOp("<>") || tk.isOp("!=") ||
			tk.is("AND") || tk.is("OR") || tk.is("NOT") || tk.is("IS") || tk.is("IN") || tk.is("LIKE") || tk.is("ILIKE") || tk.is("BETWEEN") || tk.is("EXISTS")):
			boolOp = true
		case depth == 0 && tk.isOp("||"):
			concat = true
		case depth == 0 && tk.isOp(":"):
			path = true
		}
	}
	if lastCast >= 0 {
		if typ, j, ok := parseTypeTokens(toks, lastCast+1); ok && j == n {
			return typ, true
		}
	}
	if path && !boolOp {
		return typeVariant, true
	}
	if boolOp {
		return typeBool, true
	}
	if concat {
		return typeText, true
	}
	if toks[0].is("CASE") && toks[n-1].is("END") {
		// The type of the first THEN branch.
		for i := 1; i < n; i++ {
			if toks[i].is("THEN") {
				j := i + 1
				d := 0
				for ; j < n; j++ {
					if toks[j].isOp("(") || toks[j].is("CASE") {
						d++
					} else if toks[j].isOp(")") || toks[j].is("END") {
						if d == 0 {
							break
						}
						d--
					} else if d == 0 && (toks[j].is("WHEN") || toks[j].is("ELSE")) {
						break
					}
				}
				return t.staticType(start+i+1, start+j, binds)
			}
		}
		return sfType{}, false
	}
	// A whole-item function call.
	if isName(toks[0]) && toks[1].isOp("(") && t.matchParen(start+1) == end-1 {
		return t.funcType(identName(toks[0]), start+2, end-1, binds)
	}
	if toks[0].isOp("(") && t.matchParen(start) == end-1 {
		if toks[1].is("SELECT") {
			return sfType{}, false
		}
		return t.staticType(start+1, end-1, binds)
	}
	return sfType{}, false
}

// funcArgs splits the argument tokens [from, to) at top-level commas.
func (t *translator) funcArgs(from, to int) [][2]int {
	var out [][2]int
	depth, s := 0, from
	for i := from; i < to; i++ {
		switch {
		case t.toks[i].isOp("("):
			depth++
		case t.toks[i].isOp(")"):
			depth--
		case depth == 0 && t.toks[i].isOp(","):
			out = append(out, [2]int{s, i})
			s = i + 1
		}
	}
	if to > s {
		out = append(out, [2]int{s, to})
	}
	return out
}

// funcType is the result type of a function call with arguments in
// tokens [from, to).
func (t *translator) funcType(name string, from, to int, binds map[string]Binding) (sfType, bool) {
	if c, ok := castFuncs[name]; ok {
		typ, _ := typeFromName(c, nil)
		return typ, true
	}
	args := t.funcArgs(from, to)
	argType := func(k int) (sfType, bool) {
		if k < len(args) {
			return t.staticType(args[k][0], args[k][1], binds)
		}
		return sfType{}, false
	}
	switch name {
	case "CAST", "TRY_CAST":
		for i := from; i < to; i++ {
			if t.toks[i].is("AS") {
				if typ, j, ok := parseTypeTokens(t.toks, i+1); ok && j == to {
					return typ, true
				}
			}
		}
	case "SEQ1", "SEQ2", "SEQ4", "SEQ8", "ROW_NUMBER", "RANK", "DENSE_RANK", "LENGTH", "LEN", "DATEDIFF",
		"TIMEDIFF", "TIMESTAMPDIFF", "RANDOM", "HASH", "CHARINDEX", "POSITION", "NTILE", "YEAR", "MONTH", "DAY":
		return typeFixed, true
	case "COUNT", "COUNT_IF":
		return sfType{Name: "fixed", Precision: 18}, true
	case "RANDSTR", "UPPER", "LOWER", "CONCAT", "SUBSTR", "SUBSTRING", "TRIM", "LTRIM", "RTRIM", "REPLACE",
		"LPAD", "RPAD", "LEFT", "RIGHT", "REVERSE", "INITCAP", "SYSTEM$WAIT", "LISTAGG", "CURRENT_USER",
		"CURRENT_ROLE", "CURRENT_WAREHOUSE", "CURRENT_DATABASE", "CURRENT_SCHEMA", "CURRENT_VERSION",
		"CURRENT_SESSION", "MD5", "SHA1", "SHA2", "TYPEOF", "REPEAT", "SPLIT_PART", "CURRENT_ACCOUNT", "CURRENT_REGION",
		"REGEXP_REPLACE", "REGEXP_SUBSTR":
		return typeText, true
	case "CURRENT_TIMESTAMP", "LOCALTIMESTAMP", "SYSTIMESTAMP", "GETDATE":
		return typeLTZ, true
	case "SYSDATE":
		return typeNTZ, true
	case "CURRENT_DATE":
		return typeDate, true
	case "CURRENT_TIME", "LOCALTIME":
		return typeTime, true
	case "ARRAY_CONSTRUCT", "ARRAY_AGG", "SPLIT":
		return sfType{Name: "array"}, true
	case "OBJECT_CONSTRUCT":
		return sfType{Name: "object"}, true
	case "DATE_TRUNC":
		return argType(1)
	case "MEDIAN", "STDDEV", "STDDEV_SAMP", "VARIANCE", "VAR_SAMP", "AVG":
		return typeReal, true
	case "TRY_TO_NUMBER", "TRY_TO_DECIMAL", "TRY_TO_NUMERIC", "ZEROIFNULL", "NULLIFZERO":
		return typeFixed, true
	case "TRY_TO_DATE":
		return typeDate, true
	case "TRY_TO_TIMESTAMP", "TRY_TO_TIMESTAMP_NTZ":
		return typeNTZ, true
	case "TRY_TO_BOOLEAN":
		return typeBool, true
	case "TRY_TO_DOUBLE":
		return typeReal, true
	case "DATE_PART", "EXTRACT", "QUARTER", "HOUR", "MINUTE", "SECOND", "DAYOFWEEK", "DAYOFYEAR", "WEEK", "WEEKOFYEAR", "ARRAY_SIZE":
		return typeFixed, true
	case "IFF", "NVL2":
		return argType(1)
	case "SQUARE", "DIV0":
		return argType(0)
	case "NVL", "IFNULL", "COALESCE", "NULLIF", "MIN", "MAX", "ANY_VALUE", "ABS":
		return argType(0)
	case "DATEADD", "TIMEADD", "TIMESTAMPADD":
		return argType(2)
	case "IS_NULL_VALUE", "EQUAL_NULL", "STARTSWITH", "ENDSWITH", "CONTAINS", "BOOLAND", "BOOLOR", "REGEXP_LIKE", "RLIKE":
		return typeBool, true
	}
	return sfType{}, false
}

// numberLiteralType is the type Snowflake gives a numeric literal.
func numberLiteralType(s string) sfType {
	if strings.ContainsAny(s, "eE") {
		return typeReal
	}
	intPart, frac := s, ""
	if i := strings.IndexByte(s, '.'); i >= 0 {
		intPart, frac = s[:i], s[i+1:]
	}
	intPart = strings.TrimLeft(intPart, "0")
	p := int64(len(intPart) + len(frac))
	if p == 0 {
		p = 1
	}
	if p > 38 {
		return typeReal
	}
	return sfType{Name: "fixed", Precision: p, Scale: int64(len(frac))}
}

// bindType is the column type of a bound value.
func bindType(t string) sfType {
	switch strings.ToUpper(t) {
	case "FIXED":
		return typeFixed
	case "REAL":
		return typeReal
	case "BOOLEAN":
		return typeBool
	case "DATE":
		return typeDate
	case "TIME":
		return typeTime
	case "TIMESTAMP_NTZ":
		return typeNTZ
	case "TIMESTAMP_LTZ":
		return typeLTZ
	case "TIMESTAMP_TZ":
		return typeTZ
	case "BINARY":
		return typeBinary
	case "VARIANT", "OBJECT", "ARRAY":
		return typeVariant
	}
	return typeText
}

// execStatement runs a non-query statement once per array-bind row inside
// one transaction and returns the total rows affected.
func (x *execution) execStatement(tr *translator, q string) (int64, error) {
	n := x.arrayRows()
	if n == 0 {
		args, err := x.args(tr, 0)
		if err != nil {
			return 0, err
		}
		res, err := x.e.db.ExecContext(x.ctx, q, args...)
		if err != nil {
			return 0, x.wrapErr(err, tr)
		}
		ra, _ := res.RowsAffected()
		return ra, nil
	}
	var total int64
	err := x.e.inTx(x.ctx, func(tx *sql.Tx) error {
		st, err := tx.PrepareContext(x.ctx, q)
		if err != nil {
			return x.wrapErr(err, tr)
		}
		defer st.Close()
		for row := 0; row < n; row++ {
			args, err := x.args(tr, row)
			if err != nil {
				return err
			}
			res, err := st.ExecContext(x.ctx, args...)
			if err != nil {
				return x.wrapErr(err, tr)
			}
			ra, _ := res.RowsAffected()
			total += ra
		}
		return nil
	})
	return total, err
}

// inTx runs fn in an immediate transaction.
func (e *Engine) inTx(ctx context.Context, fn func(*sql.Tx) error) error {
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlengine: begin: %w", err)
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlengine: commit: %w", err)
	}
	return nil
}

// topLevel returns the index of the first depth-0 word w, or -1.
func (x *execution) topLevel(w string) int {
	depth := 0
	for i, tk := range x.toks {
		switch {
		case tk.isOp("("):
			depth++
		case tk.isOp(")"):
			depth--
		case depth == 0 && tk.is(w):
			return i
		}
	}
	return -1
}

// qualify runs SELECT … QUALIFY cond [ORDER BY …] [LIMIT …] as
// SELECT <columns> FROM (SELECT …, cond AS SG_QUALIFY …) WHERE SG_QUALIFY ….
func (x *execution) qualify(q int) (*Result, error) {
	from := x.topLevel("FROM")
	if from < 0 || from > q {
		return nil, syntaxErrorAt(x.tok(q))
	}
	end := len(x.toks)
	for i := q + 1; i < len(x.toks); i++ {
		if x.toks[i].is("ORDER") || x.toks[i].is("LIMIT") {
			if x.depthAt(i) == 0 {
				end = i
				break
			}
		}
	}
	// The condition may name the underlying columns (evaluate it beside the
	// select list) or the select list's aliases (evaluate it over the
	// select's output); try the first, fall back to the second.
	inner := x.text(0, from) + ", (" + x.text(q+1, end) + ") AS SG_QUALIFY " + x.text(from, q)
	probe, err := x.reparse(inner)
	if err != nil {
		return nil, err
	}
	cols, it, err := probe.openQuery(0, len(probe.toks))
	if err != nil {
		var se *Error
		if !errors.As(err, &se) || se.Code != codeInvalidIdentifier {
			return nil, err
		}
		inner = "SELECT *, (" + x.text(q+1, end) + ") AS SG_QUALIFY FROM (" + x.text(0, q) + ")"
		if probe, err = x.reparse(inner); err != nil {
			return nil, err
		}
		if cols, it, err = probe.openQuery(0, len(probe.toks)); err != nil {
			return nil, err
		}
	}
	it.Close()
	if len(cols) < 2 {
		return nil, syntaxErrorAt(x.tok(q))
	}
	names := make([]string, 0, len(cols)-1)
	for _, c := range cols[:len(cols)-1] {
		names = append(names, quoteIdent(c.Name))
	}
	outer := "SELECT " + strings.Join(names, ", ") + " FROM (" + inner + ") WHERE SG_QUALIFY " + x.text(end, len(x.toks))
	x2, err := x.reparse(outer)
	if err != nil {
		return nil, err
	}
	return x2.query()
}

// depthAt is the parenthesis depth at token i.
func (x *execution) depthAt(i int) int {
	d := 0
	for _, tk := range x.toks[:i] {
		if tk.isOp("(") {
			d++
		} else if tk.isOp(")") {
			d--
		}
	}
	return d
}

// reparse returns an execution of rewritten statement text.
func (x *execution) reparse(text string) (*execution, error) {
	toks, lerr := lex(text)
	if lerr != nil {
		return nil, syntaxError(lerr.line, lerr.col, "<EOF>")
	}
	x2 := *x
	x2.src, x2.toks = text, significant(toks)
	return &x2, nil
}
