package recording

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSigningKeyFiles(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "signing-key.pem")
	key, created, err := LoadOrCreateSigningKey(path)
	if err != nil || !created {
		t.Fatalf("create: %v, created %v", err, created)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode: %v %v", fi.Mode(), err)
	}
	again, created, err := LoadOrCreateSigningKey(path)
	if err != nil || created || !again.Equal(key) {
		t.Fatalf("reload: %v, created %v, same %v", err, created, again.Equal(key))
	}
	for _, p := range []string{path, path + PublicKeySuffix} {
		pub, err := LoadPublicKey(p)
		if err != nil || !pub.Equal(key.Public()) {
			t.Fatalf("public key from %s: %v", p, err)
		}
	}
	bad := filepath.Join(dir, "bad.pem")
	for _, tc := range []struct{ name, content, want string }{
		{"not pem", "hello", "not PEM"},
		{"certificate", "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "want PUBLIC KEY"},
		{"garbage key", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "signing key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := os.WriteFile(bad, []byte(tc.content), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := LoadPublicKey(bad); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want …%s…", err, tc.want)
			}
		})
	}
}
