package gateway_test

import (
	"bufio"
	"context"
	"crypto"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/certs"
	"github.com/snowgate/snowgate/internal/dnsproxy"
	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/snowflake"
	"github.com/snowgate/snowgate/internal/testenv"
)

const (
	testAccount  = "acme"
	testHost     = "acme.snowflakecomputing.com"
	testUser     = "alice"
	testPassword = "pw-very-secret-1234"
)

// memorySink keeps every exchange and also writes the JSON-lines log, so
// tests can check both what flowed and what was written.
type memorySink struct {
	file *gateway.JSONLinesSink
	path string
	mu   sync.Mutex
	xs   []gateway.Exchange
}

func (s *memorySink) Observe(x *gateway.Exchange) {
	s.mu.Lock()
	s.xs = append(s.xs, *x)
	s.mu.Unlock()
	s.file.Observe(x)
}

// count returns how many exchanges of kind had status.
func (s *memorySink) count(kind string, status int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, x := range s.xs {
		if x.Kind == kind && x.Status == status {
			n++
		}
	}
	return n
}

// relayedChunks counts chunk fetches the gateway sent to storage (issued
// ids whose upstream request was made, whatever storage answered).
func (s *memorySink) relayedChunks() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for _, x := range s.xs {
		if x.Kind == snowflake.KindChunk.String() && x.QueryID != "" && x.Error != "chunk fetch failed" {
			n++
		}
	}
	return n
}

// fixture is the whole data path on one machine: emulator upstream on host
// loopback, the gateway (this process, excluded by cgroup) listening inside
// a private network namespace, the redirect attached to a test cgroup, the
// DNS forwarder with static answers, and an agent process in that cgroup
// and namespace.
type fixture struct {
	inst   *emulatortest.Instance
	gw     *gateway.Gateway
	sink   *memorySink
	caFile string
	ns     *testenv.Netns
	cg     *testenv.Cgroup
	proxy  netip.AddrPort
}

func randomHex(t testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}

// fixtureOptions vary the data path between tests.
type fixtureOptions struct {
	// OtherTLS is the gateway's policy for foreign names (default deny).
	OtherTLS string
	// ExtraPorts are intercepted besides 443 and 80.
	ExtraPorts []uint16
	// Credentials is the gateway's credential hook (default observe only).
	Credentials gateway.Credentials
	// ReadHeaderTimeout of the gateway (default its own).
	ReadHeaderTimeout time.Duration
	// Users are extra emulator users.
	Users map[string]string
	// PublicKeys are the emulator's key-pair users (the gateway's own
	// service users) and OAuthTokens its OAuth access tokens.
	PublicKeys  map[string]crypto.PublicKey
	OAuthTokens map[string]string
	// Recorder is the gateway's recorder (default none); Observers are
	// added after the fixture's own sink.
	Recorder  gateway.Recorder
	Observers []gateway.Observer
	// Upstream, when set, is an emulator running elsewhere (the benchmark's
	// own process) instead of one in this process; f.inst stays nil.
	Upstream *remoteEmulator
	// Limits are the gateway's resource limits (default none).
	Limits gateway.Limits
	// Statements is the gateway's statement policy and approval stage
	// (default none: every statement is forwarded).
	Statements *gateway.StatementPolicy
}

// remoteEmulator is an emulator the fixture does not own.
type remoteEmulator struct {
	URL    string `json:"url"`
	CAFile string `json:"ca_file"`
	Host   string `json:"host"`
	Port   int    `json:"port"`
}

