//! Worker *processes* sharing one PostgreSQL schema, under faults dealt with real signals:
//! - a zombie: a worker paused (SIGSTOP) past its lease loses its partitions to the others,
//!   which go on; resumed (SIGCONT), it writes nothing where it lost and gets a fair share
//!   back. A worker whose database connections are terminated mid-commit loses nothing
//!   and applies nothing twice. A worker paused *inside* a commit must not hold the others
//!   off its partitions either.
//! - failover time: from SIGKILL, and from a graceful stop (SIGTERM to a worker waiting in
//!   `Runtime::shutdown_on_signal`), to the first commit of the new owner of each of the
//!   worker's partitions, over repetitions (5 of each; `DURABLE_FAILOVER_REPETITIONS`
//!   sets another number); printed as a JSON line (run with `-- --nocapture` to see it)
//!   and asserted only against a generous bound.
//! - balancing: 1, then 4, then 2 workers, with the `partitions` table sampled as fast as
//!   it answers: one owner per lease at every sample, every partition leased and the
//!   shares fair once settled.
//! - the database going away (stopped for longer than a lease, then started again): the
//!   workers wait and go on, nothing acknowledged is lost or applied twice, and no worker
//!   panics or exits.
//!
//! Each test drives a steady workload into every partition from a client of the database
//! alone (this process runs no worker), samples the `partitions` table from a thread of
//! its own and checks invariants at every sample (see [`Watch::observe`]), and at the end
//! checks the data in the database: every orchestration acknowledged completed with the
//! output computed from its input, every history dense with each task resolved exactly
//! once, every entity operation applied exactly once, nothing left over.
//!
//! The workers are this test binary run again (`worker_process`, which does nothing unless
//! its environment says so). The tests run one at a time (`SERIAL`: they measure time and
//! load two cores on their own), each on a PostgreSQL cluster of its own; without
//! PostgreSQL they print a notice and pass, unless `DURABLE_REQUIRE_POSTGRES` is set.

use durable::prelude::*;
use durable::store::{
    HistoryEvent, InstanceQuery, InstanceRecord, KvStore, PARTITIONS, PostgresEngine,
    PostgresStore, Store, partition_of,
};
use durable::{Client, InstanceId};
use durable_testkit::postgres::server_or_skip;
use durable_testkit::{PATIENCE, block_on, child_env, wait_until};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The schema the workers share.
const SCHEMA: &str = "faults";
/// Set in a worker process: the connection string (with an `application_name` naming the
/// worker, so that its backends can be found in `pg_stat_activity`) and the lease time.
const URL_VAR: &str = "DURABLE_WORKER_FAULTS_URL";
const TTL_VAR: &str = "DURABLE_WORKER_FAULTS_TTL_MS";
/// The lease time of the workers: the runtime's default, given explicitly because the
/// tests reason about it.
const TTL: Duration = Duration::from_millis(1500);
/// How long after a worker is paused or killed a statement it had already sent may still
/// land (the server finishes it without the client).
const GRACE: Duration = Duration::from_millis(500);
/// A generous bound on a failover, asserted; the targets (2 s after SIGKILL, 1 s after a
/// graceful stop) are only reported.
const FAILOVER_BOUND: Duration = Duration::from_secs(10);
/// The entities the jobs count in.
const COUNTERS: u64 = 8;
/// How often the driver starts a job in each partition.
const PERIOD: Duration = Duration::from_millis(1000);

/// The tests run one at a time: each starts PostgreSQL and several worker processes, and
/// the failover figures mean little on a machine shared with another such test.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------------------
// The workload.

/// An LCG step: a job's output depends on both of its activities, in order.
fn mix(x: u64) -> u64 {
    x.wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407)
        >> 33
}

/// One orchestration of the steady workload.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Job {
    x: u64,
    /// Unique among the jobs of a test: what the job's counter records.
    op: u64,
    /// Whether it waits on a durable timer between its activities.
    nap: bool,
}

impl Job {
    fn counter(&self) -> String {
        format!("c{}", self.op % COUNTERS)
    }

    fn output(&self) -> u64 {
        mix(mix(self.x))
    }
}

#[activity]
async fn step(_ctx: ActivityContext, x: u64) -> Result<u64, Error> {
    // A few milliseconds, so that kills and pauses land on activities in flight.
    tokio::time::sleep(Duration::from_millis(1 + x % 10)).await;
    Ok(mix(x))
}

#[orchestrator]
async fn work(ctx: OrchestrationContext, job: Job) -> Result<u64, Error> {
    let a = ctx.call_activity(step, job.x).await?;
    if job.nap {
        ctx.sleep(Duration::from_millis(20)).await?;
    }
    let b = ctx.call_activity(step, a).await?;
    // The counters live in other partitions: the signal crosses through `messages`.
    ctx.entity::<Tally>(job.counter()).signal().add(job.op);
    Ok(b)
}

/// Records each operation it is given; one given twice is counted, not hidden.
#[derive(Default, Serialize, Deserialize)]
struct Tally {
    ops: BTreeSet<u64>,
    /// The operations given more than once, each time again.
    duplicates: Vec<u64>,
}

#[entity]
impl Tally {
    fn add(&mut self, op: u64) {
        if !self.ops.insert(op) {
            self.duplicates.push(op);
        }
    }
}

/// A worker process: runs until SIGTERM, then stops gracefully. Does nothing unless run
/// by a test as a worker.
#[test]
fn worker_process() {
    let Some([url, ttl]) = child_env([URL_VAR, TTL_VAR]) else {
        return;
    };
    let ttl = Duration::from_millis(ttl.parse().expect("a lease time in milliseconds"));
    block_on(async move {
        let runtime = Runtime::builder()
            .postgres_schema(url, SCHEMA)
            .lease_ttl(ttl)
            .register(step)
            .register(work)
            .register_entity::<Tally>()
            .start()
            .await
            .expect("the worker starts");
        runtime
            .shutdown_on_signal()
            .await
            .expect("the signal handlers install");
    });
}

// ---------------------------------------------------------------------------------------
// Worker processes.

struct Worker {
    child: Child,
    stderr: PathBuf,
    /// Whether it was killed (SIGKILL), so its exit is not checked.
    killed: bool,
}

impl Worker {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (`STOP`, `CONT`, `TERM`) with kill(1): the workspace forbids
    /// `unsafe`, so no libc.
    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

/// The worker processes of a test, by name. A worker's name is its `HOSTNAME`, which
/// starts its id in the `partitions` table (`name:pid:uuid`), and its `application_name`.
struct Fleet {
    url: String,
    prefix: &'static str,
    dir: tempfile::TempDir,
    workers: BTreeMap<String, Worker>,
    next: usize,
}

impl Fleet {
    fn new(url: &str, prefix: &'static str) -> Fleet {
        Fleet {
            url: url.to_owned(),
            prefix,
            dir: tempfile::tempdir().expect("a temporary directory"),
            workers: BTreeMap::new(),
            next: 0,
        }
    }

