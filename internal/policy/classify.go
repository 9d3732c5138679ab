package policy

import (
	"fmt"
	"strings"
)

// Class is a statement class. Rules decide per class (workload-identity.md
// §5.3); the classifier never guesses: what it cannot place lands in the
// strictest class, ClassUnknown.
type Class string

// Statement classes, from the most permissive to the strictest.
const (
	// ClassRead: SELECT, WITH…SELECT, SHOW, DESCRIBE, EXPLAIN, LIST.
	ClassRead Class = "read"
	// ClassSession: USE WAREHOUSE/DATABASE/SCHEMA, ALTER SESSION, SET and
	// UNSET of variables, BEGIN/COMMIT/ROLLBACK.
	ClassSession Class = "session"
	// ClassDML: INSERT, UPDATE, DELETE, MERGE, COPY INTO <table> from a stage.
	ClassDML Class = "dml"
	// ClassDDL: CREATE, ALTER, DROP, UNDROP, TRUNCATE, COMMENT of ordinary objects.
	ClassDDL Class = "ddl"
	// ClassFileTransfer: PUT, GET, REMOVE, COPY INTO a location (unload),
	// COPY INTO <table> straight from an external URL.
	ClassFileTransfer Class = "file_transfer"
	// ClassPrivileged: GRANT, REVOKE, USE ROLE, USE SECONDARY ROLES, users,
	// roles, integrations, policies, the account, CALL, CREATE PROCEDURE or
	// FUNCTION, statements that embed statements (tasks, pipes, alerts),
	// EXECUTE TASK, ALTER SESSION of gateway-set parameters, SYSTEM$ functions
	// with effects.
	ClassPrivileged Class = "privileged"
	// ClassMultiStatement: more than one statement in one request.
	ClassMultiStatement Class = "multi_statement"
	// ClassUnknown: anything the classifier cannot place with certainty:
	// unparseable or ambiguous text, unrecognised statements, EXECUTE
	// IMMEDIATE and scripting blocks (their bodies are opaque), texts over
	// MaxStatementBytes.
	ClassUnknown Class = "unknown"
)

// Classes lists every class from the most permissive to the strictest.
var Classes = []Class{ClassRead, ClassSession, ClassDML, ClassDDL, ClassFileTransfer, ClassPrivileged, ClassMultiStatement, ClassUnknown}

// Strictness orders classes: a higher number is stricter. An unknown value
// counts as the strictest.
func (c Class) Strictness() int {
	for i, k := range Classes {
		if k == c {
			return i
		}
	}
	return len(Classes) - 1
}

// Valid reports whether c is one of Classes.
func (c Class) Valid() bool {
	for _, k := range Classes {
		if k == c {
			return true
		}
	}
	return false
}

// Stricter returns the stricter of a and b.
func Stricter(a, b Class) Class {
	if b.Strictness() > a.Strictness() {
		return b
	}
	return a
}

// MaxStatementBytes caps the text the classifier reads; longer texts are
// ClassUnknown without being lexed, which bounds the work per request.
const MaxStatementBytes = 1 << 20

// NamePart is one part of an object name.
type NamePart struct {
	// Name is upper-cased when unquoted, exact when quoted; empty for the
	// omitted schema of "db..table" (which Snowflake reads as PUBLIC).
	Name   string
	Quoted bool
}

// ObjectRef is an object a statement references, as written.
type ObjectRef struct {
	// Parts are the 1 to 3 dot-separated parts of the name.
	Parts []NamePart
	// Kind is TABLE for table references, else the object kind of a DDL
	// statement (SCHEMA, DATABASE, VIEW, STAGE, …).
	Kind string
	// Access is the class of the access: the statement's class for its
	// target, ClassRead for objects it reads from.
	Access Class
	// Dynamic marks a name only known at run time: IDENTIFIER(…), a session
	// variable or a bind marker, or a target the classifier could not find.
	Dynamic bool
}

// String renders the reference in SQL form.
func (o ObjectRef) String() string {
	if o.Dynamic {
		return "<dynamic>"
	}
	parts := make([]string, len(o.Parts))
	for i, p := range o.Parts {
		if p.Quoted {
			parts[i] = `"` + strings.ReplaceAll(p.Name, `"`, `""`) + `"`
		} else {
			parts[i] = p.Name
		}
	}
	return strings.Join(parts, ".")
}

