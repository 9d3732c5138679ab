// Command snowgate-load runs many agent workloads at once against Snowflake
// through snowgate, and the same load directly against the upstream in the
// same run, and reports throughput, latency percentiles, the gateway's
// added latency, errors by kind, the gateway process's CPU and memory over
// time, and (against the emulator) whether any statement executed twice.
//
// Each workload is a process of its own (this binary re-executed), cloned
// into a child cgroup of its own under the agents' cgroup, with its own
// credential (a fresh workload token from --token-command or --token-file,
// or the password), holding --sessions real gosnowflake sessions. Every
// session logs in, runs a mix of small queries, multi-chunk SELECTs (every
// row checked) and INSERTs with binds, with think time between them, and
// logs out at the end; --expire-every forces every session to renew.
//
//	snowgate-load --cgroup /sys/fs/cgroup/agents.slice --host acme.snowflakecomputing.com \
//	    --user alice --password-file pw --workloads 20 --sessions 50 --duration 5m \
//	    --direct-host 127.0.0.1 --direct-port 8443 --direct-ca-file emulator-ca.pem \
//	    --emulator-admin https://127.0.0.1:8443 --gateway-pidfile /run/snowgate.pid
//
// It exits 0 when the run is clean (every session logged in, no error, no
// statement executed twice), 1 otherwise, 2 on bad usage.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
)

