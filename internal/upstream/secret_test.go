package upstream_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
	"github.com/snowgate/snowgate/internal/upstream"
)

const secretValue = "pat-Very-Secret-Value-0123456789"

func TestSecretNeverPrints(t *testing.T) {
	s := upstream.NewSecret(secretValue)
	holder := struct {
		Name  string
		Token upstream.Secret
		Ptr   *upstream.Secret
	}{"x", s, &s}
	login := upstream.Login{Authenticator: upstream.AuthPAT, LoginName: "svc", Token: s}
	var logBuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&logBuf, nil)).Info("login", "token", s, "login", login)
	js, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"%s": fmt.Sprintf("%s", s), "%v": fmt.Sprintf("%v", s), "%+v": fmt.Sprintf("%+v", holder),
		"%#v": fmt.Sprintf("%#v", holder), "%q": fmt.Sprintf("%q", s), "%x": fmt.Sprintf("%x", s),
		"%X": fmt.Sprintf("%X", s), "%d": fmt.Sprintf("%d", s), "login %+v": fmt.Sprintf("%+v", login),
		"login %#v": fmt.Sprintf("%#v", login), "json": string(js), "slog": logBuf.String(),
		"error": fmt.Errorf("login with %v failed", s).Error(),
	}
	hexSecret := fmt.Sprintf("%x", secretValue)
	for name, out := range outputs {
		if strings.Contains(out, secretValue) || strings.Contains(strings.ToLower(out), hexSecret) || strings.Contains(out, "Very-Secret") {
			t.Errorf("%s leaks the secret: %s", name, out)
		}
		if !strings.Contains(out, upstream.Redacted) {
			t.Errorf("%s does not say the value is redacted: %s", name, out)
		}
	}
	if s.Reveal() != secretValue {
		t.Fatalf("Reveal = %q", s.Reveal())
	}
}

func writeFile(t *testing.T, dir, name, content string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is subject to the umask
		t.Fatal(err)
	}
	return p
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	link := filepath.Join(dir, "link")
	if err := os.Symlink(writeFile(t, dir, "target", secretValue, 0o600), link); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name     string
		path     string
		want     string // error substring; "" means success
		insecure bool
	}{
		{"0600", writeFile(t, dir, "a", secretValue+"\n", 0o600), "", false},
		{"0400", writeFile(t, dir, "b", secretValue, 0o400), "", false},
		{"group-readable", writeFile(t, dir, "c", secretValue, 0o640), "mode 0640, group or others may access it; run chmod 600", true},
		{"world-readable", writeFile(t, dir, "d", secretValue, 0o604), "mode 0604", true},
		{"group-writable", writeFile(t, dir, "e", secretValue, 0o620), "mode 0620", true},
		{"empty", writeFile(t, dir, "f", "\n", 0o600), "is empty", false},
		{"missing", filepath.Join(dir, "nope"), "no such file", false},
		{"symlink", link, "is a symbolic link", false},
		{"directory", dir, "not a regular file", false},
		{"too large", writeFile(t, dir, "g", strings.Repeat("x", 70<<10), 0o600), "larger than", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := upstream.ReadSecretFile(c.path)
			if c.want == "" {
				if err != nil || s.Reveal() != secretValue {
					t.Fatalf("ReadSecretFile = %v, %v", s, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
			if errors.Is(err, upstream.ErrInsecureFile) != c.insecure {
				t.Errorf("errors.Is(ErrInsecureFile) = %v, want %v", !c.insecure, c.insecure)
			}
			if strings.Contains(err.Error(), "Very-Secret") {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestReadSecretFileOwnedByAnotherUser(t *testing.T) {
	testenv.RequireRoot(t)
	p := writeFile(t, t.TempDir(), "key", secretValue, 0o600)
	if err := os.Chown(p, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	_, err := upstream.ReadSecretFile(p)
	if !errors.Is(err, upstream.ErrInsecureFile) || !strings.Contains(err.Error(), "owned by uid 65534") {
		t.Fatalf("error %v, want an insecure-file error about the owner", err)
	}
}

func TestReadSecretFileSystemdCredentials(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "snowflake-pat", secretValue, 0o400)
	writeFile(t, dir, "loose", secretValue, 0o644)
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	for _, name := range []string{"$CREDENTIALS_DIRECTORY/snowflake-pat", "${CREDENTIALS_DIRECTORY}/snowflake-pat"} {
		s, err := upstream.ReadSecretFile(name)
		if err != nil || s.Reveal() != secretValue {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if _, err := upstream.ReadSecretFile("$CREDENTIALS_DIRECTORY/loose"); !errors.Is(err, upstream.ErrInsecureFile) {
		t.Fatalf("world-readable credential: %v", err)
	}
	if _, err := upstream.ReadSecretFile("$CREDENTIALS_DIRECTORY/../other-credential"); err == nil || !strings.Contains(err.Error(), "single credential") {
		t.Fatalf("path escape: %v", err)
	}
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	if _, err := upstream.ReadSecretFile("$CREDENTIALS_DIRECTORY/snowflake-pat"); err == nil || !strings.Contains(err.Error(), "LoadCredential=") {
		t.Fatalf("unset directory: %v", err)
	}
}
