package approval

import (
	"time"
)

// The run of an approved statement. A gateway claims the run before it
// sends the statement upstream, naming itself (an Instance) and how long
// the run may take (the lease); when the run gets its final reply it
// records the outcome (Finish). A claim is not the end of the story: a
// gateway killed between its claim and the reply reaching the driver
// leaves a run that nobody finishes, and the driver keeps polling. A
// successor then takes the run over (ClaimResumed) and sends the stored
// request again with the driver's requestId, which the service
// de-duplicates (a statement that reached it is not executed again; one
// that did not runs now). The rule, decided in one transaction on the
// request's row (decideClaim):
//
//   - not approved: ErrFinal;
//   - never claimed: the caller claims it (ClaimNew);
//   - first claimed more than ResendWindow ago: ErrClaimed — requestId
//     de-duplication is trusted only that long;
//   - the run has a recorded outcome: ClaimReplay — the reply may not have
//     reached the driver (a kill between the outcome and the reply), and a
//     resend with the same requestId returns the same query;
//   - claimed by the caller's own instance: ErrRunning (the caller's own
//     run is in progress, it answers from memory);
//   - claimed by an instance the caller knows dead (same boot and pid
//     namespace, pid gone or reused), or whose lease passed: ClaimResumed;
//   - otherwise another live gateway runs it: ErrRunning.
//
// A take-over is a compare-and-set on the stored claimer, so of several
// successors exactly one wins; the others then see a live claimer.

// DefaultRunBound is the lease of a claim stored without one (before
// claimers were recorded): the gateway's default upstream timeout (10
// minutes) and a margin.
const DefaultRunBound = 11 * time.Minute

// ResendWindow bounds how long after its first claim a run may be sent
// again (resumed or replayed): within it the service's requestId
// de-duplication is relied on. Longer than any lease, so a run is never
// refused only because its claimer died slowly.
const ResendWindow = time.Hour

// ClaimKind says how a claim was won.
type ClaimKind int

// The kinds of claims.
const (
	// ClaimNew: the first claim of the run.
	ClaimNew ClaimKind = iota + 1
	// ClaimResumed: the run was claimed by a gateway instance now dead
	// (or past its lease), and had no outcome: the caller resumes it.
	ClaimResumed
	// ClaimReplay: the run has an outcome, maybe never delivered; the
	// caller sends it again to get the same reply.
	ClaimReplay
)

// String names the kind for logs.
func (k ClaimKind) String() string {
	switch k {
	case ClaimNew:
		return "new"
	case ClaimResumed:
		return "resumed"
	case ClaimReplay:
		return "replay"
	}
	return "none"
}

// Claim is a claimer's bid for a run.
type Claim struct {
	// By is the claiming instance (Self()).
	By Instance
	// Lease is how long the run may take; DefaultRunBound when zero.
	Lease time.Duration
}

// ClaimResult is the outcome of a claim.
type ClaimResult struct {
	// Request is the request as committed (or as it is, when refused).
	Request *Request
	// Kind is how the claim was won (0 when refused).
	Kind ClaimKind
	// Previous is the claimer taken over (ClaimResumed, ClaimReplay) or
	// holding the run (ErrRunning): an Instance with ID "unknown" for a
	// claim stored without one.
	Previous *Instance
	// Why says why the previous claimer was taken over: "dead" or
	// "lease passed" (or "finished", for a replay).
	Why string
}

// unknownClaimer stands for the claimer of a claim stored before claimers
// were recorded.
const unknownClaimer = "unknown"

// leaseEnd is when the run's current claim ends.
func (r *Request) leaseEnd() time.Time {
	if r.LeaseUntil != nil {
		return *r.LeaseUntil
	}
	if r.ExecutedAt != nil {
		return r.ExecutedAt.Add(DefaultRunBound)
	}
	return time.Time{}
}

// decideClaim applies the rule above to r as stored; err is ErrFinal,
// ErrClaimed or ErrRunning when c does not get the run.
func decideClaim(r *Request, c Claim, now time.Time) (res ClaimResult, err error) {
	switch {
	case r.State != Approved:
		return res, ErrFinal
	case r.ExecutedAt == nil:
		res.Kind = ClaimNew
		return res, nil
	}
	prev := Instance{ID: unknownClaimer}
	if r.Claimer != nil {
		prev = *r.Claimer
	}
	res.Previous = &prev
	switch {
	case !now.Before(r.ExecutedAt.Add(ResendWindow)):
		return res, ErrClaimed
	case r.RanAt != nil:
		res.Kind, res.Why = ClaimReplay, "finished"
		return res, nil
	case prev.ID == c.By.ID:
		return res, ErrRunning
	case c.By.Dead(prev):
		res.Kind, res.Why = ClaimResumed, "dead"
		return res, nil
	case !now.Before(r.leaseEnd()):
		res.Kind, res.Why = ClaimResumed, "lease passed"
		return res, nil
	}
	return res, ErrRunning
}
