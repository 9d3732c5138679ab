package config

import (
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/snowgate/snowgate/internal/policy"
)

// Statements is one rule's statement policy: an action per statement class
// (allow, deny or approve), then rules by class and object pattern. Classes
// left empty take the policy defaults: read and session allow, everything
// else deny (privileged, file_transfer and multi_statement by design).
//
//	statements:
//	  read: allow
//	  dml: approve
//	  rules:
//	    - {name: scratch, objects: ["ANALYTICS.SCRATCH.*"], classes: [dml, ddl], action: allow}
//	    - {name: pii, objects: ['ANALYTICS."pii".*'], action: deny, observe: true}
type Statements struct {
	Read           string `yaml:"read"`
	DML            string `yaml:"dml"`
	DDL            string `yaml:"ddl"`
	FileTransfer   string `yaml:"file_transfer"`
	Session        string `yaml:"session"`
	Privileged     string `yaml:"privileged"`
	MultiStatement string `yaml:"multi_statement"`
	// Unknown is deny (default) or approve, never allow.
	Unknown string `yaml:"unknown"`
	// Observe records every decision of this rule without enforcing it
	// (statements run as if allowed): a new rule's trial run.
	Observe bool `yaml:"observe"`
	// Rules are tried in order per object; the first that matches decides.
	Rules []StatementRule `yaml:"rules"`
}

// StatementRule is one class/object rule of a statement policy.
type StatementRule struct {
	// Name identifies the rule in decisions and errors; default rules[i].
	Name string `yaml:"name"`
	// Objects are patterns DATABASE.SCHEMA.OBJECT with * and ? per part;
	// unquoted parts upper-cased, "quoted" parts exact. Empty: every
	// statement of the classes.
	Objects []string `yaml:"objects"`
	// Classes the rule applies to; empty means read, session, dml and ddl.
	Classes []string `yaml:"classes"`
	// Action is allow, deny or approve. Required.
	Action string `yaml:"action"`
	// Observe records the rule's decision without enforcing it.
	Observe bool `yaml:"observe"`
}

// Decisions of Statements.
const (
	DecisionAllow   = "allow"
	DecisionDeny    = "deny"
	DecisionApprove = "approve"
)

// Policy converts the rule's statements to a policy configuration.
func (st Statements) Policy(rule string) policy.Config {
	c := policy.Config{Name: rule, Classes: map[policy.Class]policy.Action{}, Observe: st.Observe}
	for cl, a := range map[policy.Class]string{
		policy.ClassRead: st.Read, policy.ClassDML: st.DML, policy.ClassDDL: st.DDL, policy.ClassFileTransfer: st.FileTransfer,
		policy.ClassSession: st.Session, policy.ClassPrivileged: st.Privileged, policy.ClassMultiStatement: st.MultiStatement, policy.ClassUnknown: st.Unknown,
	} {
		if a != "" {
			c.Classes[cl] = policy.Action(a)
		}
	}
	for _, r := range st.Rules {
		rc := policy.RuleConfig{Name: r.Name, Objects: r.Objects, Action: policy.Action(r.Action), Observe: r.Observe}
		for _, cl := range r.Classes {
			rc.Classes = append(rc.Classes, policy.Class(cl))
		}
		c.Rules = append(c.Rules, rc)
	}
	return c
}

// UsesApproval reports whether any class or rule sends statements for
// approval.
func (st Statements) UsesApproval() bool {
	for _, a := range []string{st.Read, st.DML, st.DDL, st.FileTransfer, st.Session, st.Privileged, st.MultiStatement, st.Unknown} {
		if a == DecisionApprove {
			return true
		}
	}
	for _, r := range st.Rules {
		if r.Action == DecisionApprove {
			return true
		}
	}
	return false
}

// Approvals configures just-in-time approval of held statements.
type Approvals struct {
	// Timeout after which a held statement expires (the client gets an
	// error); default 30m, 10s – 7 days.
	Timeout Duration `yaml:"timeout"`
	// MinApprovers is how many distinct reviewers must approve; default 1.
	MinApprovers int `yaml:"min_approvers"`
	// Notify is an http(s) webhook told about each new request (JSON with
	// a Slack-compatible "text").
	Notify string `yaml:"notify"`
	// Store is where requests live; default SQLite at
	// <recording.dir>/approvals.db.
	Store ApprovalStore `yaml:"store"`
	// Reviewers says how reviewers authenticate to the approvals API.
	Reviewers Reviewers `yaml:"reviewers"`
}

