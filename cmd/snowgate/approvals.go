package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/approval"
	"github.com/snowgate/snowgate/internal/config"
)

// approvalsOptions are the reviewer CLI's flags.
type approvalsOptions struct {
	configFile string
	admin      string
	tokenFile  string
	reviewer   string
	json       bool
	state      string
	reason     string
}

func init() {
	o := &approvalsOptions{}
	cmd := &cobra.Command{
		Use:   "approvals",
		Short: "Review statements held for approval: list, show, approve, deny",
		Long: `Reviewers' side of just-in-time approval. The commands call the approvals
API on the daemon's admin listener (admin.listen of --config, or --admin),
authenticated with a reviewer token (the first line of
approvals.reviewers.token_file, or the line of --reviewer; or --token-file).
The requesting identity can never approve its own statement.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.configFile, "config", defaultConfigFile, "the daemon's configuration file (admin.listen, approvals.reviewers.token_file)")
	pf.StringVar(&o.admin, "admin", "", "admin listener URL, e.g. http://127.0.0.1:9464 (overrides the configuration)")
	pf.StringVar(&o.tokenFile, "token-file", "", "reviewer token file (overrides the configuration)")
	pf.StringVar(&o.reviewer, "reviewer", "", "reviewer name of the token file line to use (default: the first)")

	list := &cobra.Command{
		Use:   "list",
		Short: "List approval requests (pending by default)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.list(cmd.Context(), cmd.OutOrStdout())
		},
	}
	list.Flags().BoolVar(&o.json, "json", false, "print JSON")
	list.Flags().StringVar(&o.state, "state", "pending", "pending, approved, denied, expired, cancelled or all")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show one request: who, which rule, the exact SQL and bindings, votes",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.show(cmd.Context(), cmd.OutOrStdout(), args[0])
		},
	}
	show.Flags().BoolVar(&o.json, "json", false, "print JSON")
	decide := func(approve bool) *cobra.Command {
		verb := "deny"
		if approve {
			verb = "approve"
		}
		c := &cobra.Command{
			Use:   verb + " ID --reason TEXT",
			Short: strings.ToUpper(verb[:1]) + verb[1:] + " a held statement, with a reason",
			Args:  cobra.ExactArgs(1),
			RunE: func(cmd *cobra.Command, args []string) error {
				return o.decide(cmd.Context(), cmd.OutOrStdout(), args[0], approve)
			},
		}
		c.Flags().StringVar(&o.reason, "reason", "", "why (required; recorded with the decision)")
		_ = c.MarkFlagRequired("reason")
		return c
	}
	cmd.AddCommand(list, show, decide(true), decide(false))
	rootCmd.AddCommand(cmd)
}

// client builds the API client from the flags and the configuration.
func (o *approvalsOptions) client() (*approval.Client, error) {
	admin, tokenFile := o.admin, o.tokenFile
	if admin == "" || tokenFile == "" {
		cfg, err := config.Load(o.configFile)
		if err != nil {
			return nil, fmt.Errorf("%w (or give --admin and --token-file)", err)
		}
		if admin == "" {
			admin = cfg.Admin.Listen
		}
		if tokenFile == "" {
			tokenFile = cfg.Approvals.Reviewers.TokenFile
		}
	}
	if tokenFile == "" {
		return nil, errors.New("no reviewer token: set approvals.reviewers.token_file or give --token-file")
	}
	tok, err := reviewerToken(tokenFile, o.reviewer)
	if err != nil {
		return nil, err
	}
	if !strings.Contains(admin, "://") {
		if host, port, err := net.SplitHostPort(admin); err == nil && (host == "" || host == "0.0.0.0" || host == "::") {
			admin = net.JoinHostPort("127.0.0.1", port)
		}
		admin = "http://" + admin
	}
	return &approval.Client{BaseURL: admin, Token: tok, HTTP: &http.Client{Timeout: 30 * time.Second}}, nil
}

// reviewerToken reads the token of reviewer (or the first) from a token
// file ("NAME TOKEN" or "TOKEN" lines).
func reviewerToken(path, reviewer string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("reviewer token: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 1 && reviewer == "":
			return f[0], nil
		case len(f) == 2 && (reviewer == "" || reviewer == f[0]):
			return f[1], nil
		}
	}
	if reviewer != "" {
		return "", fmt.Errorf("reviewer token: no line for %q in %s", reviewer, path)
	}
	return "", fmt.Errorf("reviewer token: %s holds no token", path)
}

func (o *approvalsOptions) list(ctx context.Context, w io.Writer) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	state := approval.State(o.state)
	if o.state == "all" {
		state = ""
	}
	list, err := c.List(ctx, state)
	if err != nil {
		return err
	}
	if o.json {
		if list == nil {
			list = []*approval.Request{}
		}
		return approvalsJSON(w, list)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tCLASS\tRULE\tREQUESTER\tEXPIRES\tSQL")
	for _, r := range list {
		sql := strings.Join(strings.Fields(r.SQL), " ")
		if len(sql) > 60 {
			sql = sql[:57] + "..."
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, r.Class, r.Rule, r.Requester, r.ExpiresAt.Local().Format(time.TimeOnly), sql)
	}
	return tw.Flush()
}

func (o *approvalsOptions) show(ctx context.Context, w io.Writer, id string) error {
	c, err := o.client()
	if err != nil {
		return err
	}
	r, err := c.Get(ctx, id)
	if err != nil {
		return err
	}
	if o.json {
		return approvalsJSON(w, r)
	}
	_, err = io.WriteString(w, approval.Describe(r))
	return err
}

func (o *approvalsOptions) decide(ctx context.Context, w io.Writer, id string, approve bool) error {
	if strings.TrimSpace(o.reason) == "" {
		return errors.New("--reason is required")
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	r, err := c.Decide(ctx, id, approve, o.reason)
	if err != nil {
		return err
	}
	if r.State == approval.Pending {
		fmt.Fprintf(w, "%s: approval recorded; %d of %d approvers so far\n", r.ID, len(r.Votes), r.MinApprovers)
		return nil
	}
	fmt.Fprintf(w, "%s: %s\n", r.ID, r.State)
	return nil
}

func approvalsJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