// Statement is the classification of one request text.
type Statement struct {
	// Class is the statement class.
	Class Class
	// Keyword is the leading keyword phrase, e.g. "CREATE TABLE" or "USE ROLE".
	Keyword string
	// Reason explains the class when it is not plain from Keyword: why a
	// text is unknown or was escalated.
	Reason string
	// Objects are the objects referenced, with their access class.
	Objects []ObjectRef
	// Parts are the statements of a multi-statement text.
	Parts []*Statement
	// use is the name a USE DATABASE/SCHEMA statement switches to.
	use *ObjectRef
}

// NextNamespace returns the session namespace after st ran in ns: USE
// DATABASE and USE SCHEMA (and bare USE) change it; other statements keep it.
// The gateway tracks it to resolve partly qualified names of later
// statements; the namespace empties (unknown) when a USE names something
// dynamic.
func (st *Statement) NextNamespace(ns Namespace) Namespace {
	if st.use == nil {
		for _, p := range st.Parts {
			ns = p.NextNamespace(ns)
		}
		return ns
	}
	u := st.use
	if u.Dynamic {
		return Namespace{}
	}
	switch u.Kind {
	case "SCHEMA":
		if len(u.Parts) == 2 {
			return Namespace{Database: u.Parts[0].Name, Schema: u.Parts[1].Name}
		}
		return Namespace{Database: ns.Database, Schema: u.Parts[0].Name}
	default:
		// Snowflake's default schema of a database is PUBLIC.
		return Namespace{Database: u.Parts[0].Name, Schema: "PUBLIC"}
	}
}

// Classify lexes and classifies a request's SQL text. It never fails: what it
// cannot read with certainty is ClassUnknown with a Reason.
func Classify(sql string) *Statement {
	if len(sql) > MaxStatementBytes {
		return &Statement{Class: ClassUnknown, Reason: fmt.Sprintf("statement of %d bytes exceeds the %d-byte classification limit", len(sql), MaxStatementBytes)}
	}
	toks, sawBackslash, err := lex(sql, lexOptions{significantOnly: true})
	if err != nil {
		return &Statement{Class: ClassUnknown, Reason: "cannot lex: " + err.Error()}
	}
	st := classifyTokens(toks)
	if sawBackslash {
		// Read the text again as standard SQL (no backslash escapes); when that
		// reading is valid and stricter, it wins.
		if alt, _, err := lex(sql, lexOptions{noBackslash: true, significantOnly: true}); err == nil {
			if ast := classifyTokens(alt); ast.Class.Strictness() > st.Class.Strictness() {
				ast.Reason = strings.TrimPrefix(ast.Reason+"; read without backslash escapes, the text is "+string(ast.Class), "; ")
				return ast
			}
		}
	}
	return st
}

func classifyTokens(all []Token) *Statement {
	sig := all
	if !allSignificant(all) {
		sig = make([]Token, 0, len(all)/2+1)
		for _, t := range all {
			if t.significant() {
				sig = append(sig, t)
			}
		}
	}
	var groups [][]Token
	start := 0
	for i, t := range sig {
		if t.Kind == TokSemicolon || (t.Kind == TokOperator && t.Value == "->>") {
			if i > start {
				groups = append(groups, sig[start:i])
			}
			start = i + 1
		}
	}
	if len(sig) > start {
		groups = append(groups, sig[start:])
	}
	switch len(groups) {
	case 0:
		return &Statement{Class: ClassUnknown, Reason: "empty statement"}
	case 1:
		return classifyOne(groups[0])
	}
	st := &Statement{Class: ClassMultiStatement, Keyword: "MULTI", Reason: fmt.Sprintf("%d statements in one request", len(groups))}
	for _, g := range groups {
		p := classifyOne(g)
		st.Parts = append(st.Parts, p)
		st.Objects = append(st.Objects, p.Objects...)
	}
	return st
}

func allSignificant(toks []Token) bool {
	for _, t := range toks {
		if !t.significant() {
			return false
		}
	}
	return true
}

