#!/usr/bin/env bash
# durable on PostgreSQL with 1, 2 and 4 worker processes, and the peer (duroxide on
# duroxide-pg) on the same server: a throwaway PostgreSQL cluster on this machine (initdb in
# a temporary directory, run as the `postgres` user when root, a Unix socket only, fsync
# and synchronous_commit on), a database for each harness, each configuration run
# --rounds times, then the table (`bench --workers-table`).
#
#   examples/bench/postgres-workers.sh                       # 2 rounds, full scale
#   examples/bench/postgres-workers.sh --rounds 3 --workers "1 2"
#   examples/bench/postgres-workers.sh --no-peer --pg-sample-ms 5
#
# Results go to examples/bench/results/<UTC date>-postgres-workers/ (or --out DIR):
#   durable.jsonl, duroxide.jsonl   the JSON lines as printed
#   machine.txt                     the machine, the server and its settings
#   table.md                        the table, also printed on stdout
#   *.log                           each harness's stderr and the server's log (not committed)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

usage() {
    cat <<'EOF'
postgres-workers.sh: durable-bench on PostgreSQL with several worker processes, and the peer

OPTIONS:
    --rounds N             runs of each configuration (default: 2)
    --workers LIST         worker counts, quoted and space-separated (default: "1 2 4")
    --workload LIST        ours (default: seq10-throughput,fanout-1000,seq10-latency,
                           cross-partition-hop)
    --peer-workload LIST   the peer's (default: seq10-throughput,fanout-1000,seq10-latency)
    --scale small|full     both harnesses (default: full)
    --client MODE          worker (default) or database: passed to durable-bench --client
    --pg-sample-ms N       passed to durable-bench (sampling perturbs: off by default)
    --peer-bin PATH        the peer's built binary (default: $DUROXIDE_BENCH_BIN, else
                           target/duroxide-bench/release/duroxide-bench of this checkout)
    --no-peer              do not run the peer
    --nice N               run the server and both harnesses at this niceness (say -15, as
                           root) on a machine that other work shares; noted in machine.txt
    --out DIR              results directory
    -h, --help             this text
EOF
}

rounds=2
workers="1 2 4"
workloads="seq10-throughput,fanout-1000,seq10-latency,cross-partition-hop"
peer_workloads="seq10-throughput,fanout-1000,seq10-latency"
scale=full
client=worker
sample=""
peer_bin="${DUROXIDE_BENCH_BIN:-$repo/target/duroxide-bench/release/duroxide-bench}"
no_peer=0
nice_level=""
out=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --rounds) rounds="$2"; shift 2 ;;
        --workers) workers="$2"; shift 2 ;;
        --workload|-w) workloads="$2"; shift 2 ;;
        --peer-workload) peer_workloads="$2"; shift 2 ;;
        --scale) scale="$2"; shift 2 ;;
        --client) client="$2"; shift 2 ;;
        --pg-sample-ms) sample="$2"; shift 2 ;;
        --peer-bin) peer_bin="$2"; shift 2 ;;
        --no-peer) no_peer=1; shift ;;
        --nice) nice_level="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "postgres-workers.sh: unknown argument '$1'" >&2; usage >&2; exit 64 ;;
    esac
done
if [[ $no_peer -eq 0 && ! -x "$peer_bin" ]]; then
    echo "postgres-workers.sh: no peer binary at $peer_bin (build it: cd shared/peers/duroxide-bench && CARGO_TARGET_DIR=$repo/target/duroxide-bench cargo build --release), or --no-peer" >&2
    exit 64
fi
out="${out:-$here/results/$(date -u +%Y-%m-%d)-postgres-workers}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

echo "building durable-bench (release)..." >&2
(cd "$repo" && CARGO_INCREMENTAL=0 cargo build --release --example bench >&2)
bench="$repo/target/release/examples/bench"

