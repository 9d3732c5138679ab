package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/redirect"
)

// Defaults of the installed appliance (appliance/install.sh).
const (
	defaultConfigFile = "/etc/snowgate/snowgate.yaml"
	defaultRunnerEnv  = "/etc/snowgate/runner.env"
)

// doctorOptions are the flags of `snowgate doctor`.
type doctorOptions struct {
	pinDir, cgroup string
	// configFile, runnerEnv and root select the install checks; with the
	// default configuration file absent and none given, they are skipped.
	configFile, runnerEnv, root string
	// configGiven and pinDirGiven say which flags were set: a redirect in
	// another pin directory is not the installed appliance's, so its
	// install checks run only when asked for with --config.
	configGiven, pinDirGiven bool
}

func init() {
	var o doctorOptions
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Check the kernel, the redirect and the installation",
		Long: `doctor probes every kernel feature snowgate's eBPF redirect uses (cgroup v2,
bpffs, BTF, program, attach and map types, helpers, cgroup links, BPF LSM) and
prints what works, what is missing and what is degraded, with what to do.
When the redirect is installed it also checks that its programs are in force
on the attached cgroup.

With a configuration (--config, or /etc/snowgate/snowgate.yaml when present)
it then checks the installation: the agents' cgroup, where the runners,
dockerd's containers and the gateway itself live, the programs in force on
the agents' cgroup, that Go, Node and Python clients in the runners'
environment trust the gateway CA, that the gateway's credentials are readable
by the gateway only, and that the metrics endpoint answers. Each failing line
says what to do.

It exits non-zero when a mandatory feature is missing, the installed redirect
is not in force, or an install check fails.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.configGiven = cmd.Flags().Changed("config")
			o.pinDirGiven = cmd.Flags().Changed("pin-dir")
			return runDoctor(cmd.OutOrStdout(), o)
		},
	}
	cmd.Flags().StringVar(&o.pinDir, "pin-dir", redirect.DefaultPinDir, "bpffs directory of the pinned redirect")
	cmd.Flags().StringVar(&o.cgroup, "cgroup", "", "cgroup v2 directory to verify (default: the one the redirect is attached to)")
	cmd.Flags().StringVar(&o.configFile, "config", defaultConfigFile, "configuration file of the installation to check")
	cmd.Flags().StringVar(&o.runnerEnv, "runner-env", defaultRunnerEnv, "environment file the runners' jobs get (install.sh writes it)")
	cmd.Flags().StringVar(&o.root, "root", "/", "read the files the configuration and the runner environment name below this directory (a scratch install)")
	rootCmd.AddCommand(cmd)
}

func runDoctor(w io.Writer, o doctorOptions) error {
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
	cgroup := o.cgroup
	if !redirect.Installed(o.pinDir) {
		fmt.Fprintf(w, "redirect: not installed (no pins in %s)\n", o.pinDir)
	} else {
		if cgroup == "" {
			cgroup, attachErr = redirect.AttachedCgroup(o.pinDir)
		}
		if attachErr == nil {
			attachErr = redirect.VerifyAttached(cgroup, o.pinDir)
		}
		if attachErr != nil {
			fmt.Fprintf(w, "redirect: NOT IN FORCE: %v\n", attachErr)
		} else {
			fmt.Fprintf(w, "redirect: in force on %s (pins in %s)\n", cgroup, o.pinDir)
		}
	}

	var installErr error
	_, statErr := os.Stat(o.configFile)
	switch {
	case o.configGiven || (statErr == nil && !o.pinDirGiven):
		fmt.Fprintf(w, "\ninstallation (%s):\n", o.configFile)
		checks := installChecks(o)
		printChecks(w, checks)
		if n := failed(checks); n > 0 {
			installErr = fmt.Errorf("doctor: %d install check(s) failed", n)
		}
	case statErr == nil:
		fmt.Fprintf(w, "\ninstallation: not checked for the redirect in %s (give --config to check it)\n", o.pinDir)
	default:
		fmt.Fprintf(w, "\ninstallation: no %s (install checks skipped; give --config)\n", o.configFile)
	}
	return errors.Join(kerr, attachErr, installErr)
}
