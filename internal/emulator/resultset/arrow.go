package resultset

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
)

// ArrowSchema is the Arrow schema of a result as Snowflake sends it: one
// field per column with the physical type gosnowflake decodes for the
// column's Snowflake type, and Snowflake's field metadata (logicalType,
// precision, scale, charLength, byteLength, finalType).
//
//	fixed         int64 (unscaled: value × 10^scale)
//	real          float64
//	text, variant, object, array   utf8
//	boolean       bool
//	date          date32 (days since the epoch)
//	time          int64 (units of 10^-scale s since midnight)
//	timestamp_ntz, timestamp_ltz   int64 (units of 10^-scale s since the epoch)
//	timestamp_tz  struct{epoch int64 (as above), timezone int32 (offset minutes + 1440)}
//	binary        binary
func ArrowSchema(cols []sqlengine.Column) *arrow.Schema {
	fields := make([]arrow.Field, len(cols))
	for i, c := range cols {
		md := map[string]string{
			"logicalType": strings.ToUpper(c.Type),
			"finalType":   "T",
		}
		var dt arrow.DataType
		switch c.Type {
		case "fixed":
			dt = arrow.PrimitiveTypes.Int64
			md["precision"] = strconv.FormatInt(c.Precision, 10)
			md["scale"] = strconv.FormatInt(c.Scale, 10)
			md["physicalType"] = "SB8"
		case "real":
			dt = arrow.PrimitiveTypes.Float64
			md["physicalType"] = "DOUBLE"
		case "boolean":
			dt = arrow.FixedWidthTypes.Boolean
			md["physicalType"] = "SB1"
		case "date":
			dt = arrow.FixedWidthTypes.Date32
			md["physicalType"] = "SB4"
		case "time", "timestamp_ntz", "timestamp_ltz":
			dt = arrow.PrimitiveTypes.Int64
			md["precision"] = "0"
			md["scale"] = strconv.FormatInt(c.Scale, 10)
			md["physicalType"] = "SB8"
		case "timestamp_tz":
			dt = arrow.StructOf(
				arrow.Field{Name: "epoch", Type: arrow.PrimitiveTypes.Int64, Nullable: false},
				arrow.Field{Name: "timezone", Type: arrow.PrimitiveTypes.Int32, Nullable: false},
			)
			md["precision"] = "0"
			md["scale"] = strconv.FormatInt(c.Scale, 10)
			md["physicalType"] = "SB8"
		case "binary":
			dt = arrow.BinaryTypes.Binary
			md["charLength"] = strconv.FormatInt(c.Length, 10)
			md["byteLength"] = strconv.FormatInt(c.ByteLength, 10)
			md["physicalType"] = "LOB"
		default: // text, variant, object, array
			dt = arrow.BinaryTypes.String
			l := c.Length
			if l == 0 {
				l = 16777216
			}
			bl := c.ByteLength
			if bl == 0 {
				bl = 16777216
			}
			md["charLength"] = strconv.FormatInt(l, 10)
			md["byteLength"] = strconv.FormatInt(bl, 10)
			md["physicalType"] = "LOB"
		}
		fields[i] = arrow.Field{Name: c.Name, Type: dt, Nullable: true, Metadata: arrow.MetadataFrom(md)}
	}
	return arrow.NewSchema(fields, nil)
}

var pow10 = [...]int64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000, 100000000, 1000000000}

// arrowBuilder appends rows to a record builder and flushes batches to an
// IPC writer.
type arrowBuilder struct {
	cols   []sqlengine.Column
	schema *arrow.Schema
	rb     *array.RecordBuilder
	w      *ipc.Writer
	n      int
}

func newArrowBuilder(cols []sqlengine.Column) *arrowBuilder {
	schema := ArrowSchema(cols)
	return &arrowBuilder{cols: cols, schema: schema, rb: array.NewRecordBuilder(memory.NewGoAllocator(), schema)}
}

func (a *arrowBuilder) add(row []any) error {
	for i, v := range row {
		if err := a.appendValue(i, v); err != nil {
			return err
		}
	}
	a.n++
	if a.n >= arrowBatchRows {
		return a.flush()
	}
	return nil
}

