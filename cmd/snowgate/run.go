package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/certs"
	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/dnsproxy"
	"github.com/snowgate/snowgate/internal/gateway"
	"github.com/snowgate/snowgate/internal/redirect"
)

// runOptions are the flags of `snowgate run`.
type runOptions struct {
	configFile   string
	pinDir       string
	upstreamCA   string
	exchangeLog  string
	shutdownWait time.Duration
}

func init() {
	var o runOptions
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the gateway daemon",
		Long: `run loads the configuration, checks the kernel, installs (or upgrades) the
eBPF redirect on the agents' cgroup with the daemon's own cgroup excluded, and
serves the DNS forwarder, the gateway listener and the admin listener
(/healthz) until SIGTERM or SIGINT. On exit the redirect stays pinned, so
agents fail closed until the daemon is back; only 'snowgate uninstall'
removes it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, syscall.SIGINT)
			defer stop()
			return runDaemon(ctx, o)
		},
	}
	cmd.Flags().StringVar(&o.configFile, "config", "", "configuration file (required)")
	cmd.Flags().StringVar(&o.pinDir, "pin-dir", redirect.DefaultPinDir, "bpffs directory of the pinned redirect")
	cmd.Flags().StringVar(&o.upstreamCA, "upstream-ca-file", "", "PEM CA trusted for every upstream's TLS, besides the system roots and accounts.<name>.upstream_ca_file")
	cmd.Flags().StringVar(&o.exchangeLog, "exchange-log", "", "JSON-lines file of redacted exchanges (overrides recording.exchange_log)")
	cmd.Flags().DurationVar(&o.shutdownWait, "shutdown-timeout", 10*time.Second, "how long open connections may finish on SIGTERM")
	_ = cmd.MarkFlagRequired("config")
	rootCmd.AddCommand(cmd)
}

func runDaemon(ctx context.Context, o runOptions) error {
	log := slog.Default()
	// SIGHUP hands the listeners over to a new daemon (listeners.go);
	// caught from the start, so an early one does not kill the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("own executable: %w", err)
	}
	cfg, err := config.Load(o.configFile)
	if err != nil {
		return err
	}
	report, err := redirect.CheckKernel()
	if err != nil {
		for _, p := range report.Missing() {
			log.Error("kernel feature missing", "feature", p.Name, "detail", p.Detail, "remedy", p.Remedy)
		}
		return fmt.Errorf("refusing to start: %w", err)
	}
	for _, p := range report.Degraded() {
		log.Warn("kernel feature degraded", "feature", p.Name, "detail", p.Detail)
	}

	selfCg, err := ownCgroupID()
	if err != nil {
		return err
	}
	proxyAddr, err := netip.ParseAddr(cfg.Intercept.ProxyAddress)
	if err != nil {
		return fmt.Errorf("intercept.proxy_address: %w", err)
	}
	proxy := netip.AddrPortFrom(proxyAddr, uint16(cfg.Intercept.TLSPort))
	dnsAddr, err := netip.ParseAddrPort(cfg.DNS.Listen)
	if err != nil {
		return fmt.Errorf("dns.listen: %w", err)
	}
	if err := redirect.EnsureHostAddress(proxyAddr); err != nil {
		return fmt.Errorf("proxy address: %w", err)
	}

	ca, err := certs.LoadCA(cfg.CA.CertFile, cfg.CA.KeyFile)
	if err != nil {
		return err
	}
	minter, err := certs.NewMinter(ca, certs.MinterOptions{
		OCSPURL:  cfg.CA.OCSPURL,
		Domains:  cfg.Intercept.SnowflakeDomains,
		Validity: cfg.CA.LeafValidity.Duration,
	})
	if err != nil {
		return err
	}
	ocspURL, err := url.Parse(cfg.CA.OCSPURL)
	if err != nil {
		return fmt.Errorf("ca.ocsp_url: %w", err)
	}
	responder, err := certs.NewResponder(ca, minter, certs.ResponderOptions{Path: ocspURL.Path, Logger: log})
	if err != nil {
		return err
	}
	// Chunk storage is reached with the CAs of every account (an
	// emulator or private link serves its own chunks); each account's API
	// with its own CA.
	caFiles := []string{o.upstreamCA}
	for _, a := range cfg.Accounts {
		caFiles = append(caFiles, a.UpstreamCAFile)
	}
	upTLS, err := gateway.UpstreamTLSConfig(caFiles...)
	if err != nil {
		return err
	}
	logPath := cfg.Recording.ExchangeLog
	if o.exchangeLog != "" {
		logPath = o.exchangeLog
	}
	sink, err := openExchangeLog(logPath)
	if err != nil {
		return err
	}
	defer sink.Close()
	d := &daemon{cfg: cfg, log: log, admin: adminMux()}
	d.gw.Observers = append(d.gw.Observers, sink)
	defer d.close()
	for _, stage := range []struct {
		name string
		wire func(context.Context) error
	}{
		{"identity", d.wireIdentity},
		{"recording", d.wireRecording},
		{"policy", d.wirePolicy},
		{"metrics", d.wireMetrics},
		{"limits", d.wireLimits},
		{"chunks", d.wireChunks},
		{"profiling", d.wireProfiling},
	} {
		if err := stage.wire(ctx); err != nil {
			return fmt.Errorf("%s: %w", stage.name, err)
		}
	}

	names := make([]string, 0, len(cfg.Accounts))
	for name := range cfg.Accounts {
		names = append(names, name)
	}
	sort.Strings(names)
	var accounts []gateway.Account
	for _, name := range names {
		a := cfg.Accounts[name]
		accTLS, err := gateway.UpstreamTLSConfig(o.upstreamCA, a.UpstreamCAFile)
		if err != nil {
			return fmt.Errorf("accounts.%s.upstream_ca_file: %w", name, err)
		}
		accounts = append(accounts, gateway.Account{Name: name, Host: a.Host, Upstream: a.Upstream, UpstreamTLS: accTLS})
	}
	// The Snowflake addresses the DNS listener learns go to a pinned BPF
	// map, read by the gateway's fronting check; it outlives restarts.
	learned, err := redirect.OpenSnowflakeAddrs(o.pinDir)
	if err != nil {
		return err
	}
	defer learned.Close()
	d.dns.addrs.Store(learned)
	static := map[string][]netip.Addr{}
	for name, addrs := range cfg.DNS.Static {
		for _, a := range addrs {
			ip, err := netip.ParseAddr(a)
			if err != nil {
				return fmt.Errorf("dns.static.%s: %w", name, err)
			}
			static[name] = append(static[name], ip)
		}
	}
	fwd, err := dnsproxy.New(dnsproxy.Config{
		Upstreams: cfg.DNS.Upstreams,
		Timeout:   cfg.DNS.Timeout.Duration,
		Domains:   cfg.Intercept.SnowflakeDomains,
		Static:    static,
		Logger:    log,
		Learn: func(_ context.Context, _ string, addrs []netip.Addr, ttl time.Duration) error {
			if err := learned.Learn(addrs, ttl); err != nil {
				return err
			}
			d.dns.answers.Add(1)
			return nil
		},
	})
	if err != nil {
		return err
	}

	// The sockets: inherited from systemd or the daemon this one replaces,
	// else bound here (listeners.go).
	socks, err := openListeners(listenAddrs{Gateway: proxy.String(), DNS: cfg.DNS.Listen, Admin: cfg.Admin.Listen}, log)
	if err != nil {
		return err
	}
	defer socks.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	// DNS and the gateway listen before the redirect is installed, so no
	// agent query or connection is refused for want of a listener.
	dnsReady := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := fwd.Serve(ctx, socks.dnsUDP, socks.dnsTCP, func(_, _ net.Addr) { close(dnsReady) })
		if err != nil {
			errc <- fmt.Errorf("dns: %w", err)
		}
	}()
	select {
	case <-dnsReady:
	case err := <-errc:
		return err
	}
	ln := socks.gateway
	redir, err := redirect.Install(redirect.Config{
		Cgroup:          cfg.Intercept.Cgroup,
		PinDir:          o.pinDir,
		Proxy:           proxy,
		HostProxy:       proxy,
		DNS:             dnsAddr,
		GatewayCgroupID: selfCg,
		Ports:           interceptPorts(cfg.Intercept.Ports),
	})
	if err != nil {
		cancel()
		wg.Wait()
		return fmt.Errorf("install redirect: %w", err)
	}
	// Close releases this process's handles only: the pins stay, and the
	// redirect keeps failing closed while the daemon is down.
	defer redir.Close()
	log.Info("redirect in force", "cgroup", cfg.Intercept.Cgroup, "proxy", proxy, "dns", dnsAddr, "pin_dir", redir.PinDir())
	d.redirect = redir
	d.startBypassAudit(ctx)
	gc := d.gw
	gc.Minter = minter
	gc.Responder = responder
	gc.OCSPHost = ocspURL.Hostname()
	gc.Domains = cfg.Intercept.SnowflakeDomains
	gc.Accounts = accounts
	gc.OtherTLS = cfg.Intercept.OtherTLS
	gc.SnowflakeAddrs = learned.Contains
	gc.UpstreamTLS = upTLS
	gc.Logger = log
	gc.Origins = redir
	gw, err := gateway.New(gc)
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	d.gateway = gw

	// The gateway serves on a context the stop signal does not cancel:
	// on SIGTERM, Shutdown drains it (handshakes and requests in progress
	// finish) before stopServing ends what is left.
	serveCtx, stopServing := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServing()
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := gw.Serve(serveCtx, ln); err != nil {
			errc <- err
		}
	}()
	admin := &http.Server{Addr: cfg.Admin.Listen, Handler: d.admin, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer wg.Done()
		if err := admin.Serve(socks.admin); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin: %w", err)
		}
	}()
	log.Info("snowgate running", "gateway", proxy, "admin", cfg.Admin.Listen, "pid", os.Getpid())
	socks.signalReady(log)
	socks.afterPredecessor(d.adoptPredecessorSessions)

	runErr := serveUntilStop(ctx, socks, exe, hup, errc, d.handoverCheckpoint, log)
	// Graceful: stop accepting, let requests in progress finish (a
	// successor, if any, already accepts on the same sockets), then end
	// what is left.
	sctx, scancel := context.WithTimeout(context.Background(), o.shutdownWait)
	defer scancel()
	_ = admin.Shutdown(sctx)
	_ = gw.Shutdown(sctx)
	stopServing()
	cancel()
	wg.Wait()
	return runErr
}

func adminMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	return mux
}

// openExchangeLog opens the exchange log, creating its directory (mode
// 0700) when missing.
func openExchangeLog(path string) (*gateway.JSONLinesSink, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("exchange log directory: %w", err)
	}
	return gateway.NewJSONLinesSink(path)
}

// interceptPorts converts the validated configured ports.
func interceptPorts(ports []int) []uint16 {
	out := make([]uint16, len(ports))
	for i, p := range ports {
		out[i] = uint16(p)
	}
	return out
}

// ownCgroupID is the cgroup v2 id of this process: the one the redirect
// lets through.
func ownCgroupID() (uint64, error) {
	root, err := redirect.FindCgroup2()
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return 0, fmt.Errorf("own cgroup: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return redirect.CgroupID(filepath.Join(root, rest))
		}
	}
	return 0, errors.New("own cgroup: no cgroup v2 entry in /proc/self/cgroup")
}
