package snowflake

import (
	"bytes"
	"errors"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

const chunkReply = `{"data":{"rowtype":[{"name":"C"}],"rowset":[],"total":2000,"returned":0,` +
	`"chunks":[{"url":"https://b.s3.amazonaws.com/r/data_0?sig=a","rowCount":1000},{"url":"https://b.s3.amazonaws.com/r/data_1?sig=b","rowCount":1000}],` +
	`"chunkHeaders":{"x-amz-server-side-encryption-customer-key":"k"},"queryId":"01bf"},"success":true,"code":null,"message":null}`

// chunkGET is one gateway chunk URL as the gateway's router sees it.
type chunkGET struct {
	raw, id, sealed string
}

// rewrite rewrites chunkReply with tab for owner and returns the gateway
// URLs, checking they route as chunk fetches on host.
func rewrite(t *testing.T, tab *ChunkTable, reply, host, owner string) []chunkGET {
	t.Helper()
	q, err := ParseQueryResponse([]byte(reply))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tab.RewriteReply(q, host, owner, ""); err != nil {
		t.Fatalf("rewrite: %v", err)
	}
	again, err := ParseQueryResponse(q.Body.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := again.Data.Array("chunks")
	if err != nil {
		t.Fatal(err)
	}
	var out []chunkGET
	for i := 0; i < chunks.Len(); i++ {
		c, _ := chunks.Object(i)
		s, _, _ := c.String("url")
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		ep := Route("GET", u)
		if ep.Kind != KindChunk || u.Host != host {
			t.Fatalf("chunk url %s routes to %v", s, ep)
		}
		out = append(out, chunkGET{raw: s, id: ep.ChunkID, sealed: u.Query().Get(ChunkTokenParam)})
	}
	return out
}

func TestChunkTable(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	tab := NewChunkTable(time.Hour, clock)
	gets := rewrite(t, tab, chunkReply, "acme.snowflakecomputing.com", "session-a")
	if len(gets) != 2 {
		t.Fatalf("%d chunk urls", len(gets))
	}
	// Another gateway (another key) with the same clock.
	other := NewChunkTable(time.Hour, clock)
	foreign := rewrite(t, other, chunkReply, "acme.snowflakecomputing.com", "session-a")
	tests := []struct {
		name, id, sealed, owner string
		advance                 time.Duration
		want                    error
		url                     string
	}{
		{"first chunk", gets[0].id, gets[0].sealed, "session-a", 0, nil, "https://b.s3.amazonaws.com/r/data_0?sig=a"},
		{"second chunk", gets[1].id, gets[1].sealed, "session-a", 0, nil, "https://b.s3.amazonaws.com/r/data_1?sig=b"},
		{"another owner", gets[0].id, gets[0].sealed, "session-b", 0, errChunkForged, ""},
		{"ids swapped", gets[1].id, gets[0].sealed, "session-a", 0, errChunkForged, ""},
		{"unknown id (the former random ids)", NewChunkID(), "", "session-a", 0, errChunkMalformed, ""},
		{"no sealed part", gets[0].id, "", "session-a", 0, errChunkMalformed, ""},
		{"another gateway's key", foreign[0].id, foreign[0].sealed, "session-a", 0, errChunkUnknownKey, ""},
		{"just before expiry", gets[0].id, gets[0].sealed, "session-a", time.Hour - time.Second, nil, "https://b.s3.amazonaws.com/r/data_0?sig=a"},
		{"expired", gets[0].id, gets[0].sealed, "session-a", time.Second, errChunkExpired, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now = now.Add(tt.advance)
			ref, err := tab.Open(tt.id, tt.sealed, tt.owner)
			if !errors.Is(err, tt.want) || ref.URL != tt.url {
				t.Fatalf("Open = %+v, %v; want %v", ref, err, tt.want)
			}
			if got, ok := tab.Lookup(tt.id, tt.sealed, tt.owner); ok != (tt.want == nil) || got.URL != tt.url {
				t.Fatalf("Lookup = %+v %v", got, ok)
			}
			if err != nil {
				if !errors.Is(err, ErrChunkToken) {
					t.Fatalf("refusal %v does not wrap ErrChunkToken", err)
				}
				return
			}
			if ref.Headers["x-amz-server-side-encryption-customer-key"] != "k" || ref.QueryID != "01bf" || ref.Owner != tt.owner {
				t.Fatalf("ref %+v", ref)
			}
		})
	}
	// Rewriting the rewritten reply changes nothing.
	q, _ := ParseQueryResponse([]byte(chunkReply))
	_, _ = tab.RewriteReply(q, "acme.snowflakecomputing.com", "session-a", "")
	once := append([]byte(nil), q.Body.Bytes()...)
	again, _ := ParseQueryResponse(once)
	if n, err := tab.RewriteReply(again, "acme.snowflakecomputing.com", "session-a", ""); err != nil || n != 2 || !bytes.Equal(again.Body.Bytes(), once) {
		t.Fatalf("second rewrite: %d %v", n, err)
	}
}

// TestChunkTableRestart: a table made with the same key (a restarted
// gateway) opens what the first one sealed; a table with a fresh key does
// not, and neither does one given the key after it expired from rotation.
func TestChunkTableRestart(t *testing.T) {
	key := bytes.Repeat([]byte{7}, ChunkKeySize)
	first, err := NewSealedChunkTable(ChunkKeys{Current: key}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	gets := rewrite(t, first, chunkReply, "h", "o")
	second, err := NewSealedChunkTable(ChunkKeys{Current: key}, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, g := range gets {
		if ref, err := second.Open(g.id, g.sealed, "o"); err != nil || ref.Index != i {
			t.Fatalf("chunk %d after restart: %+v %v", i, ref, err)
		}
	}
	if _, err := NewChunkTable(0, nil).Open(gets[0].id, gets[0].sealed, "o"); !errors.Is(err, errChunkUnknownKey) {
		t.Fatalf("fresh key: %v", err)
	}
	// Bound tables: the same key and bind open, another bind does not
	// (the same key after a reboot, when owners' cgroup ids start anew).
	bound := func(bind string) *ChunkTable {
		tab, err := NewSealedChunkTable(ChunkKeys{Current: key, Bind: bind}, 0, nil)
		if err != nil {
			t.Fatal(err)
		}
		return tab
	}
	b := rewrite(t, bound("boot-1"), chunkReply, "h", "o")[0]
	binds := []struct {
		name string
		tab  *ChunkTable
		want error
	}{
		{"same bind", bound("boot-1"), nil},
		{"another bind", bound("boot-2"), errChunkForged},
		{"no bind", first, errChunkForged},
	}
	for _, tt := range binds {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := tt.tab.Open(b.id, b.sealed, "o"); !errors.Is(err, tt.want) {
				t.Fatalf("Open: %v, want %v", err, tt.want)
			}
		})
	}
}

func TestChunkTableRotation(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	k1 := bytes.Repeat([]byte{1}, ChunkKeySize)
	k2 := bytes.Repeat([]byte{2}, ChunkKeySize)
	k3 := bytes.Repeat([]byte{3}, ChunkKeySize)
	tab, err := NewSealedChunkTable(ChunkKeys{Current: k1}, time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	old := rewrite(t, tab, chunkReply, "h", "o")[0]
	if err := tab.Rotate(k2); err != nil {
		t.Fatal(err)
	}
	fresh := rewrite(t, tab, chunkReply, "h", "o")[0]
	if old.id[2:8] == fresh.id[2:8] {
		t.Fatalf("rotation kept the key id: %s %s", old.id, fresh.id)
	}
	// A restarted gateway given both keys, previous until one TTL on.
	restarted, err := NewSealedChunkTable(ChunkKeys{Current: k2, Previous: k1, PreviousUntil: now.Add(time.Hour)}, time.Hour, clock)
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		tab     *ChunkTable
		get     chunkGET
		advance time.Duration
		rotate  []byte
		want    error
	}{
		{"old url, rotated table", tab, old, 0, nil, nil},
		{"new url, rotated table", tab, fresh, 0, nil, nil},
		{"old url, restarted with both keys", restarted, old, 0, nil, nil},
		{"new url, restarted with both keys", restarted, fresh, 0, nil, nil},
		{"old url after a second rotation", tab, old, 0, k3, errChunkUnknownKey},
		{"new url after a second rotation", tab, fresh, 0, nil, nil},
		{"new url, restarted, previous key retired", restarted, fresh, 30 * time.Minute, nil, nil},
		{"old url, restarted, previous key retired", restarted, old, 30*time.Minute + time.Second, nil, errChunkUnknownKey},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			now = now.Add(s.advance)
			if s.rotate != nil {
				if err := s.tab.Rotate(s.rotate); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.tab.Open(s.get.id, s.get.sealed, "o"); !errors.Is(err, s.want) {
				t.Fatalf("Open: %v, want %v", err, s.want)
			}
		})
	}
}

