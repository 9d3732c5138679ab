// Package archive ships sealed session recordings to S3-compatible object
// storage (AWS S3, MinIO, Ceph) for a fleet of runners, and applies the
// retention rules: local copies are removed once uploaded and checked (or
// after a grace period), remote objects older than the retention are
// deleted.
//
// Only recordings whose seal verifies with the gateway's key are uploaded:
// an open, crashed or damaged recording stays local, for the recorder to
// recover or an operator to inspect. An upload is checked by reading back
// the object's size and checksum before the local copy may go.
package archive

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/snowgate/snowgate/internal/recording"
)

// Config configures an Uploader.
type Config struct {
	// Endpoint is host[:port] of the S3 API; Secure uses HTTPS.
	Endpoint string
	Secure   bool
	// Region of the bucket; default us-east-1.
	Region string
	// AccessKey and SecretKey are the static credentials.
	AccessKey, SecretKey string
	// Bucket and Prefix: objects are <Prefix><file name>.
	Bucket, Prefix string
	// Dir is the local recording directory.
	Dir string
	// PublicKey verifies seals before upload. Required.
	PublicKey ed25519.PublicKey
	// KeepLocal keeps an uploaded recording locally this long (0: removed
	// once uploaded and checked).
	KeepLocal time.Duration
	// Retention deletes objects under Prefix older than this (0: never).
	Retention time.Duration
	// Interval between passes of Run; default 1 minute.
	Interval time.Duration
	// Transport, when set, is the HTTP transport to the endpoint (a test
	// server's, a private CA's).
	Transport http.RoundTripper
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// uploadedSuffix marks a local recording that is safely in the bucket; it
// holds the object key and the upload time.
const uploadedSuffix = ".uploaded"

// Uploader uploads sealed recordings and applies retention.
type Uploader struct {
	cfg    Config
	client *minio.Client
	log    *slog.Logger
	kick   chan struct{}
	mu     sync.Mutex // one pass at a time
}

// New returns an uploader for cfg. It does not contact the endpoint.
func New(cfg Config) (*Uploader, error) {
	switch {
	case cfg.Endpoint == "":
		return nil, errors.New("archive: no endpoint")
	case cfg.Bucket == "":
		return nil, errors.New("archive: no bucket")
	case cfg.Dir == "":
		return nil, errors.New("archive: no recording directory")
	case len(cfg.PublicKey) != ed25519.PublicKeySize:
		return nil, errors.New("archive: no public key to verify seals with")
	}
	if cfg.Region == "" {
		cfg.Region = "us-east-1"
	}
	if cfg.Interval <= 0 {
		cfg.Interval = time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	opts := &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.Secure,
		Region: cfg.Region,
	}
	if cfg.Transport != nil {
		opts.Transport = cfg.Transport
	}
	c, err := minio.New(cfg.Endpoint, opts)
	if err != nil {
		return nil, fmt.Errorf("archive: %w", err)
	}
	return &Uploader{cfg: cfg, client: c, log: cfg.Logger, kick: make(chan struct{}, 1)}, nil
}

// Notify asks for a pass soon (a recording was just sealed). It never
// blocks.
func (u *Uploader) Notify(string) {
	select {
	case u.kick <- struct{}{}:
	default:
	}
}

// Run makes a pass every Interval (and when notified) until ctx ends.
func (u *Uploader) Run(ctx context.Context) {
	t := time.NewTicker(u.cfg.Interval)
	defer t.Stop()
	for {
		if err := u.Pass(ctx); err != nil && ctx.Err() == nil {
			u.log.Error("recording upload pass", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-u.kick:
		}
	}
}

// PassResult counts what one pass did.
type PassResult struct {
	Uploaded, RemovedLocal, Expired, Skipped int
}

// Pass uploads every sealed recording not yet uploaded, removes local
// copies past KeepLocal and expires remote objects past Retention. Errors
// of single recordings are logged and counted as skipped; the error is
// for a pass that could not run (the bucket unreachable).
func (u *Uploader) Pass(ctx context.Context) error {
	_, err := u.pass(ctx)
	return err
}

func (u *Uploader) pass(ctx context.Context) (PassResult, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var res PassResult
	paths, err := filepath.Glob(filepath.Join(u.cfg.Dir, "*"+recording.FileExt))
	if err != nil {
		return res, fmt.Errorf("archive: %w", err)
	}
	var errs []error
	for _, p := range paths {
		if err := ctx.Err(); err != nil {
			return res, err
		}
		done, err := u.uploadOne(ctx, p)
		switch {
		case err != nil:
			res.Skipped++
			u.log.Warn("recording not uploaded", "path", p, "err", err)
			errs = append(errs, err)
		case done:
			res.Uploaded++
		}
		if removed, err := u.expireLocal(p); err != nil {
			u.log.Warn("uploaded recording not removed", "path", p, "err", err)
		} else if removed {
			res.RemovedLocal++
		}
	}
	if u.cfg.Retention > 0 {
		n, err := u.expireRemote(ctx)
		res.Expired = n
		if err != nil {
			return res, err
		}
	}
	if len(errs) > 0 && res.Uploaded == 0 && len(errs) == len(paths) {
		// Nothing worked: most likely the bucket, not the files.
		return res, errors.Join(errs...)
	}
	return res, nil
}

// uploadOne uploads p if it is sealed, verified and not yet uploaded.
func (u *Uploader) uploadOne(ctx context.Context, p string) (bool, error) {
	if _, err := os.Stat(p + uploadedSuffix); err == nil {
		return false, nil
	}
	if _, err := os.Stat(p + ".open"); err == nil {
		return false, nil // still being written
	}
	rep, err := recording.Verify(p, u.cfg.PublicKey)
	if err != nil {
		return false, err
	}
	if rep.Intact() && !rep.Sealed {
		return false, nil // open, or crashed and not yet recovered
	}
	if !rep.OK() {
		return false, fmt.Errorf("%s does not verify (%d problems), kept for inspection", filepath.Base(p), len(rep.Problems))
	}
	f, err := os.Open(p)
	if err != nil {
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return false, fmt.Errorf("checksum %s: %w", p, err)
	}
	digest := hex.EncodeToString(sum.Sum(nil))
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return false, err
	}
	key := u.cfg.Prefix + filepath.Base(p)
	_, err = u.client.PutObject(ctx, u.cfg.Bucket, key, f, fi.Size(), minio.PutObjectOptions{
		ContentType:  "application/octet-stream",
		UserMetadata: map[string]string{"Snowgate-Sha256": digest, "Snowgate-Session": rep.SessionID},
	})
	if err != nil {
		return false, fmt.Errorf("put %s: %w", key, err)
	}
	st, err := u.client.StatObject(ctx, u.cfg.Bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return false, fmt.Errorf("check %s: %w", key, err)
	}
	if st.Size != fi.Size() || metaValue(st.UserMetadata, "Snowgate-Sha256") != digest {
		return false, fmt.Errorf("check %s: stored %d bytes (checksum %q), want %d (%s)", key, st.Size, metaValue(st.UserMetadata, "Snowgate-Sha256"), fi.Size(), digest)
	}
	mark := fmt.Sprintf("%s\n%s\n%s\n", key, u.cfg.Now().UTC().Format(time.RFC3339), digest)
	if err := os.WriteFile(p+uploadedSuffix, []byte(mark), 0o600); err != nil {
		return false, fmt.Errorf("mark %s uploaded: %w", p, err)
	}
	u.log.Info("recording uploaded", "session", rep.SessionID, "bucket", u.cfg.Bucket, "key", key, "bytes", fi.Size())
	return true, nil
}

func metaValue(m map[string]string, k string) string {
	for mk, v := range m {
		if strings.EqualFold(mk, k) || strings.EqualFold(mk, "X-Amz-Meta-"+k) {
			return v
		}
	}
	return ""
}

// expireLocal removes an uploaded recording once KeepLocal has passed.
func (u *Uploader) expireLocal(p string) (bool, error) {
	b, err := os.ReadFile(p + uploadedSuffix)
	if err != nil {
		return false, nil
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 2 {
		return false, fmt.Errorf("upload mark of %s unreadable", p)
	}
	at, err := time.Parse(time.RFC3339, lines[1])
	if err != nil {
		return false, fmt.Errorf("upload mark of %s: %w", p, err)
	}
	if u.cfg.Now().Sub(at) < u.cfg.KeepLocal {
		return false, nil
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
		return false, err
	}
	if err := os.Remove(p + uploadedSuffix); err != nil {
		return false, err
	}
	return true, nil
}

// expireRemote deletes recordings under the prefix older than Retention.
func (u *Uploader) expireRemote(ctx context.Context) (int, error) {
	cutoff := u.cfg.Now().Add(-u.cfg.Retention)
	n := 0
	for obj := range u.client.ListObjects(ctx, u.cfg.Bucket, minio.ListObjectsOptions{Prefix: u.cfg.Prefix, Recursive: true}) {
		if obj.Err != nil {
			return n, fmt.Errorf("list %s/%s: %w", u.cfg.Bucket, u.cfg.Prefix, obj.Err)
		}
		if !strings.HasSuffix(obj.Key, recording.FileExt) || !obj.LastModified.Before(cutoff) {
			continue
		}
		if err := u.client.RemoveObject(ctx, u.cfg.Bucket, obj.Key, minio.RemoveObjectOptions{}); err != nil {
			return n, fmt.Errorf("expire %s: %w", obj.Key, err)
		}
		u.log.Info("recording expired from the bucket", "key", obj.Key, "last_modified", obj.LastModified)
		n++
	}
	return n, nil
}
