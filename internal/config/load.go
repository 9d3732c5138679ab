package config

import (
	"encoding"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	"github.com/goccy/go-yaml/token"
)

// MaxFileSize caps the configuration file.
const MaxFileSize = 1 << 20

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string
	// Line is 0 when the problem has no place in the file (an empty file).
	Line int
	// Key is the dotted path of the key, e.g. rules[0].account.
	Key    string
	Reason string
}

// String formats the problem as FILE:LINE: key: reason.
func (p Problem) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteString(":" + strconv.Itoa(p.Line))
	}
	b.WriteString(": ")
	if p.Key != "" {
		b.WriteString(p.Key + ": ")
	}
	b.WriteString(p.Reason)
	return b.String()
}

// Error lists every problem found in a configuration file, in file order.
type Error struct {
	Problems []Problem
}

// Error implements error: one problem per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read configuration: %w", err)
	}
	defer f.Close()
	data, err := readCapped(f)
	if err != nil {
		return nil, fmt.Errorf("read configuration %s: %w", path, err)
	}
	return Parse(path, data)
}

func readCapped(f *os.File) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", MaxFileSize)
	}
	return data, nil
}

// Parse decodes and validates a configuration; file names it in messages.
// Unknown keys, duplicate keys, wrong types and bad values are all errors;
// the returned *Error lists them with their lines.
func Parse(file string, data []byte) (*Config, error) {
	astFile, err := parser.ParseBytes(data, 0)
	if err != nil {
		return nil, &Error{Problems: []Problem{yamlProblem(file, err, nil)}}
	}
	pos := positions(astFile)
	docs := 0
	for _, d := range astFile.Docs {
		if d.Body != nil {
			docs++
		}
	}
	switch {
	case docs == 0:
		return nil, &Error{Problems: []Problem{{File: file, Reason: "empty configuration"}}}
	case docs > 1:
		return nil, &Error{Problems: []Problem{{File: file, Line: 1, Reason: "more than one YAML document"}}}
	}
	if _, ok := astFile.Docs[0].Body.(*ast.MappingNode); !ok {
		return nil, &Error{Problems: []Problem{{File: file, Line: 1, Reason: "the configuration must be a mapping of sections"}}}
	}
	var c Config
	if err := yaml.UnmarshalWithOptions(data, &c, yaml.Strict()); err != nil {
		var unknown *yaml.UnknownFieldError
		if errors.As(err, &unknown) {
			// go-yaml names one of a mapping's unknown keys at random (map
			// order); report the first one of the file instead, so the same
			// file always gets the same message.
			if tok := firstUnknownKey(astFile.Docs[0].Body, reflect.TypeOf(c)); tok != nil {
				return nil, &Error{Problems: []Problem{{File: file, Line: tok.Position.Line,
					Key: pos.keyAt(tok.Position.Line, tok.Position.Column), Reason: "unknown key"}}}
			}
		}
		return nil, &Error{Problems: []Problem{yamlProblem(file, err, pos)}}
	}
	v := &validator{file: file, pos: pos}
	v.config(&c)
	if len(v.problems) > 0 {
		sort.SliceStable(v.problems, func(i, j int) bool { return v.problems[i].Line < v.problems[j].Line })
		return nil, &Error{Problems: v.problems}
	}
	return &c, nil
}