# The throwaway cluster.
bin="$(pg_config --bindir 2>/dev/null || true)"
if [[ ! -x "$bin/initdb" ]]; then
    bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
fi
[[ -x "$bin/initdb" ]] || { echo "postgres-workers.sh: no initdb (apt-get install -y postgresql)" >&2; exit 69; }
pgdir="$(mktemp -d /tmp/durable-bench-pg.XXXXXX)"
niced=()
[[ -n "$nice_level" ]] && niced=(nice -n "$nice_level")
as_pg=()
if [[ "$(id -u)" == 0 ]]; then
    chown postgres: "$pgdir"
    as_pg=(runuser -u postgres --)
fi
stop_cluster() {
    "${as_pg[@]}" "$bin/pg_ctl" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
    cp "$pgdir/log" "$out/postgres.log" 2>/dev/null || true
    rm -rf "$pgdir"
}
trap stop_cluster EXIT
"${as_pg[@]}" "$bin/initdb" -D "$pgdir/data" -A trust -U postgres --no-sync -E UTF8 >/dev/null
"${niced[@]}" "${as_pg[@]}" "$bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/log" -w start \
    -o "-k $pgdir -p 5432 -c listen_addresses='' -c max_connections=200 -c track_wal_io_timing=on" >/dev/null
psql=("${as_pg[@]}" "$bin/psql" -h "$pgdir" -p 5432 -U postgres -X -q -t -A)
"${psql[@]}" -d postgres -c "CREATE DATABASE bench" -c "CREATE DATABASE peer"
ours_url="host=$pgdir port=5432 user=postgres dbname=bench"
peer_url="postgres:///peer?host=$pgdir&port=5432&user=postgres"

{
    echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "commit: $(git -C "$repo" rev-parse --short HEAD)$(git -C "$repo" diff --quiet HEAD -- || echo ' (with local changes)')"
    echo "cpus: $(nproc), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
    echo "memory: $(free -g | awk '/Mem:/ {print $2}') GiB"
    echo "kernel: $(uname -r); $(rustc --version)"
    echo "server: $("${psql[@]}" -d postgres -c 'SELECT version()')"
    "${psql[@]}" -d postgres -c "SELECT name || ' = ' || setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'wal_sync_method', 'shared_buffers', 'max_connections', 'commit_delay', 'full_page_writes', 'wal_level')"
    echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "rounds: $rounds; workers: $workers; client: $client; scale: $scale; niceness: ${nice_level:-0} (server and harnesses)"
} > "$out/machine.txt"
cat "$out/machine.txt" >&2

extra=(--client "$client")
[[ -n "$sample" ]] && extra+=(--pg-sample-ms "$sample")
for round in $(seq 1 "$rounds"); do
    for n in $workers; do
        echo "round $round: durable, $n worker(s)" >&2
        echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (round $round, durable, $n workers)" >> "$out/machine.txt"
        "${niced[@]}" "$bench" --store postgres --postgres "$ours_url" --workers "$n" "${extra[@]}" \
            --workload "$workloads" --scale "$scale" >> "$out/durable.jsonl" 2>> "$out/durable.log" \
            || echo "durable-bench exited with $? (round $round, $n workers)" >&2
    done
    if [[ $no_peer -eq 0 ]]; then
        echo "round $round: peer" >&2
        echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) (round $round, peer)" >> "$out/machine.txt"
        "${niced[@]}" "$peer_bin" --provider postgres --pg-url "$peer_url" --workload "$peer_workloads" \
            --scale "$scale" >> "$out/duroxide.jsonl" 2>> "$out/duroxide.log" \
            || echo "duroxide-bench exited with $? (round $round)" >&2
    fi
done
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$out/machine.txt"

peer_json="-"
[[ -s "$out/duroxide.jsonl" ]] && peer_json="$out/duroxide.jsonl"
"$bench" --workers-table "$peer_json" "$out/durable.jsonl" | tee "$out/table.md"
