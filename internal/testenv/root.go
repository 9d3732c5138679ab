// Package testenv holds helpers shared by the integration tests: root checks,
// cgroups, network namespaces, running clients as an unprivileged user, and the
// Node driver harness.
package testenv

import (
	"os"
	"testing"
)

// RequireRoot skips the test when the process is not root. Tests that attach
// eBPF programs, create cgroups or network namespaces need it; they must still
// run (not skip) in CI, which runs as root.
func RequireRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("skipping: needs root (eBPF, cgroups, network namespaces); run `sudo make test`")
	}
}
