package identity

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"time"
)

// Refusal reasons of Admissions.
const (
	ReasonReplay              Reason = "replay"               // the token was admitted from another binding
	ReasonNotAdmittedFresh    Reason = "not_admitted_fresh"   // expired token this gateway never admitted fresh
	ReasonContinuationExpired Reason = "continuation_expired" // past first admission + continuation.max
	ReasonRuleChanged         Reason = "rule_changed"         // the token now matches another rule
)

// Binding is where a login comes from: the client socket's cgroup and uid.
type Binding struct {
	CgroupID uint64
	UID      uint32
}

// Admissions remembers which tokens this gateway admitted, from which
// binding and under which rule, so a token is used from one binding only
// (pooled re-logins from that binding are fine) and an expired token can
// continue only under workload-identity.md §10. It is bounded: when full,
// the admissions closest to their end are dropped, which fails closed (a
// later continuation of such a token is refused). Safe for concurrent use.
type Admissions struct {
	mu      sync.Mutex
	max     int
	entries map[string]*admission
}

type admission struct {
	first   time.Time
	binding Binding
	rule    string
	until   time.Time // when the entry may be forgotten
}

// NewAdmissions returns an empty set holding at most maxEntries tokens.
func NewAdmissions(maxEntries int) *Admissions {
	if maxEntries <= 0 {
		maxEntries = 100_000
	}
	return &Admissions{max: maxEntries, entries: map[string]*admission{}}
}

// admissionKey is the issuer and jti, or the token hash without a jti.
func admissionKey(id *Identity) string {
	if id.ID != "" {
		return id.Issuer + "\x00jti\x00" + id.ID
	}
	return id.Issuer + "\x00sha256\x00" + hex.EncodeToString(id.TokenHash[:])
}

// Admit records or checks a login with a verified token. fresh is true
// when id came from Verify (token current), false when it came from
// VerifyContinuation because the token expired or passed max_token_age.
// rule is the name of the rule the identity matches now. It reports
// whether the login is a continuation; a refusal is an *Error.
func (a *Admissions) Admit(id *Identity, b Binding, rule string, fresh bool, now time.Time) (continuation bool, err error) {
	key := admissionKey(id)
	a.mu.Lock()
	defer a.mu.Unlock()
	e, ok := a.entries[key]
	if ok && !now.Before(e.until) {
		delete(a.entries, key)
		if !fresh {
			return false, refuse(ReasonContinuationExpired, id.IssuerName, "first admitted %s ago, continuation.max %s", now.Sub(e.first).Round(time.Second), id.ContinuationMax)
		}
		ok = false
	}
	if ok {
		switch {
		case e.binding != b:
			return false, refuse(ReasonReplay, id.IssuerName, "token first admitted from cgroup %d uid %d, now presented from cgroup %d uid %d", e.binding.CgroupID, e.binding.UID, b.CgroupID, b.UID)
		case e.rule != rule:
			return false, refuse(ReasonRuleChanged, id.IssuerName, "token admitted under rule %s now matches %s", e.rule, rule)
		case fresh:
			return false, nil
		case !now.Before(e.first.Add(id.ContinuationMax)):
			return false, refuse(ReasonContinuationExpired, id.IssuerName, "first admitted %s ago, continuation.max %s", now.Sub(e.first).Round(time.Second), id.ContinuationMax)
		}
		return true, nil
	}
	if !fresh {
		return false, refuse(ReasonNotAdmittedFresh, id.IssuerName, "expired token was never admitted fresh by this gateway")
	}
	until := id.Expiry
	if end := now.Add(id.ContinuationMax); end.After(until) {
		until = end
	}
	a.makeRoom(now)
	a.entries[key] = &admission{first: now, binding: b, rule: rule, until: until}
	return false, nil
}

// makeRoom drops ended entries and, when still full, those ending soonest.
func (a *Admissions) makeRoom(now time.Time) {
	if len(a.entries) < a.max {
		return
	}
	for k, e := range a.entries {
		if !now.Before(e.until) {
			delete(a.entries, k)
		}
	}
	for len(a.entries) >= a.max {
		var victim string
		var soonest time.Time
		for k, e := range a.entries {
			if victim == "" || e.until.Before(soonest) {
				victim, soonest = k, e.until
			}
		}
		delete(a.entries, victim)
	}
}

// Revoke forgets every admission of the issuer (by iss URL), so its
// tokens can no longer continue; fresh logins are unaffected.
func (a *Admissions) Revoke(iss string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for k := range a.entries {
		if len(k) > len(iss) && k[:len(iss)] == iss && k[len(iss)] == 0 {
			delete(a.entries, k)
			n++
		}
	}
	return n
}

// Len is the number of remembered admissions.
func (a *Admissions) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.entries)
}

// admissionRecord is one admission in a saved state file.
type admissionRecord struct {
	Key      string    `json:"key"`
	First    time.Time `json:"first"`
	CgroupID uint64    `json:"cgroup_id"`
	UID      uint32    `json:"uid"`
	Rule     string    `json:"rule"`
	Until    time.Time `json:"until"`
}

// SaveFile writes the admissions still running at now to file (mode 0600,
// replaced atomically), so continuation survives a gateway restart.
func (a *Admissions) SaveFile(file string, now time.Time) error {
	a.mu.Lock()
	recs := make([]admissionRecord, 0, len(a.entries))
	for k, e := range a.entries {
		if now.Before(e.until) {
			recs = append(recs, admissionRecord{k, e.first, e.binding.CgroupID, e.binding.UID, e.rule, e.until})
		}
	}
	a.mu.Unlock()
	b, err := json.Marshal(recs)
	if err != nil {
		return fmt.Errorf("encode admissions: %w", err)
	}
	if err := writeCache(file, b); err != nil {
		return fmt.Errorf("save admissions: %w", err)
	}
	return nil
}

// LoadFile adds the admissions saved in file that are still running at
// now. A missing file is not an error: without state, expired tokens are
// refused (fail closed).
func (a *Admissions) LoadFile(file string, now time.Time) (int, error) {
	b, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("load admissions: %w", err)
	}
	var recs []admissionRecord
	if err := json.Unmarshal(b, &recs); err != nil {
		return 0, fmt.Errorf("load admissions from %s: %w", file, err)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range recs {
		if !now.Before(r.Until) || r.Key == "" {
			continue
		}
		a.makeRoom(now)
		a.entries[r.Key] = &admission{first: r.First, binding: Binding{r.CgroupID, r.UID}, rule: r.Rule, until: r.Until}
		n++
	}
	return n, nil
}
