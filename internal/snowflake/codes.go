package snowflake

// Error and status codes the drivers react to. The protocol notes (§5.2) list
// how gosnowflake and snowflake-sdk behave on each.
const (
	// CodeQueryInProgress: synchronous query still running; the driver re-polls.
	CodeQueryInProgress = "333333"
	// CodeAsyncInProgress: asynchronous execution in progress; the driver polls getResultUrl.
	CodeAsyncInProgress = "333334"
	// CodeSessionExpired: the session token expired; the driver renews with the master token.
	CodeSessionExpired = "390112"
	// CodeMasterExpired: the master token expired; renewal fails for good.
	CodeMasterExpired = "390114"
	// CodeSessionInvalid: the session token is invalid; "User must login again".
	CodeSessionInvalid = "390104"
	// CodeSessionGone: the session no longer exists.
	CodeSessionGone = "390111"
	// CodeBadCredentials: wrong user or password (and other refused logins).
	CodeBadCredentials = "390100"
	// CodeJWTInvalid: a key-pair JWT that does not verify.
	CodeJWTInvalid = "390144"
	// CodeOAuthInvalid: an invalid OAuth access token.
	CodeOAuthInvalid = "390303"
	// CodeOAuthExpired: an expired OAuth access token.
	CodeOAuthExpired = "390318"
	// CodeNotExecuting: abort of a query that is not executing.
	CodeNotExecuting = "000605"
	// CodeSyntaxError: SQL compilation error, syntax.
	CodeSyntaxError = "001003"
	// CodeObjectNotFound: SQL compilation error, object does not exist or not authorized.
	CodeObjectNotFound = "002003"
	// CodeBadRequest: a request the service cannot parse.
	CodeBadRequest = "390400"
)

// SQL states that accompany the codes above.
const (
	SQLStateLoginFailed   = "08004"
	SQLStateConnection    = "08001"
	SQLStateSyntax        = "42000"
	SQLStateObjectMissing = "42S02"
	SQLStateGeneral       = "HY000"
)

// Statement type ids of query replies (statementTypeId). The drivers treat
// 0x3000–0x3FFF as DML and read rows affected from row 0.
const (
	StatementSelect         int64 = 0x1000
	StatementInsert         int64 = 0x3100
	StatementUpdate         int64 = 0x3200
	StatementDelete         int64 = 0x3300
	StatementMerge          int64 = 0x3400
	StatementMultiInsert    int64 = 0x3500
	StatementDDL            int64 = 0x6000
	StatementMultiStatement int64 = 0xA000
	// StatementSession covers USE and ALTER SESSION.
	StatementSession int64 = 0x5000
)
