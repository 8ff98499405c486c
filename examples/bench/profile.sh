#!/usr/bin/env bash
# Where the time of durable-bench workloads goes, for the "what limits it" notes of
# BENCHMARKS.md. Per workload, three runs of the release binary:
#   1. plain: the JSON line (wall, engine counters);
#   2. under `perf trace -s -e fdatasync`: the calls and time each thread spent in
#      fdatasync; the writer thread's total against the wall is the disk's share;
#   3. under `perf record` (DWARF call graphs): CPU samples per thread, the hottest
#      functions (self time), and the runtime's and store's functions by inclusive share.
# CPU shares are of CPU samples, not of wall time: for a workload that waits on the disk
# most of the time, the fdatasync total of (2) is the figure that counts.
# Needs `perf` (Debian: linux-perf) and permission to use it (root, or
# kernel.perf_event_paranoid <= 1).
#
#   examples/bench/profile.sh seq10-throughput fanout-10000     # full scale, fsync
#   examples/bench/profile.sh --scale small all
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
scale=full
durability=fsync
workloads=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --scale) scale="$2"; shift 2 ;;
        --durability) durability="$2"; shift 2 ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) workloads+=("$1"); shift ;;
    esac
done
[[ ${#workloads[@]} -gt 0 ]] || { echo "profile.sh: name at least one workload (or all)" >&2; exit 64; }
command -v perf >/dev/null || { echo "profile.sh: perf is not installed" >&2; exit 64; }

(cd "$repo" && cargo build --release --example bench >&2)
bin="${CARGO_TARGET_DIR:-$repo/target}/release/examples/bench"
if [[ "${workloads[*]}" == all ]]; then
    workloads=(seq10-latency seq10-throughput fanout-1000 fanout-10000 long-history-5000
        timer-100ms event-roundtrip recovery-10000 idle-timers-100000 entity-counter
        entity-counter-1000 http-start)
fi
scratch="$(mktemp -d "${TMPDIR:-/tmp}/durable-profile.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

# The runtime's own functions and its store's, ranked by inclusive CPU share.
ours='\] <?(durable|fjall|lsm_tree|hyper|axum)'

for workload in "${workloads[@]}"; do
    run=("$bin" --workload "$workload" --scale "$scale" --durability "$durability"
        --dir "$scratch/data")
    echo "=== $workload ($scale, $durability)"
    "${run[@]}" 2>/dev/null | sed 's/^/line: /'

    # Only fdatasync is traced, so the run is barely slowed and its wall time holds.
    perf trace -s -e fdatasync -o "$scratch/trace.txt" -- "${run[@]}" \
        >"$scratch/traced.jsonl" 2>/dev/null || true
    wall="$(grep -o '"wall_s":[0-9.]*' "$scratch/traced.jsonl" | cut -d: -f2)"
    echo "--- fdatasync by thread, in a run under perf trace whose wall was ${wall:-?} s"
    echo "    (the main thread's 500 calls are the floor probe, before the workload)"
    awk -v wall="${wall:-0}" '
        /^ [^ ].* \([0-9]+\), [0-9]+ events/ { thread = $1 " " $2 }
        $1 == "fdatasync" {
            share = wall > 0 ? sprintf("%5.1f%% of the wall", $4 / 10 / wall) : ""
            printf "%-16s %6d calls %9.1f ms total %7.3f ms avg  %s\n", thread, $2, $4, $6, share
        }
    ' "$scratch/trace.txt"

    perf record -q -F 999 --call-graph dwarf,16384 -o "$scratch/perf.data" -- "${run[@]}" \
        >/dev/null 2>&1 || true
    echo "--- CPU samples by thread"
    perf report -i "$scratch/perf.data" --no-children --sort comm --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -8 || true
    echo "--- hottest functions (self)"
    perf report -i "$scratch/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | head -15 || true
    echo "--- durable, fjall, lsm_tree, hyper, axum functions (inclusive share of CPU samples)"
    perf report -i "$scratch/perf.data" --children --sort sym --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | grep -v '(inlined)' | grep -E "$ours" | head -25 || true
    rm -f "$scratch/perf.data" "$scratch/trace.txt"
    rm -rf "$scratch/data"
done
