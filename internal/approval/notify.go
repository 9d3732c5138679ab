package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/snowgate/snowgate/internal/recording"
)

// Webhook posts each new request as JSON to a URL. The body is
// Slack-compatible (an incoming webhook shows "text") and carries the
// request itself under "approval" for other consumers:
//
//	{"text":"snowgate: approval apr_… needed …","approval":{…Request…}}
type Webhook struct {
	// URL is the http(s) endpoint.
	URL string
	// Client; nil means a client with a 10 s timeout.
	Client *http.Client
	// Attempts is how many times a failed post is tried; default 3.
	Attempts int
	// ReviewHint is appended to the text (e.g. how to approve).
	ReviewHint string
}

// webhookBody is what the webhook receives.
type webhookBody struct {
	Text     string   `json:"text"`
	Approval *Request `json:"approval"`
}

// Notify implements Notifier.
func (w *Webhook) Notify(ctx context.Context, r *Request) error {
	// Chat channels are wider than the reviewers: secrets in the SQL are
	// redacted and bindings left out (reviewers see them with show).
	shown := *r.Public()
	shown.SQL, shown.Bindings = recording.RedactSQL(r.SQL), nil
	text := fmt.Sprintf("snowgate: approval %s needed: %s statement from %s (rule %s)\n```%s```",
		r.ID, r.Class, r.Requester, r.Rule, truncate(shown.SQL, 2000))
	if r.Reason != "" {
		text += "\nwhy: " + r.Reason
	}
	text += "\nexpires " + r.ExpiresAt.Format(time.RFC3339)
	if w.ReviewHint != "" {
		text += "\n" + w.ReviewHint
	}
	body, err := json.Marshal(webhookBody{Text: text, Approval: &shown})
	if err != nil {
		return fmt.Errorf("webhook for %s: %w", r.ID, err)
	}
	client := w.Client
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	attempts := w.Attempts
	if attempts <= 0 {
		attempts = 3
	}
	var last error
	for i := range attempts {
		if i > 0 {
			select {
			case <-ctx.Done():
				return fmt.Errorf("webhook for %s: %w (last: %v)", r.ID, ctx.Err(), last)
			case <-time.After(time.Duration(i) * time.Second):
			}
		}
		last = w.post(ctx, client, body)
		if last == nil {
			return nil
		}
	}
	return fmt.Errorf("webhook for %s: %w", r.ID, last)
}

func (w *Webhook) post(ctx context.Context, client *http.Client, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
