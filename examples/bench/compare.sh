#!/usr/bin/env bash
# Runs duroxide-bench (the peer, duroxide on a SQLite file) and durable-bench one after
# the other on the same workloads at the same scale, keeps the raw JSON lines of both and
# writes a side-by-side Markdown table (made by the bench binary itself, `--table`, so
# nothing beyond the Rust toolchain and a base Debian system is needed: no python).
#
#   examples/bench/compare.sh                         # everything, full scale (~10-15 min)
#   examples/bench/compare.sh --durability fsync      # only the default mode (what is compared)
#   examples/bench/compare.sh --scale small           # about a minute once built
#   examples/bench/compare.sh --workload seq10-latency,fanout-1000
#   examples/bench/compare.sh --peer-json results/2026-11-24-full/duroxide.jsonl
#   examples/bench/compare.sh --no-peer --durability both
#
# Results go to examples/bench/results/<UTC date>-<scale>/ (or --out DIR):
#   duroxide.jsonl, durable.jsonl  the JSON lines as printed
#   comparison.md                  the table, also printed on stdout
#   *.log                          each harness's stderr (not committed)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

usage() {
    cat <<'EOF'
compare.sh: durable-bench side by side with duroxide-bench

OPTIONS:
    --scale small|full     both harnesses' scale (default: full)
    --workload LIST        comma-separated workloads, or all (default: all); the peer runs
                           the ones it has (the first seven of durable-bench's list)
    --durability MODE      durable's mode: fsync, buffered or both (default: both; the
                           buffered figures are an extra column)
    --peer-json FILE       do not build or run the peer: reuse its saved JSON lines
    --no-peer              do not build or run the peer; table of our figures only
    --peer-dir PATH        the duroxide-bench project (default: $DUROXIDE_BENCH_DIR, else
                           ../shared/peers/duroxide-bench beside the repository)
    --peer-target-dir PATH where the peer is built (default: $DUROXIDE_BENCH_TARGET_DIR,
                           else target/duroxide-bench beside ours)
    --peer-timeout-s N     the peer's per-workload limit (default: 300; its fanout-10000
                           takes about that long and may be reported as a timeout)
    --timeout-s N          durable-bench's per-workload limit (default: 300)
    --count N              override the instance/activity count in both (experiments)
    --out DIR              results directory (default: examples/bench/results/DATE-SCALE)
    -h, --help             this text
EOF
}

scale=full
workloads=all
durability=both
peer_json=""
no_peer=0
peer_dir="${DUROXIDE_BENCH_DIR:-$repo/../shared/peers/duroxide-bench}"
peer_target="${DUROXIDE_BENCH_TARGET_DIR:-}"
peer_timeout=300
our_timeout=300
count=""
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --scale) scale="$2"; shift 2 ;;
        --workload|-w) workloads="$2"; shift 2 ;;
        --durability) durability="$2"; shift 2 ;;
        --peer-json) peer_json="$2"; shift 2 ;;
        --no-peer) no_peer=1; shift ;;
        --peer-dir) peer_dir="$2"; shift 2 ;;
        --peer-target-dir) peer_target="$2"; shift 2 ;;
        --peer-timeout-s) peer_timeout="$2"; shift 2 ;;
        --timeout-s) our_timeout="$2"; shift 2 ;;
        --count) count="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown argument '$1'" >&2; usage >&2; exit 64 ;;
    esac
done
case "$scale" in small|full) ;; *) echo "compare.sh: --scale must be small or full" >&2; exit 64 ;; esac
case "$durability" in fsync|buffered|both) ;; *) echo "compare.sh: bad --durability" >&2; exit 64 ;; esac
if [[ -n "$peer_json" ]]; then
    [[ -r "$peer_json" ]] || { echo "compare.sh: cannot read $peer_json" >&2; exit 64; }
    peer_json="$(cd "$(dirname "$peer_json")" && pwd)/$(basename "$peer_json")"
fi

log() { echo "[compare] $*" >&2; }

# The peer's workloads; durable-bench has these and more (`all` is its own list).
peer_workloads=(seq10-latency seq10-throughput fanout-1000 fanout-10000 long-history-5000
    timer-100ms event-roundtrip)
if [[ "$workloads" == all ]]; then
    ours_csv=all
    peer_list=("${peer_workloads[@]}")
else
    IFS=, read -r -a ours_list <<<"$workloads"
    ours_csv="$(IFS=,; echo "${ours_list[*]}")"
    peer_list=()
    for w in "${ours_list[@]}"; do
        for p in "${peer_workloads[@]}"; do
            [[ "$w" == "$p" ]] && peer_list+=("$w")
        done
    done
fi
peer_csv="$(IFS=,; echo "${peer_list[*]:-}")"

out="${out:-$here/results/$(date -u +%Y-%m-%d)-$scale}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
scratch="$(mktemp -d "${TMPDIR:-/tmp}/durable-compare.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
count_args=()
[[ -n "$count" ]] && count_args=(--count "$count")

