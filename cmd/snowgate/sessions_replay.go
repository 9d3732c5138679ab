package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/recording"
)

func sessionsShowCmd(o *sessionsOptions) *cobra.Command {
	return &cobra.Command{
		Use:   "show ID",
		Short: "Show a session's context and its statements",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.store()
			if err != nil {
				return err
			}
			p, err := s.resolve(args[0])
			if err != nil {
				return err
			}
			meta, recs, rerr := s.records(p)
			if len(recs) == 0 && rerr != nil {
				return rerr
			}
			stmts := statements(recs)
			w := cmd.OutOrStdout()
			if o.json {
				err := json.NewEncoder(w).Encode(struct {
					Session    string          `json:"session"`
					Meta       recording.Meta  `json:"meta"`
					Statements []statementInfo `json:"statements"`
				}{sessionName(p), meta, stmts})
				if err != nil {
					return err
				}
				return rerr
			}
			printMeta(w, sessionName(p), meta)
			fmt.Fprintf(w, "\nStatements (%d):\n", len(stmts))
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "  AT\tDECISION\tSTATUS\tROWS\tQUERY ID\tSQL")
			for _, st := range stmts {
				dec := orDash(st.Decision)
				if st.Class != "" {
					dec = st.Class + "/" + dec
				}
				status := "ok"
				if st.Error != "" {
					status = "error: " + truncate(st.Error, 40)
				}
				rows := "-"
				if st.Rows >= 0 {
					rows = fmt.Sprint(st.Rows)
				}
				fmt.Fprintf(tw, "  +%s\t%s\t%s\t%s\t%s\t%s\n", fmtOffset(st.At), dec, status, rows, orDash(st.QueryID), truncate(oneLine(st.SQL), 80))
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if rerr != nil {
				fmt.Fprintf(w, "\nThe recording stops early: %v\n", rerr)
			}
			return rerr
		},
	}
}

// statementInfo is one statement of a session, for show.
type statementInfo struct {
	At       time.Duration `json:"at_ns"`
	SQL      string        `json:"sql"`
	Class    string        `json:"class,omitempty"`
	Decision string        `json:"decision,omitempty"`
	QueryID  string        `json:"query_id,omitempty"`
	Rows     int64         `json:"rows"`
	Error    string        `json:"error,omitempty"`
}

// statements pairs each query request with the reply that followed it.
func statements(recs []recording.Record) []statementInfo {
	var out []statementInfo
	cur := -1
	for _, r := range recs {
		switch r.Kind {
		case recording.KindQueryRequest:
			st := statementInfo{At: r.Mono, SQL: r.SQL, Rows: -1}
			if r.Statement != nil {
				st.Class, st.Decision = r.Statement.Class, r.Statement.Decision
			}
			out = append(out, st)
			cur = len(out) - 1
		case recording.KindQueryResponse, recording.KindError:
			if cur < 0 {
				continue
			}
			st := &out[cur]
			if r.QueryID != "" {
				st.QueryID = r.QueryID
			}
			if r.Error != nil {
				st.Error = strings.TrimSpace(r.Error.Code + " " + r.Error.Message)
			}
			if r.Result != nil && (r.Result.TotalRows > 0 || len(r.Result.Columns) > 0) {
				st.Rows = r.Result.TotalRows
			}
			if r.Kind == recording.KindError {
				cur = -1
			}
		}
	}
	return out
}

func printMeta(w io.Writer, name string, m recording.Meta) {
	fmt.Fprintf(w, "Session   %s\n", name)
	fmt.Fprintf(w, "Started   %s\n", m.Started.UTC().Format(time.RFC3339Nano))
	fmt.Fprintf(w, "Identity  %s (issuer %s)\n", orDash(m.Identity.Subject), orDash(m.Identity.Issuer))
	if len(m.Identity.Claims) > 0 {
		b, _ := json.Marshal(m.Identity.Claims)
		fmt.Fprintf(w, "Claims    %s\n", b)
	}
	fmt.Fprintf(w, "Rule      %s\n", orDash(m.Rule))
	sf := m.Snowflake
	fmt.Fprintf(w, "Snowflake account %s, user %s, role %s, warehouse %s, database %s\n",
		orDash(sf.Account), orDash(sf.User), orDash(sf.Role), orDash(sf.Warehouse), orDash(sf.Database))
	wl := m.Workload
	fmt.Fprintf(w, "Workload  process %s, pid %d, uid %d, cgroup id %d\n", orDash(wl.Process), wl.PID, wl.UID, wl.CgroupID)
	if wl.Cgroup != "" {
		fmt.Fprintf(w, "Cgroup    %s\n", wl.Cgroup)
	}
	if m.Source != "" {
		fmt.Fprintf(w, "Source    %s\n", m.Source)
	}
	client := strings.TrimSpace(orDash(m.Client.Driver) + " " + m.Client.Version)
	if m.Client.Application != "" {
		client += " (" + m.Client.Application + ")"
	}
	fmt.Fprintf(w, "Client    %s\n", client)
	if m.Gateway != "" {
		fmt.Fprintf(w, "Gateway   %s\n", m.Gateway)
	}
}

