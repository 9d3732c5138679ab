#!/usr/bin/env bash
# eBPF redirect benchmark: the cost of one connect through the redirect, next to
# the same connect with no program attached and through an nftables REDIRECT
# rule, all measured in one run (BenchmarkConnect in internal/redirect), plus
# the run time of each eBPF program from the kernel's BPF statistics.
#
# The kernel's statistics (what kernel.bpf_stats_enabled=1 switches on) are
# enabled by the benchmark itself through BPF_ENABLE_STATS, only for its
# "ebpf-progstats" run, and go off again when it ends.
#
# Needs root (cgroups, eBPF, network namespaces). Tunables:
#   COUNT=7 BENCHTIME=1s ./scripts/bench-redirect.sh
# Prints the raw benchmark lines, then medians over COUNT runs and ratios, then
# the cost of the gateway's per-connection Lookup.
#
# A/B against an earlier version of the programs, on a shared machine whose
# load drifts between whole runs:
#   REF=HEAD COUNT=5 ./scripts/bench-redirect.sh
# builds the package's test binary from the git ref (git archive, nothing in
# the checkout changes) and from the working tree, alternates their paired and
# progstats runs COUNT times, and prints the medians of each side.
# REF_TEST=<binary> instead of REF compares against a test binary built
# earlier (go test -c ./internal/redirect), e.g. of an uncommitted variant.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench-redirect: needs root (eBPF, cgroups, network namespaces)" >&2
	exit 1
fi
count=${COUNT:-7}
benchtime=${BENCHTIME:-1s}
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT

if [ -n "${REF:-}" ] || [ -n "${REF_TEST:-}" ]; then
	tmp=$(mktemp -d)
	trap 'rm -f "$raw"; rm -rf "$tmp"' EXIT
	if [ -n "${REF_TEST:-}" ]; then
		# A test binary built earlier (go test -c ./internal/redirect),
		# e.g. from an uncommitted variant of the programs.
		cp "$REF_TEST" "$tmp/ref.test"
		REF=$REF_TEST
	else
		mkdir "$tmp/ref"
		git archive "$REF" | tar -x -C "$tmp/ref"
		(cd "$tmp/ref" && go test -c -o "$tmp/ref.test" ./internal/redirect)
	fi
	go test -c -o "$tmp/new.test" ./internal/redirect
	echo "# A/B: $REF (ref) against the working tree (new), alternated $count times"
	echo "# <binary> -test.run '^\$' -test.bench 'BenchmarkConnect/(ebpf-progstats|paired)\$' -test.benchtime $benchtime"
	echo "# $(uname -sr), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
	for _ in $(seq "$count"); do
		for side in ref new; do
			(cd internal/redirect && "$tmp/$side.test" -test.run '^$' -test.bench 'BenchmarkConnect/(ebpf-progstats|paired)$' -test.benchtime "$benchtime") |
				grep -E '^Benchmark' | sed "s/^/$side /" | tee -a "$raw"
		done
	done
	echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
	awk '
function median(key,   n, i, j, t, a) {
	n = cnt[key]
	for (i = 1; i <= n; i++) a[i] = val[key, i]
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	if (n % 2) return a[(n + 1) / 2]
	return (a[n / 2] + a[n / 2 + 1]) / 2
}
function lo(key,   i, m) { m = val[key, 1]; for (i = 2; i <= cnt[key]; i++) if (val[key, i] < m) m = val[key, i]; return m }
function hi(key,   i, m) { m = val[key, 1]; for (i = 2; i <= cnt[key]; i++) if (val[key, i] > m) m = val[key, i]; return m }
function add(side, metric, v,   key) {
	key = side " " metric
	cnt[key]++; val[key, cnt[key]] = v
	if (!(metric in seen)) { seen[metric] = 1; order[++nkeys] = metric }
}
{
	side = $1
	delete m
	for (i = 4; i < NF; i += 2) m[$(i + 1)] = $i
	if ("none-ns/connect" in m) {
		add(side, "kernel side ns/connect (ebpf-no-lookup - none)", m["ebpf-no-lookup-ns/connect"] - m["none-ns/connect"])
		add(side, "with Lookup ns/connect (ebpf - none)", m["ebpf-ns/connect"] - m["none-ns/connect"])
		add(side, "ebpf-no-lookup/none", m["ebpf-no-lookup/none"])
		add(side, "ebpf/nftables", m["ebpf/nftables"])
	}
	for (k in m) if (k ~ /-ns\/run$/ || k ~ /-runs\/op$/) add(side, k, m[k])
}
END {
	for (i = 2; i <= nkeys; i++) { t = order[i]; for (j = i - 1; j >= 1 && order[j] > t; j--) order[j + 1] = order[j]; order[j + 1] = t }
	print ""
	print "## A/B medians over " count " alternations [min - max]"
	printf "%-48s %24s %24s\n", "", "ref", "new"
	for (k = 1; k <= nkeys; k++) {
		r = "ref " order[k]; n = "new " order[k]
		printf "%-48s %9.2f [%6.2f-%6.2f] %9.2f [%6.2f-%6.2f]\n", order[k], median(r), lo(r), hi(r), median(n), lo(n), hi(n)
	}
}' count="$count" "$raw"
	exit 0
