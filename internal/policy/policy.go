package policy

import (
	"errors"
	"fmt"
	"strings"
)

// Action is what a rule decides for a statement.
type Action string

// Actions, from the most permissive to the strictest.
const (
	Allow   Action = "allow"
	Approve Action = "approve"
	Deny    Action = "deny"
)

func (a Action) rank() int {
	switch a {
	case Allow:
		return 0
	case Approve:
		return 1
	}
	return 2
}

func (a Action) valid() bool { return a == Allow || a == Approve || a == Deny }

func stricterAction(a, b Action) Action {
	if b.rank() > a.rank() {
		return b
	}
	return a
}

// Config is the statement policy of one identity rule: an action per class,
// then an ordered list of rules by class and object pattern. It mirrors the
// `statements:` block of the configuration (DESIGN.md §4):
//
//	statements:
//	  read: allow
//	  dml: approve
//	  rules:
//	    - {name: scratch, objects: ["ANALYTICS.SCRATCH.*"], classes: [dml, ddl], action: allow}
//	    - {name: pii, objects: ['ANALYTICS."pii".*'], action: deny, observe: true}
type Config struct {
	// Name is the identity rule's name, quoted in decisions and errors.
	Name string
	// Classes maps a class to its action. Missing classes take
	// DefaultActions.
	Classes map[Class]Action
	// Rules are tried in order; the first that matches an object decides it.
	Rules []RuleConfig
	// Observe puts the whole policy in observe mode: every decision is
	// recorded, none enforced (statements run as if allowed). It is how a
	// new rule is tried out.
	Observe bool
}

// RuleConfig is one class/object rule.
type RuleConfig struct {
	// Name identifies the rule in decisions; defaults to rules[i].
	Name string
	// Objects are patterns DATABASE.SCHEMA.OBJECT with * and ? globs per
	// part; unquoted parts are upper-cased, "quoted" parts exact. Empty:
	// the rule applies to every statement of its classes.
	Objects []string
	// Classes the rule applies to; empty means every class except
	// privileged, file_transfer, multi_statement and unknown, which a rule
	// must name to touch.
	Classes []Class
	// Action is allow, approve or deny.
	Action Action
	// Observe records the rule's decision without enforcing it.
	Observe bool
}

// DefaultActions apply to classes a Config leaves out: reads and session
// statements pass, everything else is denied (privileged, file transfer and
// multi-statement by design; the rest until a rule opts in).
var DefaultActions = map[Class]Action{
	ClassRead: Allow, ClassSession: Allow, ClassDML: Deny, ClassDDL: Deny,
	ClassFileTransfer: Deny, ClassPrivileged: Deny, ClassMultiStatement: Deny, ClassUnknown: Deny,
}

// Policy decides statements for one identity rule. Build it with New; it is
// immutable afterwards and safe for concurrent use.
type Policy struct {
	observe bool
	name    string
	classes map[Class]Action
	rules   []rule
}

type rule struct {
	name     string
	patterns [][]NamePart
	classes  map[Class]bool
	action   Action
	observe  bool
}

// Namespace is the session's current database and schema, which resolve
// partly qualified names.
type Namespace struct {
	Database string
	Schema   string
}

// New validates a Config and builds its Policy. unknown may be denied or
// sent for approval, never allowed.
func New(cfg Config) (*Policy, error) {
	p := &Policy{name: cfg.Name, classes: map[Class]Action{}, observe: cfg.Observe}
	for c, a := range DefaultActions {
		p.classes[c] = a
	}
	var errs []error
	for c, a := range cfg.Classes {
		if !c.Valid() {
			errs = append(errs, fmt.Errorf("statements.%s: not a statement class", c))
			continue
		}
		if !a.valid() {
			errs = append(errs, fmt.Errorf("statements.%s: %q is not one of allow, deny, approve", c, a))
			continue
		}
		p.classes[c] = a
	}
	if p.classes[ClassUnknown] == Allow {
		errs = append(errs, errors.New("statements.unknown: unknown statements cannot be allowed (deny or approve)"))
	}
	for i, rc := range cfg.Rules {
		path := fmt.Sprintf("statements.rules[%d]", i)
		r := rule{name: rc.Name, action: rc.Action, observe: rc.Observe, classes: map[Class]bool{}}
		if r.name == "" {
			r.name = path
		}
		if !rc.Action.valid() {
			errs = append(errs, fmt.Errorf("%s.action: %q is not one of allow, deny, approve", path, rc.Action))
		}
		for _, c := range rc.Classes {
			if !c.Valid() {
				errs = append(errs, fmt.Errorf("%s.classes: %q is not a statement class", path, c))
			}
			if c == ClassUnknown && rc.Action == Allow {
				errs = append(errs, fmt.Errorf("%s: unknown statements cannot be allowed", path))
			}
			r.classes[c] = true
		}
		if len(rc.Classes) == 0 {
			for _, c := range []Class{ClassRead, ClassSession, ClassDML, ClassDDL} {
				r.classes[c] = true
			}
		}
		for j, s := range rc.Objects {
			pat, err := ParsePattern(s)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s.objects[%d]: %w", path, j, err))
				continue
			}
			r.patterns = append(r.patterns, pat)
		}
		p.rules = append(p.rules, r)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("statement policy %q: %w", cfg.Name, err)
	}
	return p, nil
}

