package redirect

import (
	"strings"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

func TestCheckKernel(t *testing.T) {
	testenv.RequireRoot(t)
	report, err := CheckKernel()
	if err != nil {
		// This machine runs the redirect integration tests, so every
		// mandatory feature must be here.
		t.Fatalf("CheckKernel: %v\nmissing: %+v", err, report.Missing())
	}
	names := map[string]Probe{}
	for _, p := range report.Probes {
		if p.State == "" {
			t.Errorf("probe %q has no state", p.Name)
		}
		if p.State != ProbeOK && p.Remedy == "" {
			t.Errorf("probe %q is %s without a remedy", p.Name, p.State)
		}
		names[p.Name] = p
	}
	for _, h := range hooks {
		if _, ok := names["attach type "+h.attach.String()]; !ok {
			t.Errorf("no probe for the %s attach type", h.name)
		}
	}
	for _, want := range []string{"cgroup v2 hierarchy", "bpffs", "BPF LSM", "cgroup bpf_link (pinnable attach)", "snowgate programs pass the verifier"} {
		if _, ok := names[want]; !ok {
			t.Errorf("no %q probe", want)
		}
	}
	if lsm := names["BPF LSM"]; lsm.Mandatory {
		t.Error("BPF LSM must be optional (degraded), not mandatory")
	}
	for _, p := range report.Degraded() {
		if p.Mandatory {
			t.Errorf("Degraded() returned mandatory probe %q", p.Name)
		}
	}
}

func TestReportMissing(t *testing.T) {
	r := Report{Probes: []Probe{
		{Name: "a", State: ProbeOK, Mandatory: true},
		{Name: "b", State: ProbeMissing, Mandatory: true},
		{Name: "c", State: ProbeDegraded},
		{Name: "d", State: ProbeOK},
	}}
	var got []string
	for _, p := range r.Missing() {
		got = append(got, p.Name)
	}
	if strings.Join(got, ",") != "b" {
		t.Errorf("Missing = %v, want [b]", got)
	}
	got = nil
	for _, p := range r.Degraded() {
		got = append(got, p.Name)
	}
	if strings.Join(got, ",") != "c" {
		t.Errorf("Degraded = %v, want [c]", got)
	}
}
