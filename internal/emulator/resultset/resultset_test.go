package resultset

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/klauspost/compress/gzip"

	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
)

func openEngine(t testing.TB) *sqlengine.Engine {
	t.Helper()
	e, err := sqlengine.Open(sqlengine.Options{})
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func execute(t testing.TB, e *sqlengine.Engine, sql string) *sqlengine.Result {
	t.Helper()
	res, err := e.Execute(context.Background(), &sqlengine.Session{}, sql, nil)
	if err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return res
}

// typesSQL selects one value of every Snowflake type, then a row of NULLs.
const typesSQL = `SELECT 42 AS fx, 1.239::number(10,2) AS dec, 0.5::float AS r, 'héllo "q"' AS t, TRUE AS b,
 '2024-01-02'::date AS d, '01:02:03.5'::time AS tm, '2024-01-02 03:04:05.123456789'::timestamp_ntz AS ntz,
 '2024-01-02 03:04:05.5 +02:00'::timestamp_tz AS tz, '2024-01-02 03:04:05 +00:00'::timestamp_ltz AS ltz,
 to_binary('CAFE') AS bin, parse_json('{"k":[1,2]}') AS v
UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL`

func TestJSONCells(t *testing.T) {
	e := openEngine(t)
	page, err := Encode(context.Background(), execute(t, e, typesSQL), Options{Format: JSON, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	wantTypes := []string{"fixed", "fixed", "real", "text", "boolean", "date", "time", "timestamp_ntz", "timestamp_tz", "timestamp_ltz", "binary", "variant"}
	for i, rt := range page.RowType {
		if rt.Type != wantTypes[i] {
			t.Errorf("rowtype %d %s: type %s, want %s", i, rt.Name, rt.Type, wantTypes[i])
		}
	}
	if *page.RowType[1].Precision != 10 || *page.RowType[1].Scale != 2 || page.RowType[1].Length != nil {
		t.Errorf("fixed rowtype %+v", page.RowType[1])
	}
	if *page.RowType[3].Length != 9 || *page.RowType[3].ByteLength != 36 || page.RowType[3].Precision != nil {
		t.Errorf("text rowtype %+v", page.RowType[3])
	}
	ntz := time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)
	tz := time.Date(2024, 1, 2, 1, 4, 5, 500000000, time.UTC)
	want := []string{"42", "1.24", "0.5", `héllo "q"`, "1", "19724", "3723.500000000",
		strconv.FormatInt(ntz.Unix(), 10) + ".123456789", strconv.FormatInt(tz.Unix(), 10) + ".500000000 1560",
		strconv.FormatInt(time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).Unix(), 10) + ".000000000", "CAFE", `{"k":[1,2]}`}
	if page.Total != 2 || page.Returned != 2 || len(page.Rowset) != 2 || page.QueryResultFormat != "json" || len(page.Chunks) != 0 {
		t.Fatalf("page %+v", page)
	}
	for i, w := range want {
		if c := page.Rowset[0][i]; c == nil || *c != w {
			t.Errorf("cell %d (%s) = %v, want %q", i, page.RowType[i].Type, c, w)
		}
		if page.Rowset[1][i] != nil {
			t.Errorf("null cell %d = %q", i, *page.Rowset[1][i])
		}
	}
	// The page marshals with string-or-null cells.
	b, err := json.Marshal(page.Rowset)
	if err != nil || !bytes.HasPrefix(b, []byte(`[["42","1.24"`)) {
		t.Errorf("marshal %s %v", b, err)
	}
}

func readChunk(t *testing.T, c Chunk) []byte {
	t.Helper()
	f, err := os.Open(c.File)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	if st.Size() != c.CompressedSize {
		t.Errorf("chunk %s: compressed size %d, recorded %d", c.File, st.Size(), c.CompressedSize)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(body)) != c.UncompressedSize {
		t.Errorf("chunk %s: uncompressed size %d, recorded %d", c.File, len(body), c.UncompressedSize)
	}
	return body
}

func TestChunking(t *testing.T) {
	e := openEngine(t)
	tests := []struct {
		rows, inline, chunk int
		wantChunks          int
	}{
		{0, 10, 10, 0},
		{5, 10, 10, 0},
		{10, 10, 10, 0},
		{11, 10, 10, 1},
		{20, 10, 10, 1},
		{21, 10, 10, 2},
		{2510, 1000, 500, 4},
		{9000, 0, 0, 1}, // defaults: 1000 inline + one chunk
	}
	for _, f := range []Format{JSON, Arrow} {
		for _, tc := range tests {
			t.Run(string(f)+"/"+strconv.Itoa(tc.rows)+"/"+strconv.Itoa(tc.inline)+"/"+strconv.Itoa(tc.chunk), func(t *testing.T) {
				dir := t.TempDir()
				res := execute(t, e, "SELECT seq4() AS n, randstr(5, seq4()) AS s FROM TABLE(GENERATOR(ROWCOUNT => "+strconv.Itoa(tc.rows)+"))")
				page, err := Encode(context.Background(), res, Options{Format: f, InlineRows: tc.inline, ChunkRows: tc.chunk, Dir: dir})
				if err != nil {
					t.Fatal(err)
				}
				if page.Total != int64(tc.rows) || page.Returned != int64(tc.rows) || len(page.Chunks) != tc.wantChunks {
					t.Fatalf("total %d returned %d chunks %d", page.Total, page.Returned, len(page.Chunks))
				}
				// Every row exactly once, in order.
				var seq []int64
				if f == JSON {
					for _, r := range page.Rowset {
						n, _ := strconv.ParseInt(*r[0], 10, 64)
						seq = append(seq, n)
					}
					for _, c := range page.Chunks {
						var rows [][]*string
						body := readChunk(t, c)
						if err := json.Unmarshal(append(append([]byte{'['}, body...), ']'), &rows); err != nil {
							t.Fatalf("chunk body is not rows without brackets: %v: %.80s", err, body)
						}
						if int64(len(rows)) != c.RowCount {
							t.Errorf("chunk rows %d, recorded %d", len(rows), c.RowCount)
						}
						for _, r := range rows {
							n, _ := strconv.ParseInt(*r[0], 10, 64)
							seq = append(seq, n)
						}
					}
				} else {
					if page.RowsetBase64 != "" {
						raw, err := base64.StdEncoding.DecodeString(page.RowsetBase64)
						if err != nil {
							t.Fatal(err)
						}
						seq = append(seq, arrowInts(t, raw, -1)...)
					} else if tc.rows > 0 {
						t.Fatal("no inline rows")
					}
					for _, c := range page.Chunks {
						got := arrowInts(t, readChunk(t, c), c.RowCount)
						seq = append(seq, got...)
					}
				}
				if len(seq) != tc.rows {
					t.Fatalf("decoded %d rows, want %d", len(seq), tc.rows)
				}
				for i, n := range seq {
					if n != int64(i) {
						t.Fatalf("row %d holds %d", i, n)
					}
				}
				if err := page.Remove(); err != nil {
					t.Fatal(err)
				}
				left, _ := os.ReadDir(dir)
				if len(left) != 0 {
					t.Errorf("files left after Remove: %v", left)
				}
			})
		}
	}
}

// arrowInts decodes an IPC stream and returns column 0 as int64s.
func arrowInts(t *testing.T, raw []byte, wantRows int64) []int64 {
	t.Helper()
	rd, err := ipc.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("ipc reader: %v", err)
	}
	defer rd.Release()
	var out []int64
	for rd.Next() {
		rec := rd.RecordBatch()
		col := rec.Column(0).(*array.Int64)
		for i := 0; i < col.Len(); i++ {
			out = append(out, col.Value(i))
		}
	}
	if err := rd.Err(); err != nil {
		t.Fatal(err)
	}
	if wantRows >= 0 && int64(len(out)) != wantRows {
		t.Errorf("chunk holds %d rows, recorded %d", len(out), wantRows)
	}
	return out
}

