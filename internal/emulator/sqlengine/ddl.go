package sqlengine

import (
	"context"
	"database/sql"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// The catalog of databases and schemas; tables are SQLite tables named
// "DB.SCHEMA.NAME".
func (e *Engine) initCatalog(ctx context.Context) error {
	stmts := []string{
		`CREATE TABLE IF NOT EXISTS sg_databases(name TEXT PRIMARY KEY, created TEXT)`,
		`CREATE TABLE IF NOT EXISTS sg_schemas(db TEXT, name TEXT, created TEXT, PRIMARY KEY(db, name))`,
	}
	for _, s := range stmts {
		if _, err := e.db.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("sqlengine: init catalog: %w", err)
		}
	}
	return e.ensureSchema(ctx, e.db, DefaultDatabase, DefaultSchema)
}

type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (e *Engine) ensureSchema(ctx context.Context, db execer, dbName, schema string) error {
	now := time.Now().UTC().Format(layoutTZ)
	if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO sg_databases VALUES (?, ?)`, dbName, now); err != nil {
		return fmt.Errorf("sqlengine: register database %s: %w", dbName, err)
	}
	if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO sg_schemas VALUES (?, 'PUBLIC', ?)`, dbName, now); err != nil {
		return fmt.Errorf("sqlengine: register schema %s.PUBLIC: %w", dbName, err)
	}
	if _, err := db.ExecContext(ctx, `INSERT OR IGNORE INTO sg_schemas VALUES (?, ?, ?)`, dbName, schema, now); err != nil {
		return fmt.Errorf("sqlengine: register schema %s.%s: %w", dbName, schema, err)
	}
	return nil
}

func (e *Engine) exists(ctx context.Context, db execer, q string, args ...any) (bool, error) {
	var n int
	if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return false, fmt.Errorf("sqlengine: catalog lookup: %w", err)
	}
	return n > 0, nil
}

// objectKind returns "table", "view" or "" for a reference.
func (e *Engine) objectKind(ctx context.Context, db execer, ref tableRef) (string, error) {
	var kind string
	err := db.QueryRowContext(ctx, `SELECT type FROM sqlite_master WHERE type IN ('table','view') AND name = ?`, ref.sqlite()).Scan(&kind)
	if err == sql.ErrNoRows {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("sqlengine: catalog lookup: %w", err)
	}
	return kind, nil
}

// skipWords advances past any of the given optional words at i.
func (x *execution) skipWords(i int, words ...string) int {
	for {
		matched := false
		for _, w := range words {
			if x.tok(i).is(w) {
				i++
				matched = true
			}
		}
		if !matched {
			return i
		}
	}
}

// ifClause matches "IF [NOT] EXISTS" at i.
func (x *execution) ifClause(i int, not bool) (bool, int) {
	if !x.tok(i).is("IF") {
		return false, i
	}
	j := i + 1
	if not {
		if !x.tok(j).is("NOT") {
			return false, i
		}
		j++
	}
	if !x.tok(j).is("EXISTS") {
		return false, i
	}
	return true, j + 1
}

// create runs CREATE DATABASE/SCHEMA/TABLE/VIEW.
func (x *execution) create() (*Result, error) {
	i := 1
	orReplace := false
	if x.tok(1).is("OR") && x.tok(2).is("REPLACE") {
		orReplace = true
		i = 3
	}
	i = x.skipWords(i, "LOCAL", "GLOBAL", "TEMP", "TEMPORARY", "VOLATILE", "TRANSIENT", "SECURE", "RECURSIVE", "MATERIALIZED")
	kind := x.tok(i).upper()
	i++
	ifNotExists, i := x.ifClause(i, true)
	x.e.ddl.Lock()
	defer x.e.ddl.Unlock()
	switch kind {
	case "DATABASE":
		if !isName(x.tok(i)) {
			return nil, syntaxErrorAt(x.tok(i))
		}
		name := identName(x.tok(i))
		found, err := x.databaseExists(name)
		if err != nil {
			return nil, err
		}
		if found && ifNotExists {
			return statusResult(snowflake.StatementDDL, name+" already exists, statement succeeded."), nil
		}
		if found && !orReplace {
			return nil, compileError(codeAlreadyExists, fmt.Sprintf("Object '%s' already exists.", name))
		}
		if found {
			if err := x.dropObjects(name + ".%"); err != nil {
				return nil, err
			}
		}
		if err := x.e.ensureSchema(x.ctx, x.e.db, name, DefaultSchema); err != nil {
			return nil, err
		}
		x.s.Database, x.s.Schema = name, DefaultSchema
		return statusResult(snowflake.StatementDDL, fmt.Sprintf("Database %s successfully created.", name)), nil
	case "SCHEMA":
		ref, _, err := x.schemaName(i)
		if err != nil {
			return nil, err
		}
		found, err := x.schemaExists(ref.DB, ref.Schema)
		if err != nil {
			return nil, err
		}
		if found && ifNotExists {
			return statusResult(snowflake.StatementDDL, ref.Schema+" already exists, statement succeeded."), nil
		}
		if found && !orReplace && ref.Schema != DefaultSchema {
			return nil, compileError(codeAlreadyExists, fmt.Sprintf("Object '%s' already exists.", ref.Schema))
		}
		if found && orReplace {
			if err := x.dropObjects(ref.DB + "." + ref.Schema + ".%"); err != nil {
				return nil, err
			}
		}
		if err := x.e.ensureSchema(x.ctx, x.e.db, ref.DB, ref.Schema); err != nil {
			return nil, err
		}
		x.s.Database, x.s.Schema = ref.DB, ref.Schema
		return statusResult(snowflake.StatementDDL, fmt.Sprintf("Schema %s successfully created.", ref.Schema)), nil
	case "TABLE":
		return x.createTable(i, orReplace, ifNotExists)
	case "VIEW":
		return x.createView(i, orReplace, ifNotExists)
	case "SEQUENCE", "STAGE", "FILE", "WAREHOUSE", "ROLE", "USER", "FUNCTION", "PROCEDURE", "STREAM", "TASK":
		// Accepted and ignored: the emulator has no such objects.
		name := ""
		if isName(x.tok(i)) {
			name = identName(x.tok(i))
		}
		return statusResult(snowflake.StatementDDL, fmt.Sprintf("%s %s successfully created.", titleCase(kind), name)), nil
	}
	return nil, syntaxErrorAt(x.tok(i - 1))
}

