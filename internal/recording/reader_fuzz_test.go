package recording

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// FuzzReader feeds untrusted recording files to Open and Next, the reader
// behind the auditor's sessions commands. Whatever the file, the walk ends
// (io.EOF or a Problem) within as many records as the file has bytes, never
// panics, and a file Verify accepts reads to io.EOF, sealed, with as many
// records as Verify counted.
func FuzzReader(f *testing.F) {
	k := newKeys(f)
	for _, encrypt := range []bool{false, true} {
		opts := k.options(encrypt)
		opts.Sync = SyncAlways
		path, _ := writeSession(f, f.TempDir(), "fuzz", opts, 2, true)
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(b[:len(b)/2])
		f.Add(b[:len(b)-1])
	}
	f.Add([]byte(Magic))
	f.Add([]byte(Magic + "H\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"))
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(dir, "r.sgr")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		rep := VerifyReader(bytes.NewReader(data), k.pub, k.id)
		r, err := Open(path, k.id)
		if err != nil {
			if rep.OK() {
				t.Fatalf("Verify accepts the file, Open refuses it: %v", err)
			}
			return
		}
		defer r.Close()
		_ = r.Meta()
		var n uint64
		for {
			_, err := r.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				var p Problem
				if !errors.As(err, &p) {
					t.Fatalf("Next returned %T %v, not a Problem", err, err)
				}
				if rep.OK() {
					t.Fatalf("Verify accepts the file, Next fails: %v", err)
				}
				return
			}
			n++
			if n > uint64(len(data)) {
				t.Fatalf("%d records from %d bytes", n, len(data))
			}
		}
		if rep.OK() && (!r.Sealed() || n != rep.Records) {
			t.Fatalf("verified file: sealed %v, %d records read, %d verified", r.Sealed(), n, rep.Records)
		}
	})
}

// FuzzDecodeArrow feeds untrusted Arrow IPC streams (a recorded result chunk
// reaches the auditor in a recording file) to DecodeArrow: an error or
// columns and rows of that many cells, never a panic.
func FuzzDecodeArrow(f *testing.F) {
	seed := arrowSeed(f)
	f.Add(seed)
	f.Add(seed[:len(seed)/2])
	f.Add([]byte("not arrow"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cols, rows, err := DecodeArrow(data)
		if err != nil {
			return
		}
		for i, row := range rows {
			if len(row) != len(cols) {
				t.Fatalf("row %d has %d cells for %d columns", i, len(row), len(cols))
			}
		}
	})
}
