package approval

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Client calls the reviewers' HTTP API (Service.Handler); the CLI uses it.
type Client struct {
	// BaseURL is the admin listener, e.g. http://127.0.0.1:9464.
	BaseURL string
	// Token is the reviewer's bearer token.
	Token string
	// HTTP; nil means a client with a 30 s timeout.
	HTTP *http.Client
}

// APIError is an error reply of the API.
type APIError struct {
	Status   int
	Message  string
	Approval *Request
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, rd)
	if err != nil {
		return fmt.Errorf("approvals API: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("approvals API: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("approvals API: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var eb errorBody
		if json.Unmarshal(b, &eb) != nil || eb.Error == "" {
			eb.Error = strings.TrimSpace(string(b))
		}
		return &APIError{Status: resp.StatusCode, Message: eb.Error, Approval: eb.Approval}
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("approvals API reply: %w", err)
	}
	return nil
}

// List lists requests in state ("" for all), the newest 100.
func (c *Client) List(ctx context.Context, state State) ([]*Request, error) {
	return c.ListUpTo(ctx, state, 0)
}

// ListUpTo lists the newest limit requests in state ("" for all); limit 0
// is the API's default (100).
func (c *Client) ListUpTo(ctx context.Context, state State, limit int) ([]*Request, error) {
	var out []*Request
	q := url.Values{}
	if state != "" {
		q.Set("state", string(state))
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	path := "/approvals"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Get returns one request.
func (c *Client) Get(ctx context.Context, id string) (*Request, error) {
	var out Request
	if err := c.do(ctx, http.MethodGet, "/approvals/"+url.PathEscape(id), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Decide approves or denies a request with a reason.
func (c *Client) Decide(ctx context.Context, id string, approve bool, reason string) (*Request, error) {
	verb := "deny"
	if approve {
		verb = "approve"
	}
	var out Request
	if err := c.do(ctx, http.MethodPost, "/approvals/"+url.PathEscape(id)+"/"+verb, decisionBody{Reason: reason}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
