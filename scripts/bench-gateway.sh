#!/usr/bin/env bash
# The gateway data path against the same gosnowflake client talking to the
# emulator directly, and against nginx as a plain TLS-terminating reverse
# proxy, all in one run (BenchmarkGatewayPath in internal/gateway). Needs root
# (eBPF redirect, cgroups, network namespaces).
#
# nginx: the one on PATH, or $SNOWGATE_BENCH_NGINX, else Debian's nginx package
# unpacked (not installed, no service started) under bench-out/nginx.
#
#   COUNT=3 ./scripts/bench-gateway.sh
set -euo pipefail
cd "$(dirname "$0")/.."
count=${COUNT:-3}
out=bench-out
mkdir -p "$out"

nginx=${SNOWGATE_BENCH_NGINX:-$(command -v nginx || true)}
if [ -z "$nginx" ]; then
	dir="$out/nginx"
	if [ ! -x "$dir/root/usr/sbin/nginx" ]; then
		mkdir -p "$dir"
		(cd "$dir" && apt-get download nginx >/dev/null && dpkg -x nginx_*.deb root) ||
			echo "nginx unavailable (apt-get download nginx failed): the nginx baseline is skipped" >&2
	fi
	if [ -x "$dir/root/usr/sbin/nginx" ]; then
		nginx=$(cd "$dir/root/usr/sbin" && pwd)/nginx
	fi
fi
export SNOWGATE_BENCH_NGINX="$nginx"

go test ./internal/gateway -run '^$' -bench '^BenchmarkGatewayPath$' -benchtime 1x -count "$count" -timeout 30m -v 2>&1 |
	grep -v -e 'level=' -e '^=== ' | tee "$out/gateway-raw.txt" |
	grep -E '^(Benchmark|goos|goarch|cpu|PASS|FAIL|ok)|bench_test.go'
