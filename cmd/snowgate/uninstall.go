package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/redirect"
)

func init() {
	var pinDir string
	var keepInterface bool
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Remove the eBPF redirect: detach every program and remove every pin",
		Long: `uninstall detaches snowgate's eBPF programs from the agents' cgroup, removes
the pinned links and maps, and deletes the snowgate0 interface. Afterwards
agents connect directly: this is the only command that turns the redirect off.
Stopping or restarting the daemon never does.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := redirect.Uninstall(pinDir); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "redirect removed (pins in %s)\n", pinDir)
			if keepInterface {
				return nil
			}
			removed, err := redirect.RemoveHostInterface()
			if err != nil {
				return err
			}
			if removed {
				fmt.Fprintf(cmd.OutOrStdout(), "interface %s removed\n", redirect.HostInterface)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&pinDir, "pin-dir", redirect.DefaultPinDir, "bpffs directory of the pinned redirect")
	cmd.Flags().BoolVar(&keepInterface, "keep-interface", false, "leave the "+redirect.HostInterface+" interface in place")
	rootCmd.AddCommand(cmd)
}