fi

echo "# go test ./internal/redirect -run '^\$' -bench '^BenchmarkConnect\$' -benchtime $benchtime -count $count"
echo "# $(uname -sr), $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
go test ./internal/redirect -run '^$' -bench '^BenchmarkConnect$' -benchtime "$benchtime" -count "$count" -timeout 30m | tee "$raw"

# Medians: ns/op per variant, and <program>-ns/run, <program>-runs/op metrics.
awk '
function median(key,   n, i, j, t, a) {
	n = cnt[key]
	for (i = 1; i <= n; i++) a[i] = val[key, i]
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	if (n % 2) return a[(n + 1) / 2]
	return (a[n / 2] + a[n / 2 + 1]) / 2
}
function lo(key,   i, m) { m = val[key, 1]; for (i = 2; i <= cnt[key]; i++) if (val[key, i] < m) m = val[key, i]; return m }
function hi(key,   i, m) { m = val[key, 1]; for (i = 2; i <= cnt[key]; i++) if (val[key, i] > m) m = val[key, i]; return m }
function add(key, v) { cnt[key]++; val[key, cnt[key]] = v; if (!(key in seen)) { seen[key] = 1; order[++nkeys] = key } }
/^BenchmarkConnect\/[^ ]+ / {
	name = $1; sub(/^BenchmarkConnect\//, "", name); sub(/-[0-9]+$/, "", name)
	for (i = 3; i < NF; i += 2) {
		unit = $(i + 1)
		if (unit == "ns/op") add(name " ns/op", $i)
		else add(name " " unit, $i)
	}
}
END {
	print ""
	print "## medians over " cnt["none ns/op"] " runs [min - max]"
	for (k = 1; k <= nkeys; k++) printf "%-40s %10.1f  [%.1f - %.1f]\n", order[k], median(order[k]), lo(order[k]), hi(order[k])
	base = median("none ns/op")
	if (base <= 0) exit
	print ""
	print "## separate runs: connect cost against the baseline (no program), medians"
	split("ebpf ebpf-no-lookup ebpf-no-rewrite nftables", vs, " ")
	for (i = 1; i <= 4; i++) {
		key = vs[i] " ns/op"
		if (!(key in cnt)) continue
		m = median(key)
		printf "%-16s %8.2f µs/connect  ratio %.3f  added %+.2f µs\n", vs[i], m / 1000, m / base, (m - base) / 1000
	}
	if (("ebpf ns/op" in cnt) && ("nftables ns/op" in cnt))
		printf "ebpf/nftables ratio %.3f\n", median("ebpf ns/op") / median("nftables ns/op")
	if ("paired none-ns/connect" in cnt) {
		print ""
		print "## paired (variants interleaved, one connect of each per iteration): medians of the per-run medians"
		split("none ebpf ebpf-no-lookup ebpf-no-rewrite nftables", vs, " ")
		for (i = 1; i <= 5; i++) {
			key = "paired " vs[i] "-ns/connect"
			if (!(key in cnt)) continue
			line = sprintf("%-16s %8.2f µs/connect", vs[i], median(key) / 1000)
			if (vs[i] != "none") line = line sprintf("  ratio %.3f [%.3f - %.3f]", median("paired " vs[i] "/none"), lo("paired " vs[i] "/none"), hi("paired " vs[i] "/none"))
			print line
		}
		if ("paired ebpf/nftables" in cnt)
			printf "ebpf/nftables ratio %.3f [%.3f - %.3f]\n", median("paired ebpf/nftables"), lo("paired ebpf/nftables"), hi("paired ebpf/nftables")
	}
	print ""
	print "## eBPF program run time (kernel BPF stats), medians"
	for (k = 1; k <= nkeys; k++) {
		key = order[k]
		if (key ~ /-ns\/run$/) {
			prog = key; sub(/^ebpf-progstats /, "", prog); sub(/-ns\/run$/, "", prog)
			printf "%-14s %8.1f ns/run  %5.2f runs/connect\n", prog, median(key), median("ebpf-progstats " prog "-runs/op")
		}
	}
}' "$raw"

echo
echo "# go test ./internal/redirect -run '^\$' -bench '^BenchmarkLookup\$' -count 3"
go test ./internal/redirect -run '^$' -bench '^BenchmarkLookup$' -count 3 -timeout 10m | grep -E '^Benchmark'
