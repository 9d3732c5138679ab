package recording

import (
	"bufio"
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestWriteJSONLines(t *testing.T) {
	k := newKeys(t)
	path, want := writeSession(t, t.TempDir(), "export", k.options(true), 3, true)
	tests := []struct {
		name    string
		damage  func([]byte) []byte
		records int
		wantErr bool
	}{
		{"intact", func(b []byte) []byte { return b }, len(want) + 1, false},
		{"a segment altered", func(b []byte) []byte {
			fs := frames(t, b)
			b[fs[4].offset+frameHeadLen+30] ^= 1
			return b
		}, 5, true}, // frames: header, start, then one segment per query pair
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			orig, _ := os.ReadFile(path)
			p := filepath.Join(t.TempDir(), "x.sgrec")
			writeFile(t, p, tt.damage(orig))
			r, err := Open(p, k.id)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			var out bytes.Buffer
			n, err := WriteJSONLines(&out, r)
			if (err != nil) != tt.wantErr || n != tt.records {
				t.Fatalf("WriteJSONLines = %d, %v; want %d records, error %v", n, err, tt.records, tt.wantErr)
			}
			sc := bufio.NewScanner(&out)
			sc.Buffer(nil, 1<<20)
			lines := 0
			for sc.Scan() {
				var rec Record
				if err := json.Unmarshal(sc.Bytes(), &rec); err != nil || rec.Seq != uint64(lines) {
					t.Fatalf("line %d: %v (seq %d)", lines, err, rec.Seq)
				}
				lines++
			}
			if tt.wantErr && !IsProblem(err, ProblemModified) {
				t.Errorf("error %v is not a %s Problem", err, ProblemModified)
			}
			if r.Sealed() == tt.wantErr {
				t.Errorf("Reader.Sealed = %v", r.Sealed())
			}
			if lines != tt.records {
				t.Errorf("%d lines, want %d", lines, tt.records)
			}
		})
	}
}
