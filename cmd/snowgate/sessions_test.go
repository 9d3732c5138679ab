package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/google/gopacket"
	"github.com/google/gopacket/layers"
	"github.com/google/gopacket/pcapgo"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/recording"
)

// runCLI runs the snowgate command in-process with args and returns what
// it printed. Flags are reset to their defaults first.
func runCLI(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var reset func(c *cobra.Command)
	reset = func(c *cobra.Command) {
		for _, fs := range []*pflag.FlagSet{c.Flags(), c.PersistentFlags()} {
			fs.VisitAll(func(f *pflag.Flag) {
				if sv, ok := f.Value.(pflag.SliceValue); ok {
					_ = sv.Replace(nil)
				} else {
					_ = f.Value.Set(f.DefValue)
				}
				f.Changed = false
			})
		}
		for _, sub := range c.Commands() {
			reset(sub)
		}
	}
	reset(rootCmd)
	var out bytes.Buffer
	rootCmd.SetOut(&out)
	rootCmd.SetErr(&out)
	rootCmd.SetArgs(args)
	err := rootCmd.Execute()
	return out.String(), err
}

const cliSecret = "pw-cli-secret-98765"

// cliEnv is a recording directory written by the gateway's recorder from
// exchanges as the data path produces them.
type cliEnv struct {
	dir, keyFile, idFile string
	pub                  ed25519.PublicKey
	sessions             []string
}

