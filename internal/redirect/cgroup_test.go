package redirect

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

const (
	// systemd's hybrid layout, as on the reference VM.
	mountinfoHybrid = `22 1 253:1 / / rw,relatime shared:1 - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`
	// A pure v2 host with optional fields (shared:N) and bpffs.
	mountinfoUnified = `24 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
31 24 0:27 / /sys/fs/bpf rw,nosuid,nodev,noexec,relatime shared:5 - bpf bpf rw,mode=700
`
	// A container that sees a bind mount of its own sub-tree first, then the
	// whole hierarchy somewhere else.
	mountinfoNested = `100 99 0:40 /docker/abc /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw
101 99 0:40 / /host/cgroup\040v2 rw,relatime master:3 - cgroup2 cgroup2 rw
`
	mountinfoOnlyBind = `100 99 0:40 /docker/abc /sys/fs/cgroup ro,relatime - cgroup2 cgroup2 rw
`
	// Legacy v1 only.
	mountinfoNone = `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
`
)

func TestFindCgroup2(t *testing.T) {
	tests := []struct {
		name      string
		mountinfo string
		want      string
		wantErr   error
	}{
		{"hybrid", mountinfoHybrid, "/sys/fs/cgroup/unified", nil},
		{"unified", mountinfoUnified, "/sys/fs/cgroup", nil},
		{"root mount preferred over sub-tree", mountinfoNested, "/host/cgroup v2", nil},
		{"only a sub-tree", mountinfoOnlyBind, "/sys/fs/cgroup", nil},
		{"v1 only", mountinfoNone, "", ErrNoCgroup2},
		{"empty", "", "", ErrNoCgroup2},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mounts, err := parseMountinfo(strings.NewReader(tc.mountinfo))
			if err != nil {
				t.Fatal(err)
			}
			got, err := findCgroup2(mounts)
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("err = %v, want %v", err, tc.wantErr)
			}
			if got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseMountinfoRejectsMalformed(t *testing.T) {
	for _, line := range []string{
		"31 23 0:28 / /sys/fs/cgroup rw,relatime tmpfs tmpfs rw", // no separator
		"31 23 0:28 / /x rw -", // nothing after it
		"1 2 3",
	} {
		if _, err := parseMountinfo(strings.NewReader(line + "\n")); err == nil {
			t.Errorf("%q: accepted", line)
		}
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	tests := map[string]string{
		`/a\040b`:   "/a b",
		`/tab\011x`: "/tab\tx",
		`/back\134`: `/back\`,
		`/plain`:    "/plain",
		`/bad\09`:   `/bad\09`,
		`/short\04`: `/short\04`,
	}
	for in, want := range tests {
		if got := unescapeMountinfo(in); got != want {
			t.Errorf("unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseMountinfo(f *testing.F) {
	for _, s := range []string{mountinfoHybrid, mountinfoUnified, mountinfoNested, mountinfoNone} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mounts, err := parseMountinfo(strings.NewReader(s))
		if err != nil {
			return
		}
		p, err := findCgroup2(mounts)
		if err == nil && p == "" {
			t.Fatal("empty cgroup2 mount point without an error")
		}
	})
}

func TestFindCgroup2Here(t *testing.T) {
	p, err := FindCgroup2()
	if errors.Is(err, ErrNoCgroup2) {
		t.Skip("no cgroup v2 on this machine")
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, err := CgroupID(p); err != nil {
		t.Errorf("CgroupID(%s): %v", p, err)
	}
	if _, err := os.Stat(filepath.Join(p, "cgroup.procs")); err != nil {
		t.Errorf("%s has no cgroup.procs: %v", p, err)
	}
}

func TestCgroupID(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	id, err := CgroupID(cg.Path)
	if err != nil {
		t.Fatal(err)
	}
	if id == 0 {
		t.Error("cgroup id 0")
	}
	if _, err := CgroupID(filepath.Dir(cg.Path)); err != nil {
		t.Error(err)
	}
	if _, err := CgroupID("/proc"); err == nil {
		t.Error("CgroupID accepted /proc")
	}
	root, _ := FindCgroup2()
	found, err := findCgroupByID(root, id)
	if err != nil {
		t.Fatal(err)
	}
	if found != cg.Path {
		t.Errorf("findCgroupByID = %s, want %s", found, cg.Path)
	}
}