// options are the command-line settings.
type options struct {
	account, host string
	port          int
	caFile        string
	cgroup, netns string

	directHost, directCAFile, directNetns, directCgroup string
	directPort                                          int
	directDuration                                      time.Duration

	user, passwordFile        string
	tokenCommand, tokenFile   string
	workloads, sessions       int
	duration, ramp, think     time.Duration
	opTimeout, drain          time.Duration
	approveWorkers            int
	mix                       string
	largeRows                 int
	emulatorAdmin, emulatorCA string
	faults                    []string
	faultEvery, expireEvery   time.Duration
	gatewayPID                int
	gatewayPIDFile            string
	sampleEvery               time.Duration
	jsonOut                   string
	allowErrors               []string
	approvalsURL, reviewer    string
	receivedDir               string
	relogin                   bool
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("snowgate-load", flag.ContinueOnError)
	fs.StringVar(&o.account, "account", "acme", "Snowflake account name")
	fs.StringVar(&o.host, "host", "acme.snowflakecomputing.com", "account host the agents connect to (through the gateway)")
	fs.IntVar(&o.port, "port", 443, "port the agents connect to")
	fs.StringVar(&o.caFile, "ca-file", "", "CA the agents trust for --host (the gateway CA; default: system roots)")
	fs.StringVar(&o.cgroup, "cgroup", "", "the agents' cgroup (each workload gets a child cgroup under it); required")
	fs.StringVar(&o.netns, "netns", "", "network namespace path the agents run in (default: this one)")
	fs.StringVar(&o.directHost, "direct-host", "", "upstream host for the direct baseline (empty: no baseline)")
	fs.IntVar(&o.directPort, "direct-port", 443, "upstream port for the direct baseline")
	fs.StringVar(&o.directCAFile, "direct-ca-file", "", "CA the direct baseline trusts")
	fs.StringVar(&o.directNetns, "direct-netns", "", "network namespace of the direct baseline (default: this one)")
	fs.StringVar(&o.directCgroup, "direct-cgroup", "", "parent cgroup of the direct workloads, outside the agents' (default: this process's)")
	fs.DurationVar(&o.directDuration, "direct-duration", 0, "length of the direct baseline (default: --duration, at most 1m)")
	fs.StringVar(&o.user, "user", "", "login name for password login")
	fs.StringVar(&o.passwordFile, "password-file", "", "file holding the password (or $SNOWGATE_LOAD_PASSWORD)")
	fs.StringVar(&o.tokenCommand, "token-command", "", "shell command printing a fresh workload token; run once per workload with $SNOWGATE_LOAD_WORKLOAD set")
	fs.StringVar(&o.tokenFile, "token-file", "", "file holding a workload token, read afresh for each workload")
	fs.IntVar(&o.workloads, "workloads", 4, "concurrent workload processes")
	fs.IntVar(&o.sessions, "sessions", 5, "sessions per workload")
	fs.DurationVar(&o.duration, "duration", time.Minute, "how long every session runs its mix after the ramp")
	fs.DurationVar(&o.ramp, "ramp", 10*time.Second, "sessions of a workload log in spread over this")
	fs.DurationVar(&o.think, "think", time.Second, "mean pause between a session's operations")
	fs.DurationVar(&o.opTimeout, "op-timeout", 3*time.Minute, "bound of one operation, the driver's retries included")
	fs.DurationVar(&o.drain, "drain", 0, "operations in flight when the run's duration ends get this long to finish; those still running then are cut by the end of the run (reported apart, not errors) if they started within the drain before the end, else stuck-at-end errors. 0: as long as --op-timeout")
	fs.IntVar(&o.approveWorkers, "approve-workers", 8, "decisions the reviewer of --approvals-url sends at once")
	fs.StringVar(&o.mix, "mix", "small=80,large=5,dml=15", "operation weights: small (SELECT 1), large (multi-chunk SELECT), dml (INSERT)")
	fs.IntVar(&o.largeRows, "large-rows", 60000, "rows of the large SELECT (the emulator's chunks hold 50,000)")
	fs.StringVar(&o.emulatorAdmin, "emulator-admin", "", "emulator base URL for faults, expiries and the query-log check")
	fs.StringVar(&o.emulatorCA, "emulator-ca-file", "", "CA of --emulator-admin (default: --direct-ca-file)")
	fs.Var((*listFlag)(&o.faults), "fault", "emulator fault during the gateway phase, as snowgate-emulator --fault (repeatable)")
	fs.DurationVar(&o.faultEvery, "fault-every", 0, "install the faults again at this interval (0: once)")
	fs.DurationVar(&o.expireEvery, "expire-every", 0, "expire every session at this interval during the gateway phase (renewals)")
	fs.IntVar(&o.gatewayPID, "gateway-pid", 0, "pid of the gateway process to sample")
	fs.StringVar(&o.gatewayPIDFile, "gateway-pidfile", "", "file holding the gateway's pid")
	fs.DurationVar(&o.sampleEvery, "sample-every", 5*time.Second, "gateway sampling interval")
	fs.StringVar(&o.jsonOut, "json", "", "also write the report as JSON to this file")
	fs.StringVar(&o.approvalsURL, "approvals-url", "", "admin URL of the gateway's approvals API: approve every held statement during the gateway phase")
	fs.StringVar(&o.reviewer, "reviewer-token-file", "", "reviewer token for --approvals-url (\"NAME TOKEN\" as in approvals.reviewers.token_file)")
	fs.BoolVar(&o.relogin, "relogin", false, "after a failed operation, end the session and log in again (a CI job retried), instead of carrying on with it")
	fs.StringVar(&o.receivedDir, "received-dir", "", "write the values of the small queries each workload received to received-PHASE-N files here")
	fs.Var((*listFlag)(&o.allowErrors), "allow-error", "an error kind that does not fail the run (repeatable), e.g. snowflake-390112")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.cgroup == "" {
		return nil, errors.New("--cgroup is required: workloads run in the agents' cgroup")
	}
	if o.workloads < 1 || o.sessions < 1 {
		return nil, errors.New("--workloads and --sessions must be at least 1")
	}
	if o.tokenCommand != "" && o.tokenFile != "" {
		return nil, errors.New("--token-command and --token-file exclude each other")
	}
	if o.tokenCommand == "" && o.tokenFile == "" && o.user == "" {
		return nil, errors.New("need --user (password login) or --token-command/--token-file")
	}
	if _, err := parseMix(o.mix); err != nil {
		return nil, err
	}
	for _, f := range o.faults {
		if _, err := emulator.ParseFault(f); err != nil {
			return nil, err
		}
	}
	if (len(o.faults) > 0 || o.expireEvery > 0) && o.emulatorAdmin == "" {
		return nil, errors.New("--fault and --expire-every need --emulator-admin")
	}
	if (o.approvalsURL == "") != (o.reviewer == "") {
		return nil, errors.New("--approvals-url and --reviewer-token-file go together")
	}
	if o.directDuration == 0 {
		o.directDuration = min(o.duration, time.Minute)
	}
	if o.drain < 0 || o.opTimeout <= 0 {
		return nil, errors.New("--drain must not be negative, --op-timeout must be positive")
	}
	if o.emulatorCA == "" {
		o.emulatorCA = o.directCAFile
	}
	return o, nil
}

