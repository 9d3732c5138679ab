package emulator

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// FuzzDecodeRequestCaps feeds untrusted bodies, plain or gzip, to
// DecodeRequest under a fuzzed size cap. Whatever the input: a body whose
// wire or inflated size exceeds the cap is refused; a body accepted is
// exactly one JSON object, decoded to what encoding/json makes of the
// inflated text.
func FuzzDecodeRequestCaps(f *testing.F) {
	for _, s := range []string{
		`{"sqlText":"SELECT 1","bindings":{"1":{"type":"TEXT","value":"x"}}}`,
		`{"data":{"LOGIN_NAME":"a","PASSWORD":"b","SESSION_PARAMETERS":{"A":1}}}`,
		`{"oldSessionToken":"t","requestType":"RENEW"} `,
		`{"a":1}{"b":2}`,
		`[1]`,
		`{"n":12345678901234567890}`,
	} {
		f.Add([]byte(s), uint16(1<<15))
		f.Add(gzipped(s), uint16(1<<15))
		f.Add(gzipped(s), uint16(len(s)-1))
	}
	f.Add(append(gzipped(`{"a":1}`), gzipped(`{"b":2}`)...), uint16(100))
	f.Fuzz(func(t *testing.T, body []byte, limit uint16) {
		lim := int64(limit)
		var got map[string]any
		err := DecodeRequest(bytes.NewReader(body), lim, &got)
		plain := body
		if snowflake.IsGzip(body) {
			var gerr error
			if plain, gerr = snowflake.Gunzip(body, 1<<20); gerr != nil {
				if err == nil {
					t.Fatalf("accepted a body that does not inflate: %v", gerr)
				}
				return
			}
		}
		// A cap of 0 is no cap of the caller's: the snowflake package's
		// defaults apply (found by the fuzzer: testdata/fuzz).
		wireCap, plainCap := lim, lim
		if lim <= 0 {
			wireCap, plainCap = snowflake.DefaultMaxBody, snowflake.DefaultMaxDecodedBody
		}
		if int64(len(body)) > wireCap || int64(len(plain)) > plainCap {
			if err == nil {
				t.Fatalf("accepted %d bytes (%d inflated) over a cap of %d", len(body), len(plain), lim)
			}
			return
		}
		if err != nil {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(plain))
		dec.UseNumber()
		var want map[string]any
		if derr := dec.Decode(&want); derr != nil || dec.More() || want == nil {
			t.Fatalf("accepted %q, not exactly one JSON object (%v)", plain, derr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("decoded %v, encoding/json says %v", got, want)
		}
	})
}