func titleCase(s string) string {
	if s == "" {
		return s
	}
	return s[:1] + strings.ToLower(s[1:])
}

// schemaName reads [db.]schema at i.
func (x *execution) schemaName(i int) (tableRef, int, error) {
	if !isName(x.tok(i)) {
		return tableRef{}, i, syntaxErrorAt(x.tok(i))
	}
	if x.tok(i+1).isOp(".") && isName(x.tok(i+2)) {
		return tableRef{DB: identName(x.tok(i)), Schema: identName(x.tok(i + 2))}, i + 3, nil
	}
	return tableRef{DB: x.s.currentDB(), Schema: identName(x.tok(i))}, i + 1, nil
}

// dropObjects drops every table and view whose SQLite name matches the
// LIKE pattern, and the catalog entries under it.
func (x *execution) dropObjects(pattern string) error {
	rows, err := x.e.db.QueryContext(x.ctx, `SELECT type, name FROM sqlite_master WHERE type IN ('table','view') AND name LIKE ? ESCAPE '\'`, pattern)
	if err != nil {
		return fmt.Errorf("sqlengine: list objects: %w", err)
	}
	var objs [][2]string
	for rows.Next() {
		var k, n string
		if err := rows.Scan(&k, &n); err != nil {
			rows.Close()
			return fmt.Errorf("sqlengine: list objects: %w", err)
		}
		objs = append(objs, [2]string{k, n})
	}
	rows.Close()
	for _, o := range objs {
		if _, err := x.e.db.ExecContext(x.ctx, "DROP "+strings.ToUpper(o[0])+" IF EXISTS "+quoteIdent(o[1])); err != nil {
			return fmt.Errorf("sqlengine: drop %s: %w", o[1], err)
		}
	}
	return nil
}

// identity is an AUTOINCREMENT/IDENTITY column, filled by a trigger.
type identity struct {
	col        string
	start, inc int64
}