// newFixture builds the data path.
func newFixture(t testing.TB, o fixtureOptions) *fixture {
	t.Helper()
	testenv.RequireRoot(t)
	f := &fixture{}
	users := map[string]string{testUser: testPassword}
	for u, pw := range o.Users {
		users[u] = pw
	}
	upstreamURL, upstreamCA := "", ""
	if o.Upstream != nil {
		upstreamURL, upstreamCA = o.Upstream.URL, o.Upstream.CAFile
	} else {
		f.inst = emulatortest.Start(t, emulator.Config{
			Account:     testAccount,
			Users:       users,
			PublicKeys:  o.PublicKeys,
			OAuthTokens: o.OAuthTokens,
		})
		upstreamURL, upstreamCA = f.inst.URL, f.inst.CAFile
	}

	domains := []string{"snowflakecomputing.com"}
	ca, err := certs.NewCA(certs.CAOptions{PermittedDomains: domains})
	if err != nil {
		t.Fatal(err)
	}
	f.caFile = filepath.Join(t.TempDir(), "gateway-ca.pem")
	if err := os.WriteFile(f.caFile, ca.CertPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	minter, err := certs.NewMinter(ca, certs.MinterOptions{
		OCSPURL: "http://ocsp.snowflakecomputing.com" + snowflake.OCSPPathPrefix,
		Domains: domains,
	})
	if err != nil {
		t.Fatal(err)
	}
	responder, err := certs.NewResponder(ca, minter, certs.ResponderOptions{Path: snowflake.OCSPPathPrefix})
	if err != nil {
		t.Fatal(err)
	}
	upTLS, err := gateway.UpstreamTLSConfig(upstreamCA)
	if err != nil {
		t.Fatal(err)
	}

	f.ns = testenv.NewNetns(t)
	f.cg = testenv.NewCgroup(t)

	ln, err := f.ns.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.proxy = ln.Addr().(*net.TCPAddr).AddrPort()
	pc, dnsLn := listenDNS(t, f.ns)

	logPath := filepath.Join(t.TempDir(), "exchanges.jsonl")
	js, err := gateway.NewJSONLinesSink(logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { js.Close() })
	f.sink = &memorySink{file: js, path: logPath}

	pinDir := filepath.Join("/sys/fs/bpf", "snowgate-gwtest-"+randomHex(t))
	var redir *redirect.Redirect
	err = f.ns.Do(func() error {
		var err error
		redir, err = redirect.Install(redirect.Config{
			Cgroup:          f.cg.Path,
			PinDir:          pinDir,
			Proxy:           f.proxy,
			DNS:             pc.LocalAddr().(*net.UDPAddr).AddrPort(),
			GatewayCgroupID: testenv.SelfCgroup(t).ID,
			Ports:           append(slices.Clone(redirect.DefaultPorts), o.ExtraPorts...),
		})
		return err
	})
	if err != nil {
		t.Fatalf("install redirect: %v", err)
	}
	t.Cleanup(func() {
		redir.Close()
		if err := redirect.Uninstall(pinDir); err != nil {
			t.Errorf("uninstall: %v", err)
		}
	})

	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	snowflakeAddr := testenv.SnowflakeAddr
	f.gw, err = gateway.New(gateway.Config{
		Origins:           redir,
		Minter:            minter,
		Responder:         responder,
		Domains:           domains,
		Accounts:          []gateway.Account{{Name: testAccount, Host: testHost, Upstream: upstreamURL}},
		OtherTLS:          o.OtherTLS,
		Credentials:       o.Credentials,
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		SnowflakeAddrs:    func(a netip.Addr) bool { return a == snowflakeAddr },
		UpstreamTLS:       upTLS,
		Observers:         append([]gateway.Observer{f.sink}, o.Observers...),
		Recorder:          o.Recorder,
		Logger:            logger,
		RequestLimits:     snowflake.Limits{MaxBody: 1 << 20},
		Limits:            o.Limits,
		Statements:        o.Statements,
	})
	if err != nil {
		t.Fatal(err)
	}
	fwd, err := dnsproxy.New(dnsproxy.Config{
		Upstreams: []string{"127.0.0.1:1"},
		Timeout:   2 * time.Second,
		Domains:   domains,
		Static: map[string][]netip.Addr{
			testHost:                      {snowflakeAddr},
			"ocsp.snowflakecomputing.com": {snowflakeAddr},
		},
		Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = f.gw.Serve(ctx, ln) }()
	go func() { defer wg.Done(); _ = fwd.Serve(ctx, pc, dnsLn, nil) }()
	t.Cleanup(func() {
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		_ = f.gw.Shutdown(sctx)
		wg.Wait()
	})
	return f
}

// listenDNS opens UDP and TCP listeners on one port inside ns.
func listenDNS(t testing.TB, ns *testenv.Netns) (net.PacketConn, net.Listener) {
	t.Helper()
	for range 20 {
		pc, err := ns.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ln, err := ns.Listen("tcp4", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		pc.Close()
	}
	t.Fatal("no free DNS port pair")
	return nil, nil
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// agentProc is a running client process in the agents' cgroup, driven
// through p (do, send; p.Stdin, p.Cmd for tests that drive it themselves).
type agentProc struct {
	p *testenv.Piped
}

func (f *fixture) startAgent(t testing.TB) *agentProc {
	t.Helper()
	return startClientProc(t, testenv.Proc{Cgroup: f.cg, Netns: f.ns, Root: true}, f.caFile)
}

// startClientProc starts the client process as p, trusting the CA in caFile.
func startClientProc(t testing.TB, p testenv.Proc, caFile string) *agentProc {
	t.Helper()
	cmd := testenv.Command(t, p, os.Args[0], "-test.run=^TestGatewayClientProcess$", "-test.count=1")
	cmd.Env = testenv.DriverEnv(t, caFile, clientEnv+"=1")
	return &agentProc{p: startPipedProc(t, cmd)}
}

// startPipedProc starts a helper process driven through its stdin and read
// on its stdout (testenv.StartPiped), its stderr in the test's log.
func startPipedProc(t testing.TB, cmd *exec.Cmd) *testenv.Piped {
	t.Helper()
	cmd.Stderr = testWriter{t}
	return testenv.StartPiped(t, cmd)
}

// startPiped is startPipedProc for a test that reads and writes the pipes
// itself.
func startPiped(t testing.TB, cmd *exec.Cmd) (io.WriteCloser, *bufio.Reader) {
	t.Helper()
	p := startPipedProc(t, cmd)
	return p.Stdin(), p.Stdout()
}

// do sends one command and waits (generously) for the reply.
func (a *agentProc) do(t testing.TB, c clientCmd) clientReply {
	t.Helper()
	var r clientReply
	a.p.Call(t, c, &r, 4*time.Minute)
	return r
}

// send sends one command to the agent without waiting, and without failing
// the test from another goroutine: the reply arrives on the channel, or,
// if the harness failed to get one, a reply with Code -1 and the error.
// The test can act meanwhile (as a reviewer, or as a second agent).
func send(a *agentProc, c clientCmd) <-chan clientReply {
	ch := make(chan clientReply, 1)
	var r clientReply
	done := a.p.Go(c, &r)
	go func() {
		if err := <-done; err != nil {
			r = clientReply{Err: "harness: " + err.Error(), Code: -1}
		}
		ch <- r
	}()
	return ch
}

// waitFor polls cond until it holds (generous deadline: a loaded machine).
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	testenv.WaitFor(t, 2*time.Minute, cond, what)
}

// dsn is what an unchanged agent uses: the real account host on 443, default
// TLS (system roots, where the appliance put the gateway CA) and OCSP.
func dsn() string {
	v := url.Values{}
	v.Set("account", testAccount)
	v.Set("loginTimeout", "120")
	return fmt.Sprintf("%s:%s@%s:443/?%s", testUser, testPassword, testHost, v.Encode())
}
