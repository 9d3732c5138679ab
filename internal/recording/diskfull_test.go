package recording

import (
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

// TestDiskFull: on a full file system Append fails with ENOSPC, leaves the
// file exactly as it was (it verifies, nothing partial), and once space
// returns the next Append stores the refused record too, in order.
func TestDiskFull(t *testing.T) {
	testenv.RequireRoot(t)
	for _, encrypt := range []bool{false, true} {
		dir := smallTmpfs(t)
		k := newKeys(t)
		w, err := NewWriter(dir, testMeta("full"), k.options(encrypt))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for _, rec := range queryPair(0, 5) {
			if err := w.Append(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		filler := fillFS(t, dir)
		before, _ := os.ReadFile(w.Path())

		// An incompressible result that cannot fit.
		big := make([]byte, 64<<10)
		rand.Read(big)
		refused := Record{Kind: KindQueryResponse, QueryID: "refused", Result: &Result{Format: "arrow", Data: big}}
		err = w.Append(ctx, refused)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("encrypt=%v: Append on a full disk = %v, want ENOSPC", encrypt, err)
		}
		after, _ := os.ReadFile(w.Path())
		if string(after) != string(before) {
			t.Fatalf("encrypt=%v: failed Append changed the file (%d → %d bytes)", encrypt, len(before), len(after))
		}
		rep, _ := Verify(w.Path(), k.pub, k.id)
		if !rep.Intact() || rep.Has(ProblemTruncated) {
			t.Fatalf("encrypt=%v: after a failed Append: %v", encrypt, rep.Problems)
		}

		// Space returns: the next record and the refused one are stored.
		os.Remove(filler)
		if err := w.Append(ctx, Record{Kind: KindError, Error: &Error{Code: "000500", Message: "recorder unavailable: query refused"}}); err != nil {
			t.Fatalf("encrypt=%v: Append after space returned: %v", encrypt, err)
		}
		if err := w.Seal(SealSessionEnd); err != nil {
			t.Fatal(err)
		}
		rep, _ = Verify(w.Path(), k.pub, k.id)
		if !rep.OK() {
			t.Fatalf("encrypt=%v: %v", encrypt, rep.Problems)
		}
		_, recs, err := readAll(t, w.Path(), k.id)
		if err != nil {
			t.Fatal(err)
		}
		n := len(recs)
		if n != 5 || recs[3].QueryID != "refused" || len(recs[3].Result.Data) != len(big) || recs[4].Kind != KindError {
			t.Errorf("encrypt=%v: %d records after recovery", encrypt, n)
		}
	}
}

// smallTmpfs mounts a 256 KiB tmpfs on a fresh test directory (root only),
// unmounted when the test ends.
func smallTmpfs(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// fillFS writes a file in dir until the file system is full (ENOSPC) and
// returns its path: removing it gives the space back.
func fillFS(t *testing.T, dir string) string {
	t.Helper()
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	for {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("fill: %v", err)
			}
			return filler
		}
	}
}
