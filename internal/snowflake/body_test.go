package snowflake

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

func gz(t testing.TB, b []byte) []byte {
	t.Helper()
	out, err := Gzip(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// zeroReader yields n zero bytes without holding them in memory.
type zeroReader struct{ n int64 }

func (z *zeroReader) Read(p []byte) (int, error) {
	if z.n <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > z.n {
		p = p[:z.n]
	}
	clear(p)
	z.n -= int64(len(p))
	return len(p), nil
}

// bomb returns a small gzip stream inflating to n zero bytes.
func bomb(t testing.TB, n int64) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if _, err := io.Copy(zw, &zeroReader{n: n}); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReadBody(t *testing.T) {
	plain := []byte(`{"data":{"sessionId":1172562260498123456}}`)
	twoMembers := append(gz(t, []byte(`{"a":`)), gz(t, []byte(`1}`))...)
	lim := Limits{MaxBody: 32 << 10, MaxDecoded: 64 << 10}
	tests := []struct {
		name     string
		body     []byte
		encoding string
		want     []byte
		gzipped  bool
		err      error
	}{
		{"plain", plain, "", plain, false, nil},
		{"gzip without header", gz(t, plain), "", plain, true, nil},
		{"gzip with header", gz(t, plain), "gzip", plain, true, nil},
		{"gzip header says identity", gz(t, plain), "identity", plain, true, nil},
		{"multi-member gzip", twoMembers, "", []byte(`{"a":1}`), true, nil},
		{"empty", nil, "", []byte{}, false, nil},
		{"too large on the wire", bytes.Repeat([]byte("a"), 32<<10+1), "", nil, false, ErrBodyTooLarge},
		{"exactly the limit", bytes.Repeat([]byte("a"), 32<<10), "", bytes.Repeat([]byte("a"), 32<<10), false, nil},
		{"gzip bomb", bomb(t, 10<<20), "", nil, true, ErrDecodedTooLarge},
		{"truncated gzip", gz(t, plain)[:20], "", nil, true, ErrBadGzip},
		{"gzip magic then garbage", []byte{0x1f, 0x8b, 0x08, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, "", nil, true, ErrBadGzip},
		{"claims gzip, is plain", plain, "gzip", nil, false, ErrUnsupportedEncoding},
		{"brotli", plain, "br", nil, false, ErrUnsupportedEncoding},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := ReadBody(bytes.NewReader(tt.body), tt.encoding, lim)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b.Plain, tt.want) || b.Gzipped != tt.gzipped {
				t.Fatalf("got %q gzipped=%v, want %q gzipped=%v", b.Plain, b.Gzipped, tt.want, tt.gzipped)
			}
			if b.WireSize != int64(len(tt.body)) {
				t.Fatalf("WireSize = %d, want %d", b.WireSize, len(tt.body))
			}
		})
	}
}

// TestReadBodyHugeStream feeds a 100 MB body and checks that it is refused
// after reading little more than the limit.
func TestReadBodyHugeStream(t *testing.T) {
	src := &zeroReader{n: 100 << 20}
	_, err := ReadBody(src, "", Limits{MaxBody: 1 << 20})
	if !errors.Is(err, ErrBodyTooLarge) {
		t.Fatalf("err = %v, want ErrBodyTooLarge", err)
	}
	if read := int64(100<<20) - src.n; read > 2<<20 {
		t.Fatalf("read %d bytes of a body capped at 1 MiB", read)
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	plain := []byte(`{"x":"y"}`)
	for _, gzipped := range []bool{false, true} {
		wire, err := Encode(plain, gzipped)
		if err != nil {
			t.Fatal(err)
		}
		if IsGzip(wire) != gzipped {
			t.Fatalf("gzipped=%v but IsGzip=%v", gzipped, IsGzip(wire))
		}
		b, err := ReadBody(bytes.NewReader(wire), "", Limits{})
		if err != nil || !bytes.Equal(b.Plain, plain) {
			t.Fatalf("round trip: %q, %v", b.Plain, err)
		}
	}
}

func TestSetRequestBody(t *testing.T) {
	r, err := http.NewRequest(http.MethodPost, "https://a.snowflakecomputing.com/queries/v1/query-request", strings.NewReader("old body"))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Transfer-Encoding", "chunked")
	r.TransferEncoding = []string{"chunked"}
	wire := gz(t, []byte(`{"sqlText":"SELECT 1"}`))
	SetRequestBody(r, wire, "gzip")
	if r.ContentLength != int64(len(wire)) || r.Header.Get("Content-Length") != itoa(len(wire)) {
		t.Fatalf("length %d / %q, want %d", r.ContentLength, r.Header.Get("Content-Length"), len(wire))
	}
	if r.Header.Get("Content-Encoding") != "gzip" || r.Header.Get("Transfer-Encoding") != "" || r.TransferEncoding != nil {
		t.Fatalf("headers %v", r.Header)
	}
	for range 2 { // Body, then GetBody for a replay
		got, _ := io.ReadAll(r.Body)
		if !bytes.Equal(got, wire) {
			t.Fatalf("body %q", got)
		}
		r.Body, _ = r.GetBody()
	}

	resp := &http.Response{Header: http.Header{"Content-Encoding": {"gzip"}}, Body: io.NopCloser(strings.NewReader("x"))}
	SetResponseBody(resp, []byte("{}"), "")
	if resp.ContentLength != 2 || resp.Header.Get("Content-Encoding") != "" || resp.Header.Get("Content-Length") != "2" {
		t.Fatalf("response %d %v", resp.ContentLength, resp.Header)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

func FuzzReadBody(f *testing.F) {
	f.Add([]byte(`{"data":{}}`), "")
	f.Add(gz(f, []byte(`{"data":{}}`)), "gzip")
	f.Add(bomb(f, 1<<20), "")
	f.Add([]byte{0x1f, 0x8b, 0x08}, "")
	lim := Limits{MaxBody: 64 << 10, MaxDecoded: 256 << 10}
	f.Fuzz(func(t *testing.T, data []byte, encoding string) {
		b, err := ReadBody(bytes.NewReader(data), encoding, lim)
		if err != nil {
			return
		}
		if int64(len(b.Plain)) > lim.MaxDecoded {
			t.Fatalf("decoded %d bytes beyond the limit", len(b.Plain))
		}
		if b.Gzipped != IsGzip(data) {
			t.Fatalf("Gzipped=%v for input with IsGzip=%v", b.Gzipped, IsGzip(data))
		}
		if !b.Gzipped && !bytes.Equal(b.Plain, data) {
			t.Fatal("plain body changed")
		}
	})
}
