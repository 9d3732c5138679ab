package recording

import (
	"context"
	"errors"
	"os"
	"syscall"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestAppendSeal: a session's last records and its seal are stored together
// (one fsync); a refused AppendSeal leaves the recording open with the
// records pending, so a later Seal stores them in order.
func TestAppendSeal(t *testing.T) {
	logout := []Record{
		{Kind: KindRequest, Method: "POST", Path: "/session?delete=true"},
		{Kind: KindResponse, Method: "POST", Path: "/session?delete=true", Status: 200},
	}
	tests := []struct {
		name    string
		prepare func(t *testing.T, w *Writer) context.Context
		wantErr error
	}{
		{"sealed with its records", func(*testing.T, *Writer) context.Context { return context.Background() }, nil},
		{"already sealed", func(t *testing.T, w *Writer) context.Context {
			if err := w.Seal(SealIdle); err != nil {
				t.Fatal(err)
			}
			return context.Background()
		}, ErrSealed},
		{"cancelled", func(*testing.T, *Writer) context.Context {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			return ctx
		}, context.Canceled},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k := newKeys(t)
			w, err := NewWriter(t.TempDir(), testMeta("s"), k.options(true))
			if err != nil {
				t.Fatal(err)
			}
			for _, rec := range queryPair(0, 3) {
				if err := w.Append(context.Background(), rec); err != nil {
					t.Fatal(err)
				}
			}
			ctx := tc.prepare(t, w)
			err = w.AppendSeal(ctx, logout, SealSessionEnd)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("AppendSeal = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr != nil {
				if tc.wantErr != ErrSealed && w.Sealed() {
					t.Fatal("sealed although AppendSeal failed")
				}
				return
			}
			if !w.Sealed() {
				t.Fatal("not sealed")
			}
			_, got, err := readAll(t, w.Path(), k.id)
			if err != nil {
				t.Fatal(err)
			}
			if n := len(got); n != 1+2+2 || got[n-1].Kind != KindResponse || got[n-2].Kind != KindRequest {
				t.Fatalf("records %d, last %v", n, got[n-1].Kind)
			}
			rep, err := Verify(w.Path(), k.pub, k.id)
			if err != nil || !rep.OK() || rep.Seal.Reason != SealSessionEnd || rep.Records != 5 {
				t.Fatalf("Verify = %+v, %v", rep, err)
			}
		})
	}
}

// TestAppendSealDiskFull: on a full file system AppendSeal fails, the file
// is as it was and not sealed; once space returns, Seal stores the refused
// records and seals.
func TestAppendSealDiskFull(t *testing.T) {
	testenv.RequireRoot(t)
	dir := smallTmpfs(t)
	k := newKeys(t)
	w, err := NewWriter(dir, testMeta("full"), k.options(false))
	if err != nil {
		t.Fatal(err)
	}
	filler := fillFS(t, dir)
	before, _ := os.ReadFile(w.Path())
	recs := queryPair(1, 2000)
	if err := w.AppendSeal(context.Background(), recs, SealSessionEnd); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("AppendSeal on a full disk = %v, want ENOSPC", err)
	}
	if after, _ := os.ReadFile(w.Path()); string(after) != string(before) || w.Sealed() {
		t.Fatalf("failed AppendSeal changed the file (%d → %d bytes) or sealed it (%v)", len(before), len(after), w.Sealed())
	}
	os.Remove(filler)
	if err := w.Seal(SealSessionEnd); err != nil {
		t.Fatal(err)
	}
	rep, err := Verify(w.Path(), k.pub)
	if err != nil || !rep.OK() || rep.Records != 1+uint64(len(recs)) {
		t.Fatalf("Verify = %+v, %v; want %d records", rep, err, 1+len(recs))
	}
}
