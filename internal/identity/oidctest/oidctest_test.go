package oidctest_test

import (
	"context"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/snowgate/snowgate/internal/identity/oidctest"
)

// TestIssuerWorksWithStockGoOIDC checks the test issuer against go-oidc's
// own discovery and remote key set, so gateway tests can rely on it.
func TestIssuerWorksWithStockGoOIDC(t *testing.T) {
	is := oidctest.Start(t)
	ctx := oidc.ClientContext(context.Background(), is.Client)
	p, err := oidc.NewProvider(ctx, is.URL)
	if err != nil {
		t.Fatalf("discovery: %v", err)
	}
	tok := oidctest.GitLab("snowgate", "grp", "42", "proj", "991")
	idt, err := p.Verifier(&oidc.Config{ClientID: "snowgate"}).Verify(ctx, is.Sign(t, tok))
	if err != nil {
		t.Fatalf("go-oidc verify: %v", err)
	}
	if idt.Subject != tok.Subject || time.Until(idt.Expiry) < 50*time.Minute {
		t.Errorf("token = %+v", idt)
	}
}
