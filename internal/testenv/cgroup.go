package testenv

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Cgroup is a cgroup v2 directory a test created. It is removed at the end of
// the test after every process still in it (or below it) has been killed.
type Cgroup struct {
	// Path is the absolute path of the cgroup directory.
	Path string
	// ID is the cgroup v2 id (the directory's inode number), which is what
	// bpf_get_current_cgroup_id() reports for tasks in it.
	ID uint64
}

// Cgroup2Root returns the mount point of the cgroup v2 hierarchy
// (/sys/fs/cgroup on a unified host, /sys/fs/cgroup/unified in systemd's
// hybrid layout), read from /proc/self/mountinfo. (internal/redirect has the
// production version; testenv keeps its own so that redirect's tests can
// import testenv without an import cycle.)
func Cgroup2Root() (string, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", fmt.Errorf("find cgroup2 mount: %w", err)
	}
	defer f.Close()
	found := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if sep < 0 || sep+1 >= len(fields) || fields[sep+1] != "cgroup2" {
			continue
		}
		// Mount points with spaces are octal-escaped; cgroup mounts have none
		// in practice, and a root mount ("/") beats a bind mount of a subtree.
		if fields[3] == "/" {
			return fields[4], nil
		}
		if found == "" {
			found = fields[4]
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("find cgroup2 mount: read mountinfo: %w", err)
	}
	if found == "" {
		return "", errors.New("find cgroup2 mount: no cgroup v2 hierarchy mounted")
	}
	return found, nil
}

// CgroupIDOf returns the cgroup v2 id of the cgroup directory at path.
func CgroupIDOf(path string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", path, err)
	}
	return st.Ino, nil
}

// CgroupOfPID returns the absolute path of the cgroup v2 a process is in
// (pid 0 means the calling process).
func CgroupOfPID(pid int) (string, error) {
	root, err := Cgroup2Root()
	if err != nil {
		return "", err
	}
	p := "/proc/self/cgroup"
	if pid != 0 {
		p = fmt.Sprintf("/proc/%d/cgroup", pid)
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return "", fmt.Errorf("cgroup of pid %d: %w", pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "0::"); ok {
			return filepath.Join(root, rest), nil
		}
	}
	return "", fmt.Errorf("cgroup of pid %d: no cgroup v2 entry in %s", pid, p)
}

// SelfCgroup is the cgroup the test process runs in: the one to exclude as
// "the gateway" when the test process plays the gateway.
func SelfCgroup(tb testing.TB) *Cgroup {
	tb.Helper()
	p, err := CgroupOfPID(0)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := CgroupIDOf(p)
	if err != nil {
		tb.Fatal(err)
	}
	return &Cgroup{Path: p, ID: id}
}

// NewCgroup creates a uniquely named cgroup directly under the cgroup v2
// root. Needs root.
func NewCgroup(tb testing.TB) *Cgroup {
	tb.Helper()
	root, err := Cgroup2Root()
	if err != nil {
		tb.Fatal(err)
	}
	return NewCgroupUnder(tb, root)
}

// NewCgroupUnder creates a uniquely named cgroup below parent.
func NewCgroupUnder(tb testing.TB, parent string) *Cgroup {
	tb.Helper()
	return newCgroupAt(tb, filepath.Join(parent, "snowgate-test-"+RandomName(tb)))
}

// Child creates a child cgroup named name below c (the "delegated subtree"
// case: programs attached to c are inherited by it).
func (c *Cgroup) Child(tb testing.TB, name string) *Cgroup {
	tb.Helper()
	return newCgroupAt(tb, filepath.Join(c.Path, name))
}

func newCgroupAt(tb testing.TB, p string) *Cgroup {
	tb.Helper()
	if err := os.Mkdir(p, 0o755); err != nil {
		tb.Fatalf("create cgroup: %v", err)
	}
	id, err := CgroupIDOf(p)
	if err != nil {
		os.Remove(p)
		tb.Fatal(err)
	}
	c := &Cgroup{Path: p, ID: id}
	tb.Cleanup(func() {
		if err := c.remove(); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	return c
}

// Open returns a directory file descriptor of the cgroup, for
// SysProcAttr.CgroupFD (clone straight into the cgroup, so the child never
// creates a socket anywhere else). The caller closes it after Start.
func (c *Cgroup) Open() (*os.File, error) {
	f, err := os.OpenFile(c.Path, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("open cgroup %s: %w", c.Path, err)
	}
	return f, nil
}

// Procs lists the processes directly in the cgroup (the threads, for a
// threaded cgroup, which has no process list).
func (c *Cgroup) Procs() ([]int, error) {
	b, err := os.ReadFile(filepath.Join(c.Path, "cgroup.procs"))
	if errors.Is(err, unix.EOPNOTSUPP) {
		b, err = os.ReadFile(filepath.Join(c.Path, "cgroup.threads"))
	}
	if err != nil {
		return nil, fmt.Errorf("list processes of %s: %w", c.Path, err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			return nil, fmt.Errorf("list processes of %s: %q: %w", c.Path, f, err)
		}
		pids = append(pids, pid)
	}
	return pids, nil
}

// Add moves a process into the cgroup (as root).
func (c *Cgroup) Add(pid int) error {
	if err := os.WriteFile(filepath.Join(c.Path, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
		return fmt.Errorf("move pid %d into %s: %w", pid, c.Path, err)
	}
	return nil
}

// Kill kills every process in the cgroup and its descendants (cgroup.kill,
// Linux 5.14+), falling back to SIGKILL per listed process (threaded cgroups
// have no cgroup.kill).
func (c *Cgroup) Kill() error {
	err := os.WriteFile(filepath.Join(c.Path, "cgroup.kill"), []byte("1"), 0)
	if err == nil || errors.Is(err, os.ErrNotExist) && !c.exists() {
		return nil
	}
	pids, perr := c.Procs()
	if perr != nil {
		return errors.Join(fmt.Errorf("kill %s: %w", c.Path, err), perr)
	}
	for _, pid := range pids {
		_ = unix.Kill(pid, unix.SIGKILL)
	}
	return nil
}

func (c *Cgroup) exists() bool {
	_, err := os.Stat(c.Path)
	return err == nil
}

// remove kills what is left and removes the cgroup and any child cgroups a
// test (or a client) created below it, deepest first.
func (c *Cgroup) remove() error {
	if !c.exists() {
		return nil
	}
	if err := c.Kill(); err != nil {
		return err
	}
	var dirs []string
	_ = filepath.WalkDir(c.Path, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	// Killed processes leave the cgroup asynchronously; rmdir says EBUSY
	// until they are gone.
	deadline := time.Now().Add(30 * time.Second)
	for i := len(dirs) - 1; i >= 0; i-- {
		for {
			err := unix.Rmdir(dirs[i])
			if err == nil || errors.Is(err, unix.ENOENT) {
				break
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				return fmt.Errorf("remove cgroup %s: %w", dirs[i], err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// RandomName is 12 random hex digits, for names of things a test creates in
// places other tests share (cgroups, interfaces, pin directories).
func RandomName(tb testing.TB) string {
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b[:])
}
