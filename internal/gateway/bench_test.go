package gateway_test

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/snowgate/snowgate/internal/emulator"
	"github.com/snowgate/snowgate/internal/emulator/emulatortest"
	"github.com/snowgate/snowgate/internal/testenv"
)

const (
	benchEmulatorEnv = "SNOWGATE_GATEWAY_BENCH_EMULATOR"
	// benchStorageEnv sets the helper emulator's storage URL (where its
	// chunk URLs point).
	benchStorageEnv = "SNOWGATE_GATEWAY_BENCH_STORAGE_URL"
	// BenchNginxEnv names an nginx binary; when set, BenchmarkGatewayPath
	// also measures nginx as a plain TLS-terminating reverse proxy.
	benchNginxEnv = "SNOWGATE_BENCH_NGINX"
)

// TestBenchEmulatorProcess is not a test: it is the emulator process of
// BenchmarkGatewayPath, kept out of the benchmark's process so that the
// process's resident memory is the gateway's. It prints where it listens as
// one JSON line and serves until stdin closes. It skips otherwise.
func TestBenchEmulatorProcess(t *testing.T) {
	if os.Getenv(benchEmulatorEnv) != "1" {
		t.Skip("helper process for BenchmarkGatewayPath")
	}
	inst := emulatortest.Start(t, emulator.Config{
		Account: testAccount,
		Users:   map[string]string{testUser: testPassword},
		Logger:  slog.New(slog.DiscardHandler),
		// Empty: the emulator itself; the nginx baseline points chunk
		// URLs at nginx, so chunks cross the proxy as they do the gateway.
		StorageURL: os.Getenv(benchStorageEnv),
	})
	_ = json.NewEncoder(os.Stdout).Encode(remoteEmulator{URL: inst.URL, CAFile: inst.CAFile, Host: inst.Host, Port: inst.Port})
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startBenchEmulator runs TestBenchEmulatorProcess and returns its address.
func startBenchEmulator(b *testing.B, storageURL string) *remoteEmulator {
	b.Helper()
	cmd := testenv.Command(b, testenv.Proc{Root: true}, os.Args[0], "-test.run=^TestBenchEmulatorProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), benchEmulatorEnv+"=1", benchStorageEnv+"="+storageURL)
	_, r := startPiped(b, cmd)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			b.Fatalf("emulator process: %v", err)
		}
		if strings.HasPrefix(line, "{") {
			var e remoteEmulator
			if err := json.Unmarshal([]byte(line), &e); err != nil {
				b.Fatal(err)
			}
			go func() { _, _ = io.Copy(io.Discard, r) }()
			return &e
		}
	}
}

// nginxProxy is nginx running as a plain TLS-terminating reverse proxy in
// front of an emulator, on loopback.
type nginxProxy struct {
	port   int
	caFile string
	pid    int
}

