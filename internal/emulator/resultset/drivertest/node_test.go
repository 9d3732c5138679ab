package drivertest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/testenv"
)

// nodeTypesQuery covers every type snowflake-sdk decodes from JSON cells.
// TIMESTAMP_LTZ and BINARY also prove that query replies carry the session
// parameters (TIMEZONE, BINARY_OUTPUT_FORMAT) the driver formats them with.
const nodeTypesQuery = `SELECT 42 AS fx, 1.239::number(10,2) AS dec, 0.5::float AS r, 'héllo' AS t, TRUE AS b,
 '2024-01-02'::date AS d, '2024-01-02 03:04:05'::timestamp_ntz AS ntz,
 '2024-01-02 03:04:05 +02:00'::timestamp_tz AS tz, '2024-01-02 03:04:05 +00:00'::timestamp_ltz AS ltz,
 to_binary('CAFE') AS bin, parse_json('{"k":[1,2]}') AS v
UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL`

// TestNodeDecodesTypes decodes the JSON rowset with the real snowflake-sdk.
func TestNodeDecodesTypes(t *testing.T) {
	inst := emulatortest.Start(t, emulator.Config{Account: "demo", Users: map[string]string{"alice": "pw"},
		QueryWait: 20 * time.Second, ResultWait: 10 * time.Second})
	c := testenv.NewNodeClient(t)
	c.CAFile = inst.CAFile
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := c.Run(ctx,
		testenv.NodeConnect(testenv.NodeConnection{Account: inst.Account, AccessURL: inst.URL, Username: "alice", Password: "pw"}),
		testenv.NodeExecute(nodeTypesQuery),
		testenv.NodeDestroy())
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 3 {
		t.Fatalf("%d results", len(res))
	}
	if err := res[1].Err(); err != nil {
		t.Fatal(err)
	}
	rows := res[1].Rows
	if len(rows) != 2 {
		t.Fatalf("rows %v", rows)
	}
	got := make([]string, len(rows[0]))
	for i, v := range rows[0] {
		switch x := v.(type) {
		case json.Number:
			got[i] = x.String()
		case string:
			got[i] = x
		default:
			b, _ := json.Marshal(x)
			got[i] = string(b)
		}
	}
	// Dates and timestamps come back rendered with the *_OUTPUT_FORMAT
	// parameters of the reply, as they do from Snowflake.
	want := []string{"42", "1.24", "0.5", "héllo", "true", "2024-01-02", "2024-01-02 03:04:05.000",
		"2024-01-02 03:04:05.000 +0200", "2024-01-02 03:04:05.000 +0000", "cafe", `{"k":[1,2]}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("row\n%q\nwant\n%q", got, want)
	}
	for i, v := range rows[1] {
		if v != nil {
			t.Errorf("column %d of the NULL row = %s", i, fmt.Sprint(v))
		}
	}
}
