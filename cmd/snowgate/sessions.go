package main

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"filippo.io/age"
	"github.com/spf13/cobra"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/recording"
)

// sessionsOptions are the flags every `snowgate sessions` command shares.
type sessionsOptions struct {
	configFile string
	dir        string
	identities []string
	publicKey  string
	json       bool
}

func init() {
	var o sessionsOptions
	cmd := &cobra.Command{
		Use:   "sessions",
		Short: "Read, verify and export session recordings (for auditors)",
		Long: `sessions reads the recordings the gateway keeps, one per Snowflake session.
The recording directory and the seal's public key come from --config (the
daemon's configuration: recording.dir and recording.signing_key_file, whose
public half is <file>.pub) or from --dir and --public-key. Encrypted
recordings open with the age identity of one of recording.encrypt_to
(--identity, repeatable); without it only the seal and the frame chain can be
checked and the content stays unreadable.`,
	}
	pf := cmd.PersistentFlags()
	pf.StringVar(&o.configFile, "config", "", "the daemon's configuration file (recording.dir, recording.signing_key_file)")
	pf.StringVar(&o.dir, "dir", "", "recording directory (overrides the configuration)")
	pf.StringArrayVarP(&o.identities, "identity", "i", nil, "age identity file that opens encrypted recordings (repeatable)")
	pf.StringVar(&o.publicKey, "public-key", "", "PEM public key (or the signing key) that seals must verify with")
	pf.BoolVar(&o.json, "json", false, "machine-readable output")
	cmd.AddCommand(sessionsListCmd(&o), sessionsShowCmd(&o), sessionsReplayCmd(&o), sessionsVerifyCmd(&o), sessionsExportCmd(&o))
	rootCmd.AddCommand(cmd)
}

// store is a resolved recording directory with its keys.
type store struct {
	dir  string
	pub  ed25519.PublicKey // nil: not known
	ids  []age.Identity
	keyd string // where pub came from, for messages
}

func (o *sessionsOptions) store() (*store, error) {
	s := &store{dir: o.dir}
	keyFile := o.publicKey
	if o.configFile != "" {
		cfg, err := config.Load(o.configFile)
		if err != nil {
			return nil, err
		}
		if s.dir == "" {
			s.dir = cfg.Recording.Dir
		}
		if keyFile == "" {
			keyFile = cfg.Recording.SigningKeyFile + recording.PublicKeySuffix
			if _, err := os.Stat(keyFile); err != nil {
				keyFile = cfg.Recording.SigningKeyFile
			}
		}
	}
	if s.dir == "" {
		return nil, errors.New("no recording directory: give --config or --dir")
	}
	if keyFile != "" {
		pub, err := recording.LoadPublicKey(keyFile)
		switch {
		case err == nil:
			s.pub, s.keyd = pub, keyFile
		case o.publicKey != "":
			return nil, err
		}
	}
	for _, f := range o.identities {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("identity: %w", err)
		}
		ids, err := age.ParseIdentities(strings.NewReader(string(b)))
		if err != nil {
			return nil, fmt.Errorf("identity %s: %w", f, err)
		}
		s.ids = append(s.ids, ids...)
	}
	return s, nil
}

// paths lists the recordings in the directory, by name.
func (s *store) paths() ([]string, error) {
	m, err := filepath.Glob(filepath.Join(s.dir, "*"+recording.FileExt))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(s.dir); err != nil {
		return nil, fmt.Errorf("recording directory: %w", err)
	}
	sort.Strings(m)
	return m, nil
}

// resolve finds a recording by session id, unique id prefix or path.
func (s *store) resolve(id string) (string, error) {
	if strings.HasSuffix(id, recording.FileExt) {
		if _, err := os.Stat(id); err == nil {
			return id, nil
		}
	}
	exact := filepath.Join(s.dir, id+recording.FileExt)
	if _, err := os.Stat(exact); err == nil {
		return exact, nil
	}
	all, err := s.paths()
	if err != nil {
		return "", err
	}
	var hits []string
	for _, p := range all {
		if strings.HasPrefix(sessionName(p), id) {
			hits = append(hits, p)
		}
	}
	switch len(hits) {
	case 0:
		return "", fmt.Errorf("no recording %q in %s", id, s.dir)
	case 1:
		return hits[0], nil
	}
	names := make([]string, len(hits))
	for i, h := range hits {
		names[i] = sessionName(h)
	}
	return "", fmt.Errorf("%q is ambiguous: %s", id, strings.Join(names, ", "))
}

