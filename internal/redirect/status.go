package redirect

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
)

// AttachedProgram is one program effective on a cgroup for one attach point.
type AttachedProgram struct {
	// Hook is snowgate's name for the attach point (connect4, egress, ...).
	Hook string
	// Attach is the kernel attach type.
	Attach ebpf.AttachType
	// ID and Name identify the program.
	ID   ebpf.ProgramID
	Name string
	// Ours is true when the program is the one held by snowgate's pinned
	// link for this hook.
	Ours bool
}

// CgroupStatus is what runs on a cgroup, as the kernel reports it.
type CgroupStatus struct {
	// Cgroup is the cgroup v2 directory queried.
	Cgroup string
	// Programs are the effective programs, inherited ones included, in
	// hook order.
	Programs []AttachedProgram
	// Missing lists hooks whose pinned snowgate program is not effective on
	// the cgroup (or has no pin at all). Empty means the redirect is fully
	// in force.
	Missing []string
}

// pinnedPrograms maps each hook to the program id behind its pinned link.
func pinnedPrograms(pinDir string) (map[string]ebpf.ProgramID, error) {
	out := map[string]ebpf.ProgramID{}
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(linkPin(pinDir, h.name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load pinned link %s: %w", h.name, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return nil, fmt.Errorf("pinned link %s: %w", h.name, err)
		}
		out[h.name] = info.Program
	}
	return out, nil
}

// QueryCgroup lists the programs effective on cgroup for every hook snowgate
// uses and tells which are snowgate's pinned ones (pinDir). It is the check to
// run before each job: a non-empty Missing means the agent would not be
// redirected.
func QueryCgroup(cgroup, pinDir string) (CgroupStatus, error) {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	st := CgroupStatus{Cgroup: cgroup}
	ours, err := pinnedPrograms(pinDir)
	if err != nil {
		return st, fmt.Errorf("query %s: %w", cgroup, err)
	}
	f, err := os.Open(cgroup)
	if err != nil {
		return st, fmt.Errorf("query %s: %w", cgroup, err)
	}
	defer f.Close()
	for _, h := range hooks {
		res, err := link.QueryPrograms(link.QueryOptions{
			Target:     int(f.Fd()),
			Attach:     h.attach,
			QueryFlags: 1, // BPF_F_QUERY_EFFECTIVE: inherited programs too
		})
		if err != nil {
			return st, fmt.Errorf("query %s programs on %s: %w", h.name, cgroup, err)
		}
		found := false
		for _, p := range res.Programs {
			ap := AttachedProgram{Hook: h.name, Attach: h.attach, ID: p.ID}
			if prog, err := ebpf.NewProgramFromID(p.ID); err == nil {
				if info, err := prog.Info(); err == nil {
					ap.Name = info.Name
				}
				prog.Close()
			}
			if id, ok := ours[h.name]; ok && id == p.ID {
				ap.Ours = true
				found = true
			}
			st.Programs = append(st.Programs, ap)
		}
		if !found {
			st.Missing = append(st.Missing, h.name)
		}
	}
	return st, nil
}

// VerifyAttached returns an error naming every hook whose pinned snowgate
// program is not effective on cgroup. The daemon and launchers call it before
// letting a job start.
func VerifyAttached(cgroup, pinDir string) error {
	st, err := QueryCgroup(cgroup, pinDir)
	if err != nil {
		return err
	}
	if len(st.Missing) > 0 {
		return fmt.Errorf("redirect not in force on %s: missing %v", cgroup, st.Missing)
	}
	return nil
}

// AttachedCgroup returns the cgroup v2 directory the pinned links in pinDir
// are attached to.
func AttachedCgroup(pinDir string) (string, error) {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	for _, h := range hooks {
		l, err := link.LoadPinnedLink(linkPin(pinDir, h.name), nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("load pinned link %s: %w", h.name, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return "", fmt.Errorf("pinned link %s: %w", h.name, err)
		}
		ci := info.Cgroup()
		if ci == nil {
			return "", fmt.Errorf("pinned link %s is not a cgroup link", h.name)
		}
		root, err := FindCgroup2()
		if err != nil {
			return "", err
		}
		return findCgroupByID(root, ci.CgroupId)
	}
	return "", fmt.Errorf("attached cgroup of %s: %w", pinDir, ErrNotInstalled)
}