// ParsePattern parses an object pattern DATABASE.SCHEMA.OBJECT: three parts,
// each an unquoted word (upper-cased), a "quoted" name (exact) or a glob of
// * and ? (unquoted globs are upper-cased too).
func ParsePattern(s string) ([]NamePart, error) {
	var parts []NamePart
	i := 0
	for {
		var p NamePart
		switch {
		case i < len(s) && s[i] == '"':
			var b strings.Builder
			i++
			closed := false
			for i < len(s) {
				if s[i] == '"' {
					if i+1 < len(s) && s[i+1] == '"' {
						b.WriteByte('"')
						i += 2
						continue
					}
					closed = true
					i++
					break
				}
				b.WriteByte(s[i])
				i++
			}
			if !closed || b.Len() == 0 {
				return nil, fmt.Errorf("pattern %q: bad quoted part", s)
			}
			p = NamePart{Name: b.String(), Quoted: true}
		default:
			j := i
			for j < len(s) && (isIdentPart(s[j]) || s[j] == '*' || s[j] == '?') {
				j++
			}
			if j == i {
				return nil, fmt.Errorf("pattern %q: empty or invalid part at byte %d", s, i)
			}
			p = NamePart{Name: strings.ToUpper(s[i:j])}
			i = j
		}
		parts = append(parts, p)
		if i == len(s) {
			break
		}
		if s[i] != '.' {
			return nil, fmt.Errorf("pattern %q: unexpected %q at byte %d", s, s[i], i)
		}
		i++
	}
	if len(parts) != 3 {
		return nil, fmt.Errorf("pattern %q: want DATABASE.SCHEMA.OBJECT, got %d parts", s, len(parts))
	}
	return parts, nil
}

// glob matches name against a pattern of * (any run) and ? (one byte).
func glob(pat, name string) bool {
	px, nx := 0, 0
	starP, starN := -1, 0
	for nx < len(name) {
		switch {
		case px < len(pat) && (pat[px] == '?' || pat[px] == name[nx]):
			px++
			nx++
		case px < len(pat) && pat[px] == '*':
			starP, starN = px, nx
			px++
		case starP >= 0:
			px = starP + 1
			starN++
			nx = starN
		default:
			return false
		}
	}
	for px < len(pat) && pat[px] == '*' {
		px++
	}
	return px == len(pat)
}

// Object is a referenced object resolved against the session's namespace.
// An empty part is not known before run time.
type Object struct {
	Database, Schema, Name string
	Kind                   string
	Access                 Class
	// Dynamic: the name is only known at run time.
	Dynamic bool
}

// String renders the object as DATABASE.SCHEMA.NAME with ? for unknown parts.
func (o Object) String() string {
	if o.Dynamic {
		return "<dynamic>"
	}
	q := func(s string) string {
		if s == "" {
			return "?"
		}
		return s
	}
	switch o.Kind {
	case "DATABASE":
		return q(o.Database)
	case "SCHEMA":
		return q(o.Database) + "." + q(o.Schema)
	}
	return q(o.Database) + "." + q(o.Schema) + "." + q(o.Name)
}

// Resolve fills a reference's missing parts from the namespace.
func Resolve(r ObjectRef, ns Namespace) Object {
	o := Object{Kind: r.Kind, Access: r.Access, Dynamic: r.Dynamic}
	if r.Dynamic {
		return o
	}
	names := make([]string, len(r.Parts))
	for i, p := range r.Parts {
		names[i] = p.Name
	}
	switch r.Kind {
	case "DATABASE":
		o.Database = names[len(names)-1]
		return o
	case "SCHEMA":
		o.Database, o.Schema = ns.Database, names[len(names)-1]
		if len(names) >= 2 {
			o.Database = names[len(names)-2]
		}
		return o
	}
	o.Database, o.Schema = ns.Database, ns.Schema
	switch len(names) {
	case 1:
		o.Name = names[0]
	case 2:
		o.Schema, o.Name = names[0], names[1]
	case 3:
		o.Database, o.Schema, o.Name = names[0], names[1], names[2]
		if o.Schema == "" {
			o.Schema = "PUBLIC"
		}
	}
	return o
}

