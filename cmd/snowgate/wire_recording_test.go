package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/audit"
	"github.com/snowgate/snowgate/internal/redirect"
	"github.com/snowgate/snowgate/internal/testenv"
)

const bypassEnv = "SNOWGATE_BYPASS_TEST_CLIENT"

// TestAuditBypassProcess is not a test: it is the agent of
// TestAuditRedirectEvents, which tries QUIC (UDP 443) to a Snowflake
// address. It skips otherwise.
func TestAuditBypassProcess(t *testing.T) {
	if os.Getenv(bypassEnv) == "" {
		t.Skip("helper process for TestAuditRedirectEvents")
	}
	c, err := net.Dial("udp4", "203.0.113.10:443")
	if err == nil {
		_, err = c.Write([]byte("quic initial"))
		c.Close()
	}
	if err == nil {
		os.Exit(3) // the redirect let it through
	}
	os.Exit(0)
}

// TestAuditRedirectEvents: a bypass attempt refused by the redirect becomes
// a bypass.refused audit event naming the process.
func TestAuditRedirectEvents(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	ns := testenv.NewNetns(t)
	var suffix [6]byte
	if _, err := rand.Read(suffix[:]); err != nil {
		t.Fatal(err)
	}
	pinDir := filepath.Join("/sys/fs/bpf", "snowgate-audittest-"+hex.EncodeToString(suffix[:]))
	var redir *redirect.Redirect
	err := ns.Do(func() error {
		var err error
		redir, err = redirect.Install(redirect.Config{
			Cgroup: cg.Path, PinDir: pinDir,
			Proxy:           netip.MustParseAddrPort("127.0.0.1:15443"),
			DNS:             netip.MustParseAddrPort("127.0.0.1:15353"),
			GatewayCgroupID: testenv.SelfCgroup(t).ID,
			Ports:           redirect.DefaultPorts,
		})
		return err
	})
	if err != nil {
		t.Fatalf("install redirect: %v", err)
	}
	t.Cleanup(func() {
		redir.Close()
		_ = redirect.Uninstall(pinDir)
	})
	var buf testenv.SyncBuffer
	al, err := audit.New(audit.Options{Writers: []io.Writer{&buf}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- auditRedirectEvents(ctx, redir, al) }()
	defer func() { cancel(); <-done }()
	// The reader may attach after the first event; try until one lands.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		cmd := testenv.Command(t, testenv.Proc{Cgroup: cg, Netns: ns, Root: true}, os.Args[0], "-test.run=^TestAuditBypassProcess$", "-test.count=1")
		cmd.Env = append(os.Environ(), bypassEnv+"=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("bypass process: %v\n%s", err, out)
		}
		pid := cmd.Process.Pid
		for _, line := range strings.Split(buf.String(), "\n") {
			var ev audit.Event
			if json.Unmarshal([]byte(line), &ev) != nil {
				continue
			}
			if ev.Type == audit.BypassRefused && ev.Reason == "refused_quic" && ev.Workload != nil &&
				ev.Workload.CgroupID == cg.ID && ev.Detail["dst"] == "203.0.113.10:443" {
				if int(ev.Workload.PID) != pid {
					t.Logf("event from pid %d (the process was %d)", ev.Workload.PID, pid)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no bypass.refused event within 2 minutes; audit:\n%s", buf.String())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