# Build both first, so that neither run shares the machine with a compiler.
log "building durable-bench"
(cd "$repo" && cargo build --release --example bench)
ours_bin="$target/release/examples/bench"

run_peer=0
if [[ -z "$peer_json" && $no_peer -eq 0 && -n "$peer_csv" ]]; then
    run_peer=1
    [[ -f "$peer_dir/Cargo.toml" ]] || {
        echo "compare.sh: no duroxide-bench at $peer_dir (use --peer-dir, --peer-json or --no-peer)" >&2
        exit 64
    }
    # Its own project (own [workspace], own Cargo.lock); the target directory is put
    # beside ours so that a read-only checkout of the peer still builds.
    log "building duroxide-bench in $peer_dir (a clean build takes about 4 minutes on 2 cores)"
    peer_target="${peer_target:-$target/duroxide-bench}"
    (cd "$peer_dir" && cargo build --release --target-dir "$peer_target")
    peer_bin="$peer_target/release/duroxide-bench"
fi

# Exit status of both harnesses: 0 all passed, 1 some failed, 2 some hit the time limit.
# Failures and timeouts are recorded in the JSON lines and shown in the table.
run_harness() {
    local name="$1"; shift
    local status=0
    "$@" >"$out/$name.jsonl" 2>"$out/$name.log" || status=$?
    case "$status" in
        0) log "$name: all workloads passed" ;;
        1) log "$name: some workloads FAILED (see $out/$name.jsonl and .log)" ;;
        2) log "$name: some workloads hit the time limit (recorded as timeouts)" ;;
        *) log "$name: exited with status $status; see $out/$name.log"; exit 1 ;;
    esac
}

peer_file=""
if [[ $run_peer -eq 1 ]]; then
    log "running duroxide-bench: $peer_csv (scale $scale, limit ${peer_timeout}s per workload)"
    started=$SECONDS
    run_harness duroxide "$peer_bin" --workload "$peer_csv" --scale "$scale" \
        --timeout-s "$peer_timeout" --dir "$scratch/duroxide" "${count_args[@]}"
    log "duroxide-bench took $((SECONDS - started)) s"
    peer_file="$out/duroxide.jsonl"
elif [[ -n "$peer_json" ]]; then
    if [[ "$peer_json" != "$out/duroxide.jsonl" ]]; then
        cp "$peer_json" "$out/duroxide.jsonl"
    fi
    log "reusing the peer's lines from $peer_json"
    peer_file="$out/duroxide.jsonl"
fi

log "running durable-bench: $ours_csv (scale $scale, durability $durability)"
started=$SECONDS
# One process per workload, so that each line's peak RSS is its own workload's (the
# allocator keeps what an earlier workload used).
if [[ "$ours_csv" == all ]]; then
    mapfile -t ours_each < <("$ours_bin" --list)
else
    IFS=, read -r -a ours_each <<<"$ours_csv"
fi
: >"$out/durable.jsonl"
: >"$out/durable.log"
ours_status=0
for w in "${ours_each[@]}"; do
    status=0
    "$ours_bin" --workload "$w" --scale "$scale" --durability "$durability" \
        --timeout-s "$our_timeout" --dir "$scratch/durable" "${count_args[@]}" \
        >>"$out/durable.jsonl" 2>>"$out/durable.log" || status=$?
    case "$status" in
        0) ;;
        1 | 2) ours_status=$((ours_status > status ? ours_status : status)) ;;
        *) log "durable: $w exited with status $status; see $out/durable.log"; exit 1 ;;
    esac
done
case "$ours_status" in
    0) log "durable: all workloads passed" ;;
    1) log "durable: some workloads FAILED (see $out/durable.jsonl and .log)" ;;
    2) log "durable: some workloads hit the time limit (recorded as timeouts)" ;;
esac
log "durable-bench took $((SECONDS - started)) s"

commit="$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)"
# (The results this run is writing do not count as changes to what was measured.)
if [[ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null |
    grep -v ' examples/bench/results/' || true)" ]]; then
    commit="$commit (with uncommitted changes)"
fi
cpu="$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)"
table_args=("${peer_file:--}" "$out/durable.jsonl" --workload "$ours_csv"
    --peer-timeout-s "$peer_timeout")
{
    echo "# durable-bench vs duroxide-bench, scale $scale"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- durable commit: $commit"
    echo "- machine: $(nproc) cores, ${cpu:-unknown CPU}, $(rustc --version 2>/dev/null || echo rustc ?)"
    if [[ $run_peer -eq 1 ]]; then
        echo "- peer: duroxide-bench from $peer_dir, run first, --timeout-s $peer_timeout"
    elif [[ -n "$peer_json" ]]; then
        echo "- peer: saved lines reused from $peer_json (timeouts read as --timeout-s $peer_timeout)"
    else
        echo "- peer: not run"
    fi
    echo "- durable: --durability $durability${count:+, --count $count}"
    echo
    "$ours_bin" --table "${table_args[@]}"
} >"$out/comparison.md"
cat "$out/comparison.md"
log "results in $out"
