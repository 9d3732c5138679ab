package testenv

import (
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fatalTB records a Fatalf and ends the goroutine, as testing.T does.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestWaitFor(t *testing.T) {
	tests := []struct {
		name    string
		cond    func() func() bool
		timeout time.Duration
		fail    string // part of the failure message; "" when it must hold
	}{
		{name: "holds at once", cond: func() func() bool { return func() bool { return true } }, timeout: time.Second},
		{name: "holds later", timeout: time.Minute, cond: func() func() bool {
			var n atomic.Int32
			return func() bool { return n.Add(1) >= 5 }
		}},
		{name: "never holds", timeout: 100 * time.Millisecond, fail: "timed out after 100ms waiting for the thing",
			cond: func() func() bool { return func() bool { return false } }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tb := &fatalTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				WaitFor(tb, tc.timeout, tc.cond(), "the thing")
			}()
			<-done
			switch {
			case tc.fail == "" && tb.msg != "":
				t.Fatalf("failed: %s", tb.msg)
			case tc.fail != "" && !strings.Contains(tb.msg, tc.fail):
				t.Fatalf("failure %q, want it to contain %q", tb.msg, tc.fail)
			}
		})
	}
}
