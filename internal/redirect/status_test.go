package redirect

import (
	"net/netip"
	"os"
	"slices"
	"testing"

	"github.com/snowgate/snowgate/internal/testenv"
)

func TestQueryCgroup(t *testing.T) {
	testenv.RequireRoot(t)
	f := newRedirectFixture(t)

	if err := VerifyAttached(f.cg.Path, f.pinDir); err == nil {
		t.Fatal("VerifyAttached passed before Install")
	}
	r := f.install(t)
	defer r.Close()

	// A child cgroup inherits the programs: they are effective there too.
	child := testenv.NewCgroupUnder(t, f.cg.Path).Path
	for _, cg := range []string{f.cg.Path, child} {
		st, err := QueryCgroup(cg, f.pinDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Missing) != 0 {
			t.Errorf("%s: missing %v", cg, st.Missing)
		}
		var ours []string
		for _, p := range st.Programs {
			if p.Ours {
				ours = append(ours, p.Hook)
				if p.Name == "" || p.ID == 0 {
					t.Errorf("%s: program without name or id: %+v", cg, p)
				}
			}
		}
		for _, h := range hooks {
			if !slices.Contains(ours, h.name) {
				t.Errorf("%s: %s not reported as ours: %+v", cg, h.name, st.Programs)
			}
		}
		if err := VerifyAttached(cg, f.pinDir); err != nil {
			t.Error(err)
		}
	}

	got, err := AttachedCgroup(f.pinDir)
	if err != nil {
		t.Fatal(err)
	}
	if got != f.cg.Path {
		t.Errorf("AttachedCgroup = %s, want %s", got, f.cg.Path)
	}

	// The cgroup's parent is not covered.
	root, _ := FindCgroup2()
	if err := VerifyAttached(root, f.pinDir); err == nil {
		t.Error("VerifyAttached passed on the parent cgroup")
	}

	if err := Uninstall(f.pinDir); err != nil {
		t.Fatal(err)
	}
	if err := VerifyAttached(f.cg.Path, f.pinDir); err == nil {
		t.Error("VerifyAttached passed after Uninstall")
	}
}

// TestInstallAfterCgroupRecreated covers attach-point churn: the cgroup is
// removed and created again at the same path (a new id), as systemd does with
// a slice. The next Install attaches to the new cgroup.
func TestInstallAfterCgroupRecreated(t *testing.T) {
	testenv.RequireRoot(t)
	cg := testenv.NewCgroup(t)
	pinDir := NewTestPinDir(t)
	cfg := Config{Cgroup: cg.Path, PinDir: pinDir, Proxy: netip.MustParseAddrPort("127.0.0.1:15443")}
	r, err := Install(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if err := os.Remove(cg.Path); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(cg.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := VerifyAttached(cg.Path, pinDir); err == nil {
		t.Fatal("programs effective on the recreated cgroup before reinstall")
	}
	r, err = Install(cfg)
	if err != nil {
		t.Fatalf("reinstall on the recreated cgroup: %v", err)
	}
	r.Close()
	if err := VerifyAttached(cg.Path, pinDir); err != nil {
		t.Error(err)
	}
}