// yamlProblem turns a go-yaml error into a Problem with its line and key.
func yamlProblem(file string, err error, pos *posIndex) Problem {
	var ye yaml.Error
	if !errors.As(err, &ye) || ye.GetToken() == nil {
		return Problem{File: file, Reason: firstLine(err.Error())}
	}
	tok := ye.GetToken()
	p := Problem{File: file, Line: tok.Position.Line, Reason: ye.GetMessage()}
	var unknown *yaml.UnknownFieldError
	if errors.As(err, &unknown) {
		p.Reason = "unknown key"
		if pos != nil {
			p.Key = pos.keyAt(tok.Position.Line, tok.Position.Column)
		}
		if p.Key == "" {
			p.Key = tok.Value
		}
		return p
	}
	if pos != nil {
		p.Key = pos.keyAt(tok.Position.Line, tok.Position.Column)
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && te.DstType != nil {
		p.Reason = fmt.Sprintf("%q is not %s", tok.Value, typeName(te.DstType.Kind()))
	}
	return p
}

var textUnmarshaler = reflect.TypeOf((*encoding.TextUnmarshaler)(nil)).Elem()

// firstUnknownKey returns the token of the first key, in document order, of
// a mapping decoded into a struct of t that has no field of that name (the
// rules of go-yaml: the yaml tag, else the lower-cased field name; "-" is
// never a key; inline structs lend their fields), or nil.
func firstUnknownKey(n ast.Node, t reflect.Type) *token.Token {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(textUnmarshaler) {
		return nil
	}
	switch v := n.(type) {
	case *ast.TagNode:
		return firstUnknownKey(v.Value, t)
	case *ast.AnchorNode:
		return firstUnknownKey(v.Value, t)
	}
	var pairs []*ast.MappingValueNode
	switch v := n.(type) {
	case *ast.MappingNode:
		pairs = v.Values
	case *ast.MappingValueNode:
		pairs = []*ast.MappingValueNode{v}
	case *ast.SequenceNode:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for _, item := range v.Values {
				if tok := firstUnknownKey(item, t.Elem()); tok != nil {
					return tok
				}
			}
		}
		return nil
	default:
		return nil
	}
	for _, mv := range pairs {
		if mv.Key == nil || mv.Key.GetToken() == nil {
			continue
		}
		switch t.Kind() {
		case reflect.Map:
			if tok := firstUnknownKey(mv.Value, t.Elem()); tok != nil {
				return tok
			}
		case reflect.Struct:
			ft, ok := yamlField(t, mv.Key.GetToken().Value)
			if !ok {
				return mv.Key.GetToken()
			}
			if tok := firstUnknownKey(mv.Value, ft); tok != nil {
				return tok
			}
		}
	}
	return nil
}

// yamlField returns the type of the field of struct t that key decodes into.
func yamlField(t reflect.Type, key string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(","+opts+",", ",inline,") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				if inner, ok := yamlField(ft, key); ok {
					return inner, true
				}
			}
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		if name == key {
			return f.Type, true
		}
	}
	return nil, false
}

