package recording

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
)

// FuzzVerify: the verifier and the record decoder survive any bytes: no
// panic, and anything that is not a genuine sealed recording is not OK.
func FuzzVerify(f *testing.F) {
	k := newKeys(f)
	var seeds [][]byte
	for _, encrypt := range []bool{false, true} {
		opts := k.options(encrypt)
		opts.Sync = SyncAlways
		path, _ := writeSession(f, f.TempDir(), "fuzz", opts, 2, true)
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		seeds = append(seeds, b)
		f.Add(b)
		f.Add(b[:len(b)/2])
	}
	f.Add([]byte(Magic))
	f.Add([]byte(Magic + "H\x00\x00\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, ids := range [][]any{nil, {k.id}} {
			var rep Report
			if ids == nil {
				rep = VerifyReader(bytes.NewReader(data), k.pub)
			} else {
				rep = VerifyReader(bytes.NewReader(data), k.pub, k.id)
			}
			genuine := false
			for _, s := range seeds {
				genuine = genuine || bytes.Equal(s, data)
			}
			if rep.OK() && !genuine {
				t.Fatalf("Verify OK on altered input of %d bytes", len(data))
			}
			for _, p := range rep.Problems {
				_ = p.Error()
			}
		}
	})
}

// FuzzRedactJSON: redaction never panics and always yields valid JSON.
func FuzzRedactJSON(f *testing.F) {
	for _, tt := range secretRecords {
		if len(tt.rec.Body) > 0 {
			f.Add([]byte(tt.rec.Body))
		}
	}
	f.Add([]byte(`{"a":[1,2.5e300,-0,"x?sig=1"],"token":null}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, data []byte) {
		out := RedactJSON(data)
		if len(bytes.TrimSpace(data)) > 0 && !json.Valid(out) {
			t.Fatalf("RedactJSON(%q) = %q, not JSON", data, out)
		}
		RedactText(string(data))
		RedactSQL(string(data))
		RedactURL(string(data))
	})
}