// head is what the leading keywords say about a statement.
type head struct {
	class   Class
	keyword string
	reason  string
	targets []ObjectRef
	// noSources lists indices of FROM tokens that introduce a target, not a
	// source (DELETE FROM t).
	noSources map[int]bool
	// noGuard skips the read guard (EXPLAIN names write keywords legitimately).
	noGuard bool
	// use is the target of USE DATABASE/SCHEMA.
	use *ObjectRef
}

func unknown(reason string) head { return head{class: ClassUnknown, reason: reason} }

func isWord(t []Token, i int, words ...string) bool {
	if i < 0 || i >= len(t) || t[i].Kind != TokWord {
		return false
	}
	if len(words) == 0 {
		return true
	}
	for _, w := range words {
		if t[i].Value == w {
			return true
		}
	}
	return false
}

func isOp(t []Token, i int, op string) bool {
	return i >= 0 && i < len(t) && t[i].Kind == TokOperator && t[i].Value == op
}

func classifyOne(t []Token) *Statement {
	// A parenthesised query: (SELECT …) or ((WITH …)).
	k := 0
	for isOp(t, k, "(") {
		k++
	}
	var h head
	var ctes map[string]bool
	if k > 0 && !isWord(t, k, "SELECT", "WITH") {
		h = unknown("parenthesised text is not a query")
	} else {
		h, ctes = classifyHead(t[k:], k)
	}
	st := &Statement{Class: h.class, Keyword: h.keyword, Reason: h.reason, Objects: h.targets, use: h.use}
	for _, o := range sources(t, h.noSources) {
		if len(o.Parts) == 1 && !o.Dynamic && ctes[o.Parts[0].Name] {
			continue
		}
		st.Objects = append(st.Objects, o)
	}
	escalate(st, t, h.noGuard)
	return st
}

// escalate applies the checks that hold for every statement.
func escalate(st *Statement, t []Token, noGuard bool) {
	for i, tok := range t {
		if tok.Kind != TokWord {
			continue
		}
		if strings.HasPrefix(tok.Value, "SYSTEM$") && isOp(t, i+1, "(") && !readOnlySystemFunctions[tok.Value] && ClassPrivileged.Strictness() > st.Class.Strictness() {
			st.Class = ClassPrivileged
			st.Reason = "calls " + tok.Value + ", which is not known to be free of effects"
		}
		if st.Class == ClassRead && !noGuard && writeKeywords[tok.Value] {
			st.Class = ClassUnknown
			st.Reason = "reserved keyword " + tok.Value + " inside a read statement"
		}
	}
}

// gatewayParameters are session parameters the gateway sets from the identity
// rule (attribution, the multi-statement guard, limits); an agent changing
// them with ALTER SESSION is privileged.
var gatewayParameters = setOf("QUERY_TAG", "MULTI_STATEMENT_COUNT", "STATEMENT_TIMEOUT_IN_SECONDS",
	"STATEMENT_QUEUED_TIMEOUT_IN_SECONDS", "ROWS_PER_RESULTSET")

// writeKeywords are reserved words that cannot appear in a read statement
// except as syntax of another statement.
var writeKeywords = map[string]bool{"INSERT": true, "UPDATE": true, "DELETE": true, "CREATE": true, "DROP": true, "ALTER": true, "GRANT": true, "REVOKE": true}

// readOnlySystemFunctions are SYSTEM$ functions that only read.
var readOnlySystemFunctions = map[string]bool{
	"SYSTEM$TYPEOF": true, "SYSTEM$CLUSTERING_INFORMATION": true, "SYSTEM$CLUSTERING_DEPTH": true,
	"SYSTEM$EXPLAIN_PLAN_JSON": true, "SYSTEM$EXPLAIN_JSON_TO_TEXT": true, "SYSTEM$STREAM_HAS_DATA": true,
	"SYSTEM$LAST_CHANGE_COMMIT_TIME": true, "SYSTEM$GET_TAG": true, "SYSTEM$ALLOWLIST": true,
	"SYSTEM$WHITELIST": true, "SYSTEM$GET_PREDECESSOR_RETURN_VALUE": true, "SYSTEM$CURRENT_USER_TASK_NAME": true,
	"SYSTEM$BEHAVIOR_CHANGE_BUNDLE_STATUS": true, "SYSTEM$PIPE_STATUS": true,
	// SYSTEM$WAIT only sleeps (agents and tests use it for slow queries).
	"SYSTEM$WAIT": true,
}

