package emulator

import (
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/snowgate/snowgate/internal/snowflake"
)

// PUT and GET are answered with a LOCAL_FS transfer plan: the driver copies
// the (gzip-compressed) file into, or out of, a directory of the emulator's
// own, with no cloud storage involved (protocol notes §7). The emulator and
// the driver must therefore share a file system, which they do in tests.

var (
	rePut = regexp.MustCompile(`(?is)^\s*PUT\s+('file://[^']*'|file://\S+)\s+('@[^']*'|@\S+)(.*)$`)
	reGet = regexp.MustCompile(`(?is)^\s*GET\s+('@[^']*'|@\S+)\s+('file://[^']*'|file://\S+)(.*)$`)
	reOpt = regexp.MustCompile(`(?i)([A-Z_]+)\s*=\s*('[^']*'|\S+)`)
)

// stripComments drops leading /* */ and -- comments.
func stripComments(sql string) string {
	for {
		sql = strings.TrimSpace(sql)
		switch {
		case strings.HasPrefix(sql, "/*"):
			end := strings.Index(sql, "*/")
			if end < 0 {
				return ""
			}
			sql = sql[end+2:]
		case strings.HasPrefix(sql, "--"):
			end := strings.IndexByte(sql, '\n')
			if end < 0 {
				return ""
			}
			sql = sql[end+1:]
		default:
			return sql
		}
	}
}

func unquote(s string) string {
	if len(s) >= 2 && s[0] == '\'' && s[len(s)-1] == '\'' {
		return s[1 : len(s)-1]
	}
	return s
}

// transferOptions parses "NAME=value" options of PUT and GET.
func transferOptions(s string) map[string]string {
	out := map[string]string{}
	for _, m := range reOpt.FindAllStringSubmatch(s, -1) {
		out[strings.ToUpper(m[1])] = unquote(m[2])
	}
	return out
}

// stageDir maps a stage reference (@~/path, @%table/path, @name/path) to
// the user's directory for it and the path inside, refusing escapes.
func (s *Server) stageDir(user, ref string) (root, sub string, err error) {
	ref = strings.TrimPrefix(unquote(ref), "@")
	ref = strings.TrimSuffix(ref, ";")
	name, sub, _ := strings.Cut(ref, "/")
	if name == "" {
		return "", "", fmt.Errorf("stage name missing in %q", ref)
	}
	clean := func(p string) (string, bool) {
		for _, part := range strings.Split(p, "/") {
			if part == ".." || strings.ContainsRune(part, 0) {
				return "", false
			}
		}
		return p, true
	}
	name = strings.ToUpper(strings.Trim(name, `"`))
	name = strings.NewReplacer("~", "_user_", "%", "_table_", ".", "_").Replace(name)
	if _, ok := clean(name); !ok {
		return "", "", fmt.Errorf("bad stage name %q", name)
	}
	if sub, ok := clean(sub); !ok {
		return "", "", fmt.Errorf("bad stage path %q", sub)
	}
	root = filepath.Join(s.dir, "stages", sanitizeName(user), name)
	return root, strings.Trim(sub, "/"), nil
}

var reUnsafe = regexp.MustCompile(`[^A-Za-z0-9_.-]`)

func sanitizeName(s string) string {
	s = reUnsafe.ReplaceAllString(s, "_")
	if s == "" || s == "." || s == ".." {
		return "_"
	}
	return s
}

// handleFileTransfer answers a PUT or GET query-request with a LOCAL_FS plan.
func (s *Server) handleFileTransfer(w http.ResponseWriter, r *http.Request, sess *session, requestID, kind, sql string) {
	q := s.newQuery(s.ctx, sess, requestID, sql, false)
	if existing, _ := s.queries.add(q); existing != nil {
		s.replyWhenDone(w, r, existing, s.cfg.QueryWait)
		return
	}
	s.qlog.add(QueryLogEntry{Time: time.Now().UTC(), SessionID: sess.id, User: sess.user, RequestID: requestID, QueryID: q.id, SQL: sql})
	plan, err := s.transferPlan(sess, kind, stripComments(sql))
	if err != nil {
		s.finish(q, &snowflake.Error{Code: snowflake.CodeSyntaxError, SQLState: snowflake.SQLStateSyntax, Message: "SQL compilation error:\n" + err.Error(), Type: "COMPILATION"})
	} else {
		plan["queryId"] = q.id
		q.stage = plan
		s.finish(q, nil)
	}
	s.writeResult(w, r, q)
}

