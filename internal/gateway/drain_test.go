package gateway_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/testenv"
)

// TestShutdownDrains stops the gateway while a statement is held upstream:
// Shutdown stops accepting at once, lets the statement's reply reach the
// driver, then returns; a connect after it is refused (in a restart the
// successor accepts on the same socket instead).
func TestShutdownDrains(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	a := f.startAgent(t)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsn()}); r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	f.inst.Server.Faults().SetLatency(emulator.EndpointQuery, 3*time.Second)
	held := send(a, clientCmd{Op: "query", SQL: "SELECT 6 + 1"})
	waitFor(t, "the statement to be in progress", func() bool { return f.gw.LimitStats().Queries == 1 })

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		done <- f.gw.Shutdown(ctx)
	}()
	r := <-held
	if r.Err != "" || fmt.Sprint(r.Rows) != "[[7]]" {
		t.Errorf("statement in progress at shutdown: rows %v, error %q; want [[7]]", r.Rows, r.Err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("shutdown: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("shutdown did not return within 2 minutes")
	}
	snow := testenv.SnowflakeAddr.String() + ":443"
	r = a.do(t, clientCmd{Op: "https", Addr: snow, SNI: testHost, Method: "GET", Path: "/"})
	if !strings.Contains(r.Err, "refused") {
		t.Errorf("connect after shutdown: status %d, error %q; want connection refused", r.Status, r.Err)
	}
}