// match reports whether the pattern matches the object for certain (must)
// and whether it could match once unknown parts are known (may). A database
// or schema stands for every object inside it.
func match(pat []NamePart, o Object) (must, may bool) {
	if o.Dynamic {
		return false, true
	}
	parts := []string{o.Database, o.Schema, o.Name}
	known := 3
	switch o.Kind {
	case "DATABASE":
		known = 1
	case "SCHEMA":
		known = 2
	}
	must, may = true, true
	for i := range 3 {
		if i >= known || parts[i] == "" {
			must = false
			continue
		}
		if !glob(pat[i].Name, parts[i]) {
			return false, false
		}
	}
	return must, may
}

// Decision is the verdict on one statement.
type Decision struct {
	// Action is the verdict, observe-mode rules included: what is recorded.
	Action Action
	// Enforced is what the gateway must do: Action, unless an observe-mode
	// rule decided, in which case it is the verdict without observe rules.
	Enforced Action
	// Observe is true when an observe-mode rule changed the verdict.
	Observe bool
	// Class is the statement class.
	Class Class
	// Objects are the resolved objects the statement references.
	Objects []Object
	// Rule names the identity rule and the statement rule that decided, e.g.
	// "app-main-readonly: statements.dml".
	Rule string
	// Reason says why, in words an agent can act on.
	Reason string
}

// verdict is the outcome of the rules for one access.
type verdict struct {
	action Action
	rule   string
	what   string
}

// Decide decides a classified statement in the session's namespace.
func (p *Policy) Decide(st *Statement, ns Namespace) Decision {
	d := Decision{Class: st.Class}
	for _, r := range st.Objects {
		d.Objects = append(d.Objects, Resolve(r, ns))
	}
	enforced := p.decide(st, ns, false)
	recorded := p.decide(st, ns, true)
	d.Action, d.Enforced = recorded.action, enforced.action
	d.Observe = recorded.action != enforced.action || recorded.rule != enforced.rule
	if p.observe && d.Enforced != Allow {
		d.Enforced, d.Observe = Allow, true
	}
	d.Rule = p.name + ": " + recorded.rule
	d.Reason = recorded.what
	if st.Reason != "" {
		d.Reason += " (" + st.Reason + ")"
	}
	return d
}

// DecideSQL classifies and decides a SQL text.
func (p *Policy) DecideSQL(sql string, ns Namespace) Decision {
	return p.Decide(Classify(sql), ns)
}

// decide takes the strictest verdict over the statement's class and objects.
func (p *Policy) decide(st *Statement, ns Namespace, withObserve bool) verdict {
	var best *verdict
	consider := func(v verdict) {
		if best == nil || v.action.rank() > best.action.rank() {
			best = &v
		}
	}
	classOnly := func(c Class) {
		consider(p.forObject(c, nil, withObserve))
	}
	if st.Class == ClassMultiStatement {
		classOnly(ClassMultiStatement)
		// Every part must pass on its own as well.
		for _, part := range st.Parts {
			consider(p.decide(part, ns, withObserve))
		}
		return *best
	}
	objs := make([]Object, len(st.Objects))
	for i, r := range st.Objects {
		objs[i] = Resolve(r, ns)
	}
	hasTarget := false
	for i := range objs {
		if objs[i].Access == st.Class {
			hasTarget = true
		}
		consider(p.forObject(objs[i].Access, &objs[i], withObserve))
	}
	if !hasTarget {
		classOnly(st.Class)
	}
	return *best
}

// forObject walks the rules for one access: the first rule whose class and
// pattern match decides; a pattern that only might match (unknown parts)
// adds its action and the walk goes on, so an unresolved name gets the
// strictest of everything it could be.
func (p *Policy) forObject(c Class, o *Object, withObserve bool) verdict {
	var v *verdict
	add := func(a Action, ruleName, what string) {
		if v == nil || a.rank() > v.action.rank() {
			v = &verdict{action: a, rule: ruleName, what: what}
		}
	}
	subject := string(c) + " statement"
	if o != nil {
		subject = string(c) + " of " + o.String()
	}
	for _, r := range p.rules {
		if !r.classes[c] || (r.observe && !withObserve) {
			continue
		}
		if len(r.patterns) == 0 {
			add(r.action, r.name, subject+" matched rule "+r.name)
			return *v
		}
		if o == nil {
			continue
		}
		decided := false
		for _, pat := range r.patterns {
			must, may := match(pat, *o)
			if must {
				add(r.action, r.name, subject+" matched rule "+r.name)
				decided = true
				break
			}
			if may {
				add(r.action, r.name, subject+" could match rule "+r.name+" (name not known before run time)")
			}
		}
		if decided {
			return *v
		}
	}
	add(p.classes[c], "statements."+string(c), subject+": class "+string(c)+" is "+string(p.classes[c]))
	return *v
}
