package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// loginSwap is a credential hook as the next stage will have one: the
// client's login is rewritten at the choke point to the gateway's own
// service user, whatever the client sent.
type loginSwap struct {
	user, password string
	logins         atomic.Int64
	replies        atomic.Int64
}

func (s *loginSwap) Outbound(_ context.Context, c *gateway.Call, _ *http.Request, body []byte) ([]byte, error) {
	if c.Kind != snowflake.KindLogin {
		return body, nil
	}
	lr, err := snowflake.ParseLoginRequest(body)
	if err != nil {
		return nil, &snowflake.Error{Code: snowflake.CodeBadRequest, Message: "bad login"}
	}
	lr.ClearSecrets()
	if err := lr.Data.Set("LOGIN_NAME", s.user); err != nil {
		return nil, err
	}
	if err := lr.Data.Set("PASSWORD", s.password); err != nil {
		return nil, err
	}
	s.logins.Add(1)
	return lr.Body.Bytes(), nil
}

func (s *loginSwap) Inbound(_ context.Context, c *gateway.Call, status int, body []byte) ([]byte, error) {
	if c.Kind == snowflake.KindLogin && status == http.StatusOK {
		s.replies.Add(1)
	}
	return body, nil
}

// TestCredentialHook shows the seam of the credential swap: a hook rewrites
// the driver's login to another user, and the session is that user's.
func TestCredentialHook(t *testing.T) {
	hook := &loginSwap{user: "svc_agent", password: "svc-password-5678"}
	f := newFixture(t, fixtureOptions{Credentials: hook, Users: map[string]string{hook.user: hook.password}})
	a := f.startAgent(t)
	// The agent's own password is not one the emulator knows.
	dsnOther := strings.Replace(dsn(), testPassword, "agent-has-no-real-password", 1)
	if r := a.do(t, clientCmd{Op: "open", DSN: dsnOther}); r.Err != "" {
		t.Fatalf("login: %s", r.Err)
	}
	r := a.do(t, clientCmd{Op: "query", SQL: "SELECT CURRENT_USER()"})
	if r.Err != "" || len(r.Rows) != 1 || !strings.EqualFold(r.Rows[0][0], hook.user) {
		t.Fatalf("CURRENT_USER() = %v (%s), want %s", r.Rows, r.Err, hook.user)
	}
	if hook.logins.Load() == 0 || hook.replies.Load() == 0 {
		t.Errorf("hook saw %d logins and %d replies", hook.logins.Load(), hook.replies.Load())
	}
}
