package recording

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// DecodeArrow reads an Arrow IPC stream (a Snowflake result chunk or inline
// rowsetBase64) into display rows: each cell is its Arrow value rendered as
// text, nil for NULL. Values stay as Snowflake sent them (a NUMBER(10,2) is
// its scaled integer in the stream; it is shown with its decimal point, from
// the field's "scale" metadata).
//
// The gateway never decodes Arrow: it records chunks as they came. Readers
// decode recorded chunks, which reach them only through the verified hash
// chains (recording.Open), so the input is what Snowflake sent. Even so a
// panic inside arrow-go is returned as an error, the allocations made
// through the allocator are capped, and the schema message's vector lengths
// are checked against its size before arrow-go sizes slices from them
// (checkArrowSchema; FuzzDecodeArrow).
func DecodeArrow(data []byte) (cols []Column, rows [][]*string, err error) {
	// A forged stream can make arrow-go allocate without bound or panic:
	// allocations are capped relative to the input, and a panic is an error.
	defer func() {
		if p := recover(); p != nil {
			cols, rows, err = nil, nil, fmt.Errorf("arrow stream: malformed (%v)", p)
		}
	}()
	if err := checkArrowSchema(data); err != nil {
		return nil, nil, err
	}
	mem := &cappedAllocator{left: int64(len(data))*16 + 1<<20}
	rd, err := ipc.NewReader(bytes.NewReader(data), ipc.WithAllocator(mem))
	if err != nil {
		return nil, nil, fmt.Errorf("arrow stream: %w", err)
	}
	defer rd.Release()
	var scales []int
	for _, f := range rd.Schema().Fields() {
		typ := f.Type.String()
		if lt, ok := f.Metadata.GetValue("logicalType"); ok {
			typ = lt
		}
		cols = append(cols, Column{Name: f.Name, Type: typ})
		scale := 0
		if sc, ok := f.Metadata.GetValue("scale"); ok && typ == "FIXED" && isIntegerType(f.Type) {
			if n, err := strconv.Atoi(sc); err == nil && n > 0 && n <= 38 {
				scale = n
			}
		}
		scales = append(scales, scale)
	}
	for rd.Next() {
		rec := rd.RecordBatch()
		n := int(rec.NumRows())
		base := len(rows)
		for range n {
			rows = append(rows, make([]*string, len(cols)))
		}
		for c := 0; c < int(rec.NumCols()) && c < len(cols); c++ {
			col := rec.Column(c)
			for i := range n {
				if col.IsNull(i) {
					continue
				}
				s := cellString(col, i)
				if scales[c] > 0 {
					s = withScale(s, scales[c])
				}
				rows[base+i][c] = &s
			}
		}
	}
	if err := rd.Err(); err != nil {
		return cols, rows, fmt.Errorf("arrow stream: %w", err)
	}
	return cols, rows, nil
}

func cellString(col arrow.Array, i int) string { return col.ValueStr(i) }

// isIntegerType reports whether t is a signed integer type, the form
// Snowflake uses for a NUMBER with scale that fits in 64 bits.
func isIntegerType(t arrow.DataType) bool {
	switch t.ID() {
	case arrow.INT8, arrow.INT16, arrow.INT32, arrow.INT64:
		return true
	}
	return false
}

// withScale places the decimal point of a scaled integer: "12050" with
// scale 2 is "120.50", "-5" with scale 3 is "-0.005".
func withScale(digits string, scale int) string {
	neg := strings.HasPrefix(digits, "-")
	digits = strings.TrimPrefix(digits, "-")
	if len(digits) <= scale {
		digits = strings.Repeat("0", scale-len(digits)+1) + digits
	}
	out := digits[:len(digits)-scale] + "." + digits[len(digits)-scale:]
	if neg {
		out = "-" + out
	}
	return out
}

// ResultRows returns the rows a result record holds: its JSON rows, or its
// Arrow data decoded.
func ResultRows(r *Result) ([][]*string, error) {
	if r == nil {
		return nil, nil
	}
	if len(r.Data) == 0 {
		return r.Rows, nil
	}
	_, rows, err := DecodeArrow(r.Data)
	if err != nil {
		return nil, err
	}
	return append(append([][]*string(nil), r.Rows...), rows...), nil
}

// EachResultCell opens the recording at path and calls add with every
// non-NULL cell of every query result it holds (inline rows and chunks, Arrow
// decoded), in record order.
func EachResultCell(path string, add func(cell string)) error {
	r, err := Open(path)
	if err != nil {
		return err
	}
	defer r.Close()
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", filepath.Base(path), err)
		}
		if rec.Kind != KindQueryResponse || rec.Result == nil {
			continue
		}
		rows, err := ResultRows(rec.Result)
		if err != nil {
			return fmt.Errorf("%s record %d: %w", filepath.Base(path), rec.Seq, err)
		}
		for _, row := range rows {
			for _, c := range row {
				if c != nil {
					add(*c)
				}
			}
		}
	}
}

// cappedAllocator is a Go allocator with a budget; exceeding it panics
// (DecodeArrow recovers).
type cappedAllocator struct {
	left int64
}

var errArrowBudget = fmt.Errorf("allocation budget exceeded")

func (a *cappedAllocator) Allocate(size int) []byte {
	a.take(size)
	return make([]byte, size)
}

func (a *cappedAllocator) Reallocate(size int, b []byte) []byte {
	if size <= cap(b) {
		return b[:size]
	}
	a.take(size - len(b))
	nb := make([]byte, size)
	copy(nb, b)
	return nb
}

func (a *cappedAllocator) Free([]byte) {}

func (a *cappedAllocator) take(n int) {
	if n < 0 || int64(n) > a.left {
		panic(errArrowBudget)
	}
	a.left -= int64(n)
}
