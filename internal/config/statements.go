package config

import (
	"net/url"
	"time"
)

// Statements is the decision per statement class: allow, deny or approve.
// Default: read allow, everything else deny.
type Statements struct {
	Read         string `yaml:"read"`
	DML          string `yaml:"dml"`
	DDL          string `yaml:"ddl"`
	FileTransfer string `yaml:"file_transfer"`
}

// Decisions of Statements.
const (
	DecisionAllow   = "allow"
	DecisionDeny    = "deny"
	DecisionApprove = "approve"
)

// Approvals configures just-in-time approval of held statements.
type Approvals struct {
	// Timeout after which a held statement is denied; default 30m.
	Timeout Duration `yaml:"timeout"`
	// Notify is an http(s) webhook told about new approval requests.
	Notify string `yaml:"notify"`
}

// statements applies the defaults of one rule's statement decisions and
// validates them.
func (v *validator) statements(path string, st *Statements) {
	for _, f := range []struct {
		key string
		val *string
		def string
	}{{"read", &st.Read, DecisionAllow}, {"dml", &st.DML, DecisionDeny}, {"ddl", &st.DDL, DecisionDeny}, {"file_transfer", &st.FileTransfer, DecisionDeny}} {
		if *f.val == "" {
			*f.val = f.def
		}
		v.enum(path+"."+f.key, *f.val, DecisionAllow, DecisionDeny, DecisionApprove)
	}
}

func (v *validator) approvals(a *Approvals) {
	v.duration("approvals.timeout", &a.Timeout, 30*time.Minute, time.Second, 7*24*time.Hour)
	if a.Notify != "" {
		u, err := url.Parse(a.Notify)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			v.bad("approvals.notify", "%q is not an http(s) URL", a.Notify)
		}
	}
}
