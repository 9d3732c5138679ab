package main

import (
	"context"
	"fmt"
	"time"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/session"
	"github.com/snowgate/snowgate/internal/upstream"
)

// wireIdentity adds the identity stage: the workload-token verifier, the
// identity rules, the gateway's credentials per account and the session
// store, composed into the credential swap at the gateway's choke point.
func (d *daemon) wireIdentity(ctx context.Context) error {
	issuers, rules, err := identityConfig(d.cfg)
	if err != nil {
		return err
	}
	verifier, err := identity.NewVerifier(issuers, identity.Options{Logger: d.log})
	if err != nil {
		return fmt.Errorf("identity.issuers: %w", err)
	}
	compiled, warnings, err := identity.CompileRules(rules, issuers)
	if err != nil {
		return fmt.Errorf("rules: %w", err)
	}
	for _, w := range warnings {
		d.log.Warn("identity rule", "warning", w)
	}
	accounts := map[string]gateway.SwapAccount{}
	for name, a := range d.cfg.Accounts {
		cred, err := upstream.LoadCredential(upstream.CredentialConfig{
			Type:           a.Credential.Type,
			User:           a.Credential.User,
			PrivateKeyFile: a.Credential.PrivateKeyFile,
			TokenFile:      a.Credential.TokenFile,
			PasswordFile:   a.Credential.PasswordFile,
		})
		if err != nil {
			return fmt.Errorf("accounts.%s.credential: %w", name, err)
		}
		accounts[name] = gateway.SwapAccount{Credential: cred}
		d.log.Info("gateway credential loaded", "account", name, "credential", cred.String())
	}
	admissions := identity.NewAdmissions(0)
	if f := d.cfg.Identity.StateFile; f != "" {
		n, err := admissions.LoadFile(f, time.Now())
		if err != nil {
			// Without the state, expired tokens are refused: fail closed.
			d.log.Error("identity state unreadable: continuations are refused until tokens are admitted afresh", "file", f, "err", err)
		} else {
			d.log.Info("identity state loaded", "file", f, "admissions", n)
		}
	}
	store := session.NewStore(session.Options{MaxSessions: d.cfg.Identity.Sessions.Max, IdleTimeout: d.cfg.Identity.Sessions.IdleTimeout.Duration})
	swap, err := gateway.NewSwap(gateway.SwapConfig{
		Authorizer:  &identity.Authorizer{Verifier: verifier, Rules: compiled, Admissions: admissions},
		Accounts:    accounts,
		Store:       store,
		Logger:      d.log,
		SessionFile: d.cfg.Identity.Sessions.StateFile,
	})
	if err != nil {
		return err
	}
	d.gw.Credentials = swap
	if f := d.cfg.Identity.Sessions.StateFile; f != "" {
		if n, err := swap.LoadSessions(f); err != nil {
			d.log.Error("session state unreadable: agents log in again", "file", f, "err", err)
		} else {
			d.log.Info("sessions loaded", "file", f, "sessions", n)
		}
	}

	// Warm the keys (an unreachable issuer must not hold up the start),
	// then keep the store and the state file tidy.
	bg, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		verifier.Prefetch(bg)
		t := time.NewTicker(time.Minute)
		defer t.Stop()
		// The session state follows every change within a quarter of a
		// second, so a daemon killed at any moment leaves its successor
		// (or its restart) the sessions agents hold handles for.
		quick := time.NewTicker(250 * time.Millisecond)
		defer quick.Stop()
		saved := store.Changes()
		for {
			select {
			case <-bg.Done():
				return
			case <-t.C:
				store.Sweep()
				saved = store.Changes()
				d.saveIdentityState(admissions, swap)
			case <-quick.C:
				if now := store.Changes(); now != saved && d.cfg.Identity.Sessions.StateFile != "" {
					saved = now
					if err := swap.SaveSessions(d.cfg.Identity.Sessions.StateFile); err != nil {
						d.log.Error("session state not saved", "file", d.cfg.Identity.Sessions.StateFile, "err", err)
					}
				}
			}
		}
	}()
	d.onClose(func() error {
		stop()
		<-done
		d.saveIdentityState(admissions, swap)
		return nil
	})
	return nil
}

// saveIdentityState writes the admissions and the sessions to their state
// files, if set.
func (d *daemon) saveIdentityState(a *identity.Admissions, swap *gateway.Swap) {
	d.saveAdmissions(a)
	if f := d.cfg.Identity.Sessions.StateFile; f != "" {
		if err := swap.SaveSessions(f); err != nil {
			d.log.Error("session state not saved", "file", f, "err", err)
		}
	}
}

// saveAdmissions writes the admissions to identity.state_file, if set.
func (d *daemon) saveAdmissions(a *identity.Admissions) {
	if f := d.cfg.Identity.StateFile; f != "" {
		if err := a.SaveFile(f, time.Now()); err != nil {
			d.log.Error("identity state not saved", "file", f, "err", err)
		}
	}
}

// identityConfig turns the identity section and the rules of the
// configuration into the identity package's issuers and rules. A rule's
// snowflake.user defaults to its account credential's user; match.issuer
// may name an issuer by name or by URL.
func identityConfig(c *config.Config) ([]identity.IssuerConfig, []identity.RuleConfig, error) {
	var issuers []identity.IssuerConfig
	byURL := map[string]string{}
	for _, is := range c.Identity.Issuers {
		ic := identity.IssuerConfig{
			Name:      is.Name,
			Issuer:    is.Issuer,
			Audiences: is.Audiences,
			Keys: identity.KeySource{
				Source:             is.Keys.Source,
				URL:                is.Keys.URL,
				File:               is.Keys.File,
				Refresh:            is.Keys.Refresh.Duration,
				MinRefetchInterval: is.Keys.MinRefetchInterval.Duration,
				CacheFile:          is.Keys.CacheFile,
			},
			Algorithms:       is.Algorithms,
			ClockSkew:        is.ClockSkew.Duration,
			MaxTokenLifetime: is.MaxTokenLifetime.Duration,
			MaxTokenAge:      is.MaxTokenAge.Duration,
			RequiredClaims:   is.RequiredClaims,
			Tenant:           is.TenantValues(),
		}
		if is.Continuation.Set {
			m := is.Continuation.Max.Duration
			ic.Continuation.Max = &m
		}
		issuers = append(issuers, ic)
		byURL[is.Issuer] = is.Name
	}
	var rules []identity.RuleConfig
	for i, r := range c.Rules {
		issuer := r.Match.Issuer
		if name, ok := byURL[issuer]; ok {
			issuer = name
		}
		acct, ok := c.Accounts[r.Account]
		if !ok {
			return nil, nil, fmt.Errorf("rules[%d].account: no account named %q", i, r.Account)
		}
		user := r.Snowflake.User
		if user == "" {
			user = acct.Credential.User
		}
		rules = append(rules, identity.RuleConfig{
			Name:    r.Name,
			Issuer:  issuer,
			Claims:  r.Match.ClaimValues(),
			Account: r.Account,
			Grant: identity.Grant{
				User: user, Role: r.Snowflake.Role, Warehouse: r.Snowflake.Warehouse,
				Database: r.Snowflake.Database, Schema: r.Snowflake.Schema, QueryTag: r.Snowflake.QueryTag,
			},
			ObserveOnly: r.ObserveOnly,
		})
	}
	return issuers, rules, nil
}