// transferPlan builds the reply data of a PUT or GET.
func (s *Server) transferPlan(sess *session, kind, sql string) (map[string]any, error) {
	plan := map[string]any{
		"parallel": 4, "threshold": 200000000, "overwrite": false, "autoCompress": true,
		"sourceCompression": "auto_detect", "clientShowEncryptionParameter": false,
		"rowtype": []any{}, "rowset": []any{}, "queryResultFormat": "json",
	}
	var stageRef string
	var opts map[string]string
	switch strings.ToUpper(kind) {
	case "PUT":
		m := rePut.FindStringSubmatch(sql)
		if m == nil {
			return nil, fmt.Errorf("syntax error: expected PUT 'file://<path>' @<stage>")
		}
		src := strings.TrimPrefix(unquote(m[1]), "file://")
		stageRef, opts = m[2], transferOptions(m[3])
		plan["command"] = "UPLOAD"
		plan["src_locations"] = []string{src}
		if v, ok := opts["AUTO_COMPRESS"]; ok {
			plan["autoCompress"] = strings.EqualFold(v, "TRUE")
		}
		if v, ok := opts["OVERWRITE"]; ok {
			plan["overwrite"] = strings.EqualFold(v, "TRUE")
		}
		if v, ok := opts["SOURCE_COMPRESSION"]; ok {
			plan["sourceCompression"] = strings.ToLower(v)
		}
	case "GET":
		m := reGet.FindStringSubmatch(sql)
		if m == nil {
			return nil, fmt.Errorf("syntax error: expected GET @<stage> 'file://<dir>'")
		}
		stageRef, opts = m[1], transferOptions(m[3])
		plan["command"] = "DOWNLOAD"
		plan["localLocation"] = strings.TrimPrefix(unquote(m[2]), "file://")
	default:
		return nil, fmt.Errorf("unsupported file transfer %q", kind)
	}
	if v, ok := opts["PARALLEL"]; ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			plan["parallel"] = n
		}
	}
	root, sub, err := s.stageDir(sess.user, stageRef)
	if err != nil {
		return nil, err
	}
	if plan["command"] == "UPLOAD" {
		dir := filepath.Join(root, filepath.FromSlash(sub))
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("stage directory: %w", err)
		}
		plan["stageInfo"] = map[string]any{"locationType": "LOCAL_FS", "location": dir + string(os.PathSeparator), "path": sub + "/"}
		return plan, nil
	}
	var pattern *regexp.Regexp
	if p, ok := opts["PATTERN"]; ok {
		if pattern, err = regexp.Compile("^(?:" + p + ")$"); err != nil {
			return nil, fmt.Errorf("bad PATTERN: %w", err)
		}
	}
	var files []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, rerr := filepath.Rel(root, p)
		if rerr != nil {
			return nil
		}
		rel = filepath.ToSlash(rel)
		if sub != "" && rel != sub && !strings.HasPrefix(rel, sub+"/") && !strings.HasPrefix(rel, sub) {
			return nil
		}
		if pattern != nil && !pattern.MatchString(rel) {
			return nil
		}
		files = append(files, rel)
		return nil
	})
	sort.Strings(files)
	if len(files) == 0 {
		return nil, fmt.Errorf("no files found in stage %s", stageRef)
	}
	plan["src_locations"] = files
	plan["stageInfo"] = map[string]any{"locationType": "LOCAL_FS", "location": root + string(os.PathSeparator), "path": ""}
	return plan, nil
}
