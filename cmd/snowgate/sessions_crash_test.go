package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/identity/oidctest"
	"github.com/snowgate/snowgate/internal/recording"
	"github.com/snowgate/snowgate/internal/testenv"
)

const crashAgentEnv = "SNOWGATE_CRASH_TEST_AGENT"

// TestSessionsCrashAgentProcess is not a test: it is the agent of
// TestSessionsCrash. It opens several sessions (one database handle each,
// logged in with the workload token in its environment) and runs distinct
// statements on all of them concurrently, printing "got <value>" for every
// result it received, until its stdin closes. Failures (the gateway was
// killed) are retried quietly. It skips otherwise.
func TestSessionsCrashAgentProcess(t *testing.T) {
	dsn := os.Getenv(crashAgentEnv)
	if dsn == "" {
		t.Skip("helper process for TestSessionsCrash")
	}
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	stop := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(stop)
		// Exit at once: a driver retrying against a killed gateway may
		// take minutes to give up.
		mu.Lock()
		out.Flush()
		os.Exit(0)
	}()
	var wg sync.WaitGroup
	for g := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			db, err := sql.Open("snowflake", dsn)
			if err != nil {
				return
			}
			defer db.Close()
			db.SetMaxOpenConns(1)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				v := fmt.Sprintf("g%d-%d", g, i)
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				var got string
				err := db.QueryRowContext(ctx, "SELECT '"+v+"'").Scan(&got)
				cancel()
				if err != nil {
					time.Sleep(100 * time.Millisecond)
					continue
				}
				mu.Lock()
				fmt.Fprintf(out, "got %s\n", got)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	os.Exit(0)
}

// crashEnv is `snowgate run` with the identity stage (a workload-token
// issuer, key-pair credential) and the emulator, in a private namespace.
type crashEnv struct {
	*restartEnv
	issuer  *oidctest.Issuer
	tokens  []string
	recDir  string
	pubFile string
}

// newCrashEnv builds the environment; extra is appended to the recording
// section of the configuration (indented two spaces).
func newCrashEnv(t *testing.T, extra string) *crashEnv {
	t.Helper()
	testenv.RequireRoot(t)
	dir := t.TempDir()
	e := &crashEnv{restartEnv: &restartEnv{dir: dir, bin: buildSnowgate(t)}}
	s := e.setUp(t, "snowgate-crashtest-")
	e.issuer = s.issuer
	e.recDir = filepath.Join(dir, "recordings")
	keyFile := filepath.Join(dir, "state", "signing-key.pem")
	e.pubFile = keyFile + recording.PublicKeySuffix
	e.writeConfig(t, s, "", "crash-rule", fmt.Sprintf(`recording:
  dir: %s
  signing_key_file: %s
%s`, e.recDir, keyFile, extra))
	return e
}

// crashAgent is a running TestSessionsCrashAgentProcess.
type crashAgent struct {
	p   *testenv.Piped
	got chan string
	mu  sync.Mutex
	all []string
	eof chan struct{}
}

func (e *crashEnv) startCrashAgent(t *testing.T) *crashAgent {
	t.Helper()
	tok := oidctest.GitHub("snowgate", "acme", "1", "app", "2")
	tok.Lifetime = 15 * time.Minute
	signed := e.issuer.Sign(t, tok)
	e.tokens = append(e.tokens, signed)
	cmd := e.agentCommand(t, "TestSessionsCrashAgentProcess", crashAgentEnv+"="+restartAccount+":443/?"+workloadTokenParams(signed))
	cmd.Stderr = nil
	a := &crashAgent{p: testenv.StartPiped(t, cmd), got: make(chan string, 1<<16), eof: make(chan struct{})}
	go func() {
		defer close(a.eof)
		sc := bufio.NewScanner(a.p.Stdout())
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "got "); ok {
				a.mu.Lock()
				a.all = append(a.all, v)
				a.mu.Unlock()
				select {
				case a.got <- v:
				default:
				}
			}
		}
	}()
	return a
}

// waitResults waits (generously) until the agent has received n results.
func (a *crashAgent) waitResults(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(3 * time.Minute)
	for i := 0; i < n; i++ {
		select {
		case <-a.got:
		case <-deadline:
			t.Fatalf("the agent received %d results in 3 minutes, want %d", i, n)
		}
	}
}

// stop closes the agent's stdin and returns every value it received.
func (a *crashAgent) stop(t *testing.T) []string {
	t.Helper()
	a.p.Stdin().Close()
	select {
	case <-a.eof:
	case <-time.After(2 * time.Minute):
		t.Fatal("the agent did not exit")
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.all...)
}

