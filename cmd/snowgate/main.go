// Command snowgate is the gateway appliance: the daemon that proxies the
// agents' Snowflake traffic and the operator CLI around it.
//
// Each subcommand lives in its own file and registers itself on rootCmd in an
// init function, so that parts of the product can grow independently.
package main

import (
	"fmt"
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
}

func main() {
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, nil)))
	if err := rootCmd.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "snowgate:", err)
		os.Exit(1)
	}
}
