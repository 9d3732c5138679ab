// Package sqlengine executes Snowflake-flavoured SQL for snowgate's Snowflake
// emulator. Statements are rewritten into SQLite (modernc.org/sqlite, pure Go)
// with the Snowflake functions SQLite lacks registered as SQLite functions, so
// large results stream from SQLite row by row and never sit in memory.
//
// Naming: a Snowflake table DB.SCHEMA.NAME is the SQLite table "DB.SCHEMA.NAME"
// (one identifier); unquoted Snowflake identifiers are upper-cased, quoted ones
// kept. Column types are kept in the SQLite declared type (NUMBER(38,0),
// VARCHAR(16777216), TIMESTAMP_NTZ(9), …) so result columns report the
// Snowflake type they were declared with; expression columns get their type
// from their form (literals, casts, known functions) or else from the first
// row's value.
//
// Supported: SELECT (joins, subqueries, CTEs, window functions, QUALIFY,
// GROUP BY ALL, TOP n, ILIKE, ::casts, CAST/TRY_CAST, variant paths v:a.b[0],
// LATERAL FLATTEN), TABLE(GENERATOR(ROWCOUNT => n)) with SEQ1/2/4/8,
// UNIFORM, RANDSTR, RANDOM; SYSTEM$WAIT; CURRENT_USER/ROLE/WAREHOUSE/
// DATABASE/SCHEMA/TIMESTAMP/DATE; date, string, regexp and conversion
// functions; INSERT (VALUES, SELECT, OVERWRITE), UPDATE (… FROM), DELETE
// (… USING), MERGE; CREATE [OR REPLACE] TABLE (columns, AS SELECT, LIKE,
// CLONE, AUTOINCREMENT), VIEW, DATABASE, SCHEMA; DROP, TRUNCATE, ALTER TABLE
// ADD/DROP/RENAME; USE; ALTER SESSION SET/UNSET; SHOW TABLES/VIEWS/SCHEMAS/
// DATABASES; DESCRIBE TABLE; INFORMATION_SCHEMA.TABLES/COLUMNS/SCHEMATA.
// BEGIN/COMMIT/ROLLBACK are accepted but every statement autocommits.
package sqlengine

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/snowgate/snowgate/internal/snowflake"
	// The pure-Go SQLite driver, registered as "sqlite".
	_ "modernc.org/sqlite"
)

// Defaults for sessions that have no current database or schema: unqualified
// names resolve here rather than failing, which keeps drivers that connect
// without a database usable.
const (
	DefaultDatabase = "SNOWGATE"
	DefaultSchema   = "PUBLIC"
)

// Statement type ids beyond those in package snowflake.
const (
	// StatementTransaction is BEGIN, COMMIT and ROLLBACK (Snowflake's TCL range).
	StatementTransaction int64 = 0x5000
	// StatementShow is SHOW and DESCRIBE (Snowflake replies to them as queries).
	StatementShow int64 = 0x1000
)

// Options configures an Engine. Path "" means a private in-memory database.
type Options struct{ Path string }

// Engine executes statements of many concurrent sessions against one shared
// database.
type Engine struct {
	db     *sql.DB
	tmpDir string
	ddl    sync.Mutex // serialises catalog changes
}

// Open opens (creating if needed) the database at opts.Path. With Path ""
// the database lives in a private temporary file removed by Close: a file
// rather than SQLite's in-memory mode so that WAL gives concurrent readers
// and a writer without "database is locked" failures.
func Open(opts Options) (*Engine, error) {
	if err := registerFunctions(); err != nil {
		return nil, err
	}
	e := &Engine{}
	path := opts.Path
	if path == "" {
		dir, err := os.MkdirTemp("", "snowgate-sqlengine-")
		if err != nil {
			return nil, fmt.Errorf("create engine temp dir: %w", err)
		}
		e.tmpDir = dir
		path = filepath.Join(dir, "emulator.db")
	}
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(60000)")
	q.Add("_pragma", "synchronous(NORMAL)")
	q.Add("_pragma", "case_sensitive_like(1)") // Snowflake's LIKE is case-sensitive
	q.Set("_txlock", "immediate")
	q.Set("_dqs", "0")
	dsn := "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + q.Encode()
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		e.cleanup()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	db.SetMaxOpenConns(32)
	db.SetMaxIdleConns(8)
	e.db = db
	if err := e.initCatalog(context.Background()); err != nil {
		db.Close()
		e.cleanup()
		return nil, err
	}
	return e, nil
}