// typeName names what a Go kind expects, for operators who do not read Go.
func typeName(k reflect.Kind) string {
	switch k {
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint16:
		return "a whole number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	}
	return "of the expected type"
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// posIndex maps dotted key paths to lines, and positions back to paths.
type posIndex struct {
	lines map[string]int    // path → line of its key (or value for sequence items)
	at    map[[2]int]string // (line, column) of a key or value token → path
}

func positions(f *ast.File) *posIndex {
	p := &posIndex{lines: map[string]int{}, at: map[[2]int]string{}}
	if len(f.Docs) > 0 && f.Docs[0].Body != nil {
		p.walk("", f.Docs[0].Body)
	}
	return p
}

func (p *posIndex) mark(path string, n ast.Node) {
	if n == nil || n.GetToken() == nil {
		return
	}
	t := n.GetToken()
	if _, ok := p.lines[path]; !ok {
		p.lines[path] = t.Position.Line
	}
	k := [2]int{t.Position.Line, t.Position.Column}
	if _, ok := p.at[k]; !ok {
		p.at[k] = path
	}
}

func (p *posIndex) walk(path string, n ast.Node) {
	switch n := n.(type) {
	case *ast.MappingNode:
		for _, mv := range n.Values {
			p.walk(path, mv)
		}
	case *ast.MappingValueNode:
		key := n.Key.GetToken().Value
		child := key
		if path != "" {
			child = path + "." + key
		}
		p.mark(child, n.Key)
		p.mark(child, n.Value)
		p.walk(child, n.Value)
	case *ast.SequenceNode:
		for i, item := range n.Values {
			child := fmt.Sprintf("%s[%d]", path, i)
			p.mark(child, item)
			p.walk(child, item)
		}
	case *ast.TagNode:
		p.walk(path, n.Value)
	case *ast.AnchorNode:
		p.walk(path, n.Value)
	}
}

// keyAt returns the path of the key or value at line and column.
func (p *posIndex) keyAt(line, col int) string { return p.at[[2]int{line, col}] }

// line returns the line of path, or of its nearest ancestor present in the
// file (a missing key is reported where its section is).
func (p *posIndex) line(path string) int {
	for path != "" {
		if l, ok := p.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 1
}

type validator struct {
	file     string
	pos      *posIndex
	problems []Problem
}

func (v *validator) bad(path, format string, args ...any) {
	v.problems = append(v.problems, Problem{File: v.file, Line: v.pos.line(path), Key: path, Reason: fmt.Sprintf(format, args...)})
}

func (v *validator) present(path string) bool { _, ok := v.pos.lines[path]; return ok }

var (
	accountName = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	identifier  = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_$]{0,254}|"[^"]{1,255}")$`)
)

// config applies defaults and validates every section.
func (v *validator) config(c *Config) {
	v.intercept(&c.Intercept)
	v.ca(&c.CA, c.Intercept)
	v.dns(&c.DNS, c.Intercept)
	v.accounts(c.Accounts, c.Intercept.SnowflakeDomains)
	issuers := v.identity(&c.Identity)
	v.rules(c.Rules, c.Accounts, issuers)
	v.recording(&c.Recording)
	v.approvals(&c.Approvals)
	v.admin(&c.Admin)
	v.limits(&c.Limits)
}

func (v *validator) intercept(in *Intercept) {
	switch {
	case in.Cgroup == "":
		v.bad("intercept.cgroup", "required: the cgroup directory the agents run below")
	case !filepath.IsAbs(in.Cgroup) || filepath.Clean(in.Cgroup) != in.Cgroup:
		v.bad("intercept.cgroup", "%q is not a clean absolute path", in.Cgroup)
	}
	if in.ProxyAddress == "" {
		in.ProxyAddress = "169.254.77.1"
	}
	if _, err := netip.ParseAddr(in.ProxyAddress); err != nil {
		v.bad("intercept.proxy_address", "%q is not an IP address", in.ProxyAddress)
	}
	if in.TLSPort == 0 {
		in.TLSPort = 443
	}
	v.port("intercept.tls_port", in.TLSPort)
	if len(in.SnowflakeDomains) == 0 && !v.present("intercept.snowflake_domains") {
		in.SnowflakeDomains = []string{"snowflakecomputing.com"}
	}
	if len(in.SnowflakeDomains) == 0 {
		v.bad("intercept.snowflake_domains", "at least one domain is required")
	}
	for i, d := range in.SnowflakeDomains {
		n, err := dnsName(strings.TrimPrefix(d, "."))
		if err != nil {
			v.bad(fmt.Sprintf("intercept.snowflake_domains[%d]", i), "%v", err)
			continue
		}
		if !strings.Contains(n, ".") {
			v.bad(fmt.Sprintf("intercept.snowflake_domains[%d]", i), "%q is a top-level domain", d)
		}
		in.SnowflakeDomains[i] = n
	}
	if in.OtherTLS == "" {
		in.OtherTLS = OtherTLSDeny
	}
	v.enum("intercept.other_tls", in.OtherTLS, OtherTLSDeny, OtherTLSPassthrough)
	if len(in.Ports) == 0 {
		in.Ports = []int{443, 80}
	}
	if len(in.Ports) > 8 {
		v.bad("intercept.ports", "at most 8 ports can be intercepted, not %d", len(in.Ports))
	}
	seen := map[int]bool{}
	for i, p := range in.Ports {
		path := fmt.Sprintf("intercept.ports[%d]", i)
		v.port(path, p)
		if seen[p] {
			v.bad(path, "port %d is listed twice", p)
		}
		seen[p] = true
	}
	if !seen[443] {
		v.bad("intercept.ports", "443 must be intercepted: it is Snowflake's port")
	}
}

func (v *validator) ca(ca *CA, in Intercept) {
	v.requiredPath("ca.cert_file", ca.CertFile)
	v.requiredPath("ca.key_file", ca.KeyFile)
	if ca.CertFile != "" && ca.CertFile == ca.KeyFile {
		v.bad("ca.key_file", "the key must not share the certificate's file")
	}
	v.duration("ca.leaf_validity", &ca.LeafValidity, 24*time.Hour, time.Hour, 144*time.Hour)
	if ca.OCSPURL == "" {
		host := in.ProxyAddress
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		ca.OCSPURL = "http://" + host + "/_snowgate/ocsp"
	}
	switch u, err := url.Parse(ca.OCSPURL); {
	case err != nil || u.Scheme != "http" || u.Host == "":
		// Drivers fetch OCSP over plain HTTP; an https responder would
		// need its own revocation check.
		v.bad("ca.ocsp_url", "%q is not an http:// URL", ca.OCSPURL)
	case u.Port() != "" && u.Port() != "80":
		// The redirect sends port 80 to the gateway; another port would
		// leave agents' OCSP requests unanswered.
		v.bad("ca.ocsp_url", "%q: the port must be 80 (the port the redirect intercepts)", ca.OCSPURL)
	}
}

func (v *validator) dns(d *DNS, in Intercept) {
	if d.Listen == "" {
		d.Listen = net.JoinHostPort(in.ProxyAddress, "53")
	}
	v.hostPort("dns.listen", d.Listen)
	for i, u := range d.Upstreams {
		path := fmt.Sprintf("dns.upstreams[%d]", i)
		if _, err := netip.ParseAddr(u); err == nil {
			d.Upstreams[i] = net.JoinHostPort(u, "53")
			continue
		}
		if ap, err := netip.ParseAddrPort(u); err != nil || ap.Port() == 0 {
			v.bad(path, "%q is not an IP address or IP:port", u)
		}
	}
	v.duration("dns.timeout", &d.Timeout, 5*time.Second, 100*time.Millisecond, time.Minute)
	names := make([]string, 0, len(d.Static))
	for name := range d.Static {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		path := "dns.static." + name
		if _, err := dnsName(name); err != nil {
			v.bad(path, "%v", err)
		}
		if len(d.Static[name]) == 0 {
			v.bad(path, "no addresses")
		}
		for i, a := range d.Static[name] {
			if _, err := netip.ParseAddr(a); err != nil {
				v.bad(fmt.Sprintf("%s[%d]", path, i), "%q is not an IP address", a)
			}
		}
	}
}

func (v *validator) accounts(accts map[string]Account, domains []string) {
	if len(accts) == 0 {
		v.bad("accounts", "at least one account is required")
		return
	}
	names := make([]string, 0, len(accts))
	for n := range accts {
		names = append(names, n)
	}
	sort.Strings(names)
	hosts := map[string]string{}
	for _, name := range names {
		a := accts[name]
		path := "accounts." + name
		if !accountName.MatchString(name) {
			v.bad(path, "account names are lower-case letters, digits, '-' and '_'")
		}
		if a.Host == "" {
			v.bad(path+".host", "required: the account's host name")
		} else if h, err := dnsName(a.Host); err != nil {
			v.bad(path+".host", "%v", err)
		} else if !underAny(h, domains) {
			v.bad(path+".host", "%q is not under intercept.snowflake_domains (%s)", a.Host, strings.Join(domains, ", "))
		} else if other, dup := hosts[h]; dup {
			v.bad(path+".host", "same host as account %q", other)
		} else {
			hosts[h] = name
		}
		if a.Upstream != "" {
			v.upstream(path+".upstream", a.Upstream)
		}
		if a.UpstreamCAFile != "" && !filepath.IsAbs(a.UpstreamCAFile) {
			v.bad(path+".upstream_ca_file", "%q is not an absolute path", a.UpstreamCAFile)
		}
		v.credential(path+".credential", a.Credential)
	}
}

func (v *validator) upstream(path, s string) {
	if strings.Contains(s, "://") {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			v.bad(path, "%q is not an http(s)://host[:port] URL", s)
		}
		return
	}
	v.hostPort(path, s)
}

