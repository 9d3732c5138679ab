package redirect

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNoCgroup2 means the machine has no cgroup v2 hierarchy mounted, so no
// cgroup eBPF program can be attached (legacy v1-only layout).
var ErrNoCgroup2 = errors.New("no cgroup v2 hierarchy mounted")

// mountinfoPath is read by FindCgroup2 and the bpffs check.
const mountinfoPath = "/proc/self/mountinfo"

// mount is one line of /proc/self/mountinfo, reduced to what we use.
type mount struct {
	Root       string // root of the mount within its filesystem
	MountPoint string
	FSType     string
}

// parseMountinfo reads the proc(5) mountinfo format:
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// Fields up to the optional fields are positional; the optional fields end
// with a lone "-", after which come the filesystem type and source. Paths
// escape space, tab, newline and backslash as octal (\040 ...).
func parseMountinfo(r io.Reader) ([]mount, error) {
	var mounts []mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 {
			continue
		}
		sep := -1
		for i := 6; i < len(fields); i++ {
			if fields[i] == "-" {
				sep = i
				break
			}
		}
		if len(fields) < 7 || sep < 0 || sep+1 >= len(fields) {
			return nil, fmt.Errorf("mountinfo line %d: malformed: %q", n, sc.Text())
		}
		mounts = append(mounts, mount{
			Root:       unescapeMountinfo(fields[3]),
			MountPoint: unescapeMountinfo(fields[4]),
			FSType:     fields[sep+1],
		})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read mountinfo: %w", err)
	}
	return mounts, nil
}

// unescapeMountinfo undoes the kernel's octal escaping (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findCgroup2 picks the cgroup v2 mount out of a mountinfo listing. A mount
// of the hierarchy's root is preferred over a bind mount of a sub-tree.
func findCgroup2(mounts []mount) (string, error) {
	found := ""
	for _, m := range mounts {
		if m.FSType != "cgroup2" {
			continue
		}
		if m.Root == "/" {
			return m.MountPoint, nil
		}
		if found == "" {
			found = m.MountPoint
		}
	}
	if found == "" {
		return "", ErrNoCgroup2
	}
	return found, nil
}

// FindCgroup2 returns the mount point of the cgroup v2 hierarchy: /sys/fs/cgroup
// on a pure v2 (unified) host, /sys/fs/cgroup/unified in systemd's hybrid
// layout. It reads /proc/self/mountinfo rather than guessing paths.
func FindCgroup2() (string, error) {
	f, err := os.Open(mountinfoPath)
	if err != nil {
		return "", fmt.Errorf("find cgroup2: %w", err)
	}
	defer f.Close()
	mounts, err := parseMountinfo(f)
	if err != nil {
		return "", fmt.Errorf("find cgroup2: %w", err)
	}
	p, err := findCgroup2(mounts)
	if err != nil {
		return "", fmt.Errorf("find cgroup2 in %s: %w", mountinfoPath, err)
	}
	return p, nil
}

// CgroupID returns the cgroup v2 id of the cgroup directory at path: its inode
// number, which is what bpf_get_current_cgroup_id() reports for tasks in it.
func CgroupID(path string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", path, err)
	}
	if st.Type != unix.CGROUP2_SUPER_MAGIC {
		return 0, fmt.Errorf("cgroup id of %s: not on a cgroup v2 filesystem (type %#x)", path, st.Type)
	}
	var s unix.Stat_t
	if err := unix.Stat(path, &s); err != nil {
		return 0, fmt.Errorf("cgroup id of %s: %w", path, err)
	}
	if s.Mode&unix.S_IFMT != unix.S_IFDIR {
		return 0, fmt.Errorf("cgroup id of %s: not a directory", path)
	}
	return s.Ino, nil
}

// findCgroupByID walks the cgroup v2 tree under root for the directory whose
// id is id. It is used to name the cgroup a pinned link is attached to.
func findCgroupByID(root string, id uint64) (string, error) {
	errFound := errors.New("found")
	var hit string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // cgroups come and go while we walk
		}
		if !d.IsDir() {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return nil
		}
		if st, ok := info.Sys().(*syscall.Stat_t); ok && st.Ino == id {
			hit = p
			return errFound
		}
		return nil
	})
	if errors.Is(err, errFound) {
		return hit, nil
	}
	if err != nil {
		return "", fmt.Errorf("find cgroup %d under %s: %w", id, root, err)
	}
	return "", fmt.Errorf("find cgroup %d under %s: %w", id, root, fs.ErrNotExist)
}
