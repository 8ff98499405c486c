#!/usr/bin/env bash
# Where the time of durable-bench workloads goes, for the "what limits it" notes of
# BENCHMARKS.md. Per workload, three runs of the release binary:
#   1. plain: the JSON line (wall, engine counters);
#   2. under `perf trace -s`: time each thread spent in syscalls; the writer thread's
#      fdatasync total is the disk's share of the wall time;
#   3. under `perf record` (DWARF call graphs): CPU samples per thread, the hottest
#      functions (self time), and the inclusive share of the engine's main stages.
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

# Stages of a step, as functions whose inclusive time is reported (a regex each).
stages=(
    'durable::runtime::writer::commit$'
    'durable_store::fjall_store::.*::write$'
    'fjall::.*batch.*commit'
    'durable::runtime::shard::'
    'durable::core::engine::Engine::run_turn'
    'durable::core::engine::Engine::replay'
    'durable::runtime::activities::'
    'durable::http::'
    'hyper::'
    'postcard::'
    'serde_json::'
)

for workload in "${workloads[@]}"; do
    run=("$bin" --workload "$workload" --scale "$scale" --durability "$durability"
        --dir "$scratch/data")
    echo "=== $workload ($scale, $durability)"
    "${run[@]}" 2>/dev/null | sed 's/^/line: /'

    perf trace -s -o "$scratch/trace.txt" -- "${run[@]}" >/dev/null 2>&1 || true
    echo "--- fdatasync by thread (perf trace; the main thread's include the floor probe)"
    awk '
        /^ [^ ].* \([0-9]+\), [0-9]+ events/ { thread = $1 }
        $1 == "fdatasync" { printf "%-22s %6d calls %10.1f ms total %8.3f ms avg\n", thread, $2, $4, $6 }
    ' "$scratch/trace.txt"

    perf record -q -F 1999 --call-graph dwarf,32768 -o "$scratch/perf.data" -- "${run[@]}" \
        >/dev/null 2>&1 || true
    echo "--- CPU samples by thread"
    perf report -i "$scratch/perf.data" --no-children --sort comm --stdio 2>/dev/null \
        | grep -E '^ +[0-9]' | head -8
    echo "--- hottest functions (self)"
    perf report -i "$scratch/perf.data" --no-children --sort sym --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' | head -15
    echo "--- stages (inclusive share of all samples)"
    perf report -i "$scratch/perf.data" --children --sort sym --stdio -g none 2>/dev/null \
        | grep -E '^ +[0-9]' >"$scratch/children.txt" || true
    for stage in "${stages[@]}"; do
        grep -E "$stage" "$scratch/children.txt" | head -1 || true
    done
    rm -f "$scratch/perf.data" "$scratch/trace.txt"
    rm -rf "$scratch/data"
done
