package redirect

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// bpffsRoot is where bpffs is conventionally mounted, and where ensureBPFFS
// mounts it when nothing is.
const bpffsRoot = "/sys/fs/bpf"

// ensureBPFFS makes sure pinDir lies on a bpf filesystem, mounting bpffs at
// /sys/fs/bpf when pinDir is below it and nothing is mounted there, and
// creates pinDir (mode 0700: only root may touch the pins).
func ensureBPFFS(pinDir string) error {
	parent := filepath.Dir(pinDir)
	onBPF, err := isBPFFS(parent)
	if err != nil {
		return err
	}
	if !onBPF {
		if pinDir != bpffsRoot && !strings.HasPrefix(pinDir, bpffsRoot+"/") {
			return fmt.Errorf("pin dir %s is not on a bpf filesystem", pinDir)
		}
		if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", bpffsRoot, err)
		}
		if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs on %s: %w", bpffsRoot, err)
		}
	}
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return fmt.Errorf("create pin dir: %w", err)
	}
	ok, err := isBPFFS(pinDir)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("pin dir %s is not on a bpf filesystem", pinDir)
	}
	return nil
}

// isBPFFS reports whether the nearest existing ancestor of path is on bpffs.
func isBPFFS(path string) (bool, error) {
	for p := path; ; p = filepath.Dir(p) {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			return st.Type == unix.BPF_FS_MAGIC, nil
		}
		if !os.IsNotExist(err) {
			return false, fmt.Errorf("statfs %s: %w", p, err)
		}
		if p == "/" {
			return false, nil
		}
	}
}