// classifyHead classifies by the leading keywords. off is the index of t[0]
// in the statement's tokens. It returns the CTE names a WITH defines.
func classifyHead(t []Token, off int) (head, map[string]bool) {
	if len(t) == 0 {
		return unknown("empty statement"), nil
	}
	if t[0].Kind != TokWord {
		return unknown(fmt.Sprintf("statement starts with %s %q, not a keyword", t[0].Kind, t[0].Text)), nil
	}
	kw := t[0].Value
	h := head{keyword: kw}
	switch kw {
	case "SELECT":
		h.class = ClassRead
		if i := indexWordDepth0(t, "INTO"); i >= 0 {
			return unknown("SELECT … INTO is Snowflake Scripting, not a plain query"), nil
		}
	case "WITH":
		return classifyWith(t, off)
	case "SHOW", "LIST", "LS":
		h.class = ClassRead
	case "DESC", "DESCRIBE":
		h.class = ClassRead
		if isWord(t, 1, "TABLE", "VIEW") {
			if o, _, ok := parseName(t, 2, false); ok {
				o.Access, o.Kind = ClassRead, t[1].Value
				h.targets = append(h.targets, o)
			}
		}
	case "EXPLAIN":
		i := 1
		if isWord(t, 1, "USING") {
			i = 3
		}
		if i >= len(t) {
			return unknown("EXPLAIN of nothing"), nil
		}
		inner, _ := classifyHead(t[i:], off+i)
		if inner.class != ClassRead && inner.class != ClassDML {
			return unknown("EXPLAIN of a " + string(inner.class) + " statement"), nil
		}
		h.class, h.noGuard = ClassRead, true
		for _, o := range inner.targets {
			o.Access = ClassRead
			h.targets = append(h.targets, o)
		}
	case "INSERT":
		h.class = ClassDML
		depth := 0
		for i := 1; i < len(t); i++ {
			switch {
			case isOp(t, i, "("):
				depth++
			case isOp(t, i, ")"):
				depth--
			case depth == 0 && isWord(t, i, "INTO"):
				h.targets = append(h.targets, targets(t, i+1, "TABLE", ClassDML)...)
			}
		}
	case "UPDATE":
		h.class = ClassDML
		h.targets = append(h.targets, targets(t, 1, "TABLE", ClassDML)...)
	case "DELETE":
		h.class = ClassDML
		if !isWord(t, 1, "FROM") {
			return unknown("DELETE without FROM"), nil
		}
		h.noSources = map[int]bool{off + 1: true}
		h.targets = append(h.targets, targets(t, 2, "TABLE", ClassDML)...)
	case "MERGE":
		h.class = ClassDML
		if !isWord(t, 1, "INTO") {
			return unknown("MERGE without INTO"), nil
		}
		h.targets = append(h.targets, targets(t, 2, "TABLE", ClassDML)...)
	case "TRUNCATE":
		h.class = ClassDDL
		i := 1
		if isWord(t, i, "TABLE") {
			i++
		}
		i = skipIfExists(t, i)
		h.targets = append(h.targets, targets(t, i, "TABLE", ClassDDL)...)
	case "COPY":
		return classifyCopy(t, off)
	case "PUT", "GET", "REMOVE", "RM":
		h.class = ClassFileTransfer
	case "USE":
		switch {
		case isWord(t, 1, "ROLE"):
			h.class, h.keyword = ClassPrivileged, "USE ROLE"
		case isWord(t, 1, "SECONDARY"):
			h.class, h.keyword = ClassPrivileged, "USE SECONDARY ROLES"
		case len(t) >= 2:
			h.class = ClassSession
			i, kind := 1, "DATABASE"
			switch {
			case isWord(t, 1, "WAREHOUSE"):
				return h, nil
			case isWord(t, 1, "DATABASE"):
				i = 2
			case isWord(t, 1, "SCHEMA"):
				i, kind = 2, "SCHEMA"
			}
			o, next, ok := parseName(t, i, false)
			if !ok || next != len(t) || (!o.Dynamic && (len(o.Parts) > 2 || len(o.Parts) == 2 && kind != "SCHEMA")) {
				return unknown("malformed USE statement"), nil
			}
			o.Kind = kind
			h.use = &o
		default:
			return unknown("USE of nothing"), nil
		}
	case "SET", "UNSET":
		h.class = ClassSession
	case "BEGIN", "START":
		// BEGIN [TRANSACTION|WORK] [NAME n] starts a transaction; anything
		// else after BEGIN is a Snowflake Scripting block.
		rest := t[1:]
		if kw == "START" {
			if !isWord(t, 1, "TRANSACTION") {
				return unknown("START without TRANSACTION"), nil
			}
			rest = t[2:]
		} else if isWord(rest, 0, "TRANSACTION", "WORK") {
			rest = rest[1:]
		}
		if len(rest) == 2 && isWord(rest, 0, "NAME") || len(rest) == 0 {
			h.class = ClassSession
		} else {
			return unknown("BEGIN … END is a Snowflake Scripting block; its body is not classified"), nil
		}
	case "COMMIT", "ROLLBACK":
		if len(t) > 2 || len(t) == 2 && !isWord(t, 1, "WORK") {
			return unknown(kw + " with unexpected arguments"), nil
		}
		h.class = ClassSession
	case "GRANT", "REVOKE", "CALL":
		h.class = ClassPrivileged
	case "EXECUTE":
		switch {
		case isWord(t, 1, "IMMEDIATE"):
			return head{class: ClassUnknown, keyword: "EXECUTE IMMEDIATE", reason: "EXECUTE IMMEDIATE runs dynamic SQL the classifier cannot see"}, nil
		case isWord(t, 1, "TASK"):
			h.class, h.keyword = ClassPrivileged, "EXECUTE TASK"
		default:
			return unknown("unrecognised EXECUTE statement"), nil
		}
	case "DECLARE":
		return head{class: ClassUnknown, keyword: kw, reason: "DECLARE … BEGIN … END is a Snowflake Scripting block; its body is not classified"}, nil
	case "ALTER":
		if isWord(t, 1, "SESSION") {
			h.class, h.keyword = ClassSession, "ALTER SESSION"
			for _, tok := range t[2:] {
				if (tok.Kind == TokWord || tok.Kind == TokQuoted) && gatewayParameters[strings.ToUpper(tok.Value)] {
					h.class, h.reason = ClassPrivileged, "changes "+strings.ToUpper(tok.Value)+", which the gateway sets for the rule"
				}
			}
			return h, nil
		}
		return classifyObjectDDL(t)
	case "CREATE", "DROP", "UNDROP":
		return classifyObjectDDL(t)
	case "COMMENT":
		h.class = ClassDDL
	default:
		return unknown("unrecognised statement keyword " + kw), nil
	}
	return h, nil
}