    /// Starts a new worker process; returns its name.
    fn spawn(&mut self) -> String {
        let name = format!("{}_w{}", self.prefix, self.next);
        self.next += 1;
        let stderr = self.dir.path().join(format!("{name}.stderr"));
        let file = std::fs::File::create(&stderr).expect("a file for the worker's stderr");
        let exe = std::env::current_exe().expect("the test binary knows its path");
        let child = Command::new(exe)
            .args([
                "worker_process",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(URL_VAR, format!("{} application_name={name}", self.url))
            .env(TTL_VAR, TTL.as_millis().to_string())
            .env("HOSTNAME", &name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("a worker process starts");
        self.workers.insert(
            name.clone(),
            Worker {
                child,
                stderr,
                killed: false,
            },
        );
        name
    }

    fn worker(&self, name: &str) -> &Worker {
        &self.workers[name]
    }

    /// The workers not stopped or killed.
    fn running(&mut self) -> Vec<String> {
        self.workers
            .iter_mut()
            .filter_map(|(name, worker)| {
                let exited = worker.child.try_wait().ok().flatten().is_some();
                (!worker.killed && !exited).then(|| name.clone())
            })
            .collect()
    }

    /// SIGKILL, and reaps the process.
    fn kill(&mut self, name: &str) {
        let worker = self.workers.get_mut(name).expect("a worker of this fleet");
        worker.child.kill().expect("SIGKILL");
        worker.child.wait().expect("the killed worker is reaped");
        worker.killed = true;
    }

    /// SIGTERM; returns once the worker exited, asserting that it exited cleanly.
    fn stop(&mut self, name: &str) -> Instant {
        let worker = self.workers.get_mut(name).expect("a worker of this fleet");
        worker.signal("TERM");
        let exited = wait_until(PATIENCE, || {
            worker.child.try_wait().is_ok_and(|status| status.is_some())
        });
        let at = Instant::now();
        if !exited {
            let _ = worker.child.kill();
        }
        let status = worker.child.wait().expect("the worker is reaped");
        assert!(
            exited && status.success(),
            "worker {name} did not stop cleanly after SIGTERM ({status}): {}",
            worker.stderr()
        );
        at
    }

    /// Asserts that every worker still runs (none exited on its own); for the tests where
    /// none was stopped.
    fn assert_all_running(&mut self) {
        for (name, worker) in &mut self.workers {
            if worker.killed {
                continue;
            }
            let status = worker.child.try_wait().expect("the worker's status");
            assert!(
                status.is_none(),
                "worker {name} exited on its own ({status:?}): {}",
                worker.stderr()
            );
        }
    }

    /// Stops every running worker gracefully, then asserts that none of them ever panicked.
    fn finish(mut self) {
        for name in self.running() {
            self.stop(&name);
        }
        for (name, worker) in &self.workers {
            let stderr = worker.stderr();
            assert!(
                !stderr.contains("panicked"),
                "worker {name} panicked:\n{stderr}"
            );
        }
    }
}

impl Drop for Fleet {
    /// A test that fails leaves no worker behind, and shows what the workers said.
    fn drop(&mut self) {
        for (name, worker) in &mut self.workers {
            if worker.child.try_wait().ok().flatten().is_none() {
                let _ = worker.child.kill();
                let _ = worker.child.wait();
            }
            if std::thread::panicking() {
                let stderr = worker.stderr();
                let status = worker.child.try_wait().ok().flatten();
                eprintln!("--- worker {name} ({status:?}), stderr:\n{stderr}");
            }
        }
    }
}

/// The worker of a partition owner's id (`name:pid:uuid`).
fn worker_name(owner: &str) -> &str {
    owner.split(':').next().unwrap_or(owner)
}

// ---------------------------------------------------------------------------------------
// A blocking connection of this process to the database (the sampler's, the checks').

struct Db {
    runtime: tokio::runtime::Runtime,
    url: String,
    client: Option<tokio_postgres::Client>,
}

impl Db {
    fn new(url: &str, name: &str) -> Db {
        Db {
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime"),
            url: format!("{url} application_name={name}"),
            client: None,
        }
    }

    /// Runs `sql`, connecting again first if the connection was lost.
    fn query(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, String> {
        if self
            .client
            .as_ref()
            .is_none_or(tokio_postgres::Client::is_closed)
        {
            let (client, connection) = self
                .runtime
                .block_on(tokio_postgres::connect(&self.url, tokio_postgres::NoTls))
                .map_err(|error| error.to_string())?;
            self.runtime.spawn(connection);
            self.client = Some(client);
        }
        let client = self.client.as_ref().expect("connected above");
        let rows = self.runtime.block_on(client.query(sql, params));
        rows.map_err(|error| {
            self.client = None;
            error.to_string()
        })
    }

    /// [`Db::query`] that must succeed.
    fn must(
        &mut self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Vec<tokio_postgres::Row> {
        self.query(sql, params)
            .unwrap_or_else(|error| panic!("{sql}: {error}"))
    }

    /// Waits until none of `worker`'s backends runs a statement (a paused worker's last
    /// statements end on the server), then tells whether one of them is inside a
    /// transaction, the worker paused in the middle of a commit: with the transaction's
    /// last statement.
    fn paused_transaction(&mut self, worker: &str) -> Option<String> {
        let running = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'";
        let settled = wait_until(PATIENCE, || {
            self.must(running, &[&worker])[0].get::<_, i64>(0) == 0
        });
        assert!(settled, "{worker}'s backends still run statements");
        let open = "SELECT left(regexp_replace(query, '\\s+', ' ', 'g'), 60) FROM pg_stat_activity
            WHERE application_name = $1 AND xact_start IS NOT NULL";
        self.must(open, &[&worker]).first().map(|row| row.get(0))
    }
}

// ---------------------------------------------------------------------------------------
// The sampler: the `partitions` table, read continuously from a thread of its own.

#[derive(Clone, Debug)]
struct Row {
    owner: Option<String>,
    epoch: i64,
    /// The lease is unexpired (database time).
    live: bool,
    /// `expires_at`, in seconds since the Unix epoch (`-inf` once released).
    expires: f64,
    commit_seq: i64,
    last_commit: i64,
}

impl Row {
    fn owned_by(&self, name: &str) -> bool {
        self.live
            && self
                .owner
                .as_deref()
                .is_some_and(|owner| worker_name(owner) == name)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// The owner, the epoch or the lease's liveness changed.
    Change,
    /// The first commit seen in this epoch.
    FirstCommit,
}

/// A moment of a partition's history, as sampled.
#[derive(Clone, Debug)]
struct Entry {
    at: Instant,
    owner: Option<String>,
    epoch: i64,
    kind: Kind,
}

/// What the test says of a worker, for the checks of each sample.
#[derive(Clone, Copy, Debug)]
enum Life {
    /// Stopped (SIGSTOP) or dead (SIGKILL, or exited) since the instant given, grace
    /// included: from then on no lease of it may be acquired, renewed or committed under.
    Frozen(Instant),
}

/// Tokens of commits are consecutive from a random 62-bit seed per worker: a worker's
/// tokens lie within this distance above the first one seen, and no other worker's do.
const TOKEN_SPAN: i64 = 1 << 40;

#[derive(Default)]
struct Watch {
    samples: u64,
    errors: u64,
    last_error: Option<String>,
    rows: Vec<Row>,
    at: Option<Instant>,
    entries: Vec<Vec<Entry>>,
    /// Per partition: the commit sequence when the current epoch began, and whether a
    /// commit has been seen in it.
    epoch_start: Vec<(i64, bool)>,
    /// Who held each (partition, epoch) ever sampled.
    epoch_owner: HashMap<(u16, i64), String>,
    /// The range of commit tokens seen of each worker (full id).
    tokens: BTreeMap<String, (i64, i64)>,
    lives: HashMap<String, Life>,
    /// How many partitions were leased at each sample.
    leased: Vec<(Instant, u8)>,
    violations: Vec<String>,
}

impl Watch {
    fn violation(&mut self, what: String) {
        if self.violations.len() < 50 {
            self.violations.push(what);
        }
    }

    /// Takes one sample in, checking at each partition:
    /// - a leased partition has an owner, and one owner per epoch ever (two workers
    ///   holding one partition at once would share an epoch, or one would not be fenced);
    /// - epochs and commit sequences never go back;
    /// - no worker paused or dead (past the grace for statements already sent) acquires,
    ///   renews or commits;
    /// - the last commit recorded is one of the owner's: a commit of another worker,
    ///   landed in a partition it had lost, would leave its token there.
    fn observe(&mut self, at: Instant, rows: Vec<Row>) {
        if rows.len() != usize::from(PARTITIONS) {
            self.violation(format!("{} partition rows", rows.len()));
            return;
        }
        let first = self.rows.is_empty();
        if first {
            self.entries = vec![Vec::new(); rows.len()];
            self.epoch_start = rows.iter().map(|row| (row.commit_seq, true)).collect();
        }
        for (index, row) in rows.iter().enumerate() {
            let partition = u16::try_from(index).expect("64 partitions");
            if row.live && row.owner.is_none() {
                self.violation(format!("partition {partition} leased without an owner"));
            }
            if let Some(owner) = &row.owner {
                let held = self
                    .epoch_owner
                    .entry((partition, row.epoch))
                    .or_insert_with(|| owner.clone());
                if held != owner {
                    let held = held.clone();
                    self.violation(format!(
                        "partition {partition} epoch {} held by {held} and by {owner}",
                        row.epoch
                    ));
                }
            }
            if first {
                self.entries[index].push(Entry {
                    at,
                    owner: row.owner.clone(),
                    epoch: row.epoch,
                    kind: Kind::Change,
                });
                continue;
            }
            let previous = self.rows[index].clone();
            self.check_progress(partition, at, &previous, row);
            self.check_token(partition, &previous, row);
            if row.epoch != previous.epoch {
                self.epoch_start[index] = (previous.commit_seq, false);
            }
            if row.epoch != previous.epoch
                || row.owner != previous.owner
                || row.live != previous.live
            {
                self.entries[index].push(Entry {
                    at,
                    owner: row.owner.clone(),
                    epoch: row.epoch,
                    kind: Kind::Change,
                });
            }
            let (start, committed) = self.epoch_start[index];
            if !committed && row.commit_seq > start {
                self.epoch_start[index].1 = true;
                self.entries[index].push(Entry {
                    at,
                    owner: row.owner.clone(),
                    epoch: row.epoch,
                    kind: Kind::FirstCommit,
                });
            }
        }
        let leased = rows.iter().filter(|row| row.live).count();
        self.leased
            .push((at, u8::try_from(leased).expect("64 partitions")));
        self.rows = rows;
        self.at = Some(at);
        self.samples += 1;
    }

    fn check_progress(&mut self, partition: u16, at: Instant, previous: &Row, row: &Row) {
        if row.epoch < previous.epoch {
            self.violation(format!(
                "partition {partition}: epoch went back from {} to {}",
                previous.epoch, row.epoch
            ));
        }
        if row.commit_seq < previous.commit_seq {
            self.violation(format!(
                "partition {partition}: commit_seq went back from {} to {}",
                previous.commit_seq, row.commit_seq
            ));
        }
        let Some(owner) = &row.owner else { return };
        let name = worker_name(owner);
        let Some(Life::Frozen(since)) = self.lives.get(name).copied() else {
            return;
        };
        if at < since {
            return;
        }
        if row.epoch != previous.epoch {
            self.violation(format!(
                "partition {partition}: acquired (epoch {}) by {name}, which is paused or dead",
                row.epoch
            ));
        } else if row.owner == previous.owner {
            if row.expires > previous.expires + 1e-3 {
                self.violation(format!(
                    "partition {partition}: lease renewed by {name}, which is paused or dead"
                ));
            }
            if row.commit_seq > previous.commit_seq {
                self.violation(format!(
                    "partition {partition}: committed to under {name}'s lease, while {name} is paused or dead"
                ));
            }
        }
    }

    fn check_token(&mut self, partition: u16, previous: &Row, row: &Row) {
        let token = row.last_commit;
        // A sample that shows a new owner may also show the previous owner's last commit,
        // landed before the takeover: only a commit within one owner's epoch is attributed.
        if token == previous.last_commit
            || token == 0
            || row.epoch != previous.epoch
            || row.owner != previous.owner
        {
            return;
        }
        let Some(owner) = row.owner.clone() else {
            return;
        };
        let by = self
            .tokens
            .iter()
            .find(|(_, (low, high))| token >= *low && token <= high.saturating_add(TOKEN_SPAN))
            .map(|(worker, _)| worker.clone());
        match by {
            Some(worker) if worker != owner => self.violation(format!(
                "partition {partition} (owner {owner}, epoch {}) holds commit token {token} of {worker}",
                row.epoch
            )),
            Some(worker) => {
                let range = self.tokens.get_mut(&worker).expect("found above");
                range.1 = range.1.max(token);
            }
            None => {
                self.tokens.insert(owner, (token, token));
            }
        }
    }

    /// The partitions `name` holds a lease on, with their epochs, at the last sample.
    fn owned_by(&self, name: &str) -> Vec<(u16, i64)> {
        (0..PARTITIONS)
            .zip(&self.rows)
            .filter(|(_, row)| row.owned_by(name))
            .map(|(partition, row)| (partition, row.epoch))
            .collect()
    }

    /// Whether every partition is leased, all to `workers`, each of which holds a fair
    /// share (at most 64 / n rounded up, and at least one).
    fn settled(&self, workers: &[String]) -> bool {
        if self.rows.len() != usize::from(PARTITIONS) || workers.is_empty() {
            return false;
        }
        let share = usize::from(PARTITIONS).div_ceil(workers.len());
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for row in &self.rows {
            let Some(owner) = row.owner.as_deref().filter(|_| row.live) else {
                return false;
            };
            *counts.entry(worker_name(owner)).or_default() += 1;
        }
        counts.len() == workers.len()
            && workers
                .iter()
                .all(|name| counts.get(name.as_str()).is_some_and(|n| *n <= share))
    }

    /// The shares at the last sample, by worker, for messages.
    fn shares(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for row in self.rows.iter().filter(|row| row.live) {
            if let Some(owner) = &row.owner {
                *counts.entry(worker_name(owner).to_owned()).or_default() += 1;
            }
        }
        counts
    }

    /// When the first commit in `partition` after `since`, in an epoch after `epoch`, by
    /// another worker than `old` was seen.
    fn taken_over(&self, partition: u16, since: Instant, epoch: i64, old: &str) -> Option<Instant> {
        self.entries[usize::from(partition)]
            .iter()
            .find(|entry| {
                entry.kind == Kind::FirstCommit
                    && entry.at >= since
                    && entry.epoch > epoch
                    && entry
                        .owner
                        .as_deref()
                        .is_some_and(|owner| worker_name(owner) != old)
            })
            .map(|entry| entry.at)
    }

    /// Whether `name` has made a first commit in some epoch it acquired after `since`.
    fn committed_since(&self, name: &str, since: Instant) -> bool {
        self.entries.iter().flatten().any(|entry| {
            entry.kind == Kind::FirstCommit
                && entry.at >= since
                && entry
                    .owner
                    .as_deref()
                    .is_some_and(|owner| worker_name(owner) == name)
        })
    }

    /// The fewest partitions leased at any sample since `since`, and how many samples.
    fn fewest_leased_since(&self, since: Instant) -> (u8, usize) {
        let window: Vec<u8> = self
            .leased
            .iter()
            .filter(|(at, _)| *at >= since)
            .map(|(_, leased)| *leased)
            .collect();
        (window.iter().copied().min().unwrap_or(0), window.len())
    }
}

const SAMPLE: &str =
    "SELECT id, owner, epoch, expires_at > now(), extract(epoch FROM expires_at)::float8,
        commit_seq, last_commit
    FROM faults.partitions JOIN faults.fences USING (id) ORDER BY id";

struct Sampler {
    watch: Arc<Mutex<Watch>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sampler {
    /// Samples `partitions` in a loop, `pause` apart (none: as fast as it answers).
    fn start(url: &str, pause: Duration) -> Sampler {
        let watch = Arc::new(Mutex::new(Watch::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut db = Db::new(url, "wf_sampler");
        let thread = {
            let (watch, stop) = (Arc::clone(&watch), Arc::clone(&stop));
            std::thread::spawn(move || {
                while !stop.load(Ordering::Acquire) {
                    match db.query(SAMPLE, &[]) {
                        Ok(rows) => {
                            let at = Instant::now();
                            let rows = rows.iter().map(row).collect();
                            lock(&watch).observe(at, rows);
                        }
                        Err(error) => {
                            let mut watch = lock(&watch);
                            watch.errors += 1;
                            watch.last_error = Some(error);
                            drop(watch);
                            // The database is away: look again soon.
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    if !pause.is_zero() {
                        std::thread::sleep(pause);
                    }
                }
            })
        };
        Sampler {
            watch,
            stop,
            thread: Some(thread),
        }
    }

    fn watch(&self) -> MutexGuard<'_, Watch> {
        lock(&self.watch)
    }

    /// Waits for a sample taken after this call.
    fn fresh(&self) -> MutexGuard<'_, Watch> {
        let asked = Instant::now();
        let fresh = wait_until(PATIENCE, || self.watch().at.is_some_and(|at| at > asked));
        assert!(fresh, "no sample of the partitions for {PATIENCE:?}");
        self.watch()
    }

    /// Waits until `workers` share the partitions fairly, every one leased; returns when.
    fn settled(&self, workers: &[String], what: &str) -> Instant {
        let settled = wait_until(PATIENCE, || self.watch().settled(workers));
        let watch = self.watch();
        assert!(
            settled,
            "{what}: the partitions never settled on {workers:?}; shares at the last sample: {:?}",
            watch.shares()
        );
        watch.at.expect("sampled")
    }

    fn freeze(&self, name: &str, since: Instant) {
        self.watch()
            .lives
            .insert(name.to_owned(), Life::Frozen(since + GRACE));
    }

    fn thaw(&self, name: &str) {
        self.watch().lives.remove(name);
    }

    /// Stops sampling; asserts that no sample broke an invariant.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.join().expect("the sampler thread");
        }
        let watch = self.watch();
        assert!(
            watch.violations.is_empty(),
            "the partitions table broke invariants:\n{}",
            watch.violations.join("\n")
        );
        watch.samples
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn row(row: &tokio_postgres::Row) -> Row {
    Row {
        owner: row.get(1),
        epoch: row.get(2),
        live: row.get(3),
        expires: row.get(4),
        commit_seq: row.get(5),
        last_commit: row.get(6),
    }
}

// ---------------------------------------------------------------------------------------
// The driver: a client of the database alone starts jobs in every partition.

/// What the driver asked for, and what was acknowledged.
#[derive(Default)]
struct Book {
    attempted: BTreeMap<String, Job>,
    acknowledged: BTreeSet<String>,
    refused: usize,
    last_refusal: Option<String>,
}

struct Driver {
    runtime: tokio::runtime::Runtime,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    book: Arc<Mutex<Book>>,
    client: Client,
}

/// The `n`-th job id of a test in `partition`.
fn id_in(tag: &str, partition: u16, n: u64) -> String {
    (0u32..)
        .map(|salt| format!("{tag}-p{partition}-{n}-{salt}"))
        .find(|id| partition_of(id) == partition)
        .expect("some salt lands in every partition")
}

impl Driver {
    /// Starts a job in each partition every [`PERIOD`] (a start waits for its answer, so
    /// a partition without an owner holds one start queued in `messages` meanwhile).
    fn start(url: &str, tag: &'static str) -> Driver {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        let client = runtime
            .block_on(Client::connect_postgres_schema(url, SCHEMA))
            .expect("a client of the database");
        let stop = Arc::new(AtomicBool::new(false));
        let book = Arc::new(Mutex::new(Book::default()));
        let ops = Arc::new(AtomicU64::new(0));
        let tasks = (0..PARTITIONS)
            .map(|partition| {
                let (client, stop, book, ops) = (
                    client.clone(),
                    Arc::clone(&stop),
                    Arc::clone(&book),
                    Arc::clone(&ops),
                );
                runtime.spawn(async move {
                    // Spread the partitions' starts over the period.
                    tokio::time::sleep(PERIOD * u32::from(partition) / u32::from(PARTITIONS)).await;
                    let mut n = 0;
                    while !stop.load(Ordering::Acquire) {
                        n += 1;
                        let id = id_in(tag, partition, n);
                        let job = Job {
                            x: mix(u64::from(partition) << 32 | n) % 1_000,
                            op: ops.fetch_add(1, Ordering::Relaxed),
                            nap: n % 4 == 0,
                        };
                        lock(&book).attempted.insert(id.clone(), job.clone());
                        let started = client.start_with_id(work, &id, job).await;
                        {
                            let mut book = lock(&book);
                            match started {
                                Ok(_) => {
                                    book.acknowledged.insert(id);
                                }
                                Err(error) => {
                                    book.refused += 1;
                                    book.last_refusal = Some(format!("{id}: {error}"));
                                }
                            }
                        }
                        tokio::time::sleep(PERIOD).await;
                    }
                })
            })
            .collect();
        Driver {
            runtime,
            stop,
            tasks,
            book,
            client,
        }
    }

    fn acknowledged(&self) -> usize {
        lock(&self.book).acknowledged.len()
    }

    /// Waits until `more` jobs more than now are acknowledged: the workload goes on.
    fn progresses(&self, more: usize, what: &str) {
        let target = self.acknowledged() + more;
        let went_on = wait_until(PATIENCE, || self.acknowledged() >= target);
        let book = lock(&self.book);
        assert!(
            went_on,
            "{what}: {} jobs acknowledged, not {target}; last refusal: {:?}",
            book.acknowledged.len(),
            book.last_refusal
        );
    }

    /// Stops starting jobs; returns what was started.
    fn finish(self) -> (Book, Client, tokio::runtime::Runtime) {
        self.stop.store(true, Ordering::Release);
        for task in self.tasks {
            self.runtime.block_on(task).expect("a driver task");
        }
        let book = std::mem::take(&mut *lock(&self.book));
        (book, self.client, self.runtime)
    }
}

// ---------------------------------------------------------------------------------------
// The checks of the data.

fn open_store(url: &str) -> PostgresStore {
    let engine = PostgresEngine::connect_shared(url, SCHEMA).expect("the database");
    KvStore::with_engine(engine, std::path::Path::new("postgres schema faults"))
        .expect("the schema's store")
}

fn all_instances(store: &PostgresStore, query: &InstanceQuery) -> Vec<InstanceRecord> {
    let mut records = Vec::new();
    let mut after: Option<InstanceId> = None;
    loop {
        let page = store
            .list_instances(query, after.as_ref(), 1_000)
            .expect("list instances");
        let Some(last) = page.last() else {
            return records;
        };
        after = Some(last.id.clone());
        records.extend(page);
    }
}

/// What the checks found, for the test's report.
#[derive(Debug)]
struct Checked {
    acknowledged: usize,
    completed: usize,
    refused: usize,
}

/// Stops the driver and checks everything it started, once it has run: every job
/// acknowledged (and any other that got in) completed with its computed output, every
/// history dense and consistent, each counter operation applied exactly once, nothing
/// left in the inboxes, activities, timers and `messages`.
fn check_data(url: &str, driver: Driver) -> Checked {
    let (book, client, runtime) = driver.finish();
    let store = open_store(url);
    let unfinished = InstanceQuery {
        statuses: Some(vec![
            RuntimeStatus::Pending,
            RuntimeStatus::Running,
            RuntimeStatus::Suspended,
        ]),
        ..InstanceQuery::default()
    };
    let ended = wait_until(PATIENCE, || all_instances(&store, &unfinished).is_empty());
    let left = all_instances(&store, &unfinished);
    assert!(
        ended,
        "{} jobs never ended, such as {:?}",
        left.len(),
        left.first().map(|record| (&record.id, record.status))
    );
    let instances = all_instances(&store, &InstanceQuery::default());
    let mut ops: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for record in &instances {
        let id = record.id.as_str();
        let job = book
            .attempted
            .get(id)
            .unwrap_or_else(|| panic!("{id}: an instance no one started"));
        assert_eq!(record.status, RuntimeStatus::Completed, "{id}: {record:?}");
        let output: u64 = serde_json::from_str(
            record
                .output
                .as_ref()
                .unwrap_or_else(|| panic!("{id}: completed without an output"))
                .as_str(),
        )
        .expect("a number");
        assert_eq!(output, job.output(), "{id}: the output of {job:?}");
        check_history(&store, record, job);
        ops.entry(job.counter()).or_default().insert(job.op);
    }
    let present: BTreeSet<&str> = instances.iter().map(|record| record.id.as_str()).collect();
    for id in &book.acknowledged {
        assert!(
            present.contains(id.as_str()),
            "{id}: acknowledged, then lost"
        );
    }
    // The counters' signals travel after their jobs ended.
    let expected: usize = ops.values().map(BTreeSet::len).sum();
    let counted = wait_until(PATIENCE, || counted_ops(&store).len() == expected);
    assert!(
        counted,
        "the counters hold {} operations, not {expected}",
        counted_ops(&store).len()
    );
    for (counter, (tally, duplicates)) in tallies(&store) {
        let twice: Vec<(&String, u16)> = duplicates
            .iter()
            .filter_map(|op| book.attempted.iter().find(|(_, job)| job.op == *op))
            .map(|(id, _)| (id, partition_of(id)))
            .collect();
        let entity = format!("@tally@{counter}");
        assert!(
            duplicates.is_empty(),
            "{counter} (partition {}): operations {duplicates:?} applied twice, signalled by \
             the jobs (with their partitions) {twice:?}",
            partition_of(&entity)
        );
        assert_eq!(
            tally,
            ops.remove(&counter).unwrap_or_default(),
            "{counter}: the operations of its jobs"
        );
    }
    assert!(ops.is_empty(), "counters never signalled: {ops:?}");
    let mut db = Db::new(url, "wf_checks");
    let drained = wait_until(PATIENCE, || {
        store.scan_inbox(None, 1).expect("the inbox").is_empty()
            && store
                .scan_activities(None, 1)
                .expect("activities")
                .is_empty()
            && store.scan_timers(None, 1).expect("timers").is_empty()
            && db.must("SELECT count(*) FROM faults.messages", &[])[0].get::<_, i64>(0) == 0
    });
    assert!(drained, "work left over after every job ended");
    drop((client, runtime));
    Checked {
        acknowledged: book.acknowledged.len(),
        completed: instances.len(),
        refused: book.refused,
    }
}

/// The history of a completed job: dense (the store's read checks that), as long as its
/// record says, started and completed once, two activities each scheduled and completed
/// once, the timer of a nap created and fired once.
fn check_history(store: &PostgresStore, record: &InstanceRecord, job: &Job) {
    let id = record.id.as_str();
    let history = store
        .history(&record.id, record.execution)
        .unwrap_or_else(|error| panic!("{id}: its history: {error}"));
    assert_eq!(
        history.len() as u64,
        record.history_len,
        "{id}: the history's length against its record"
    );
    let mut scheduled: BTreeMap<u64, u32> = BTreeMap::new();
    let mut completed: BTreeMap<u64, u32> = BTreeMap::new();
    let (mut started, mut ended, mut timers, mut fired, mut signals) = (0, 0, 0, 0, 0);
    for event in &history {
        match event {
            HistoryEvent::ExecutionStarted { .. } => started += 1,
            HistoryEvent::ExecutionCompleted { .. } => ended += 1,
            HistoryEvent::TaskScheduled { id: task, .. } => {
                *scheduled.entry(task.0).or_default() += 1;
            }
            HistoryEvent::TaskCompleted { id: task, .. } => {
                *completed.entry(task.0).or_default() += 1;
            }
            HistoryEvent::TimerCreated { .. } => timers += 1,
            HistoryEvent::TimerFired { .. } => fired += 1,
            HistoryEvent::EntitySignaled { .. } => signals += 1,
            HistoryEvent::TaskFailed { .. }
            | HistoryEvent::ExecutionFailed { .. }
            | HistoryEvent::ExecutionTerminated { .. } => {
                panic!("{id}: {event:?} in {history:?}")
            }
            _ => {}
        }
    }
    assert!(
        matches!(
            history.last(),
            Some(HistoryEvent::ExecutionCompleted { .. })
        ),
        "{id}: {history:?}"
    );
    assert_eq!(
        (started, ended, signals),
        (1, 1, 1),
        "{id}: started, ended and signalled once: {history:?}"
    );
    assert_eq!(scheduled.len(), 2, "{id}: two activities: {history:?}");
    assert!(
        scheduled.values().all(|n| *n == 1) && completed == scheduled,
        "{id}: each activity scheduled and completed once: {history:?}"
    );
    let naps = u32::from(job.nap);
    assert_eq!((timers, fired), (naps, naps), "{id}: {history:?}");
}

/// Each counter's operations and how many it was given twice.
fn tallies(store: &PostgresStore) -> BTreeMap<String, (BTreeSet<u64>, Vec<u64>)> {
    store
        .list_entities(None, None, 1_000)
        .expect("the entities")
        .into_iter()
        .map(|record| {
            let tally: Tally = record
                .state
                .as_ref()
                .map(|state| serde_json::from_str(state.as_str()).expect("a tally"))
                .unwrap_or_default();
            (record.id.key().to_owned(), (tally.ops, tally.duplicates))
        })
        .collect()
}

fn counted_ops(store: &PostgresStore) -> Vec<u64> {
    tallies(store)
        .into_values()
        .flat_map(|(ops, _)| ops)
        .collect()
}

// ---------------------------------------------------------------------------------------
// Helpers of the tests.

/// A small PRNG for the moments of faults; its seed is printed.
struct Prng(u64);

impl Prng {
    fn from_time() -> Prng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.subsec_nanos());
        let seed = u64::from(nanos) ^ u64::from(std::process::id());
        eprintln!("fault moments seeded with {seed}");
        Prng(seed | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// A delay in `low..high` milliseconds: when the next fault lands, at random.
    fn delay(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low))
    }
}

/// Starts `n` workers, a sampler and the driver; returns once the workers share the
/// partitions fairly.
fn start_fleet(
    url: &str,
    prefix: &'static str,
    n: usize,
    pause: Duration,
) -> (Fleet, Sampler, Driver) {
    let mut fleet = Fleet::new(url, prefix);
    let sampler = Sampler::start(url, pause);
    // One worker sets the schema up before the others start: workers started together
    // on a fresh schema race on its format version (see
    // `workers_started_together_on_a_fresh_schema_all_start`).
    let first = fleet.spawn();
    sampler.settled(&[first], "the first worker");
    for _ in 1..n {
        fleet.spawn();
    }
    let running = fleet.running();
    sampler.settled(&running, "at start");
    let driver = Driver::start(url, prefix);
    (fleet, sampler, driver)
}

/// Waits until every partition of `lost` (with the epoch it had) was taken over from
/// `old` and committed to by its new owner after `since`; returns how long each took.
fn takeovers(sampler: &Sampler, old: &str, lost: &[(u16, i64)], since: Instant) -> Vec<Duration> {
    let all = wait_until(PATIENCE, || {
        let watch = sampler.watch();
        lost.iter()
            .all(|(partition, epoch)| watch.taken_over(*partition, since, *epoch, old).is_some())
    });
    let watch = sampler.watch();
    let pending: Vec<u16> = lost
        .iter()
        .filter(|(partition, epoch)| watch.taken_over(*partition, since, *epoch, old).is_none())
        .map(|(partition, _)| *partition)
        .collect();
    assert!(
        all,
        "partitions of {old} not taken over and committed to in {PATIENCE:?}: {pending:?}; rows: {:?}",
        pending
            .iter()
            .map(|partition| &watch.rows[usize::from(*partition)])
            .collect::<Vec<_>>()
    );
    lost.iter()
        .map(|(partition, epoch)| {
            watch
                .taken_over(*partition, since, *epoch, old)
                .expect("checked above")
                - since
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The tests.

/// A worker paused past its lease (a long GC pause, a frozen VM) loses its partitions to
/// the others, which go on with them; resumed, it commits nothing where it lost, and gets
/// a fair share back. Then another worker's database connections are terminated again
/// and again, mid-commit: it goes on, and nothing is lost or applied twice.
#[test]
fn a_paused_worker_loses_its_partitions_and_writes_nothing_there_when_it_wakes() {
    let _serial = serial();
    let Some(server) = server_or_skip("a_paused_worker_loses_its_partitions") else {
        return;
    };
    let url = server.database("zombie").expect("a database");
    let mut rng = Prng::from_time();
    let (mut fleet, sampler, driver) = start_fleet(&url, "zombie", 3, Duration::from_millis(1));
    let names = fleet.running();
    driver.progresses(100, "before the pause");

    // The pause lands where its sessions have no transaction open (the next test shows
    // that is everywhere); otherwise it is resumed and paused again a moment later.
    let zombie = names[1].clone();
    let mut db = Db::new(&url, "wf_observer");
    let mut attempts = 0;
    let paused_at = loop {
        std::thread::sleep(rng.delay(10, 200));
        // On a loaded machine a worker may be between shares (it lost its leases to a
        // stall and takes a share again): pause it only while it holds some.
        if sampler.fresh().owned_by(&zombie).is_empty() {
            attempts += 1;
            assert!(attempts < 1000, "{zombie} never held partitions");
            continue;
        }
        fleet.worker(&zombie).signal("STOP");
        let at = Instant::now();
        if db.paused_transaction(&zombie).is_none() {
            break at;
        }
        fleet.worker(&zombie).signal("CONT");
        attempts += 1;
        assert!(attempts < 100, "every pause landed inside a commit");
    };
    sampler.freeze(&zombie, paused_at);
    let lost = sampler.fresh().owned_by(&zombie);
    assert!(!lost.is_empty(), "{zombie} held partitions when paused");
    let taken = takeovers(&sampler, &zombie, &lost, paused_at);
    let slowest = taken.iter().max().copied().unwrap_or_default();
    assert!(
        slowest < FAILOVER_BOUND,
        "takeover of a paused worker's partitions took {slowest:?}"
    );
    // The others went on with its partitions while it slept.
    driver.progresses(100, "while a worker is paused");
    fleet.worker(&zombie).signal("CONT");
    let resumed = Instant::now();
    sampler.thaw(&zombie);
    // Woken, it finds out it lost everything, and takes a fair share again.
    sampler.settled(&names, "after the paused worker resumed");
    let served = wait_until(PATIENCE, || {
        sampler.watch().committed_since(&zombie, resumed)
    });
    assert!(served, "{zombie} never committed again after it resumed");
    driver.progresses(100, "after the pause");

    // The database connections of another worker terminated for a while, aimed at its
    // open transactions: commits cut before, during and after `COMMIT`.
    let cut = names[0].clone();
    let storm_ends = Instant::now() + Duration::from_secs(2);
    let (mut in_commits, mut all) = (0, 0);
    let mut round = 0;
    while Instant::now() < storm_ends {
        round += 1;
        let filter = if round % 5 == 0 {
            // Now and then every connection: the lease and message threads' too.
            ""
        } else {
            "AND xact_start IS NOT NULL"
        };
        let terminated = db.must(
            &format!(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE application_name = $1 {filter}"
            ),
            &[&cut],
        )[0]
        .get::<_, i64>(0);
        if filter.is_empty() {
            all += terminated;
        } else {
            in_commits += terminated;
        }
        std::thread::sleep(rng.delay(5, 60));
    }
    assert!(
        in_commits > 0,
        "no connection of {cut} was cut inside a transaction"
    );
    sampler.settled(&names, "after the connections were cut");
    driver.progresses(100, "after the connections were cut");
    let commits_before = commit_seqs(&mut db, &cut);
    let cut_commits = wait_until(PATIENCE, || commit_seqs(&mut db, &cut) > commits_before);
    assert!(
        cut_commits,
        "{cut} never committed again after its connections were cut"
    );

    let checked = check_data(&url, driver);
    fleet.assert_all_running();
    fleet.finish();
    let samples = sampler.finish();
    assert_eq!(
        checked.refused, 0,
        "no start refused while the database was there"
    );
    eprintln!(
        "zombie: {} partitions taken over in at most {slowest:?} (pause attempts {}), {in_commits} connections cut inside a transaction and {all} others, {checked:?}, {samples} samples",
        lost.len(),
        attempts + 1
    );
}

/// The sum of the commit sequences of the partitions `name` holds.
fn commit_seqs(db: &mut Db, name: &str) -> i64 {
    db.must(
        "SELECT coalesce(sum(commit_seq), 0)::bigint
         FROM faults.partitions JOIN faults.fences USING (id)
         WHERE expires_at > now() AND split_part(owner, ':', 1) = $1",
        &[&name],
    )[0]
    .get(0)
}

/// A worker paused at any instant holds no lock the others need: every statement it sends
/// is a transaction of its own (a commit is one statement), so no pause leaves a
/// transaction open on the server — checked at many pauses at random instants of its work.
/// Paused for good, its partitions are taken over within the bound.
#[test]
fn a_worker_paused_at_any_instant_does_not_hold_its_partitions() {
    let _serial = serial();
    let Some(server) = server_or_skip("a_worker_paused_at_any_instant") else {
        return;
    };
    let url = server.database("inside").expect("a database");
    let mut rng = Prng::from_time();
    let (mut fleet, sampler, driver) = start_fleet(&url, "inside", 3, Duration::from_millis(1));
    let names = fleet.running();
    driver.progresses(100, "before the pause");
    let zombie = names[1].clone();
    let mut db = Db::new(&url, "wf_observer");
    let attempts = 40;
    for _ in 0..attempts {
        std::thread::sleep(rng.delay(1, 50));
        fleet.worker(&zombie).signal("STOP");
        let open = db.paused_transaction(&zombie);
        fleet.worker(&zombie).signal("CONT");
        assert_eq!(open, None, "{zombie}, paused, left a transaction open");
    }
    std::thread::sleep(rng.delay(1, 50));
    fleet.worker(&zombie).signal("STOP");
    let paused_at = Instant::now();
    let open = db.paused_transaction(&zombie);
    sampler.freeze(&zombie, paused_at);
    let lost = sampler.fresh().owned_by(&zombie);
    let mut blocked: BTreeSet<String> = BTreeSet::new();
    // Give the takeover the generous bound, no more: the paused worker stays paused.
    let all_taken = wait_until(FAILOVER_BOUND, || {
        for row in db.must(
            "SELECT application_name || ': ' || left(regexp_replace(query, '\\s+', ' ', 'g'), 60)
             FROM pg_stat_activity WHERE application_name = ANY($1) AND wait_event_type = 'Lock'",
            &[&names],
        ) {
            blocked.insert(row.get(0));
        }
        let watch = sampler.watch();
        lost.iter().all(|(partition, epoch)| {
            watch
                .taken_over(*partition, paused_at, *epoch, &zombie)
                .is_some()
        })
    });
    let pending: Vec<u16> = {
        let watch = sampler.watch();
        lost.iter()
            .filter(|(partition, epoch)| {
                watch
                    .taken_over(*partition, paused_at, *epoch, &zombie)
                    .is_none()
            })
            .map(|(partition, _)| *partition)
            .collect()
    };
    let sessions: Vec<String> = db
        .must(
            "SELECT application_name, state, coalesce(wait_event_type, '-'), coalesce(wait_event, '-'),
                    xact_start IS NOT NULL, left(regexp_replace(query, '\\s+', ' ', 'g'), 90)
             FROM pg_stat_activity WHERE application_name = ANY($1) ORDER BY 1",
            &[&names],
        )
        .iter()
        .map(|row| {
            format!(
                "{} {} (waits: {} {}, in a transaction: {}): {}",
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, String>(2),
                row.get::<_, String>(3),
                row.get::<_, bool>(4),
                row.get::<_, String>(5),
            )
        })
        .collect();
    let shares = sampler.watch().shares();
    fleet.worker(&zombie).signal("CONT");
    sampler.thaw(&zombie);
    // Resumed, the worker's commit ends and everything goes on: the data must hold
    // either way, and is checked before the verdict on the takeover.
    sampler.settled(&names, "after the paused worker resumed");
    let data = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check_data(&url, driver)));
    fleet.finish();
    sampler.finish();
    let data = data.map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    });
    assert!(
        all_taken && data.is_ok(),
        "with {zombie} paused (a transaction open: {open:?}), partitions {pending:?} of its {} \
         were not taken over within {FAILOVER_BOUND:?}; sessions seen waiting on locks: \
         {blocked:#?}; leases held then: {shares:?}; the workers' sessions then: {sessions:#?}; \
         the data after it resumed: {data:?}",
        lost.len()
    );
    eprintln!(
        "paused: no transaction open at {attempts} pauses and the last; sessions seen waiting on locks: {blocked:?}"
    );
}

/// Failover time, over repetitions: from SIGKILL of a worker, and from SIGTERM to a worker
/// that stops gracefully, to the first commit of the new owner of each of its partitions.
#[test]
fn failover_after_a_kill_and_after_a_graceful_stop_is_timely() {
    let _serial = serial();
    let Some(server) = server_or_skip("failover_after_a_kill_and_after_a_graceful_stop") else {
        return;
    };
    let repetitions: usize = std::env::var("DURABLE_FAILOVER_REPETITIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(5);
    let url = server.database("failover").expect("a database");
    let mut rng = Prng::from_time();
    let (mut fleet, sampler, driver) = start_fleet(&url, "failover", 3, Duration::from_millis(1));
    driver.progresses(100, "before the first kill");
    let (mut kills, mut stops) = (Vec::new(), Vec::new());
    let (mut kill_partitions, mut stop_partitions) = (Vec::new(), Vec::new());
    for repetition in 0..2 * repetitions {
        let graceful = repetition >= repetitions;
        let running = fleet.running();
        let victim = running[repetition % running.len()].clone();
        // A random moment of the steady workload.
        std::thread::sleep(rng.delay(20, 300));
        let owned = sampler.fresh().owned_by(&victim);
        assert!(!owned.is_empty(), "{victim} holds partitions");
        let since = Instant::now();
        if graceful {
            let exited = fleet.stop(&victim);
            sampler.freeze(&victim, exited - GRACE);
            // A graceful stop gives its leases back (`expires_at` = -infinity), so the
            // others need not wait for them to expire.
            let watch = sampler.fresh();
            for (partition, epoch) in &owned {
                let row = &watch.rows[usize::from(*partition)];
                assert!(
                    row.epoch > *epoch || row.expires == f64::NEG_INFINITY,
                    "{victim} stopped without releasing partition {partition}: {row:?}"
                );
            }
        } else {
            fleet.kill(&victim);
            sampler.freeze(&victim, since);
        }
        let taken = takeovers(&sampler, &victim, &owned, since);
        let slowest = taken.iter().max().copied().unwrap_or_default();
        assert!(
            slowest < FAILOVER_BOUND,
            "the partitions of {victim} were taken over after {slowest:?}"
        );
        let (all, partitions) = match graceful {
            true => (&mut stops, &mut stop_partitions),
            false => (&mut kills, &mut kill_partitions),
        };
        all.push(slowest);
        partitions.extend(taken);
        // A replacement, and the fair shares of three again.
        fleet.spawn();
        let running = fleet.running();
        sampler.settled(&running, "after a replacement joined");
    }
    driver.progresses(64, "after the failovers");
    let checked = check_data(&url, driver);
    fleet.finish();
    let samples = sampler.finish();
    let figures = serde_json::json!({
        "test": "worker_failover",
        "workers": 3,
        "lease_ttl_ms": TTL.as_millis(),
        "repetitions": repetitions,
        "kill": summary(&kills),
        "kill_per_partition": summary(&kill_partitions),
        "graceful": summary(&stops),
        "graceful_per_partition": summary(&stop_partitions),
        "targets_ms": { "kill": 2000, "graceful": 1000 },
        "jobs_completed": checked.completed,
        "samples": samples,
    });
    println!("{figures}");
    eprintln!("{figures}");
}

/// p50, p99 and max of `durations`, in milliseconds.
fn summary(durations: &[Duration]) -> serde_json::Value {
    let mut ms: Vec<f64> = durations.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    // Nearest rank.
    let rank = |p: f64| {
        let index = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len().max(1)) - 1;
        ms.get(index).map_or(0.0, |v| (v * 10.0).round() / 10.0)
    };
    serde_json::json!({
        "n": ms.len(),
        "p50_ms": rank(0.50),
        "p99_ms": rank(0.99),
        "max_ms": rank(1.0),
    })
}

/// 1 worker, then 4, then 2 (one stopped gracefully, one killed, at once), while jobs run
/// everywhere: at every sample one owner per lease, and once settled every partition
/// leased, at every sample, in fair shares.
#[test]
fn partitions_rebalance_fairly_as_workers_come_and_go() {
    let _serial = serial();
    let Some(server) = server_or_skip("partitions_rebalance_fairly") else {
        return;
    };
    let url = server.database("balance").expect("a database");
    // Sampled as fast as the database answers.
    let (mut fleet, sampler, driver) = start_fleet(&url, "balance", 1, Duration::ZERO);
    driver.progresses(64, "with one worker");
    let steady = |what: &str| {
        // Once settled, every partition stays leased (no lease lapses for want of a
        // renewal) over a second of samples.
        let since = Instant::now();
        let enough = wait_until(PATIENCE, || {
            sampler
                .watch()
                .at
                .is_some_and(|at| at >= since + Duration::from_secs(1))
        });
        assert!(enough, "{what}: no samples");
        let (fewest, samples) = sampler.watch().fewest_leased_since(since);
        assert_eq!(
            fewest, 64,
            "{what}: a partition unleased among {samples} samples of a settled fleet"
        );
    };
    steady("one worker");

    for _ in 0..3 {
        fleet.spawn();
    }
    let four = fleet.running();
    let grown = Instant::now();
    let settled = sampler.settled(&four, "four workers");
    assert_eq!(
        sampler
            .watch()
            .shares()
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![16; 4]
    );
    eprintln!("1 -> 4 workers settled in {:?}", settled - grown);
    steady("four workers");
    driver.progresses(64, "with four workers");

    // Two leave at once: one gracefully, one killed.
    let (graceful, killed) = (four[1].clone(), four[2].clone());
    let shrunk = Instant::now();
    fleet.kill(&killed);
    sampler.freeze(&killed, shrunk);
    let exited = fleet.stop(&graceful);
    sampler.freeze(&graceful, exited);
    let two = fleet.running();
    assert_eq!(two.len(), 2);
    let settled = sampler.settled(&two, "two workers");
    assert_eq!(
        sampler
            .watch()
            .shares()
            .values()
            .copied()
            .collect::<Vec<_>>(),
        vec![32; 2]
    );
    eprintln!("4 -> 2 workers settled in {:?}", settled - shrunk);
    steady("two workers");
    driver.progresses(64, "with two workers");

    let checked = check_data(&url, driver);
    fleet.finish();
    let samples = sampler.finish();
    eprintln!("balance: {checked:?}, {samples} samples");
}

/// The database stopped (connections cut) for longer than a lease, then started again,
/// with work in flight: the workers wait and go on, everything acknowledged before and
/// during completes correctly and once, and no worker panics or exits.
#[test]
fn workers_wait_out_the_database_going_away_and_lose_nothing() {
    let _serial = serial();
    if std::env::var_os(durable_testkit::postgres::SERVER_VAR).is_some() {
        eprintln!(
            "workers_wait_out_the_database_going_away: skipped, needs a cluster of its own to stop"
        );
        return;
    }
    let Some(server) = server_or_skip("workers_wait_out_the_database_going_away") else {
        return;
    };
    let url = server.database("away").expect("a database");
    let (mut fleet, sampler, driver) = start_fleet(&url, "away", 3, Duration::from_millis(1));
    let names = fleet.running();
    driver.progresses(100, "before the database goes away");
    let before = driver.acknowledged();
    server.stop().expect("the cluster stops");
    // The outage itself: longer than a lease, so that every lease has expired when the
    // database is back.
    std::thread::sleep(2 * TTL);
    server.restart().expect("the cluster starts again");
    let back = Instant::now();
    sampler.settled(&names, "after the database came back");
    driver.progresses(100, "after the database came back");
    fleet.assert_all_running();
    let checked = check_data(&url, driver);
    assert!(checked.acknowledged > before);
    fleet.assert_all_running();
    fleet.finish();
    let samples = sampler.finish();
    eprintln!(
        "away: settled {:?} after the restart, {checked:?}, {samples} samples",
        back.elapsed()
    );
}

/// Workers of a deployment start together, on a fresh schema the first time: every one
/// of them must start. (In-process stores suffice: a worker opens its store so, and the
/// race is in that opening.)
#[test]
fn workers_started_together_on_a_fresh_schema_all_start() {
    let _serial = serial();
    let Some(server) = server_or_skip("workers_started_together_on_a_fresh_schema") else {
        return;
    };
    let url = server.database("together").expect("a database");
    let mut failures = Vec::new();
    for round in 0..20 {
        let schema = format!("fresh_{round}");
        let barrier = std::sync::Barrier::new(4);
        let opened: Vec<Result<(), String>> = std::thread::scope(|scope| {
            let openers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        barrier.wait();
                        let engine = PostgresEngine::connect_shared(&url, &schema)
                            .map_err(|error| error.to_string())?;
                        KvStore::with_engine(engine, std::path::Path::new(&schema))
                            .map(drop)
                            .map_err(|error| error.to_string())
                    })
                })
                .collect();
            openers
                .into_iter()
                .map(|opener| opener.join().expect("an opener"))
                .collect()
        });
        failures.extend(
            opened
                .into_iter()
                .filter_map(Result::err)
                .map(|error| format!("{schema}: {error}")),
        );
    }
    assert!(
        failures.is_empty(),
        "stores opened together on a fresh schema failed ({} of 80): {failures:#?}",
        failures.len()
    );
}
