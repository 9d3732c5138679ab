package upstream

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
)

// CredentialsDirPrefix in a file name stands for systemd's
// $CREDENTIALS_DIRECTORY (LoadCredential=/LoadCredentialEncrypted=), e.g.
// "$CREDENTIALS_DIRECTORY/snowflake-key.p8".
const CredentialsDirPrefix = "$CREDENTIALS_DIRECTORY/"

// maxSecretFile bounds a secret file.
const maxSecretFile = 64 << 10

// ErrInsecureFile is wrapped by errors about secret files that others can
// read or write.
var ErrInsecureFile = errors.New("secret file is accessible to other users")

// ResolveSecretPath expands the $CREDENTIALS_DIRECTORY/ prefix.
func ResolveSecretPath(name string) (path string, systemd bool, err error) {
	rest, ok := strings.CutPrefix(name, CredentialsDirPrefix)
	if !ok {
		rest, ok = strings.CutPrefix(name, "${CREDENTIALS_DIRECTORY}/")
	}
	if !ok {
		return name, false, nil
	}
	dir := os.Getenv("CREDENTIALS_DIRECTORY")
	if dir == "" {
		return "", false, fmt.Errorf("%s: $CREDENTIALS_DIRECTORY is not set (is the credential loaded with LoadCredential= in the unit?)", name)
	}
	if rest == "" || strings.Contains(rest, "/") || rest == ".." || rest == "." {
		return "", false, fmt.Errorf("%s: name a single credential inside $CREDENTIALS_DIRECTORY", name)
	}
	return filepath.Join(dir, rest), true, nil
}

// ReadSecretFile reads a secret from a file that only the gateway's user
// can read: it must be a regular file, owned by the effective user, with
// no group or other permission bits. Files in $CREDENTIALS_DIRECTORY are
// protected by systemd and only need to be regular and not accessible to
// group or others. Trailing newlines are removed. Errors name the file,
// never its content.
func ReadSecretFile(name string) (Secret, error) {
	path, systemd, err := ResolveSecretPath(name)
	if err != nil {
		return Secret{}, err
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if errors.Is(err, syscall.ELOOP) {
		return Secret{}, fmt.Errorf("secret file %s is a symbolic link; name the file itself", path)
	}
	if err != nil {
		return Secret{}, fmt.Errorf("open secret file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return Secret{}, fmt.Errorf("stat secret file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return Secret{}, fmt.Errorf("secret file %s is not a regular file (%s)", path, st.Mode().Type())
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return Secret{}, fmt.Errorf("%w: %s has mode %04o, group or others may access it; run chmod 600 %s", ErrInsecureFile, path, perm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && !systemd && int(sys.Uid) != os.Geteuid() {
		return Secret{}, fmt.Errorf("%w: %s is owned by uid %d, not the gateway's uid %d", ErrInsecureFile, path, sys.Uid, os.Geteuid())
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return Secret{}, fmt.Errorf("read secret file %s: %w", path, err)
	}
	if len(b) > maxSecretFile {
		return Secret{}, fmt.Errorf("secret file %s is larger than %d bytes", path, maxSecretFile)
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return Secret{}, fmt.Errorf("secret file %s is empty", path)
	}
	return NewSecret(s), nil
}
