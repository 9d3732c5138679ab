package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestDemo runs `snowgate demo` as a newcomer does and checks that each step
// reported what really happened: the rule's session context, the rows, the
// approval, the refusals, the metrics, the replay and its verification. With
// --state-dir the recordings stay readable by `snowgate sessions`.
func TestDemo(t *testing.T) {
	testenv.RequireRoot(t)
	bin := buildSnowgate(t)
	state := filepath.Join(t.TempDir(), "state")
	out, err := runSnowgate(t, bin, "demo", "--rows", "20000", "--state-dir", state)
	if err != nil {
		t.Fatalf("demo: %v\n%s", err, out)
	}
	for _, want := range []string{
		"CURRENT_USER()=SNOWGATE_SVC CURRENT_ROLE()=AGENT_READER CURRENT_WAREHOUSE()=AGENT_WH",
		"row: id=1 customer=acme amount=120.50",
		"20000 rows, sum(N)=199990000",
		"approved and run: 1 row updated",
		"order 2 now has amount=109.99",
		"reviewer alice@demo approves",
		"refused: error 003001",
		"QUIC (UDP 443)",
		"raw IP socket (even as root)",
		"logged out",
		"snowgate_",
		"[9/9",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if strings.Contains(out, "DROP TABLE ORDERS\n") && !strings.Contains(out, "refused") {
		t.Error("the DROP was not refused")
	}
	for _, f := range []string{"reviewer.token", "service-user.p8"} {
		secret, err := os.ReadFile(filepath.Join(state, f))
		if err != nil {
			t.Fatal(err)
		}
		if s := strings.TrimSpace(string(secret)); s != "" && strings.Contains(out, s) {
			t.Errorf("the demo printed the content of %s", f)
		}
	}
	if t.Failed() {
		t.Logf("demo output:\n%s", out)
	}
	list, err := runSnowgate(t, bin, "sessions", "list", "--config", filepath.Join(state, "snowgate.yaml"))
	if err != nil || !strings.Contains(list, "demo-agents") {
		t.Errorf("sessions list after the demo: %v\n%s", err, list)
	}
}

// TestDemoRunNode runs the unchanged Node snowflake-sdk with `snowgate demo
// --run`, as the README tells a newcomer to try their own client.
func TestDemoRunNode(t *testing.T) {
	testenv.RequireRoot(t)
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatalf("node not found (the suite installs it): %v", err)
	}
	sdk, err := filepath.Abs("../../internal/testenv/node/node_modules/snowflake-sdk")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sdk); err != nil {
		t.Fatalf("snowflake-sdk not installed (make node-deps): %v", err)
	}
	bin := buildSnowgate(t)
	script := filepath.Join(t.TempDir(), "agent.js")
	if err := os.WriteFile(script, []byte(`const snowflake = require(`+"`"+sdk+"`"+`);
snowflake.configure({ logLevel: 'ERROR' });
const c = snowflake.createConnection({
  account: process.env.SNOWFLAKE_ACCOUNT,
  host: process.env.SNOWFLAKE_HOST,
  authenticator: process.env.SNOWFLAKE_AUTHENTICATOR,
  workloadIdentityProvider: 'OIDC',
  token: process.env.SNOWFLAKE_TOKEN,
});
c.connectAsync().then(() => c.execute({
  sqlText: 'SELECT CURRENT_ROLE() AS R, COUNT(*) AS N FROM DEMO_DB.PUBLIC.ORDERS',
  complete: (err, stmt, rows) => {
    if (err) { console.log('node error: ' + err.message); process.exit(1); }
    console.log('node says role=' + rows[0].R + ' orders=' + rows[0].N);
    c.destroy(() => process.exit(0));
  },
})).catch((err) => { console.log('node connect error: ' + err.message); process.exit(1); });
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := runSnowgate(t, bin, "demo", "--run", node+" "+script)
	if err != nil {
		t.Fatalf("demo --run: %v\n%s", err, out)
	}
	if !strings.Contains(out, "node says role=AGENT_READER orders=3") {
		t.Errorf("demo --run output lacks the Node client's answer:\n%s", out)
	}
}