// createTable runs CREATE TABLE name (cols) | AS query | LIKE other.
func (x *execution) createTable(i int, orReplace, ifNotExists bool) (*Result, error) {
	ref, i, err := x.tableName(i)
	if err != nil {
		return nil, err
	}
	kind, err := x.e.objectKind(x.ctx, x.e.db, ref)
	if err != nil {
		return nil, err
	}
	if kind != "" && ifNotExists {
		return statusResult(snowflake.StatementDDL, ref.Name+" already exists, statement succeeded."), nil
	}
	if kind != "" && !orReplace {
		return nil, compileError(codeAlreadyExists, fmt.Sprintf("Object '%s' already exists.", ref.Name))
	}
	var create string
	var fill string
	var fillArgs []any
	switch {
	case x.tok(i).isOp("("):
		tr := newTranslator(x.e, x.s, x.src, x.toks, 0)
		m := tr.matchParen(i)
		if m < 0 {
			return nil, syntaxErrorAt(x.tok(len(x.toks)))
		}
		defs, err := x.columnDefs(i+1, m)
		if err != nil {
			return nil, err
		}
		create = "CREATE TABLE " + quoteIdent(ref.sqlite()) + " (" + strings.Join(defs, ", ") + ")"
		j := m + 1
		// CREATE TABLE t (a int) AS SELECT …
		for j < len(x.toks) && !x.toks[j].is("AS") {
			j++
		}
		if j < len(x.toks) {
			sub, args, err := x.translateQuery(j+1, len(x.toks))
			if err != nil {
				return nil, err
			}
			fill, fillArgs = "INSERT INTO "+quoteIdent(ref.sqlite())+" "+sub, args
		}
	case x.tok(i).is("AS") || x.tok(i).is("COPY") || x.tok(i).is("CLUSTER") || x.tok(i).is("COMMENT"):
		j := i
		for j < len(x.toks) && !x.toks[j].is("AS") {
			j++
		}
		j++
		cols, it, err := x.openQuery(j, len(x.toks))
		if err != nil {
			return nil, err
		}
		it.Close()
		defs := make([]string, len(cols))
		for k, c := range cols {
			defs[k] = quoteIdent(c.Name) + " " + it.types[k].decl()
		}
		create = "CREATE TABLE " + quoteIdent(ref.sqlite()) + " (" + strings.Join(defs, ", ") + ")"
		sub, args, err := x.translateQuery(j, len(x.toks))
		if err != nil {
			return nil, err
		}
		fill, fillArgs = "INSERT INTO "+quoteIdent(ref.sqlite())+" SELECT * FROM ("+sub+")", args
	case x.tok(i).is("LIKE") || x.tok(i).is("CLONE"):
		src, _, err := x.tableName(i + 1)
		if err != nil {
			return nil, err
		}
		var srcSQL string
		err = x.e.db.QueryRowContext(x.ctx, `SELECT sql FROM sqlite_master WHERE type='table' AND name = ?`, src.sqlite()).Scan(&srcSQL)
		if err == sql.ErrNoRows {
			return nil, objectNotFound(x.text(i+1, len(x.toks)))
		}
		if err != nil {
			return nil, fmt.Errorf("sqlengine: read table definition: %w", err)
		}
		open := strings.IndexByte(srcSQL, '(')
		create = "CREATE TABLE " + quoteIdent(ref.sqlite()) + " " + srcSQL[open:]
		if x.tok(i).is("CLONE") {
			fill = "INSERT INTO " + quoteIdent(ref.sqlite()) + " SELECT * FROM " + quoteIdent(src.sqlite())
		}
	default:
		return nil, syntaxErrorAt(x.tok(i))
	}
	err = x.e.inTx(x.ctx, func(tx *sql.Tx) error {
		if err := x.e.ensureSchema(x.ctx, tx, ref.DB, ref.Schema); err != nil {
			return err
		}
		if kind != "" {
			if _, err := tx.ExecContext(x.ctx, "DROP "+strings.ToUpper(kind)+" "+quoteIdent(ref.sqlite())); err != nil {
				return x.wrapErr(err, nil)
			}
		}
		if _, err := tx.ExecContext(x.ctx, create); err != nil {
			return x.wrapErr(err, nil)
		}
		for _, id := range x.identities {
			tbl, col := quoteIdent(ref.sqlite()), quoteIdent(id.col)
			trig := "CREATE TRIGGER " + quoteIdent("sg_identity."+ref.sqlite()+"."+id.col) + " AFTER INSERT ON " + tbl +
				" WHEN NEW." + col + " IS NULL BEGIN UPDATE " + tbl + " SET " + col + " = (SELECT coalesce(max(" + col + ") + " +
				strconv.FormatInt(id.inc, 10) + ", " + strconv.FormatInt(id.start, 10) + ") FROM " + tbl + ") WHERE rowid = NEW.rowid; END"
			if _, err := tx.ExecContext(x.ctx, trig); err != nil {
				return x.wrapErr(err, nil)
			}
		}
		if fill != "" {
			if _, err := tx.ExecContext(x.ctx, fill, fillArgs...); err != nil {
				return x.wrapErr(err, nil)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return statusResult(snowflake.StatementDDL, fmt.Sprintf("Table %s successfully created.", ref.Name)), nil
}

// translateQuery translates the query in tokens [from, to) and its binds.
func (x *execution) translateQuery(from, to int) (string, []any, error) {
	tr := newTranslator(x.e, x.s, x.src, x.toks, nextExecID.Add(1))
	q := tr.translate(from, to)
	if tr.err != nil {
		return "", nil, tr.err
	}
	args, err := x.args(tr, 0)
	if err != nil {
		return "", nil, err
	}
	return q, args, nil
}

// constraintWords start a column constraint after the column type.
var constraintWords = map[string]bool{
	"NOT": true, "NULL": true, "DEFAULT": true, "PRIMARY": true, "UNIQUE": true, "COMMENT": true,
	"COLLATE": true, "AUTOINCREMENT": true, "IDENTITY": true, "REFERENCES": true, "CONSTRAINT": true,
	"CHECK": true, "FOREIGN": true, "WITH": true, "MASKING": true, "TAG": true,
}

// columnDefs translates the column definitions in tokens [from, to).
func (x *execution) columnDefs(from, to int) ([]string, error) {
	tr := newTranslator(x.e, x.s, x.src, x.toks, 0)
	var out []string
	for _, r := range tr.funcArgs(from, to) {
		s, e := r[0], r[1]
		if s >= e {
			return nil, syntaxErrorAt(x.tok(s))
		}
		first := x.toks[s]
		if first.is("CONSTRAINT") || first.is("PRIMARY") || first.is("UNIQUE") || first.is("FOREIGN") || first.is("CHECK") {
			// Table constraints: keep keys, drop foreign keys (their target
			// names are Snowflake names).
			if first.is("FOREIGN") || (first.is("CONSTRAINT") && x.tok(s+2).is("FOREIGN")) {
				continue
			}
			j := s
			if first.is("CONSTRAINT") {
				j = s + 2
			}
			text := strings.ToUpper(x.text(j, e))
			if k := strings.Index(text, " ENFORCED"); k >= 0 {
				text = text[:k]
			}
			if k := strings.Index(text, " NOT ENFORCED"); k >= 0 {
				text = text[:k]
			}
			out = append(out, text)
			continue
		}
		if !isName(first) {
			return nil, syntaxErrorAt(first)
		}
		name := identName(first)
		typ, j, ok := parseTypeTokens(x.toks, s+1)
		if !ok {
			return nil, syntaxErrorAt(x.tok(s + 1))
		}
		def := quoteIdent(name) + " " + typ.decl()
		if typ.Name == "fixed" || typ.Name == "real" {
			// SQLite stores any text; Snowflake rejects non-numbers on insert.
			def += " CONSTRAINT sg_numeric CHECK (typeof(" + quoteIdent(name) + ") IN ('integer','real','null'))"
		}
		for j < e {
			tk := x.toks[j]
			switch {
			case tk.is("NOT") && x.tok(j+1).is("NULL"):
				def += " NOT NULL"
				j += 2
			case tk.is("NULL"):
				j++
			case tk.is("PRIMARY") && x.tok(j+1).is("KEY"):
				def += " PRIMARY KEY"
				j += 2
			case tk.is("UNIQUE"):
				def += " UNIQUE"
				j++
			case tk.is("DEFAULT"):
				k := j + 1
				depth := 0
				for k < e && !(depth == 0 && constraintWords[x.toks[k].upper()] && k > j+1) {
					if x.toks[k].isOp("(") {
						depth++
					} else if x.toks[k].isOp(")") {
						depth--
					}
					k++
				}
				switch u := x.tok(j + 1).upper(); {
				case k-j <= 4 && (u == "CURRENT_TIMESTAMP" || u == "SYSDATE" || u == "GETDATE" || u == "LOCALTIMESTAMP" || u == "SYSTIMESTAMP"):
					def += ` DEFAULT (strftime('%Y-%m-%d %H:%M:%f000 +00:00','now'))`
				case k-j <= 4 && u == "CURRENT_DATE":
					def += ` DEFAULT (date('now'))`
				default:
					dtr := newTranslator(x.e, x.s, x.src, x.toks, 0)
					dtr.itemsFound = true
					expr := dtr.translate(j+1, k)
					if dtr.err != nil {
						return nil, dtr.err
					}
					def += " DEFAULT (" + expr + ")"
				}
				j = k
			case tk.is("AUTOINCREMENT") || tk.is("IDENTITY"):
				id := identity{col: name, start: 1, inc: 1}
				j++
				num := func(k int) (int64, int) {
					neg := false
					if x.tok(k).isOp("-") {
						neg, k = true, k+1
					}
					v, err := strconv.ParseInt(x.tok(k).text, 10, 64)
					if err != nil {
						return 0, -1
					}
					if neg {
						v = -v
					}
					return v, k + 1
				}
				if x.tok(j).isOp("(") {
					if v, k := num(j + 1); k > 0 && x.tok(k).isOp(",") {
						if w, k2 := num(k + 1); k2 > 0 {
							id.start, id.inc = v, w
						}
					}
					for j < e && !x.toks[j].isOp(")") {
						j++
					}
					j++
				}
				for x.tok(j).is("START") || x.tok(j).is("INCREMENT") || x.tok(j).is("ORDER") || x.tok(j).is("NOORDER") {
					if x.tok(j).is("ORDER") || x.tok(j).is("NOORDER") {
						j++
						continue
					}
					isStart := x.tok(j).is("START")
					j++
					if x.tok(j).is("WITH") || x.tok(j).is("BY") || x.tok(j).isOp("=") {
						j++
					}
					if v, k := num(j); k > 0 {
						if isStart {
							id.start = v
						} else {
							id.inc = v
						}
						j = k
					}
				}
				x.identities = append(x.identities, id)
			case tk.is("COMMENT") || tk.is("COLLATE"):
				j += 2
			case tk.is("CONSTRAINT"):
				j += 2
			case tk.is("REFERENCES"):
				j = e
			default:
				return nil, syntaxErrorAt(tk)
			}
		}
		out = append(out, def)
	}
	if len(out) == 0 {
		return nil, syntaxErrorAt(x.tok(to))
	}
	return out, nil
}

// createView runs CREATE VIEW name AS query.
func (x *execution) createView(i int, orReplace, ifNotExists bool) (*Result, error) {
	ref, i, err := x.tableName(i)
	if err != nil {
		return nil, err
	}
	for i < len(x.toks) && !x.toks[i].is("AS") {
		i++
	}
	if i >= len(x.toks) {
		return nil, syntaxErrorAt(x.tok(i))
	}
	q, args, err := x.translateQuery(i+1, len(x.toks))
	if err != nil {
		return nil, err
	}
	if len(args) > 0 {
		return nil, compileError(codeUnsupported, "Bind variables are not allowed in a view definition.")
	}
	kind, err := x.e.objectKind(x.ctx, x.e.db, ref)
	if err != nil {
		return nil, err
	}
	if kind != "" && ifNotExists {
		return statusResult(snowflake.StatementDDL, ref.Name+" already exists, statement succeeded."), nil
	}
	if kind != "" && !orReplace {
		return nil, compileError(codeAlreadyExists, fmt.Sprintf("Object '%s' already exists.", ref.Name))
	}
	err = x.e.inTx(x.ctx, func(tx *sql.Tx) error {
		if err := x.e.ensureSchema(x.ctx, tx, ref.DB, ref.Schema); err != nil {
			return err
		}
		if kind != "" {
			if _, err := tx.ExecContext(x.ctx, "DROP "+strings.ToUpper(kind)+" "+quoteIdent(ref.sqlite())); err != nil {
				return x.wrapErr(err, nil)
			}
		}
		if _, err := tx.ExecContext(x.ctx, "CREATE VIEW "+quoteIdent(ref.sqlite())+" AS "+q); err != nil {
			return x.wrapErr(err, nil)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return statusResult(snowflake.StatementDDL, fmt.Sprintf("View %s successfully created.", ref.Name)), nil
}

// drop runs DROP TABLE/VIEW/SCHEMA/DATABASE.
func (x *execution) drop() (*Result, error) {
	kind := x.tok(1).upper()
	i := 2
	if kind == "MATERIALIZED" {
		kind, i = "VIEW", 3
	}
	ifExists, i := x.ifClause(i, false)
	x.e.ddl.Lock()
	defer x.e.ddl.Unlock()
	switch kind {
	case "TABLE", "VIEW":
		ref, _, err := x.tableName(i)
		if err != nil {
			return nil, err
		}
		found, err := x.e.objectKind(x.ctx, x.e.db, ref)
		if err != nil {
			return nil, err
		}
		if found == "" || !strings.EqualFold(found, kind) {
			if ifExists {
				return statusResult(snowflake.StatementDDL, fmt.Sprintf("Drop statement executed successfully (%s already dropped).", ref.Name)), nil
			}
			return nil, objectNotFound(strings.ToUpper(x.text(i, len(x.toks))))
		}
		if _, err := x.e.db.ExecContext(x.ctx, "DROP "+kind+" "+quoteIdent(ref.sqlite())); err != nil {
			return nil, x.wrapErr(err, nil)
		}
		return statusResult(snowflake.StatementDDL, fmt.Sprintf("%s successfully dropped.", ref.Name)), nil
	case "DATABASE":
		if !isName(x.tok(i)) {
			return nil, syntaxErrorAt(x.tok(i))
		}
		name := identName(x.tok(i))
		found, err := x.databaseExists(name)
		if err != nil {
			return nil, err
		}
		if !found {
			if ifExists {
				return statusResult(snowflake.StatementDDL, fmt.Sprintf("Drop statement executed successfully (%s already dropped).", name)), nil
			}
			return nil, objectNotFound(name)
		}
		if err := x.dropObjects(likeEscape(name) + ".%"); err != nil {
			return nil, err
		}
		if _, err := x.e.db.ExecContext(x.ctx, `DELETE FROM sg_schemas WHERE db = ?`, name); err != nil {
			return nil, fmt.Errorf("sqlengine: drop database: %w", err)
		}
		if _, err := x.e.db.ExecContext(x.ctx, `DELETE FROM sg_databases WHERE name = ?`, name); err != nil {
			return nil, fmt.Errorf("sqlengine: drop database: %w", err)
		}
		if x.s.Database == name {
			x.s.Database, x.s.Schema = "", ""
		}
		return statusResult(snowflake.StatementDDL, fmt.Sprintf("%s successfully dropped.", name)), nil
	case "SCHEMA":
		ref, _, err := x.schemaName(i)
		if err != nil {
			return nil, err
		}
		found, err := x.schemaExists(ref.DB, ref.Schema)
		if err != nil {
			return nil, err
		}
		if !found {
			if ifExists {
				return statusResult(snowflake.StatementDDL, fmt.Sprintf("Drop statement executed successfully (%s already dropped).", ref.Schema)), nil
			}
			return nil, objectNotFound(ref.Schema)
		}
		if err := x.dropObjects(likeEscape(ref.DB+"."+ref.Schema) + ".%"); err != nil {
			return nil, err
		}
		if _, err := x.e.db.ExecContext(x.ctx, `DELETE FROM sg_schemas WHERE db = ? AND name = ?`, ref.DB, ref.Schema); err != nil {
			return nil, fmt.Errorf("sqlengine: drop schema: %w", err)
		}
		if x.s.Database == ref.DB && x.s.Schema == ref.Schema {
			x.s.Schema = ""
		}
		return statusResult(snowflake.StatementDDL, fmt.Sprintf("%s successfully dropped.", ref.Schema)), nil
	case "SEQUENCE", "STAGE", "FILE", "WAREHOUSE", "ROLE", "USER", "FUNCTION", "PROCEDURE", "STREAM", "TASK":
		return statusResult(snowflake.StatementDDL, "Statement executed successfully."), nil
	}
	return nil, syntaxErrorAt(x.tok(1))
}

func likeEscape(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s)
}

// truncate runs TRUNCATE [TABLE] [IF EXISTS] name.
func (x *execution) truncate() (*Result, error) {
	i := x.skipWords(1, "TABLE")
	ifExists, i := x.ifClause(i, false)
	ref, _, err := x.tableName(i)
	if err != nil {
		return nil, err
	}
	kind, err := x.e.objectKind(x.ctx, x.e.db, ref)
	if err != nil {
		return nil, err
	}
	if kind != "table" {
		if ifExists {
			return statusResult(snowflake.StatementDDL, "Statement executed successfully."), nil
		}
		return nil, objectNotFound(strings.ToUpper(x.text(i, len(x.toks))))
	}
	if _, err := x.e.db.ExecContext(x.ctx, "DELETE FROM "+quoteIdent(ref.sqlite())); err != nil {
		return nil, x.wrapErr(err, nil)
	}
	return statusResult(snowflake.StatementDDL, "Statement executed successfully."), nil
}

// alter runs ALTER SESSION SET/UNSET and ALTER TABLE ADD COLUMN/RENAME TO.
func (x *execution) alter() (*Result, error) {
	switch {
	case x.tok(1).is("SESSION"):
		return x.alterSession()
	case x.tok(1).is("TABLE"):
		return x.alterTable()
	case x.tok(1).is("WAREHOUSE") || x.tok(1).is("USER") || x.tok(1).is("ACCOUNT"):
		return statusResult(snowflake.StatementDDL, "Statement executed successfully."), nil
	}
	return nil, syntaxErrorAt(x.tok(1))
}

func (x *execution) alterSession() (*Result, error) {
	i := 2
	switch {
	case x.tok(i).is("SET"):
		i++
		for i < len(x.toks) {
			if !isName(x.tok(i)) || !x.tok(i+1).isOp("=") {
				return nil, syntaxErrorAt(x.tok(i))
			}
			name := strings.ToUpper(x.tok(i).text)
			if x.tok(i).kind == tkQuoted {
				name = strings.ToUpper(x.tok(i).val)
			}
			v := x.tok(i + 2)
			var val string
			switch v.kind {
			case tkString:
				val = v.val
			case tkNumber, tkWord:
				val = v.text
			case tkOp:
				if v.isOp("-") && x.tok(i+3).kind == tkNumber {
					val = "-" + x.tok(i+3).text
					i++
				} else {
					return nil, syntaxErrorAt(v)
				}
			default:
				return nil, syntaxErrorAt(v)
			}
			x.s.Params[name] = val
			i += 3
			if x.tok(i).isOp(",") {
				i++
			}
		}
	case x.tok(i).is("UNSET"):
		i++
		for i < len(x.toks) {
			if !isName(x.tok(i)) {
				return nil, syntaxErrorAt(x.tok(i))
			}
			delete(x.s.Params, strings.ToUpper(identName(x.tok(i))))
			i++
			if x.tok(i).isOp(",") {
				i++
			}
		}
	default:
		return nil, syntaxErrorAt(x.tok(i))
	}
	return statusResult(snowflake.StatementSession, "Statement executed successfully."), nil
}

func (x *execution) alterTable() (*Result, error) {
	i := 2
	ifExists, i := x.ifClause(i, false)
	ref, i, err := x.tableName(i)
	if err != nil {
		return nil, err
	}
	x.e.ddl.Lock()
	defer x.e.ddl.Unlock()
	kind, err := x.e.objectKind(x.ctx, x.e.db, ref)
	if err != nil {
		return nil, err
	}
	if kind != "table" {
		if ifExists {
			return statusResult(snowflake.StatementDDL, "Statement executed successfully."), nil
		}
		return nil, objectNotFound(ref.Name)
	}
	switch {
	case x.tok(i).is("ADD"):
		i = x.skipWords(i+1, "COLUMN")
		defs, err := x.columnDefs(i, len(x.toks))
		if err != nil {
			return nil, err
		}
		for _, d := range defs {
			if _, err := x.e.db.ExecContext(x.ctx, "ALTER TABLE "+quoteIdent(ref.sqlite())+" ADD COLUMN "+d); err != nil {
				return nil, x.wrapErr(err, nil)
			}
		}
	case x.tok(i).is("DROP"):
		i = x.skipWords(i+1, "COLUMN")
		if !isName(x.tok(i)) {
			return nil, syntaxErrorAt(x.tok(i))
		}
		if _, err := x.e.db.ExecContext(x.ctx, "ALTER TABLE "+quoteIdent(ref.sqlite())+" DROP COLUMN "+quoteIdent(identName(x.tok(i)))); err != nil {
			return nil, x.wrapErr(err, nil)
		}
	case x.tok(i).is("RENAME") && x.tok(i+1).is("TO"):
		to, _, err := x.tableName(i + 2)
		if err != nil {
			return nil, err
		}
		if _, err := x.e.db.ExecContext(x.ctx, "ALTER TABLE "+quoteIdent(ref.sqlite())+" RENAME TO "+quoteIdent(to.sqlite())); err != nil {
			return nil, x.wrapErr(err, nil)
		}
	case x.tok(i).is("RENAME") && x.tok(i+1).is("COLUMN"):
		if !isName(x.tok(i+2)) || !x.tok(i+3).is("TO") || !isName(x.tok(i+4)) {
			return nil, syntaxErrorAt(x.tok(i + 2))
		}
		if _, err := x.e.db.ExecContext(x.ctx, "ALTER TABLE "+quoteIdent(ref.sqlite())+" RENAME COLUMN "+quoteIdent(identName(x.tok(i+2)))+" TO "+quoteIdent(identName(x.tok(i+4)))); err != nil {
			return nil, x.wrapErr(err, nil)
		}
	default:
		return nil, compileError(codeUnsupported, "This ALTER TABLE form is not supported by the emulator.")
	}
	return statusResult(snowflake.StatementDDL, "Statement executed successfully."), nil
}

// use runs USE [DATABASE|SCHEMA|ROLE|WAREHOUSE|SECONDARY ROLES] name.
func (x *execution) use() (*Result, error) {
	i := 1
	what := ""
	switch {
	case x.tok(1).is("DATABASE"), x.tok(1).is("SCHEMA"), x.tok(1).is("ROLE"), x.tok(1).is("WAREHOUSE"):
		what = x.tok(1).upper()
		i = 2
	case x.tok(1).is("SECONDARY"):
		return statusResult(snowflake.StatementSession, "Statement executed successfully."), nil
	}
	if !isName(x.tok(i)) {
		return nil, syntaxErrorAt(x.tok(i))
	}
	name := identName(x.tok(i))
	switch what {
	case "ROLE":
		x.s.Role = name
	case "WAREHOUSE":
		x.s.Warehouse = name
	case "SCHEMA":
		ref, _, err := x.schemaName(i)
		if err != nil {
			return nil, err
		}
		if err := x.requireSchema(ref.DB, ref.Schema); err != nil {
			return nil, err
		}
		x.s.Database, x.s.Schema = ref.DB, ref.Schema
	default: // DATABASE, or bare USE db[.schema]
		if what == "" && x.tok(i+1).isOp(".") {
			ref, _, err := x.schemaName(i)
			if err != nil {
				return nil, err
			}
			if err := x.requireSchema(ref.DB, ref.Schema); err != nil {
				return nil, err
			}
			x.s.Database, x.s.Schema = ref.DB, ref.Schema
			break
		}
		found, err := x.databaseExists(name)
		if err != nil {
			return nil, err
		}
		if !found {
			return nil, &Error{Code: codeNoSuchObject, SQLState: "02000", Message: "SQL compilation error:\nObject does not exist, or operation cannot be performed."}
		}
		x.s.Database, x.s.Schema = name, DefaultSchema
	}
	return statusResult(snowflake.StatementSession, "Statement executed successfully."), nil
}

// databaseExists reports whether the catalog knows database name.
func (x *execution) databaseExists(name string) (bool, error) {
	return x.e.exists(x.ctx, x.e.db, `SELECT count(*) FROM sg_databases WHERE name = ?`, name)
}

// schemaExists reports whether the catalog knows schema db.schema.
func (x *execution) schemaExists(db, schema string) (bool, error) {
	return x.e.exists(x.ctx, x.e.db, `SELECT count(*) FROM sg_schemas WHERE db = ? AND name = ?`, db, schema)
}

func (x *execution) requireSchema(db, schema string) error {
	found, err := x.schemaExists(db, schema)
	if err != nil {
		return err
	}
	if !found {
		return &Error{Code: codeNoSuchObject, SQLState: "02000", Message: "SQL compilation error:\nObject does not exist, or operation cannot be performed."}
	}
	return nil
}

// show answers SHOW TABLES/VIEWS/SCHEMAS/DATABASES with the core columns.
func (x *execution) show() (*Result, error) {
	i := x.skipWords(1, "TERSE")
	what := x.tok(i).upper()
	i++
	now := time.Now().UTC()
	one := func(cols []Column, row []any) (*Result, error) {
		var rows [][]any
		if row != nil {
			rows = [][]any{row}
		}
		return &Result{StatementTypeID: StatementShow, Columns: cols, Rows: &sliceRows{rows: rows}}, nil
	}
	switch what {
	case "WAREHOUSES":
		var row []any
		if x.s.Warehouse != "" {
			row = []any{x.s.Warehouse, "STARTED", "STANDARD", "X-Small", x.s.Role}
		}
		return one([]Column{columnOf("name", typeText, false), columnOf("state", typeText, true), columnOf("type", typeText, true),
			columnOf("size", typeText, true), columnOf("owner", typeText, true)}, row)
	case "ROLES":
		role := x.s.Role
		if role == "" {
			role = "PUBLIC"
		}
		return one([]Column{columnOf("created_on", typeLTZ, true), columnOf("name", typeText, false), columnOf("owner", typeText, true)},
			[]any{now, role, ""})
	case "USERS":
		return one([]Column{columnOf("name", typeText, false), columnOf("created_on", typeLTZ, true), columnOf("login_name", typeText, true)},
			[]any{x.s.User, now, x.s.User})
	case "PARAMETERS":
		var rows [][]any
		for k, v := range x.s.Params {
			rows = append(rows, []any{k, v, "", "SESSION"})
		}
		sort.Slice(rows, func(a, b int) bool { return rows[a][0].(string) < rows[b][0].(string) })
		return &Result{StatementTypeID: StatementShow, Columns: []Column{columnOf("key", typeText, false), columnOf("value", typeText, true),
			columnOf("default", typeText, true), columnOf("level", typeText, true)}, Rows: &sliceRows{rows: rows}}, nil
	case "COLUMNS":
		if x.tok(i).is("LIKE") {
			i += 2
		}
		if !x.tok(i).is("IN") {
			return nil, compileError(codeUnsupported, "SHOW COLUMNS needs IN TABLE <name> in the emulator.")
		}
		i = x.skipWords(i+1, "TABLE", "VIEW")
		ref, _, err := x.tableName(i)
		if err != nil {
			return nil, err
		}
		desc, err := x.describeRef(ref, x.text(i, len(x.toks)))
		if err != nil {
			return nil, err
		}
		var rows [][]any
		for desc.Rows.Next() {
			v := desc.Rows.Values()
			rows = append(rows, []any{ref.Name, ref.Schema, v[0], v[1], v[3], v[4], "COLUMN", ref.DB})
		}
		return &Result{StatementTypeID: StatementShow, Columns: []Column{columnOf("table_name", typeText, false), columnOf("schema_name", typeText, false),
			columnOf("column_name", typeText, false), columnOf("data_type", typeText, false), columnOf("null?", typeText, false),
			columnOf("default", typeText, true), columnOf("kind", typeText, false), columnOf("database_name", typeText, false)},
			Rows: &sliceRows{rows: rows}}, nil
	}
	like := ""
	if x.tok(i).is("LIKE") && x.tok(i+1).kind == tkString {
		like = x.tok(i + 1).val
		i += 2
	}
	db, schema := x.s.currentDB(), x.s.currentSchema()
	if x.tok(i).is("IN") {
		i = x.skipWords(i+1, "ACCOUNT", "DATABASE", "SCHEMA")
		if isName(x.tok(i)) {
			if x.tok(i+1).isOp(".") && isName(x.tok(i+2)) {
				db, schema = identName(x.tok(i)), identName(x.tok(i+2))
			} else if x.tok(i - 1).is("DATABASE") {
				db, schema = identName(x.tok(i)), ""
			} else {
				schema = identName(x.tok(i))
			}
		}
	}
	var q string
	var args []any
	var cols []Column
	switch what {
	case "TABLES", "VIEWS", "OBJECTS":
		typ := "table"
		if what == "VIEWS" {
			typ = "view"
		}
		pattern := likeEscape(db) + ".%"
		if schema != "" {
			pattern = likeEscape(db+"."+schema) + ".%"
		}
		q = `SELECT name, type FROM sqlite_master WHERE name LIKE ? ESCAPE '\' AND (type = ? OR ? = 'OBJECTS') ORDER BY name`
		args = []any{pattern, typ, what}
		cols = []Column{columnOf("created_on", typeLTZ, true), columnOf("name", typeText, true), columnOf("database_name", typeText, true),
			columnOf("schema_name", typeText, true), columnOf("kind", typeText, true), columnOf("owner", typeText, true)}
	case "SCHEMAS":
		q = `SELECT db || '.' || name || '.x', 'schema' FROM sg_schemas WHERE db = ? ORDER BY name`
		args = []any{db}
		cols = []Column{columnOf("created_on", typeLTZ, true), columnOf("name", typeText, true), columnOf("database_name", typeText, true),
			columnOf("owner", typeText, true)}
	case "DATABASES":
		q = `SELECT name || '..x', 'database' FROM sg_databases ORDER BY name`
		cols = []Column{columnOf("created_on", typeLTZ, true), columnOf("name", typeText, true), columnOf("owner", typeText, true)}
	default:
		return nil, compileError(codeUnsupported, fmt.Sprintf("SHOW %s is not supported by the emulator.", what))
	}
	rows, err := x.e.db.QueryContext(x.ctx, q, args...)
	if err != nil {
		return nil, x.wrapErr(err, nil)
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		var name, kind string
		if err := rows.Scan(&name, &kind); err != nil {
			return nil, x.wrapErr(err, nil)
		}
		parts := strings.SplitN(name, ".", 3)
		if len(parts) != 3 {
			continue
		}
		obj := parts[2]
		switch what {
		case "SCHEMAS":
			obj = parts[1]
		case "DATABASES":
			obj = parts[0]
		}
		if like != "" && !likeMatch(like, obj) {
			continue
		}
		switch what {
		case "TABLES", "VIEWS", "OBJECTS":
			out = append(out, []any{now, obj, parts[0], parts[1], strings.ToUpper(kind), x.s.Role})
		case "SCHEMAS":
			out = append(out, []any{now, obj, parts[0], x.s.Role})
		case "DATABASES":
			out = append(out, []any{now, obj, x.s.Role})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, x.wrapErr(err, nil)
	}
	return &Result{StatementTypeID: StatementShow, Columns: cols, Rows: &sliceRows{rows: out}}, nil
}

// likeMatch is SQL LIKE, case-insensitive as SHOW … LIKE is.
func likeMatch(pattern, s string) bool {
	p, v := strings.ToUpper(pattern), strings.ToUpper(s)
	var match func(pi, si int) bool
	match = func(pi, si int) bool {
		for pi < len(p) {
			switch p[pi] {
			case '%':
				for k := si; k <= len(v); k++ {
					if match(pi+1, k) {
						return true
					}
				}
				return false
			case '_':
				if si >= len(v) {
					return false
				}
			default:
				if si >= len(v) || v[si] != p[pi] {
					return false
				}
			}
			pi++
			si++
		}
		return si == len(v)
	}
	return match(0, 0)
}

// describe answers DESC[RIBE] TABLE name with name, type, kind, null?.
func (x *execution) describe() (*Result, error) {
	i := x.skipWords(1, "TABLE", "VIEW")
	ref, _, err := x.tableName(i)
	if err != nil {
		return nil, err
	}
	return x.describeRef(ref, x.text(i, len(x.toks)))
}

// describeRef lists the columns of ref (written as the user wrote it).
func (x *execution) describeRef(ref tableRef, written string) (*Result, error) {
	rows, err := x.e.db.QueryContext(x.ctx, `SELECT name, type, "notnull", dflt_value, pk FROM pragma_table_info(?)`, ref.sqlite())
	if err != nil {
		return nil, x.wrapErr(err, nil)
	}
	defer rows.Close()
	var out [][]any
	for rows.Next() {
		var name, typ string
		var notnull, pk int
		var dflt sql.NullString
		if err := rows.Scan(&name, &typ, &notnull, &dflt, &pk); err != nil {
			return nil, x.wrapErr(err, nil)
		}
		null := "Y"
		if notnull != 0 {
			null = "N"
		}
		pkv := "N"
		if pk != 0 {
			pkv = "Y"
		}
		var d any
		if dflt.Valid {
			d = dflt.String
		}
		out = append(out, []any{name, typ, "COLUMN", null, d, pkv})
	}
	if err := rows.Err(); err != nil {
		return nil, x.wrapErr(err, nil)
	}
	if len(out) == 0 {
		return nil, objectNotFound(strings.ToUpper(written))
	}
	cols := []Column{columnOf("name", typeText, false), columnOf("type", typeText, false), columnOf("kind", typeText, false),
		columnOf("null?", typeText, false), columnOf("default", typeText, true), columnOf("primary key", typeText, false)}
	return &Result{StatementTypeID: StatementShow, Columns: cols, Rows: &sliceRows{rows: out}}, nil
}
