package gateway_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

// TestNodeThroughGateway runs the unchanged Node snowflake-sdk driver in the
// agents' cgroup against acme.snowflakecomputing.com: it trusts the gateway
// CA through NODE_EXTRA_CA_CERTS (as the appliance injects it), checks OCSP
// against the gateway's responder, and reads a multi-chunk JSON result
// through rewritten chunk URLs.
func TestNodeThroughGateway(t *testing.T) {
	f := newFixture(t, fixtureOptions{})
	c := testenv.NewNodeClient(t)
	c.CAFile = f.caFile
	c.Proc = &testenv.Proc{Cgroup: f.cg, Netns: f.ns, Root: true}
	const rows = seqRows
	want := testenv.NewNodeRowsDigest()
	for i := range rows {
		n, s := strconv.Itoa(i), "row-"+strconv.Itoa(i)
		want.Add(&n, &s)
	}
	sel := testenv.NodeExecute(fmt.Sprintf("SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))", rows))
	sel.FetchAsString = testenv.NodeFetchAllAsString
	sel.Output = "digest"
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	res, err := c.Run(ctx,
		testenv.NodeConnect(testenv.NodeConnection{Account: testAccount, Username: testUser, Password: testPassword}),
		testenv.NodeExecute("CREATE TABLE n (id INT)"),
		testenv.NodeExecute("INSERT INTO n VALUES (?), (?)", 1, 2),
		sel,
		testenv.NodeExecute("SELEC broken"),
		testenv.NodeDestroy(),
	)
	if err != nil {
		t.Fatalf("node client: %v", err)
	}
	if len(res) != 6 {
		t.Fatalf("%d results, want 6", len(res))
	}
	for _, r := range res[:4] {
		if err := r.Err(); err != nil {
			t.Fatalf("step %d (%s): %v", r.Step, r.Op, err)
		}
	}
	if r := res[2]; r.NumUpdatedRows == nil || *r.NumUpdatedRows != 2 {
		t.Errorf("insert updated %v rows, want 2", r.NumUpdatedRows)
	}
	d := res[3].Digest
	if d == nil || d.Count != rows || d.SHA256 != want.Sum() {
		t.Errorf("digest %+v, want %d rows with sha256 %s", d, rows, want.Sum())
	}
	if e := res[4].Error; e == nil || e.Code != snowflake.CodeSyntaxError && e.Code != "1003" {
		t.Errorf("broken SQL: error %+v, want code 001003", e)
	}
	if n := f.sink.count(snowflake.KindChunk.String(), 200); n < 2 {
		t.Errorf("%d chunk fetches through the gateway, want several", n)
	}
	if f.gw.Stats.OCSP.Load() == 0 {
		t.Error("no OCSP request reached the gateway")
	}
}
