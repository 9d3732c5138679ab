package main

import (
	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/demo"
)

func init() {
	var opts demo.Options
	var run string
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the whole path on one machine with embedded defaults",
		Long: `Run the demonstration on one machine with embedded defaults (needs root).

In a network namespace of its own, it starts the Snowflake-protocol emulator as
the account demo.snowflakecomputing.com, a workload-identity token issuer, and
'snowgate run' with its eBPF redirect on a fresh agents' cgroup. An agent in
that cgroup connects with the unchanged gosnowflake driver: it reads, runs an
UPDATE that waits for a reviewer's approval (the demo approves it), has a DROP
refused and tries to go around the gateway. Then the demo shows the key
metrics, the recorded session's replay and its verification.

--run CMD runs your own command (through /bin/sh -c) in the agents' cgroup
instead of the scripted agent, with SNOWFLAKE_ACCOUNT, SNOWFLAKE_HOST,
SNOWFLAKE_AUTHENTICATOR=WORKLOAD_IDENTITY, SNOWFLAKE_TOKEN (a fresh workload
token), SSL_CERT_FILE, NODE_EXTRA_CA_CERTS and REQUESTS_CA_BUNDLE set.
--state-dir DIR keeps the configuration, logs and recordings in DIR, so that
'snowgate sessions list --config DIR/snowgate.yaml' reads them afterwards.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Out = cmd.OutOrStdout()
			if run != "" {
				opts.Run = []string{"/bin/sh", "-c", run}
			}
			return demo.Run(cmd.Context(), opts)
		},
	}
	cmd.Flags().IntVar(&opts.Rows, "rows", 100_000, "rows in the multi-chunk SELECT")
	cmd.Flags().StringVar(&opts.StateDir, "state-dir", "", "keep the demo's configuration, logs and recordings in this directory")
	cmd.Flags().StringVar(&run, "run", "", "run this command (with /bin/sh -c) in the agents' cgroup instead of the scripted agent")

	var innerOpts demo.Options
	inner := &cobra.Command{
		Use:    "inner",
		Short:  "The demo inside its network namespace (started by demo)",
		Hidden: true,
		Args:   cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			innerOpts.Out = cmd.OutOrStdout()
			innerOpts.Run = args
			return demo.RunInner(cmd.Context(), innerOpts)
		},
	}
	inner.Flags().IntVar(&innerOpts.Rows, "rows", 100_000, "rows in the multi-chunk SELECT")
	inner.Flags().StringVar(&innerOpts.StateDir, "state-dir", "", "state directory")
	inner.Flags().Bool("run", false, "the arguments are the command to run")
	cmd.AddCommand(inner)

	var agentRows int
	agent := &cobra.Command{
		Use:    "agent",
		Short:  "The demo's scripted agent (started by demo in the agents' cgroup)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return demo.RunAgent(cmd.Context(), cmd.OutOrStdout(), agentRows)
		},
	}
	agent.Flags().IntVar(&agentRows, "rows", 100_000, "rows in the multi-chunk SELECT")
	cmd.AddCommand(agent)
	rootCmd.AddCommand(cmd)
}
