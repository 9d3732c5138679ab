#!/usr/bin/env bash
# make bench: every benchmark of the project, each reported against a baseline
# measured in the same run. Results are printed and kept under bench-out/;
# the figures that matter are copied by hand into BENCHMARKS.md with this command.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bench-out
mkdir -p "$out"

echo "== emulator: rows/s for a 1,000,000-row SELECT (JSON and Arrow), the baseline of later gateway figures"
go test ./internal/emulator -run '^$' -bench 'BenchmarkSelectMillionRows' -benchtime 1x -count 3 -timeout 30m | tee "$out/emulator.txt"

echo "== emulator: peak resident memory while serving 1,000,000 rows (target < 300 MB)"
go test ./cmd/snowgate-emulator -run '^$' -bench BenchmarkEmulatorMemoryMillionRows -benchtime 1x -timeout 30m | tee "$out/emulator-memory.txt"

echo "== emulator: result generation and encoding alone"
go test ./internal/emulator/resultset -run '^$' -bench . -benchtime 1x -count 3 -timeout 30m | tee "$out/resultset.txt"

echo "== recording: bytes stored per byte of result, throughput against JSON encoding alone"
go test ./internal/recording -run '^$' -bench . -benchtime 2s -timeout 30m | tee "$out/recording.txt"

echo "== policy: statement classification against a strings.Count baseline"
go test ./internal/policy -run '^$' -bench BenchmarkClassify -benchtime 200x | tee "$out/policy.txt"

if [ "$(id -u)" -eq 0 ]; then
	echo "== eBPF redirect: connect cost against no program and nftables REDIRECT"
	./scripts/bench-redirect.sh | tee "$out/redirect.txt"
	echo "== gateway: query latency, 1M-row throughput and RSS against direct and nginx"
	./scripts/bench-gateway.sh | tee "$out/gateway.txt"
	echo "== recording: the gateway with the session recorder against the same gateway with recording off"
	go test ./internal/gateway -run '^$' -bench BenchmarkRecordingOverhead -benchtime 1x -count 3 -timeout 30m | tee "$out/recording-overhead.txt"
	echo "== load: many agents through snowgate run against direct (size: see scripts/bench-load.sh)"
	./scripts/bench-load.sh | tee "$out/load-summary.txt"
else
	echo "== eBPF redirect: skipped (needs root: sudo make bench)"
fi
