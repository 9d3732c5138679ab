#!/usr/bin/env bash
# Runs every fuzz target in the module for a fixed budget each (FUZZTIME, default 30s).
# A crash leaves its input under the package's testdata/fuzz/ folder: commit it,
# and it becomes a regression test that `go test` runs on every build.
set -euo pipefail
cd "$(dirname "$0")/.."
budget=${FUZZTIME:-30s}
status=0
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	targets=$(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u || true)
	for t in $targets; do
		echo "== $pkg $t ($budget)"
		if ! go test "$pkg" -run '^$' -fuzz "^${t}\$" -fuzztime "$budget" -fuzzminimizetime 5s; then
			status=1
		fi
	done
done
exit $status
