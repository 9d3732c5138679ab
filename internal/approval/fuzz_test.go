package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// FuzzParseTokens feeds untrusted token files to ParseTokens. A file that is
// accepted authenticates exactly the tokens it lists (each at least 16
// characters) as their reviewers, and nothing else.
func FuzzParseTokens(f *testing.F) {
	for _, s := range []string{
		"# reviewers\nalice@example.com " + aliceToken + "\n\n" + requester + " " + bobToken + "\n",
		aliceToken + "\n",
		"alice short\n",
		"a b c\n",
		"\n# only comments\n",
		"  alice\t" + aliceToken + "  \r\n",
	} {
		f.Add(s, aliceToken)
	}
	f.Fuzz(func(t *testing.T, file, probe string) {
		st, err := ParseTokens(strings.NewReader(file))
		if err != nil {
			return
		}
		listed := map[string]string{}
		for _, line := range strings.Split(file, "\n") {
			fs := strings.Fields(line)
			if len(fs) == 0 || strings.HasPrefix(fs[0], "#") {
				continue
			}
			name, tok := "reviewer", fs[0]
			if len(fs) == 2 {
				name, tok = fs[0], fs[1]
			}
			if len(tok) < 16 {
				t.Fatalf("accepted a token shorter than 16 characters: %q", tok)
			}
			listed[tok] = name
		}
		r := httptest.NewRequest(http.MethodGet, "/approvals", nil)
		r.Header.Set("Authorization", "Bearer "+probe)
		who, err := st.Authenticate(r)
		want, ok := listed[strings.TrimSpace(probe)]
		if strings.ContainsAny(probe, "\r\n") {
			return // not a header value a client can send
		}
		if err == nil && !ok {
			t.Fatalf("token %q authenticated as %q but the file does not list it", probe, who)
		}
		if err == nil && who != want {
			t.Fatalf("token %q authenticated as %q, listed for %q", probe, who, want)
		}
	})
}

// staticReviewer authenticates every request as one reviewer.
type staticReviewer string

func (s staticReviewer) Authenticate(*http.Request) (string, error) { return string(s), nil }

// FuzzDecisionRequest feeds untrusted approve/deny bodies and ids to the
// reviewers' API, for a fresh pending request each time. Every answer is a
// JSON object with a status from the documented set; a request is decided
// only with a non-blank reason, only as asked, and only by the reviewer who
// called.
func FuzzDecisionRequest(f *testing.F) {
	for _, tc := range []struct {
		id      string
		real    bool
		approve bool
		body    string
	}{
		{"", true, true, `{"reason":"looks fine"}`},
		{"", true, false, `{"reason":"no"}`},
		{"", true, true, `{"reason":"   "}`},
		{"", true, true, ``},
		{"", true, true, `{"reason":1}`},
		{"", true, true, `{"reason":"a"}{"reason":"b"}`},
		{"", true, true, `{"Reason":"case","reason":""}`},
		{"apr_00000000000000000000", false, true, `{"reason":"x"}`},
		{"../x", false, false, `{"reason":"x"}`},
	} {
		f.Add(tc.id, tc.real, tc.approve, []byte(tc.body))
	}
	st, err := OpenSQLite(context.Background(), filepath.Join(f.TempDir(), "approvals.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { st.Close() })
	svc, err := NewService(Config{Store: st, Timeout: time.Hour, MinApprovers: 1})
	if err != nil {
		f.Fatal(err)
	}
	h := svc.Handler(staticReviewer("alice@example.com"))
	n := 0
	f.Fuzz(func(t *testing.T, id string, real, approve bool, body []byte) {
		n++
		key := fmt.Sprintf("fuzz-%d-%d", time.Now().UnixNano(), n)
		pending, _, err := svc.Submit(context.Background(), Submission{
			SessionID: "s", RequestKey: key, QueryID: "q-" + key, Rule: "r", Class: "dml",
			SQL: "DELETE FROM t", Requester: requester,
		})
		if err != nil {
			t.Fatal(err)
		}
		if real {
			id = pending.ID
		}
		action := "deny"
		if approve {
			action = "approve"
		}
		req, err := http.NewRequest(http.MethodPost, "/approvals/"+url.PathEscape(id)+"/"+action, bytes.NewReader(body))
		if err != nil {
			return
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("status %d: %s", w.Code, w.Body)
		}
		if id != pending.ID {
			if w.Code == http.StatusOK {
				t.Fatalf("id %q decided request %s", id, pending.ID)
			}
			return
		}
		var got Request
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil && w.Code == http.StatusOK {
			t.Fatalf("reply is not a request: %v: %s", err, w.Body)
		}
		var want decisionBody
		derr := json.NewDecoder(io.LimitReader(bytes.NewReader(body), 64<<10)).Decode(&want)
		valid := (derr == nil || errors.Is(derr, io.EOF)) && strings.TrimSpace(want.Reason) != ""
		stored, err := svc.Get(context.Background(), pending.ID)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case !valid:
			if w.Code != http.StatusBadRequest || stored.State != Pending {
				t.Fatalf("invalid body %q answered %d and left the request %s", body, w.Code, stored.State)
			}
		case w.Code != http.StatusOK:
			t.Fatalf("valid body %q answered %d: %s", body, w.Code, w.Body)
		default:
			wantState := Denied
			if approve {
				wantState = Approved
			}
			if stored.State != wantState || got.State != wantState || len(stored.Votes) != 1 ||
				stored.Votes[0].Reviewer != "alice@example.com" || stored.Votes[0].Reason != want.Reason {
				t.Fatalf("after %s with %q: %+v", action, body, stored)
			}
		}

		list := httptest.NewRecorder()
		lreq, err := http.NewRequest(http.MethodGet, "/approvals?limit="+url.QueryEscape(id)+"&state="+url.QueryEscape(string(body)), nil)
		if err != nil {
			t.Fatal(err)
		}
		h.ServeHTTP(list, lreq)
		var arr []json.RawMessage
		if list.Code >= 500 || (list.Code == http.StatusOK && json.Unmarshal(list.Body.Bytes(), &arr) != nil) {
			t.Fatalf("list answered %d: %s", list.Code, list.Body)
		}
	})
}
