package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Workload processes are this binary re-executed with workerArg. A
// workload that must run in a network namespace gets netnsEnv: the new
// process enters it on one thread in init and executes itself again, so
// every thread of the workload starts in the namespace.
const (
	workerArg = "__snowgate_load_worker__"
	netnsEnv  = "SNOWGATE_LOAD_NETNS"
)

func init() {
	if len(os.Args) < 2 || os.Args[1] != workerArg {
		return
	}
	if ns := os.Getenv(netnsEnv); ns != "" {
		enterNetnsAndExec(ns)
	}
	os.Exit(runWorker(os.Stdin, os.Stdout))
}

// enterNetnsAndExec switches the calling thread into the namespace at path
// and executes this program again there, without netnsEnv. It never returns.
func enterNetnsAndExec(path string) {
	runtime.LockOSThread()
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err == nil {
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "snowgate-load worker: enter network namespace %s: %v\n", path, err)
		os.Exit(125)
	}
	env := make([]string, 0, len(os.Environ()))
	for _, kv := range os.Environ() {
		if len(kv) < len(netnsEnv)+1 || kv[:len(netnsEnv)+1] != netnsEnv+"=" {
			env = append(env, kv)
		}
	}
	err = syscall.Exec("/proc/self/exe", os.Args, env)
	fmt.Fprintf(os.Stderr, "snowgate-load worker: exec: %v\n", err)
	os.Exit(125)
}

// placement is where a workload process runs.
type placement struct {
	// Cgroup is the parent under which each workload gets a child cgroup
	// of its own; "" leaves the workload in this process's cgroup.
	Cgroup string
	// Netns is a network namespace path; "" keeps this process's.
	Netns string
	// CAFile is trusted by the driver (SSL_CERT_FILE); "" keeps the system
	// roots.
	CAFile string
}

// workload is one running workload process.
type workload struct {
	spec   workerSpec
	cmd    *exec.Cmd
	out    bytes.Buffer
	errs   tailBuffer
	cgroup string // the child cgroup created for it, if any
	home   string
	done   chan struct{}
	err    error
}

// startWorkload starts a workload process for spec at p. name is unique
// in this run (it names the child cgroup).
func startWorkload(spec workerSpec, p placement, name string) (*workload, error) {
	w := &workload{spec: spec, done: make(chan struct{})}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	home, err := os.MkdirTemp("", "snowgate-load-")
	if err != nil {
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	w.home = home
	w.cmd = exec.Command(self, workerArg)
	w.cmd.Env = append(os.Environ(),
		"HOME="+home,
		"SF_OCSP_RESPONSE_CACHE_DIR="+home,
		"SNOWFLAKE_DISABLE_PLATFORM_DETECTION=true",
	)
	if p.CAFile != "" {
		w.cmd.Env = append(w.cmd.Env, "SSL_CERT_FILE="+p.CAFile, "SSL_CERT_DIR="+home)
	}
	if p.Netns != "" {
		w.cmd.Env = append(w.cmd.Env, netnsEnv+"="+p.Netns)
	}
	b, err := json.Marshal(spec)
	if err != nil {
		w.cleanup()
		return nil, fmt.Errorf("workload %s: %w", name, err)
	}
	w.cmd.Stdin = bytes.NewReader(b)
	w.cmd.Stdout = &w.out
	w.cmd.Stderr = &w.errs
	w.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if p.Cgroup != "" {
		// Cloned straight into a child cgroup of its own, so no socket of
		// the workload is ever created anywhere else.
		w.cgroup = filepath.Join(p.Cgroup, name)
		if err := os.Mkdir(w.cgroup, 0o755); err != nil {
			w.cgroup = ""
			w.cleanup()
			return nil, fmt.Errorf("workload %s: create cgroup: %w", name, err)
		}
		f, err := os.OpenFile(w.cgroup, os.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			w.cleanup()
			return nil, fmt.Errorf("workload %s: open cgroup: %w", name, err)
		}
		defer f.Close()
		w.cmd.SysProcAttr.UseCgroupFD = true
		w.cmd.SysProcAttr.CgroupFD = int(f.Fd())
	}
	if err := w.cmd.Start(); err != nil {
		w.cleanup()
		return nil, fmt.Errorf("workload %s: start: %w", name, err)
	}
	go func() {
		w.err = w.cmd.Wait()
		close(w.done)
	}()
	return w, nil
}

// wait waits for the workload until ctx ends (then kills it) and returns
// its result.
func (w *workload) wait(ctx context.Context) workerResult {
	select {
	case <-w.done:
	case <-ctx.Done():
		w.kill()
		<-w.done
	}
	defer w.cleanup()
	var res workerResult
	if err := json.Unmarshal(w.out.Bytes(), &res); err != nil {
		res = workerResult{Phase: w.spec.Phase, Index: w.spec.Index,
			Fatal: fmt.Sprintf("no result (%v): %s", w.err, w.errs.String())}
	}
	return res
}

// kill ends the workload and everything in its cgroup.
func (w *workload) kill() {
	if w.cgroup != "" {
		_ = os.WriteFile(filepath.Join(w.cgroup, "cgroup.kill"), []byte("1"), 0)
	}
	if w.cmd.Process != nil {
		_ = w.cmd.Process.Kill()
	}
}

// cleanup removes the workload's cgroup and home directory.
func (w *workload) cleanup() {
	if w.cgroup != "" {
		// A process that exited leaves its cgroup asynchronously.
		deadline := time.Now().Add(30 * time.Second)
		for {
			err := unix.Rmdir(w.cgroup)
			if err == nil || errors.Is(err, unix.ENOENT) || !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				break
			}
			_ = os.WriteFile(filepath.Join(w.cgroup, "cgroup.kill"), []byte("1"), 0)
			time.Sleep(50 * time.Millisecond)
		}
		w.cgroup = ""
	}
	if w.home != "" {
		os.RemoveAll(w.home)
		w.home = ""
	}
}

// tailBuffer keeps the last 8 KiB written to it.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.b = append(t.b, p...)
	if len(t.b) > 8<<10 {
		t.b = append([]byte(nil), t.b[len(t.b)-8<<10:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string { return string(t.b) }
