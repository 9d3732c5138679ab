package approval

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Authenticator tells who a reviewer's HTTP request comes from. It returns
// the reviewer's identity, the string recorded with the decision and
// compared with the requester's.
type Authenticator interface {
	Authenticate(r *http.Request) (string, error)
}

// ErrUnauthenticated: no valid reviewer credential.
var ErrUnauthenticated = errors.New("no valid reviewer credential")

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false
	}
	return strings.TrimSpace(tok), true
}

// StaticTokens authenticates reviewers by configured bearer tokens.
type StaticTokens struct {
	byHash map[[32]byte]string
}

// ParseTokens reads a token file: one reviewer per line, "NAME TOKEN" or
// just "TOKEN" (the reviewer is then "reviewer"); blank lines and lines
// starting with # are skipped. Tokens must be at least 16 characters.
func ParseTokens(r io.Reader) (*StaticTokens, error) {
	st := &StaticTokens{byHash: map[[32]byte]string{}}
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		name, tok := "reviewer", f[0]
		switch len(f) {
		case 1:
		case 2:
			name, tok = f[0], f[1]
		default:
			return nil, fmt.Errorf("line %d: want NAME TOKEN or TOKEN", n)
		}
		if len(tok) < 16 {
			return nil, fmt.Errorf("line %d: token shorter than 16 characters", n)
		}
		st.byHash[sha256.Sum256([]byte(tok))] = name
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(st.byHash) == 0 {
		return nil, errors.New("no tokens")
	}
	return st, nil
}

// LoadTokenFile reads a token file (see ParseTokens).
func LoadTokenFile(path string) (*StaticTokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reviewer token file: %w", err)
	}
	defer f.Close()
	st, err := ParseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("reviewer token file %s: %w", path, err)
	}
	return st, nil
}

// Authenticate implements Authenticator.
func (s *StaticTokens) Authenticate(r *http.Request) (string, error) {
	tok, ok := bearer(r)
	if !ok {
		return "", ErrUnauthenticated
	}
	name, ok := s.byHash[sha256.Sum256([]byte(tok))]
	if !ok {
		return "", ErrUnauthenticated
	}
	return name, nil
}

// OIDCReviewers authenticates reviewers by ID tokens of an OIDC issuer.
// The reviewer is IdentityOf(iss, sub), so a workload token of the same
// issuer cannot approve the statements it sent.
type OIDCReviewers struct {
	verifier *oidc.IDTokenVerifier
}

// NewOIDCReviewers discovers issuer and verifies tokens for audience. The
// provider keeps ctx's values (an HTTP client set with oidc.ClientContext)
// for its later key fetches, not its deadline.
func NewOIDCReviewers(ctx context.Context, issuer, audience string) (*OIDCReviewers, error) {
	p, err := oidc.NewProvider(context.WithoutCancel(ctx), issuer)
	if err != nil {
		return nil, fmt.Errorf("reviewer issuer %s: %w", issuer, err)
	}
	return &OIDCReviewers{verifier: p.Verifier(&oidc.Config{ClientID: audience})}, nil
}

// Authenticate implements Authenticator.
func (o *OIDCReviewers) Authenticate(r *http.Request) (string, error) {
	tok, ok := bearer(r)
	if !ok {
		return "", ErrUnauthenticated
	}
	id, err := o.verifier.Verify(r.Context(), tok)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	return IdentityOf(id.Issuer, id.Subject), nil
}

// AnyOf accepts the first authenticator that accepts.
type AnyOf []Authenticator

// Authenticate implements Authenticator.
func (a AnyOf) Authenticate(r *http.Request) (string, error) {
	for _, au := range a {
		if who, err := au.Authenticate(r); err == nil {
			return who, nil
		}
	}
	return "", ErrUnauthenticated
}

// decisionBody is the body of approve and deny.
type decisionBody struct {
	Reason string `json:"reason"`
}

// errorBody is every error reply of the API.
type errorBody struct {
	Error    string   `json:"error"`
	Approval *Request `json:"approval,omitempty"`
}

// Handler is the reviewers' HTTP API, authenticated by auth:
//
//	GET  /approvals[?state=pending]   list (JSON array, newest first)
//	GET  /approvals/{id}              one request
//	POST /approvals/{id}/approve      {"reason":"…"}
//	POST /approvals/{id}/deny         {"reason":"…"}
//
// Decisions answer 200 with the request, 403 for self-approval, 404 for an
// unknown id and 409 when the request is already decided, expired or was
// approved by the same reviewer.
func (s *Service) Handler(auth Authenticator) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /approvals", func(w http.ResponseWriter, r *http.Request) {
		limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
		list, err := s.List(r.Context(), State(r.URL.Query().Get("state")), limit)
		if err != nil {
			writeErr(w, err, nil)
			return
		}
		out := make([]*Request, len(list))
		for i, r := range list {
			out[i] = r.Public()
		}
		writeJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("GET /approvals/{id}", func(w http.ResponseWriter, r *http.Request) {
		got, err := s.Get(r.Context(), r.PathValue("id"))
		if err != nil {
			writeErr(w, err, nil)
			return
		}
		writeJSON(w, http.StatusOK, got.Public())
	})
	decide := func(approve bool) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			who := r.Context().Value(reviewerKey{}).(string)
			var body decisionBody
			if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&body); err != nil && !errors.Is(err, io.EOF) {
				writeJSON(w, http.StatusBadRequest, errorBody{Error: "body: " + err.Error()})
				return
			}
			if strings.TrimSpace(body.Reason) == "" {
				writeJSON(w, http.StatusBadRequest, errorBody{Error: "a reason is required"})
				return
			}
			got, err := s.Decide(r.Context(), r.PathValue("id"), who, approve, body.Reason)
			if err != nil {
				writeErr(w, err, got)
				return
			}
			writeJSON(w, http.StatusOK, got.Public())
		}
	}
	mux.HandleFunc("POST /approvals/{id}/approve", decide(true))
	mux.HandleFunc("POST /approvals/{id}/deny", decide(false))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if auth == nil {
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: "no reviewer authentication is configured"})
			return
		}
		who, err := auth.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="snowgate approvals"`)
			writeJSON(w, http.StatusUnauthorized, errorBody{Error: ErrUnauthenticated.Error()})
			return
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), reviewerKey{}, who)))
	})
}

type reviewerKey struct{}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, _ := json.MarshalIndent(v, "", "  ")
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func writeErr(w http.ResponseWriter, err error, r *Request) {
	status := http.StatusInternalServerError
	switch {
	case errors.Is(err, ErrNotFound):
		status = http.StatusNotFound
	case errors.Is(err, ErrSelfApproval):
		status = http.StatusForbidden
	case errors.Is(err, ErrFinal), errors.Is(err, ErrExpired), errors.Is(err, ErrAlreadyVoted), errors.Is(err, ErrClaimed):
		status = http.StatusConflict
	}
	if r != nil {
		r = r.Public()
	}
	writeJSON(w, status, errorBody{Error: err.Error(), Approval: r})
}