func TestArrowTypesAndValues(t *testing.T) {
	e := openEngine(t)
	page, err := Encode(context.Background(), execute(t, e, typesSQL), Options{Format: Arrow, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if page.QueryResultFormat != "arrow" || page.Rowset != nil || page.RowsetBase64 == "" {
		t.Fatalf("page %+v", page)
	}
	raw, _ := base64.StdEncoding.DecodeString(page.RowsetBase64)
	rd, err := ipc.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Release()
	schema := rd.Schema()
	wantTypes := []arrow.DataType{arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Float64, arrow.BinaryTypes.String,
		arrow.FixedWidthTypes.Boolean, arrow.FixedWidthTypes.Date32, arrow.PrimitiveTypes.Int64, arrow.PrimitiveTypes.Int64,
		arrow.StructOf(arrow.Field{Name: "epoch", Type: arrow.PrimitiveTypes.Int64}, arrow.Field{Name: "timezone", Type: arrow.PrimitiveTypes.Int32}),
		arrow.PrimitiveTypes.Int64, arrow.BinaryTypes.Binary, arrow.BinaryTypes.String}
	wantLogical := []string{"FIXED", "FIXED", "REAL", "TEXT", "BOOLEAN", "DATE", "TIME", "TIMESTAMP_NTZ", "TIMESTAMP_TZ", "TIMESTAMP_LTZ", "BINARY", "VARIANT"}
	for i, fld := range schema.Fields() {
		if !arrow.TypeEqual(fld.Type, wantTypes[i]) {
			t.Errorf("field %d %s: arrow type %s, want %s", i, fld.Name, fld.Type, wantTypes[i])
		}
		if v, _ := fld.Metadata.GetValue("logicalType"); v != wantLogical[i] {
			t.Errorf("field %d logicalType %q, want %q", i, v, wantLogical[i])
		}
	}
	md := func(i int, k string) string { v, _ := schema.Field(i).Metadata.GetValue(k); return v }
	if md(1, "precision") != "10" || md(1, "scale") != "2" || md(7, "scale") != "9" || md(3, "charLength") != "9" {
		t.Errorf("metadata %v / %v / %v", schema.Field(1).Metadata, schema.Field(7).Metadata, schema.Field(3).Metadata)
	}
	if !rd.Next() {
		t.Fatal("no record batch")
	}
	rec := rd.RecordBatch()
	if rec.NumRows() != 2 {
		t.Fatalf("%d rows", rec.NumRows())
	}
	ntz := time.Date(2024, 1, 2, 3, 4, 5, 123456789, time.UTC)
	tz := time.Date(2024, 1, 2, 1, 4, 5, 500000000, time.UTC)
	got := []any{
		rec.Column(0).(*array.Int64).Value(0), rec.Column(1).(*array.Int64).Value(0), rec.Column(2).(*array.Float64).Value(0),
		rec.Column(3).(*array.String).Value(0), rec.Column(4).(*array.Boolean).Value(0), rec.Column(5).(*array.Date32).Value(0),
		rec.Column(6).(*array.Int64).Value(0), rec.Column(7).(*array.Int64).Value(0),
		rec.Column(8).(*array.Struct).Field(0).(*array.Int64).Value(0), rec.Column(8).(*array.Struct).Field(1).(*array.Int32).Value(0),
		rec.Column(9).(*array.Int64).Value(0), rec.Column(10).(*array.Binary).Value(0), rec.Column(11).(*array.String).Value(0),
	}
	want := []any{int64(42), int64(124), 0.5, `héllo "q"`, true, arrow.Date32(19724), int64(3723500000000), ntz.UnixNano(),
		tz.UnixNano(), int32(120 + 1440), time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano(), []byte{0xca, 0xfe}, `{"k":[1,2]}`}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("values\n%#v\nwant\n%#v", got, want)
	}
	for i := 0; i < int(rec.NumCols()); i++ {
		if !rec.Column(i).IsNull(1) {
			t.Errorf("column %d row 1 not null", i)
		}
	}
}

func TestEncodeCancelled(t *testing.T) {
	e := openEngine(t)
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	res, err := e.Execute(ctx, &sqlengine.Session{}, "SELECT seq4() FROM TABLE(GENERATOR(ROWCOUNT => 200000))", nil)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	_, err = Encode(ctx, res, Options{Dir: dir, InlineRows: 10, ChunkRows: 100})
	if err == nil {
		t.Fatal("cancelled encode succeeded")
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 0 {
		t.Errorf("chunk files left after a failed encode: %v", left)
	}
}

func TestEncodeStatusResult(t *testing.T) {
	e := openEngine(t)
	for _, f := range []Format{JSON, Arrow} {
		page, err := Encode(context.Background(), execute(t, e, "CREATE OR REPLACE TABLE x (a INT)"), Options{Format: f, Dir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		if page.Total != 1 || page.RowType[0].Name != "status" {
			t.Fatalf("%s: %+v", f, page)
		}
		if f == JSON && *page.Rowset[0][0] != "Table X successfully created." {
			t.Errorf("status %q", *page.Rowset[0][0])
		}
	}
	if _, err := Encode(context.Background(), execute(t, e, "SELECT 1"), Options{Format: "xml"}); err == nil {
		t.Error("unknown format accepted")
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "a\"b\\c", "\x00\x1f\n", "héllo", "\xff\xfe", "\u2028"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := appendJSONString(nil, s)
		var got string
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("invalid JSON %q for %q: %v", b, s, err)
		}
		if utf8.ValidString(s) && got != s {
			t.Fatalf("round trip %q -> %q", s, got)
		}
		if !utf8.ValidString(got) {
			t.Fatalf("invalid UTF-8 survived: %q", got)
		}
	})
}
