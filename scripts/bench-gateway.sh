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

echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
go test ./internal/gateway -run '^$' -bench '^BenchmarkGatewayPath$' -benchtime 1x -count "$count" -timeout 30m -v 2>&1 |
	grep -v -e 'level=' -e '^=== ' | tee "$out/gateway-raw.txt" |
	grep -E '^(Benchmark|goos|goarch|cpu|PASS|FAIL|ok)|bench_test.go'
echo "load average at end: $(cut -d' ' -f1-3 /proc/loadavg)"

# The median over the runs of the figures the issue sets targets for.
awk '/^BenchmarkGatewayPath/ {
	for (i = 3; i < NF; i += 2) v[$(i + 1)] = v[$(i + 1)] " " $i
}
END {
	n = split("overhead-p50-µs overhead-p50-paired-µs nginx-overhead-p50-µs gateway-p99-µs direct-p99-µs throughput-ratio nginx-throughput-ratio peak-rss-1M-MB nginx-peak-rss-MB", keys, " ")
	for (k = 1; k <= n; k++) {
		key = keys[k]
		if (!(key in v)) continue
		m = split(substr(v[key], 2), xs, " ")
		for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (xs[j] + 0 < xs[i] + 0) { t = xs[i]; xs[i] = xs[j]; xs[j] = t }
		printf "median of %d runs: %s %s (runs:%s)\n", m, key, xs[int((m + 1) / 2)], v[key]
	}
}' "$out/gateway-raw.txt"
