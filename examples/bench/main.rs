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

mod fleet;
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

/// Workloads not in `all` on fjall (the default run stays the peer comparison's); on
/// PostgreSQL `all` includes them.
const EXTRA_WORKLOADS: [&str; 1] = ["cross-partition-hop"];

/// The PostgreSQL server to run on (a libpq connection string), when `--postgres` is not
/// given; setting it alone selects `--store postgres`, as in the harness's first form.
pub const POSTGRES_VAR: &str = "DURABLE_BENCH_POSTGRES";

const USAGE: &str = "\
durable-bench: benchmark harness of durable (same workloads and output as duroxide-bench)

USAGE:
    cargo run --release --example bench -- --workload NAME|all [--scale small|full] [options]

WORKLOADS:
    seq10-latency, seq10-throughput, fanout-1000, fanout-10000, long-history-5000,
    timer-100ms, event-roundtrip, recovery-10000, idle-timers-100000, entity-counter
    (100,000 signals to one entity), entity-counter-1000 (spread over 1,000),
    http-start (10,000 starts and status polls through the HTTP management API),
    cross-partition-hop (a parent starting 200 sub-orchestrations one after the other, each
    in a partition another worker owns: p50/p99 of parent's turn -> child's first turn;
    not in `all` on fjall), all

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
    --list                     print the workload names of `all` on fjall, one per line,
                               and exit
    --store fjall|postgres|postgres-single
                               the store (default: fjall; postgres when DURABLE_BENCH_POSTGRES
                               is set); postgres-single: one process holding the schema alone
                               (PostgresStore::connect: no partitions, leases, fencing or
                               messages; --workers 1 only), to compare with. PostgreSQL: a schema per workload (dropped before and
                               after it), any --durability ignored (the server's
                               synchronous_commit decides), and one more JSON key per line:
                               workers, client, commits, commit_requests, steps_per_commit,
                               commits_per_s (summed over the workers), server (the server's
                               transactions and WAL syncs, the whole cluster's WAL)
    --postgres URL             the PostgreSQL server (libpq connection string or URL; default:
                               $DURABLE_BENCH_POSTGRES, else a throwaway cluster started here
                               with initdb, removed afterwards)
    --workers N                PostgreSQL: N worker processes share each workload's schema
                               (default 1); this process drives the workload through a client
                               and is itself worker 1, unless --client database. It waits until
                               the 64 partitions are shared fairly before the timed span, and
                               stops the workers (their counters summed) after it; they are
                               killed if it fails. With N > 1 or --client database, ends are
                               observed by polling status (1 ms for one instance, a watcher for
                               many), and `all` leaves out recovery-10000
    --client worker|database   PostgreSQL: drive through the client of this process's own
                               worker (default), or through Client::connect_postgres_schema
                               alone with all N workers in other processes
    --pg-sample-ms N           PostgreSQL: sample pg_stat_activity every N ms during the
                               workload; the share of each state/wait event goes in the notes
    -h, --help                 print this help

    bench --table PEER.jsonl|- OURS.jsonl [--workload LIST] [--peer-timeout-s N]
                               instead of running: the side-by-side Markdown table of
                               saved JSON lines (what compare.sh writes)
    bench --workers-table PEER.jsonl|- OURS.jsonl
                               the table of PostgreSQL runs by worker count, every run and
                               the medians, against the peer (what postgres-workers.sh writes)

ENVIRONMENT:
    DURABLE_BENCH_POSTGRES     a PostgreSQL connection string: run on PostgreSQL instead of
                               fjall (as --store postgres --postgres URL)
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
    /// The PostgreSQL store, when chosen.
    postgres: Option<Postgres>,
}

/// How PostgreSQL runs are set up.
#[derive(Clone, Debug)]
struct Postgres {
    /// The server; `None`: a throwaway cluster started by this process.
    url: Option<String>,
    workers: usize,
    /// Drive through a client of the database alone (all workers in other processes).
    database_client: bool,
    sample: Option<Duration>,
    /// `postgres-single`: `PostgresStore::connect`, not a worker.
    single: bool,
}

