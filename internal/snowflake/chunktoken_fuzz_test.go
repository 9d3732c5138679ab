package snowflake

import (
	"bytes"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzChunkToken feeds the chunk URL parser what a driver (or anyone in the
// agents' cgroup) may send: any id, sealed parameter and owner. Nothing
// panics; nothing opens but what the table sealed, for its owner.
func FuzzChunkToken(f *testing.F) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	tab, err := NewSealedChunkTable(ChunkKeys{Current: bytes.Repeat([]byte{5}, ChunkKeySize)}, time.Hour, func() time.Time { return now })
	if err != nil {
		f.Fatal(err)
	}
	q, err := ParseQueryResponse([]byte(chunkReply))
	if err != nil {
		f.Fatal(err)
	}
	if _, err := tab.RewriteReply(q, "h", "o", "sess-1"); err != nil {
		f.Fatal(err)
	}
	again, _ := ParseQueryResponse(q.Body.Bytes())
	_, _ = again.RewriteChunkURLs(func(_ int, u string) (string, error) {
		id, sealed := splitChunkURL(u)
		f.Add(id, sealed, "o")
		f.Add(id, sealed, "p")
		f.Add(id, sealed[:len(sealed)/2], "o")
		return u, nil
	})
	f.Add("", "", "")
	f.Add(NewChunkID(), "AAAA", "o")
	f.Add("c1AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "o")
	f.Fuzz(func(t *testing.T, id, sealed, owner string) {
		ref, err := tab.Open(id, sealed, owner)
		if err != nil {
			if ref.URL != "" || ref.Headers != nil {
				t.Fatalf("refusal %v returned %+v", err, ref)
			}
			return
		}
		// The seeds are sealed anew (random nonces) in every fuzzing
		// process, so what opens is checked against the reply.
		want := []string{"https://b.s3.amazonaws.com/r/data_0?sig=a", "https://b.s3.amazonaws.com/r/data_1?sig=b"}
		if owner != "o" || ref.Index < 0 || ref.Index >= len(want) || ref.URL != want[ref.Index] || ref.QueryID != "01bf" || ref.Count != 2 || ref.Session != "sess-1" {
			t.Fatalf("opened a URL the table never sealed for %q: %q %q → %+v", owner, id, sealed, ref)
		}
	})
}

// FuzzChunkRefSeal seals any reference and opens it again: what comes back
// is what went in.
func FuzzChunkRefSeal(f *testing.F) {
	f.Add("https://b.s3.amazonaws.com/r/data_0?sig=a", "01bf", "x-amz-server-side-encryption-customer-key", "k", 3, 7, "h/1", "s1")
	f.Add("", "", "", "", 0, 0, "", "")
	f.Add("u", "q", "h", "v", 0, 0, "o", "s")
	f.Fuzz(func(t *testing.T, u, qid, hk, hv string, index, count int, owner, session string) {
		r, err := newChunkKeyring(ChunkKeys{Current: bytes.Repeat([]byte{6}, ChunkKeySize)})
		if err != nil {
			t.Fatal(err)
		}
		exp := time.Unix(1_900_000_000, 0)
		in := ChunkRef{URL: u, QueryID: qid, Headers: map[string]string{hk: hv}, Index: index, Count: count, Session: session, Owner: owner, Expires: exp}
		id, sealed, err := r.seal(in)
		if err != nil {
			if index >= 0 && count >= 0 && index <= maxChunkIndex && count <= maxChunkIndex && len(session) <= maxChunkSession && len(u)+len(qid)+len(hk)+len(hv) < maxChunkSealed/2 {
				t.Fatalf("seal %+v: %v", in, err)
			}
			return
		}
		out, err := r.open(id, sealed, owner, exp.Add(-time.Second))
		if err != nil {
			t.Fatalf("open what was sealed: %v", err)
		}
		if out.URL != u || out.QueryID != qid || out.Headers[hk] != hv || len(out.Headers) != 1 || out.Index != index || out.Count != count || out.Session != session || out.Owner != owner || !out.Expires.Equal(exp) {
			t.Fatalf("sealed %+v, opened %+v", in, out)
		}
	})
}

// FuzzDecodeChunkRef: the plaintext decoder never panics, and what it
// accepts encodes back to something it reads the same.
func FuzzDecodeChunkRef(f *testing.F) {
	b, _ := encodeChunkRef(ChunkRef{URL: "u", QueryID: "q", Headers: map[string]string{"a": "b"}, Index: 2, Expires: time.Unix(1e9, 0)})
	f.Add(b)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		ref, err := decodeChunkRef(b)
		if err != nil {
			return
		}
		again, err := encodeChunkRef(ref)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", ref, err)
		}
		back, err := decodeChunkRef(again)
		if err != nil || back.URL != ref.URL || back.QueryID != ref.QueryID || back.Index != ref.Index || !back.Expires.Equal(ref.Expires) || len(back.Headers) != len(ref.Headers) {
			t.Fatalf("%+v re-read as %+v (%v)", ref, back, err)
		}
	})
}

// splitChunkURL returns the chunk id and sealed part of a gateway URL.
func splitChunkURL(s string) (id, sealed string) {
	u, err := url.Parse(s)
	if err != nil {
		return "", ""
	}
	return Route("GET", u).ChunkID, u.Query().Get(ChunkTokenParam)
}

// TestChunkRefFormats opens references in both shapes of format c1: one
// sealed before the count and session were added (ending after its
// headers), which gateways in flight during an upgrade issued, and one
// carrying them.
func TestChunkRefFormats(t *testing.T) {
	r, err := newChunkKeyring(ChunkKeys{Current: bytes.Repeat([]byte{7}, ChunkKeySize)})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Unix(1_900_000_000, 0)
	for _, tc := range []struct {
		name string
		in   ChunkRef
		tail bool
	}{
		{"without session or count", ChunkRef{URL: "https://s/a", QueryID: "q", Index: 2, Owner: "o", Expires: exp}, false},
		{"with session and count", ChunkRef{URL: "https://s/a", QueryID: "q", Index: 2, Count: 5, Session: "sess-9", Owner: "o", Expires: exp}, true},
		{"session only", ChunkRef{URL: "https://s/a", Index: 0, Session: "s", Owner: "o", Expires: exp}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			plain, err := encodeChunkRef(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			// The earlier shape is a prefix of the later one.
			base, _ := encodeChunkRef(ChunkRef{URL: tc.in.URL, QueryID: tc.in.QueryID, Index: tc.in.Index, Expires: exp})
			if got := len(plain) > len(base); got != tc.tail || !bytes.HasPrefix(plain, base) {
				t.Fatalf("plaintext %x, earlier shape %x", plain, base)
			}
			id, sealed, err := r.seal(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			out, err := r.open(id, sealed, "o", exp.Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if out.Index != tc.in.Index || out.Count != tc.in.Count || out.Session != tc.in.Session || out.URL != tc.in.URL {
				t.Fatalf("sealed %+v, opened %+v", tc.in, out)
			}
		})
	}
	for _, bad := range []ChunkRef{
		{URL: "u", Index: -1, Expires: exp},
		{URL: "u", Count: -1, Expires: exp},
		{URL: "u", Count: maxChunkIndex + 1, Expires: exp},
		{URL: "u", Session: strings.Repeat("s", maxChunkSession+1), Expires: exp},
	} {
		if _, _, err := r.seal(bad); err == nil {
			t.Errorf("sealed out-of-range %+v", bad)
		}
	}
}
