package emulatortest

import (
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/url"
	"os"
	"strconv"
	"testing"

	"github.com/snowflakedb/gosnowflake"

	"github.com/snowgate/snowgate/internal/emulator"
)

func TestStartTLS(t *testing.T) {
	inst := Start(t, emulator.Config{Account: "acme", Users: map[string]string{"u": "p"}})
	pem, err := os.ReadFile(inst.CAFile)
	if err != nil || string(pem) != string(inst.CACertPEM) {
		t.Fatalf("CA file: %v", err)
	}
	for _, name := range []string{"acme.snowflakecomputing.com", AccountHost, StorageHost} {
		t.Run(name, func(t *testing.T) {
			conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(inst.Port)), &tls.Config{RootCAs: inst.CAPool, ServerName: name})
			if err != nil {
				t.Fatalf("TLS as %s: %v", name, err)
			}
			_ = conn.Close()
		})
	}
	if _, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(inst.Port)), &tls.Config{RootCAs: x509.NewCertPool(), ServerName: AccountHost}); err == nil {
		t.Fatal("TLS verified without the CA")
	}
	cfg, err := gosnowflake.ParseDSN(inst.DSN("u", "p", url.Values{"warehouse": {"WH"}}))
	if err != nil {
		t.Fatalf("ParseDSN: %v", err)
	}
	if cfg.Host != AccountHost || cfg.Port != inst.Port || cfg.Protocol != "https" || cfg.Account != "acme" ||
		cfg.User != "u" || cfg.Password != "p" || cfg.Warehouse != "WH" || cfg.TLSConfigName != inst.TLSConfigName {
		t.Fatalf("DSN parsed to %+v", cfg)
	}
}

func TestStartPlain(t *testing.T) {
	inst := Start(t, emulator.Config{Account: "acme"}, PlainHTTP())
	if inst.TLS || inst.CAFile != "" || inst.URL != "http://localhost:"+strconv.Itoa(inst.Port) {
		t.Fatalf("plain instance %+v", inst)
	}
	cfg, err := gosnowflake.ParseDSN(inst.DSN("u", "p", nil))
	if err != nil || cfg.Protocol != "http" {
		t.Fatalf("DSN %v %+v", err, cfg)
	}
}
