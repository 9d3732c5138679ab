package recording

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
)

// WriteJSONLines writes every remaining record of r to dst, one JSON object
// per line, in order (the `sessions export` format). It stops at the first
// integrity problem, after writing the records before it.
func WriteJSONLines(dst io.Writer, r *Reader) (int, error) {
	bw := bufio.NewWriter(dst)
	enc := json.NewEncoder(bw)
	n := 0
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			bw.Flush()
			return n, fmt.Errorf("export after %d records: %w", n, err)
		}
		if err := enc.Encode(rec); err != nil {
			return n, fmt.Errorf("export record %d: %w", rec.Seq, err)
		}
		n++
	}
	if err := bw.Flush(); err != nil {
		return n, fmt.Errorf("export: %w", err)
	}
	return n, nil
}
