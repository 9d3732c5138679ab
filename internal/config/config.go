// Package config is snowgate's YAML configuration: its shape, its defaults,
// and validation that refuses unknown keys and bad values at start with the
// file, the line, the key and the reason ("snowgate.yaml:12: rules[0].account:
// no account named "acme"").
//
// File paths have no defaults here: the appliance's configuration names them,
// so the code never assumes a machine layout.
package config

import (
	"time"
)

// Config is the whole configuration file.
type Config struct {
	Intercept Intercept          `yaml:"intercept"`
	CA        CA                 `yaml:"ca"`
	DNS       DNS                `yaml:"dns"`
	Accounts  map[string]Account `yaml:"accounts"`
	Identity  Identity           `yaml:"identity"`
	Rules     []Rule             `yaml:"rules"`
	Recording Recording          `yaml:"recording"`
	Approvals Approvals          `yaml:"approvals"`
	Admin     Admin              `yaml:"admin"`
	Limits    Limits             `yaml:"limits"`
}

// Intercept is what gets redirected to the gateway and how it decides.
type Intercept struct {
	// Cgroup is the cgroup v2 directory below which every agent process
	// lives; the redirect programs attach to it. Required.
	Cgroup string `yaml:"cgroup"`
	// ProxyAddress is the address the redirect sends connections to;
	// reachable from container network namespaces too. Default 169.254.77.1.
	ProxyAddress string `yaml:"proxy_address"`
	// TLSPort is the port of the gateway's one listener on ProxyAddress.
	// Every intercepted port (443, and 80 for OCSP) is redirected to it;
	// the original destination port the redirect records tells HTTPS from
	// plain HTTP. Default 443.
	TLSPort int `yaml:"tls_port"`
	// SnowflakeDomains are the domains whose names the gateway terminates.
	// Default [snowflakecomputing.com].
	SnowflakeDomains []string `yaml:"snowflake_domains"`
	// OtherTLS is what happens to TLS for other names: deny (default) or
	// passthrough.
	OtherTLS string `yaml:"other_tls"`
	// Ports are the TCP ports whose connections are redirected; default
	// [443, 80]. Port 80 is served as plain HTTP (OCSP only), every other
	// port as TLS. At most 8.
	Ports []int `yaml:"ports"`
}

// Values of Intercept.OtherTLS.
const (
	OtherTLSDeny        = "deny"
	OtherTLSPassthrough = "passthrough"
)

// CA locates the gateway CA and shapes its leaves.
type CA struct {
	// CertFile and KeyFile are written by `snowgate ca init`. Required.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// LeafValidity is the lifetime of minted leaves; default 24h, at most
	// 144h (drivers skip CRL checks only for leaves under 7 days).
	LeafValidity Duration `yaml:"leaf_validity"`
	// OCSPURL is put in every leaf; default http://<proxy_address>/_snowgate/ocsp.
	// It is plain HTTP on port 80, the port the redirect intercepts, so
	// agents' OCSP requests reach the gateway.
	OCSPURL string `yaml:"ocsp_url"`
}

// DNS is the forwarder that answers the agents' redirected DNS queries.
type DNS struct {
	// Listen is the UDP and TCP address; default <proxy_address>:53.
	Listen string `yaml:"listen"`
	// Upstreams are resolver addresses (ip or ip:port); empty means the
	// host's /etc/resolv.conf at start.
	Upstreams []string `yaml:"upstreams"`
	// Timeout bounds one upstream exchange; default 5s.
	Timeout Duration `yaml:"timeout"`
	// Static answers names that do not resolve upstream (the demo maps
	// demo.snowflakecomputing.com to a stand-in address).
	Static map[string][]string `yaml:"static"`
}

// Account is one Snowflake account the gateway logs in to.
type Account struct {
	// Host is the account's host name, e.g. acme-prod.snowflakecomputing.com.
	// Required; must be under a Snowflake domain.
	Host string `yaml:"host"`
	// Upstream overrides where the gateway connects (private links, the
	// emulator): an http(s) URL or host:port. Empty: Host on 443.
	Upstream string `yaml:"upstream"`
	// UpstreamCAFile is a PEM file of CA certificates trusted for the
	// upstream's TLS besides the system roots (a private link's or the
	// emulator's CA). Empty: the system roots only.
	UpstreamCAFile string `yaml:"upstream_ca_file"`
	// Credential is the gateway's own credential for the account.
	Credential Credential `yaml:"credential"`
}

// Credential is a gateway-held Snowflake credential. Secrets live in files.
type Credential struct {
	// Type is keypair, pat or password.
	Type string `yaml:"type"`
	// User is the Snowflake service user. Required.
	User string `yaml:"user"`
	// PrivateKeyFile is the PKCS#8 key of a keypair credential.
	PrivateKeyFile string `yaml:"private_key_file"`
	// TokenFile holds a programmatic access token (pat).
	TokenFile string `yaml:"token_file"`
	// PasswordFile holds a password (password).
	PasswordFile string `yaml:"password_file"`
}

// Values of Credential.Type.
const (
	CredentialKeyPair  = "keypair"
	CredentialPAT      = "pat"
	CredentialPassword = "password"
)

// Duration is a time.Duration written as "30m", "24h", "5s".
type Duration struct {
	time.Duration
	// raw is the text as written, kept for the validation message.
	raw string
}

// UnmarshalText implements encoding.TextUnmarshaler. Parsing happens in
// validation, where the error can name the line.
func (d *Duration) UnmarshalText(b []byte) error {
	d.raw = string(b)
	return nil
}

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.Duration.String()), nil }
