//! durable-bench: the benchmark harness of durable, on the workloads of the peer harness
//! in `../shared/peers/duroxide-bench` and with its command line and JSON-lines output, so
//! the two can be compared side by side (`examples/bench/compare.sh`).
//!
//! `cargo run --release --example bench -- --workload all --scale small`
//!
//! stdout carries exactly one JSON line per workload (and durability mode); progress goes
//! to stderr. `--table PEER.jsonl OURS.jsonl` prints the side-by-side Markdown table of
//! saved lines instead (`table.rs`). Every workload verifies its results and reports `FAILED` when they are
//! wrong. The exit status is 0 when all passed, 1 if any failed, 2 if some hit the time
//! limit, 64 for a usage error.

mod http;
mod measure;
mod table;
mod workloads;

use durable::Durability;
use measure::Outcome;
use serde_json::{Value, json};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// The workloads, in the order `all` runs them.
const WORKLOADS: [&str; 12] = [
    "seq10-latency",
    "seq10-throughput",
    "fanout-1000",
    "fanout-10000",
    "long-history-5000",
    "timer-100ms",
    "event-roundtrip",
    "recovery-10000",
    "idle-timers-100000",
    "entity-counter",
    "entity-counter-1000",
    "http-start",
];

const USAGE: &str = "\
durable-bench: benchmark harness of durable (same workloads and output as duroxide-bench)

USAGE:
    cargo run --release --example bench -- --workload NAME|all [--scale small|full] [options]

WORKLOADS:
    seq10-latency, seq10-throughput, fanout-1000, fanout-10000, long-history-5000,
    timer-100ms, event-roundtrip, recovery-10000, idle-timers-100000, entity-counter
    (100,000 signals to one entity), entity-counter-1000 (spread over 1,000),
    http-start (10,000 starts and status polls through the HTTP management API), all

OPTIONS:
    --workload NAME            workload, comma-separated list, or `all` (may be repeated)
    --scale small|full         small = ~10x fewer instances/activities (default: full)
    --dir PATH                 where the stores go (default: a fresh temporary directory,
                               removed afterwards)
    --durability MODE          fsync (default: acknowledged after fdatasync), buffered, or
                               both (one line per mode)
    --timeout-s N              per-workload limit (default: 300)
    --keep-db                  keep the store directories
    --count N                  override the instance (or activity) count; experiments only
    --list                     print the workload names, one per line, and exit
    -h, --help                 print this help

    bench --table PEER.jsonl|- OURS.jsonl [--workload LIST] [--peer-timeout-s N]
                               instead of running: the side-by-side Markdown table of
                               saved JSON lines (what compare.sh writes)

ENVIRONMENT:
    DURABLE_BENCH_POSTGRES     a PostgreSQL connection string: run on PostgreSQL (one worker,
                               a schema per workload) instead of fjall; the store is `postgres`
";

/// The harness's settings.
#[derive(Clone, Debug)]
pub struct Config {
    workloads: Vec<String>,
    dir: PathBuf,
    dir_is_temp: bool,
    /// Divides the full-scale counts (10 for `--scale small`).
    pub divisor: u64,
    durabilities: Vec<Durability>,
    timeout: Duration,
    keep_db: bool,
    /// Overrides the instance or activity count.
    pub count: Option<u64>,
}

