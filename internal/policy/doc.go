// Package policy classifies Snowflake SQL and decides, per identity rule,
// whether a statement is allowed, denied or held for approval.
//
// The lexer ([Lex]) reads Snowflake's dialect: unquoted words (upper-cased)
// and "quoted" identifiers (exact), '…' strings with doubled-quote and backslash
// escapes, $$…$$ strings, numbers, session variables ($x, $1), bind markers
// (?, :1, :name), stage references (@st/path), the file:// argument of PUT
// and GET, operators, ';', and --, // and /* */ comments. It never guesses:
// anything it cannot read with certainty — unterminated strings or comments,
// "/*" inside a block comment (nesting differs between dialects), a bare CR
// or Unicode line separator inside a line comment, any non-ASCII character
// outside strings, quoted identifiers and comments (Cyrillic or fullwidth
// look-alikes, NBSP, zero-width characters, a BOM) — is a *LexError, and the
// text is [ClassUnknown].
//
// [Classify] splits the tokens on ';' (and on the ->> flow operator, which
// chains statements); more than one non-empty statement is
// [ClassMultiStatement], with every part classified too. A single statement
// is classified by its leading keywords. Decisions worth knowing:
//
//   - SHOW, DESCRIBE, EXPLAIN (of a query or DML, which it does not run) and
//     LIST are read. SELECT … INTO and SELECT … FOR UPDATE are unknown.
//   - USE WAREHOUSE/DATABASE/SCHEMA, ALTER SESSION, SET/UNSET of variables
//     and BEGIN/COMMIT/ROLLBACK are session. USE ROLE, USE SECONDARY ROLES
//     and ALTER SESSION of a parameter the gateway sets for the rule
//     (QUERY_TAG for attribution, MULTI_STATEMENT_COUNT, statement timeouts,
//     ROWS_PER_RESULTSET) are privileged.
//   - COPY INTO <table> FROM @stage is dml (a load from a stage the account
//     already governs); COPY INTO <table> FROM '<url>' or with CREDENTIALS or
//     STORAGE_INTEGRATION, COPY INTO @stage or '<url>' (unload), PUT, GET
//     and REMOVE are file_transfer.
//   - TRUNCATE is ddl, as in workload-identity.md §5.3.
//   - GRANT, REVOKE, CALL, EXECUTE TASK, and CREATE/ALTER/DROP of users,
//     roles, integrations, policies, network rules, shares, secrets,
//     connections, replication/failover groups and the account are
//     privileged; so are CREATE/ALTER of procedures, functions, tasks, pipes,
//     alerts, notebooks and Streamlit apps, whose bodies run later with the
//     owner's rights. CALL and stored code are privileged rather than unknown
//     because the statement itself is readable and an operator may want to
//     allow a known procedure.
//   - EXECUTE IMMEDIATE, BEGIN … END and DECLARE blocks are unknown: their
//     bodies are dynamic or procedural and the classifier does not see them.
//   - A read statement that contains a reserved write keyword (INSERT,
//     UPDATE, DELETE, CREATE, DROP, ALTER, GRANT, REVOKE) anywhere is
//     unknown; a call of a SYSTEM$ function not known to be read-only makes
//     any statement at least privileged.
//   - When a string holds a backslash, the text is also read without
//     backslash escapes (standard SQL); if that reading is valid and
//     stricter, it wins, so a divergence from Snowflake's lexer cannot hide a
//     statement.
//   - Texts over [MaxStatementBytes] are unknown without being lexed.
//
// Classes are ordered by strictness (read < session < dml < ddl <
// file_transfer < privileged < multi_statement < unknown); FuzzClassify checks
// that adding comments or whitespace between tokens never lowers the class.
//
// Objects: table references after FROM (with its comma list), JOIN and USING
// are reads; the target of INSERT, UPDATE, DELETE, MERGE, COPY, TRUNCATE and
// of CREATE/ALTER/DROP (and RENAME TO, SWAP WITH) carries the statement's
// class; CLONE sources are reads. IDENTIFIER(…), variables and binds are
// dynamic. [Resolve] fills omitted parts from the session [Namespace].
//
// A [Policy] ([New] from a [Config]) decides with an action per class and an
// ordered list of rules by class and object pattern (DATABASE.SCHEMA.OBJECT,
// * and ? per part, quoted parts exact). Each object access takes the first
// rule that matches it; a name not fully known takes the strictest action of
// every rule it could match. The statement takes the strictest action over
// its accesses and its class; a multi-statement text also needs every part
// to pass. Rules in observe mode are recorded in the [Decision] but not
// enforced. Denied or held statements get a Snowflake-shaped error from
// [Decision.Error].
package policy
