// Package resultset turns an sqlengine.Result into what a Snowflake query
// reply carries: the rowtype, the first rows inline (JSON "rowset" or Arrow
// "rowsetBase64") and the rest as gzip-compressed chunk files, streaming so
// that a result of millions of rows never sits in memory.
package resultset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/klauspost/compress/gzip"

	"github.com/snowgate/snowgate/internal/emulator/sqlengine"
)

// Format is the query result format of a reply.
type Format string

// The result formats the drivers understand.
const (
	JSON  Format = "json"
	Arrow Format = "arrow"
)

// Defaults for Options fields left zero.
const (
	DefaultInlineRows = 1000
	DefaultChunkRows  = 50000
)

// arrowBatchRows bounds the rows held by an Arrow record builder at once.
const arrowBatchRows = 8192

// Options configures Encode.
type Options struct {
	Format     Format // "" means JSON
	InlineRows int    // rows sent inline in the first page (rowset / rowsetBase64); 0 = DefaultInlineRows
	ChunkRows  int    // rows per chunk file; 0 = DefaultChunkRows
	Dir        string // directory for chunk files ("" = the OS temp dir)
}

// RowType is one entry of a reply's "rowtype", JSON-tagged exactly like
// Snowflake's.
type RowType struct {
	Name       string  `json:"name"`
	Database   string  `json:"database"`
	Schema     string  `json:"schema"`
	Table      string  `json:"table"`
	Type       string  `json:"type"`
	Nullable   bool    `json:"nullable"`
	Length     *int64  `json:"length"`
	ByteLength *int64  `json:"byteLength"`
	Scale      *int64  `json:"scale"`
	Precision  *int64  `json:"precision"`
	Collation  *string `json:"collation"`
}

// Chunk is one chunk file: File holds the gzip-compressed chunk body (JSON:
// rows without outer brackets; Arrow: one IPC stream).
type Chunk struct {
	File                             string
	RowCount                         int64
	UncompressedSize, CompressedSize int64
}

// Page is what a query reply carries about its result.
type Page struct {
	RowType           []RowType
	Rowset            [][]*string // JSON format: inline rows (cells are strings or null)
	RowsetBase64      string      // Arrow format: base64 Arrow IPC stream of the inline rows ("" when there are none)
	Total, Returned   int64
	QueryResultFormat string // "json" | "arrow"
	Chunks            []Chunk
}

// Remove deletes the chunk files.
func (p *Page) Remove() error {
	var errs []error
	for _, c := range p.Chunks {
		if err := os.Remove(c.File); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove chunk %s: %w", c.File, err))
		}
	}
	return errors.Join(errs...)
}

// RowTypes renders result columns as Snowflake rowtype entries.
func RowTypes(cols []sqlengine.Column) []RowType {
	out := make([]RowType, len(cols))
	for i, c := range cols {
		rt := RowType{Name: c.Name, Database: c.Database, Schema: c.Schema, Table: c.Table, Type: c.Type, Nullable: c.Nullable}
		p := func(v int64) *int64 { return &v }
		switch c.Type {
		case "fixed":
			rt.Precision, rt.Scale = p(c.Precision), p(c.Scale)
		case "time", "timestamp_ntz", "timestamp_ltz", "timestamp_tz":
			rt.Precision, rt.Scale = p(0), p(c.Scale)
		case "text", "binary":
			rt.Length, rt.ByteLength = p(c.Length), p(c.ByteLength)
		case "variant", "object", "array":
			rt.Length, rt.ByteLength = p(16777216), p(16777216)
		}
		out[i] = rt
	}
	return out
}

// Encode consumes r.Rows (closing it) and builds the page: the first
// InlineRows rows inline, the rest in chunk files of ChunkRows rows in Dir.
// On error any chunk files already written are removed.
func Encode(ctx context.Context, r *sqlengine.Result, opts Options) (page *Page, err error) {
	defer r.Rows.Close()
	if opts.Format == "" {
		opts.Format = JSON
	}
	if opts.Format != JSON && opts.Format != Arrow {
		return nil, fmt.Errorf("resultset: unknown format %q", opts.Format)
	}
	if opts.InlineRows <= 0 {
		opts.InlineRows = DefaultInlineRows
	}
	if opts.ChunkRows <= 0 {
		opts.ChunkRows = DefaultChunkRows
	}
	page = &Page{RowType: RowTypes(r.Columns), QueryResultFormat: string(opts.Format)}
	built := page
	defer func() {
		if err != nil {
			built.Remove()
			page = nil
		}
	}()
	enc := newCellEncoder(r.Columns)
	var sink rowSink
	newInline := func() (rowSink, error) {
		if opts.Format == JSON {
			return &jsonInline{enc: enc, page: page}, nil
		}
		return newArrowInline(r.Columns, page)
	}
	newChunk := func() (rowSink, error) {
		f, err := os.CreateTemp(opts.Dir, "chunk-*.gz")
		if err != nil {
			return nil, fmt.Errorf("resultset: create chunk file: %w", err)
		}
		cf := &chunkFile{f: f}
		cf.gz, _ = gzip.NewWriterLevel(&cf.compressed, gzip.BestSpeed)
		cf.compressed.w = f
		cf.plain.w = cf.gz
		if opts.Format == JSON {
			return &jsonChunk{enc: enc, cf: cf, page: page}, nil
		}
		return newArrowChunk(r.Columns, cf, page)
	}
	var n int64
	limit := int64(opts.InlineRows)
	sink, err = newInline()
	if err != nil {
		return nil, err
	}
	for r.Rows.Next() {
		if n%1024 == 0 {
			if err := ctx.Err(); err != nil {
				sink.abort()
				return nil, fmt.Errorf("resultset: encode: %w", err)
			}
		}
		if n == limit {
			if err := sink.finish(); err != nil {
				return nil, err
			}
			if sink, err = newChunk(); err != nil {
				return nil, err
			}
			limit += int64(opts.ChunkRows)
		}
		if err := sink.add(r.Rows.Values()); err != nil {
			sink.abort()
			return nil, err
		}
		n++
	}
	if err := r.Rows.Err(); err != nil {
		sink.abort()
		return nil, err
	}
	if err := sink.finish(); err != nil {
		return nil, err
	}
	page.Total, page.Returned = n, n
	return page, nil
}

// rowSink receives the rows of the inline part or of one chunk.
type rowSink interface {
	add(row []any) error
	finish() error // completes the part and records it in the page
	abort()        // releases resources after a failure
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// chunkFile is an open chunk: plain bytes -> gzip -> file, counted on both
// sides of the compressor.
type chunkFile struct {
	f          *os.File
	gz         *gzip.Writer
	plain      countingWriter // into gz
	compressed countingWriter // into f
	rows       int64
}

func (c *chunkFile) close(page *Page) error {
	if err := c.gz.Close(); err != nil {
		c.abort()
		return fmt.Errorf("resultset: compress chunk: %w", err)
	}
	if err := c.f.Close(); err != nil {
		os.Remove(c.f.Name())
		return fmt.Errorf("resultset: write chunk: %w", err)
	}
	page.Chunks = append(page.Chunks, Chunk{File: c.f.Name(), RowCount: c.rows, UncompressedSize: c.plain.n, CompressedSize: c.compressed.n})
	return nil
}

func (c *chunkFile) abort() {
	c.f.Close()
	os.Remove(c.f.Name())
}
