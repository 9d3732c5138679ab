package redirect

import (
	"bufio"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
)

// ProbeState is the outcome of one kernel feature probe.
type ProbeState string

// Probe outcomes.
const (
	// ProbeOK means the feature works.
	ProbeOK ProbeState = "ok"
	// ProbeMissing means the feature is absent. If it is mandatory the
	// redirect cannot run, and the daemon must refuse to start.
	ProbeMissing ProbeState = "missing"
	// ProbeDegraded means an optional feature is absent: the redirect runs,
	// with the gap named in Detail.
	ProbeDegraded ProbeState = "degraded"
)

// Probe is one checked kernel feature.
type Probe struct {
	// Name says what was probed, e.g. "program type CGroupSockAddr".
	Name string
	// State is the outcome.
	State ProbeState
	// Mandatory features are needed for the redirect to run at all.
	Mandatory bool
	// Detail is what was found (a path, a version, the error).
	Detail string
	// Remedy says what to do when the feature is missing or degraded.
	Remedy string
}

// Report is the result of CheckKernel.
type Report struct {
	Probes []Probe
}

// Missing returns the mandatory probes that failed.
func (r Report) Missing() []Probe {
	var out []Probe
	for _, p := range r.Probes {
		if p.Mandatory && p.State != ProbeOK {
			out = append(out, p)
		}
	}
	return out
}

// Degraded returns the optional probes that failed.
func (r Report) Degraded() []Probe {
	var out []Probe
	for _, p := range r.Probes {
		if !p.Mandatory && p.State != ProbeOK {
			out = append(out, p)
		}
	}
	return out
}

// ErrKernelUnsupported is returned by CheckKernel when a mandatory feature is
// missing.
var ErrKernelUnsupported = errors.New("kernel lacks a feature the redirect needs")

// helperProbes are the helpers each program type of bpf/snowgate.c calls.
var helperProbes = []struct {
	pt      ebpf.ProgramType
	helpers []asm.BuiltinFunc
}{
	{ebpf.CGroupSockAddr, []asm.BuiltinFunc{
		asm.FnGetCurrentCgroupId, asm.FnGetCurrentPidTgid, asm.FnGetCurrentUidGid,
		asm.FnGetNetnsCookie, asm.FnSkStorageGet, asm.FnRingbufReserve, asm.FnRingbufSubmit,
		asm.FnMapLookupElem, asm.FnGetSocketCookie, asm.FnMapUpdateElem,
	}},
	{ebpf.SockOps, []asm.BuiltinFunc{
		asm.FnSkStorageGet, asm.FnGetSocketCookie, asm.FnSockOpsCbFlagsSet,
		asm.FnMapUpdateElem, asm.FnMapDeleteElem, asm.FnRingbufReserve,
		asm.FnGetNetnsCookie, asm.FnMapLookupPercpuElem,
	}},
	{ebpf.CGroupSock, []asm.BuiltinFunc{
		asm.FnGetCurrentCgroupId, asm.FnGetCurrentPidTgid, asm.FnGetCurrentUidGid,
		asm.FnRingbufReserve,
	}},
	{ebpf.CGroupSKB, []asm.BuiltinFunc{
		asm.FnSkbCgroupId, asm.FnGetSocketUid, asm.FnSkFullsock, asm.FnSkStorageGet,
		asm.FnSkbLoadBytes, asm.FnRingbufReserve,
	}},
}

