package identity_test

import (
	"context"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/identity"
	"github.com/snowgate/snowgate/internal/identity/oidctest"
)

func TestContinuationAndReplay(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	strictMax := time.Duration(0)
	v := newVerifier(t, is, clk, githubIssuerConfig(is))
	ctx := context.Background()
	adm := identity.NewAdmissions(100)
	a, b := identity.Binding{CgroupID: 101, UID: 1001}, identity.Binding{CgroupID: 202, UID: 1001}

	raw := is.Sign(t, ghToken(is, clk.Now()))
	if _, err := v.Verify(ctx, raw); err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		name    string
		advance time.Duration
		binding identity.Binding
		rule    string
		cont    bool
		want    identity.Reason
	}{
		{"first fresh admission", 0, a, "r1", false, ""},
		{"pooled re-login, same binding", time.Minute, a, "r1", false, ""},
		{"same token from another cgroup", 0, b, "r1", false, identity.ReasonReplay},
		{"same token under another rule", 0, a, "r2", false, identity.ReasonRuleChanged},
		{"expired, same binding: continuation", 10 * time.Minute, a, "r1", true, ""},
		{"expired, other binding", 0, b, "r1", false, identity.ReasonReplay},
		{"past continuation.max", identity.DefaultContinuationMax, a, "r1", false, identity.ReasonContinuationExpired},
	}
	for _, s := range steps {
		clk.Advance(s.advance)
		got, err := v.Verify(ctx, raw)
		fresh := err == nil
		if !fresh {
			if r := identity.ReasonOf(err); r != identity.ReasonExpired && r != identity.ReasonTooOld {
				t.Fatalf("%s: Verify: %v", s.name, err)
			}
			if got, err = v.VerifyContinuation(ctx, raw); err != nil {
				t.Fatalf("%s: VerifyContinuation: %v", s.name, err)
			}
		}
		cont, err := adm.Admit(got, s.binding, s.rule, fresh, clk.Now())
		if r := identity.ReasonOf(err); r != s.want || (s.want == "" && err != nil) {
			t.Fatalf("%s: reason %q, want %q (err %v)", s.name, r, s.want, err)
		}
		if err == nil && cont != s.cont {
			t.Fatalf("%s: continuation = %v, want %v", s.name, cont, s.cont)
		}
	}

	// An expired token this gateway never saw fresh is refused.
	old := ghToken(is, clk.Now().Add(-10*time.Minute))
	oldRaw := is.Sign(t, old)
	oid, err := v.VerifyContinuation(ctx, oldRaw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.Admit(oid, a, "r1", false, clk.Now()); identity.ReasonOf(err) != identity.ReasonNotAdmittedFresh {
		t.Fatalf("never-fresh token: %v", err)
	}

	// VerifyContinuation relaxes only exp and age.
	bad := ghToken(is, clk.Now().Add(-10*time.Minute))
	bad.Audience = []string{"other"}
	if _, err := v.VerifyContinuation(ctx, is.Sign(t, bad)); identity.ReasonOf(err) != identity.ReasonWrongAudience {
		t.Fatalf("continuation with wrong audience: %v", err)
	}
	long := ghToken(is, clk.Now().Add(-3*time.Hour))
	long.Lifetime = 2 * time.Hour
	if _, err := v.VerifyContinuation(ctx, is.Sign(t, long)); identity.ReasonOf(err) != identity.ReasonLifetimeTooLong {
		t.Fatalf("continuation with an over-long lifetime: %v", err)
	}

	// Strict issuers (continuation.max: 0) never continue.
	strict := githubIssuerConfig(is)
	strict.Continuation.Max = &strictMax
	sv := newVerifier(t, is, clk, strict)
	sraw := is.Sign(t, ghToken(is, clk.Now()))
	sid, err := sv.Verify(ctx, sraw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.Admit(sid, a, "r1", true, clk.Now()); err != nil {
		t.Fatal(err)
	}
	clk.Advance(6 * time.Minute)
	if sid, err = sv.VerifyContinuation(ctx, sraw); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.Admit(sid, a, "r1", false, clk.Now()); identity.ReasonOf(err) != identity.ReasonContinuationExpired {
		t.Fatalf("strict issuer continuation: %v", err)
	}

	// An operator revocation ends continuation of the issuer's tokens.
	rraw := is.Sign(t, ghToken(is, clk.Now()))
	rid, err := v.Verify(ctx, rraw)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := adm.Admit(rid, a, "r1", true, clk.Now()); err != nil {
		t.Fatal(err)
	}
	if n := adm.Revoke(is.URL); n != 1 {
		t.Fatalf("Revoke removed %d admissions, want 1", n)
	}
	clk.Advance(6 * time.Minute)
	if rid, err = v.VerifyContinuation(ctx, rraw); err != nil {
		t.Fatal(err)
	}
	if _, err := adm.Admit(rid, a, "r1", false, clk.Now()); identity.ReasonOf(err) != identity.ReasonNotAdmittedFresh {
		t.Fatalf("continuation after revocation: %v", err)
	}
}

func TestAdmissionsBounded(t *testing.T) {
	is := oidctest.Start(t)
	clk := newClock()
	v := newVerifier(t, is, clk, githubIssuerConfig(is))
	adm := identity.NewAdmissions(3)
	for i := range 10 {
		id, err := v.Verify(context.Background(), is.Sign(t, ghToken(is, clk.Now())))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := adm.Admit(id, identity.Binding{CgroupID: uint64(i)}, "r", true, clk.Now()); err != nil {
			t.Fatal(err)
		}
	}
	if n := adm.Len(); n != 3 {
		t.Fatalf("Len = %d, want 3", n)
	}
}