func (e *Engine) cleanup() {
	if e.tmpDir != "" {
		os.RemoveAll(e.tmpDir)
	}
}

// Close closes the database (removing it when it was private).
func (e *Engine) Close() error {
	err := e.db.Close()
	e.cleanup()
	if err != nil {
		return fmt.Errorf("close sqlite: %w", err)
	}
	return nil
}

// Session is the state one Snowflake session carries between statements.
// The server reads the fields for login replies; USE and ALTER SESSION
// change them.
type Session struct {
	User, Role, Warehouse, Database, Schema string
	Params                                  map[string]string // ALTER SESSION SET values, names upper-case
}

// NewSession returns a session with the given identity and context.
// Unquoted-style names are upper-cased like Snowflake does; a zero Session
// (&Session{}) is also valid. A database (and schema) named at login is
// created in the catalog if missing, as the emulator accepts any.
func (e *Engine) NewSession(user, role, warehouse, database, schema string) *Session {
	if database != "" {
		sch := strings.ToUpper(schema)
		if sch == "" {
			sch = DefaultSchema
		}
		e.ddl.Lock()
		// Best effort: a failure here surfaces on the first statement.
		_ = e.ensureSchema(context.Background(), e.db, strings.ToUpper(database), sch)
		e.ddl.Unlock()
	}
	return &Session{
		User: strings.ToUpper(user), Role: strings.ToUpper(role), Warehouse: strings.ToUpper(warehouse),
		Database: strings.ToUpper(database), Schema: strings.ToUpper(schema),
		Params: map[string]string{},
	}
}

// Binding is one bind value as sent by the drivers: Type e.g.
// "FIXED","TEXT","REAL","BOOLEAN","DATE","TIME","TIMESTAMP_NTZ",
// "TIMESTAMP_LTZ","TIMESTAMP_TZ","BINARY"; Value nil means NULL; Values is
// set for array binds.
type Binding struct {
	Type   string
	Value  *string
	Values []*string
}

// Result is the outcome of one statement.
type Result struct {
	StatementTypeID int64 // the constants in internal/snowflake (StatementSelect, StatementInsert, …)
	Columns         []Column
	Rows            RowIterator // never nil; DML yields the single count row Snowflake returns
	RowsAffected    int64       // DML only
}

// Column describes one result column as Snowflake's rowtype does.
type Column struct {
	Name string
	// Type is the lower-case Snowflake type: "fixed","real","text","boolean",
	// "date","time","timestamp_ntz","timestamp_ltz","timestamp_tz","binary",
	// "variant","object","array".
	Type                                 string
	Precision, Scale, Length, ByteLength int64
	Nullable                             bool
	Database, Schema, Table              string
}

// RowIterator yields result rows. Values is valid until the next call to
// Next. The concrete value types per column Type are:
//
//	fixed: int64, or a decimal string with exactly Scale fraction digits
//	real: float64; text, variant, object, array: string; boolean: bool
//	date, timestamp_*: time.Time; time: time.Duration; binary: []byte
//	NULL: nil
type RowIterator interface {
	Next() bool
	Values() []any
	Err() error
	Close() error
}

