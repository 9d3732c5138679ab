package testenv

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Nobody is the uid and gid unprivileged clients run as.
const Nobody = 65534

// Proc says where, and as whom, a child process runs.
type Proc struct {
	// Cgroup is the cgroup the child is cloned into (CLONE_INTO_CGROUP), so
	// it never creates a socket anywhere else; nil leaves it in the test's
	// cgroup.
	Cgroup *Cgroup
	// Netns is the network namespace the child runs in; nil leaves it in
	// the test's.
	Netns *Netns
	// Root keeps the child root with the test's capabilities. Otherwise it
	// runs as nobody (uid and gid 65534, no supplementary groups), with no
	// capabilities and no_new_privs set.
	Root bool
}

// wrapMarker, as argv[1] of the test binary, makes testenv's init act as the
// launcher: enter the namespace, drop privileges, exec the target.
const wrapMarker = "__snowgate_testenv_launch__"

type launch struct {
	Netns string   `json:"netns,omitempty"`
	Root  bool     `json:"root,omitempty"`
	Path  string   `json:"path"`
	Args  []string `json:"args"`
}

// Command returns a command that runs name with args as p says: cloned into
// p.Cgroup, switched into p.Netns and (unless p.Root) reduced to nobody
// without capabilities before it executes. The whole process, every thread,
// starts in the namespace: the switch happens in a launcher (the test binary
// re-executed) on one thread right before execve. The caller may set Env,
// Stdin, Stdout, Stderr and so on; it must not replace SysProcAttr (add to
// it). The program must be executable by nobody when p.Root is false.
//
// The test binary that calls Command must import testenv (it does, by
// calling this), which installs the launcher.
func Command(tb testing.TB, p Proc, name string, args ...string) *exec.Cmd {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		tb.Fatalf("command %s: %v", name, err)
	}
	if path, err = filepath.Abs(path); err != nil {
		tb.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		tb.Fatal(err)
	}
	l := launch{Root: p.Root, Path: path, Args: append([]string{name}, args...)}
	if p.Netns != nil {
		l.Netns = p.Netns.Path()
	}
	spec, err := json.Marshal(l)
	if err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(self, wrapMarker, string(spec))
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.Cgroup != nil {
		f, err := p.Cgroup.Open()
		if err != nil {
			tb.Fatal(err)
		}
		// Kept open until the test ends: Start may come any time before.
		tb.Cleanup(func() { f.Close() })
		cmd.SysProcAttr.UseCgroupFD = true
		cmd.SysProcAttr.CgroupFD = int(f.Fd())
	}
	return cmd
}

// runLauncher is the launcher side of Command. It never returns.
func runLauncher(spec string) {
	runtime.LockOSThread()
	fail := func(format string, a ...any) {
		fmt.Fprintf(os.Stderr, "testenv launcher: "+format+"\n", a...)
		os.Exit(125)
	}
	var l launch
	if err := json.Unmarshal([]byte(spec), &l); err != nil {
		fail("bad spec: %v", err)
	}
	if l.Netns != "" {
		fd, err := unix.Open(l.Netns, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			fail("open netns: %v", err)
		}
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			fail("setns: %v", err)
		}
		unix.Close(fd)
	}
	if !l.Root {
		// All-thread variants (syscall, not x/sys/unix); the exec below
		// happens on this thread anyway. Dropping every uid to non-zero
		// clears the capability sets.
		if err := syscall.Setgroups(nil); err != nil {
			fail("setgroups: %v", err)
		}
		if err := syscall.Setresgid(Nobody, Nobody, Nobody); err != nil {
			fail("setresgid: %v", err)
		}
		if err := syscall.Setresuid(Nobody, Nobody, Nobody); err != nil {
			fail("setresuid: %v", err)
		}
		if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
			fail("no_new_privs: %v", err)
		}
	}
	var err error
	// ETXTBSY: a freshly written copy of the test binary can still be open
	// for writing in a process forked meanwhile (golang/go#22315); that
	// passes in a moment.
	for range 100 {
		err = syscall.Exec(l.Path, l.Args, os.Environ())
		if err != syscall.ETXTBSY {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	fail("exec %s: %v", l.Path, err)
}

func init() {
	if len(os.Args) > 2 && os.Args[1] == wrapMarker {
		runLauncher(os.Args[2])
	}
	if a := os.Getenv(clientEnv); a != "" {
		runClientProcess(a)
	}
	if os.Getenv(sessionEnv) == "1" {
		runSessionProcess()
	}
}

// The test binary lives in a directory only root may enter, so an
// unprivileged client runs a hard link to it (or a copy) in a directory anyone
// may enter. One serves every test running at the same time; the last one to
// finish removes it.
var selfCopy struct {
	sync.Mutex
	path  string
	users int
}

// ExecutableCopy returns the path of a copy of the test binary that nobody
// can execute, removed when the test ends.
func ExecutableCopy(tb testing.TB) string {
	tb.Helper()
	selfCopy.Lock()
	defer selfCopy.Unlock()
	if selfCopy.path == "" {
		p, err := copySelf()
		if err != nil {
			tb.Fatal(err)
		}
		selfCopy.path = p
	}
	selfCopy.users++
	tb.Cleanup(func() {
		selfCopy.Lock()
		defer selfCopy.Unlock()
		selfCopy.users--
		if selfCopy.users == 0 {
			os.RemoveAll(filepath.Dir(selfCopy.path))
			selfCopy.path = ""
		}
	})
	return selfCopy.path
}

// SharedTempDir creates a temporary directory with permissions perm (0o755,
// or 0o777 for a client to create files in), removed when the test ends: for
// files an unprivileged client must reach, as t.TempDir's parent is private
// to root.
func SharedTempDir(tb testing.TB, perm os.FileMode) string {
	tb.Helper()
	dir, err := os.MkdirTemp("", "snowgate-testenv-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, perm); err != nil {
		tb.Fatal(err)
	}
	return dir
}

func copySelf() (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("copy test binary: %w", err)
	}
	dir, err := os.MkdirTemp("", "snowgate-testenv-")
	if err != nil {
		return "", fmt.Errorf("copy test binary: %w", err)
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(dir)
		return "", fmt.Errorf("copy test binary: %w", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return fail(err)
	}
	p := filepath.Join(dir, filepath.Base(self))
	// A hard link costs nothing and is never open for writing (no ETXTBSY);
	// the binary is mode 0755, only its directory is private. Copy when the
	// directories are on different file systems.
	if st, err := os.Stat(self); err == nil && st.Mode().Perm()&0o005 == 0o005 {
		if err := os.Link(self, p); err == nil {
			return p, nil
		}
	}
	src, err := os.Open(self)
	if err != nil {
		return fail(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return fail(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fail(err)
	}
	if err := dst.Close(); err != nil {
		return fail(err)
	}
	return p, nil
}
