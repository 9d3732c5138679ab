package testenv

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"sync"
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

	// The process is waited for once, and only when asked (Wait, cleanup):
	// exec closes the stdout pipe after Wait, and a helper's last lines
	// may still be unread when it exits.
	waitOnce sync.Once
	done     chan struct{}
	err      error
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
	p := &Piped{Cmd: cmd, in: in, out: bufio.NewReader(out), done: make(chan struct{})}
	tb.Cleanup(func() {
		in.Close()
		select {
		case <-p.exited():
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-p.exited()
		}
	})
	return p
}

// Stdin is the helper's standard input. Closing it tells the helper to
// exit (or, for a helper that works until then, to report).
func (p *Piped) Stdin() io.WriteCloser { return p.in }

// Stdout is the reader of the helper's standard output that Call, Go and
// Line read from: a test reads it itself only while none of them waits.
func (p *Piped) Stdout() *bufio.Reader { return p.out }

// Call writes req as one JSON line and decodes the next line that holds a
// JSON object into resp; other lines (the test framework may print its own)
// are skipped. It fails the test if the helper's stdout ends, or nothing
// comes within timeout.
func (p *Piped) Call(tb testing.TB, req, resp any, timeout time.Duration) {
	tb.Helper()
	select {
	case err := <-p.Go(req, resp):
		if err != nil {
			tb.Fatal(err)
		}
	case <-time.After(timeout):
		b, _ := json.Marshal(req)
		tb.Fatalf("helper request %s: no answer within %v", b, timeout)
	}
}

// Go is Call without the wait, for a test that acts while the helper works
// (or that must not fail from another goroutine): it writes req and returns
// a channel that yields once, nil when the answer has been decoded into resp
// (read resp only then), or the error that kept it from coming.
func (p *Piped) Go(req, resp any) <-chan error {
	ch := make(chan error, 1)
	b, err := json.Marshal(req)
	if err != nil {
		ch <- fmt.Errorf("helper request: %w", err)
		return ch
	}
	if _, err := p.in.Write(append(b, '\n')); err != nil {
		ch <- fmt.Errorf("helper request %s: %w", b, err)
		return ch
	}
	go func() {
		line, err := p.readLine(func(line string) bool { return strings.HasPrefix(line, "{") })
		if err != nil {
			ch <- fmt.Errorf("helper request %s: read the answer: %w", b, err)
			return
		}
		if err := json.Unmarshal([]byte(line), resp); err != nil {
			ch <- fmt.Errorf("helper request %s: answer %q: %w", b, line, err)
			return
		}
		ch <- nil
	}()
	return ch
}

// Line returns the helper's next output line (without its line end) for
// which want is true, skipping the others: for a helper that speaks in
// plain lines ("ready", "listening on …"). It fails the test if stdout
// ends first, or no such line comes within timeout.
func (p *Piped) Line(tb testing.TB, timeout time.Duration, want func(line string) bool) string {
	tb.Helper()
	type res struct {
		line string
		err  error
	}
	ch := make(chan res, 1)
	go func() {
		line, err := p.readLine(func(line string) bool { return want(trimEOL(line)) })
		ch <- res{trimEOL(line), err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			tb.Fatalf("%s output: %v (last %q)", p.Cmd.Path, r.err, r.line)
		}
		return r.line
	case <-time.After(timeout):
		tb.Fatalf("%s: no line expected within %v", p.Cmd.Path, timeout)
	}
	return ""
}

// Wait waits for the helper to exit and returns what exec.Cmd.Wait does.
// Read all output wanted before: the pipe closes once it has exited. It
// fails the test if the helper is still running after timeout.
func (p *Piped) Wait(tb testing.TB, timeout time.Duration) error {
	tb.Helper()
	select {
	case <-p.exited():
		return p.err
	case <-time.After(timeout):
		tb.Fatalf("%s still running after %v", p.Cmd.Path, timeout)
	}
	return nil
}

// exited starts the one wait for the process and returns what closes when
// it has exited.
func (p *Piped) exited() <-chan struct{} {
	p.waitOnce.Do(func() {
		go func() {
			p.err = p.Cmd.Wait()
			close(p.done)
		}()
	})
	return p.done
}

// readLine reads lines until want is true for one, and returns it (with
// its line end); at the end of the output, or on a read error, it returns
// what it read of the last line and the error.
func (p *Piped) readLine(want func(line string) bool) (string, error) {
	for {
		line, err := p.out.ReadString('\n')
		if err != nil || want(line) {
			return line, err
		}
	}
}

func trimEOL(line string) string { return strings.TrimRight(line, "\r\n") }

// ServePiped is the helper's side of Piped: it decodes each line of in (a
// JSON object) into a Req, and writes what handle answers as one JSON line
// to out, until in ends. handle gets the decoding error, if any, instead of
// a request. ServePiped returns when in ends, with the error that ended it
// early (a line over 1 MiB, out closed).
func ServePiped[Req, Resp any](in io.Reader, out io.Writer, handle func(req Req, err error) Resp) error {
	enc := json.NewEncoder(out)
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		var req Req
		err := json.Unmarshal(sc.Bytes(), &req)
		if err := enc.Encode(handle(req, err)); err != nil {
			return fmt.Errorf("helper answer: %w", err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("helper requests: %w", err)
	}
	return nil
}
