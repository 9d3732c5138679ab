// Package demo runs snowgate's whole path on one machine with embedded
// defaults, and narrates it.
//
// Everything the demo starts is real: the Snowflake-protocol emulator stands
// in for Snowflake, a workload-identity issuer signs the agent's token, the
// `snowgate run` daemon installs its eBPF redirect on a cgroup of its own, and
// an agent in that cgroup connects with the unchanged gosnowflake driver to
// demo.snowflakecomputing.com. The agent reads, runs a DML that waits for a
// reviewer's approval (the demo grants it), has a DDL refused and tries to go
// around the gateway; then the demo prints the session's replay, its
// verification and the key metrics.
//
// The demo runs in a network namespace of its own, so it touches neither the
// host's addresses nor an installed snowgate: the outer process (Run) starts
// the inner one (RunInner) in a fresh namespace; the inner one starts the
// emulator, the daemon and the agent (RunAgent), all in that namespace.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
)

// Options configures a demo run.
type Options struct {
	// Out receives the narration; nil means os.Stdout.
	Out io.Writer
	// Binary is the snowgate executable the demo runs as daemon, agent and
	// CLI; empty means this process's own executable.
	Binary string
	// StateDir keeps the demo's configuration, CA, keys, logs and
	// recordings after it ends; empty means a temporary directory that is
	// removed.
	StateDir string
	// Run, when set, replaces the scripted agent: the command runs in the
	// agents' cgroup with the environment a Snowflake client needs (see
	// AgentEnv), its output passed through.
	Run []string
	// Rows is the size of the multi-chunk SELECT (default 100,000).
	Rows int
}

func (o *Options) defaults() error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Rows <= 0 {
		o.Rows = 100_000
	}
	if o.Binary == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("find the snowgate executable: %w", err)
		}
		o.Binary = exe
	}
	return nil
}

// Run runs the demo: it starts the inner demo (`snowgate demo inner`) in a
// new network namespace and passes its output through.
func Run(ctx context.Context, opts Options) error {
	if err := opts.defaults(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("the demo needs root: it loads eBPF programs, creates a cgroup and a network namespace (run it with sudo)")
	}
	args := []string{"demo", "inner", "--rows", strconv.Itoa(opts.Rows)}
	if opts.StateDir != "" {
		args = append(args, "--state-dir", opts.StateDir)
	}
	if len(opts.Run) > 0 {
		args = append(args, "--run", "--")
		args = append(args, opts.Run...)
	}
	cmd := exec.CommandContext(ctx, opts.Binary, args...)
	cmd.Stdin = os.Stdin
	cmd.Stdout, cmd.Stderr = opts.Out, opts.Out
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	// The inner demo cleans up on SIGTERM; give it the time to.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 30 * 1e9
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("demo failed (exit status %d)", ee.ExitCode())
		}
		return fmt.Errorf("start the demo: %w", err)
	}
	return nil
}
