// Package testenv holds helpers shared by the integration tests: root checks,
// cgroups, network namespaces, running clients as an unprivileged user, and the
// Node driver harness.
//
// A typical redirect test:
//
//	ns := testenv.NewNetns(t)       // lo up, unreachable default routes
//	cg := testenv.NewCgroup(t)      // removed, processes killed, at the end
//	// ... attach programs to cg.Path, listen with ns.Listen ...
//	r := testenv.RunClient(t, testenv.Proc{Cgroup: cg, Netns: ns},
//		testenv.ClientAction{Op: testenv.OpConnect, Network: "tcp4", Addr: "203.0.113.10:443"})
//	// r.Errno, r.Peer (getpeername), r.Received ...
//
// Clients are the test binary itself, re-executed: importing testenv installs
// (in its init) the launcher that enters the namespace and drops to nobody,
// and the client that performs one ClientAction and prints a ClientResult.
// Command runs any other program the same way. A Session is one such client
// that stays up for a series of actions and can keep a connected socket open
// between them (ClientAction.Hold), for tests that look at a connection from
// both ends while it lives.
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