func (v *validator) credential(path string, c Credential) {
	if !v.present(path) {
		v.bad(path, "required: the gateway's credential for this account")
		return
	}
	if c.User == "" {
		v.bad(path+".user", "required: the Snowflake user the gateway logs in as")
	}
	fields := map[string]string{"private_key_file": c.PrivateKeyFile, "token_file": c.TokenFile, "password_file": c.PasswordFile}
	var want string
	switch c.Type {
	case CredentialKeyPair:
		want = "private_key_file"
	case CredentialPAT:
		want = "token_file"
	case CredentialPassword:
		want = "password_file"
	case "":
		v.bad(path+".type", "required: one of %s, %s, %s", CredentialKeyPair, CredentialPAT, CredentialPassword)
		return
	default:
		v.bad(path+".type", "%q is not one of %s, %s, %s", c.Type, CredentialKeyPair, CredentialPAT, CredentialPassword)
		return
	}
	v.secretPath(path+"."+want, fields[want])
	for _, k := range []string{"private_key_file", "token_file", "password_file"} {
		if k != want && fields[k] != "" {
			v.bad(path+"."+k, "not used by a %s credential", c.Type)
		}
	}
}

func (v *validator) enum(path, val string, allowed ...string) {
	for _, a := range allowed {
		if val == a {
			return
		}
	}
	v.bad(path, "%q is not one of %s", val, strings.Join(allowed, ", "))
}

