package config

// Admin is the operator's HTTP listener: /metrics, /healthz, approvals API.
type Admin struct {
	// Listen is host:port; default 127.0.0.1:9464.
	Listen string `yaml:"listen"`
}

func (v *validator) admin(a *Admin) {
	if a.Listen == "" {
		a.Listen = "127.0.0.1:9464"
	}
	v.hostPort("admin.listen", a.Listen)
}