func sessionName(path string) string {
	return strings.TrimSuffix(filepath.Base(path), recording.FileExt)
}

// records reads every record of a recording; problems after the first
// readable records are returned with them.
func (s *store) records(path string) (recording.Meta, []recording.Record, error) {
	r, err := recording.Open(path, s.ids...)
	if err != nil {
		return recording.Meta{}, nil, err
	}
	defer r.Close()
	var recs []recording.Record
	for {
		rec, err := r.Next()
		if errors.Is(err, io.EOF) {
			return r.Meta(), recs, nil
		}
		if err != nil {
			return r.Meta(), recs, err
		}
		recs = append(recs, rec)
	}
}

// summary is one row of `sessions list`.
type summary struct {
	Session   string    `json:"session"`
	File      string    `json:"file"`
	Started   time.Time `json:"started,omitzero"`
	Issuer    string    `json:"issuer,omitempty"`
	Subject   string    `json:"subject,omitempty"`
	Rule      string    `json:"rule,omitempty"`
	Account   string    `json:"account,omitempty"`
	User      string    `json:"user,omitempty"`
	Role      string    `json:"role,omitempty"`
	Process   string    `json:"process,omitempty"`
	Encrypted bool      `json:"encrypted"`
	// Readable is false for encrypted recordings without an identity.
	Readable bool `json:"readable"`
	// State: sealed, unsealed (crash or still open), damaged, unverified
	// (no public key).
	State      string   `json:"state"`
	SealReason string   `json:"seal_reason,omitempty"`
	Records    uint64   `json:"records,omitempty"`
	Statements int      `json:"statements,omitempty"`
	Decisions  []string `json:"decisions,omitempty"`
	Problems   []string `json:"problems,omitempty"`
}

// summarize reads a recording's metadata and checks its integrity (frame
// chain and seal, without decrypting); with statements it also reads the
// statements (for the decision filter).
func (s *store) summarize(path string, statements bool) summary {
	sm := summary{Session: sessionName(path), File: path}
	if s.pub != nil {
		rep, err := recording.Verify(path, s.pub)
		switch {
		case err != nil:
			sm.State, sm.Problems = "damaged", []string{err.Error()}
		case rep.OK():
			sm.State = "sealed"
		case rep.Intact():
			sm.State = "unsealed"
		default:
			sm.State = "damaged"
		}
		sm.Encrypted = rep.Encrypted
		if rep.Seal != nil {
			sm.SealReason, sm.Records = rep.Seal.Reason, rep.Seal.Records
		}
		for _, p := range rep.Problems {
			if p.Kind != recording.ProblemMissingSeal {
				sm.Problems = append(sm.Problems, p.Error())
			}
		}
	} else {
		sm.State = "unverified"
	}
	r, err := recording.Open(path, s.ids...)
	if err != nil {
		if strings.Contains(err.Error(), "encrypted") {
			sm.Encrypted = true
		} else if sm.State != "damaged" {
			sm.State, sm.Problems = "damaged", append(sm.Problems, err.Error())
		}
		return sm
	}
	defer r.Close()
	sm.Readable = true
	m := r.Meta()
	sm.Started, sm.Issuer, sm.Subject, sm.Rule = m.Started, m.Identity.Issuer, m.Identity.Subject, m.Rule
	sm.Account, sm.User, sm.Role, sm.Process = m.Snowflake.Account, m.Snowflake.User, m.Snowflake.Role, m.Workload.Process
	if !statements {
		return sm
	}
	seen := map[string]bool{}
	for {
		rec, err := r.Next()
		if err != nil {
			break
		}
		if rec.Kind == recording.KindQueryRequest {
			sm.Statements++
		}
		if rec.Statement != nil && rec.Statement.Decision != "" && !seen[rec.Statement.Decision] {
			seen[rec.Statement.Decision] = true
			sm.Decisions = append(sm.Decisions, rec.Statement.Decision)
		}
	}
	return sm
}

