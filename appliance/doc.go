// Package appliance holds the files that turn snowgate into an installed
// service on a CI runner: install.sh and uninstall.sh, the default
// configuration (snowgate.yaml, every key documented), the package
// definition (nfpm.yaml and the maintainer scripts in deb/) and the Grafana
// dashboard. It has no Go code of its own: its tests run the scripts
// against a scratch root and a scratch cgroup tree, and verify the units.
package appliance
