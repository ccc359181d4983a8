#!/usr/bin/env bash
# Runs the edge load test (scripts/loadtest): NATS, the mock upstream and an
# edge on loopback, open-loop steps at fixed rates against the mock directly
# and through the edge, then a closed-loop search for the edge's maximum
# throughput. Flags are passed on (see `go run ./scripts/loadtest -h`), e.g.
#
#   scripts/load.sh                                   # defaults, a few minutes
#   scripts/load.sh -rates 2000 -duration 20s -stream=false
#
# The markdown report goes to stdout and to $LOADTEST_OUT (default: a file in
# ${TMPDIR:-/tmp}); progress goes to stderr.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${LOADTEST_OUT:-${TMPDIR:-/tmp}/tollgate-loadtest-$(date +%Y%m%d-%H%M%S).md}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
go build -o "$dir/loadtest" ./scripts/loadtest
"$dir/loadtest" "$@" | tee "$out"
echo "report written to $out" >&2
