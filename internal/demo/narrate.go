package demo

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"time"
)

// narrator prints the demo's steps with their progress and elapsed time.
// It is safe for concurrent use: the agent's output and the reviewer's
// actions interleave.
type narrator struct {
	mu    sync.Mutex
	out   io.Writer
	start time.Time
	n, of int
}

func newNarrator(out io.Writer, steps int) *narrator {
	return &narrator{out: out, start: time.Now(), of: steps}
}

// step starts the next numbered step.
func (n *narrator) step(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.n++
	fmt.Fprintf(n.out, "\n[%d/%d %5.1fs] %s\n", n.n, n.of, time.Since(n.start).Seconds(), fmt.Sprintf(format, args...))
}

// info prints a detail of the current step.
func (n *narrator) info(format string, args ...any) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, line := range strings.Split(fmt.Sprintf(format, args...), "\n") {
		fmt.Fprintf(n.out, "    %s\n", line)
	}
}

// block prints a multi-line text (a replay, a table) indented.
func (n *narrator) block(text string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, line := range strings.Split(strings.TrimRight(text, "\n"), "\n") {
		fmt.Fprintf(n.out, "    │ %s\n", line)
	}
}

// prefixWriter indents what another process writes, line by line.
type prefixWriter struct {
	n      *narrator
	prefix string
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(p.buf, b...)
	for {
		i := strings.IndexByte(string(p.buf), '\n')
		if i < 0 {
			break
		}
		line := string(p.buf[:i])
		p.buf = p.buf[i+1:]
		p.n.mu.Lock()
		fmt.Fprintf(p.n.out, "%s%s\n", p.prefix, line)
		p.n.mu.Unlock()
	}
	return len(b), nil
}

// flush writes a last unterminated line.
func (p *prefixWriter) flush() {
	if len(p.buf) > 0 {
		_, _ = p.Write([]byte("\n"))
	}
}
