package main

import (
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/redirect"
)

func init() {
	var pinDir, cgroup string
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the kernel features the redirect needs, and the attach state",
		Long: `doctor probes every kernel feature snowgate's eBPF redirect uses (cgroup v2,
bpffs, BTF, program, attach and map types, helpers, cgroup links, BPF LSM) and
prints what works, what is missing and what is degraded, with what to do.
When the redirect is installed it also checks that its programs are in force
on the attached cgroup. It exits non-zero when a mandatory feature is missing
or the installed redirect is not in force.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDoctor(cmd.OutOrStdout(), pinDir, cgroup)
		},
	}
	cmd.Flags().StringVar(&pinDir, "pin-dir", redirect.DefaultPinDir, "bpffs directory of the pinned redirect")
	cmd.Flags().StringVar(&cgroup, "cgroup", "", "cgroup v2 directory to verify (default: the one the redirect is attached to)")
	rootCmd.AddCommand(cmd)
}

func runDoctor(w io.Writer, pinDir, cgroup string) error {
	report, kerr := redirect.CheckKernel()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATE\tFEATURE\tDETAIL")
	for _, p := range report.Probes {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", p.State, p.Name, p.Detail)
	}
	tw.Flush()
	advice := func(title string, probes []redirect.Probe) {
		if len(probes) == 0 {
			return
		}
		fmt.Fprintf(w, "\n%s:\n", title)
		for _, p := range probes {
			fmt.Fprintf(w, "  - %s: %s\n", p.Name, p.Remedy)
		}
	}
	advice("Missing (the redirect cannot run)", report.Missing())
	advice("Degraded (the redirect runs with a gap)", report.Degraded())

	fmt.Fprintln(w)
	var attachErr error
	if !redirect.Installed(pinDir) {
		fmt.Fprintf(w, "redirect: not installed (no pins in %s)\n", pinDir)
	} else {
		if cgroup == "" {
			cgroup, attachErr = redirect.AttachedCgroup(pinDir)
		}
		if attachErr == nil {
			attachErr = redirect.VerifyAttached(cgroup, pinDir)
		}
		if attachErr != nil {
			fmt.Fprintf(w, "redirect: NOT IN FORCE: %v\n", attachErr)
		} else {
			fmt.Fprintf(w, "redirect: in force on %s (pins in %s)\n", cgroup, pinDir)
		}
	}
	if kerr != nil {
		return kerr
	}
	return attachErr
}
