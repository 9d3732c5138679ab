package main

import (
	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/demo"
)

func init() {
	var opts demo.Options
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run the demonstration on one machine with embedded defaults",
		Long: `Run the demonstration on one machine with embedded defaults.

It starts the Snowflake-protocol emulator and drives it with the real
gosnowflake driver as an agent would, printing each step.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opts.Out = cmd.OutOrStdout()
			return demo.Run(cmd.Context(), opts)
		},
	}
	cmd.Flags().IntVar(&opts.Rows, "rows", 100_000, "rows in the multi-chunk SELECT")
	rootCmd.AddCommand(cmd)
}