func sessionsListCmd(o *sessionsOptions) *cobra.Command {
	var f struct {
		subject, issuer, rule, account, decision, state string
		since, until                                    string
	}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List the recorded sessions",
		Long: `list shows one line per recording: when, who (the verified identity and the
rule), where (account, user, role) and whether its seal verifies. Filters
combine; --decision reads every statement (slower).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s, err := o.store()
			if err != nil {
				return err
			}
			since, err := parseWhen(f.since)
			if err != nil {
				return fmt.Errorf("--since: %w", err)
			}
			until, err := parseWhen(f.until)
			if err != nil {
				return fmt.Errorf("--until: %w", err)
			}
			paths, err := s.paths()
			if err != nil {
				return err
			}
			var out []summary
			for _, p := range paths {
				sm := s.summarize(p, f.decision != "" || o.json)
				switch {
				case f.subject != "" && !strings.Contains(sm.Subject, f.subject),
					f.issuer != "" && sm.Issuer != f.issuer,
					f.rule != "" && sm.Rule != f.rule,
					f.account != "" && sm.Account != f.account,
					f.state != "" && sm.State != f.state,
					!since.IsZero() && (sm.Started.IsZero() || sm.Started.Before(since)),
					!until.IsZero() && (sm.Started.IsZero() || sm.Started.After(until)),
					f.decision != "" && !hasPrefixIn(sm.Decisions, f.decision):
					continue
				}
				out = append(out, sm)
			}
			w := cmd.OutOrStdout()
			if o.json {
				enc := json.NewEncoder(w)
				for _, sm := range out {
					if err := enc.Encode(sm); err != nil {
						return err
					}
				}
				return nil
			}
			tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "SESSION\tSTARTED\tSUBJECT\tRULE\tACCOUNT\tUSER\tROLE\tSTATE")
			for _, sm := range out {
				started := "-"
				if !sm.Started.IsZero() {
					started = sm.Started.UTC().Format("2006-01-02 15:04:05Z")
				}
				subj := orDash(sm.Subject)
				if !sm.Readable && sm.Encrypted {
					subj = "(encrypted: give --identity)"
				}
				state := sm.State
				if sm.SealReason != "" {
					state += " (" + sm.SealReason + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", sm.Session, started, subj, orDash(sm.Rule),
					orDash(sm.Account), orDash(sm.User), orDash(sm.Role), state)
			}
			return tw.Flush()
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.subject, "subject", "", "only identities whose subject contains this")
	fl.StringVar(&f.issuer, "issuer", "", "only this token issuer")
	fl.StringVar(&f.rule, "rule", "", "only sessions granted by this identity rule")
	fl.StringVar(&f.account, "account", "", "only this account")
	fl.StringVar(&f.decision, "decision", "", "only sessions with a statement decided so (allow, deny, approve)")
	fl.StringVar(&f.state, "state", "", "only recordings in this state (sealed, unsealed, damaged)")
	fl.StringVar(&f.since, "since", "", "only sessions started at or after (RFC 3339, or a duration ago like 24h)")
	fl.StringVar(&f.until, "until", "", "only sessions started at or before (RFC 3339, or a duration ago)")
	return cmd
}

func hasPrefixIn(list []string, p string) bool {
	for _, s := range list {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

// parseWhen reads an RFC 3339 time or a duration before now.
func parseWhen(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return time.Now().Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither RFC 3339 nor a duration", s)
	}
	return t, nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sessionsVerifyCmd(o *sessionsOptions) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:   "verify ID...",
		Short: "Verify recordings: hash chains, seal and signature (exit status 1 on any problem)",
		Long: `verify checks each recording: the frame chain over the stored bytes, the
record chain over the content (with --identity for encrypted recordings),
and the seal's Ed25519 signature against the public key. It names every
problem found (modified, missing-frames, reordered, truncated, missing-seal,
bad-signature, untrusted-signer, seal-mismatch, …) and exits with status 1
if any recording has one.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.store()
			if err != nil {
				return err
			}
			if s.pub == nil {
				return errors.New("no public key to verify seals with: give --public-key or --config")
			}
			paths := make([]string, 0, len(args))
			if all {
				if paths, err = s.paths(); err != nil {
					return err
				}
			}
			for _, a := range args {
				p, err := s.resolve(a)
				if err != nil {
					return err
				}
				paths = append(paths, p)
			}
			if len(paths) == 0 {
				return errors.New("name recordings to verify, or --all")
			}
			w := cmd.OutOrStdout()
			bad := 0
			for _, p := range paths {
				rep, err := recording.Verify(p, s.pub, s.ids...)
				if err != nil {
					return err
				}
				if !rep.OK() {
					bad++
				}
				if o.json {
					if err := json.NewEncoder(w).Encode(verifyJSON(p, rep)); err != nil {
						return err
					}
					continue
				}
				printReport(w, p, rep)
			}
			if bad > 0 {
				return fmt.Errorf("%d of %d recordings failed verification", bad, len(paths))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "verify every recording in the directory")
	return cmd
}

