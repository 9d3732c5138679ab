package gateway_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/recording"
)

// FuzzRecorderCommit: whatever an agent sends and upstream answers, the
// recorder turns it into records without panicking and stores it (request
// and reply bodies are untrusted input to the recorder's parsing of SQL,
// bindings, rowsets, chunk lists and chunk bodies).
func FuzzRecorderCommit(f *testing.F) {
	kinds := []string{"login", "query-request", "query-result", "token-request", "chunk", "logout", "heartbeat"}
	f.Add(uint8(1), []byte(`{"sqlText":"SELECT 1","bindings":{"1":{"type":"TEXT","value":"x"}}}`),
		[]byte(`{"success":true,"data":{"queryId":"q","rowtype":[{"name":"A"}],"rowset":[["1"],[null]],"total":2,"chunks":[{"url":"https://h/_snowgate/chunk/abc"}]}}`))
	f.Add(uint8(1), []byte(`{}`), []byte(`{"success":true,"data":{"queryResultFormat":"arrow","rowsetBase64":"/////w=="}}`))
	f.Add(uint8(4), []byte(nil), []byte(`["1","a"],["2",null]`))
	f.Add(uint8(4), []byte(nil), []byte{0x1f, 0x8b, 0, 0})
	f.Add(uint8(0), []byte(`{"data":{"PASSWORD":"p","LOGIN_NAME":"u"}}`), []byte(`{"success":false,"code":"390100","message":"bad"}`))
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	rec, err := gateway.NewSessionRecorder(gateway.SessionRecorderConfig{Dir: f.TempDir(), Writer: recording.Options{SigningKey: key, Sync: recording.SyncNever}})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { rec.Close() })
	f.Fuzz(func(t *testing.T, kind uint8, req, resp []byte) {
		x := &gateway.Exchange{
			Start: time.Now(), Kind: kinds[int(kind)%len(kinds)], Method: "POST", Path: "/p", Status: 200,
			RequestBody: req, ResponseBody: resp, ChunkID: "abc", QueryID: "q",
			Principal: &gateway.Principal{SessionID: "fuzz"},
		}
		if x.Kind == "logout" {
			x.Principal = &gateway.Principal{SessionID: "fuzz-logout"}
		}
		if err := rec.Commit(context.Background(), x); err != nil {
			t.Fatalf("commit: %v", err)
		}
		rec.Observe(x)
	})
}
