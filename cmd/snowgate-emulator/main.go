// Command snowgate-emulator serves the Snowflake client REST protocol for
// tests and the demo: the real drivers log in, run SQL (on SQLite), fetch
// result chunks and transfer files against it as against Snowflake.
//
//	snowgate-emulator --listen 127.0.0.1:8080 --account demo --user alice=secret
//
// It prints the URL it listens on and runs until SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/emulator"
)

var version = "dev"

func main() {
	if err := newRootCmd().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "snowgate-emulator:", err)
		os.Exit(1)
	}
}

type flags struct {
	listen, account           string
	users, keys, pats, oauths []string
	tlsCert, tlsKey           string
	storageURL, dir, db       string
	queryLog                  string
	sessionTTL, masterTTL     time.Duration
	queryWait, resultWait     time.Duration
	faults                    []string
	logLevel                  string
	noAdmin, noCompression    bool
}

func newRootCmd() *cobra.Command {
	var f flags
	cmd := &cobra.Command{
		Use:           "snowgate-emulator",
		Short:         "Serve the Snowflake client protocol backed by SQLite",
		Version:       version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return run(ctx, f, cmd.OutOrStdout())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.listen, "listen", "127.0.0.1:8080", "address to listen on (port 0 picks one)")
	fl.StringVar(&f.account, "account", "", "account name, e.g. demo (required)")
	fl.StringArrayVar(&f.users, "user", nil, "NAME=PASSWORD of a password user (repeatable)")
	fl.StringArrayVar(&f.keys, "public-key", nil, "NAME=PEMFILE of a key-pair user's RSA public key (repeatable)")
	fl.StringArrayVar(&f.pats, "pat", nil, "NAME=TOKEN of a programmatic access token (repeatable)")
	fl.StringArrayVar(&f.oauths, "oauth-token", nil, "TOKEN=NAME of an OAuth access token (repeatable)")
	fl.StringVar(&f.tlsCert, "tls-cert", "", "PEM certificate chain; with --tls-key serves HTTPS")
	fl.StringVar(&f.tlsKey, "tls-key", "", "PEM private key of --tls-cert")
	fl.StringVar(&f.storageURL, "storage-url", "", "base URL of result chunk links (default: this server on the other loopback name)")
	fl.StringVar(&f.dir, "dir", "", "directory for chunk and stage files (default: a temporary one)")
	fl.StringVar(&f.db, "db", "", "SQLite database file (default: in memory)")
	fl.StringVar(&f.queryLog, "query-log", "", "append every executed statement to this file as JSON lines")
	fl.DurationVar(&f.sessionTTL, "session-ttl", time.Hour, "session token validity")
	fl.DurationVar(&f.masterTTL, "master-ttl", 4*time.Hour, "master token validity")
	fl.DurationVar(&f.queryWait, "query-wait", 45*time.Second, "how long a synchronous query waits before answering 333333")
	fl.DurationVar(&f.resultWait, "result-wait", 45*time.Second, "how long a result poll waits")
	fl.StringArrayVar(&f.faults, "fault", nil, "inject a fault: ENDPOINT[,latency=D][,status=N][,reset][,after][,resetafter=BYTES][,rate=BYTES/S][,count=N] (repeatable)")
	fl.StringVar(&f.logLevel, "log-level", "info", "debug, info, warn or error")
	fl.BoolVar(&f.noAdmin, "no-admin", false, "disable the /__emulator/ admin endpoints")
	fl.BoolVar(&f.noCompression, "no-compression", false, "never gzip JSON replies")
	_ = cmd.MarkFlagRequired("account")
	return cmd
}

// pairs parses NAME=VALUE flags.
func pairs(flag string, vals []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range vals {
		k, val, ok := strings.Cut(v, "=")
		if !ok || k == "" || val == "" {
			return nil, fmt.Errorf("--%s %q: want NAME=VALUE", flag, v)
		}
		out[k] = val
	}
	return out, nil
}

func buildConfig(f flags, logger *slog.Logger) (emulator.Config, error) {
	cfg := emulator.Config{
		Account: f.account, SessionTTL: f.sessionTTL, MasterTTL: f.masterTTL, StorageURL: f.storageURL,
		Dir: f.dir, DatabasePath: f.db, QueryLogFile: f.queryLog, QueryWait: f.queryWait, ResultWait: f.resultWait,
		Logger: logger, DisableAdmin: f.noAdmin, DisableCompression: f.noCompression,
	}
	var err error
	if cfg.Users, err = pairs("user", f.users); err != nil {
		return cfg, err
	}
	if cfg.PATs, err = pairs("pat", f.pats); err != nil {
		return cfg, err
	}
	if cfg.OAuthTokens, err = pairs("oauth-token", f.oauths); err != nil {
		return cfg, err
	}
	keyFiles, err := pairs("public-key", f.keys)
	if err != nil {
		return cfg, err
	}
	cfg.PublicKeys = map[string]crypto.PublicKey{}
	for user, file := range keyFiles {
		pub, err := readPublicKey(file)
		if err != nil {
			return cfg, fmt.Errorf("--public-key %s: %w", user, err)
		}
		cfg.PublicKeys[user] = pub
	}
	return cfg, nil
}

// readPublicKey reads a PEM "PUBLIC KEY" (or a certificate) file.
func readPublicKey(file string) (crypto.PublicKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	switch block.Type {
	case "CERTIFICATE":
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		return c.PublicKey, nil
	case "RSA PUBLIC KEY":
		return x509.ParsePKCS1PublicKey(block.Bytes)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse public key: %w", err)
	}
	return pub, nil
}

func run(ctx context.Context, f flags, out interface{ Write([]byte) (int, error) }) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return fmt.Errorf("--log-level: %w", err)
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	if (f.tlsCert == "") != (f.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	cfg, err := buildConfig(f, logger)
	if err != nil {
		return err
	}
	var faults []emulator.Fault
	for _, spec := range f.faults {
		fl, err := emulator.ParseFault(spec)
		if err != nil {
			return err
		}
		faults = append(faults, fl)
	}
	srv, err := emulator.New(cfg)
	if err != nil {
		return err
	}
	defer srv.Close()
	for _, fl := range faults {
		srv.Faults().Add(fl)
	}
	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", f.listen, err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 30 * time.Second}
	scheme := "http"
	if f.tlsCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(out, "listening on %s://%s\n", scheme, ln.Addr())
	errc := make(chan error, 1)
	go func() {
		if scheme == "https" {
			errc <- hs.ServeTLS(ln, f.tlsCert, f.tlsKey)
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	logger.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil {
		_ = hs.Close()
	}
	return nil
}
