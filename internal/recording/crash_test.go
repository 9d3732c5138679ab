package recording

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
)

// The crash child: the test binary re-executed with these variables set
// appends records until it is killed, printing "durable N" once Append has
// returned for a boundary record, when records 0..N are on disk.
const (
	crashDirEnv = "SNOWGATE_RECORDING_CRASH_DIR"
	crashKeyEnv = "SNOWGATE_RECORDING_CRASH_KEY" // hex Ed25519 seed
	crashAgeEnv = "SNOWGATE_RECORDING_CRASH_AGE" // age recipient, optional
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		if err := crashChild(dir); err != nil {
			fmt.Fprintln(os.Stderr, "crash child:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func crashChild(dir string) error {
	seed, err := hex.DecodeString(os.Getenv(crashKeyEnv))
	if err != nil || len(seed) != ed25519.SeedSize {
		return fmt.Errorf("bad key: %v", err)
	}
	opts := Options{SigningKey: ed25519.NewKeyFromSeed(seed)}
	if r := os.Getenv(crashAgeEnv); r != "" {
		rcp, err := age.ParseX25519Recipient(r)
		if err != nil {
			return err
		}
		opts.Recipients = []age.Recipient{rcp}
	}
	w, err := NewWriter(dir, testMeta("crash"), opts)
	if err != nil {
		return err
	}
	out := bufio.NewWriter(os.Stdout)
	n := 0 // records on disk: the session start is record 0
	for i := 0; ; i++ {
		for _, rec := range queryPair(i, 1+i%50) {
			if err := w.Append(context.Background(), rec); err != nil {
				return err
			}
			n++
			if rec.Kind.Boundary() {
				fmt.Fprintf(out, "durable %d\n", n)
				if err := out.Flush(); err != nil {
					return err
				}
			}
		}
	}
}

// TestCrashAtRandomPoints kills a writer with SIGKILL at random points, many
// times: each file verifies up to its last complete frame, says it is not
// sealed, and holds every record the child reported durable.
func TestCrashAtRandomPoints(t *testing.T) {
	runs := 24
	if testing.Short() {
		runs = 6
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	k := newKeys(t)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	for run := 0; run < runs; run++ {
		encrypt := run%2 == 1
		dir := t.TempDir()
		cmd := exec.Command(self, "-test.run=^$")
		cmd.Env = append(os.Environ(), crashDirEnv+"="+dir, crashKeyEnv+"="+hex.EncodeToString(k.priv.Seed()))
		if encrypt {
			cmd.Env = append(cmd.Env, crashAgeEnv+"="+k.id.Recipient().String())
		}
		var stderr strings.Builder
		cmd.Stderr = &stderr
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		killAfter := 1 + rng.IntN(60)
		sc := bufio.NewScanner(stdout)
		durable, lines := 0, 0
		for sc.Scan() {
			n, err := strconv.Atoi(strings.TrimPrefix(sc.Text(), "durable "))
			if err != nil {
				t.Fatalf("child said %q", sc.Text())
			}
			durable = n
			lines++
			if lines == killAfter {
				// Kill somewhere inside the next records' writes.
				time.Sleep(time.Duration(rng.IntN(2000)) * time.Microsecond)
				cmd.Process.Kill()
			}
		}
		// Lines already in the pipe when the child died still count.
		cmd.Wait()
		if lines < killAfter {
			t.Fatalf("run %d: child ended after %d lines: %s", run, lines, stderr.String())
		}
		path := filepath.Join(dir, "crash"+FileExt)
		rep, err := Verify(path, k.pub, k.id)
		if err != nil {
			t.Fatal(err)
		}
		if !rep.Intact() || rep.Sealed || !rep.Has(ProblemMissingSeal) {
			t.Errorf("run %d: Verify = %v, want intact and not sealed", run, rep.Problems)
		}
		_, recs, err := readAll(t, path, k.id)
		if err != nil {
			t.Errorf("run %d: read: %v", run, err)
		}
		if len(recs) < durable+1 {
			t.Errorf("run %d: %d records readable, the child reported records 0..%d durable", run, len(recs), durable)
		}
		for i, r := range recs {
			if r.Seq != uint64(i) {
				t.Fatalf("run %d: record %d has seq %d", run, i, r.Seq)
			}
		}
		t.Logf("run %d (encrypt=%v): killed after %d durable records; %d readable, problems %v", run, encrypt, durable, len(recs), kinds(rep.Problems))
	}
}

func kinds(ps []Problem) []ProblemKind {
	var out []ProblemKind
	for _, p := range ps {
		out = append(out, p.Kind)
	}
	return out
}

// TestTornTailAtEveryByte cuts an unsealed recording at every byte of the
// headers and hashes of its last two frames (every 5th inside bodies), as a crash mid-write would: what is complete still reads
// and verifies, and the cut is named.
func TestTornTailAtEveryByte(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		k := newKeys(t)
		opts := k.options(encrypt)
		opts.Sync = SyncAlways
		path, _ := writeSession(t, t.TempDir(), "torn", opts, 2, false)
		orig, _ := os.ReadFile(path)
		fs := frames(t, orig)
		p := filepath.Join(t.TempDir(), "x.sgrec")
		near := func(cut int64) bool { // within a frame header or hash
			for _, f := range fs {
				end := f.offset + frameHeadLen + int64(len(f.body)) + frameHashLen
				if (cut >= f.offset-2 && cut <= f.offset+frameHeadLen+2) || (cut >= end-frameHashLen-2 && cut <= end) {
					return true
				}
			}
			return false
		}
		for cut := fs[len(fs)-2].offset; cut <= int64(len(orig)); cut++ {
			if !near(cut) && cut%5 != 0 {
				continue // every byte near the frame edges, every 5th inside bodies
			}
			writeFile(t, p, orig[:cut])
			rep, err := Verify(p, k.pub, k.id)
			if err != nil {
				t.Fatal(err)
			}
			complete := 0
			for _, f := range fs {
				if f.offset+frameHeadLen+int64(len(f.body))+frameHashLen <= cut {
					complete++
				}
			}
			torn := cut != int64(len(orig))
			for _, f := range fs {
				torn = torn && cut != f.offset
			}
			if !rep.Intact() || rep.Sealed || rep.Has(ProblemTruncated) != torn || rep.Frames != int64(complete) {
				t.Fatalf("encrypt=%v cut %d: frames %d (want %d), problems %v", encrypt, cut, rep.Frames, complete, rep.Problems)
			}
			_, recs, err := readAll(t, p, k.id)
			if err != nil || len(recs) != complete-1 {
				t.Fatalf("encrypt=%v cut %d: read %d records, want %d: %v", encrypt, cut, len(recs), complete-1, err)
			}
		}
	}
}

// TestRecover seals what a crash left: the torn tail goes, the seal verifies,
// and every complete record stays readable. Sealed or damaged recordings are
// refused.
func TestRecover(t *testing.T) {
	for _, encrypt := range []bool{false, true} {
		k := newKeys(t)
		opts := k.options(encrypt)
		opts.Sync = SyncAlways
		path, want := writeSession(t, t.TempDir(), "rec", opts, 3, false)
		orig, _ := os.ReadFile(path)
		fs := frames(t, orig)
		torn := orig[:fs[len(fs)-1].offset+20] // the last record's frame is torn
		writeFile(t, path, torn)

		if _, err := Recover(path, k.priv); err != nil {
			t.Fatalf("encrypt=%v: Recover: %v", encrypt, err)
		}
		rep, _ := Verify(path, k.pub, k.id)
		if !rep.OK() || rep.Seal.Reason != SealRecovered || rep.Records != uint64(len(want)) {
			t.Errorf("encrypt=%v: after Recover: %+v %v", encrypt, rep, rep.Problems)
		}
		if rep, _ := Verify(path, k.pub); !rep.OK() {
			t.Errorf("encrypt=%v: keyless Verify after Recover: %v", encrypt, rep.Problems)
		}
		if _, err := Recover(path, k.priv); err == nil {
			t.Errorf("encrypt=%v: Recover of a sealed recording succeeded", encrypt)
		}

		damaged := append([]byte(nil), torn...)
		damaged[fs[2].offset+frameHeadLen+5] ^= 1
		writeFile(t, path, damaged)
		if _, err := Recover(path, k.priv); err == nil {
			t.Errorf("encrypt=%v: Recover of a damaged recording succeeded", encrypt)
		}
		if b, _ := os.ReadFile(path); string(b) != string(damaged) {
			t.Errorf("encrypt=%v: refused Recover changed the file", encrypt)
		}
	}
}
