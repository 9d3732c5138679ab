package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	"github.com/snowgate/snowgate/internal/approval"
	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/policy"
)

// wirePolicy adds the statement stage: a statement policy per identity
// rule (gateway.Config.Statements), and, when a rule sends statements for
// approval or an approval store is configured, the approval service with
// its store, its webhook, and the reviewers' API on the admin listener
// (/approvals, authenticated by approvals.reviewers).
func (d *daemon) wirePolicy(ctx context.Context) error {
	sp := &gateway.StatementPolicy{Rules: map[string]*policy.Policy{}}
	uses := false
	for i, r := range d.cfg.Rules {
		p, err := policy.New(r.Statements.Policy(r.Name))
		if err != nil {
			return fmt.Errorf("rules[%d].statements: %w", i, err)
		}
		sp.Rules[r.Name] = p
		uses = uses || r.Statements.UsesApproval()
	}
	a := d.cfg.Approvals
	if uses || a.Store != (config.ApprovalStore{}) || a.Reviewers.TokenFile != "" || a.Reviewers.OIDC != nil {
		svc, err := d.approvalService(ctx, a)
		if err != nil {
			return err
		}
		sp.Approvals = svc
	}
	d.gw.Statements = sp
	return nil
}

// approvalService opens the store and the reviewers' authentication and
// mounts the API.
func (d *daemon) approvalService(ctx context.Context, a config.Approvals) (*approval.Service, error) {
	store, err := openApprovalStore(ctx, a.Store, d.cfg.Recording.Dir)
	if err != nil {
		return nil, err
	}
	host, _ := os.Hostname()
	cfg := approval.Config{Store: store, Timeout: a.Timeout.Duration, MinApprovers: a.MinApprovers, Gateway: host, Logger: d.log}
	if a.Notify != "" {
		cfg.Notifier = &approval.Webhook{URL: a.Notify, ReviewHint: "review: snowgate approvals show|approve|deny <id> --reason …"}
	}
	if al, err := d.auditLog(); err == nil && al != nil {
		cfg.Audit = al
	}
	svc, err := approval.NewService(cfg)
	if err != nil {
		store.Close()
		return nil, err
	}
	var auth approval.AnyOf
	if f := a.Reviewers.TokenFile; f != "" {
		st, err := approval.LoadTokenFile(f)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("approvals.reviewers.token_file: %w", err)
		}
		auth = append(auth, st)
	}
	if o := a.Reviewers.OIDC; o != nil {
		for _, is := range d.cfg.Identity.Issuers {
			if strings.TrimSuffix(is.Issuer, "/") == strings.TrimSuffix(o.Issuer, "/") {
				store.Close()
				return nil, fmt.Errorf("approvals.reviewers.oidc.issuer %s is also a workload issuer (identity.issuers): any workload could mint itself a reviewer token; use the reviewers' own identity provider", o.Issuer)
			}
		}
		or, err := approval.NewOIDCReviewers(ctx, o.Issuer, o.Audience)
		if err != nil {
			store.Close()
			return nil, fmt.Errorf("approvals.reviewers.oidc: %w", err)
		}
		auth = append(auth, or)
	}
	var h http.Handler
	if len(auth) == 0 {
		d.log.Warn("no reviewer authentication configured (approvals.reviewers): held statements can only expire")
		h = svc.Handler(nil)
	} else {
		h = svc.Handler(auth)
	}
	d.admin.Handle("/approvals", h)
	d.admin.Handle("/approvals/", h)
	// Last added, first run: notifications finish, then the store closes.
	d.onClose(store.Close)
	d.onClose(svc.Close)
	return svc, nil
}

// openApprovalStore opens the configured store; by default SQLite in the
// recording directory.
func openApprovalStore(ctx context.Context, s config.ApprovalStore, recordingDir string) (approval.Store, error) {
	if s.PostgresDSNFile != "" {
		b, err := os.ReadFile(s.PostgresDSNFile)
		if err != nil {
			return nil, fmt.Errorf("approvals.store.postgres_dsn_file: %w", err)
		}
		st, err := approval.OpenPostgres(ctx, strings.TrimSpace(string(b)))
		if err != nil {
			return nil, fmt.Errorf("approvals.store: %w", err)
		}
		return st, nil
	}
	path := s.SQLite
	if path == "" {
		path = filepath.Join(recordingDir, "approvals.db")
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("approvals.store.sqlite: %w", err)
	}
	st, err := approval.OpenSQLite(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("approvals.store.sqlite: %w", err)
	}
	return st, nil
}
