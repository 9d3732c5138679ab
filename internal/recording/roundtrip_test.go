package recording

import (
	"context"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"

	"filippo.io/age"
)

func TestRoundTrip(t *testing.T) {
	tests := []struct {
		name    string
		encrypt bool
		sync    SyncPolicy
		pairs   int
	}{
		{"plain boundary", false, SyncBoundary, 5},
		{"plain always", false, SyncAlways, 5},
		{"plain never", false, SyncNever, 5},
		{"age boundary", true, SyncBoundary, 5},
		{"age always", true, SyncAlways, 3},
		{"age empty session", true, SyncBoundary, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newKeys(t)
			opts := k.options(tt.encrypt)
			opts.Sync = tt.sync
			path, want := writeSession(t, t.TempDir(), "s-1", opts, tt.pairs, true)

			meta, got, err := readAll(t, path, k.id)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if wm := testMeta("s-1"); !reflect.DeepEqual(meta.Identity, wm.Identity) || meta.Workload != wm.Workload || meta.Snowflake != wm.Snowflake {
				t.Errorf("meta = %+v, want %+v", meta, wm)
			}
			if len(got) != len(want)+1 || got[0].Kind != KindSessionStart {
				t.Fatalf("read %d records, want session start + %d", len(got), len(want))
			}
			for i, w := range want {
				g := got[i+1]
				if g.Seq != uint64(i+1) || g.Kind != w.Kind || g.SQL != w.SQL || g.QueryID != w.QueryID || string(g.Bindings) != string(w.Bindings) {
					t.Errorf("record %d = %+v, want %+v", i+1, g, w)
				}
				if w.Result != nil && !reflect.DeepEqual(g.Result.Rows, w.Result.Rows) {
					t.Errorf("record %d rows = %v, want %v", i+1, g.Result.Rows, w.Result.Rows)
				}
				if g.Mono < got[i].Mono {
					t.Errorf("record %d: monotonic time went back", i+1)
				}
			}

			rep, err := Verify(path, k.pub, k.id)
			if err != nil || !rep.OK() || !rep.RecordsChecked || rep.Records != uint64(len(want)+1) || rep.Seal.Reason != SealSessionEnd {
				t.Errorf("Verify = %+v, %v; want sealed, %d records, no problem", rep, err, len(want)+1)
			}
			// Without the identity only the frame chain and seal are checked,
			// and they still hold.
			rep, err = Verify(path, k.pub)
			if err != nil || !rep.OK() || rep.RecordsChecked == tt.encrypt {
				t.Errorf("Verify without identity = %+v, %v", rep, err)
			}
			if tt.encrypt {
				if _, _, err := readAll(t, path); err == nil {
					t.Error("Open of an encrypted recording without identity succeeded")
				}
				other := newKeys(t)
				rep, _ := Verify(path, k.pub, other.id)
				if !rep.Has(ProblemDecrypt) {
					t.Errorf("Verify with a foreign identity = %+v, want decrypt-failed", rep.Problems)
				}
				raw, _ := os.ReadFile(path)
				if strings.Contains(string(raw), "select id") || strings.Contains(string(raw), "acme/pipelines") {
					t.Error("plaintext SQL or claims in an encrypted recording")
				}
			}
		})
	}
}

func TestWriterRefusesAfterSeal(t *testing.T) {
	k := newKeys(t)
	dir := t.TempDir()
	w, err := NewWriter(dir, testMeta("s"), k.options(false))
	if err != nil {
		t.Fatal(err)
	}
	if w.Idle() < 0 || w.Sealed() {
		t.Errorf("Idle = %v, Sealed = %v on a new writer", w.Idle(), w.Sealed())
	}
	if err := w.Seal(SealIdle); err != nil {
		t.Fatal(err)
	}
	if !w.Sealed() {
		t.Error("Sealed = false after Seal")
	}
	if err := w.Seal(SealShutdown); err != nil {
		t.Errorf("second Seal: %v", err)
	}
	if err := w.Append(context.Background(), Record{Kind: KindNote}); !errors.Is(err, ErrSealed) {
		t.Errorf("Append after Seal = %v, want ErrSealed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Append(ctx, Record{Kind: KindNote}); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a cancelled context = %v", err)
	}
	if _, err := NewWriter(dir, testMeta("s"), k.options(false)); err == nil {
		t.Error("NewWriter over an existing recording succeeded")
	}
	for _, id := range []string{"", "../x", "a/b", ".."} {
		if _, err := NewWriter(dir, testMeta(id), k.options(false)); err == nil {
			t.Errorf("NewWriter accepted session id %q", id)
		}
	}
	if _, err := NewWriter(dir, testMeta("nokey"), Options{}); err == nil {
		t.Error("NewWriter without a signing key succeeded")
	}
	rep, _ := Verify(w.Path(), k.pub)
	if !rep.OK() || rep.Seal.Reason != SealIdle {
		t.Errorf("Verify = %+v", rep)
	}
}

func TestMultipleRecipients(t *testing.T) {
	a, b := newKeys(t), newKeys(t)
	opts := a.options(true)
	opts.Recipients = append(opts.Recipients, b.id.Recipient())
	path, want := writeSession(t, t.TempDir(), "multi", opts, 2, true)
	for _, id := range []age.Identity{a.id, b.id} {
		_, got, err := readAll(t, path, id)
		if err != nil || len(got) != len(want)+1 {
			t.Errorf("read with one of two recipients: %d records, %v", len(got), err)
		}
	}
}

// TestConcurrentAppend: appends from many goroutines (one session's
// connections) are serialised into one intact chain.
func TestConcurrentAppend(t *testing.T) {
	k := newKeys(t)
	w, err := NewWriter(t.TempDir(), testMeta("conc"), k.options(true))
	if err != nil {
		t.Fatal(err)
	}
	const workers, each = 4, 25
	errs := make(chan error, workers)
	for g := 0; g < workers; g++ {
		go func() {
			for i := 0; i < each; i++ {
				for _, rec := range queryPair(g*100+i, 2) {
					if err := w.Append(context.Background(), rec); err != nil {
						errs <- err
						return
					}
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < workers; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Seal(SealShutdown); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(w.Path(), k.pub, k.id)
	if err != nil || !rep.OK() || rep.Records != 1+workers*each*2 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}