type verifyOut struct {
	Session        string   `json:"session"`
	File           string   `json:"file"`
	OK             bool     `json:"ok"`
	Intact         bool     `json:"intact"`
	Encrypted      bool     `json:"encrypted"`
	RecordsChecked bool     `json:"records_checked"`
	Frames         int64    `json:"frames"`
	Records        uint64   `json:"records"`
	Sealed         bool     `json:"sealed"`
	SealReason     string   `json:"seal_reason,omitempty"`
	Problems       []string `json:"problems,omitempty"`
	ProblemKinds   []string `json:"problem_kinds,omitempty"`
}

func verifyJSON(path string, rep recording.Report) verifyOut {
	v := verifyOut{Session: sessionName(path), File: path, OK: rep.OK(), Intact: rep.Intact(), Encrypted: rep.Encrypted,
		RecordsChecked: rep.RecordsChecked, Frames: rep.Frames, Records: rep.Records, Sealed: rep.Sealed}
	if rep.Seal != nil {
		v.SealReason = rep.Seal.Reason
	}
	for _, p := range rep.Problems {
		v.Problems = append(v.Problems, p.Error())
		v.ProblemKinds = append(v.ProblemKinds, string(p.Kind))
	}
	return v
}

func printReport(w io.Writer, path string, rep recording.Report) {
	status := "OK"
	switch {
	case rep.OK():
	case rep.Intact():
		status = "UNSEALED (intact up to its last complete frame)"
	default:
		status = "FAILED"
	}
	fmt.Fprintf(w, "%s: %s\n", sessionName(path), status)
	fmt.Fprintf(w, "  frames %d", rep.Frames)
	if rep.RecordsChecked {
		fmt.Fprintf(w, ", records %d (content checked)", rep.Records)
	} else {
		fmt.Fprintf(w, ", content not checked (encrypted; give --identity)")
	}
	if rep.Seal != nil {
		fmt.Fprintf(w, ", sealed %s (%s)", rep.Seal.SealedAt.UTC().Format(time.RFC3339), rep.Seal.Reason)
		if rep.Seal.OmittedRows > 0 || rep.Seal.OmittedBytes > 0 {
			fmt.Fprintf(w, ", %d rows / %d bytes of results left out by policy", rep.Seal.OmittedRows, rep.Seal.OmittedBytes)
		}
	}
	fmt.Fprintln(w)
	for _, p := range rep.Problems {
		fmt.Fprintf(w, "  %s\n", p.Error())
	}
}

func sessionsExportCmd(o *sessionsOptions) *cobra.Command {
	var format, output string
	cmd := &cobra.Command{
		Use:   "export ID",
		Short: "Export a recording as JSON lines (for a SIEM) or a pcap (for Wireshark)",
		Long: `export writes every record of a recording. --format jsonl: one JSON object
per record, in order. --format pcap: the plaintext HTTP exchanges as one
synthetic TCP connection (client 10.0.0.1, server 10.0.0.2:80, timestamps
as recorded) that Wireshark opens and follows. The export is as redacted as
the recording: no credentials or tokens.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.store()
			if err != nil {
				return err
			}
			p, err := s.resolve(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output != "" && output != "-" {
				f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
				if err != nil {
					return err
				}
				defer f.Close()
				w = f
			}
			switch format {
			case "jsonl":
				r, err := recording.Open(p, s.ids...)
				if err != nil {
					return err
				}
				defer r.Close()
				_, err = recording.WriteJSONLines(w, r)
				return err
			case "pcap":
				meta, recs, err := s.records(p)
				if err != nil && len(recs) == 0 {
					return err
				}
				if perr := writePcap(w, meta, recs); perr != nil {
					return perr
				}
				return err
			}
			return fmt.Errorf("--format %q: want jsonl or pcap", format)
		},
	}
	cmd.Flags().StringVar(&format, "format", "jsonl", "jsonl or pcap")
	cmd.Flags().StringVarP(&output, "output", "o", "", "file to write (default standard output)")
	return cmd
}