func TestNewSealedChunkTableKeys(t *testing.T) {
	k := bytes.Repeat([]byte{9}, ChunkKeySize)
	tests := []struct {
		name string
		keys ChunkKeys
		ok   bool
	}{
		{"current only", ChunkKeys{Current: k}, true},
		{"current and previous", ChunkKeys{Current: k, Previous: bytes.Repeat([]byte{8}, ChunkKeySize)}, true},
		{"same key twice", ChunkKeys{Current: k, Previous: k}, true},
		{"no key", ChunkKeys{}, false},
		{"short key", ChunkKeys{Current: k[:16]}, false},
		{"long key", ChunkKeys{Current: append(k, 0)}, false},
		{"short previous", ChunkKeys{Current: k, Previous: []byte{1}}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSealedChunkTable(tt.keys, 0, nil)
			if (err == nil) != tt.ok {
				t.Fatalf("err = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestChunkTableTamper alters every character of a gateway URL's id and
// sealed part in turn: not one altered URL opens.
func TestChunkTableTamper(t *testing.T) {
	tab := NewChunkTable(0, nil)
	g := rewrite(t, tab, chunkReply, "h", "o")[0]
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	alter := func(s string, i int) string {
		c := alphabet[(strings.IndexByte(alphabet, s[i])+1)%len(alphabet)]
		return s[:i] + string(c) + s[i+1:]
	}
	tests := []struct {
		region     string
		from, to   int // characters of the id or sealed part
		ofSealed   bool
		wantReason []error
	}{
		// The version: refused before any key is tried.
		{"version", 0, 2, false, []error{errChunkMalformed}},
		// The key id: no such key (or, in the last character, bits
		// shared with the nonce).
		{"key id", 2, 8, false, []error{errChunkUnknownKey, errChunkForged, errChunkMalformed}},
		// The nonce: authenticated.
		{"nonce", 8, len(g.id), false, []error{errChunkForged, errChunkMalformed}},
		{"ciphertext and tag", 0, len(g.sealed), true, []error{errChunkForged, errChunkMalformed}},
	}
	for _, tt := range tests {
		t.Run(tt.region, func(t *testing.T) {
			for i := tt.from; i < tt.to; i++ {
				id, sealed := g.id, g.sealed
				if tt.ofSealed {
					sealed = alter(sealed, i)
				} else {
					id = alter(id, i)
				}
				ref, err := tab.Open(id, sealed, "o")
				if err == nil {
					t.Fatalf("character %d altered: opened %+v", i, ref)
				}
				known := false
				for _, w := range tt.wantReason {
					known = known || errors.Is(err, w)
				}
				if !known {
					t.Fatalf("character %d altered: %v", i, err)
				}
			}
		})
	}
}

func TestChunkTableBadInput(t *testing.T) {
	tab := NewChunkTable(0, nil)
	g := rewrite(t, tab, chunkReply, "h", "o")[0]
	tests := []struct {
		name, id, sealed string
	}{
		{"empty", "", ""},
		{"id only", g.id, ""},
		{"id truncated", g.id[:len(g.id)-1], g.sealed},
		{"id extended", g.id + "A", g.sealed},
		{"sealed truncated", g.id, g.sealed[:len(g.sealed)-1]},
		{"sealed shortened by a block", g.id, g.sealed[:len(g.sealed)-4]},
		{"sealed extended", g.id, g.sealed + "AAAA"},
		{"sealed padded", g.id, g.sealed + "="},
		{"sealed not base64", g.id, strings.Repeat("*", len(g.sealed))},
		{"sealed standard base64", g.id, strings.NewReplacer("-", "+", "_", "/").Replace(g.sealed)},
		{"oversized", g.id, strings.Repeat("A", maxChunkSealed+4)},
		{"tag only", g.id, strings.Repeat("A", 22)},
		{"another version", "c2" + g.id[2:], g.sealed},
		{"old random id", NewChunkID(), g.sealed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if ref, err := tab.Open(tt.id, tt.sealed, "o"); !errors.Is(err, ErrChunkToken) {
				t.Fatalf("Open = %+v, %v", ref, err)
			}
		})
	}
}

// TestChunkRefEncoding round-trips references through the plaintext
// encoding, and refuses what cannot be sealed.
func TestChunkRefEncoding(t *testing.T) {
	exp := time.Unix(1_800_000_000, 0)
	tests := []struct {
		name string
		ref  ChunkRef
		ok   bool
	}{
		{"no headers", ChunkRef{URL: "https://s/x?sig=1", QueryID: "q", Index: 3, Expires: exp}, true},
		{"headers", ChunkRef{URL: "https://s/x", Headers: map[string]string{"a": "1", "b": ""}, Index: 0, Expires: exp}, true},
		{"SSE-C headers", ChunkRef{URL: "https://s/x", Headers: map[string]string{
			"x-amz-server-side-encryption-customer-key": "k", "x-amz-server-side-encryption-customer-key-md5": "m", "X-Other": "o"}, Expires: exp}, true},
		{"empty strings", ChunkRef{Expires: exp}, true},
		{"big index", ChunkRef{URL: "u", Index: 1 << 20, Expires: exp}, true},
		{"negative index", ChunkRef{URL: "u", Index: -1, Expires: exp}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := encodeChunkRef(tt.ref)
			if (err == nil) != tt.ok {
				t.Fatalf("encode: %v", err)
			}
			if err != nil {
				return
			}
			got, err := decodeChunkRef(b)
			if err != nil {
				t.Fatal(err)
			}
			if got.URL != tt.ref.URL || got.QueryID != tt.ref.QueryID || got.Index != tt.ref.Index || !got.Expires.Equal(tt.ref.Expires) || len(got.Headers) != len(tt.ref.Headers) {
				t.Fatalf("got %+v, want %+v", got, tt.ref)
			}
			for k, v := range tt.ref.Headers {
				if got.Headers[k] != v {
					t.Fatalf("header %s = %q", k, got.Headers[k])
				}
			}
			// Every truncation is an error, never a panic.
			for i := range len(b) {
				if _, err := decodeChunkRef(b[:i]); err == nil {
					t.Fatalf("truncated at %d decoded", i)
				}
			}
		})
	}
	// A reply whose chunk URL is too long to seal is refused, not cut.
	tab := NewChunkTable(0, nil)
	long := strings.Replace(chunkReply, "sig=a", "sig="+strings.Repeat("a", maxChunkSealed), 1)
	q, err := ParseQueryResponse([]byte(long))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tab.RewriteReply(q, "h", "o", ""); err == nil {
		t.Fatal("an oversized chunk url was sealed")
	}
}

func TestChunkTableConcurrent(t *testing.T) {
	tab := NewChunkTable(0, nil)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 50 {
				if w == 0 && i%10 == 0 {
					key := bytes.Repeat([]byte{byte(i + 1)}, ChunkKeySize)
					if err := tab.Rotate(key); err != nil {
						t.Error(err)
						return
					}
				}
				q, err := ParseQueryResponse([]byte(chunkReply))
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := tab.RewriteReply(q, "h", "o", ""); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// TestChunkURLSize keeps a gateway chunk URL of a real-sized reply short
// enough for every driver and proxy: a presigned S3 URL of 600 bytes and
// the three SSE-C headers make a URL under 1.5 KiB.
func TestChunkURLSize(t *testing.T) {
	presigned := "https://sfc-ds1-customer-stage.s3.us-west-2.amazonaws.com/abcd-s-xxxx0000/results/01c0a1b2-0000-1234-0000-00051234abcd_0/main/data_0_0_12" +
		"?x-amz-server-side-encryption-customer-algorithm=AES256&response-content-encoding=gzip" +
		"&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Date=20261127T075500Z" +
		"&X-Amz-SignedHeaders=host%3Bx-amz-server-side-encryption-customer-algorithm%3Bx-amz-server-side-encryption-customer-key%3Bx-amz-server-side-encryption-customer-key-md5" +
		"&X-Amz-Expires=21599&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20261127%2Fus-west-2%2Fs3%2Faws4_request" +
		"&X-Amz-Signature=" + strings.Repeat("0123456789abcdef", 4)
	reply := strings.Replace(strings.Replace(chunkReply, "https://b.s3.amazonaws.com/r/data_0?sig=a", presigned, 1),
		`"chunkHeaders":{"x-amz-server-side-encryption-customer-key":"k"}`,
		`"chunkHeaders":{"x-amz-server-side-encryption-customer-algorithm":"AES256","x-amz-server-side-encryption-customer-key":"`+strings.Repeat("K", 44)+
			`","x-amz-server-side-encryption-customer-key-md5":"`+strings.Repeat("M", 24)+`"}`, 1)
	g := rewrite(t, NewChunkTable(0, nil), reply, "acme.snowflakecomputing.com", "acme.snowflakecomputing.com/12345")[0]
	t.Logf("presigned URL %d bytes (+%d of SSE-C headers); gateway URL %d bytes (id %d, sealed %d)",
		len(presigned), len("x-amz-server-side-encryption-customer-algorithm")+6+len("x-amz-server-side-encryption-customer-key")+44+len("x-amz-server-side-encryption-customer-key-md5")+24,
		len(g.raw), len(g.id), len(g.sealed))
	if len(g.raw) > 1536 {
		t.Fatalf("gateway chunk URL of %d bytes", len(g.raw))
	}
}