// CheckKernel probes every kernel feature the redirect uses: the cgroup v2
// hierarchy, bpffs, each program, attach and map type, each helper, cgroup
// bpf_link support, SO_NETNS_COOKIE, and finally loads the real programs.
// BTF and BPF LSM are optional: without them the report says "degraded".
// It returns an error wrapping ErrKernelUnsupported when a mandatory feature
// is missing; the daemon must then refuse to start. Needs root (CAP_BPF and
// CAP_NET_ADMIN); without it the BPF probes report missing.
func CheckKernel() (Report, error) {
	var r Report
	add := func(p Probe) { r.Probes = append(r.Probes, p) }
	probeErr := func(name string, mandatory bool, err error, detailOK, remedy string) {
		p := Probe{Name: name, Mandatory: mandatory, State: ProbeOK, Detail: detailOK}
		if err != nil {
			p.State = ProbeMissing
			if !mandatory {
				p.State = ProbeDegraded
			}
			p.Detail = err.Error()
			p.Remedy = remedy
		}
		add(p)
	}
	const newerKernel = "needs Linux 5.8 or later with CONFIG_CGROUP_BPF=y and CONFIG_BPF_SYSCALL=y"

	if v, err := features.LinuxVersionCode(); err == nil {
		add(Probe{Name: "kernel version", State: ProbeOK,
			Detail: fmt.Sprintf("%d.%d.%d", v>>16, (v>>8)&0xff, v&0xff)})
	}
	if missing, err := missingCapabilities(); err != nil || len(missing) > 0 {
		detail := fmt.Sprintf("uid %d lacks %s", os.Geteuid(), strings.Join(missing, ", "))
		if err != nil {
			detail = err.Error()
		}
		add(Probe{Name: "privileges", State: ProbeMissing, Mandatory: true, Detail: detail,
			Remedy: "run as root, or with CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN (the systemd unit grants them)"})
	}

	cg2, err := FindCgroup2()
	layout := ""
	switch {
	case err != nil:
	case cg2 == "/sys/fs/cgroup":
		layout = "unified"
	case cg2 == "/sys/fs/cgroup/unified":
		layout = "hybrid"
	default:
		layout = "custom mount"
	}
	probeErr("cgroup v2 hierarchy", true, err, fmt.Sprintf("%s (%s)", cg2, layout),
		"mount cgroup2 (systemd.unified_cgroup_hierarchy=1, or the hybrid layout's /sys/fs/cgroup/unified)")

	add(probeBPFFS())

	_, err = os.Stat("/sys/kernel/btf/vmlinux")
	probeErr("BTF (/sys/kernel/btf/vmlinux)", false, err, "present",
		"enable CONFIG_DEBUG_INFO_BTF; the redirect works without it, BPF LSM does not")

	for _, pt := range []ebpf.ProgramType{ebpf.CGroupSockAddr, ebpf.SockOps, ebpf.CGroupSock, ebpf.CGroupSKB} {
		probeErr("program type "+pt.String(), true, features.HaveProgramType(pt), "", newerKernel)
	}
	for _, mt := range []ebpf.MapType{ebpf.SkStorage, ebpf.RingBuf, ebpf.LRUHash, ebpf.PerCPUArray, ebpf.Hash} {
		probeErr("map type "+mt.String(), true, features.HaveMapType(mt), "", newerKernel)
	}
	for _, hp := range helperProbes {
		var missing []error
		for _, h := range hp.helpers {
			if err := features.HaveProgramHelper(hp.pt, h); err != nil {
				missing = append(missing, fmt.Errorf("%s: %w", h, err))
			}
		}
		probeErr(fmt.Sprintf("helpers of %s programs", hp.pt), true, errors.Join(missing...),
			fmt.Sprintf("%d helpers", len(hp.helpers)), newerKernel)
	}
	for _, h := range hooks {
		probeErr("attach type "+h.attach.String(), true, probeAttachType(h.attach), "", newerKernel)
	}
	if cg2 != "" {
		probeErr("cgroup bpf_link (pinnable attach)", true, probeCgroupLink(cg2), "",
			"needs Linux 5.7 or later: without links the programs cannot be pinned and would fail open")
	}
	_, err = hostNetnsCookie()
	probeErr("SO_NETNS_COOKIE", true, err, "",
		"needs Linux 5.14 or later: containers are told apart by network-namespace cookie")
	probeErr("snowgate programs pass the verifier", true, probeLoad(), "", newerKernel)

	err = features.HaveProgramType(ebpf.LSM)
	probeErr("BPF LSM", false, err, "available",
		"boot with lsm=...,bpf and CONFIG_BPF_LSM=y; without it a socket created outside the agent cgroup "+
			"and handed in (migration, SCM_RIGHTS) is not redirected: launch agents directly into the cgroup")

	if missing := r.Missing(); len(missing) > 0 {
		names := make([]string, len(missing))
		for i, p := range missing {
			names[i] = p.Name
		}
		return r, fmt.Errorf("%w: %s", ErrKernelUnsupported, strings.Join(names, ", "))
	}
	return r, nil
}

// probeBPFFS checks that bpffs is mounted, or at least mountable.
func probeBPFFS() Probe {
	p := Probe{Name: "bpffs", Mandatory: true}
	if ok, err := isBPFFS(bpffsRoot); err == nil && ok {
		p.State, p.Detail = ProbeOK, "mounted on "+bpffsRoot
		return p
	}
	f, err := os.Open("/proc/filesystems")
	if err == nil {
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if fields := strings.Fields(sc.Text()); len(fields) > 0 && fields[len(fields)-1] == "bpf" {
				p.State, p.Detail = ProbeOK, "supported, not mounted yet: install mounts it on "+bpffsRoot
				return p
			}
		}
	}
	p.State, p.Detail = ProbeMissing, "bpf filesystem not supported"
	p.Remedy = "needs CONFIG_BPF_SYSCALL=y; pins keep the redirect in place across daemon restarts"
	return p
}