// freePort returns a loopback port that was free a moment ago.
func freePort(b *testing.B) int {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startNginx runs bin on port with a leaf for localhost and 127.0.0.1 from a
// CA of its own, proxying to the emulator e over TLS with keep-alive.
func startNginx(b *testing.B, bin string, port int, e *remoteEmulator) *nginxProxy {
	b.Helper()
	dir := b.TempDir()
	ca, err := emulatortest.NewCA([]string{"localhost", "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(ca.Leaf.PrivateKey)
	if err != nil {
		b.Fatal(err)
	}
	files := map[string][]byte{
		"ca.pem":   ca.CertPEM,
		"leaf.pem": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.Leaf.Certificate[0]}),
		"leaf.key": pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"nginx.conf": []byte(fmt.Sprintf(`daemon off;
master_process off;
worker_processes 1;
error_log %[1]s/error.log warn;
pid %[1]s/nginx.pid;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path %[1]s/body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  upstream emulator { server 127.0.0.1:%[3]d; keepalive 16; }
  server {
    listen 127.0.0.1:%[2]d ssl;
    ssl_certificate %[1]s/leaf.pem;
    ssl_certificate_key %[1]s/leaf.key;
    client_max_body_size 16m;
    location / {
      proxy_pass https://emulator;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_ssl_server_name on;
      proxy_ssl_name localhost;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate %[4]s;
      proxy_read_timeout 600s;
    }
  }
}
`, dir, port, e.Port, e.CAFile)),
	}
	for name, b2 := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b2, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	cmd := exec.Command(bin, "-p", dir, "-e", filepath.Join(dir, "error.log"), "-c", filepath.Join(dir, "nginx.conf"))
	cmd.Stdout, cmd.Stderr = testWriter{b}, testWriter{b}
	if err := cmd.Start(); err != nil {
		b.Fatalf("nginx: %v", err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			b.Fatalf("nginx did not listen on %d: %v\n%s", port, err, log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return &nginxProxy{port: port, caFile: filepath.Join(dir, "ca.pem"), pid: cmd.Process.Pid}
}

// directDSN is the same driver talking to the emulator itself, trusting its
// CA through SSL_CERT_FILE.
func directDSN(host string, port int) string {
	v := url.Values{}
	v.Set("account", testAccount)
	v.Set("protocol", "https")
	v.Set("loginTimeout", "120")
	v.Set("disableOCSPChecks", "true")
	return fmt.Sprintf("%s:%s@%s:%d/?%s", testUser, testPassword, host, port, v.Encode())
}

// procStatusKB returns a field of /proc/<pid>/status in kB ("self" for
// this process).
func procStatusKB(b *testing.B, pid, field string) int64 {
	raw, err := os.ReadFile("/proc/" + pid + "/status")
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatalf("no %s in /proc/%s/status", field, pid)
	return 0
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// logTopology logs what lies between the agent and the gateway, so that a
// reader can check the comparison with the direct path is like for like: the
// agents' namespace holds only its loopback (no veth or other hop), and the
// redirect sends the agent's connection to the gateway's listener on that
// loopback; the gateway reaches the emulator on the host's loopback, as the
// direct client does.
func logTopology(b *testing.B, f *fixture) {
	b.Helper()
	var names []string
	err := f.ns.Do(func() error {
		links, err := netlink.LinkList()
		if err != nil {
			return err
		}
		for _, l := range links {
			names = append(names, l.Attrs().Name+"/"+l.Type())
		}
		return nil
	})
	if err != nil {
		b.Fatalf("list the agents' namespace links: %v", err)
	}
	b.Logf("agents' namespace links: %s; the redirect sends %s:443 to the gateway at %s on that loopback",
		strings.Join(names, ", "), testenv.SnowflakeAddr, f.proxy)
}

// BenchmarkGatewayPath measures the gateway against the same gosnowflake
// client talking to the emulator directly, in one run: per-query latency of
// SELECT 1 on a warm connection (p50, p99), throughput of a 1,000,000-row
// result with every value checked, and this process's peak resident memory
// while the gateway streams that result. The path measured is the real one:
// client process in the agents' cgroup and a private network namespace,
// eBPF redirect, gateway TLS termination, emulator upstream over TLS on
// loopback. The emulator and both clients run in processes of their own, so
// this process holds the gateway (and the test harness) only.
//
// Run it once (-benchtime 1x): it takes its own samples.
func BenchmarkGatewayPath(b *testing.B) {
	testenv.RequireRoot(b)
	const (
		// 11 rounds alternated path by path: the median of the rounds
		// is steady on a shared machine (5 rounds moved it by up to
		// 100 µs between runs).
		rounds     = 11
		perRound   = 400
		bigRows    = 1000000
		bigRounds  = 3
		selectBig  = "SELECT seq4() AS n, 'row-' || seq4() AS s FROM TABLE(GENERATOR(ROWCOUNT => %d))"
		selectTiny = "SELECT 1"
	)
	emu := startBenchEmulator(b, "")
	f := newFixture(b, fixtureOptions{Upstream: emu})
	gw := f.startAgent(b)
	logTopology(b, f)
	direct := startClientProc(b, testenv.Proc{Root: true}, emu.CAFile)
	clients := map[string]struct {
		a   *agentProc
		dsn string
	}{"gateway": {gw, dsn()}, "direct": {direct, directDSN(emu.Host, emu.Port)}}
	// The nginx baseline has an emulator of its own whose chunk URLs
	// point at nginx.
	var ngx *nginxProxy
	var viaNginx *agentProc
	if bin := os.Getenv(benchNginxEnv); bin != "" {
		port := freePort(b)
		emu2 := startBenchEmulator(b, "https://127.0.0.1:"+strconv.Itoa(port))
		ngx = startNginx(b, bin, port, emu2)
		viaNginx = startClientProc(b, testenv.Proc{Root: true}, ngx.caFile)
		clients["nginx"] = struct {
			a   *agentProc
			dsn string
		}{viaNginx, directDSN("localhost", ngx.port)}
	} else {
		b.Logf("nginx baseline skipped: set %s to an nginx binary", benchNginxEnv)
	}
	for name, c := range clients {
		if r := c.a.do(b, clientCmd{Op: "open", DSN: c.dsn}); r.Err != "" {
			b.Fatalf("%s: login: %s", name, r.Err)
		}
		// Warm up: connection, session, caches.
		if r := c.a.do(b, clientCmd{Op: "latency", SQL: selectTiny, Count: 50}); r.Err != "" {
			b.Fatalf("%s: warm-up: %s", name, r.Err)
		}
	}
	for b.Loop() {
		paths := []*agentProc{direct, gw}
		if viaNginx != nil {
			paths = append(paths, viaNginx)
		}
		var p50, p99, rate [3][]float64 // [direct, gateway, nginx]; µs, rows/s
		// paired[i] are the rounds' p50 overheads of path i over direct
		// measured moments apart, which drift on the machine cancels.
		var paired [3][]float64
		for round := range rounds {
			for i, a := range paths {
				r := a.do(b, clientCmd{Op: "latency", SQL: selectTiny, Count: perRound})
				if r.Err != "" {
					b.Fatalf("latency: %s", r.Err)
				}
				p50[i] = append(p50[i], float64(r.P50)/1e3)
				p99[i] = append(p99[i], float64(r.P99)/1e3)
				if i > 0 {
					paired[i] = append(paired[i], p50[i][round]-p50[0][round])
				}
			}
		}
		var peakKB, beforeKB, nginxPeakKB int64
		for round := range bigRounds {
			for i, a := range paths {
				if i == 1 && round == 0 {
					// The figure is the gateway's: drop the harness's
					// own copies of every exchange so far (the fixture's
					// in-memory sink; the gateway keeps none) and give
					// back what earlier runs of -count left as garbage.
					f.sink.mu.Lock()
					f.sink.xs = nil
					f.sink.mu.Unlock()
					debug.FreeOSMemory()
					// Reset the peak resident set (VmHWM) to now.
					if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
						b.Fatalf("reset peak RSS: %v", err)
					}
					beforeKB = procStatusKB(b, "self", "VmRSS")
				}
				r := a.do(b, clientCmd{Op: "seq", SQL: fmt.Sprintf(selectBig, bigRows), Rows: bigRows})
				if r.Err != "" {
					b.Fatalf("1M rows: %s", r.Err)
				}
				rate[i] = append(rate[i], float64(bigRows)/(float64(r.Elapsed)/1e9))
				if i == 1 && round == 0 {
					peakKB = procStatusKB(b, "self", "VmHWM")
				}
				if i == 2 && round == 0 {
					nginxPeakKB = procStatusKB(b, strconv.Itoa(ngx.pid), "VmHWM")
				}
			}
		}
		d50, g50 := median(p50[0]), median(p50[1])
		d99, g99 := median(p99[0]), median(p99[1])
		dr, gr := median(rate[0]), median(rate[1])
		b.ReportMetric(d50, "direct-p50-µs")
		b.ReportMetric(g50, "gateway-p50-µs")
		b.ReportMetric(g50-d50, "overhead-p50-µs")
		b.ReportMetric(median(paired[1]), "overhead-p50-paired-µs")
		b.ReportMetric(d99, "direct-p99-µs")
		b.ReportMetric(g99, "gateway-p99-µs")
		b.ReportMetric(dr, "direct-rows/s")
		b.ReportMetric(gr, "gateway-rows/s")
		b.ReportMetric(gr/dr, "throughput-ratio")
		b.ReportMetric(float64(beforeKB)/1024, "rss-before-MB")
		b.ReportMetric(float64(peakKB)/1024, "peak-rss-1M-MB")
		b.Logf("latency p50 direct %.0f µs, gateway %.0f µs (overhead %.0f µs; median of the rounds' paired overheads %.0f µs); p99 direct %.0f µs, gateway %.0f µs",
			d50, g50, g50-d50, median(paired[1]), d99, g99)
		b.Logf("1M rows: direct %.0f rows/s, gateway %.0f rows/s (ratio %.2f); samples direct %v gateway %v", dr, gr, gr/dr, rate[0], rate[1])
		b.Logf("gateway process RSS %d MB before, peak %d MB while streaming 1M rows", beforeKB/1024, peakKB/1024)
		if viaNginx != nil {
			n50, n99, nr := median(p50[2]), median(p99[2]), median(rate[2])
			b.ReportMetric(n50, "nginx-p50-µs")
			b.ReportMetric(n50-d50, "nginx-overhead-p50-µs")
			b.ReportMetric(median(paired[2]), "nginx-overhead-p50-paired-µs")
			b.ReportMetric(n99, "nginx-p99-µs")
			b.ReportMetric(nr, "nginx-rows/s")
			b.ReportMetric(nr/dr, "nginx-throughput-ratio")
			b.ReportMetric(float64(nginxPeakKB)/1024, "nginx-peak-rss-MB")
			b.Logf("nginx: latency p50 %.0f µs (overhead %.0f µs; paired %.0f µs), p99 %.0f µs; 1M rows %.0f rows/s (ratio %.2f) samples %v; peak RSS %d MB",
				n50, n50-d50, median(paired[2]), n99, nr, nr/dr, rate[2], nginxPeakKB/1024)
		}
	}
}