// Execute runs ONE statement (the server splits multi-statement text with
// SplitStatements). binds is keyed as in the request: "1","2",…
// (positional) or names. ctx cancellation aborts the statement with an
// *Error. Errors the driver must see are *Error; anything else is internal.
func (e *Engine) Execute(ctx context.Context, s *Session, sqlText string, binds map[string]Binding) (res *Result, err error) {
	defer func() {
		if r := recover(); r != nil {
			res = nil
			err = fmt.Errorf("sqlengine: internal error executing statement: %v\n%s", r, debug.Stack())
		}
	}()
	if s == nil {
		s = &Session{}
	}
	if s.Params == nil {
		s.Params = map[string]string{}
	}
	toks, lerr := lex(sqlText)
	if lerr != nil {
		return nil, syntaxError(lerr.line, lerr.col, "<EOF>")
	}
	sig := significant(toks)
	for len(sig) > 0 && sig[len(sig)-1].isOp(";") {
		sig = sig[:len(sig)-1]
	}
	if len(sig) == 0 {
		return nil, &Error{Code: "000900", SQLState: snowflake.SQLStateSyntax, Message: "Empty SQL statement."}
	}
	if err := ctx.Err(); err != nil {
		return nil, cancelledError()
	}
	x := &execution{e: e, s: s, ctx: ctx, src: sqlText, toks: sig, binds: binds}
	first := sig[0]
	switch {
	case first.isOp("("), first.is("SELECT"), first.is("WITH"), first.is("VALUES"):
		return x.query()
	case first.is("INSERT"):
		return x.insert()
	case first.is("UPDATE"):
		return x.dml(snowflake.StatementUpdate, []string{"number of rows updated", "number of multi-joined rows updated"})
	case first.is("DELETE"):
		return x.deleteStmt()
	case first.is("MERGE"):
		return x.merge()
	case first.is("CREATE"):
		return x.create()
	case first.is("DROP"):
		return x.drop()
	case first.is("TRUNCATE"):
		return x.truncate()
	case first.is("ALTER"):
		return x.alter()
	case first.is("USE"):
		return x.use()
	case first.is("BEGIN"), first.is("START"), first.is("COMMIT"), first.is("ROLLBACK"):
		return statusResult(StatementTransaction, "Statement executed successfully."), nil
	case first.is("SHOW"):
		return x.show()
	case first.is("DESC"), first.is("DESCRIBE"):
		return x.describe()
	case first.is("PUT"), first.is("GET"):
		return nil, compileError(codeUnsupported, "File transfer commands are handled by the server, not the SQL engine.")
	}
	return nil, syntaxErrorAt(first)
}

// execution is the state of one Execute call.
type execution struct {
	e     *Engine
	s     *Session
	ctx   context.Context
	src   string
	toks  []token
	binds map[string]Binding

	identities []identity // AUTOINCREMENT columns met by columnDefs
}

// tableRef names a Snowflake table.
type tableRef struct{ DB, Schema, Name string }

// sqlite is the SQLite table name of the reference.
func (r tableRef) sqlite() string { return r.DB + "." + r.Schema + "." + r.Name }

// String is the fully qualified Snowflake name.
func (r tableRef) String() string { return r.DB + "." + r.Schema + "." + r.Name }

func (s *Session) currentDB() string {
	if s.Database == "" {
		return DefaultDatabase
	}
	return s.Database
}

func (s *Session) currentSchema() string {
	if s.Schema == "" {
		return DefaultSchema
	}
	return s.Schema
}

// resolve qualifies a one- to three-part name with the session's database
// and schema.
func (s *Session) resolve(parts []string) (tableRef, *Error) {
	switch len(parts) {
	case 1:
		return tableRef{s.currentDB(), s.currentSchema(), parts[0]}, nil
	case 2:
		return tableRef{s.currentDB(), parts[0], parts[1]}, nil
	case 3:
		return tableRef{parts[0], parts[1], parts[2]}, nil
	}
	return tableRef{}, compileError(snowflake.CodeSyntaxError, fmt.Sprintf("invalid object name '%s'", strings.Join(parts, ".")))
}

// wrapErr turns a database error into the Snowflake error the driver sees,
// or an internal error with context.
func (x *execution) wrapErr(err error, tr *translator) error {
	if err == nil {
		return nil
	}
	if x.ctx.Err() != nil {
		return cancelledError()
	}
	var ve *valueError
	if errors.As(err, &ve) {
		return &Error{Code: ve.code, SQLState: ve.state, Message: ve.msg}
	}
	if m := reValueError.FindStringSubmatch(err.Error()); m != nil {
		return &Error{Code: m[1], SQLState: m[2], Message: m[3]}
	}
	if se := translateError(err, x.src); se != nil {
		var e *Error
		if errors.As(se, &e) && e.Code == snowflake.CodeObjectNotFound && tr != nil {
			for sqliteName, written := range tr.tableNames {
				if strings.Contains(e.Message, "'"+sqliteName+"'") {
					e.Message = strings.Replace(e.Message, "'"+sqliteName+"'", "'"+written+"'", 1)
				}
			}
		}
		return se
	}
	return fmt.Errorf("sqlengine: execute %q: %w", truncate(x.src, 200), err)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
