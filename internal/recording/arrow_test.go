package recording

import (
	"bytes"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// arrowSeed is a small Arrow IPC stream: (N INT64, S STRING) with a NULL.
func arrowSeed(tb testing.TB) []byte {
	tb.Helper()
	schema := arrow.NewSchema([]arrow.Field{{Name: "N", Type: arrow.PrimitiveTypes.Int64}, {Name: "S", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	b.Field(0).(*array.Int64Builder).AppendValues([]int64{1, 2, 3}, nil)
	b.Field(1).(*array.StringBuilder).AppendValues([]string{"a", "", "c"}, []bool{true, false, true})
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeArrow(t *testing.T) {
	cols, rows, err := DecodeArrow(arrowSeed(t))
	if err != nil {
		t.Fatal(err)
	}
	if len(cols) != 2 || cols[0].Name != "N" || cols[1].Name != "S" || len(rows) != 3 {
		t.Fatalf("cols %v, %d rows", cols, len(rows))
	}
	if *rows[0][0] != "1" || *rows[0][1] != "a" || rows[1][1] != nil || *rows[2][0] != "3" {
		t.Fatalf("rows %v %v %v", rows[0], rows[1], rows[2])
	}
	if _, _, err := DecodeArrow([]byte("not arrow")); err == nil {
		t.Fatal("garbage decoded")
	}
}

func TestWithScale(t *testing.T) {
	for _, tc := range []struct {
		in    string
		scale int
		want  string
	}{
		{"12050", 2, "120.50"},
		{"9999", 2, "99.99"},
		{"5", 2, "0.05"},
		{"-5", 3, "-0.005"},
		{"0", 2, "0.00"},
		{"-12050", 2, "-120.50"},
		{"100", 2, "1.00"},
	} {
		if got := withScale(tc.in, tc.scale); got != tc.want {
			t.Errorf("withScale(%q, %d) = %q, want %q", tc.in, tc.scale, got, tc.want)
		}
	}
}