func indexWordDepth0(t []Token, w string) int {
	depth := 0
	for i := range t {
		switch {
		case isOp(t, i, "("):
			depth++
		case isOp(t, i, ")"):
			depth--
		case depth == 0 && isWord(t, i, w):
			return i
		}
	}
	return -1
}

func skipIfExists(t []Token, i int) int {
	if isWord(t, i, "IF") {
		i++
		if isWord(t, i, "NOT") {
			i++
		}
		if isWord(t, i, "EXISTS") {
			i++
		}
	}
	return i
}

// target parses the target object at t[i]; a target it cannot find becomes a
// dynamic reference, which object rules treat as "could be anything".
func target(t []Token, i int, kind string, access Class) ObjectRef {
	o, _, ok := parseName(t, i, true)
	if !ok {
		return ObjectRef{Kind: kind, Access: access, Dynamic: true}
	}
	o.Kind, o.Access = kind, access
	return o
}

// targets is target plus a dynamic reference when a comma follows the name:
// a list of targets the classifier does not read must not slip past object
// rules.
func targets(t []Token, i int, kind string, access Class) []ObjectRef {
	out := []ObjectRef{target(t, i, kind, access)}
	if _, next, ok := parseName(t, i, true); ok && isOp(t, next, ",") {
		out = append(out, ObjectRef{Kind: kind, Access: access, Dynamic: true})
	}
	return out
}