fn parse_args() -> Result<Config, String> {
    let mut workloads = Vec::new();
    let mut dir = None;
    let mut divisor = 1;
    let mut durabilities = vec![Durability::Fsync];
    let mut timeout_s = 300;
    let mut keep_db = false;
    let mut count = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => {
                (flag.to_owned(), Some(value.to_owned()))
            }
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| match inline.clone() {
            Some(value) => Ok(value),
            None => args.next().ok_or_else(|| format!("{name} needs a value")),
        };
        match flag.as_str() {
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            "--list" => {
                for workload in WORKLOADS {
                    println!("{workload}");
                }
                std::process::exit(0);
            }
            "--workload" | "-w" => {
                for name in value("--workload")?.split(',').map(str::trim) {
                    match name {
                        "" => {}
                        "all" => workloads.extend(WORKLOADS.iter().map(|w| (*w).to_owned())),
                        known if WORKLOADS.contains(&known) => workloads.push(known.to_owned()),
                        other => {
                            return Err(format!(
                                "unknown workload `{other}` (known: {}, all)",
                                WORKLOADS.join(", ")
                            ));
                        }
                    }
                }
            }
            "--scale" => {
                divisor = match value("--scale")?.as_str() {
                    "small" => 10,
                    "full" => 1,
                    other => return Err(format!("--scale must be small or full, not `{other}`")),
                }
            }
            "--dir" => dir = Some(PathBuf::from(value("--dir")?)),
            "--durability" => {
                durabilities = match value("--durability")?.as_str() {
                    "fsync" => vec![Durability::Fsync],
                    "buffered" => vec![Durability::Buffered],
                    "both" => vec![Durability::Fsync, Durability::Buffered],
                    other => {
                        return Err(format!(
                            "--durability must be fsync, buffered or both, not `{other}`"
                        ));
                    }
                }
            }
            "--timeout-s" => timeout_s = parse_number(&value(&flag)?, &flag)?,
            "--keep-db" => keep_db = true,
            "--count" => count = Some(parse_number(&value(&flag)?, &flag)?),
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    if workloads.is_empty() {
        return Err(format!("--workload is required\n\n{USAGE}"));
    }
    let mut seen = std::collections::BTreeSet::new();
    workloads.retain(|workload| seen.insert(workload.clone()));
    if count == Some(0) {
        return Err("--count must be at least 1".to_owned());
    }
    let (dir, dir_is_temp) = match dir {
        Some(dir) => (dir, false),
        None => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let name = format!("durable-bench-{}-{nanos}", std::process::id());
            (std::env::temp_dir().join(name), true)
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(Config {
        workloads,
        dir,
        dir_is_temp,
        divisor,
        durabilities,
        timeout: Duration::from_secs(timeout_s),
        keep_db,
        count,
    })
}

fn parse_number<T: std::str::FromStr>(text: &str, flag: &str) -> Result<T, String> {
    text.parse()
        .map_err(|_| format!("{flag}: `{text}` is not a valid number"))
}

/// What a workload run produced, or why it did not.
#[derive(Debug)]
pub enum BenchError {
    /// A wrong result, a failed instance, an engine error.
    Failed(String),
    /// It did not finish within the time limit.
    Timeout(String),
}

impl std::fmt::Display for BenchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BenchError::Failed(message) => write!(f, "FAILED: {message}"),
            BenchError::Timeout(message) => write!(f, "SKIPPED (time limit): {message}"),
        }
    }
}

fn system() -> String {
    format!("durable-{}", env!("CARGO_PKG_VERSION"))
}

fn store_name(durability: Durability) -> String {
    if std::env::var_os(workloads::POSTGRES_VAR).is_some() {
        return "postgres".to_owned();
    }
    format!("fjall-{}", durability.as_str())
}

fn result_line(workload: &str, durability: Durability, outcome: &Outcome, notes: String) -> Value {
    let wall_s = outcome.wall.as_secs_f64();
    let (p50, p99) = match &outcome.samples_ms {
        Some(samples) if !samples.is_empty() => {
            let (p50, p99) = measure::p50_p99(samples);
            (json!(round(p50, 3)), json!(round(p99, 3)))
        }
        _ => (Value::Null, Value::Null),
    };
    let activities_per_s = if outcome.activities > 0 {
        json!(round_significant(outcome.activities as f64 / wall_s, 4))
    } else {
        Value::Null
    };
    json!({
        "system": system(),
        "workload": workload,
        "instances": outcome.instances,
        "activities": outcome.activities,
        "wall_s": round(wall_s, 4),
        "orch_per_s": round_significant(outcome.instances as f64 / wall_s, 4),
        "activities_per_s": activities_per_s,
        "p50_ms": p50,
        "p99_ms": p99,
        "store": store_name(durability),
        "notes": notes,
    })
}