// parseMix parses "small=80,large=5,dml=15".
func parseMix(s string) ([]weighted, error) {
	var mix []weighted
	for _, part := range strings.Split(s, ",") {
		op, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(w)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("--mix %q: want OP=WEIGHT,…", s)
		}
		if op != opSmall && op != opLarge && op != opDML {
			return nil, fmt.Errorf("--mix: unknown operation %q (small, large, dml)", op)
		}
		if n > 0 {
			mix = append(mix, weighted{Op: op, Weight: n})
		}
	}
	if len(mix) == 0 {
		return nil, fmt.Errorf("--mix %q: no operation has a weight", s)
	}
	return mix, nil
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "snowgate-load:", err)
		}
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := run(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, "snowgate-load:", err)
		os.Exit(1)
	}
	rep.Command = strings.Join(os.Args, " ")
	rep.write(os.Stdout)
	if o.jsonOut != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "snowgate-load:", err)
			os.Exit(1)
		}
	}
	if len(rep.Problems) > 0 {
		os.Exit(1)
	}
}

// run runs the direct baseline (when configured) and then the gateway
// phase, and checks the outcome.
func run(ctx context.Context, o *options) (*report, error) {
	mix, _ := parseMix(o.mix)
	var runID [4]byte
	_, _ = rand.Read(runID[:])
	id := hex.EncodeToString(runID[:])
	rep := &report{
		Started: time.Now().UTC(),
		Settings: settings{Workloads: o.workloads, Sessions: o.sessions, Duration: o.duration, Ramp: o.ramp,
			Think: o.think, Mix: o.mix, LargeRows: o.largeRows},
		Phases: map[string]*phaseReport{},
	}
	var admin *emulatorAdmin
	if o.emulatorAdmin != "" {
		var err error
		if admin, err = newEmulatorAdmin(o.emulatorAdmin, o.emulatorCA); err != nil {
			return nil, err
		}
	}
	password := os.Getenv("SNOWGATE_LOAD_PASSWORD")
	if o.passwordFile != "" {
		b, err := os.ReadFile(o.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("password: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
	}
	base := workerSpec{Sessions: o.sessions, Ramp: o.ramp, Think: o.think, OpTimeout: o.opTimeout, Mix: mix, LargeRows: o.largeRows, Relogin: o.relogin}

	if o.directHost != "" && o.directDuration > 0 {
		rep.Settings.Direct = o.directDuration
		p := placement{Cgroup: o.directCgroup, Netns: o.directNetns, CAFile: o.directCAFile}
		dsn := func(int) (string, error) {
			// The baseline logs in as the agents would without the gateway.
			return buildDSN(o, password, "", o.directHost, o.directPort, true)
		}
		ph, err := runPhase(ctx, "direct", id, o, base, o.directDuration, p, dsn, nil)
		if err != nil {
			return nil, err
		}
		rep.Phases["direct"] = ph
	}

	p := placement{Cgroup: o.cgroup, Netns: o.netns, CAFile: o.caFile}
	dsn := func(i int) (string, error) {
		token, err := workloadToken(ctx, o, i)
		if err != nil {
			return "", err
		}
		return buildDSN(o, password, token, o.host, o.port, false)
	}
	pid := o.gatewayPID
	if o.gatewayPIDFile != "" {
		b, err := os.ReadFile(o.gatewayPIDFile)
		if err != nil {
			return nil, fmt.Errorf("gateway pid: %w", err)
		}
		if pid, err = strconv.Atoi(strings.TrimSpace(string(b))); err != nil {
			return nil, fmt.Errorf("gateway pid file %s: %w", o.gatewayPIDFile, err)
		}
	}
	var appr *approver
	if o.approvalsURL != "" {
		var err error
		if appr, err = newApprover(o.approvalsURL, o.reviewer, 250*time.Millisecond, o.approveWorkers); err != nil {
			return nil, err
		}
	}
	during := func(ctx context.Context, stopAt time.Time) func() {
		stopFaults := duringGateway(ctx, o, admin, rep, stopAt)
		if appr == nil {
			return stopFaults
		}
		// The reviewer works until the last session closed: a statement
		// sent just before the stop is held like any other.
		actx, acancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { appr.run(actx); close(done) }()
		return func() {
			stopFaults()
			acancel()
			<-done
			res := appr.result()
			rep.Approved, rep.ApproveConflicts, rep.ApproveFailures = res.Approved, res.Conflicts, res.Failures
			if res.Err != nil {
				rep.ApproverError = res.Err.Error()
			}
		}
	}
	var smp *sampler
	if pid > 0 {
		smp = startSampler(pid, o.sampleEvery)
	}
	ph, err := runPhase(ctx, "gateway", id, o, base, o.duration, p, dsn, during)
	if smp != nil {
		samples, serr := smp.finish()
		rep.Gateway = summarize(pid, samples, serr)
	}
	if err != nil {
		return nil, err
	}
	rep.Phases["gateway"] = ph

	if d := rep.Phases["direct"]; d != nil {
		rep.Overhead = map[string]overhead{}
		for op, g := range ph.Ops {
			if dd := d.Ops[op]; dd != nil && dd.Count > 0 && g.Count > 0 {
				rep.Overhead[op] = overhead{P50: g.P50 - dd.P50, P90: g.P90 - dd.P90, P99: g.P99 - dd.P99}
			}
		}
	}
	if admin != nil {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
		log, err := admin.queryLog(qctx)
		cancel()
		if err != nil {
			rep.Problems = append(rep.Problems, err.Error())
		} else {
			dup := duplicates(log)
			rep.Executions = &executionReport{Statements: len(log), Duplicates: len(dup)}
			for _, e := range dup[:min(len(dup), 5)] {
				rep.Executions.Examples = append(rep.Executions.Examples, fmt.Sprintf("session %d requestId %s: %.80s", e.SessionID, e.RequestID, e.SQL))
			}
			if len(dup) > 0 {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%d statements executed twice", len(dup)))
			}
		}
	}
	for _, name := range []string{"direct", "gateway"} {
		p := rep.Phases[name]
		if p == nil {
			continue
		}
		for _, f := range p.Fatal {
			rep.Problems = append(rep.Problems, name+": "+f)
		}
		if want := o.workloads * o.sessions; p.Sessions < want {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %d of %d sessions logged in", name, p.Sessions, want))
		}
		for _, k := range slices.Sorted(func(yield func(string) bool) {
			for k := range p.Errors {
				if !yield(k) {
					return
				}
			}
		}) {
			if !slices.Contains(o.allowErrors, k) {
				rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %d errors %s (e.g. %s)", name, p.Errors[k], k, p.Samples[k]))
			}
		}
	}
	return rep, nil
}

// runPhase runs o.workloads workload processes at p for duration and
// merges their results. during, if set, runs alongside (faults, expiries)
// and is stopped when the sessions stop.
func runPhase(ctx context.Context, phase, runID string, o *options, base workerSpec, duration time.Duration, p placement,
	dsn func(int) (string, error), during func(context.Context, time.Time) func()) (*phaseReport, error) {
	start := time.Now().Add(2*time.Second + time.Duration(o.workloads)*20*time.Millisecond)
	base.Phase = phase
	base.Start = start
	base.StopAt = start.Add(o.ramp + duration)
	base.CloseAt = base.StopAt.Add(2 * time.Second)
	if o.drain > 0 {
		base.EndAt = base.StopAt.Add(o.drain)
	}
	var ws []*workload
	killAll := func() {
		for _, w := range ws {
			w.kill()
			w.wait(context.Background())
		}
	}
	for i := range o.workloads {
		spec := base
		spec.Index = i
		spec.Table = fmt.Sprintf("LOAD_%s_%s_W%d", runID, strings.ToUpper(phase), i)
		d, err := dsn(i)
		if err != nil {
			killAll()
			return nil, fmt.Errorf("%s workload %d: %w", phase, i, err)
		}
		spec.DSN = d
		if o.receivedDir != "" {
			spec.ReceivedFile = filepath.Join(o.receivedDir, fmt.Sprintf("received-%s-%d", phase, i))
		}
		w, err := startWorkload(spec, p, fmt.Sprintf("snowgate-load-%s-%s-%d", runID, phase, i))
		if err != nil {
			killAll()
			return nil, err
		}
		ws = append(ws, w)
	}
	var stopDuring func()
	if during != nil {
		stopDuring = during(ctx, base.StopAt)
	}
	wctx, cancel := context.WithDeadline(ctx, base.CloseAt.Add(o.opTimeout+30*time.Second))
	defer cancel()
	ph := &phaseReport{Window: o.ramp + duration}
	results := make([]workerResult, len(ws))
	var wg sync.WaitGroup
	for i, w := range ws {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = w.wait(wctx) }()
	}
	wg.Wait()
	if stopDuring != nil {
		stopDuring()
	}
	for _, r := range results {
		ph.merge(r)
	}
	ph.finish()
	return ph, nil
}

// duringGateway installs the faults and forces expiries while the gateway
// phase runs; the returned function clears them. Faults are cleared when
// the sessions stop, before they log out.
func duringGateway(ctx context.Context, o *options, admin *emulatorAdmin, rep *report, stopAt time.Time) func() {
	if admin == nil {
		return func() {}
	}
	var faults []emulator.Fault
	for _, f := range o.faults {
		fl, _ := emulator.ParseFault(f)
		faults = append(faults, fl)
	}
	rep.Faults = o.faults
	ctx, cancel := context.WithDeadline(ctx, stopAt)
	var wg sync.WaitGroup
	var mu sync.Mutex
	note := func(err error) {
		if err != nil {
			mu.Lock()
			rep.Problems = append(rep.Problems, err.Error())
			mu.Unlock()
		}
	}
	if len(faults) > 0 {
		note(admin.setFaults(ctx, faults))
		if o.faultEvery > 0 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				every(ctx, o.faultEvery, func() { note(ignoreDone(ctx, admin.setFaults(ctx, faults))) })
			}()
		}
	}
	if o.expireEvery > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			every(ctx, o.expireEvery, func() {
				err := admin.expireSessions(ctx)
				if err == nil {
					mu.Lock()
					rep.Expiries++
					mu.Unlock()
				}
				note(ignoreDone(ctx, err))
			})
		}()
	}
	stopped := make(chan struct{})
	go func() {
		<-ctx.Done()
		wg.Wait()
		if len(faults) > 0 {
			cctx, ccancel := context.WithTimeout(context.Background(), time.Minute)
			note(admin.setFaults(cctx, nil))
			ccancel()
		}
		close(stopped)
	}()
	return func() { cancel(); <-stopped }
}