// classifyWith reads WITH [RECURSIVE] name [(cols)] AS (…) [, …] and then the
// main statement, which decides the class (a CTE feeding an INSERT is dml).
func classifyWith(t []Token, off int) (head, map[string]bool) {
	ctes := map[string]bool{}
	i := 1
	if isWord(t, i, "RECURSIVE") {
		i++
	}
	for {
		if i >= len(t) || (t[i].Kind != TokWord && t[i].Kind != TokQuoted) {
			return unknown("malformed WITH clause"), nil
		}
		ctes[t[i].Value] = true
		i++
		if isOp(t, i, "(") {
			if i = skipParens(t, i); i < 0 {
				return unknown("malformed WITH clause: unbalanced parentheses"), nil
			}
		}
		if !isWord(t, i, "AS") {
			return unknown("malformed WITH clause: AS expected"), nil
		}
		i++
		if !isOp(t, i, "(") {
			return unknown("malformed WITH clause: ( expected"), nil
		}
		i = skipParens(t, i)
		if i < 0 {
			return unknown("malformed WITH clause: unbalanced parentheses"), nil
		}
		if isOp(t, i, ",") {
			i++
			continue
		}
		break
	}
	if i >= len(t) {
		return unknown("WITH clause without a statement"), nil
	}
	h, _ := classifyHead(t[i:], off+i)
	if h.class != ClassRead && h.class != ClassDML && h.class != ClassUnknown {
		return unknown("WITH clause before a " + string(h.class) + " statement"), nil
	}
	h.keyword = "WITH " + h.keyword
	return h, ctes
}

