package resultset

import (
	"bufio"
	"fmt"
	"unicode/utf8"
)

// jsonInline collects the inline rows of a JSON page.
type jsonInline struct {
	enc  *cellEncoder
	page *Page
	rows [][]*string
}

func (j *jsonInline) add(row []any) error {
	out := make([]*string, len(row))
	for i, v := range row {
		s, ok, err := j.enc.cell(i, v)
		if err != nil {
			return err
		}
		if ok {
			out[i] = &s
		}
	}
	j.rows = append(j.rows, out)
	return nil
}

func (j *jsonInline) finish() error {
	if j.rows == nil {
		j.rows = [][]*string{}
	}
	j.page.Rowset = j.rows
	return nil
}

func (j *jsonInline) abort() {}

// jsonChunk writes one chunk body: rows as JSON arrays separated by
// commas, without the outer brackets.
type jsonChunk struct {
	enc  *cellEncoder
	cf   *chunkFile
	page *Page
	bw   *bufio.Writer
	buf  []byte
}

func (j *jsonChunk) add(row []any) error {
	if j.bw == nil {
		j.bw = bufio.NewWriterSize(&j.cf.plain, 64<<10)
	}
	b := j.buf[:0]
	if j.cf.rows > 0 {
		b = append(b, ',')
	}
	b = append(b, '[')
	for i, v := range row {
		if i > 0 {
			b = append(b, ',')
		}
		s, ok, err := j.enc.cell(i, v)
		if err != nil {
			return err
		}
		if !ok {
			b = append(b, "null"...)
			continue
		}
		b = appendJSONString(b, s)
	}
	b = append(b, ']')
	j.buf = b
	if _, err := j.bw.Write(b); err != nil {
		return fmt.Errorf("resultset: write chunk: %w", err)
	}
	j.cf.rows++
	return nil
}

func (j *jsonChunk) finish() error {
	if j.bw != nil {
		if err := j.bw.Flush(); err != nil {
			j.cf.abort()
			return fmt.Errorf("resultset: write chunk: %w", err)
		}
	}
	return j.cf.close(j.page)
}

func (j *jsonChunk) abort() { j.cf.abort() }

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string literal; invalid UTF-8 becomes
// U+FFFD as encoding/json does.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"':
				b = append(b, '\\', '"')
			case '\\':
				b = append(b, '\\', '\\')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
