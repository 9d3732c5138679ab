package recording

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"filippo.io/age"
)

// keys are one test's signing key and age identity.
type keys struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	id   *age.X25519Identity
}

func newKeys(tb testing.TB) keys {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := age.GenerateX25519Identity()
	if err != nil {
		tb.Fatal(err)
	}
	return keys{priv: priv, pub: pub, id: id}
}

func (k keys) options(encrypt bool) Options {
	o := Options{SigningKey: k.priv}
	if encrypt {
		o.Recipients = []age.Recipient{k.id.Recipient()}
	}
	return o
}

func testMeta(id string) Meta {
	return Meta{
		SessionID: id,
		Started:   time.Date(2026, 11, 26, 23, 0, 0, 0, time.UTC),
		Identity: Identity{Issuer: "https://token.actions.githubusercontent.com", Subject: "repo:acme/pipelines:ref:refs/heads/main",
			Claims: map[string]string{"repository": "acme/pipelines", "ref": "refs/heads/main"}},
		Rule:      "pipelines-main",
		Snowflake: Snowflake{Account: "acme", User: "SVC_AGENT", Role: "AGENT_RO", Warehouse: "AGENT_WH", Database: "ANALYTICS"},
		Workload:  Workload{Cgroup: "/agents.slice/job-1", CgroupID: 4242, PID: 1234, UID: 1001, Process: "python3"},
		Client:    Client{Driver: "PythonConnector", Version: "3.12.0"},
		Source:    "10.0.0.7:51234",
	}
}

func str(s string) *string { return &s }

// queryPair is a request and its response with n rows.
func queryPair(i, n int) []Record {
	rows := make([][]*string, n)
	for r := range rows {
		rows[r] = []*string{str(fmt.Sprint(i*1000 + r)), str(fmt.Sprintf("name-%d-%d", i, r)), nil}
	}
	qid := fmt.Sprintf("01b0-%04d", i)
	return []Record{
		{Kind: KindQueryRequest, Method: "POST", Path: "/queries/v1/query-request?requestId=r" + fmt.Sprint(i),
			SQL: fmt.Sprintf("select id, name, note from t where id > %d", i), Bindings: []byte(`{"1":{"type":"FIXED","value":"12345678901234567890"}}`),
			Statement: &Statement{Class: "read", Decision: "allow", Rule: "pipelines-main"}},
		{Kind: KindQueryResponse, Status: 200, QueryID: qid, Duration: 12 * time.Millisecond,
			Result: &Result{Format: "json", Columns: []Column{{"ID", "fixed"}, {"NAME", "text"}, {"NOTE", "text"}}, TotalRows: int64(n), Rows: rows}},
	}
}

// writeSession writes a sealed (or not) recording of pairs query pairs and
// returns its path and the records as appended.
func writeSession(tb testing.TB, dir, id string, opts Options, pairs int, seal bool) (string, []Record) {
	tb.Helper()
	w, err := NewWriter(dir, testMeta(id), opts)
	if err != nil {
		tb.Fatal(err)
	}
	var all []Record
	for i := 0; i < pairs; i++ {
		for _, rec := range queryPair(i, 3) {
			if err := w.Append(context.Background(), rec); err != nil {
				tb.Fatal(err)
			}
			all = append(all, rec)
		}
	}
	if seal {
		if err := w.Seal(SealSessionEnd); err != nil {
			tb.Fatal(err)
		}
	}
	return w.Path(), all
}

// readAll reads every record of a recording.
func readAll(tb testing.TB, path string, ids ...age.Identity) (Meta, []Record, error) {
	tb.Helper()
	r, err := Open(path, ids...)
	if err != nil {
		return Meta{}, nil, err
	}
	defer r.Close()
	var recs []Record
	for {
		rec, err := r.Next()
		if err == io.EOF {
			return r.Meta(), recs, nil
		}
		if err != nil {
			return r.Meta(), recs, err
		}
		recs = append(recs, rec)
	}
}

// frames splits a recording into its frames.
func frames(tb testing.TB, b []byte) []frame {
	tb.Helper()
	sc, err := newFrameScanner(bytes.NewReader(b))
	if err != nil {
		tb.Fatal(err)
	}
	var out []frame
	for {
		f, err := sc.next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, f)
	}
}

// encode writes frames back as stored (their stored hashes and seqs).
func encode(fs []frame) []byte {
	b := []byte(Magic)
	for _, f := range fs {
		var hdr [frameHeadLen]byte
		putFrameHead(hdr[:], f.kind, f.seq, len(f.body))
		b = append(b, hdr[:]...)
		b = append(b, f.body...)
		b = append(b, f.hash[:]...)
	}
	return b
}

// rechain renumbers the frames and recomputes every hash, as a forger
// without the signing key could.
func rechain(fs []frame) []byte {
	var prev [frameHashLen]byte
	b := []byte(Magic)
	for i, f := range fs {
		b, prev = appendFrame(b, prev, f.kind, uint64(i), f.body)
	}
	return b
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}
