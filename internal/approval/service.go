package approval

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/snowgate/snowgate/internal/audit"
	"github.com/snowgate/snowgate/internal/recording"
)

// Defaults of Config.
const (
	DefaultTimeout = 30 * time.Minute
	// DefaultStorePoll is how often a waiter re-reads the store, to see
	// decisions taken by another gateway of the fleet.
	DefaultStorePoll = 500 * time.Millisecond
)

// Notifier is told about every new request (a webhook).
type Notifier interface {
	Notify(ctx context.Context, r *Request) error
}

// Auditor receives audit events (*audit.Logger).
type Auditor interface {
	Emit(e audit.Event)
}

// Config configures a Service.
type Config struct {
	// Store keeps the requests. Required.
	Store Store
	// Timeout is how long a request waits for a decision; default
	// DefaultTimeout.
	Timeout time.Duration
	// MinApprovers is how many distinct reviewers must approve; default 1.
	MinApprovers int
	// Notifier, when set, hears of each new request (asynchronously).
	Notifier Notifier
	// Audit, when set, receives an approval.decision event per decision.
	Audit Auditor
	// Gateway names this gateway instance in the requests it holds.
	Gateway string
	// Instance is the claimer of the runs this service claims; default
	// Self(). Tests set another to act as a second gateway.
	Instance *Instance
	// StorePoll is how often waiters re-read the store; default
	// DefaultStorePoll.
	StorePoll time.Duration
	// Now is the clock; default time.Now.
	Now    func() time.Time
	Logger *slog.Logger
}

// Service is the approval workflow over a Store.
type Service struct {
	cfg Config
	log *slog.Logger

	mu sync.Mutex
	// waits holds, per request id that someone waits on, a channel closed
	// (and replaced) when this service changes that request: a decision
	// wakes its own waiters, not every held statement's.
	waits map[string]*waiters
	wg    sync.WaitGroup

	// resumed counts runs taken over from another instance (resumed or
	// replayed).
	resumed atomic.Uint64
}

// waiters are the Wait calls on one request.
type waiters struct {
	ch chan struct{}
	n  int
}

