package main

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
)

// TestInheritedSocketRole checks how an inherited socket finds its
// listener: by name when it has a known one, else by address, and never to
// an address the configuration does not give it.
func TestInheritedSocketRole(t *testing.T) {
	addrs := listenAddrs{Gateway: "169.254.77.1:443", DNS: "169.254.77.1:53", Admin: "127.0.0.1:9464"}
	ap := netip.MustParseAddrPort
	tests := []struct {
		name    string
		sock    inheritedSocket
		want    string
		wantErr string
	}{
		{"gateway by address", inheritedSocket{network: "tcp", addr: ap("169.254.77.1:443")}, socketGateway, ""},
		{"gateway by name", inheritedSocket{network: "tcp", addr: ap("169.254.77.1:443"), name: "gateway"}, socketGateway, ""},
		{"systemd unit name falls back to the address", inheritedSocket{network: "tcp", addr: ap("127.0.0.1:9464"), name: "snowgate.socket"}, socketAdmin, ""},
		{"dns udp", inheritedSocket{network: "udp", addr: ap("169.254.77.1:53")}, socketDNS, ""},
		{"dns tcp", inheritedSocket{network: "tcp", addr: ap("169.254.77.1:53"), name: "dns"}, socketDNS, ""},
		{"udp on the gateway port", inheritedSocket{network: "udp", addr: ap("169.254.77.1:443")}, "", "matches no configured listener"},
		{"name and address disagree", inheritedSocket{network: "tcp", addr: ap("169.254.77.1:443"), name: "admin"}, "", "does not give the admin listener"},
		{"stale address", inheritedSocket{network: "tcp", addr: ap("169.254.77.2:443")}, "", "matches no configured listener"},
		{"other port", inheritedSocket{network: "tcp", addr: ap("127.0.0.1:9465")}, "", "matches no configured listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := role(tt.sock, addrs)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("role = %q, %v; want an error with %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("role = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestSameAddr(t *testing.T) {
	ap := netip.MustParseAddrPort
	tests := []struct {
		bound      netip.AddrPort
		configured string
		want       bool
	}{
		{ap("127.0.0.1:9464"), "127.0.0.1:9464", true},
		{ap("127.0.0.1:9464"), "localhost:9464", true},
		{ap("0.0.0.0:9464"), ":9464", true},
		{ap("[::]:9464"), "0.0.0.0:9464", true},
		{ap("[::1]:53"), "[::1]:53", true},
		{ap("127.0.0.1:9464"), "127.0.0.1:9465", false},
		{ap("127.0.0.1:9464"), "127.0.0.2:9464", false},
		{ap("127.0.0.1:9464"), ":9464", false},
		{ap("127.0.0.1:9464"), "not an address", false},
	}
	for _, tt := range tests {
		if got := sameAddr(tt.bound, tt.configured); got != tt.want {
			t.Errorf("sameAddr(%s, %q) = %v, want %v", tt.bound, tt.configured, got, tt.want)
		}
	}
}

// TestHandoverEnv checks that a successor never sees the activation
// variables of its predecessor.
func TestHandoverEnv(t *testing.T) {
	in := []string{"PATH=/bin", "LISTEN_FDS=4", "LISTEN_PID=12", "LISTEN_FDNAMES=a:b", "SNOWGATE_LISTEN_FDS=4", "SNOWGATE_READY_FD=7", "NOTIFY_SOCKET=/run/systemd/notify"}
	got := handoverEnv(in)
	want := []string{"PATH=/bin", "NOTIFY_SOCKET=/run/systemd/notify"}
	if !slices.Equal(got, want) {
		t.Errorf("handoverEnv = %q, want %q", got, want)
	}
	if in[1] != "LISTEN_FDS=4" {
		t.Error("handoverEnv changed its input")
	}
}
