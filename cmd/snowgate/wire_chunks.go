package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/snowflake"
)

// The chunk key files, in the directory of the session state.
const (
	// chunkKeyName holds the key that seals chunk URLs: ChunkKeySize
	// random bytes, mode 0600, made at the first start.
	chunkKeyName = "chunk-key"
	// chunkKeyPrevName holds the key chunkKeyName replaced; its mtime is
	// when it was retired. It opens URLs for one TTL after that.
	chunkKeyPrevName = "chunk-key.prev"
	// chunkKeyMaxAge is how long a key seals before a start replaces it.
	chunkKeyMaxAge = 30 * 24 * time.Hour
)

// wireChunks gives the gateway its chunk URL sealing key. Rewritten chunk
// URLs carry the presigned URL sealed (snowflake.ChunkTable), so a result
// being fetched survives a restart, a hand-over or a kill of the daemon as
// long as the successor has the key: it lives next to the session state
// (identity.sessions.state_file, else identity.state_file). Without either,
// or with a key file it cannot use (logged), the key is made afresh at
// every start, as sessions are.
func (d *daemon) wireChunks(context.Context) error {
	dir := chunkKeyDir(d.cfg)
	if dir == "" {
		d.gw.Chunks = snowflake.NewChunkTable(0, nil)
		d.log.Info("chunk URLs sealed with a key of this process only: results being fetched fail across a restart (set identity.sessions.state_file to keep it)")
		return nil
	}
	keys, rotated, err := loadChunkKeys(dir, snowflake.DefaultChunkTTL, time.Now())
	// Owners are cgroup ids, which start afresh at boot while the key
	// file stays: a URL opens only in the boot that issued it.
	keys.Bind = bootID()
	if keys.Bind == "" {
		d.log.Warn("kernel boot id unreadable: chunk URLs are not bound to this boot")
	}
	var tab *snowflake.ChunkTable
	if err == nil {
		tab, err = snowflake.NewSealedChunkTable(keys, snowflake.DefaultChunkTTL, nil)
	}
	if err != nil {
		// The gateway serves without it: only continuity across a
		// restart is lost, and a key file others can read is not used.
		d.gw.Chunks = snowflake.NewChunkTable(0, nil)
		d.log.Error("chunk key unusable: chunk URLs sealed with a key of this process only, so results being fetched fail across a restart", "dir", dir, "err", err)
		return nil
	}
	d.gw.Chunks = tab
	d.log.Info("chunk key loaded", "file", filepath.Join(dir, chunkKeyName), "key_id", tab.KeyID(),
		"rotated", rotated, "previous_key", keys.Previous != nil)
	return nil
}

// bootID is the kernel's id of this boot, or "" if unreadable.
func bootID() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// chunkKeyDir is the daemon's state directory as the configuration names
// it: where the session state lives, or "".
func chunkKeyDir(cfg *config.Config) string {
	for _, f := range []string{cfg.Identity.Sessions.StateFile, cfg.Identity.StateFile} {
		if f != "" {
			return filepath.Dir(f)
		}
	}
	return ""
}

// loadChunkKeys reads the chunk keys of dir at now, making the key if there
// is none and replacing it when older than chunkKeyMaxAge (the replaced key
// kept to open for ttl). rotated tells whether this call replaced the key.
func loadChunkKeys(dir string, ttl time.Duration, now time.Time) (keys snowflake.ChunkKeys, rotated bool, err error) {
	// The state directory, as systemd's StateDirectory= makes it.
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return keys, false, fmt.Errorf("chunk key directory: %w", err)
	}
	path := filepath.Join(dir, chunkKeyName)
	prevPath := filepath.Join(dir, chunkKeyPrevName)
	cur, made, err := readChunkKey(path)
	if errors.Is(err, fs.ErrNotExist) {
		cur, err = createChunkKey(path)
		made = now
	}
	if err != nil {
		return keys, false, err
	}
	if now.Sub(made) > chunkKeyMaxAge {
		next, err := newChunkKeyFile(dir)
		if err != nil {
			return keys, false, err
		}
		if err := os.Rename(path, prevPath); err != nil {
			os.Remove(next)
			return keys, false, fmt.Errorf("retire chunk key: %w", err)
		}
		// The previous key's mtime says when it was retired.
		if err := os.Chtimes(prevPath, now, now); err != nil {
			os.Remove(next)
			return keys, false, fmt.Errorf("retire chunk key: %w", err)
		}
		if err := os.Rename(next, path); err != nil {
			os.Remove(next)
			return keys, false, fmt.Errorf("install chunk key: %w", err)
		}
		if cur, _, err = readChunkKey(path); err != nil {
			return keys, false, err
		}
		rotated = true
	}
	keys.Current = cur
	prev, retired, err := readChunkKey(prevPath)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return keys, rotated, err
	case now.Before(retired.Add(ttl)):
		keys.Previous, keys.PreviousUntil = prev, retired.Add(ttl)
	default:
		// Every URL it sealed has expired.
		if err := os.Remove(prevPath); err != nil {
			return keys, rotated, fmt.Errorf("remove the expired chunk key: %w", err)
		}
	}
	return keys, rotated, nil
}

// readChunkKey reads one key file and its mtime; it must hold exactly one
// key and be readable by its owner only.
func readChunkKey(path string) ([]byte, time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("chunk key: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("chunk key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, time.Time{}, fmt.Errorf("chunk key %s: mode %04o lets others read it; chmod 600 it", path, perm)
	}
	if !fi.Mode().IsRegular() || fi.Size() != snowflake.ChunkKeySize {
		return nil, time.Time{}, fmt.Errorf("chunk key %s: %d bytes, want %d (remove it to make a new one)", path, fi.Size(), snowflake.ChunkKeySize)
	}
	key := make([]byte, snowflake.ChunkKeySize)
	if _, err := f.ReadAt(key, 0); err != nil {
		return nil, time.Time{}, fmt.Errorf("chunk key %s: %w", path, err)
	}
	return key, fi.ModTime(), nil
}

// createChunkKey makes the key file at path, unless another process just
// did: then it reads that one.
func createChunkKey(path string) ([]byte, error) {
	tmp, err := newChunkKeyFile(filepath.Dir(path))
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	// A link does not replace: of two daemons starting at once, one
	// key wins and both use it.
	if err := os.Link(tmp, path); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("install chunk key: %w", err)
	}
	key, _, err := readChunkKey(path)
	return key, err
}

// newChunkKeyFile writes a fresh key to a new file in dir (mode 0600,
// synced) and returns its name.
func newChunkKeyFile(dir string) (string, error) {
	key := make([]byte, snowflake.ChunkKeySize)
	if _, err := rand.Read(key); err != nil {
		return "", fmt.Errorf("make chunk key: %w", err)
	}
	f, err := os.CreateTemp(dir, "."+chunkKeyName+"-*")
	if err != nil {
		return "", fmt.Errorf("make chunk key: %w", err)
	}
	_, err = f.Write(key)
	if err == nil {
		err = f.Chmod(0o600)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("make chunk key: %w", err)
	}
	return f.Name(), nil
}