// NewService returns a Service for cfg.
func NewService(cfg Config) (*Service, error) {
	if cfg.Store == nil {
		return nil, errors.New("approval service: no store")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MinApprovers <= 0 {
		cfg.MinApprovers = 1
	}
	if cfg.StorePoll <= 0 {
		cfg.StorePoll = DefaultStorePoll
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Instance == nil {
		in := Self()
		cfg.Instance = &in
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Service{cfg: cfg, log: cfg.Logger, waits: map[string]*waiters{}}, nil
}

// Timeout is how long requests wait for a decision.
func (s *Service) Timeout() time.Duration { return s.cfg.Timeout }

// Store is the service's store.
func (s *Service) Store() Store { return s.cfg.Store }

// Close waits for notifications in flight. It does not close the store.
func (s *Service) Close() error {
	s.wg.Wait()
	return nil
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

// signal wakes the waiters of request id.
func (s *Service) signal(id string) {
	s.mu.Lock()
	if w := s.waits[id]; w != nil {
		close(w.ch)
		w.ch = make(chan struct{})
	}
	s.mu.Unlock()
}

// watch registers a waiter of request id; changes returns the channel
// the next change of id closes, and release ends the registration.
func (s *Service) watch(id string) (changes func() <-chan struct{}, release func()) {
	s.mu.Lock()
	w := s.waits[id]
	if w == nil {
		w = &waiters{ch: make(chan struct{})}
		s.waits[id] = w
	}
	w.n++
	s.mu.Unlock()
	changes = func() <-chan struct{} {
		s.mu.Lock()
		defer s.mu.Unlock()
		return w.ch
	}
	release = func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if w.n--; w.n == 0 {
			delete(s.waits, id)
		}
	}
	return changes, release
}

// Submission is a statement to hold.
type Submission struct {
	SessionID, RequestKey, QueryID string
	Rule, PolicyRule, Class        string
	Objects                        []string
	Reason                         string
	SQL                            string
	Bindings                       []byte
	Requester                      string
	Account, User, Role            string
	// Resume is the client's request, for the gateway that runs it.
	Resume *Resume
}

// Submit creates the request for a statement, or finds the one created
// for the same session and request key (a driver's retry). It reports
// whether the request is new; new requests go to the notifier.
func (s *Service) Submit(ctx context.Context, sub Submission) (*Request, bool, error) {
	if sub.SessionID == "" || sub.RequestKey == "" {
		return nil, false, errors.New("approval: a request needs a session and a request key")
	}
	now := s.now()
	r := &Request{
		ID: newID(), State: Pending,
		SessionID: sub.SessionID, RequestKey: sub.RequestKey, QueryID: sub.QueryID, Gateway: s.cfg.Gateway,
		Rule: sub.Rule, PolicyRule: sub.PolicyRule, Class: sub.Class, Objects: sub.Objects, Reason: sub.Reason,
		SQL: sub.SQL, SQLHash: Hash([]byte(sub.SQL)), BindingsHash: Hash(sub.Bindings),
		Requester: sub.Requester, Account: sub.Account, User: sub.User, Role: sub.Role,
		MinApprovers: s.cfg.MinApprovers, CreatedAt: now, ExpiresAt: now.Add(s.cfg.Timeout),
		Resume: sub.Resume,
	}
	if len(sub.Bindings) > 0 {
		r.Bindings = append([]byte(nil), sub.Bindings...)
	}
	got, created, err := s.cfg.Store.Create(ctx, r)
	if err != nil {
		return nil, false, err
	}
	if created {
		s.log.Info("statement held for approval", "approval", got.ID, "session", got.SessionID, "rule", got.Rule, "class", got.Class)
		if n := s.cfg.Notifier; n != nil {
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				nctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
				defer cancel()
				if err := n.Notify(nctx, got); err != nil {
					s.log.Warn("approval notification failed", "approval", got.ID, "err", err)
				}
			}()
		}
	}
	return got, created, nil
}

// Get returns a request, expiring it first when its time is up.
func (s *Service) Get(ctx context.Context, id string) (*Request, error) {
	r, err := s.cfg.Store.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return s.expireIfDue(ctx, r)
}

func (s *Service) expireIfDue(ctx context.Context, r *Request) (*Request, error) {
	if r.State != Pending || s.now().Before(r.ExpiresAt) {
		return r, nil
	}
	got, err := s.cfg.Store.Expire(ctx, r.ID, s.now())
	if err != nil {
		return nil, err
	}
	if got.State == Expired {
		s.audit(got, "", "expired")
		s.signal(got.ID)
	}
	return got, nil
}

// FindQuery returns the request of a held query id, expiring it first
// when its time is up.
func (s *Service) FindQuery(ctx context.Context, qid string) (*Request, error) {
	r, err := s.cfg.Store.FindQuery(ctx, qid)
	if err != nil {
		return nil, err
	}
	return s.expireIfDue(ctx, r)
}

// List returns requests, newest first, expiring those past due.
func (s *Service) List(ctx context.Context, state State, limit int) ([]*Request, error) {
	all, err := s.cfg.Store.List(ctx, state, limit)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for _, r := range all {
		r, err := s.expireIfDue(ctx, r)
		if err != nil {
			return nil, err
		}
		if state == "" || r.State == state {
			out = append(out, r)
		}
	}
	return out, nil
}

// Decide records reviewer's approval or denial with a reason.
func (s *Service) Decide(ctx context.Context, id, reviewer string, approve bool, reason string) (*Request, error) {
	if strings.TrimSpace(reviewer) == "" {
		return nil, errors.New("approval: a decision needs a reviewer")
	}
	r, err := s.cfg.Store.Vote(ctx, id, Vote{Reviewer: reviewer, Approve: approve, Reason: reason}, s.now())
	if r != nil && (err == nil || errors.Is(err, ErrExpired)) {
		s.signal(id)
	}
	outcome := "denied"
	if approve {
		outcome = "approved"
	}
	switch {
	case err == nil:
		if r.State == Pending {
			outcome = "approval recorded, waiting for more reviewers"
		}
		s.log.Info("approval decision", "approval", id, "reviewer", reviewer, "outcome", outcome, "state", r.State)
		s.audit(r, reviewer, outcome)
	case r != nil:
		s.log.Warn("approval decision refused", "approval", id, "reviewer", reviewer, "err", err)
		s.audit(r, reviewer, "refused: "+err.Error())
	}
	return r, err
}

// Cancel ends a pending request because the client gave up.
func (s *Service) Cancel(ctx context.Context, id, reason string) (*Request, error) {
	r, err := s.cfg.Store.Cancel(ctx, id, reason, s.now())
	if err == nil {
		s.audit(r, "", "cancelled")
		s.signal(id)
	}
	return r, err
}

// Claim claims the run of an approved request for this instance with the
// default lease (DefaultRunBound): of concurrent callers exactly one
// succeeds. See ClaimRun.
func (s *Service) Claim(ctx context.Context, id string) (*Request, error) {
	res, err := s.ClaimRun(ctx, id, 0)
	if res == nil {
		return nil, err
	}
	return res.Request, err
}

// ClaimRun claims the run of an approved request for this service's
// instance, for lease (the run's bound; DefaultRunBound when zero). A run
// taken over from a dead (or overdue) claimer, or sent again after its
// outcome, is counted (ResumedRuns) and audited. It fails with
// ErrFinal, ErrRunning (another live instance runs it) or ErrClaimed (it
// may not run again); the result is set with ErrRunning too.
func (s *Service) ClaimRun(ctx context.Context, id string, lease time.Duration) (*ClaimResult, error) {
	res, err := s.cfg.Store.Claim(ctx, id, Claim{By: *s.cfg.Instance, Lease: lease}, s.now())
	if err != nil || res.Kind == ClaimNew {
		return res, err
	}
	// The gateway logs the take-over with the request's context; here it
	// is counted and audited.
	s.resumed.Add(1)
	r := res.Request
	s.auditDetail(r, "", "run "+res.Kind.String()+" (claimed by "+res.Previous.ID+", "+res.Why+")", map[string]any{
		"previous_claimer": res.Previous, "claimer": s.cfg.Instance.ID, "why": res.Why,
	})
	return res, nil
}

// Finish records the final outcome of a claimed run ("success" or an
// error code), so no successor resumes it as unfinished.
func (s *Service) Finish(ctx context.Context, id, outcome string) (*Request, error) {
	return s.cfg.Store.Finish(ctx, id, outcome, s.now())
}

// ResumedRuns is how many runs this service took over from another
// gateway instance (dead, overdue, or finished without its reply known to
// have reached the driver).
func (s *Service) ResumedRuns() uint64 { return s.resumed.Load() }

// Instance is the gateway instance this service claims runs as.
func (s *Service) Instance() Instance { return *s.cfg.Instance }

// Wait returns the request once it is no longer pending, or as it is
// after maxWait (or when ctx ends). It expires the request at its deadline.
func (s *Service) Wait(ctx context.Context, id string, maxWait time.Duration) (*Request, error) {
	deadline := time.NewTimer(maxWait)
	defer deadline.Stop()
	tick := time.NewTicker(s.cfg.StorePoll)
	defer tick.Stop()
	changes, release := s.watch(id)
	defer release()
	for {
		ch := changes()
		r, err := s.Get(ctx, id)
		if err != nil || r.State.Final() {
			return r, err
		}
		wake := time.Until(r.ExpiresAt)
		expiry := time.NewTimer(max(wake, 0) + 10*time.Millisecond)
		select {
		case <-ctx.Done():
			expiry.Stop()
			return r, nil
		case <-deadline.C:
			expiry.Stop()
			return r, nil
		case <-ch:
		case <-tick.C:
		case <-expiry.C:
		}
		expiry.Stop()
	}
}

func (s *Service) audit(r *Request, reviewer, outcome string) {
	s.auditDetail(r, reviewer, outcome, nil)
}

// auditDetail emits an approval event with extra detail.
func (s *Service) auditDetail(r *Request, reviewer, outcome string, extra map[string]any) {
	if s.cfg.Audit == nil {
		return
	}
	detail := map[string]any{"requester": r.Requester, "sql_sha256": r.SQLHash, "bindings_sha256": r.BindingsHash}
	for k, v := range extra {
		detail[k] = v
	}
	s.cfg.Audit.Emit(audit.Event{
		Time: s.now(), Type: audit.ApprovalDecision, Outcome: outcome, Reason: r.DecisionReason,
		SessionID: r.SessionID, Rule: r.Rule, Account: r.Account, User: r.User, Role: r.Role,
		RequestID: r.RequestKey, QueryID: r.QueryID, SQL: recording.RedactSQL(r.SQL), Class: r.Class,
		Decision: string(r.State), ApprovalID: r.ID, Reviewer: reviewer,
		Detail: detail,
	})
}

// Describe renders a request for a human: the CLI's show and the
// notifier's text.
func Describe(r *Request) string {
	var b strings.Builder
	fmt.Fprintf(&b, "approval %s: %s\n", r.ID, r.State)
	fmt.Fprintf(&b, "  requester: %s (rule %s", r.Requester, r.Rule)
	if r.Role != "" {
		fmt.Fprintf(&b, ", role %s", r.Role)
	}
	b.WriteString(")\n")
	fmt.Fprintf(&b, "  session:   %s  query %s\n", r.SessionID, r.QueryID)
	fmt.Fprintf(&b, "  class:     %s", r.Class)
	if len(r.Objects) > 0 {
		fmt.Fprintf(&b, "  objects: %s", strings.Join(r.Objects, ", "))
	}
	b.WriteString("\n")
	if r.Reason != "" {
		fmt.Fprintf(&b, "  why held:  %s\n", r.Reason)
	}
	fmt.Fprintf(&b, "  sql:       %s\n", r.SQL)
	if len(r.Bindings) > 0 {
		fmt.Fprintf(&b, "  bindings:  %s\n", r.Bindings)
	}
	fmt.Fprintf(&b, "  created:   %s  expires %s  (min approvers %d)\n", r.CreatedAt.Format(time.RFC3339), r.ExpiresAt.Format(time.RFC3339), r.MinApprovers)
	for _, v := range r.Votes {
		verb := "denied"
		if v.Approve {
			verb = "approved"
		}
		fmt.Fprintf(&b, "  %s by %s at %s: %s\n", verb, v.Reviewer, v.At.Format(time.RFC3339), v.Reason)
	}
	if r.DecidedAt != nil {
		fmt.Fprintf(&b, "  decided:   %s  %s\n", r.DecidedAt.Format(time.RFC3339), r.DecisionReason)
	}
	if r.ExecutedAt != nil {
		fmt.Fprintf(&b, "  run:       %s", r.ExecutedAt.Format(time.RFC3339))
		if r.Claimer != nil {
			fmt.Fprintf(&b, "  by %s", r.Claimer)
		}
		if r.RanAt != nil {
			fmt.Fprintf(&b, "  finished %s: %s", r.RanAt.Format(time.RFC3339), r.RunOutcome)
		}
		b.WriteString("\n")
	}
	return b.String()
}
