package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

const pipedHelperEnv = "SNOWGATE_TESTENV_PIPED_HELPER"

// pipedMsg is both ways of the piped helper's protocol.
type pipedMsg struct {
	Op   string `json:"op,omitempty"`
	Text string `json:"text,omitempty"`
}

// TestPipedHelperProcess is not a test: it is the helper of TestPiped. It
// prints "ready", then serves (ServePiped) each JSON line: "echo" answers
// the text after a line of noise, "say" prints the text as a plain line
// first, "exit" exits at once, a line that is not a request is answered
// "bad: …". When its stdin closes it prints a last JSON line and exits 3.
// It skips otherwise.
func TestPipedHelperProcess(t *testing.T) {
	if os.Getenv(pipedHelperEnv) != "1" {
		t.Skip("helper process for TestPiped")
	}
	fmt.Println("ready")
	err := ServePiped(os.Stdin, os.Stdout, func(m pipedMsg, err error) pipedMsg {
		if err != nil {
			return pipedMsg{Text: "bad: " + err.Error()}
		}
		switch m.Op {
		case "echo":
			fmt.Println("noise, not JSON")
		case "say":
			fmt.Println(m.Text)
		case "exit":
			os.Exit(0)
		}
		return pipedMsg{Text: m.Text}
	})
	if err != nil {
		os.Exit(2)
	}
	fmt.Println(`{"text":"bye"}`)
	os.Exit(3)
}

func startPipedHelper(t *testing.T) *Piped {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestPipedHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), pipedHelperEnv+"=1")
	cmd.Stderr = os.Stderr
	p := StartPiped(t, cmd)
	if got := p.Line(t, time.Minute, func(l string) bool { return l == "ready" }); got != "ready" {
		t.Fatalf("first line %q, want ready", got)
	}
	return p
}

// TestPiped drives a real helper process through each way Piped offers:
// a call, a call answered later, a plain line, the report after stdin
// closes with the exit status, and a call the helper never answers.
func TestPiped(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, p *Piped)
	}{
		{"call skips noise", func(t *testing.T, p *Piped) {
			for _, text := range []string{"one", "two"} {
				var r pipedMsg
				p.Call(t, pipedMsg{Op: "echo", Text: text}, &r, time.Minute)
				if r.Text != text {
					t.Fatalf("answer %q, want %q", r.Text, text)
				}
			}
		}},
		{"go", func(t *testing.T, p *Piped) {
			var r pipedMsg
			select {
			case err := <-p.Go(pipedMsg{Op: "echo", Text: "later"}, &r):
				if err != nil || r.Text != "later" {
					t.Fatalf("answer %q, %v", r.Text, err)
				}
			case <-time.After(time.Minute):
				t.Fatal("no answer")
			}
		}},
		{"line", func(t *testing.T, p *Piped) {
			if _, err := io.WriteString(p.Stdin(), `{"op":"say","text":"plain words"}`+"\n"); err != nil {
				t.Fatal(err)
			}
			if got := p.Line(t, time.Minute, func(l string) bool { return strings.HasPrefix(l, "plain") }); got != "plain words" {
				t.Fatalf("line %q, want %q", got, "plain words")
			}
		}},
		{"bad request line", func(t *testing.T, p *Piped) {
			if _, err := io.WriteString(p.Stdin(), "not JSON\n"); err != nil {
				t.Fatal(err)
			}
			var r pipedMsg
			p.Call(t, pipedMsg{Op: "echo", Text: "after"}, &r, time.Minute) // reads the first answer
			if !strings.HasPrefix(r.Text, "bad: ") {
				t.Fatalf("answer %q, want the decoding error", r.Text)
			}
			p.Call(t, pipedMsg{}, &r, time.Minute) // reads the second
			if r.Text != "after" {
				t.Fatalf("answer %q, want %q", r.Text, "after")
			}
		}},
		{"report and exit status", func(t *testing.T, p *Piped) {
			p.Stdin().Close()
			var r pipedMsg
			line := p.Line(t, time.Minute, func(l string) bool { return strings.HasPrefix(l, "{") })
			if err := json.Unmarshal([]byte(line), &r); err != nil || r.Text != "bye" {
				t.Fatalf("report %q: %v", line, err)
			}
			err := p.Wait(t, time.Minute)
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 3 {
				t.Fatalf("exit %v, want status 3", err)
			}
		}},
		{"helper gone", func(t *testing.T, p *Piped) {
			var r pipedMsg
			if err := <-p.Go(pipedMsg{Op: "exit"}, &r); err == nil || !strings.Contains(err.Error(), "read the answer") {
				t.Fatalf("err %v, want the answer unread", err)
			}
			if err := p.Wait(t, time.Minute); err != nil {
				t.Fatalf("exit %v, want 0", err)
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.run(t, startPipedHelper(t))
		})
	}
}
