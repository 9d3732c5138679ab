// Command snowgate is the gateway appliance: the daemon that proxies the
// agents' Snowflake traffic and the operator CLI around it.
//
// Each subcommand lives in its own file and registers itself on rootCmd in an
// init function, so that parts of the product can grow independently.
package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

var rootCmd = &cobra.Command{
	Use:           "snowgate",
	Short:         "Snowflake gateway for CI runners: redirect, verify, record, approve",
	SilenceUsage:  true,
	SilenceErrors: true,
	Version:       version,
	PersistentPreRunE: func(*cobra.Command, []string) error {
		return setupLogging(os.Stderr, logLevel, logFormat)
	},
}

// Logging flags, common to every command.
var logLevel, logFormat string

func init() {
	rootCmd.PersistentFlags().StringVar(&logLevel, "log-level", "info", "log level: debug, info, warn or error")
	rootCmd.PersistentFlags().StringVar(&logFormat, "log-format", "text", "log format: text or json")
}

// setupLogging installs the default slog logger on w.
func setupLogging(w io.Writer, level, format string) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		slog.SetDefault(slog.New(slog.NewTextHandler(w, opts)))
	case "json":
		slog.SetDefault(slog.New(slog.NewJSONHandler(w, opts)))
	default:
		return fmt.Errorf("--log-format %q: want text or json", format)
	}
	return nil
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "snowgate:", err)
		os.Exit(1)
	}
}