fn error_line(workload: &str, durability: Durability, error: &BenchError, notes: String) -> Value {
    json!({
        "system": system(),
        "workload": workload,
        "instances": Value::Null,
        "activities": Value::Null,
        "wall_s": Value::Null,
        "orch_per_s": Value::Null,
        "activities_per_s": Value::Null,
        "p50_ms": Value::Null,
        "p99_ms": Value::Null,
        "store": store_name(durability),
        "notes": format!("{error}; {notes}"),
    })
}

fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}

fn round_significant(x: f64, significant: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = (significant - x.abs().log10().ceil() as i32).max(0);
    round(x, digits)
}

fn emit(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes progress to stderr.
macro_rules! progress {
    ($($arg:tt)*) => {{
        eprintln!("[durable-bench] {}", format!($($arg)*));
    }};
}
pub(crate) use progress;

async fn run_all(config: Config) -> ExitCode {
    let mut failed = false;
    let mut skipped = false;
    let floor = measure::fdatasync_floor(&config.dir);
    progress!(
        "fdatasync floor on {}: p50 {:.3} ms",
        config.dir.display(),
        floor.unwrap_or(f64::NAN)
    );
    for workload in &config.workloads {
        for durability in &config.durabilities {
            let dir = config
                .dir
                .join(format!("{workload}-{}", durability.as_str()));
            let _ = std::fs::remove_dir_all(&dir);
            progress!("{workload} ({})", durability.as_str());
            measure::reset_peak_rss();
            let cpu_before = measure::cpu_seconds();
            let run = workloads::run(workload, &config, &dir, *durability);
            let result = match tokio::time::timeout(config.timeout, run).await {
                Ok(result) => result,
                Err(_) => Err(BenchError::Timeout(format!(
                    "not finished after {} s",
                    config.timeout.as_secs()
                ))),
            };
            let common = format!(
                "durability={}; fdatasync floor p50 {} ms (measured in this run); process cpu {:.2}s; peak RSS {}; store size {:.1} MiB; {} tokio workers, 1 orchestration thread",
                durability.as_str(),
                floor.map_or("?".to_owned(), |f| format!("{f:.3}")),
                measure::cpu_seconds() - cpu_before,
                measure::peak_rss_text(),
                measure::dir_size(&dir) as f64 / (1024.0 * 1024.0),
                measure::cores(),
            );
            match result {
                Ok(mut outcome) => {
                    outcome.notes.push(common);
                    let notes = outcome.notes.join("; ");
                    let line = result_line(workload, *durability, &outcome, notes);
                    progress!(
                        "  done: wall {:.3}s, {} activities/s, p50 {} ms, p99 {} ms",
                        outcome.wall.as_secs_f64(),
                        line["activities_per_s"],
                        line["p50_ms"],
                        line["p99_ms"]
                    );
                    emit(&line);
                }
                Err(error) => {
                    progress!("  {error}");
                    match error {
                        BenchError::Failed(_) => failed = true,
                        BenchError::Timeout(_) => skipped = true,
                    }
                    emit(&error_line(workload, *durability, &error, common));
                }
            }
            if !config.keep_db {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    if config.dir_is_temp && !config.keep_db {
        let _ = std::fs::remove_dir_all(&config.dir);
    }
    if failed {
        ExitCode::from(1)
    } else if skipped {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|arg| arg == "--table") {
        return table::main(&args[1..]);
    }
    let config = match parse_args() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("durable-bench: {error}");
            return ExitCode::from(64);
        }
    };
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(error) => {
            eprintln!("durable-bench: cannot start tokio: {error}");
            return ExitCode::from(70);
        }
    };
    tokio.block_on(run_all(config))
}
