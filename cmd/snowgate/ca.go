package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/certs"
	"github.com/snowgate/snowgate/internal/config"
)

func init() {
	caCmd := &cobra.Command{
		Use:   "ca",
		Short: "Manage the gateway certificate authority",
	}
	var configFile, certFile, keyFile string
	var domains []string
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the gateway CA (certificate and key files)",
		Long: `init creates the gateway CA: a fresh ECDSA P-256 key (written mode 0600) and a
self-signed CA certificate, name-constrained to the Snowflake domains so the key
can vouch for no other site. Existing files are never overwritten. The paths and
domains come from the configuration (ca.cert_file, ca.key_file,
intercept.snowflake_domains) or from the flags, which win. The certificate is
what agents' trust stores need (SSL_CERT_FILE, NODE_EXTRA_CA_CERTS).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCAInit(cmd.OutOrStdout(), configFile, certFile, keyFile, domains)
		},
	}
	initCmd.Flags().StringVar(&configFile, "config", "", "configuration file to take the paths and domains from")
	initCmd.Flags().StringVar(&certFile, "cert", "", "CA certificate file to create")
	initCmd.Flags().StringVar(&keyFile, "key", "", "CA key file to create")
	initCmd.Flags().StringSliceVar(&domains, "domain", nil, "permitted domain (repeatable; default from the configuration, else snowflakecomputing.com)")
	caCmd.AddCommand(initCmd)
	rootCmd.AddCommand(caCmd)
}

func runCAInit(w io.Writer, configFile, certFile, keyFile string, domains []string) error {
	if configFile != "" {
		cfg, err := config.Load(configFile)
		if err != nil {
			return err
		}
		if certFile == "" {
			certFile = cfg.CA.CertFile
		}
		if keyFile == "" {
			keyFile = cfg.CA.KeyFile
		}
		if len(domains) == 0 {
			domains = cfg.Intercept.SnowflakeDomains
		}
	}
	if certFile == "" || keyFile == "" {
		return errors.New("ca init: give --config, or --cert and --key")
	}
	if len(domains) == 0 {
		domains = []string{"snowflakecomputing.com"}
	}
	ca, err := certs.InitCA(certFile, keyFile, certs.CAOptions{PermittedDomains: domains})
	if err != nil {
		return fmt.Errorf("ca init: %w", err)
	}
	fmt.Fprintf(w, "created %s (certificate %s, key %s), permitted domains %v\n", ca, certFile, keyFile, domains)
	return nil
}
