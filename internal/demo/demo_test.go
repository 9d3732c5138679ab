package demo

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestRun runs the whole demo with a smaller result and checks that every
// step reported what the emulator really did.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := Run(ctx, Options{Out: &out, Rows: 30_000}); err != nil {
		t.Fatalf("demo failed: %v\noutput:\n%s", err, out.String())
	}
	got := out.String()
	for _, want := range []string{
		"CURRENT_USER()=AGENT CURRENT_ROLE()=ANALYST CURRENT_WAREHOUSE()=DEMO_WH",
		"INSERT: 3 rows inserted",
		"row: id=1 customer=acme amount=120.50",
		"row: id=2 customer=globex amount=99.99",
		"30000 rows, sum(N)=449985000,",
		"error 002003 (SQLState 42S02): SQL compilation error: Object 'NO_SUCH_TABLE' does not exist or not authorized.",
		`SYSTEM$WAIT(1) returned "waited 1 seconds"`,
		"==> done",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("demo output lacks %q\noutput:\n%s", want, got)
		}
	}
	if strings.Contains(got, "id=3 customer=initech") {
		t.Errorf("the WHERE AMOUNT > 50 filter let initech (15.00) through:\n%s", got)
	}
	if strings.Contains(got, demoPassword) {
		t.Errorf("the demo printed the password")
	}
}
