package config

// Admin is the operator's HTTP listener: /metrics, /healthz, approvals API.
type Admin struct {
	// Listen is host:port; default 127.0.0.1:9464.
	Listen string `yaml:"listen"`
	// Profiling serves Go's runtime profiles (heap, goroutines, CPU; the
	// net/http/pprof handlers) under /debug/pprof/ on the admin listener,
	// for diagnosing memory or CPU use in the field. Off by default: a CPU
	// profile or trace costs the gateway while it runs, and the admin
	// listener has no authentication of its own.
	Profiling bool `yaml:"profiling"`
}

func (v *validator) admin(a *Admin) {
	if a.Listen == "" {
		a.Listen = "127.0.0.1:9464"
	}
	v.hostPort("admin.listen", a.Listen)
}
