#!/usr/bin/env bash
# Many agents at once through `snowgate run` (BenchmarkLoad in cmd/snowgate-load):
# the daemon in a private network namespace with the emulator upstream,
# snowgate-load's workloads in child cgroups of the agents' cgroup, each with
# its own workload token and real gosnowflake sessions (small queries,
# multi-chunk SELECTs, INSERTs held for approval and approved, forced
# renewals), and the same load straight to the emulator in the same run as
# the baseline. Needs root.
#
# The size comes from the environment (defaults: a small run):
#   SNOWGATE_LOAD_WORKLOADS=40 SNOWGATE_LOAD_SESSIONS=25 SNOWGATE_LOAD_DURATION=5m \
#   SNOWGATE_LOAD_RAMP=60s SNOWGATE_LOAD_THINK=2s ./scripts/bench-load.sh
# (1,000 sessions for 5 minutes: the figure of RELIABILITY.md). Others:
# SNOWGATE_LOAD_DIRECT_DURATION, SNOWGATE_LOAD_MIX, SNOWGATE_LOAD_EXPIRE_EVERY,
# SNOWGATE_LOAD_SAMPLE_EVERY, SNOWGATE_LOAD_DRAIN (how long operations in
# flight when the duration ends may finish before they are reported as cut
# by the end of the run, not as errors; default 60s), and
# SNOWGATE_LOAD_RECORD_RESULTS (the daemon's
# recording.results: full, none or first_rows; default full). The full report
# goes to bench-out/load.json; with SNOWGATE_LOAD_GCTRACE=FILE the daemon runs
# with GODEBUG=gctrace=1 and its garbage collector's lines (live heap per
# collection) are appended to FILE; with SNOWGATE_LOAD_HEAPPROFILES=DIR the
# daemon's heap profile is saved to DIR every 2 minutes (heap-<min>m.pb.gz;
# compare two with `go tool pprof -base DIR/heap-02m.pb.gz DIR/heap-12m.pb.gz`).
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out
mkdir -p "$out"
if [ "$(id -u)" -ne 0 ]; then
	echo "bench-load: needs root (cgroups, eBPF, network namespaces)" >&2
	exit 1
fi
export SNOWGATE_LOAD_JSON="$PWD/$out/load.json"
go test ./cmd/snowgate-load -run '^$' -bench '^BenchmarkLoad$' -benchtime 1x -timeout 60m -v 2>&1 |
	grep -v -e 'level=' -e '^=== ' | tee "$out/load.txt"