fn parse_args() -> Result<Config, String> {
    let mut workloads = Vec::new();
    let mut dir = None;
    let mut divisor = 1;
    let mut durabilities = vec![Durability::Fsync];
    let mut timeout_s = 300;
    let mut keep_db = false;
    let mut count = None;
    let mut store = None;
    let mut url = None;
    let mut workers = 1usize;
    let mut database_client = false;
    let mut sample = None;
    let mut all = false;
    let mut single = false;
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
                        "all" => {
                            all = true;
                            workloads.extend(WORKLOADS.iter().map(|w| (*w).to_owned()));
                        }
                        known if WORKLOADS.contains(&known) || EXTRA_WORKLOADS.contains(&known) => {
                            workloads.push(known.to_owned())
                        }
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
            "--store" => {
                store = match value("--store")?.as_str() {
                    "fjall" => Some(false),
                    "postgres" => Some(true),
                    "postgres-single" => {
                        single = true;
                        Some(true)
                    }
                    other => {
                        return Err(format!("--store must be fjall or postgres, not `{other}`"));
                    }
                }
            }
            "--postgres" => url = Some(value("--postgres")?),
            "--workers" => workers = parse_number(&value(&flag)?, &flag)?,
            "--client" => {
                database_client = match value("--client")?.as_str() {
                    "worker" => false,
                    "database" => true,
                    other => {
                        return Err(format!(
                            "--client must be worker or database, not `{other}`"
                        ));
                    }
                }
            }
            "--pg-sample-ms" => {
                sample = Some(Duration::from_millis(parse_number(&value(&flag)?, &flag)?))
            }
            other => return Err(format!("unknown argument `{other}`\n\n{USAGE}")),
        }
    }
    if workloads.is_empty() {
        return Err(format!("--workload is required\n\n{USAGE}"));
    }
    let url = url.or_else(|| std::env::var(POSTGRES_VAR).ok());
    let on_postgres = store.unwrap_or(url.is_some());
    if !on_postgres && (workers != 1 || database_client || sample.is_some()) {
        return Err("--workers, --client and --pg-sample-ms need --store postgres".to_owned());
    }
    if workers == 0 || workers > 64 {
        return Err("--workers must be 1 to 64".to_owned());
    }
    let multi_process = workers > 1 || database_client;
    if single && multi_process {
        return Err("--store postgres-single runs one worker, this process".to_owned());
    }
    if on_postgres && all {
        workloads.extend(EXTRA_WORKLOADS.iter().map(|w| (*w).to_owned()));
        if multi_process {
            workloads.retain(|w| w != "recovery-10000");
        }
    }
    if multi_process && workloads.iter().any(|w| w == "recovery-10000") {
        return Err(
            "recovery-10000 restarts the one runtime of this process: not with --workers > 1 or --client database"
                .to_owned(),
        );
    }
    let postgres = on_postgres.then_some(Postgres {
        url,
        workers,
        database_client,
        sample,
        single,
    });
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
        postgres,
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

fn store_name(config: &Config, durability: Durability) -> String {
    if let Some(postgres) = &config.postgres {
        return if postgres.single {
            "postgres-single".to_owned()
        } else {
            "postgres".to_owned()
        };
    }
    format!("fjall-{}", durability.as_str())
}

fn result_line(store: &str, workload: &str, outcome: &Outcome, notes: String) -> Value {
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
        "store": store,
        "notes": notes,
    })
}

