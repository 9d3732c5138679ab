package sqlengine

import (
	"strconv"
	"strings"
	"time"
)

// clauseWords end a FROM list (at the depth where it opened).
var clauseWords = map[string]bool{
	"WHERE": true, "GROUP": true, "HAVING": true, "ORDER": true, "LIMIT": true, "QUALIFY": true,
	"UNION": true, "EXCEPT": true, "INTERSECT": true, "MINUS": true, "ON": true, "USING": true,
	"SET": true, "WINDOW": true, "VALUES": true, "SELECT": true, "OFFSET": true, "FETCH": true,
	"WHEN": true, "RETURNING": true,
}

// reserved words are never taken for a table or column alias.
var reserved = map[string]bool{
	"SELECT": true, "FROM": true, "WHERE": true, "GROUP": true, "BY": true, "HAVING": true, "ORDER": true,
	"LIMIT": true, "OFFSET": true, "UNION": true, "ALL": true, "EXCEPT": true, "INTERSECT": true, "MINUS": true,
	"JOIN": true, "INNER": true, "LEFT": true, "RIGHT": true, "FULL": true, "OUTER": true, "CROSS": true,
	"NATURAL": true, "ON": true, "USING": true, "AS": true, "SET": true, "VALUES": true, "WINDOW": true,
	"QUALIFY": true, "LATERAL": true, "AND": true, "OR": true, "NOT": true, "IN": true, "IS": true,
	"NULL": true, "LIKE": true, "ILIKE": true, "BETWEEN": true, "CASE": true, "WHEN": true, "THEN": true,
	"ELSE": true, "END": true, "FETCH": true, "SAMPLE": true, "TABLESAMPLE": true, "PIVOT": true,
	"UNPIVOT": true, "DISTINCT": true, "INTO": true, "WITH": true, "ASC": true, "DESC": true,
	"NULLS": true, "OVER": true, "PARTITION": true, "RETURNING": true, "MATCHED": true,
	"TRUE": true, "FALSE": true, "ESCAPE": true, "COLLATE": true, "RLIKE": true, "REGEXP": true,
}

// selectEnd words end the select list.
var selectEnd = map[string]bool{
	"FROM": true, "WHERE": true, "GROUP": true, "HAVING": true, "ORDER": true, "LIMIT": true, "QUALIFY": true,
	"UNION": true, "EXCEPT": true, "INTERSECT": true, "MINUS": true, "WINDOW": true, "OFFSET": true, "FETCH": true, "INTO": true,
}

// selectItem is one entry of the outermost select list.
type selectItem struct {
	start, end int    // token range of the expression (without alias)
	name       string // the column name Snowflake reports
	star       bool
}

// translator rewrites the significant tokens of one Snowflake statement
// into SQLite SQL.
type translator struct {
	e      *Engine
	s      *Session
	src    string // original statement text
	toks   []token
	execID int64

	prefix  map[int][]string // text before token i
	suffix  map[int][]string // text after token i
	replace map[int]string   // token i's output replaced
	skip    map[int]bool     // token i emits nothing

	params    []string // bind keys in placeholder order
	paramSeen map[string]int
	nextParam int

	ctes       map[string]bool
	tableNames map[string]string // SQLite name -> name as written
	items      []selectItem
	itemsFound bool
	noPrepass  bool
	flattens   map[string]bool // aliases of FLATTEN tables
	err        *Error
}

func newTranslator(e *Engine, s *Session, src string, toks []token, execID int64) *translator {
	return &translator{
		e: e, s: s, src: src, toks: toks, execID: execID,
		prefix: map[int][]string{}, suffix: map[int][]string{}, replace: map[int]string{}, skip: map[int]bool{},
		paramSeen: map[string]int{}, ctes: map[string]bool{}, tableNames: map[string]string{}, flattens: map[string]bool{},
	}
}

func (t *translator) tok(i int) token {
	if i < 0 || i >= len(t.toks) {
		return token{kind: tkEOF, line: 1}
	}
	return t.toks[i]
}

