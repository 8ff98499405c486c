//! PostgreSQL runs with several worker processes (`--store postgres --workers N`): a schema
//! per workload, N - 1 (or N, with `--client database`) copies of this binary started in
//! worker mode on it, the workload driven through a client of this process, and the
//! workers' counters collected when they stop. Also the server-side figures: transactions
//! and WAL syncs counted by PostgreSQL, and (with `--pg-sample-ms`) what its backends were
//! doing during the timed span.
//!
//! A worker process lives as long as its standard input: the driver holds the write end,
//! and closing it (or the driver dying) makes the worker stop gracefully and print its
//! report. A driver that fails or hits the time limit kills the workers it started
//! ([`Fleet`]'s `Drop`).

use crate::{BenchError, measure, progress};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// How long a worker may take to start, and to stop and report.
const PATIENCE: Duration = Duration::from_secs(60);

/// The hidden flag that starts this binary as a worker.
pub const WORKER_FLAG: &str = "--worker-process";

/// A worker's counters when the workload ended.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub activity_runs: u64,
    pub turns: u64,
    pub commits: u64,
    pub commit_requests: u64,
    pub history_events_replayed: u64,
    pub instances_started: u64,
    pub cpu_s: f64,
    pub peak_rss_mib: f64,
}

impl Report {
    pub fn to_json(&self) -> Value {
        json!({
            "activity_runs": self.activity_runs,
            "turns": self.turns,
            "commits": self.commits,
            "commit_requests": self.commit_requests,
            "history_events_replayed": self.history_events_replayed,
            "instances_started": self.instances_started,
            "cpu_s": self.cpu_s,
            "peak_rss_mib": self.peak_rss_mib,
        })
    }

    fn from_json(value: &Value) -> Report {
        let int = |key: &str| value.get(key).and_then(Value::as_u64).unwrap_or(0);
        let float = |key: &str| value.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN);
        Report {
            activity_runs: int("activity_runs"),
            turns: int("turns"),
            commits: int("commits"),
            commit_requests: int("commit_requests"),
            history_events_replayed: int("history_events_replayed"),
            instances_started: int("instances_started"),
            cpu_s: float("cpu_s"),
            peak_rss_mib: float("peak_rss_mib"),
        }
    }

    /// This process's runtime counters and activity count.
    pub fn of(metrics: &durable::MetricsSnapshot, activity_runs: u64) -> Report {
        Report {
            activity_runs,
            turns: metrics.turns,
            commits: metrics.commits,
            commit_requests: metrics.commit_requests,
            history_events_replayed: metrics.history_events_replayed,
            instances_started: metrics.instances_started,
            cpu_s: measure::cpu_seconds(),
            peak_rss_mib: measure::peak_rss_mib().unwrap_or(f64::NAN),
        }
    }

    /// The sum over workers (CPU summed, peak RSS the largest).
    pub fn sum(reports: &[Report]) -> Report {
        let mut total = Report::default();
        for r in reports {
            total.activity_runs += r.activity_runs;
            total.turns += r.turns;
            total.commits += r.commits;
            total.commit_requests += r.commit_requests;
            total.history_events_replayed += r.history_events_replayed;
            total.instances_started += r.instances_started;
            total.cpu_s += r.cpu_s;
            total.peak_rss_mib = total.peak_rss_mib.max(r.peak_rss_mib);
        }
        total
    }
}

struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
}

/// The worker processes of one workload; killed when dropped unless stopped first.
pub struct Fleet {
    workers: Vec<Worker>,
    lines: tokio::sync::mpsc::UnboundedReceiver<(usize, Value)>,
}