// recordedValues reads every recording in dir (checking each is intact,
// sealed or not) and returns the result cells of their query replies.
func recordedValues(t *testing.T, dir, pubFile string, wantSealed bool) map[string]bool {
	t.Helper()
	pub, err := recording.LoadPublicKey(pubFile)
	if err != nil {
		t.Fatal(err)
	}
	paths, err := filepath.Glob(filepath.Join(dir, "*"+recording.FileExt))
	if err != nil {
		t.Fatal(err)
	}
	vals := map[string]bool{}
	for _, p := range paths {
		rep, err := recording.Verify(p, pub)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Intact() && !wantSealed && rep.Frames < 2 {
			// Killed inside NewWriter before the session start was
			// durable: nothing was released from it; the next start
			// sets it aside.
			t.Logf("%s: cut before its first segment (%v)", filepath.Base(p), rep.Problems)
			continue
		}
		if !rep.Intact() || (wantSealed && !rep.OK()) {
			t.Fatalf("%s: problems %v (sealed %v)", filepath.Base(p), rep.Problems, rep.Sealed)
		}
		if err := recording.EachResultCell(p, func(c string) { vals[c] = true }); err != nil {
			t.Fatal(err)
		}
	}
	return vals
}

// TestSessionsCrash kills `snowgate run` with SIGKILL at random points
// while an agent runs three concurrent sessions, several times. After each
// kill every recording verifies up to its last durable record, and every
// result the agent received is in a recording; the next daemon seals the
// crashed recordings (recovered-after-crash), and `sessions verify --all`
// passes.
func TestSessionsCrash(t *testing.T) {
	e := newCrashEnv(t, "")
	const rounds = 5
	d := e.startDaemon(t, "daemon-0", nil, nil)
	e.waitHealthy(t, d)
	for round := range rounds {
		a := e.startCrashAgent(t)
		n, err := rand.Int(rand.Reader, big.NewInt(60))
		if err != nil {
			t.Fatal(err)
		}
		a.waitResults(t, 5+int(n.Int64()))
		if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-d.exited
		got := a.stop(t)
		vals := recordedValues(t, e.recDir, e.pubFile, false)
		missing := 0
		for _, v := range got {
			if !vals[v] {
				missing++
				if missing < 5 {
					t.Errorf("round %d: the agent received %q, which no recording holds", round, v)
				}
			}
		}
		t.Logf("round %d: killed after the agent received %d results; all in the recordings: %v", round, len(got), missing == 0)
		// The next daemon recovers (seals) what the killed one left open.
		d = e.startDaemon(t, fmt.Sprintf("daemon-%d", round+1), nil, nil)
		e.waitHealthy(t, d)
		out, err := runCLI(t, "sessions", "verify", "--all", "--config", e.cfgFile)
		if err != nil {
			t.Fatalf("round %d: sessions verify after recovery: %v\n%s\ndaemon:\n%s", round, err, out, d.logs())
		}
		if !strings.Contains(out, "recovered-after-crash") {
			t.Errorf("round %d: no recording says it was recovered:\n%s", round, out)
		}
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, d, "snowgate run after SIGTERM")
	recordedValues(t, e.recDir, e.pubFile, true)
	out, err := runCLI(t, "sessions", "list", "--config", e.cfgFile)
	if err != nil || !strings.Contains(out, "crash-rule") {
		t.Fatalf("sessions list: %v\n%s", err, out)
	}

	// Secrets: the workload tokens the agents presented, and the service
	// key, are in no export, replay or daemon log.
	secrets := append([]string{}, e.tokens...)
	keyPEM, err := os.ReadFile(filepath.Join(e.dir, "svc.p8"))
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, strings.Split(strings.TrimSpace(string(keyPEM)), "\n")[2])
	var hay strings.Builder
	paths, _ := filepath.Glob(filepath.Join(e.recDir, "*"+recording.FileExt))
	for _, p := range paths {
		for _, args := range [][]string{{"export", p}, {"export", p, "--format", "pcap"}, {"replay", p}} {
			out, err := runCLI(t, append(append([]string{"sessions"}, args...), "--config", e.cfgFile)...)
			if err != nil {
				t.Fatalf("sessions %v: %v", args, err)
			}
			hay.WriteString(out)
		}
	}
	for i := 0; i <= rounds; i++ {
		b, _ := os.ReadFile(filepath.Join(e.dir, fmt.Sprintf("daemon-%d.log", i)))
		hay.Write(b)
	}
	auditTrail, err := os.ReadFile(filepath.Join(e.recDir, "audit.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	hay.Write(auditTrail)
	for _, want := range []string{`"type":"login.success"`, `"type":"session.start"`, `"outcome":"recovered"`, `"rule":"crash-rule"`} {
		if !strings.Contains(string(auditTrail), want) {
			t.Errorf("the audit trail lacks %s", want)
		}
	}
	for _, s := range secrets {
		if strings.Contains(hay.String(), s) {
			t.Errorf("a secret (%.12s…) appears in a recording export, replay or log", s)
		}
	}
}
