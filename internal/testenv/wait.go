package testenv

import (
	"testing"
	"time"
)

// WaitFor polls cond (every 20 ms) until it holds, and fails the test
// naming what it waited for if it does not within timeout. Give a generous
// timeout: the tests run on loaded machines.
func WaitFor(tb testing.TB, timeout time.Duration, cond func() bool, what string) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