func (a *arrowBuilder) appendValue(i int, v any) error {
	b := a.rb.Field(i)
	if v == nil {
		b.AppendNull()
		return nil
	}
	c := a.cols[i]
	switch c.Type {
	case "fixed":
		n, err := unscaled(v, c.Scale)
		if err != nil {
			return err
		}
		b.(*array.Int64Builder).Append(n)
	case "real":
		f, err := toFloat(v)
		if err != nil {
			return err
		}
		b.(*array.Float64Builder).Append(f)
	case "boolean":
		x, err := toBool(v)
		if err != nil {
			return err
		}
		b.(*array.BooleanBuilder).Append(x)
	case "date":
		t, err := toTime(v)
		if err != nil {
			return err
		}
		b.(*array.Date32Builder).Append(arrow.Date32(daysSinceEpoch(t)))
	case "time":
		d, err := toTimeOfDay(v)
		if err != nil {
			return err
		}
		b.(*array.Int64Builder).Append(int64(d) / pow10[9-clampScale(c.Scale)])
	case "timestamp_ntz", "timestamp_ltz":
		t, err := toTime(v)
		if err != nil {
			return err
		}
		b.(*array.Int64Builder).Append(scaledEpoch(t, c.Scale))
	case "timestamp_tz":
		t, err := toTime(v)
		if err != nil {
			return err
		}
		sb := b.(*array.StructBuilder)
		sb.Append(true)
		_, off := t.Zone()
		sb.FieldBuilder(0).(*array.Int64Builder).Append(scaledEpoch(t, c.Scale))
		sb.FieldBuilder(1).(*array.Int32Builder).Append(int32(off/60 + 1440))
	case "binary":
		switch x := v.(type) {
		case []byte:
			b.(*array.BinaryBuilder).Append(x)
		case string:
			b.(*array.BinaryBuilder).Append([]byte(x))
		default:
			return fmt.Errorf("resultset: binary column %s: unexpected %T", c.Name, v)
		}
	default:
		b.(*array.StringBuilder).Append(sqlengine.TextOf(v))
	}
	return nil
}

func clampScale(s int64) int64 {
	if s < 0 {
		return 0
	}
	if s > 9 {
		return 9
	}
	return s
}

// scaledEpoch is t in units of 10^-scale seconds since the epoch.
func scaledEpoch(t time.Time, scale int64) int64 {
	s := clampScale(scale)
	return t.Unix()*pow10[s] + int64(t.Nanosecond())/pow10[9-s]
}

// flush writes the pending rows as one record batch.
func (a *arrowBuilder) flush() error {
	if a.n == 0 {
		return nil
	}
	rec := a.rb.NewRecordBatch()
	defer rec.Release()
	a.n = 0
	if err := a.w.Write(rec); err != nil {
		return fmt.Errorf("resultset: write arrow batch: %w", err)
	}
	return nil
}

func (a *arrowBuilder) close() error {
	defer a.rb.Release()
	if err := a.flush(); err != nil {
		return err
	}
	if err := a.w.Close(); err != nil {
		return fmt.Errorf("resultset: close arrow stream: %w", err)
	}
	return nil
}

// arrowInline builds the rowsetBase64 of an Arrow page.
type arrowInline struct {
	ab   *arrowBuilder
	buf  bytes.Buffer
	page *Page
	rows int
}

func newArrowInline(cols []sqlengine.Column, page *Page) (*arrowInline, error) {
	ai := &arrowInline{ab: newArrowBuilder(cols), page: page}
	ai.ab.w = ipc.NewWriter(&ai.buf, ipc.WithSchema(ai.ab.schema))
	return ai, nil
}

func (a *arrowInline) add(row []any) error {
	a.rows++
	return a.ab.add(row)
}

func (a *arrowInline) finish() error {
	if err := a.ab.close(); err != nil {
		return err
	}
	if a.rows > 0 {
		a.page.RowsetBase64 = base64.StdEncoding.EncodeToString(a.buf.Bytes())
	}
	return nil
}

func (a *arrowInline) abort() { a.ab.rb.Release() }

// arrowChunk writes one chunk as an Arrow IPC stream.
type arrowChunk struct {
	ab   *arrowBuilder
	cf   *chunkFile
	page *Page
}

func newArrowChunk(cols []sqlengine.Column, cf *chunkFile, page *Page) (*arrowChunk, error) {
	ac := &arrowChunk{ab: newArrowBuilder(cols), cf: cf, page: page}
	ac.ab.w = ipc.NewWriter(&cf.plain, ipc.WithSchema(ac.ab.schema))
	return ac, nil
}

func (a *arrowChunk) add(row []any) error {
	a.cf.rows++
	return a.ab.add(row)
}

func (a *arrowChunk) finish() error {
	if err := a.ab.close(); err != nil {
		a.cf.abort()
		return err
	}
	return a.cf.close(a.page)
}

func (a *arrowChunk) abort() {
	a.ab.rb.Release()
	a.cf.abort()
}
