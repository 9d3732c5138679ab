package archive

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
	"github.com/minio/minio-go/v7"

	"github.com/snowgate/snowgate/internal/recording"
)

// fakeS3 is an in-process S3 server whose clock the test sets.
type fakeS3 struct {
	endpoint string
	clock    gofakes3.TimeSourceAdvancer
}

func startS3(t *testing.T, bucket string, at time.Time) *fakeS3 {
	t.Helper()
	clock := gofakes3.FixedTimeSource(at)
	backend := s3mem.New(s3mem.WithTimeSource(clock))
	srv := httptest.NewServer(gofakes3.New(backend).Server())
	t.Cleanup(srv.Close)
	if err := backend.CreateBucket(bucket); err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(srv.URL)
	return &fakeS3{endpoint: u.Host, clock: clock}
}

// writeRecording writes a recording with a few records; sealed or not.
func writeRecording(t *testing.T, dir, id string, key ed25519.PrivateKey, seal bool) string {
	t.Helper()
	w, err := recording.NewWriter(dir, recording.Meta{SessionID: id}, recording.Options{SigningKey: key})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		err := w.Append(context.Background(), recording.Record{Kind: recording.KindQueryRequest, SQL: strings.Repeat("SELECT 1 ", i+1)})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if seal {
		if err := w.Seal(recording.SealSessionEnd); err != nil {
			t.Fatal(err)
		}
	}
	return w.Path()
}

func TestUploadAndRetention(t *testing.T) {
	const bucket = "recordings"
	now := time.Now()
	s3 := startS3(t, bucket, now.Add(-100*24*time.Hour))
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	sealed := writeRecording(t, dir, "sealed-1", key, true)
	open := writeRecording(t, dir, "open-1", key, false)
	// A sealed recording whose bytes were changed afterwards: kept local.
	damaged := writeRecording(t, dir, "damaged-1", key, true)
	b, _ := os.ReadFile(damaged)
	b[len(b)/2] ^= 1
	if err := os.WriteFile(damaged, b, 0o600); err != nil {
		t.Fatal(err)
	}
	clock := now
	u, err := New(Config{
		Endpoint: s3.endpoint, AccessKey: "AKIDTEST", SecretKey: "s3-secret-test-value",
		Bucket: bucket, Prefix: "runner-1/", Dir: dir, PublicKey: pub,
		KeepLocal: time.Hour, Retention: 90 * 24 * time.Hour,
		Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return clock },
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	// Pass 1: the sealed recording goes up; the open one waits and the
	// damaged one is kept for inspection. (Retention is off for now: the
	// bucket's clock stamps this upload 100 days ago.)
	u.cfg.Retention = 0
	res, err := u.pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Uploaded != 1 || res.Skipped != 1 || res.RemovedLocal != 0 {
		t.Fatalf("pass 1: %+v, want 1 uploaded, 1 skipped (damaged)", res)
	}
	obj, err := u.client.GetObject(ctx, bucket, "runner-1/sealed-1"+recording.FileExt, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(sealed)
	if !bytes.Equal(got, want) {
		t.Fatal("the object differs from the local recording")
	}
	if rep := recording.VerifyReader(bytes.NewReader(got), pub); !rep.OK() {
		t.Fatalf("the uploaded recording does not verify: %v", rep.Problems)
	}
	for _, p := range []string{open, damaged} {
		if _, err := u.client.StatObject(ctx, bucket, "runner-1/"+filepath.Base(p), minio.StatObjectOptions{}); err == nil {
			t.Errorf("%s was uploaded", filepath.Base(p))
		}
	}

	// Pass 2: nothing new; the local copy stays within keep_local.
	if res, err := u.pass(ctx); err != nil || res.Uploaded != 0 || res.RemovedLocal != 0 {
		t.Fatalf("pass 2: %+v %v", res, err)
	}
	// Pass 3, two hours later: the local copy goes, the open one stays.
	clock = now.Add(2 * time.Hour)
	if res, err := u.pass(ctx); err != nil || res.RemovedLocal != 1 {
		t.Fatalf("pass 3: %+v %v", res, err)
	}
	if _, err := os.Stat(sealed); !os.IsNotExist(err) {
		t.Fatalf("uploaded recording still local after keep_local: %v", err)
	}
	if _, err := os.Stat(open); err != nil {
		t.Fatalf("the open recording was removed: %v", err)
	}

	// Retention: a second recording uploaded "now" (the bucket's clock
	// moved on) survives; the 100-day-old one is expired.
	s3.clock.Advance(99 * 24 * time.Hour)
	writeRecording(t, dir, "sealed-2", key, true)
	u.cfg.Retention = 90 * 24 * time.Hour
	res, err = u.pass(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Uploaded != 1 || res.Expired != 1 {
		t.Fatalf("retention pass: %+v, want 1 uploaded and 1 expired", res)
	}
	var keys []string
	for o := range u.client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Prefix: "runner-1/", Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	if strings.Join(keys, ",") != "runner-1/sealed-2"+recording.FileExt {
		t.Fatalf("bucket holds %v, want only the recent recording", keys)
	}
}

func TestUploadBucketUnreachable(t *testing.T) {
	pub, key, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	p := writeRecording(t, dir, "s", key, true)
	srv := httptest.NewServer(nil)
	host := strings.TrimPrefix(srv.URL, "http://")
	srv.Close() // nothing listens there now
	u, err := New(Config{Endpoint: host, AccessKey: "a", SecretKey: "b", Bucket: "b", Dir: dir, PublicKey: pub,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := u.Pass(ctx); err == nil {
		t.Fatal("a pass against an unreachable bucket reported success")
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("the recording was lost: %v", err)
	}
	if _, err := os.Stat(p + uploadedSuffix); err == nil {
		t.Fatal("marked uploaded though the bucket was unreachable")
	}
}

func TestNewRefusesIncompleteConfig(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no endpoint", Config{Bucket: "b", Dir: "/d", PublicKey: pub}},
		{"no bucket", Config{Endpoint: "e:1", Dir: "/d", PublicKey: pub}},
		{"no dir", Config{Endpoint: "e:1", Bucket: "b", PublicKey: pub}},
		{"no key", Config{Endpoint: "e:1", Bucket: "b", Dir: "/d"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