// ignoreDone drops the error of a call cut short by the end of the phase.
func ignoreDone(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// every calls f at each interval until ctx ends.
func every(ctx context.Context, d time.Duration, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}

// workloadToken returns workload i's token: the output of --token-command
// or the content of --token-file, fresh for each workload; "" for password
// login.
func workloadToken(ctx context.Context, o *options, i int) (string, error) {
	switch {
	case o.tokenCommand != "":
		cctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		cmd := exec.CommandContext(cctx, "/bin/sh", "-c", o.tokenCommand)
		cmd.Env = append(os.Environ(), "SNOWGATE_LOAD_WORKLOAD="+strconv.Itoa(i))
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return "", fmt.Errorf("token command: %w", err)
		}
		tok := strings.TrimSpace(string(out))
		if tok == "" {
			return "", errors.New("token command printed no token")
		}
		return tok, nil
	case o.tokenFile != "":
		b, err := os.ReadFile(o.tokenFile)
		if err != nil {
			return "", fmt.Errorf("token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("token file %s is empty", o.tokenFile)
		}
		return tok, nil
	}
	return "", nil
}

// buildDSN returns the driver's DSN: workload identity with token when set,
// else the password login of --user.
func buildDSN(o *options, password, token, host string, port int, disableOCSP bool) (string, error) {
	cfg := &gosnowflake.Config{
		Account:           o.account,
		Host:              host,
		Port:              port,
		Protocol:          "https",
		LoginTimeout:      2 * time.Minute,
		DisableOCSPChecks: disableOCSP,
	}
	if token != "" {
		cfg.Authenticator = gosnowflake.AuthTypeWorkloadIdentityFederation
		cfg.WorkloadIdentityProvider = "OIDC"
		cfg.Token = token
	} else {
		cfg.User, cfg.Password = o.user, password
	}
	dsn, err := gosnowflake.DSN(cfg)
	if err != nil {
		return "", fmt.Errorf("dsn: %w", err)
	}
	return dsn, nil
}
