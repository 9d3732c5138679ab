package recording

import (
	"bytes"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// DecodeArrow reads an Arrow IPC stream (a Snowflake result chunk or inline
// rowsetBase64) into display rows: each cell is its Arrow value rendered as
// text, nil for NULL. Values stay as Snowflake sent them (a NUMBER(10,2) is
// its scaled integer; the column type says the scale).
//
// The gateway never decodes Arrow: it records chunks as they came. Readers
// decode recorded chunks, which reach them only through the verified hash
// chains (recording.Open), so the input is what Snowflake sent. Even so a
// panic inside arrow-go is returned as an error and the allocations made
// through the allocator are capped; arrow-go's schema decoding still sizes
// some slices from the input without a bound, which is why there is no fuzz
// target here.
func DecodeArrow(data []byte) (cols []Column, rows [][]*string, err error) {
	// A forged stream can make arrow-go allocate without bound or panic:
	// allocations are capped relative to the input, and a panic is an error.
	defer func() {
		if p := recover(); p != nil {
			cols, rows, err = nil, nil, fmt.Errorf("arrow stream: malformed (%v)", p)
		}
	}()
	mem := &cappedAllocator{left: int64(len(data))*16 + 1<<20}
	rd, err := ipc.NewReader(bytes.NewReader(data), ipc.WithAllocator(mem))
	if err != nil {
		return nil, nil, fmt.Errorf("arrow stream: %w", err)
	}
	defer rd.Release()
	for _, f := range rd.Schema().Fields() {
		typ := f.Type.String()
		if lt, ok := f.Metadata.GetValue("logicalType"); ok {
			typ = lt
		}
		cols = append(cols, Column{Name: f.Name, Type: typ})
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