func sessionsReplayCmd(o *sessionsOptions) *cobra.Command {
	var speed float64
	var maxRows int
	cmd := &cobra.Command{
		Use:   "replay ID",
		Short: "Replay a session: every request and reply as it happened, results as tables",
		Long: `replay prints the session's conversation in order with each event's time
since the session started, pausing between events as they happened divided
by --speed (0: no pauses). Results are rendered as tables (--max-rows per
result; 0 for all); Arrow results are decoded.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if speed < 0 {
				return fmt.Errorf("--speed %v: must not be negative", speed)
			}
			s, err := o.store()
			if err != nil {
				return err
			}
			p, err := s.resolve(args[0])
			if err != nil {
				return err
			}
			meta, recs, rerr := s.records(p)
			if len(recs) == 0 && rerr != nil {
				return rerr
			}
			w := cmd.OutOrStdout()
			if o.json {
				enc := json.NewEncoder(w)
				for _, r := range recs {
					if err := enc.Encode(r); err != nil {
						return err
					}
				}
				return rerr
			}
			printMeta(w, sessionName(p), meta)
			fmt.Fprintln(w)
			cols := map[string][]recording.Column{}
			var last time.Duration
			for _, r := range recs[1:] {
				if speed > 0 && r.Mono > last {
					time.Sleep(time.Duration(float64(r.Mono-last) / speed))
				}
				last = r.Mono
				replayRecord(w, r, cols, maxRows)
			}
			if rerr != nil {
				fmt.Fprintf(w, "\n!! the recording stops here: %v\n", rerr)
				return rerr
			}
			fmt.Fprintln(w, "-- end of recording")
			return nil
		},
	}
	cmd.Flags().Float64Var(&speed, "speed", 0, "replay speed: 1 as it happened, 10 ten times faster, 0 without pauses")
	cmd.Flags().IntVar(&maxRows, "max-rows", 20, "rows shown per result (0: all)")
	return cmd
}

// replayRecord prints one record. cols remembers each query's columns for
// its chunks.
func replayRecord(w io.Writer, r recording.Record, cols map[string][]recording.Column, maxRows int) {
	at := "+" + fmtOffset(r.Mono)
	switch r.Kind {
	case recording.KindQueryRequest:
		tag := ""
		if st := r.Statement; st != nil {
			tag = fmt.Sprintf(" [%s: %s", orDash(st.Class), orDash(st.Decision))
			if st.Rule != "" {
				tag += " by " + st.Rule
			}
			if st.ApprovalID != "" {
				tag += ", approval " + st.ApprovalID
			}
			tag += "]"
		}
		fmt.Fprintf(w, "%s  > query%s\n", at, tag)
		fmt.Fprintf(w, "%s\n", indent(r.SQL, "      "))
		if len(r.Bindings) > 0 {
			fmt.Fprintf(w, "      bindings: %s\n", r.Bindings)
		}
	case recording.KindQueryResponse:
		fmt.Fprintf(w, "%s  < reply %d%s%s\n", at, r.Status, idPart(r.QueryID), durPart(r.Duration))
		printError(w, r.Error)
		if r.Result != nil {
			if len(r.Result.Columns) > 0 && r.QueryID != "" {
				cols[r.QueryID] = r.Result.Columns
			}
			if r.Result.Chunks > 0 {
				fmt.Fprintf(w, "      %d rows in all, %d more chunks to fetch\n", r.Result.TotalRows, r.Result.Chunks)
			}
			printResult(w, r.Result, r.Result.Columns, maxRows)
		}
	case recording.KindChunk:
		fmt.Fprintf(w, "%s  < %s%s%s\n", at, orDash(r.Note), idPart(r.QueryID), durPart(r.Duration))
		if r.Result != nil {
			printResult(w, r.Result, cols[r.QueryID], maxRows)
		}
	case recording.KindLoginRequest:
		fmt.Fprintf(w, "%s  > login%s\n", at, bodySummary(r.Body))
	case recording.KindLoginResponse:
		fmt.Fprintf(w, "%s  < login reply %d%s\n", at, r.Status, durPart(r.Duration))
		printError(w, r.Error)
	case recording.KindRenew:
		fmt.Fprintf(w, "%s  < session renewed (%d)\n", at, r.Status)
	case recording.KindRequest:
		fmt.Fprintf(w, "%s  > %s %s\n", at, r.Method, r.Path)
	case recording.KindResponse:
		fmt.Fprintf(w, "%s  < %d %s\n", at, r.Status, r.Path)
		printError(w, r.Error)
	case recording.KindError:
		fmt.Fprintf(w, "%s  ! error %d sent to the agent: %s\n", at, r.Status, errText(r.Error))
		if r.Note != "" {
			fmt.Fprintf(w, "      (%s)\n", r.Note)
		}
	case recording.KindPolicy, recording.KindNote:
		fmt.Fprintf(w, "%s  # %s %s\n", at, r.Kind, r.Note)
	default:
		fmt.Fprintf(w, "%s  %s\n", at, r.Kind)
	}
}

func printError(w io.Writer, e *recording.Error) {
	if e != nil {
		fmt.Fprintf(w, "      error %s\n", errText(e))
	}
}

func errText(e *recording.Error) string {
	if e == nil {
		return "-"
	}
	s := e.Message
	if e.Code != "" {
		s = e.Code + ": " + s
	}
	if e.SQLState != "" {
		s += " (" + e.SQLState + ")"
	}
	return s
}

// printResult renders a result's rows as a table.
func printResult(w io.Writer, res *recording.Result, cols []recording.Column, maxRows int) {
	rows := res.Rows
	if len(res.Data) > 0 {
		acols, arows, err := recording.DecodeArrow(res.Data)
		if err != nil {
			fmt.Fprintf(w, "      (%d bytes of %s data: %v)\n", len(res.Data), orDash(res.Format), err)
		} else {
			rows = append(append([][]*string(nil), rows...), arows...)
			if len(cols) == 0 {
				cols = acols
			}
		}
	}
	if len(rows) > 0 {
		tw := tabwriter.NewWriter(w, 2, 4, 1, ' ', tabwriter.Debug)
		var head []string
		for i := range rows[0] {
			name := fmt.Sprintf("c%d", i+1)
			if i < len(cols) {
				name = cols[i].Name
			}
			head = append(head, name)
		}
		fmt.Fprintf(tw, "      \t%s\t\n", strings.Join(head, "\t"))
		n := len(rows)
		if maxRows > 0 && n > maxRows {
			n = maxRows
		}
		for _, row := range rows[:n] {
			cells := make([]string, len(row))
			for i, c := range row {
				if c == nil {
					cells[i] = "NULL"
				} else {
					cells[i] = truncate(oneLine(*c), 60)
				}
			}
			fmt.Fprintf(tw, "      \t%s\t\n", strings.Join(cells, "\t"))
		}
		_ = tw.Flush()
		if n < len(rows) {
			fmt.Fprintf(w, "      … %d more rows (%d in this reply)\n", len(rows)-n, len(rows))
		} else {
			fmt.Fprintf(w, "      (%d rows)\n", len(rows))
		}
	}
	if res.OmittedRows > 0 || res.OmittedBytes > 0 {
		fmt.Fprintf(w, "      [%d rows, %d bytes not recorded: %s]\n", res.OmittedRows, res.OmittedBytes, orDash(res.OmittedReason))
	}
}

func bodySummary(body json.RawMessage) string {
	var b struct {
		Data struct {
			LoginName   string `json:"LOGIN_NAME"`
			ClientAppID string `json:"CLIENT_APP_ID"`
			Auth        string `json:"AUTHENTICATOR"`
		} `json:"data"`
	}
	if json.Unmarshal(body, &b) != nil {
		return ""
	}
	var parts []string
	if b.Data.LoginName != "" {
		parts = append(parts, "user "+b.Data.LoginName)
	}
	if b.Data.Auth != "" {
		parts = append(parts, "authenticator "+b.Data.Auth)
	}
	if b.Data.ClientAppID != "" {
		parts = append(parts, "client "+b.Data.ClientAppID)
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, ", ") + ")"
}

func idPart(q string) string {
	if q == "" {
		return ""
	}
	return " query " + q
}

func durPart(d time.Duration) string {
	if d <= 0 {
		return ""
	}
	return fmt.Sprintf(" in %s", d.Round(time.Millisecond))
}

func fmtOffset(d time.Duration) string { return fmt.Sprintf("%.3fs", d.Seconds()) }

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pre + l
	}
	return strings.Join(lines, "\n")
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}
