package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Piped is a helper process that a test drives through its stdin and reads
// on its stdout, one JSON object a line each way: a Session, or a driver
// harness of a test's own (the test binary re-executed).
type Piped struct {
	// Cmd is the started command.
	Cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// StartPiped starts cmd with its stdin and stdout piped to the test; the
// caller sets the rest (Env, Stderr, placement through Command). At cleanup
// its stdin is closed, which tells the helper to exit; it is killed if it has
// not exited 30 seconds later.
func StartPiped(tb testing.TB, cmd *exec.Cmd) *Piped {
	tb.Helper()
	in, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	tb.Cleanup(func() {
		in.Close()
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return &Piped{Cmd: cmd, in: in, out: bufio.NewReader(out)}
}

// Call writes req as one JSON line and decodes the next line that holds a
// JSON object into resp; other lines (the test framework may print its own)
// are skipped. It fails the test if the helper's stdout ends, or nothing
// comes within timeout.
func (p *Piped) Call(tb testing.TB, req, resp any, timeout time.Duration) {
	tb.Helper()
	if err := p.call(req, resp, timeout); err != nil {
		tb.Fatal(err)
	}
}

func (p *Piped) call(req, resp any, timeout time.Duration) error {
	b, err := json.Marshal(req)
	if err != nil {
		return fmt.Errorf("helper request: %w", err)
	}
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("helper request %s: %w", b, err)
	}
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		for {
			line, err := p.out.ReadString('\n')
			if err != nil || strings.HasPrefix(line, "{") {
				ch <- res{line, err}
				return
			}
		}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return fmt.Errorf("helper request %s: read the answer: %w", b, r.err)
		}
		if err := json.Unmarshal([]byte(r.line), resp); err != nil {
			return fmt.Errorf("helper request %s: answer %q: %w", b, r.line, err)
		}
		return nil
	case <-time.After(timeout):
		return fmt.Errorf("helper request %s: no answer within %v", b, timeout)
	}
}
