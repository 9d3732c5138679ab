package testenv

import (
	"os"
	"testing"
)

// DriverEnv is the environment of a Snowflake driver process a test starts
// (gosnowflake, or the test binary re-executed around it): this process's
// environment, then extra, then the CA trust and a home of its own. The
// driver trusts only the CA in caFile (SSL_CERT_FILE, and SSL_CERT_DIR at
// the empty home), keeps its caches (OCSP responses) in that fresh temporary
// home, and skips the cloud-platform detection that would probe metadata
// addresses.
func DriverEnv(tb testing.TB, caFile string, extra ...string) []string {
	tb.Helper()
	home := tb.TempDir()
	env := append(os.Environ(), extra...)
	return append(env,
		"SSL_CERT_FILE="+caFile,
		"SSL_CERT_DIR="+home,
		"HOME="+home,
		"SF_OCSP_RESPONSE_CACHE_DIR="+home,
		"SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true",
	)
}
