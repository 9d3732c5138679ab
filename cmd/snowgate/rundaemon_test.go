package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/testenv"
)

// daemonProc is a `snowgate run` process a test started, and its output:
// in a file (log) or, when log is "", collected in memory.
type daemonProc struct {
	cmd    *exec.Cmd
	log    string
	buf    testenv.SyncBuffer
	exited chan struct{}
	// err is the exit status, once exited is closed.
	err error
}

// startDaemonProc starts cmd, its output going to the file log the caller
// opened for it or, when log is "", to memory. The process is killed at
// cleanup if it is still running.
func startDaemonProc(t testing.TB, cmd *exec.Cmd, log string) *daemonProc {
	t.Helper()
	d := &daemonProc{cmd: cmd, log: log, exited: make(chan struct{})}
	if log == "" {
		cmd.Stdout, cmd.Stderr = &d.buf, &d.buf
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.err = cmd.Wait(); close(d.exited) }()
	t.Cleanup(func() {
		select {
		case <-d.exited:
		default:
			_ = cmd.Process.Kill()
			<-d.exited
		}
	})
	return d
}

// logs is what the daemon has written so far.
func (d *daemonProc) logs() string {
	if d.log == "" {
		return d.buf.String()
	}
	b, _ := os.ReadFile(d.log)
	return string(b)
}

// waitExited waits (up to 2 minutes, or fails the test naming what) for the
// daemon to exit, and returns its exit status.
func (d *daemonProc) waitExited(t testing.TB, what string) error {
	t.Helper()
	select {
	case <-d.exited:
		return d.err
	case <-time.After(2 * time.Minute):
		t.Fatalf("%s: still running after 2 minutes\n%s", what, d.logs())
	}
	return nil
}

// stop sends SIGTERM and returns the exit status (waitExited).
func (d *daemonProc) stop(t testing.TB) error {
	t.Helper()
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return d.waitExited(t, "snowgate run after SIGTERM")
}

// waitAdmin polls GET url through client (an admin endpoint) until ready
// holds for the answer. d, when not nil, is the daemon expected to answer:
// its exit fails the test. It fails the test after 2 minutes, with the last
// answer and d's logs.
func waitAdmin(t testing.TB, d *daemonProc, client *http.Client, url string, ready func(code int, body string) bool) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		resp, err := client.Get(url)
		if err == nil {
			body, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			if rerr == nil && ready(resp.StatusCode, string(body)) {
				return
			}
			err = fmt.Errorf("status %d, body %q (read: %v)", resp.StatusCode, body, rerr)
		}
		logs := ""
		if d != nil {
			select {
			case <-d.exited:
				t.Fatalf("snowgate run exited early (%v):\n%s", d.err, d.logs())
			default:
			}
			logs = d.logs()
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s not ready within 2 minutes: %v\n%s", url, err, logs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