func (v *validator) port(path string, p int) {
	if p < 1 || p > 65535 {
		v.bad(path, "%d is not a port number", p)
	}
}

func (v *validator) hostPort(path, s string) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		v.bad(path, "%q is not host:port", s)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		v.bad(path, "%q: bad port %q", s, port)
	}
	if host == "" {
		v.bad(path, "%q: empty host", s)
		return
	}
	if _, err := netip.ParseAddr(host); err != nil {
		if _, err := dnsName(host); err != nil {
			v.bad(path, "%q: host is neither an IP address nor a DNS name", s)
		}
	}
}

func (v *validator) requiredPath(path, s string) {
	switch {
	case s == "":
		v.bad(path, "required")
	case !filepath.IsAbs(s):
		v.bad(path, "%q is not an absolute path", s)
	}
}

// CredentialsDirPrefix starts a secret file name in the directory systemd
// hands the service its credentials in (LoadCredential=).
const CredentialsDirPrefix = "$CREDENTIALS_DIRECTORY/"

// secretPath accepts an absolute path, or "$CREDENTIALS_DIRECTORY/<name>"
// for a file systemd passes to the service.
func (v *validator) secretPath(path, s string) {
	if name, ok := strings.CutPrefix(s, CredentialsDirPrefix); ok {
		if name == "" || strings.Contains(name, "/") || name == "." || name == ".." {
			v.bad(path, "%q: a systemd credential is named $CREDENTIALS_DIRECTORY/<name>, without a slash in <name>", s)
		}
		return
	}
	v.requiredPath(path, s)
}

func (v *validator) duration(path string, d *Duration, def, min, max time.Duration) {
	if d.raw == "" && d.Duration == 0 {
		if v.present(path) {
			v.bad(path, "empty duration")
		}
		d.Duration = def
		return
	}
	if d.raw != "" {
		parsed, err := time.ParseDuration(d.raw)
		if err != nil {
			v.bad(path, "%q is not a duration like 30s, 10m or 24h", d.raw)
			return
		}
		d.Duration = parsed
	}
	if d.Duration < min || d.Duration > max {
		v.bad(path, "%s is outside %s – %s", d.Duration, min, max)
	}
}

// dnsName lower-cases and checks a DNS name.
func dnsName(s string) (string, error) {
	n := strings.ToLower(strings.TrimSuffix(s, "."))
	if n == "" || len(n) > 253 {
		return "", fmt.Errorf("%q is not a DNS name", s)
	}
	for _, l := range strings.Split(n, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", fmt.Errorf("%q is not a DNS name", s)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return "", fmt.Errorf("%q is not a DNS name", s)
			}
		}
	}
	return n, nil
}

func underAny(name string, domains []string) bool {
	for _, d := range domains {
		if name == d || strings.HasSuffix(name, "."+d) {
			return true
		}
	}
	return false
}