// progTypeOf is the program type that attaches with at.
func progTypeOf(at ebpf.AttachType) ebpf.ProgramType {
	switch at {
	case ebpf.AttachCGroupInetEgress, ebpf.AttachCGroupInetIngress:
		return ebpf.CGroupSKB
	case ebpf.AttachCGroupInetSockCreate:
		return ebpf.CGroupSock
	case ebpf.AttachCGroupSockOps:
		return ebpf.SockOps
	default:
		return ebpf.CGroupSockAddr
	}
}

// probeProgram loads a program that returns 1 (allow) for attach type at.
func probeProgram(at ebpf.AttachType) (*ebpf.Program, error) {
	return ebpf.NewProgramWithOptions(&ebpf.ProgramSpec{
		Type:       progTypeOf(at),
		AttachType: at,
		License:    "GPL",
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R0, 1),
			asm.Return(),
		},
	}, ebpf.ProgramOptions{LogDisabled: true})
}

// probeAttachType checks the verifier knows attach type at.
func probeAttachType(at ebpf.AttachType) error {
	p, err := probeProgram(at)
	if err != nil {
		return fmt.Errorf("load a %s program: %w", at, err)
	}
	return p.Close()
}

// probeCgroupLink attaches an allow-all egress program to a throw-away cgroup
// with BPF_LINK_CREATE, then removes both.
func probeCgroupLink(cg2 string) error {
	dir, err := os.MkdirTemp(cg2, "snowgate-probe-")
	if err != nil {
		return fmt.Errorf("create probe cgroup: %w", err)
	}
	defer os.Remove(dir)
	prog, err := probeProgram(ebpf.AttachCGroupInetEgress)
	if err != nil {
		return err
	}
	defer prog.Close()
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	l, err := link.AttachRawLink(link.RawLinkOptions{Target: int(f.Fd()), Program: prog, Attach: ebpf.AttachCGroupInetEgress})
	if err != nil {
		return fmt.Errorf("attach with BPF_LINK_CREATE: %w", err)
	}
	return l.Close()
}

// probeLoad loads the real programs with a representative configuration.
func probeLoad() error {
	cfg, err := Config{
		Cgroup:    filepath.Join("/", "probe"),
		Proxy:     netip.MustParseAddrPort("127.0.0.1:15443"),
		HostProxy: netip.MustParseAddrPort("169.254.77.1:15443"),
		DNS:       netip.MustParseAddrPort("127.0.0.1:15353"),
	}.withDefaults()
	if err != nil {
		return err
	}
	spec, err := newSpec(cfg, 1)
	if err != nil {
		return err
	}
	for _, m := range spec.Maps {
		m.Pinning = ebpf.PinNone
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	coll.Close()
	return nil
}

// Capability numbers (linux/capability.h).
const (
	capNetAdmin = 12
	capSysAdmin = 21
	capPerfmon  = 38
	capBPF      = 39
)

// missingCapabilities names the effective capabilities the redirect needs
// and this process lacks: CAP_NET_ADMIN to attach to cgroups and add the
// host address, CAP_BPF and CAP_PERFMON to load the programs (CAP_SYS_ADMIN
// stands in for both, as on kernels before 5.8). The check reads
// capabilities, not the uid, so the hardened unit's own user passes.
func missingCapabilities() ([]string, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return nil, fmt.Errorf("read capabilities: %w", err)
	}
	eff, err := effectiveCaps(string(b))
	if err != nil {
		return nil, err
	}
	return capsLacking(eff), nil
}

// effectiveCaps parses the CapEff line of /proc/<pid>/status.
func effectiveCaps(status string) (uint64, error) {
	for _, line := range strings.Split(status, "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var caps uint64
			if _, err := fmt.Sscanf(strings.TrimSpace(v), "%x", &caps); err != nil {
				return 0, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
			}
			return caps, nil
		}
	}
	return 0, errors.New("no CapEff line in /proc/self/status")
}

// capsLacking names what eff lacks of the redirect's needs.
func capsLacking(eff uint64) []string {
	has := func(c uint) bool { return eff&(1<<c) != 0 }
	var missing []string
	if !has(capNetAdmin) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if !has(capBPF) && !has(capSysAdmin) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) && !has(capSysAdmin) {
		missing = append(missing, "CAP_PERFMON")
	}
	return missing
}