// skipParens returns the index after the parenthesis opened at t[i], or -1.
func skipParens(t []Token, i int) int {
	depth := 0
	for ; i < len(t); i++ {
		switch {
		case isOp(t, i, "("):
			depth++
		case isOp(t, i, ")"):
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

// classifyCopy: COPY INTO <table> FROM @stage loads (dml, the documented
// class); COPY INTO <table> FROM '<url>' reaches outside the account and COPY
// INTO @stage or '<url>' unloads: both are file_transfer.
func classifyCopy(t []Token, off int) (head, map[string]bool) {
	h := head{keyword: "COPY INTO"}
	if !isWord(t, 1, "INTO") || len(t) < 3 {
		return unknown("COPY without INTO"), nil
	}
	switch t[2].Kind {
	case TokStage, TokString:
		h.class, h.reason = ClassFileTransfer, "unloads into a location"
		return h, nil
	}
	h.class = ClassDML
	h.targets = append(h.targets, targets(t, 2, "TABLE", ClassDML)...)
	if i := indexWordDepth0(t, "FROM"); i >= 0 && i+1 < len(t) && t[i+1].Kind == TokString {
		h.class, h.reason = ClassFileTransfer, "loads straight from an external location"
		h.targets[0].Access = ClassFileTransfer
	}
	for _, w := range []string{"CREDENTIALS", "STORAGE_INTEGRATION"} {
		if indexWordDepth0(t, w) >= 0 {
			h.class, h.reason = ClassFileTransfer, "names "+w+" of an external location"
			h.targets[0].Access = ClassFileTransfer
		}
	}
	return h, nil
}

// Object-kind words of CREATE, ALTER and DROP.
var (
	kindModifiers = setOf("OR", "REPLACE", "ALTER", "TEMPORARY", "TEMP", "TRANSIENT", "VOLATILE", "LOCAL", "GLOBAL",
		"SECURE", "RECURSIVE", "MATERIALIZED", "DYNAMIC", "EXTERNAL", "ICEBERG", "HYBRID", "EVENT", "FILE",
		"RESOURCE", "NETWORK", "SECURITY", "STORAGE", "API", "NOTIFICATION", "ACCESS", "ROW", "MASKING",
		"SESSION", "PASSWORD", "AUTHENTICATION", "COMPUTE", "IMAGE", "GIT", "REPLICATION", "FAILOVER",
		"MANAGED", "CATALOG", "AGGREGATE", "PROJECTION", "JOIN", "PACKAGES", "AGGREGATION")
	kindNouns = setOf("TABLE", "VIEW", "SCHEMA", "DATABASE", "WAREHOUSE", "STAGE", "FORMAT", "SEQUENCE", "STREAM",
		"TAG", "FUNCTION", "PROCEDURE", "TASK", "PIPE", "ALERT", "MONITOR", "USER", "ROLE", "ACCOUNT",
		"INTEGRATION", "POLICY", "RULE", "SHARE", "SECRET", "CONNECTION", "GROUP", "PACKAGE", "POOL",
		"REPOSITORY", "SERVICE", "NOTEBOOK", "STREAMLIT", "MODEL", "DATASET", "SNAPSHOT", "VOLUME", "BUDGET",
		"APPLICATION", "ORGANIZATION", "LISTING", "INDEX")
	// privilegedNouns govern identity, access, the account and egress.
	privilegedNouns = setOf("USER", "ROLE", "ACCOUNT", "INTEGRATION", "POLICY", "RULE", "SHARE", "SECRET",
		"CONNECTION", "GROUP", "ORGANIZATION", "APPLICATION", "PACKAGE", "SERVICE", "LISTING")
	// codeNouns embed code or statements that run later, possibly with the
	// owner's rights: creating or altering them is privileged.
	codeNouns = setOf("PROCEDURE", "FUNCTION", "TASK", "PIPE", "ALERT", "NOTEBOOK", "STREAMLIT")
	// accountNouns are not schema objects; they are not collected as objects.
	accountNouns = setOf("WAREHOUSE", "MONITOR", "POOL", "VOLUME", "BUDGET", "USER", "ROLE", "ACCOUNT",
		"INTEGRATION", "SHARE", "CONNECTION", "GROUP", "ORGANIZATION", "APPLICATION", "PACKAGE", "LISTING")
)

func setOf(words ...string) map[string]bool {
	m := make(map[string]bool, len(words))
	for _, w := range words {
		m[w] = true
	}
	return m
}

// classifyObjectDDL classifies CREATE, ALTER, DROP and UNDROP by the object
// kind named after the verb.
func classifyObjectDDL(t []Token) (head, map[string]bool) {
	verb := t[0].Value
	i := 1
	var phrase []string
	noun := ""
	for i < len(t) && t[i].Kind == TokWord {
		w := t[i].Value
		switch {
		case noun == "" && kindModifiers[w]:
		case noun == "" && kindNouns[w]:
			noun = w
		case (noun == "DATABASE" || noun == "APPLICATION") && (w == "ROLE" || w == "PACKAGE"):
			noun = w
		default:
			goto done
		}
		phrase = append(phrase, w)
		i++
	}
done:
	h := head{keyword: strings.TrimSpace(verb + " " + strings.Join(phrase, " "))}
	if noun == "" {
		return head{class: ClassUnknown, keyword: h.keyword, reason: "unrecognised object kind after " + verb}, nil
	}
	for _, w := range phrase {
		if privilegedNouns[w] {
			h.class = ClassPrivileged
			return h, nil
		}
	}
	if codeNouns[noun] && verb != "DROP" && verb != "UNDROP" {
		h.class, h.reason = ClassPrivileged, "a "+strings.ToLower(noun)+" embeds code or statements that run later"
		return h, nil
	}
	h.class = ClassDDL
	if accountNouns[noun] {
		return h, nil
	}
	i = skipIfExists(t, i)
	h.targets = append(h.targets, targets(t, i, noun, ClassDDL)...)
	// Second names: RENAME TO and SWAP WITH write there too; CLONE reads.
	for j := i; j+1 < len(t); j++ {
		switch {
		case isWord(t, j, "RENAME") && isWord(t, j+1, "TO"):
			h.targets = append(h.targets, targets(t, j+2, noun, ClassDDL)...)
		case isWord(t, j, "SWAP") && isWord(t, j+1, "WITH"):
			h.targets = append(h.targets, targets(t, j+2, noun, ClassDDL)...)
		case isWord(t, j, "CLONE"):
			if o, _, ok := parseName(t, j+1, false); ok {
				o.Kind, o.Access = noun, ClassRead
				h.targets = append(h.targets, o)
			}
		}
	}
	return h, nil
}

// parseName reads a possibly qualified name at t[i]. allowCall lets a name be
// followed by "(" (CREATE TABLE t (…)); otherwise name( is a function call
// and not an object.
func parseName(t []Token, i int, allowCall bool) (ObjectRef, int, bool) {
	if i >= len(t) {
		return ObjectRef{}, i, false
	}
	if t[i].Kind == TokVariable || t[i].Kind == TokBind {
		return ObjectRef{Kind: "TABLE", Dynamic: true}, i + 1, true
	}
	if isWord(t, i, "IDENTIFIER") && isOp(t, i+1, "(") {
		end := skipParens(t, i+1)
		if end < 0 {
			end = len(t)
		}
		return ObjectRef{Kind: "TABLE", Dynamic: true}, end, true
	}
	var o ObjectRef
	for {
		switch {
		case i < len(t) && (t[i].Kind == TokWord || t[i].Kind == TokQuoted):
			o.Parts = append(o.Parts, NamePart{Name: t[i].Value, Quoted: t[i].Kind == TokQuoted})
			i++
		case len(o.Parts) > 0 && isOp(t, i, "."):
			// db..table: the omitted schema.
			o.Parts = append(o.Parts, NamePart{})
		default:
			return ObjectRef{}, i, false
		}
		if !isOp(t, i, ".") {
			break
		}
		i++
	}
	if len(o.Parts) > 3 {
		return ObjectRef{Kind: "TABLE", Dynamic: true}, i, true
	}
	if !allowCall && isOp(t, i, "(") {
		return ObjectRef{}, i, false
	}
	return o, i, true
}

// notCallWords are words before a "(" that opens a subquery or a list
// rather than a function call.
var (
	notCallWords = setOf("IN", "EXISTS", "AS", "ANY", "ALL", "SOME", "FROM", "JOIN", "ON", "AND", "OR", "NOT",
		"WHERE", "HAVING", "SELECT", "UNION", "USING", "WITH", "LATERAL", "VALUES", "INTO", "BY", "THEN",
		"ELSE", "WHEN", "CASE", "RETURN", "INTERSECT", "EXCEPT", "MINUS", "DISTINCT", "LIKE", "ILIKE")
)

// fromEnd are words that end a FROM clause's list of table references.
var fromEnd = setOf("WHERE", "GROUP", "HAVING", "QUALIFY", "ORDER", "LIMIT", "OFFSET", "FETCH", "UNION",
	"INTERSECT", "EXCEPT", "MINUS", "WINDOW", "SET", "WHEN", "CONNECT", "START", "VALUES", "SELECT")

// sources collects the objects read through FROM (and every comma-separated
// item of its list, joins included), JOIN and USING, at any depth except
// inside function-call parentheses (EXTRACT(YEAR FROM d)).
func sources(t []Token, skip map[int]bool) []ObjectRef {
	type frame struct{ call, inFrom bool }
	frames := []frame{{}}
	var out []ObjectRef
	ref := func(j int) {
		// A parenthesised reference: FROM (db.s.t) or FROM ((a JOIN b …)).
		for isOp(t, j, "(") {
			j++
		}
		if isWord(t, j, "SELECT", "WITH", "LATERAL") {
			return
		}
		if isWord(t, j, "TABLE") && isOp(t, j+1, "(") {
			// TABLE($var), TABLE(:1) and TABLE('name') name a table at run
			// time; TABLE(fn(…)) is a table function.
			if j+2 < len(t) && (t[j+2].Kind == TokVariable || t[j+2].Kind == TokBind || t[j+2].Kind == TokString) {
				out = append(out, ObjectRef{Kind: "TABLE", Access: ClassRead, Dynamic: true})
			}
			return
		}
		if o, _, ok := parseName(t, j, false); ok {
			o.Kind, o.Access = "TABLE", ClassRead
			out = append(out, o)
		}
	}
	for i := 0; i < len(t); i++ {
		top := &frames[len(frames)-1]
		switch {
		case isOp(t, i, "("):
			call := i > 0 && ((t[i-1].Kind == TokWord && !notCallWords[t[i-1].Value]) || t[i-1].Kind == TokQuoted)
			frames = append(frames, frame{call: call})
		case isOp(t, i, ")"):
			if len(frames) > 1 {
				frames = frames[:len(frames)-1]
			}
		case top.call && isWord(t, i, "SELECT"):
			// A subquery straight inside a call's parentheses.
			top.call = false
		case top.call:
		case isWord(t, i, "FROM") && !skip[i]:
			top.inFrom = true
			ref(i + 1)
		case isWord(t, i, "JOIN", "USING"):
			ref(i + 1)
		case top.inFrom && isOp(t, i, ","):
			ref(i + 1)
		case top.inFrom && t[i].Kind == TokWord && fromEnd[t[i].Value]:
			top.inFrom = false
		}
	}
	return out
}