// arrowStream is an Arrow IPC stream of (N INT64, S STRING) rows.
func arrowStream(t *testing.T, from, n int) []byte {
	t.Helper()
	schema := arrow.NewSchema([]arrow.Field{{Name: "N", Type: arrow.PrimitiveTypes.Int64}, {Name: "S", Type: arrow.BinaryTypes.String, Nullable: true}}, nil)
	b := array.NewRecordBuilder(memory.DefaultAllocator, schema)
	defer b.Release()
	for i := from; i < from+n; i++ {
		b.Field(0).(*array.Int64Builder).Append(int64(i))
		b.Field(1).(*array.StringBuilder).Append(fmt.Sprintf("arrow-%d", i))
	}
	rec := b.NewRecordBatch()
	defer rec.Release()
	var buf bytes.Buffer
	w := ipc.NewWriter(&buf, ipc.WithSchema(schema))
	if err := w.Write(rec); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// newCLIEnv records two sessions (one encrypted when encrypt is set) through
// gateway.SessionRecorder.
func newCLIEnv(t *testing.T, encrypt bool) *cliEnv {
	t.Helper()
	e := &cliEnv{dir: t.TempDir()}
	e.keyFile = filepath.Join(t.TempDir(), "signing-key.pem")
	key, _, err := recording.LoadOrCreateSigningKey(e.keyFile)
	if err != nil {
		t.Fatal(err)
	}
	e.pub = key.Public().(ed25519.PublicKey)
	opts := recording.Options{SigningKey: key}
	if encrypt {
		id, err := age.GenerateX25519Identity()
		if err != nil {
			t.Fatal(err)
		}
		e.idFile = filepath.Join(t.TempDir(), "auditor.age")
		if err := os.WriteFile(e.idFile, []byte(id.String()+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		opts.Recipients = []age.Recipient{id.Recipient()}
	}
	rec, err := gateway.NewSessionRecorder(gateway.SessionRecorderConfig{Dir: e.dir, Writer: opts})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := time.Now()
	for i, who := range []struct{ subject, rule string }{
		{"repo:acme/pipelines:ref:refs/heads/main", "pipelines-main"},
		{"repo:acme/agents:ref:refs/heads/dev", "agents-dev"},
	} {
		p := &gateway.Principal{SessionID: fmt.Sprintf("sess-%d", i+1), Issuer: "https://token.actions.githubusercontent.com",
			Subject: who.subject, Rule: who.rule, Account: "acme", User: "SVC_AGENT", Role: "AGENT_RO", LoggedIn: start}
		wl := gateway.Workload{CgroupID: 42, PID: uint32(100 + i), UID: 1001, Comm: "agent"}
		ex := func(kind, method, path string, req, resp string, v *gateway.Verdict) *gateway.Exchange {
			return &gateway.Exchange{Start: time.Now(), Kind: kind, Account: "acme", Host: "acme.snowflakecomputing.com",
				Workload: wl, Method: method, Path: path, RequestBody: []byte(req), Status: 200,
				ResponseBody: []byte(resp), Principal: p, Verdict: v,
				RequestHeader: http.Header{"Authorization": {`Snowflake Token="` + cliSecret + `"`}, "User-Agent": {"Go/1.19.1"}}}
		}
		steps := []*gateway.Exchange{
			ex("login", "POST", "/session/v1/login-request",
				`{"data":{"LOGIN_NAME":"alice","PASSWORD":"`+cliSecret+`","CLIENT_APP_ID":"Go"}}`,
				`{"success":true,"data":{"token":"`+cliSecret+`","masterToken":"`+cliSecret+`"}}`, nil),
			ex("query-request", "POST", "/queries/v1/query-request",
				`{"sqlText":"SELECT id, name FROM t WHERE id >= ?","bindings":{"1":{"type":"FIXED","value":"2"}}}`,
				`{"success":true,"data":{"queryId":"q-json-`+fmt.Sprint(i)+`","queryResultFormat":"json","rowtype":[{"name":"ID","type":"fixed"},{"name":"NAME","type":"text"}],"rowset":[["2","bob"],["3",null]],"total":2}}`,
				&gateway.Verdict{Class: "read", Action: "allow", Rule: who.rule}),
			ex("query-request", "POST", "/queries/v1/query-request",
				`{"sqlText":"DROP TABLE t"}`,
				`{"success":false,"code":"390400","message":"snowgate: DDL is not allowed for this identity","data":null}`,
				&gateway.Verdict{Class: "ddl", Action: "deny", Rule: who.rule, Reason: "ddl: deny"}),
			ex("query-request", "POST", "/queries/v1/query-request",
				`{"sqlText":"SELECT n, s FROM big"}`,
				`{"success":true,"data":{"queryId":"q-arrow-`+fmt.Sprint(i)+`","queryResultFormat":"arrow","rowtype":[{"name":"N","type":"fixed"},{"name":"S","type":"text"}],"total":5,"chunks":[{"url":"https://acme.snowflakecomputing.com/_snowgate/chunk/c`+fmt.Sprint(i)+`","rowCount":3}],"qrmk":"`+cliSecret+`"}}`, nil),
		}
		for _, x := range steps {
			if err := rec.Commit(ctx, x); err != nil {
				t.Fatal(err)
			}
			rec.Observe(x)
		}
		// As the gateway makes it: the chunk URL names the session, whose
		// principal the fetch carries, and the chunk's place.
		chunk := &gateway.Exchange{Start: time.Now(), Kind: "chunk", Workload: wl, Method: "GET", Path: "/_snowgate/chunk/c" + fmt.Sprint(i),
			ChunkID: "c" + fmt.Sprint(i), QueryID: "q-arrow-" + fmt.Sprint(i), Status: 200, ResponseBody: arrowStream(t, 0, 3),
			Principal: p, Chunk: &gateway.ChunkPlace{Index: 0, Count: 1}}
		if err := rec.Commit(ctx, chunk); err != nil {
			t.Fatal(err)
		}
		rec.Observe(chunk)
		logout := ex("logout", "POST", "/session", `{}`, `{"success":true}`, nil)
		if err := rec.Commit(ctx, logout); err != nil {
			t.Fatal(err)
		}
		rec.Observe(logout)
		e.sessions = append(e.sessions, p.SessionID)
	}
	if err := rec.Close(); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *cliEnv) args(cmd ...string) []string {
	a := append([]string{"sessions"}, cmd...)
	a = append(a, "--dir", e.dir, "--public-key", e.keyFile+recording.PublicKeySuffix)
	if e.idFile != "" {
		a = append(a, "-i", e.idFile)
	}
	return a
}

func TestSessionsCLI(t *testing.T) {
	e := newCLIEnv(t, false)
	tests := []struct {
		name    string
		args    []string
		want    []string
		notWant []string
		fails   bool
	}{
		{"list", e.args("list"), []string{"sess-1", "sess-2", "repo:acme/pipelines", "pipelines-main", "agents-dev", "sealed (session-end)", "AGENT_RO"}, nil, false},
		{"list by rule", e.args("list", "--rule", "agents-dev"), []string{"sess-2"}, []string{"sess-1"}, false},
		{"list by subject", e.args("list", "--subject", "acme/pipelines"), []string{"sess-1"}, []string{"sess-2"}, false},
		{"list by decision", e.args("list", "--decision", "deny"), []string{"sess-1", "sess-2"}, nil, false},
		{"list by absent decision", e.args("list", "--decision", "approve"), nil, []string{"sess-1", "sess-2"}, false},
		{"list since future", e.args("list", "--since", time.Now().Add(time.Hour).Format(time.RFC3339)), nil, []string{"sess-1"}, false},
		{"list bad since", e.args("list", "--since", "yesterday"), []string{"neither RFC 3339 nor a duration"}, nil, true},
		{"show", e.args("show", "sess-1"), []string{"repo:acme/pipelines:ref:refs/heads/main", "SELECT id, name FROM t WHERE id >= ?", "read/allow", "ddl/deny", "DROP TABLE t", "q-json-0"}, nil, false},
		{"show by prefix", e.args("show", "sess-2"), []string{"agents-dev"}, nil, false},
		{"show ambiguous", e.args("show", "sess"), []string{"ambiguous"}, nil, true},
		{"show unknown", e.args("show", "nope"), []string{`no recording "nope"`}, nil, true},
		{"replay", e.args("replay", "sess-1", "--speed", "0"), []string{
			"> login (user alice", "> query [read: allow by pipelines-main]", "bindings:", "ID", "NAME", "bob", "NULL",
			"[ddl: deny", "DDL is not allowed", "chunk 1 of 1", "arrow-2", "-- end of recording"}, []string{cliSecret}, false},
		{"replay max rows", e.args("replay", "sess-1", "--max-rows", "1"), []string{"… 1 more rows", "arrow-0"}, []string{"arrow-2"}, false},
		{"verify", e.args("verify", "sess-1", "sess-2"), []string{"sess-1: OK", "sess-2: OK", "content checked"}, nil, false},
		{"verify all json", e.args("verify", "--all", "--json"), []string{`"ok":true`, `"seal_reason":"session-end"`}, nil, false},
		{"export jsonl", e.args("export", "sess-1"), []string{`"kind":"session-start"`, `"kind":"chunk"`, `"sql":"DROP TABLE t"`}, []string{cliSecret}, false},
		{"export bad format", e.args("export", "sess-1", "--format", "csv"), []string{"want jsonl or pcap"}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, err := runCLI(t, tc.args...)
			if tc.fails != (err != nil) {
				t.Fatalf("err %v (want failure %v)\n%s", err, tc.fails, out)
			}
			if err != nil {
				out += err.Error()
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(out, w) {
					t.Errorf("output has %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestSessionsVerifyTampered checks that verify fails and names the
// problem, for the attacks the format guards against.
func TestSessionsVerifyTampered(t *testing.T) {
	e := newCLIEnv(t, false)
	path := filepath.Join(e.dir, "sess-1"+recording.FileExt)
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	otherKey := filepath.Join(t.TempDir(), "other.pem")
	if _, _, err := recording.LoadOrCreateSigningKey(otherKey); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		mutate func([]byte) []byte
		key    string
		want   string
	}{
		{"flipped byte", func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }, "", "modified"},
		{"truncated", func(b []byte) []byte { return b[:len(b)-30] }, "", "truncated"},
		{"cut at a frame", func(b []byte) []byte { return b[:len(b)-(45+64+300)] }, "", ""},
		{"other key", func(b []byte) []byte { return b }, otherKey + recording.PublicKeySuffix, "untrusted-signer"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(path, tc.mutate(bytes.Clone(orig)), 0o600); err != nil {
				t.Fatal(err)
			}
			args := e.args("verify", "sess-1")
			if tc.key != "" {
				args = []string{"sessions", "verify", "sess-1", "--dir", e.dir, "--public-key", tc.key}
			}
			out, err := runCLI(t, args...)
			if err == nil {
				t.Fatalf("verify passed a tampered recording:\n%s", out)
			}
			if !strings.Contains(out, "FAILED") && !strings.Contains(out, "UNSEALED") {
				t.Errorf("verify output does not say it failed:\n%s", out)
			}
			if tc.want != "" && !strings.Contains(out, tc.want) {
				t.Errorf("verify output lacks %q:\n%s", tc.want, out)
			}
		})
	}
	if err := os.WriteFile(path, orig, 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := runCLI(t, e.args("verify", "sess-1")...); err != nil {
		t.Fatalf("restored recording: %v\n%s", err, out)
	}
}

// TestSessionsEncrypted: without the age identity the seal and frame chain
// verify and the content stays closed; with it everything reads.
func TestSessionsEncrypted(t *testing.T) {
	e := newCLIEnv(t, true)
	noID := []string{"--dir", e.dir, "--public-key", e.keyFile}
	out, err := runCLI(t, append([]string{"sessions", "list"}, noID...)...)
	if err != nil || !strings.Contains(out, "(encrypted: give --identity)") || !strings.Contains(out, "sealed (session-end)") {
		t.Fatalf("list without identity: %v\n%s", err, out)
	}
	out, err = runCLI(t, append([]string{"sessions", "verify", "sess-1"}, noID...)...)
	if err != nil || !strings.Contains(out, "content not checked") {
		t.Fatalf("verify without identity: %v\n%s", err, out)
	}
	if out, err = runCLI(t, append([]string{"sessions", "replay", "sess-1"}, noID...)...); err == nil || !strings.Contains(err.Error(), "encrypted") {
		t.Fatalf("replay without identity: %v\n%s", err, out)
	}
	out, err = runCLI(t, e.args("replay", "sess-1")...)
	if err != nil || !strings.Contains(out, "bob") || !strings.Contains(out, "arrow-1") {
		t.Fatalf("replay with identity: %v\n%s", err, out)
	}
	out, err = runCLI(t, e.args("verify", "--all")...)
	if err != nil || strings.Count(out, "content checked") != 2 {
		t.Fatalf("verify with identity: %v\n%s", err, out)
	}
}

// TestSessionsExportPcap reads the pcap back: two TCP directions whose
// reassembled payloads are the session's HTTP requests and replies.
func TestSessionsExportPcap(t *testing.T) {
	e := newCLIEnv(t, false)
	file := filepath.Join(t.TempDir(), "s.pcap")
	if out, err := runCLI(t, e.args("export", "sess-1", "--format", "pcap", "-o", file)...); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := pcapgo.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var client, server bytes.Buffer
	next := map[bool]uint32{}
	packets := 0
	for {
		data, _, err := r.ReadPacketData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		packets++
		p := gopacket.NewPacket(data, layers.LayerTypeEthernet, gopacket.Default)
		tcpL, ok := p.Layer(layers.LayerTypeTCP).(*layers.TCP)
		if !ok {
			t.Fatalf("packet %d is not TCP", packets)
		}
		if err := p.ErrorLayer(); err != nil {
			t.Fatalf("packet %d: %v", packets, err.Error())
		}
		fromClient := tcpL.DstPort == 80
		if len(tcpL.Payload) > 0 {
			if n, ok := next[fromClient]; ok && n != tcpL.Seq {
				t.Fatalf("packet %d: seq %d, want %d (a gap in the stream)", packets, tcpL.Seq, n)
			}
			next[fromClient] = tcpL.Seq + uint32(len(tcpL.Payload))
			if fromClient {
				client.Write(tcpL.Payload)
			} else {
				server.Write(tcpL.Payload)
			}
		}
	}
	for _, w := range []string{"POST /session/v1/login-request HTTP/1.1", "POST /queries/v1/query-request HTTP/1.1", `"sqlText":"DROP TABLE t"`, "GET /_snowgate/chunk/c0 HTTP/1.1"} {
		if !strings.Contains(client.String(), w) {
			t.Errorf("client stream lacks %q", w)
		}
	}
	for _, w := range []string{"HTTP/1.1 200 OK", `"rowset":[["2","bob"],["3",null]]`, "DDL is not allowed", "application/octet-stream"} {
		if !strings.Contains(server.String(), w) {
			t.Errorf("server stream lacks %q", w)
		}
	}
	if bytes.Contains(client.Bytes(), []byte(cliSecret)) || bytes.Contains(server.Bytes(), []byte(cliSecret)) {
		t.Error("the pcap holds a secret")
	}
	// Every request and reply is whole: the Content-Length of each message
	// matches its body.
	for name, stream := range map[string][]byte{"client": client.Bytes(), "server": server.Bytes()} {
		n := 0
		br := bufio.NewReader(bytes.NewReader(stream))
		for {
			if _, err := br.Peek(1); err != nil {
				break
			}
			var rc io.ReadCloser
			if name == "client" {
				req, err := http.ReadRequest(br)
				if err != nil {
					t.Fatalf("%s message %d: %v", name, n, err)
				}
				rc = req.Body
			} else {
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					t.Fatalf("%s message %d: %v", name, n, err)
				}
				rc = resp.Body
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatalf("%s message %d body: %v", name, n, err)
			}
			n++
		}
		if n != 6 {
			t.Errorf("%s stream: %d messages, want 6 (login, 3 queries, chunk, logout)", name, n)
		}
	}
}