fn error_line(store: &str, workload: &str, error: &BenchError, notes: String) -> Value {
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
        "store": store,
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
    if let Some(postgres) = config.postgres.clone() {
        return run_all_postgres(&config, &postgres).await;
    }
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
            let place = workloads::Place::Dir(dir.clone());
            let run = workloads::run(workload, &config, &place, *durability);
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
                    let store = store_name(&config, *durability);
                    let line = result_line(&store, workload, &outcome, notes);
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
                    let store = store_name(&config, *durability);
                    emit(&error_line(&store, workload, &error, common));
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

/// What one PostgreSQL workload produced beyond its [`Outcome`].
struct PgRun {
    outcome: Outcome,
    /// The workers' counters, summed.
    totals: fleet::Report,
    server: Option<Value>,
}

/// Every workload on PostgreSQL: one line each (the durability modes do not apply).
async fn run_all_postgres(config: &Config, postgres: &Postgres) -> ExitCode {
    // A throwaway cluster when no server is named; stopped and removed when dropped.
    let mut _cluster = None;
    let url = match &postgres.url {
        Some(url) => url.clone(),
        None => {
            let started = durable_testkit::postgres::Server::start()
                .and_then(|server| Ok((server.database("bench")?, server)));
            match started {
                Ok((url, server)) => {
                    progress!("started a throwaway PostgreSQL cluster: {url}");
                    _cluster = Some(server);
                    url
                }
                Err(error) => {
                    eprintln!("durable-bench: {error}");
                    return ExitCode::from(69);
                }
            }
        }
    };
    let db = match fleet::Db::connect(&url).await {
        Ok(db) => db,
        Err(error) => {
            eprintln!("durable-bench: {error}");
            return ExitCode::from(69);
        }
    };
    let mut failed = false;
    let mut skipped = false;
    for workload in &config.workloads {
        let schema: String = format!("bench_{workload}")
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .take(63)
            .collect();
        progress!(
            "{workload} (postgres, {} worker{}, {} client)",
            postgres.workers,
            if postgres.workers == 1 { "" } else { "s" },
            if postgres.database_client {
                "database"
            } else {
                "worker"
            }
        );
        measure::reset_peak_rss();
        let cpu_before = measure::cpu_seconds();
        let run = postgres_workload(config, postgres, &url, &db, &schema, workload);
        let result = match tokio::time::timeout(config.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(BenchError::Timeout(format!(
                "not finished after {} s",
                config.timeout.as_secs()
            ))),
        };
        if !config.keep_db
            && let Err(error) = db.drop_schema(&schema).await
        {
            progress!("  {error}");
        }
        let common = format!(
            "store postgres, schema {schema}, {} worker process{} ({}); driver process cpu {:.2}s, peak RSS {}; {} cores",
            postgres.workers,
            if postgres.workers == 1 { "" } else { "es" },
            if postgres.database_client {
                "all in other processes, driven through Client::connect_postgres_schema"
            } else {
                "this process is worker 1 and drives through its runtime's client"
            },
            measure::cpu_seconds() - cpu_before,
            measure::peak_rss_text(),
            measure::cores(),
        );
        let store = store_name(config, Durability::Fsync);
        match result {
            Ok(PgRun {
                mut outcome,
                totals,
                server,
            }) => {
                outcome.notes.push(common);
                let notes = outcome.notes.join("; ");
                let mut line = result_line(&store, workload, &outcome, notes);
                let wall_s = outcome.wall.as_secs_f64();
                line["workers"] = json!(postgres.workers);
                line["client"] = json!(if postgres.database_client {
                    "database"
                } else {
                    "worker"
                });
                line["commits"] = json!(totals.commits);
                line["commit_requests"] = json!(totals.commit_requests);
                line["steps_per_commit"] = if totals.commits > 0 {
                    json!(round(
                        totals.commit_requests as f64 / totals.commits as f64,
                        2
                    ))
                } else {
                    Value::Null
                };
                line["commits_per_s"] = json!(round_significant(totals.commits as f64 / wall_s, 4));
                line["server"] = server.unwrap_or(Value::Null);
                progress!(
                    "  done: wall {wall_s:.3}s, {} activities/s, p50 {} ms, p99 {} ms, {} commits ({} steps each), {} commits/s",
                    line["activities_per_s"],
                    line["p50_ms"],
                    line["p99_ms"],
                    line["commits"],
                    line["steps_per_commit"],
                    line["commits_per_s"]
                );
                emit(&line);
            }
            Err(error) => {
                progress!("  {error}");
                match error {
                    BenchError::Failed(_) => failed = true,
                    BenchError::Timeout(_) => skipped = true,
                }
                let mut line = error_line(&store, workload, &error, common);
                line["workers"] = json!(postgres.workers);
                emit(&line);
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

/// One workload on a fresh schema: the workers started, the partitions shared out, the
/// workload driven and timed, the workers stopped and their counters summed.
async fn postgres_workload(
    config: &Config,
    postgres: &Postgres,
    url: &str,
    db: &fleet::Db,
    schema: &str,
    workload: &str,
) -> Result<PgRun, BenchError> {
    db.drop_schema(schema).await?;
    let place = if postgres.single {
        workloads::Place::Exclusive {
            url: url.to_owned(),
            schema: schema.to_owned(),
        }
    } else {
        workloads::Place::Schema {
            url: url.to_owned(),
            schema: schema.to_owned(),
        }
    };
    let counters_before = db.counters().await;
    let span = std::time::Instant::now();
    if workload == "recovery-10000" {
        // Stops and restarts the runtime of this process: one worker, no fleet.
        workloads::set_observation(false, false);
        let outcome = workloads::run(workload, config, &place, Durability::Fsync).await?;
        let server = server_figures(db, counters_before, span, &mut Vec::new()).await;
        return Ok(PgRun {
            outcome,
            totals: fleet::Report::default(),
            server,
        });
    }
    let multi = postgres.workers > 1 || postgres.database_client;
    workloads::set_observation(multi, true);
    let cpu_at_start = measure::cpu_seconds();
    // This process's worker first: it sets the schema up before the others open it.
    let runtime = if postgres.database_client {
        None
    } else {
        Some(workloads::start_runtime(&place, Durability::Fsync).await?)
    };
    let children = if postgres.database_client {
        postgres.workers
    } else {
        postgres.workers - 1
    };
    let fleet = fleet::Fleet::start(children, url, schema, runtime.is_none()).await?;
    let client = match &runtime {
        Some(runtime) => runtime.client(),
        None => durable::Client::connect_postgres_schema(url, schema)
            .await
            .map_err(|e| BenchError::Failed(format!("cannot connect the client: {e}")))?,
    };
    let owners = if postgres.single {
        std::collections::BTreeMap::new()
    } else {
        let owners = db.wait_balanced(schema, postgres.workers).await?;
        fleet::log_owners(&owners);
        owners
    };

    let stop_sampling = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = postgres.sample.map(|every| {
        fleet::Db::sample(url.to_owned(), every, std::sync::Arc::clone(&stop_sampling))
    });
    let ticks_before = fleet::machine_ticks();
    let outcome = workloads::drive(workload, config, &client, Some(&owners)).await;
    let ticks_after = fleet::machine_ticks();
    stop_sampling.store(true, std::sync::atomic::Ordering::Relaxed);
    let own = runtime.as_ref().map(|runtime| {
        let mut own = fleet::Report::of(&runtime.metrics(), workloads::activity_runs());
        own.cpu_s -= cpu_at_start;
        own
    });
    let mut outcome = outcome?;
    drop(client);
    let mut reports = fleet.stop().await?;
    if let Some(runtime) = runtime {
        runtime.shutdown().await;
    }
    // The server counts a backend's transactions when it reports them, at the latest as
    // it exits: let the workers' backends go first.
    tokio::time::sleep(Duration::from_millis(300)).await;
    reports.extend(own);
    let totals = fleet::Report::sum(&reports);

    if multi {
        let expected = workloads::expected_activities();
        if totals.activity_runs < expected {
            return Err(BenchError::Failed(format!(
                "only {} activity executions in all workers, expected {expected}",
                totals.activity_runs
            )));
        }
        if expected > 0 {
            outcome.notes.push(format!(
                "{} activity executions counted in all workers for {expected} required ({} duplicates)",
                totals.activity_runs,
                totals.activity_runs - expected
            ));
        }
    }
    let per_worker: Vec<String> = reports
        .iter()
        .map(|r| {
            format!(
                "{} turns/{} commits/{} activities/{:.2} cpu-s",
                r.turns, r.commits, r.activity_runs, r.cpu_s
            )
        })
        .collect();
    outcome.notes.push(format!(
        "engine, all {} workers: {} turns, {} commits for {} commit requests, {} history events replayed; per worker [{}]; workers' cpu {:.2}s in all (their whole lives), peak RSS {:.0} MiB (largest)",
        reports.len(),
        totals.turns,
        totals.commits,
        totals.commit_requests,
        totals.history_events_replayed,
        per_worker.join(", "),
        totals.cpu_s,
        totals.peak_rss_mib
    ));
    if let Some(busy) = fleet::busy_cores(ticks_before, ticks_after) {
        outcome.notes.push(format!(
            "machine busy {busy:.2} of {} cores during the timed span (all processes, the server's included)",
            measure::cores()
        ));
    }
    if let Some(sampler) = sampler
        && let Ok(counts) = sampler.await
    {
        let samples = counts.get("samples").copied().unwrap_or(0);
        let total: u64 = counts
            .iter()
            .filter(|(k, _)| k.as_str() != "samples")
            .map(|(_, v)| v)
            .sum();
        let mut shares: Vec<(&String, &u64)> = counts
            .iter()
            .filter(|(k, _)| k.as_str() != "samples")
            .collect();
        shares.sort_by(|a, b| b.1.cmp(a.1));
        let shares: Vec<String> = shares
            .iter()
            .map(|(k, v)| format!("{k} {:.1}%", **v as f64 * 100.0 / total.max(1) as f64))
            .collect();
        outcome.notes.push(format!(
            "pg_stat_activity sampled {samples} times, {:.1} client backends each on average: {}",
            total as f64 / samples.max(1) as f64,
            shares.join(", ")
        ));
    }
    let server = server_figures(db, counters_before, span, &mut outcome.notes).await;
    Ok(PgRun {
        outcome,
        totals,
        server,
    })
}

/// The server's counters since `before`, as JSON, with a note.
async fn server_figures(
    db: &fleet::Db,
    before: Option<fleet::Counters>,
    span: std::time::Instant,
    notes: &mut Vec<String>,
) -> Option<Value> {
    let before = before?;
    let after = db.counters().await?;
    notes.push(before.delta_note(&after, span.elapsed()));
    Some(before.delta_json(&after))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().is_some_and(|arg| arg == "--table") {
        return table::main(&args[1..]);
    }
    if args.first().is_some_and(|arg| arg == "--workers-table") {
        return table::workers_main(&args[1..]);
    }
    if args.first().is_some_and(|arg| arg == fleet::WORKER_FLAG) {
        return match (args.get(1), args.get(2), args.get(3)) {
            (Some(schema), Some(flag), Some(url)) if flag == "--postgres" => {
                fleet::worker_main(schema, url)
            }
            _ => {
                eprintln!(
                    "durable-bench: {} SCHEMA --postgres URL",
                    fleet::WORKER_FLAG
                );
                ExitCode::from(64)
            }
        };
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