impl Fleet {
    /// Starts `count` workers on `schema` and waits until each has started its runtime;
    /// `first_alone`: the first before the others (runtimes that open a new schema at
    /// the same moment can fail: see BENCHMARKS.md).
    pub async fn start(
        count: usize,
        url: &str,
        schema: &str,
        first_alone: bool,
    ) -> Result<Fleet, BenchError> {
        let exe = std::env::current_exe()
            .map_err(|e| BenchError::Failed(format!("cannot find this binary: {e}")))?;
        let (sender, lines) = tokio::sync::mpsc::unbounded_channel();
        let mut fleet = Fleet {
            workers: Vec::new(),
            lines,
        };
        for index in 0..count {
            if index == 1 && first_alone {
                fleet.wait_ready(1).await?;
            }
            let mut child = Command::new(&exe)
                .arg(WORKER_FLAG)
                .arg(schema)
                .arg("--postgres")
                .arg(url)
                .env("DURABLE_BENCH_WORKER_INDEX", (index + 1).to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| BenchError::Failed(format!("cannot start a worker: {e}")))?;
            let stdin = child.stdin.take();
            let stdout = child.stdout.take();
            fleet.workers.push(Worker { child, stdin });
            if let Some(stdout) = stdout {
                let sender = sender.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(stdout).lines() {
                        let Ok(line) = line else { break };
                        if let Ok(value) = serde_json::from_str::<Value>(&line) {
                            let _ = sender.send((index, value));
                        }
                    }
                });
            }
        }
        let first = usize::from(first_alone && count > 1);
        fleet.wait_ready(count - first).await?;
        Ok(fleet)
    }

    /// Waits for `count` workers to say they are ready.
    async fn wait_ready(&mut self, count: usize) -> Result<(), BenchError> {
        let mut ready = 0;
        while ready < count {
            match tokio::time::timeout(PATIENCE, self.lines.recv()).await {
                Ok(Some((_, line))) if line.get("ready").is_some() => ready += 1,
                Ok(Some((index, line))) => {
                    return Err(BenchError::Failed(format!("worker {}: {line}", index + 1)));
                }
                Ok(None) | Err(_) => {
                    return Err(BenchError::Failed(format!(
                        "only {ready} of {count} workers started"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Tells every worker to stop (closes their standard input) and collects their
    /// reports, taken before each stops.
    pub async fn stop(mut self) -> Result<Vec<Report>, BenchError> {
        for worker in &mut self.workers {
            worker.stdin = None;
        }
        let mut reports = vec![None; self.workers.len()];
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while reports.iter().any(Option::is_none) {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some((index, line))) => {
                    if let Some(report) = line.get("report") {
                        reports[index] = Some(Report::from_json(report));
                    } else if let Some(error) = line.get("error") {
                        return Err(BenchError::Failed(format!("worker {}: {error}", index + 1)));
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        for worker in &mut self.workers {
            let waited = wait_with_deadline(&mut worker.child, Duration::from_secs(10));
            if !waited {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
            }
        }
        let missing = reports.iter().filter(|r| r.is_none()).count();
        if missing > 0 {
            return Err(BenchError::Failed(format!(
                "{missing} workers stopped without a report"
            )));
        }
        Ok(reports.into_iter().flatten().collect())
    }
}

fn wait_with_deadline(child: &mut Child, patience: Duration) -> bool {
    let deadline = Instant::now() + patience;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return true,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return false,
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for worker in &mut self.workers {
            if matches!(worker.child.try_wait(), Ok(None)) {
                let _ = worker.child.kill();
            }
            let _ = worker.child.wait();
        }
    }
}

/// A worker process: runs a runtime on `schema` until its standard input closes, then
/// prints its report and stops.
pub fn worker_main(schema: &str, url: &str) -> std::process::ExitCode {
    let tokio = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(tokio) => tokio,
        Err(error) => {
            say(&json!({ "error": format!("cannot start tokio: {error}") }));
            return std::process::ExitCode::from(70);
        }
    };
    tokio.block_on(async {
        let place = crate::workloads::Place::Schema {
            url: url.to_owned(),
            schema: schema.to_owned(),
        };
        let runtime =
            match crate::workloads::start_runtime(&place, durable::Durability::Fsync).await {
                Ok(runtime) => runtime,
                Err(error) => {
                    say(&json!({ "error": error.to_string() }));
                    return std::process::ExitCode::from(1);
                }
            };
        say(&json!({ "ready": std::process::id() }));
        let _ = tokio::task::spawn_blocking(|| {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
        })
        .await;
        let report = Report::of(&runtime.metrics(), crate::workloads::activity_runs());
        runtime.shutdown().await;
        say(&json!({ "report": report.to_json() }));
        std::process::ExitCode::SUCCESS
    })
}

fn say(line: &Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// A connection of the driver's own to the database, for housekeeping and statistics.
pub struct Db {
    client: tokio_postgres::Client,
}

impl Db {
    pub async fn connect(url: &str) -> Result<Db, BenchError> {
        let (client, connection) = tokio_postgres::connect(url, NoTls)
            .await
            .map_err(|e| BenchError::Failed(format!("cannot connect to PostgreSQL: {e}")))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Db { client })
    }

    pub async fn drop_schema(&self, schema: &str) -> Result<(), BenchError> {
        self.client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .map_err(|e| BenchError::Failed(format!("cannot drop schema {schema}: {e}")))
    }

    /// The owner of each partition with a live lease.
    pub async fn owners(&self, schema: &str) -> Result<BTreeMap<u16, String>, BenchError> {
        let sql = format!(
            "SELECT id, owner FROM \"{schema}\".partitions WHERE expires_at >= now() AND owner IS NOT NULL"
        );
        let rows = self
            .client
            .query(&sql, &[])
            .await
            .map_err(|e| BenchError::Failed(format!("cannot read the partitions: {e}")))?;
        Ok(rows
            .iter()
            .map(|row| {
                let id: i16 = row.get(0);
                let owner: String = row.get(1);
                (u16::try_from(id).unwrap_or_default(), owner)
            })
            .collect())
    }

    /// Waits until `workers` workers hold all 64 partitions, a fair share each.
    pub async fn wait_balanced(
        &self,
        schema: &str,
        workers: usize,
    ) -> Result<BTreeMap<u16, String>, BenchError> {
        let share = 64usize.div_ceil(workers);
        let deadline = Instant::now() + PATIENCE;
        loop {
            // The table appears with the first worker's runtime; until then, no owners.
            let owners = self.owners(schema).await.unwrap_or_default();
            let mut per_worker: BTreeMap<&str, usize> = BTreeMap::new();
            for owner in owners.values() {
                *per_worker.entry(owner).or_default() += 1;
            }
            if owners.len() == 64
                && per_worker.len() == workers
                && per_worker.values().all(|n| *n <= share)
            {
                return Ok(owners);
            }
            if Instant::now() > deadline {
                return Err(BenchError::Failed(format!(
                    "the partitions were not shared among {workers} workers within {} s: {per_worker:?}",
                    PATIENCE.as_secs()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The server's counters: transactions committed in this database, and WAL activity
    /// of the whole cluster.
    pub async fn counters(&self) -> Option<Counters> {
        let row = self
            .client
            .query_one(
                "SELECT d.xact_commit, w.wal_records, w.wal_bytes::bigint, w.wal_write, w.wal_sync,
                        w.wal_sync_time, w.wal_write_time
                 FROM pg_stat_database d, pg_stat_wal w WHERE d.datname = current_database()",
                &[],
            )
            .await
            .ok()?;
        Some(Counters {
            commits: row.get(0),
            wal_records: row.get(1),
            wal_bytes: row.get(2),
            wal_writes: row.get(3),
            wal_syncs: row.get(4),
            wal_sync_ms: row.get(5),
            wal_write_ms: row.get(6),
        })
    }

    /// Samples what this database's client backends are doing every `every` until
    /// `stop` is set; counts by state and wait event.
    pub fn sample(
        url: String,
        every: Duration,
        stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> tokio::task::JoinHandle<BTreeMap<String, u64>> {
        tokio::spawn(async move {
            let mut counts = BTreeMap::new();
            let Ok(db) = Db::connect(&url).await else {
                return counts;
            };
            let sql = "SELECT state, wait_event_type, wait_event FROM pg_stat_activity
                       WHERE datname = current_database() AND pid <> pg_backend_pid()
                       AND backend_type = 'client backend'";
            *counts.entry("samples".to_owned()).or_default() += 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(rows) = db.client.query(sql, &[]).await {
                    *counts.entry("samples".to_owned()).or_default() += 1;
                    for row in rows {
                        let state: Option<String> = row.get(0);
                        let kind: Option<String> = row.get(1);
                        let event: Option<String> = row.get(2);
                        let state = state.unwrap_or_default();
                        let key = match (state.as_str(), kind, event) {
                            ("idle", _, _) => "idle".to_owned(),
                            (state, None, _) => format!("{state}: on CPU"),
                            (state, Some(kind), event) => {
                                format!("{state}: {kind}:{}", event.unwrap_or_default())
                            }
                        };
                        *counts.entry(key).or_default() += 1;
                    }
                }
                tokio::time::sleep(every).await;
            }
            counts
        })
    }
}

/// PostgreSQL's counters at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Counters {
    pub commits: i64,
    pub wal_records: i64,
    pub wal_bytes: i64,
    pub wal_writes: i64,
    pub wal_syncs: i64,
    pub wal_sync_ms: f64,
    pub wal_write_ms: f64,
}

impl Counters {
    /// What happened between `self` and `later`, for a note.
    pub fn delta_note(&self, later: &Counters, span: Duration) -> String {
        let s = span.as_secs_f64();
        format!(
            "server over {s:.2}s (workers' start to their stop; stats of the whole cluster for WAL): {} transactions committed in the database, WAL: {} syncs ({:.1} ms in sync), {} writes ({:.1} ms), {} records, {:.1} MiB",
            later.commits - self.commits,
            later.wal_syncs - self.wal_syncs,
            later.wal_sync_ms - self.wal_sync_ms,
            later.wal_writes - self.wal_writes,
            later.wal_write_ms - self.wal_write_ms,
            later.wal_records - self.wal_records,
            (later.wal_bytes - self.wal_bytes) as f64 / (1024.0 * 1024.0),
        )
    }

    pub fn delta_json(&self, later: &Counters) -> Value {
        json!({
            "xact_commit": later.commits - self.commits,
            "wal_syncs": later.wal_syncs - self.wal_syncs,
            "wal_sync_ms": (later.wal_sync_ms - self.wal_sync_ms).round(),
            "wal_writes": later.wal_writes - self.wal_writes,
            "wal_bytes": later.wal_bytes - self.wal_bytes,
        })
    }
}

/// Busy and total CPU ticks of the whole machine (`/proc/stat`).
pub fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().take(8).sum();
    // idle + iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Some((total - idle, total))
}

/// Cores busy (of all) between two readings of [`machine_ticks`].
pub fn busy_cores(before: Option<(u64, u64)>, after: Option<(u64, u64)>) -> Option<f64> {
    let ((busy0, total0), (busy1, total1)) = (before?, after?);
    let total = total1.checked_sub(total0)? as f64;
    if total == 0.0 {
        return None;
    }
    Some((busy1 - busy0) as f64 / total * measure::cores() as f64)
}

/// Logs where the partitions went.
pub fn log_owners(owners: &BTreeMap<u16, String>) {
    let mut per: BTreeMap<&str, usize> = BTreeMap::new();
    for owner in owners.values() {
        *per.entry(owner).or_default() += 1;
    }
    let shares: Vec<String> = per.values().map(|n| n.to_string()).collect();
    progress!("  partitions per worker: {}", shares.join(", "));
}
