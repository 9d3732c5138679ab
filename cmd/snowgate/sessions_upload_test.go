package main

import (
	"bytes"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"

	"github.com/snowgate/snowgate/internal/recording"
)

// TestSessionsUpload runs `snowgate run` with recording.upload pointing at
// an in-process S3 server: recordings sealed at shutdown are uploaded by
// the next start, checked, and removed locally (keep_local 0); what is in
// the bucket verifies with the seal key.
func TestSessionsUpload(t *testing.T) {
	backend := s3mem.New()
	const bucket = "snowgate-recordings"
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(gofakes3.New(backend).Server())
	dir := t.TempDir()
	access, secret := filepath.Join(dir, "s3.access"), filepath.Join(dir, "s3.secret")
	if err := os.WriteFile(access, []byte("AKIDUPLOADTEST\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(secret, []byte("upload-secret-key-value\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// The S3 server must listen inside the daemon's namespace: the
	// environment is built first with a placeholder port, then rewritten.
	e := newCrashEnv(t, "  upload: {endpoint: \"127.0.0.1:PORT\", bucket: "+bucket+", prefix: runner-1/, insecure: true, access_key_file: "+access+", secret_key_file: "+secret+", interval: 1s}\n")
	ln, err := e.ns.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	cfg, err := os.ReadFile(e.cfgFile)
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().String()[strings.LastIndex(ln.Addr().String(), ":")+1:]
	if err := os.WriteFile(e.cfgFile, bytes.ReplaceAll(cfg, []byte("PORT"), []byte(port)), 0o600); err != nil {
		t.Fatal(err)
	}

	d := e.startDaemon(t, "daemon-0", nil, nil)
	e.waitHealthy(t, d)
	a := e.startCrashAgent(t)
	a.waitResults(t, 5)
	a.stop(t)
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, d, "snowgate run after SIGTERM")
	local, _ := filepath.Glob(filepath.Join(e.recDir, "*"+recording.FileExt))
	if len(local) == 0 {
		t.Fatal("no recording was written")
	}

	d = e.startDaemon(t, "daemon-1", nil, nil)
	e.waitHealthy(t, d)
	pub, err := recording.LoadPublicKey(e.pubFile)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		list, err := backend.ListBucket(bucket, &gofakes3.Prefix{}, gofakes3.ListBucketPage{})
		if err != nil {
			t.Fatal(err)
		}
		left := 0
		for _, p := range local {
			if _, err := os.Stat(p); err == nil {
				left++
			}
		}
		if len(list.Contents) >= len(local) && left == 0 {
			for _, c := range list.Contents {
				if !strings.HasPrefix(c.Key, "runner-1/") {
					t.Errorf("object %s outside the prefix", c.Key)
				}
				obj, err := backend.GetObject(bucket, c.Key, nil)
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(obj.Contents)
				obj.Contents.Close()
				if err != nil {
					t.Fatal(err)
				}
				if rep := recording.VerifyReader(bytes.NewReader(b), pub); !rep.OK() {
					t.Errorf("%s does not verify: %v", c.Key, rep.Problems)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 2 minutes: %d objects in the bucket, %d of %d recordings still local\n%s",
				len(list.Contents), left, len(local), d.logs())
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitExit(t, d, "snowgate run after SIGTERM")
	if logs := d.logs(); strings.Contains(logs, "upload-secret-key-value") {
		t.Error("the daemon logged the S3 secret")
	}
}
