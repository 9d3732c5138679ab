package main

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snowgate/snowgate/internal/config"
	"github.com/snowgate/snowgate/internal/snowflake"
)

func TestLoadChunkKeys(t *testing.T) {
	ttl := 6 * time.Hour
	now := time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)
	key := func(b byte) []byte { return bytes.Repeat([]byte{b}, snowflake.ChunkKeySize) }
	type file struct {
		name string
		data []byte
		mode os.FileMode
		age  time.Duration
	}
	tests := []struct {
		name    string
		files   []file
		wantErr string
		// want: the current key (nil: a new one), previous key, rotated.
		cur, prev []byte
		rotated   bool
	}{
		{name: "first start makes the key"},
		{name: "restart reads it", files: []file{{chunkKeyName, key(1), 0o600, time.Hour}}, cur: key(1)},
		{name: "with a previous key retired within the TTL",
			files: []file{{chunkKeyName, key(1), 0o600, time.Hour}, {chunkKeyPrevName, key(2), 0o600, time.Hour}},
			cur:   key(1), prev: key(2)},
		{name: "previous key retired longer ago than the TTL is removed",
			files: []file{{chunkKeyName, key(1), 0o600, 7 * time.Hour}, {chunkKeyPrevName, key(2), 0o600, 7 * time.Hour}},
			cur:   key(1)},
		{name: "an old key is replaced and kept as previous",
			files: []file{{chunkKeyName, key(1), 0o600, chunkKeyMaxAge + time.Hour}},
			prev:  key(1), rotated: true},
		{name: "short key file", files: []file{{chunkKeyName, key(1)[:31], 0o600, 0}}, wantErr: "31 bytes, want 32"},
		{name: "long key file", files: []file{{chunkKeyName, append(key(1), '\n'), 0o600, 0}}, wantErr: "33 bytes, want 32"},
		{name: "key readable by others", files: []file{{chunkKeyName, key(1), 0o644, 0}}, wantErr: "chmod 600"},
		{name: "bad previous key", files: []file{{chunkKeyName, key(1), 0o600, 0}, {chunkKeyPrevName, key(2)[:3], 0o600, 0}}, wantErr: "3 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range tt.files {
				p := filepath.Join(dir, f.name)
				if err := os.WriteFile(p, f.data, f.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chmod(p, f.mode); err != nil {
					t.Fatal(err)
				}
				if err := os.Chtimes(p, now.Add(-f.age), now.Add(-f.age)); err != nil {
					t.Fatal(err)
				}
			}
			keys, rotated, err := loadChunkKeys(dir, ttl, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rotated != tt.rotated || !bytes.Equal(keys.Previous, tt.prev) {
				t.Fatalf("rotated %v, previous %x; want %v, %x", rotated, keys.Previous, tt.rotated, tt.prev)
			}
			if tt.cur != nil && !bytes.Equal(keys.Current, tt.cur) {
				t.Fatalf("current key %x, want %x", keys.Current, tt.cur)
			}
			if tt.prev != nil && !keys.PreviousUntil.After(now) {
				t.Fatalf("previous key good until %v", keys.PreviousUntil)
			}
			if len(keys.Current) != snowflake.ChunkKeySize || bytes.Equal(keys.Current, make([]byte, snowflake.ChunkKeySize)) {
				t.Fatalf("current key %x", keys.Current)
			}
			fi, err := os.Stat(filepath.Join(dir, chunkKeyName))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v %v", fi, err)
			}
			// The previous key file is there exactly when it is used.
			if _, err := os.Stat(filepath.Join(dir, chunkKeyPrevName)); os.IsNotExist(err) != (tt.prev == nil) {
				t.Fatalf("previous key file: %v", err)
			}
			// The next start (a restart) reads the same keys.
			again, rotatedAgain, err := loadChunkKeys(dir, ttl, now)
			if err != nil || rotatedAgain || !bytes.Equal(again.Current, keys.Current) || !bytes.Equal(again.Previous, keys.Previous) {
				t.Fatalf("restart: %v %v %x %x", err, rotatedAgain, again.Current, keys.Current)
			}
			// No temporary files are left behind.
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), ".") {
					t.Fatalf("left %s", e.Name())
				}
			}
		})
	}
}

// TestWireChunks: the stage always gives the gateway a table; with a
// usable state directory the table's key is the key file's, otherwise a
// key of the process, and the log says why.
func TestWireChunks(t *testing.T) {
	tests := []struct {
		name string
		// setup returns the session state file to configure ("" none).
		setup   func(t *testing.T) string
		keyFile bool
		log     string
	}{
		{"no state file", func(*testing.T) string { return "" }, false, "key of this process only"},
		{"state directory made", func(t *testing.T) string { return filepath.Join(t.TempDir(), "state", "sessions.json") }, true, "chunk key loaded"},
		{"key file others can read", func(t *testing.T) string {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, chunkKeyName), make([]byte, 32), 0o644); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "sessions.json")
		}, false, "chmod 600"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			d := &daemon{cfg: &config.Config{}, log: slog.New(slog.NewTextHandler(&buf, nil))}
			d.cfg.Identity.Sessions.StateFile = tt.setup(t)
			if err := d.wireChunks(context.Background()); err != nil {
				t.Fatal(err)
			}
			if d.gw.Chunks == nil || !strings.Contains(buf.String(), tt.log) {
				t.Fatalf("table %v, log %q", d.gw.Chunks, buf.String())
			}
			if !tt.keyFile {
				return
			}
			key, err := os.ReadFile(filepath.Join(filepath.Dir(d.cfg.Identity.Sessions.StateFile), chunkKeyName))
			if err != nil {
				t.Fatal(err)
			}
			want, err := snowflake.NewSealedChunkTable(snowflake.ChunkKeys{Current: key}, 0, nil)
			if err != nil {
				t.Fatal(err)
			}
			if d.gw.Chunks.KeyID() != want.KeyID() || !strings.Contains(buf.String(), "key_id="+want.KeyID()) {
				t.Fatalf("table key %s, key file's %s; log %q", d.gw.Chunks.KeyID(), want.KeyID(), buf.String())
			}
		})
	}
}

func TestChunkKeyDir(t *testing.T) {
	tests := []struct {
		name, sessions, identity, want string
	}{
		{"session state", "/var/lib/snowgate/sessions.json", "/elsewhere/identity.json", "/var/lib/snowgate"},
		{"identity state only", "", "/var/lib/sg/identity.json", "/var/lib/sg"},
		{"none", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg config.Config
			cfg.Identity.Sessions.StateFile = tt.sessions
			cfg.Identity.StateFile = tt.identity
			if got := chunkKeyDir(&cfg); got != tt.want {
				t.Fatalf("chunkKeyDir = %q, want %q", got, tt.want)
			}
		})
	}
}
