package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/redirect"
)

func init() {
	var pinDir, cgroup string
	var showConns bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show the programs in force on the agents' cgroup and the redirect counters",
		Long: `status lists the eBPF programs effective on the cgroup (inherited ones
included), marks which are snowgate's pinned programs, names any snowgate hook
that is not in force, and prints the per-reason counters. It exits non-zero
when the redirect is not installed or not fully in force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runStatus(cmd.OutOrStdout(), pinDir, cgroup, showConns)
		},
	}
	cmd.Flags().StringVar(&pinDir, "pin-dir", redirect.DefaultPinDir, "bpffs directory of the pinned redirect")
	cmd.Flags().StringVar(&cgroup, "cgroup", "", "cgroup v2 directory to query (default: the one the redirect is attached to)")
	cmd.Flags().BoolVar(&showConns, "connections", false, "list the redirected connections now open, with their workload")
	rootCmd.AddCommand(cmd)
}

func runStatus(w io.Writer, pinDir, cgroup string, showConns bool) error {
	if !redirect.Installed(pinDir) {
		return fmt.Errorf("status: %w (no pins in %s)", redirect.ErrNotInstalled, pinDir)
	}
	if cgroup == "" {
		var err error
		if cgroup, err = redirect.AttachedCgroup(pinDir); err != nil {
			return fmt.Errorf("status: %w", err)
		}
	}
	st, err := redirect.QueryCgroup(cgroup, pinDir)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	fmt.Fprintf(w, "cgroup:  %s\npins:    %s\n\n", st.Cgroup, pinDir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "HOOK\tPROGRAM ID\tNAME\tSNOWGATE (PINNED)")
	for _, p := range st.Programs {
		ours := "no"
		if p.Ours {
			ours = "yes"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", p.Hook, p.ID, p.Name, ours)
	}
	tw.Flush()

	r, err := redirect.Open(pinDir)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	defer r.Close()
	counters, err := r.Counters()
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	fmt.Fprintln(w, "\ncounters:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, name := range redirect.CounterNames() {
		fmt.Fprintf(tw, "  %s\t%d\n", name, counters[name])
	}
	tw.Flush()

	conns, err := r.Connections()
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	fmt.Fprintf(w, "\nopen redirected connections: %d\n", len(conns))
	if showConns && len(conns) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  CLIENT\tORIGINAL DESTINATION\tCGROUP ID\tPID\tUID")
		for _, c := range conns {
			fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\n", c.Peer, c.Dst, c.CgroupID, c.PID, c.UID)
		}
		tw.Flush()
	}

	if len(st.Missing) > 0 {
		fmt.Fprintf(w, "\nNOT IN FORCE: %v\n", st.Missing)
		return errors.New("status: redirect not fully in force")
	}
	fmt.Fprintln(w, "\nredirect in force")
	return nil
}