// matchParen returns the index of the parenthesis closing the one at i, or
// -1.
func (t *translator) matchParen(i int) int {
	depth := 0
	for j := i; j < len(t.toks); j++ {
		switch {
		case t.toks[j].isOp("("):
			depth++
		case t.toks[j].isOp(")"):
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

// openParen returns the index of the parenthesis opening the one closing
// at i, or -1.
func (t *translator) openParen(i int) int {
	depth := 0
	for j := i; j >= 0; j-- {
		switch {
		case t.toks[j].isOp(")"):
			depth++
		case t.toks[j].isOp("("):
			depth--
			if depth == 0 {
				return j
			}
		}
	}
	return -1
}

func isName(tk token) bool { return tk.kind == tkWord || tk.kind == tkQuoted }

// primaryStart finds where the operand ending at token k begins,
// including variant paths (v:a.b[0]).
func (t *translator) primaryStart(k int) int {
	s := t.primaryStart1(k)
	if s >= 2 && t.tok(s-1).isOp(":") {
		return t.primaryStart(s - 2)
	}
	return s
}

func (t *translator) primaryStart1(k int) int {
	tk := t.tok(k)
	switch {
	case tk.isOp("]"):
		depth := 0
		for j := k; j >= 0; j-- {
			if t.toks[j].isOp("]") {
				depth++
			} else if t.toks[j].isOp("[") {
				depth--
				if depth == 0 {
					if j > 0 {
						return t.primaryStart1(j - 1)
					}
					return j
				}
			}
		}
		return k
	case tk.isOp(")"):
		o := t.openParen(k)
		if o < 0 {
			return k
		}
		if o > 0 && isName(t.tok(o-1)) && !reserved[t.tok(o-1).upper()] {
			return t.chainStart(o - 1)
		}
		return o
	case tk.is("END"):
		depth := 0
		for j := k; j >= 0; j-- {
			if t.toks[j].is("END") {
				depth++
			} else if t.toks[j].is("CASE") {
				depth--
				if depth == 0 {
					return j
				}
			}
		}
		return k
	case isName(tk):
		return t.chainStart(k)
	}
	return k
}

func (t *translator) chainStart(k int) int {
	for k >= 2 && t.tok(k-1).isOp(".") && isName(t.tok(k-2)) {
		k -= 2
	}
	return k
}

// primaryEnd finds where the operand starting at token k ends (inclusive),
// including unary signs and trailing ::casts.
func (t *translator) primaryEnd(k int) int {
	tk := t.tok(k)
	end := k
	switch {
	case tk.isOp("-") || tk.isOp("+") || tk.is("NOT"):
		return t.primaryEnd(k + 1)
	case tk.isOp("("):
		if m := t.matchParen(k); m >= 0 {
			end = m
		}
	case tk.is("CASE"):
		depth := 0
		for j := k; j < len(t.toks); j++ {
			if t.toks[j].is("CASE") {
				depth++
			} else if t.toks[j].is("END") {
				depth--
				if depth == 0 {
					end = j
					break
				}
			}
		}
	case isName(tk):
		for end+2 < len(t.toks) && t.tok(end+1).isOp(".") && isName(t.tok(end+2)) {
			end += 2
		}
		if t.tok(end + 1).isOp("(") {
			if m := t.matchParen(end + 1); m >= 0 {
				end = m
			}
		}
	}
	for t.tok(end + 1).isOp("::") {
		_, j, ok := parseTypeTokens(t.toks, end+2)
		if !ok {
			break
		}
		end = j - 1
	}
	return end
}

// prepass marks casts, divisions, CTE names and the select list.
func (t *translator) prepass(from, to int) {
	depth := 0
	selectAt := -1
	var nested []int
	for i := from; i < to; i++ {
		tk := t.toks[i]
		switch {
		case tk.isOp("("):
			depth++
		case tk.isOp(")"):
			depth--
		case tk.isOp("::"):
			typ, j, ok := parseTypeTokens(t.toks, i+1)
			if !ok {
				t.fail(t.tok(i + 1))
				return
			}
			s := t.primaryStart(i - 1)
			t.prefix[s] = append([]string{"sg_cast("}, t.prefix[s]...)
			t.replace[i] = ", '" + typ.decl() + "')"
			for k := i + 1; k < j; k++ {
				t.skip[k] = true
			}
		case tk.is("TOP") && t.tok(i-1).is("SELECT") && t.tok(i+1).kind == tkNumber:
			// SELECT TOP n … -> SELECT … LIMIT n (outermost select only).
			if depth == 0 {
				t.skip[i], t.skip[i+1] = true, true
				t.suffix[to-1] = append(t.suffix[to-1], "LIMIT "+t.tok(i+1).text)
			}
		case tk.isOp(":") && i > from && isName(t.tok(i+1)):
			// Variant path v:a.b[0] -> json_extract(v, '$.a.b[0]')
			s := t.primaryStart(i - 1)
			path := "$." + identName2(t.tok(i+1))
			j := i + 2
			for {
				if t.tok(j).isOp(".") && isName(t.tok(j+1)) {
					path += "." + identName2(t.tok(j+1))
					j += 2
				} else if t.tok(j).isOp("[") && t.tok(j+1).kind == tkNumber && t.tok(j+2).isOp("]") {
					path += "[" + t.tok(j+1).text + "]"
					j += 3
				} else {
					break
				}
			}
			t.prefix[s] = append([]string{"json_extract("}, t.prefix[s]...)
			t.replace[i] = ", " + quoteString(path) + ")"
			for k := i + 1; k < j; k++ {
				t.skip[k] = true
			}
		case tk.is("FLATTEN") && t.tok(i+1).isOp("("):
			if m := t.matchParen(i + 1); m > 0 {
				k := m + 1
				if t.tok(k).isOp(")") { // TABLE(FLATTEN(…)) alias
					k++
				}
				if t.tok(k).is("AS") {
					k++
				}
				if isName(t.tok(k)) && !reserved[t.tok(k).upper()] {
					t.flattens[identName(t.tok(k))] = true
				}
			}
		case tk.is("ILIKE") && i > from:
			// a [NOT] ILIKE b -> lower(a) [NOT] LIKE lower(b)
			left := i - 1
			not := t.tok(left).is("NOT")
			if not {
				left--
			}
			if left < from {
				break
			}
			s := t.primaryStart(left)
			e := t.primaryEnd(i + 1)
			t.prefix[s] = append(t.prefix[s], "lower(")
			if not {
				t.skip[i-1] = true
				t.replace[i] = ") NOT LIKE lower("
			} else {
				t.replace[i] = ") LIKE lower("
			}
			t.suffix[e] = append(t.suffix[e], ")")
		case tk.isOp("/"):
			if i+1 < to {
				e := t.primaryEnd(i + 1)
				t.prefix[i+1] = append(t.prefix[i+1], "sg_div(")
				t.suffix[e] = append(t.suffix[e], ")")
			}
		case tk.is("WITH") || (tk.isOp(",") && depth == 0 && len(t.ctes) > 0 && !t.itemsFound):
			// WITH name [(cols)] AS (
			if isName(t.tok(i+1)) && (t.tok(i+2).is("AS") || t.tok(i+2).isOp("(")) {
				t.ctes[identName(t.tok(i+1))] = true
			} else if t.tok(i+1).is("RECURSIVE") && isName(t.tok(i+2)) {
				t.ctes[identName(t.tok(i+2))] = true
			}
		case tk.is("SELECT"):
			if depth == 0 && !t.itemsFound {
				t.itemsFound = true
				selectAt = i
			} else {
				nested = append(nested, i)
			}
		}
	}
	// Nested select lists get Snowflake column names too (for SELECT * over
	// subqueries), but only the outermost one is recorded.
	for _, i := range nested {
		saved := t.items
		t.selectList(i+1, to)
		t.items = saved
	}
	if selectAt >= 0 {
		t.selectList(selectAt+1, to)
		t.groupByAll(selectAt, to)
	}
}

// aggregates are the aggregate functions GROUP BY ALL leaves out.
var aggregates = map[string]bool{
	"COUNT": true, "SUM": true, "AVG": true, "MIN": true, "MAX": true, "LISTAGG": true, "ARRAY_AGG": true,
	"MEDIAN": true, "STDDEV": true, "STDDEV_SAMP": true, "VARIANCE": true, "VAR_SAMP": true, "ANY_VALUE": true,
	"COUNT_IF": true, "GROUP_CONCAT": true, "BOOLAND_AGG": true, "BOOLOR_AGG": true, "OBJECT_AGG": true,
	"APPROX_COUNT_DISTINCT": true, "HLL": true, "MODE": true,
}

// groupByAll rewrites the outermost GROUP BY ALL into the positions of the
// select items that hold no aggregate.
func (t *translator) groupByAll(selectAt, to int) {
	depth := 0
	for i := selectAt; i+2 < to; i++ {
		tk := t.toks[i]
		switch {
		case tk.isOp("("):
			depth++
		case tk.isOp(")"):
			depth--
		case depth == 0 && tk.is("GROUP") && t.toks[i+1].is("BY") && t.toks[i+2].is("ALL"):
			var pos []string
			for k, it := range t.items {
				agg := false
				for j := it.start; j < it.end; j++ {
					if aggregates[t.toks[j].upper()] && t.tok(j+1).isOp("(") {
						agg = true
						break
					}
				}
				if !agg && !it.star {
					pos = append(pos, strconv.Itoa(k+1))
				}
			}
			if len(pos) == 0 {
				t.skip[i], t.skip[i+1], t.skip[i+2] = true, true, true
			} else {
				t.replace[i+2] = strings.Join(pos, ", ")
			}
			return
		}
	}
}

// identName is the Snowflake name of an identifier token: upper-case when
// unquoted, as written when quoted.
func identName(tk token) string {
	if tk.kind == tkQuoted {
		return tk.val
	}
	return strings.ToUpper(tk.text)
}

// identName2 is a variant path element: as written (paths are
// case-sensitive), without quotes.
func identName2(tk token) string {
	if tk.kind == tkQuoted {
		return tk.val
	}
	return tk.text
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func quoteString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// selectList records the items of the select list starting at i and
// arranges for each to carry the column name Snowflake would report.
func (t *translator) selectList(i, to int) {
	for i < to && (t.toks[i].is("DISTINCT") || t.toks[i].is("ALL")) {
		i++
	}
	if i < to && t.toks[i].is("TOP") && i+1 < to && t.toks[i+1].kind == tkNumber {
		i += 2
	}
	depth := 0
	start := i
	j := i
	endItem := func(end int) {
		if end <= start {
			return
		}
		t.addItem(start, end)
	}
	for ; j < to; j++ {
		tk := t.toks[j]
		switch {
		case tk.isOp("("):
			depth++
		case tk.isOp(")"):
			depth--
			if depth < 0 {
				endItem(j)
				return
			}
		case depth == 0 && tk.isOp(","):
			endItem(j)
			start = j + 1
		case depth == 0 && (tk.kind == tkWord && selectEnd[tk.upper()] || tk.isOp(";")):
			endItem(j)
			return
		}
	}
	endItem(j)
}

// addItem handles one select item spanning tokens [start, end).
func (t *translator) addItem(start, end int) {
	n := end - start
	last := t.toks[end-1]
	if last.isOp("*") && (n == 1 || t.toks[end-2].isOp(".")) {
		t.items = append(t.items, selectItem{start: start, end: end, star: true})
		return
	}
	if n >= 2 && isName(last) && (last.kind == tkQuoted || !reserved[last.upper()]) {
		prev := t.toks[end-2]
		alias, exprEnd := false, end-1
		switch {
		case prev.is("AS"):
			alias, exprEnd = n >= 3, end-2
		case prev.kind == tkOp:
			alias = prev.isOp(")") || prev.isOp("]")
		case prev.kind == tkWord:
			alias = !reserved[prev.upper()] || prev.is("END") || prev.is("NULL") || prev.is("TRUE") || prev.is("FALSE")
		default:
			alias = true
		}
		if alias {
			name := identName(last)
			t.replace[end-1] = quoteIdent(name)
			if !prev.is("AS") {
				t.replace[end-1] = "AS " + quoteIdent(name)
			}
			t.items = append(t.items, selectItem{start: start, end: exprEnd, name: name})
			return
		}
	}
	name := t.exprName(start, end)
	t.suffix[end-1] = append(t.suffix[end-1], "AS "+quoteIdent(name))
	t.items = append(t.items, selectItem{start: start, end: end, name: name})
}

// exprName is the column name Snowflake gives an unaliased expression: the
// column name for a column reference, else the text upper-cased outside
// quotes.
func (t *translator) exprName(start, end int) string {
	if t.chainStart(end-1) == start && isName(t.toks[end-1]) {
		return identName(t.toks[end-1])
	}
	var b strings.Builder
	for i := start; i < end; i++ {
		tk := t.toks[i]
		if i > start {
			prev := t.toks[i-1]
			if prev.pos+len(prev.text) < tk.pos {
				b.WriteByte(' ')
			}
		}
		// Snowflake upper-cases the whole expression text, string literals
		// included; only quoted identifiers keep their case.
		if tk.kind == tkQuoted {
			b.WriteString(tk.text)
		} else {
			b.WriteString(strings.ToUpper(tk.text))
		}
	}
	return b.String()
}

func (t *translator) fail(tk token) {
	if t.err == nil {
		t.err = syntaxErrorAt(tk)
	}
}

// translate rewrites tokens [from, to) into SQLite SQL.
func (t *translator) translate(from, to int) string {
	if !t.noPrepass {
		t.prepass(from, to)
	}
	var b strings.Builder
	depth := 0
	inFrom := map[int]bool{}
	expectTable := false
	tableCtx := "" // FROM, INTO, UPDATE
	write := func(s string) {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(s)
	}
	for i := from; i < to; i++ {
		if t.err != nil {
			return ""
		}
		tk := t.toks[i]
		for _, p := range t.prefix[i] {
			write(p)
		}
		if tk.isOp("(") {
			depth++
			inFrom[depth] = false
		} else if tk.isOp(")") {
			inFrom[depth] = false
			depth--
		}
		if t.skip[i] {
			for _, s := range t.suffix[i] {
				write(s)
			}
			continue
		}
		if r, ok := t.replace[i]; ok {
			write(r)
			for _, s := range t.suffix[i] {
				write(s)
			}
			continue
		}
		end := i
		switch tk.kind {
		case tkString:
			write(quoteString(tk.val))
		case tkQuoted:
			if expectTable {
				end = t.emitTable(i, tableCtx, write)
				expectTable = false
			} else if t.tok(i + 1).isOp("(") {
				end = t.emitFunction(i, write)
			} else {
				write(quoteIdent(tk.val))
			}
		case tkNumber:
			write(tk.text)
		case tkParam:
			write(t.param(tk))
		case tkOp:
			switch tk.text {
			case "(":
				expectTable = false
				write("(")
			case ",":
				write(",")
				if inFrom[depth] {
					expectTable, tableCtx = true, "FROM"
				}
			case "=>", "->":
				t.fail(tk)
			case ";":
				// A trailing semicolon is dropped.
			default:
				write(tk.text)
			}
		case tkWord:
			u := tk.upper()
			switch {
			case expectTable && u == "TABLE" && t.tok(i+1).isOp("("):
				end = t.emitTableFunction(i, write)
				expectTable = false
			case expectTable && u == "LATERAL":
				// SQLite table-valued functions are lateral already.
			case expectTable && !reserved[u]:
				end = t.emitTable(i, tableCtx, write)
				expectTable = false
			case t.tok(i+1).isOp("(") && (!reserved[u] || u == "LEFT" || u == "RIGHT") && u != "TABLE" && u != "VALUES":
				end = t.emitFunction(i, write)
			default:
				end = t.emitWord(i, write)
				switch {
				case u == "FROM":
					inFrom[depth] = true
					expectTable, tableCtx = true, "FROM"
				case u == "JOIN":
					expectTable, tableCtx = true, "FROM"
				case u == "INTO":
					expectTable, tableCtx = true, "INTO"
				case u == "UPDATE" && i == from:
					expectTable, tableCtx = true, "UPDATE"
				case clauseWords[u]:
					inFrom[depth] = false
					expectTable = false
				}
			}
		}
		for k := i; k <= end; k++ {
			for _, s := range t.suffix[k] {
				write(s)
			}
		}
		i = end
	}
	return b.String()
}

// param renders a bind placeholder as a numbered SQLite parameter.
func (t *translator) param(tk token) string {
	if tk.val == "" { // positional ?
		t.nextParam++
		key := strconv.Itoa(t.nextParam)
		t.params = append(t.params, key)
		return "?" + strconv.Itoa(len(t.params))
	}
	if n, ok := t.paramSeen[tk.val]; ok {
		return "?" + strconv.Itoa(n)
	}
	t.params = append(t.params, tk.val)
	t.paramSeen[tk.val] = len(t.params)
	return "?" + strconv.Itoa(len(t.params))
}

// emitWord writes a keyword or column identifier.
func (t *translator) emitWord(i int, write func(string)) int {
	tk := t.toks[i]
	switch tk.upper() {
	case "ILIKE":
		write("LIKE")
	case "RLIKE", "REGEXP":
		write("REGEXP")
	case "MINUS":
		write("EXCEPT")
	case "CURRENT_TIMESTAMP", "LOCALTIMESTAMP", "SYSTIMESTAMP":
		write(quoteString(t.now().Format(layoutTZ)))
	case "CURRENT_DATE":
		write(quoteString(t.now().Format(layoutDate)))
	case "CURRENT_TIME", "LOCALTIME":
		write(quoteString(t.now().Format(layoutTime)))
	case "CURRENT_USER", "CURRENT_ROLE", "CURRENT_WAREHOUSE", "CURRENT_DATABASE", "CURRENT_SCHEMA":
		write(t.sessionLiteral(tk.upper()))
	case "INDEX", "THIS", "SEQ":
		// FLATTEN's INDEX is json_each's key; THIS is the input.
		if i >= 2 && t.tok(i-1).isOp(".") && t.flattens[identName(t.tok(i-2))] {
			switch tk.upper() {
			case "INDEX":
				write("key")
			case "THIS":
				write("parent")
			default:
				write("id")
			}
			return i
		}
		write(tk.text)
	default:
		write(tk.text)
	}
	return i
}

func (t *translator) now() time.Time { return time.Now().UTC() }

func (t *translator) sessionLiteral(name string) string {
	var v string
	switch name {
	case "CURRENT_USER":
		v = t.s.User
	case "CURRENT_ROLE":
		v = t.s.Role
	case "CURRENT_WAREHOUSE":
		v = t.s.Warehouse
	case "CURRENT_DATABASE":
		v = t.s.Database
	case "CURRENT_SCHEMA":
		v = t.s.Schema
	}
	if v == "" {
		return "NULL"
	}
	return quoteString(v)
}

// castFuncs are conversion functions rewritten to sg_cast with a type.
var castFuncs = map[string]string{
	"TO_VARCHAR": "VARCHAR", "TO_CHAR": "VARCHAR", "TO_DATE": "DATE", "DATE": "DATE",
	"TO_TIMESTAMP": "TIMESTAMP_NTZ", "TO_TIMESTAMP_NTZ": "TIMESTAMP_NTZ", "TO_TIMESTAMP_LTZ": "TIMESTAMP_LTZ",
	"TO_TIMESTAMP_TZ": "TIMESTAMP_TZ", "TO_TIME": "TIME", "TIME": "TIME", "TO_NUMBER": "NUMBER",
	"TO_DECIMAL": "NUMBER", "TO_NUMERIC": "NUMBER", "TO_DOUBLE": "FLOAT", "TO_BOOLEAN": "BOOLEAN",
	"PARSE_JSON": "VARIANT", "TO_VARIANT": "VARIANT", "TO_BINARY": "BINARY", "TO_OBJECT": "OBJECT", "TO_ARRAY": "ARRAY",
}

// tryCastFuncs are the TRY_ conversion functions: NULL instead of an error.
var tryCastFuncs = map[string]string{
	"TRY_TO_NUMBER": "NUMBER", "TRY_TO_DECIMAL": "NUMBER", "TRY_TO_NUMERIC": "NUMBER", "TRY_TO_DOUBLE": "FLOAT",
	"TRY_TO_DATE": "DATE", "TRY_TO_TIMESTAMP": "TIMESTAMP_NTZ", "TRY_TO_TIMESTAMP_NTZ": "TIMESTAMP_NTZ",
	"TRY_TO_TIMESTAMP_LTZ": "TIMESTAMP_LTZ", "TRY_TO_TIMESTAMP_TZ": "TIMESTAMP_TZ", "TRY_TO_TIME": "TIME",
	"TRY_TO_BOOLEAN": "BOOLEAN", "TRY_PARSE_JSON": "VARIANT", "TRY_TO_BINARY": "BINARY",
}

// renamedFuncs are Snowflake functions SQLite has under another name.
var renamedFuncs = map[string]string{
	"IFF": "iif", "NVL": "ifnull", "LEN": "length", "CHAR_LENGTH": "length", "CHARACTER_LENGTH": "length",
	"SUBSTRING": "substr", "UNIFORM": "sg_uniform", "RANDSTR": "sg_randstr", "ARRAY_CONSTRUCT": "json_array",
	"OBJECT_CONSTRUCT": "json_object", "DATEADD": "sg_dateadd", "TIMEADD": "sg_dateadd", "TIMESTAMPADD": "sg_dateadd",
	"DATEDIFF": "sg_datediff", "TIMEDIFF": "sg_datediff", "TIMESTAMPDIFF": "sg_datediff", "SQUARE": "sg_square",
	"CEIL": "ceil", "FLOOR": "floor", "POW": "pow", "POWER": "pow", "LN": "ln", "LOG": "log",
	"STDDEV": "sg_stddev", "ANY_VALUE": "min", "ARBITRARY": "min", "LISTAGG": "group_concat", "ARRAY_AGG": "json_group_array",
	"DATE_TRUNC": "sg_date_trunc", "DATE_PART": "sg_date_part", "CONTAINS": "sg_contains", "STARTSWITH": "sg_startswith",
	"ENDSWITH": "sg_endswith", "SPLIT_PART": "sg_split_part", "LPAD": "sg_lpad", "RPAD": "sg_rpad", "LEFT": "sg_left",
	"RIGHT": "sg_right", "HASH": "sg_hash", "ARRAY_SIZE": "json_array_length", "REGEXP_LIKE": "sg_regexp_like",
	"RLIKE": "sg_regexp_like", "REGEXP_REPLACE": "sg_regexp_replace", "REGEXP_SUBSTR": "sg_regexp_substr", "DECODE": "sg_decode",
	"GREATEST": "max", "LEAST": "min", "NVL2": "sg_nvl2", "DIV0": "sg_div0", "EQUAL_NULL": "sg_equal_null", "MEDIAN": "sg_median", "STDDEV_SAMP": "sg_stddev", "VARIANCE": "sg_variance",
	"VAR_SAMP": "sg_variance", "TRUNCATE": "sg_trunc", "TRUNC": "sg_trunc",
}

// partFuncs are YEAR(x) and friends, rewritten to sg_date_part('PART', x).
var partFuncs = map[string]string{
	"YEAR": "YEAR", "MONTH": "MONTH", "DAY": "DAY", "DAYOFMONTH": "DAY", "HOUR": "HOUR", "MINUTE": "MINUTE",
	"SECOND": "SECOND", "QUARTER": "QUARTER", "DAYOFWEEK": "DAYOFWEEK", "DAYOFYEAR": "DAYOFYEAR", "WEEK": "WEEK",
	"WEEKOFYEAR": "WEEK",
}

// emitFunction writes a function call starting at the name at i and returns
// the index of the last token it consumed.
func (t *translator) emitFunction(i int, write func(string)) int {
	tk := t.toks[i]
	u := identName(tk)
	if tk.kind == tkQuoted {
		write(quoteIdent(tk.val))
		return i
	}
	m := t.matchParen(i + 1)
	if m < 0 {
		t.fail(token{kind: tkEOF, line: tk.line, col: tk.col})
		return i
	}
	switch u {
	case "SEQ1", "SEQ2", "SEQ4", "SEQ8":
		write("sg_seq")
		return m
	case "RANDOM":
		if m == i+2 {
			write("random()")
			return m
		}
		write("sg_random")
		return i
	case "SYSTEM$WAIT":
		if m == i+2 {
			write("sg_wait(" + strconv.FormatInt(t.execID, 10) + ")")
			return m
		}
		write("sg_wait")
		t.replace[i+1] = "(" + strconv.FormatInt(t.execID, 10) + ","
		return i
	case "CURRENT_USER", "CURRENT_ROLE", "CURRENT_WAREHOUSE", "CURRENT_DATABASE", "CURRENT_SCHEMA":
		write(t.sessionLiteral(u))
		return m
	case "CURRENT_TIMESTAMP", "LOCALTIMESTAMP", "SYSTIMESTAMP", "GETDATE":
		write(quoteString(t.now().Format(layoutTZ)))
		return m
	case "SYSDATE":
		write(quoteString(t.now().Format(layoutNTZ)))
		return m
	case "CURRENT_DATE":
		write(quoteString(t.now().Format(layoutDate)))
		return m
	case "CURRENT_TIME", "LOCALTIME":
		write(quoteString(t.now().Format(layoutTime)))
		return m
	case "CURRENT_SESSION":
		write(quoteString("1"))
		return m
	case "CURRENT_VERSION":
		write(quoteString("9.0.0"))
		return m
	case "CAST", "TRY_CAST":
		// CAST(expr AS type) -> sg_cast(expr, 'DECL')
		depth := 0
		for k := i + 2; k < m; k++ {
			switch {
			case t.toks[k].isOp("("):
				depth++
			case t.toks[k].isOp(")"):
				depth--
			case depth == 0 && t.toks[k].is("AS"):
				typ, j, ok := parseTypeTokens(t.toks, k+1)
				if !ok || j != m {
					t.fail(t.tok(k + 1))
					return m
				}
				if u == "CAST" {
					write("sg_cast")
				} else {
					write("sg_try_cast")
				}
				t.replace[k] = ", '" + typ.decl() + "'"
				for x := k + 1; x < m; x++ {
					t.skip[x] = true
				}
				return i
			}
		}
		t.fail(t.tok(m))
		return m
	case "EXTRACT":
		// EXTRACT(part FROM value) -> sg_date_part('PART', value)
		if t.tok(i+2).kind == tkWord && t.tok(i+3).is("FROM") {
			write("sg_date_part")
			t.replace[i+2] = quoteString(t.tok(i + 2).upper())
			t.replace[i+3] = ","
			return i
		}
	case "DATEADD", "TIMEADD", "TIMESTAMPADD", "DATEDIFF", "TIMEDIFF", "TIMESTAMPDIFF", "DATE_PART", "DATE_TRUNC":
		if t.tok(i+2).kind == tkWord {
			t.replace[i+2] = quoteString(t.tok(i + 2).upper())
		}
	}
	if typ, ok := tryCastFuncs[u]; ok {
		write("sg_try_cast")
		t.prefix[m] = append(t.prefix[m], ", '"+typ+"'")
		return i
	}
	switch u {
	case "ZEROIFNULL":
		write("ifnull")
		t.prefix[m] = append(t.prefix[m], ", 0")
		return i
	case "NULLIFZERO":
		write("nullif")
		t.prefix[m] = append(t.prefix[m], ", 0")
		return i
	case "LISTAGG", "ARRAY_AGG":
		// f(x, sep) WITHIN GROUP (ORDER BY …) -> f(x, sep ORDER BY …)
		if t.tok(m+1).is("WITHIN") && t.tok(m+2).is("GROUP") && t.tok(m+3).isOp("(") {
			if m2 := t.matchParen(m + 3); m2 > 0 {
				for k := m + 4; k < m2; k++ {
					t.prefix[m] = append(t.prefix[m], t.toks[k].text)
				}
				for k := m + 1; k <= m2; k++ {
					t.skip[k] = true
				}
			}
		}
	}
	if p, ok := partFuncs[u]; ok {
		write("sg_date_part")
		t.replace[i+1] = "(" + quoteString(p) + ","
		return i
	}
	if typ, ok := castFuncs[u]; ok {
		write("sg_cast")
		t.prefix[m] = append(t.prefix[m], ", '"+typ+"'")
		return i
	}
	if r, ok := renamedFuncs[u]; ok {
		write(r)
		return i
	}
	write(tk.text)
	return i
}

// emitTableFunction handles TABLE(GENERATOR(ROWCOUNT => n)) at i.
func (t *translator) emitTableFunction(i int, write func(string)) int {
	m := t.matchParen(i + 1)
	if m > 0 && t.tok(i+2).is("FLATTEN") && t.tok(i+3).isOp("(") {
		if end := t.emitFlatten(i+2, write); end+1 != m {
			t.fail(t.tok(end + 1))
		}
		return m
	}
	if m < 0 || !t.tok(i+2).is("GENERATOR") || !t.tok(i+3).isOp("(") {
		t.fail(t.tok(i + 2))
		return i
	}
	gm := t.matchParen(i + 3)
	if gm < 0 || gm > m {
		t.fail(t.tok(i + 3))
		return i
	}
	// Arguments: ROWCOUNT => expr, TIMELIMIT => expr (positional allowed).
	var rowcount string
	k := i + 4
	for k < gm {
		argStart := k
		name := ""
		if t.tok(k).kind == tkWord && t.tok(k+1).isOp("=>") {
			name = t.tok(k).upper()
			argStart = k + 2
		}
		depth := 0
		j := argStart
		for ; j < gm; j++ {
			if t.toks[j].isOp("(") {
				depth++
			} else if t.toks[j].isOp(")") {
				depth--
			} else if depth == 0 && t.toks[j].isOp(",") {
				break
			}
		}
		if name == "ROWCOUNT" || (name == "" && rowcount == "") {
			rowcount = t.subTranslate(argStart, j)
			if t.err != nil {
				return m
			}
		}
		k = j + 1
	}
	if rowcount == "" {
		t.err = compileError(codeUnsupported, "GENERATOR requires ROWCOUNT (TIMELIMIT alone is not supported by the emulator)")
		return m
	}
	write("(WITH RECURSIVE sg_g(sg_seq) AS (SELECT 0 WHERE 0 < (" + rowcount + ") UNION ALL SELECT sg_seq+1 FROM sg_g WHERE sg_seq+1 < (" + rowcount + ")) SELECT sg_seq FROM sg_g)")
	if !t.hasAlias(m + 1) {
		write("AS sg_generator")
	}
	return m
}

// hasAlias reports whether token i starts a table alias.
func (t *translator) hasAlias(i int) bool {
	tk := t.tok(i)
	if tk.is("AS") {
		return true
	}
	return tk.kind == tkQuoted || (tk.kind == tkWord && !reserved[tk.upper()] && !clauseWords[tk.upper()] &&
		!tk.is("SAMPLE") && !tk.is("AT") && !tk.is("BEFORE") && !tk.is("CHANGES") && !tk.is("MATCH_CONDITION"))
}

// emitTable resolves the table name at i and writes its SQLite name.
func (t *translator) emitTable(i int, ctx string, write func(string)) int {
	var parts []token
	j := i
	parts = append(parts, t.toks[j])
	for t.tok(j+1).isOp(".") && isName(t.tok(j+2)) {
		parts = append(parts, t.toks[j+2])
		j += 2
	}
	if ctx != "INTO" && j == i && t.toks[i].is("FLATTEN") && t.tok(i+1).isOp("(") {
		return t.emitFlatten(i, write)
	}
	if ctx != "INTO" && t.tok(j+1).isOp("(") {
		// Another function in table position: leave it alone.
		write(t.toks[i].text)
		return i
	}
	if len(parts) == 1 && t.ctes[identName(parts[0])] {
		write(quoteIdent(identName(parts[0])))
		return j
	}
	names := make([]string, len(parts))
	for k, p := range parts {
		names[k] = identName(p)
	}
	ref, err := t.s.resolve(names)
	if err != nil {
		t.err = err
		return j
	}
	if ref.Schema == "INFORMATION_SCHEMA" && len(parts) >= 2 {
		if view, ok := informationSchema(ref.DB, ref.Name); ok {
			write("(" + view + ")")
			if !t.hasAlias(j + 1) {
				write("AS " + quoteIdent(ref.Name))
			}
			return j
		}
	}
	written := t.src[parts[0].pos : parts[len(parts)-1].pos+len(parts[len(parts)-1].text)]
	t.tableNames[ref.sqlite()] = strings.ToUpper(written)
	if len(parts) == 1 && parts[0].kind == tkQuoted {
		t.tableNames[ref.sqlite()] = parts[0].val
	}
	write(quoteIdent(ref.sqlite()))
	if ctx != "INTO" && !t.hasAlias(j+1) {
		write("AS " + quoteIdent(ref.Name))
	}
	return j
}

// informationSchema returns the SQLite query behind the INFORMATION_SCHEMA
// view name of database db.
func informationSchema(db, name string) (string, bool) {
	dbLit := quoteString(db)
	switch name {
	case "TABLES":
		return `SELECT sg_name_part(name, 0) AS "TABLE_CATALOG", sg_name_part(name, 1) AS "TABLE_SCHEMA", ` +
			`sg_name_part(name, 2) AS "TABLE_NAME", CASE type WHEN 'view' THEN 'VIEW' ELSE 'BASE TABLE' END AS "TABLE_TYPE", ` +
			`NULL AS "ROW_COUNT", NULL AS "COMMENT" FROM sqlite_master WHERE type IN ('table','view') ` +
			`AND sg_name_part(name, 0) = ` + dbLit, true
	case "COLUMNS":
		return `SELECT sg_name_part(m.name, 0) AS "TABLE_CATALOG", sg_name_part(m.name, 1) AS "TABLE_SCHEMA", ` +
			`sg_name_part(m.name, 2) AS "TABLE_NAME", p.name AS "COLUMN_NAME", p.cid + 1 AS "ORDINAL_POSITION", ` +
			`p.dflt_value AS "COLUMN_DEFAULT", CASE p."notnull" WHEN 0 THEN 'YES' ELSE 'NO' END AS "IS_NULLABLE", ` +
			`sg_data_type(p.type) AS "DATA_TYPE", p.type AS "COLUMN_TYPE" ` +
			`FROM sqlite_master m, pragma_table_info(m.name) p WHERE m.type IN ('table','view') ` +
			`AND sg_name_part(m.name, 0) = ` + dbLit, true
	case "SCHEMATA":
		return `SELECT db AS "CATALOG_NAME", name AS "SCHEMA_NAME", created AS "CREATED" FROM sg_schemas WHERE db = ` + dbLit, true
	case "DATABASES":
		return `SELECT name AS "DATABASE_NAME", created AS "CREATED" FROM sg_databases`, true
	}
	return "", false
}

// subTranslate translates tokens [from, to) of the same statement with the
// shared state (already pre-passed).
func (t *translator) subTranslate(from, to int) string {
	sub := &translator{e: t.e, s: t.s, src: t.src, toks: t.toks, execID: t.execID,
		prefix: t.prefix, suffix: t.suffix, replace: t.replace, skip: t.skip,
		paramSeen: t.paramSeen, ctes: t.ctes, tableNames: t.tableNames, itemsFound: true, noPrepass: true,
		params: t.params, nextParam: t.nextParam, flattens: t.flattens}
	out := sub.translate(from, to)
	t.params, t.nextParam = sub.params, sub.nextParam
	if sub.err != nil && t.err == nil {
		t.err = sub.err
	}
	return out
}

// emitFlatten rewrites FLATTEN(INPUT => expr [, PATH => 'p']) at i into
// SQLite's json_each(expr [, '$.p']), whose value and key columns match
// FLATTEN's VALUE and KEY (INDEX is rewritten to key).
func (t *translator) emitFlatten(i int, write func(string)) int {
	m := t.matchParen(i + 1)
	if m < 0 {
		t.fail(t.tok(i + 1))
		return i
	}
	var input, path string
	for _, a := range t.funcArgs(i+2, m) {
		from, name := a[0], ""
		if t.tok(from).kind == tkWord && t.tok(from+1).isOp("=>") {
			name, from = t.tok(from).upper(), from+2
		}
		switch {
		case name == "INPUT" || (name == "" && input == ""):
			input = t.subTranslate(from, a[1])
		case name == "PATH" && t.tok(from).kind == tkString:
			path = "$." + t.tok(from).val
		}
	}
	if input == "" {
		t.fail(t.tok(m))
		return m
	}
	if path != "" {
		write("json_each(" + input + ", " + quoteString(path) + ")")
	} else {
		write("json_each(" + input + ")")
	}
	k := m + 1
	if t.tok(k).is("AS") {
		k++
	}
	if t.hasAlias(m+1) && isName(t.tok(k)) {
		t.flattens[identName(t.tok(k))] = true
	}
	return m
}