// ApprovalStore is SQLite (one runner) or PostgreSQL (a fleet sharing one
// queue); at most one of them.
type ApprovalStore struct {
	// SQLite is the database file.
	SQLite string `yaml:"sqlite"`
	// PostgresDSNFile holds the PostgreSQL connection string (it carries
	// a password, so it never appears here).
	PostgresDSNFile string `yaml:"postgres_dsn_file"`
}

// Reviewers are the accepted reviewer credentials: a static token file,
// an OIDC issuer, or both.
type Reviewers struct {
	// TokenFile holds one reviewer per line, "NAME TOKEN" or "TOKEN".
	TokenFile string `yaml:"token_file"`
	// OIDC accepts ID tokens of an issuer; the reviewer is iss#sub.
	OIDC *ReviewerOIDC `yaml:"oidc"`
}

// ReviewerOIDC is the reviewers' OIDC issuer.
type ReviewerOIDC struct {
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
}

// statements validates one rule's statement policy (defaults are applied
// by the policy itself).
func (v *validator) statements(path string, st *Statements) {
	for _, f := range []struct {
		key, val string
	}{{"read", st.Read}, {"dml", st.DML}, {"ddl", st.DDL}, {"file_transfer", st.FileTransfer},
		{"session", st.Session}, {"privileged", st.Privileged}, {"multi_statement", st.MultiStatement}, {"unknown", st.Unknown}} {
		if f.val != "" {
			v.enum(path+"."+f.key, f.val, DecisionAllow, DecisionDeny, DecisionApprove)
		}
	}
	if st.Read == "" {
		st.Read = DecisionAllow
	}
	for _, f := range []*string{&st.DML, &st.DDL, &st.FileTransfer} {
		if *f == "" {
			*f = DecisionDeny
		}
	}
	if st.Unknown == DecisionAllow {
		v.bad(path+".unknown", "unknown statements cannot be allowed (deny or approve)")
	}
	classes := map[string]bool{}
	for _, c := range policy.Classes {
		classes[string(c)] = true
	}
	for i, r := range st.Rules {
		rp := fmt.Sprintf("%s.rules[%d]", path, i)
		if r.Action == "" {
			v.bad(rp+".action", "required: allow, deny or approve")
		} else {
			v.enum(rp+".action", r.Action, DecisionAllow, DecisionDeny, DecisionApprove)
		}
		for j, c := range r.Classes {
			switch {
			case !classes[c]:
				v.bad(fmt.Sprintf("%s.classes[%d]", rp, j), "%q is not a statement class (read, session, dml, ddl, file_transfer, privileged, multi_statement, unknown)", c)
			case c == string(policy.ClassUnknown) && r.Action == DecisionAllow:
				v.bad(rp+".action", "unknown statements cannot be allowed")
			}
		}
		for j, o := range r.Objects {
			if _, err := policy.ParsePattern(o); err != nil {
				v.bad(fmt.Sprintf("%s.objects[%d]", rp, j), "%v", err)
			}
		}
	}
}

func (v *validator) approvals(a *Approvals) {
	v.duration("approvals.timeout", &a.Timeout, 30*time.Minute, 10*time.Second, 7*24*time.Hour)
	switch {
	case a.MinApprovers == 0:
		a.MinApprovers = 1
	case a.MinApprovers < 0 || a.MinApprovers > 10:
		v.bad("approvals.min_approvers", "%d is not between 1 and 10", a.MinApprovers)
	}
	if a.Notify != "" {
		u, err := url.Parse(a.Notify)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.bad("approvals.notify", "%q is not an http(s) URL", a.Notify)
		}
	}
	s := a.Store
	switch {
	case s.SQLite != "" && s.PostgresDSNFile != "":
		v.bad("approvals.store", "sqlite and postgres_dsn_file exclude each other: one runner or a fleet")
	case s.SQLite != "":
		v.absPath("approvals.store.sqlite", s.SQLite)
	case s.PostgresDSNFile != "":
		v.absPath("approvals.store.postgres_dsn_file", s.PostgresDSNFile)
	}
	if a.Reviewers.TokenFile != "" {
		v.absPath("approvals.reviewers.token_file", a.Reviewers.TokenFile)
	}
	if o := a.Reviewers.OIDC; o != nil {
		if o.Issuer == "" {
			v.bad("approvals.reviewers.oidc.issuer", "required")
		} else if err := issuerURL(o.Issuer); err != nil {
			v.bad("approvals.reviewers.oidc.issuer", "%v", err)
		}
		if o.Audience == "" {
			v.bad("approvals.reviewers.oidc.audience", "required: the reviewers' tokens' aud")
		}
	}
}

func (v *validator) absPath(path, s string) {
	if !filepath.IsAbs(s) {
		v.bad(path, "%q is not an absolute path", s)
	}
}
