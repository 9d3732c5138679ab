package audit

import (
	"bytes"
	"fmt"
	"log/syslog"
	"strings"
)

// SyslogOptions say where syslog messages go.
type SyslogOptions struct {
	// Network and Address are the syslog server ("udp", "host:514"; "tcp",
	// …). Both empty: the local syslog daemon (/dev/log).
	Network string
	Address string
	// Facility is a syslog facility name: auth, authpriv, daemon, local0 …
	// local7; default authpriv.
	Facility string
	// Tag is the program name in each message; default snowgate.
	Tag string
}

var facilities = map[string]syslog.Priority{
	"auth": syslog.LOG_AUTH, "authpriv": syslog.LOG_AUTHPRIV, "daemon": syslog.LOG_DAEMON,
	"user":   syslog.LOG_USER,
	"local0": syslog.LOG_LOCAL0, "local1": syslog.LOG_LOCAL1, "local2": syslog.LOG_LOCAL2,
	"local3": syslog.LOG_LOCAL3, "local4": syslog.LOG_LOCAL4, "local5": syslog.LOG_LOCAL5,
	"local6": syslog.LOG_LOCAL6, "local7": syslog.LOG_LOCAL7,
}

// ParseFacility checks a facility name (empty: authpriv).
func ParseFacility(name string) (syslog.Priority, error) {
	if name == "" {
		return syslog.LOG_AUTHPRIV, nil
	}
	p, ok := facilities[strings.ToLower(name)]
	if !ok {
		return 0, fmt.Errorf("syslog facility %q: want auth, authpriv, daemon, user or local0…local7", name)
	}
	return p, nil
}

// syslogOut sends one message per event, at notice severity.
type syslogOut struct{ w *syslog.Writer }

func dialSyslog(o SyslogOptions) (*syslogOut, error) {
	fac, err := ParseFacility(o.Facility)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	tag := o.Tag
	if tag == "" {
		tag = "snowgate"
	}
	w, err := syslog.Dial(o.Network, o.Address, fac|syslog.LOG_NOTICE, tag)
	if err != nil {
		return nil, fmt.Errorf("audit: syslog %s %s: %w", o.Network, o.Address, err)
	}
	return &syslogOut{w: w}, nil
}

func (s *syslogOut) Write(p []byte) (int, error) {
	if err := s.w.Notice(string(bytes.TrimRight(p, "\n"))); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (s *syslogOut) Close() error { return s.w.Close() }
