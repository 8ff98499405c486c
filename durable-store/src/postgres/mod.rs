//! [`PostgresEngine`]: the key-value engine of the store over PostgreSQL (feature
//! `postgres`), so that [`PostgresStore`] is the same [`KvStore`] as the embedded stores —
//! one codec, one conformance suite — with its data in a PostgreSQL schema.
//!
//! One table per schema, `kv (space smallint, key bytea, value bytea, PRIMARY KEY (space,
//! key))`. `bytea` compares byte by byte, shorter first on a tie, exactly as the codec's keys
//! must order, so a scan is a range of the primary key. A write is one statement, prepared
//! once and a transaction of its own (one round trip): the deletes (`unnest` of arrays) and
//! the puts (`INSERT … ON CONFLICT DO UPDATE`) as data-modifying `WITH` queries, whatever
//! the batch's size; with PostgreSQL's default `synchronous_commit = on` it returns once
//! the commit is flushed to the WAL.
//!
//! The [`Store`](crate::Store) contract is blocking, so the engine runs tokio-postgres on
//! a runtime of its own (one worker thread, which drives both connections) and blocks the
//! calling thread on it: callers are the runtime's writer thread and tokio's blocking pool,
//! never an async task. Writes take one connection in turn; reads share another (its
//! queries are pipelined).
//!
//! [`PostgresStore::connect`] is the single-process store: one runtime per schema.
//! Several worker processes share a schema through *partition leases*
//! ([`PostgresEngine::connect_shared`]): a `partitions` table of [`PARTITIONS`] rows, each
//! owned by one worker until its lease expires (database time) or is released, with an
//! epoch that grows at every change of owner. A write of a partition's owner is fenced
//! ([`PostgresEngine::write_fenced`]): in the same transaction it checks that the worker
//! still holds every partition at the epoch it acquired, so a worker that lost one (paused
//! past its lease, cut off) applies nothing.

use crate::Error;
use crate::codec::Space;
use crate::kv::{KvEngine, KvOp, KvStore, Scan, Visitor};
use crate::partition::PARTITIONS;
use crate::store::Durability;
use std::collections::HashMap;
use std::future::Future;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio_postgres::{Client, NoTls, Statement};

mod cluster;

/// A [`KvStore`] in a PostgreSQL schema.
pub type PostgresStore = KvStore<PostgresEngine>;

/// How long a lease statement waits for a row lock before it gives up for this round.
const CONTROL_LOCK_WAIT: Duration = Duration::from_millis(500);

/// How many rows one scan query reads at a time.
const SCAN_PAGE: i64 = 512;

/// A worker's hold on one partition: valid while the partition's epoch is this one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The partition, `0..PARTITIONS`.
    pub partition: u16,
    /// The partition's epoch when this worker acquired it.
    pub epoch: i64,
}

/// One fenced commit of a worker (see [`PostgresEngine::commit_fenced`]).
#[derive(Debug)]
pub struct Commit<'a> {
    /// The worker committing.
    pub worker: &'a str,
    /// The leases it must still hold: every partition whose data it changes, or whose
    /// messages it consumes.
    pub fence: &'a [Lease],
    /// The changes.
    pub ops: Vec<KvOp>,
    /// Messages to instances of other partitions.
    pub send: &'a [Outgoing],
    /// Polled messages this commit consumes, `(partition, seq)`.
    pub consume: &'a [(u16, i64)],
    /// Answers to requests sent from other processes, `(request, body)`.
    pub replies: &'a [(i64, Vec<u8>)],
    /// Recorded in the fenced partitions' rows: a non-zero number, new for each commit, by
    /// which [`PostgresEngine::committed`] finds out whether it landed.
    pub token: i64,
}

/// A message to an instance of another partition, written with the sender's commit (the
/// target's inbox is in the same database: no outbox to relay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The target instance's partition ([`partition_of`](crate::partition_of)).
    pub partition: u16,
    /// The target instance.
    pub target: String,
    /// The message, encoded.
    pub body: Vec<u8>,
}

/// A message [`PostgresEngine::poll_messages`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Polled {
    /// The target's partition.
    pub partition: u16,
    /// Its number in the partition: what consuming it names.
    pub seq: i64,
    /// The target instance.
    pub target: String,
    /// The message, encoded.
    pub body: Vec<u8>,
}

/// How far a poller has read: every message of a transaction older than every running
/// one (below `pg_snapshot_xmin`) up to `(xid, seq)` is delivered, and the newer ones it
/// delivered already are remembered, not delivered again. A row that an older, slower
/// transaction commits later is still ahead of the horizon, so it is never skipped — as a
/// plain `seq > last` cursor would skip it.
#[derive(Debug, Default)]
pub struct Horizon {
    xid: u64,
    seq: i64,
    delivered: std::collections::BTreeSet<(u64, i64)>,
}

/// The key-value engine over one schema of a PostgreSQL database.
pub struct PostgresEngine {
    /// Runs the connections; taken only on drop.
    runtime: Option<tokio::runtime::Runtime>,
    /// Where to connect again when a connection is lost.
    url: String,
    /// The schema, held by this engine alone when `exclusive`.
    schema: String,
    exclusive: bool,
    /// The connection for writes, taken in turn; `None` or closed until reconnected.
    writer: Mutex<Option<Writer>>,
    /// The connection for reads, shared (its queries are pipelined).
    reader: Mutex<Option<Arc<Reader>>>,
    /// The quoted, schema-qualified table names.
    table: String,
    partitions: String,
    fences: String,
    messages: String,
    workers: String,
    replies: String,
    id_blocks: String,
    /// The `LISTEN`/`NOTIFY` channel that tells pollers a message was sent.
    channel: String,
    /// The connection for leases and membership, apart from the writer's, so a renewal
    /// never waits behind a commit.
    control: Mutex<Option<Client>>,
    /// Woken at each notification on `channel` (see [`PostgresEngine::wait_for_messages`]).
    listener: Mutex<Option<Client>>,
    notified: Arc<tokio::sync::Notify>,
}

impl PostgresStore {
    /// Connects to the database `url` names (a libpq connection string or URL, such as
    /// `postgres://app@db/orders` or `host=/run/postgresql dbname=orders`) and uses schema
    /// `schema` (a task hub: several can share a database), creating it if needed.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached or refuses; an invalid
    /// schema name; [`Error::IncompatibleFormat`] for data of another format.
    pub fn connect(url: &str, schema: &str) -> Result<PostgresStore, Error> {
        let engine = PostgresEngine::connect(url, schema)?;
        let place = std::path::PathBuf::from(format!("postgres schema {schema}"));
        KvStore::with_engine(engine, &place)
    }
}

impl PostgresEngine {
    /// Connects, and creates the schema and its tables if they do not exist; holds the
    /// schema for this engine alone (a second one gets [`Error::SchemaInUse`]).
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub fn connect(url: &str, schema: &str) -> Result<PostgresEngine, Error> {
        PostgresEngine::open(url, schema, true)
    }

    /// Connects without holding the schema: for workers that share it, each writing only
    /// partitions it leases ([`PostgresEngine::acquire`], [`PostgresEngine::write_fenced`]).
    ///
    /// # Errors
    /// As [`PostgresStore::connect`], but never [`Error::SchemaInUse`].
    pub fn connect_shared(url: &str, schema: &str) -> Result<PostgresEngine, Error> {
        PostgresEngine::open(url, schema, false)
    }

    fn open(url: &str, schema: &str, exclusive: bool) -> Result<PostgresEngine, Error> {
        check_schema_name(schema)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("durable-postgres")
            .enable_all()
            .build()
            .map_err(Error::Io)?;
        let table = format!("\"{schema}\".kv");
        let engine = PostgresEngine {
            runtime: Some(runtime),
            url: url.to_owned(),
            schema: schema.to_owned(),
            exclusive,
            writer: Mutex::new(None),
            reader: Mutex::new(None),
            partitions: format!("\"{schema}\".partitions"),
            messages: format!("\"{schema}\".messages"),
            fences: format!("\"{schema}\".fences"),
            workers: format!("\"{schema}\".workers"),
            replies: format!("\"{schema}\".replies"),
            id_blocks: format!("\"{schema}\".id_blocks"),
            channel: format!("durable_{schema}"),
            control: Mutex::new(None),
            listener: Mutex::new(None),
            notified: Arc::new(tokio::sync::Notify::new()),
            table: table.clone(),
        };
        let writer = engine.new_client()?;
        // Engines that open one schema at once would race on the catalog (`IF NOT EXISTS`
        // is not atomic): one at a time, under a transaction's advisory lock.
        let create = format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock(hashtextextended('durable schema setup {schema}', 0));
             CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS {table} (
                 space smallint NOT NULL,
                 key bytea NOT NULL,
                 value bytea NOT NULL,
                 PRIMARY KEY (space, key)
             );
             -- The partition of the instance a key belongs to, in the keyspaces a worker
             -- taking a partition up reads (`codec::key_partition`): it reads only the
             -- partition's rows.
             ALTER TABLE {table} ADD COLUMN IF NOT EXISTS part smallint;
             CREATE INDEX IF NOT EXISTS kv_part ON {table} (space, part, key)
                 WHERE part IS NOT NULL;
             CREATE TABLE IF NOT EXISTS \"{schema}\".partitions (
                 id smallint PRIMARY KEY,
                 owner text,
                 epoch bigint NOT NULL DEFAULT 0,
                 expires_at timestamptz NOT NULL DEFAULT '-infinity'
             );
             -- The epoch is a key: a commit's fence takes a key-share lock on its
             -- partitions' rows, which a takeover (a new epoch) waits for and a renewal
             -- (the expiry alone) does not.
             CREATE UNIQUE INDEX IF NOT EXISTS partitions_epoch
                 ON \"{schema}\".partitions (id, epoch);
             -- What each fenced commit records, apart from the leases so that recording
             -- it does not lock them: how many, and the last one's token.
             CREATE TABLE IF NOT EXISTS \"{schema}\".fences (
                 id smallint PRIMARY KEY,
                 commit_seq bigint NOT NULL DEFAULT 0,
                 last_commit bigint NOT NULL DEFAULT 0
             );
             INSERT INTO \"{schema}\".fences (id)
                 SELECT generate_series(0, {last}) ON CONFLICT DO NOTHING;
             CREATE TABLE IF NOT EXISTS \"{schema}\".workers (
                 id text PRIMARY KEY,
                 expires_at timestamptz NOT NULL
             );
             CREATE TABLE IF NOT EXISTS \"{schema}\".replies (
                 request bigint PRIMARY KEY,
                 body bytea NOT NULL,
                 created_at timestamptz NOT NULL DEFAULT now()
             );
             CREATE SEQUENCE IF NOT EXISTS \"{schema}\".id_blocks;
             -- A new schema gets its format version here, under the setup lock: engines
             -- opening it together must not see each other's first rows as data of no
             -- version.
             INSERT INTO {table} (space, key, value)
                 SELECT 0, '{version_key}'::bytea, '\\x{version:08x}'::bytea
                 WHERE NOT EXISTS (SELECT 1 FROM {table});
             INSERT INTO \"{schema}\".partitions (id)
                 SELECT generate_series(0, {last}) ON CONFLICT DO NOTHING;
             CREATE TABLE IF NOT EXISTS \"{schema}\".messages (
                 partition smallint NOT NULL,
                 seq bigint GENERATED ALWAYS AS IDENTITY,
                 xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
                 target text NOT NULL,
                 body bytea NOT NULL,
                 PRIMARY KEY (partition, seq)
             );
             COMMIT",
            last = PARTITIONS - 1,
            version_key = crate::codec::FORMAT_VERSION_KEY,
            version = crate::kv::FORMAT_VERSION,
        );
        engine
            .block_on(writer.batch_execute(&create))
            .map_err(unavailable)?;
        engine.hold_schema(&writer)?;
        engine.fill_partitions(&writer)?;
        let writer = engine.prepare_writer(writer)?;
        *engine.writer.lock().unwrap_or_else(PoisonError::into_inner) = Some(writer);
        Ok(engine)
    }

    /// Sets the partition of the rows written before the schema had the column (none in a
    /// schema made by this version). Engines opening the schema together set the same.
    fn fill_partitions(&self, writer: &Client) -> Result<(), Error> {
        let spaces: Vec<i16> = [Space::Inbox, Space::Activities, Space::Timers]
            .into_iter()
            .map(space_id)
            .collect();
        let select = format!(
            "SELECT space, key FROM {} WHERE part IS NULL AND space = ANY($1) LIMIT 10000",
            self.table
        );
        let update = format!(
            "UPDATE {table} SET part = p.part
             FROM unnest($1::smallint[], $2::bytea[], $3::smallint[]) AS p (space, key, part)
             WHERE {table}.space = p.space AND {table}.key = p.key",
            table = self.table
        );
        loop {
            let rows = self
                .block_on(writer.query(&select, &[&spaces]))
                .map_err(unavailable)?;
            if rows.is_empty() {
                return Ok(());
            }
            let (mut row_spaces, mut keys, mut parts) = (Vec::new(), Vec::new(), Vec::new());
            for row in &rows {
                let space: i16 = row.get(0);
                let key: Vec<u8> = row.get(1);
                let part = space_of(space)
                    .and_then(|space| crate::codec::key_partition(space, &key))
                    .map_or(-1, |part| i16::try_from(part).unwrap_or(-1));
                row_spaces.push(space);
                keys.push(key);
                parts.push(part);
            }
            self.block_on(writer.execute(&update, &[&row_spaces, &keys, &parts]))
                .map_err(unavailable)?;
        }
    }

    /// A new connection, driven by the engine's runtime.
    fn new_client(&self) -> Result<Client, Error> {
        let url = self.url.clone();
        self.block_on(async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls)
                .await
                .map_err(unavailable)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "a connection to PostgreSQL ended");
                }
            });
            // Statements are prepared once, but planned at every execution: a generic
            // plan made while a table was small (a new schema) would keep scanning it
            // whole once it is large.
            client
                .batch_execute("SET plan_cache_mode = force_custom_plan")
                .await
                .map_err(unavailable)?;
            Ok(client)
        })
    }

    /// One runtime per schema, as fjall's lock file allows one process per directory: a
    /// session lock on the writer's connection, so it goes when the process does (and must
    /// be taken again on a new connection).
    fn hold_schema(&self, writer: &Client) -> Result<(), Error> {
        if !self.exclusive {
            return Ok(());
        }
        let locked: bool = self
            .block_on(writer.query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&format!("durable schema {}", self.schema)],
            ))
            .map_err(unavailable)?
            .get(0);
        if locked {
            Ok(())
        } else {
            Err(Error::SchemaInUse(self.schema.clone()))
        }
    }

    /// The writer's connection, connected again if it was lost (the server restarted, the
    /// network dropped it): a lost database is an error of the calls made while it is
    /// gone, not of every later one.
    fn writer(&self) -> Result<MutexGuard<'_, Option<Writer>>, Error> {
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        if writer
            .as_ref()
            .is_none_or(|writer| writer.client.is_closed())
        {
            *writer = None;
            let client = self.new_client()?;
            self.hold_schema(&client)?;
            *writer = Some(self.prepare_writer(client)?);
        }
        Ok(writer)
    }

    /// The control connection (leases, membership), connected again if it was lost.
    fn control(&self) -> Result<MutexGuard<'_, Option<Client>>, Error> {
        let mut control = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        if control.as_ref().is_none_or(Client::is_closed) {
            *control = None;
            let client = self.new_client()?;
            // Renewals must not wait behind a row another process keeps locked.
            self.block_on(client.batch_execute(&format!(
                "SET lock_timeout = {}",
                CONTROL_LOCK_WAIT.as_millis()
            )))
            .map_err(unavailable)?;
            *control = Some(client);
        }
        Ok(control)
    }

    /// The writer's connection with its commit statement prepared (once per connection:
    /// a commit is then a single round trip, see [`PostgresEngine::commit_statement`]).
    fn prepare_writer(&self, client: Client) -> Result<Writer, Error> {
        let commit = self
            .block_on(client.prepare(&self.commit_statement()))
            .map_err(unavailable)?;
        Ok(Writer { client, commit })
    }

    /// The readers' connection, connected again if it was lost.
    fn reader(&self) -> Result<Arc<Reader>, Error> {
        let mut reader = self.reader.lock().unwrap_or_else(PoisonError::into_inner);
        match reader.as_ref() {
            Some(current) if !current.client.is_closed() => Ok(Arc::clone(current)),
            _ => {
                let fresh = Arc::new(Reader {
                    client: self.new_client()?,
                    statements: Mutex::default(),
                });
                *reader = Some(Arc::clone(&fresh));
                Ok(fresh)
            }
        }
    }

    /// Runs `sql`, prepared once per reader connection, on the readers' connection.
    fn read(
        &self,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>, Error> {
        let reader = self.reader()?;
        self.block_on(async {
            let statement = reader.statement(sql).await?;
            reader.client.query(&statement, params).await
        })
        .map_err(unavailable)
    }

    /// Takes `partition` for `worker` until `ttl` from now (database time), if it is free:
    /// never held, released, or its lease expired. The epoch grows, fencing off the
    /// previous owner. `None` when another worker holds it.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn acquire(
        &self,
        worker: &str,
        partition: u16,
        ttl: Duration,
    ) -> Result<Option<Lease>, Error> {
        Ok(self
            .take_over(worker, partition, ttl)?
            .map(|(lease, _)| lease))
    }

    /// [`PostgresEngine::acquire`], also telling how the previous lease ended: `true`
    /// when it expired (its worker died or stalled) rather than being released or never
    /// held.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn take_over(
        &self,
        worker: &str,
        partition: u16,
        ttl: Duration,
    ) -> Result<Option<(Lease, bool)>, Error> {
        let sql = format!(
            "WITH previous AS (
                 SELECT id, expires_at <> '-infinity' AS expired FROM {partitions}
                 WHERE id = $2 AND expires_at < now() FOR UPDATE SKIP LOCKED)
             UPDATE {partitions} p SET owner = $1, epoch = p.epoch + 1,
                 expires_at = now() + make_interval(secs => $3)
             FROM previous WHERE p.id = previous.id RETURNING p.epoch, previous.expired",
            partitions = self.partitions
        );
        let id = partition_id(partition)?;
        let writer = self.control()?;
        let writer = writer.as_ref().ok_or_else(lost)?;
        let row = self
            .block_on(async {
                writer
                    .query_opt(&sql, &[&worker, &id, &ttl.as_secs_f64()])
                    .await
            })
            .map_err(unavailable)?;
        Ok(row.map(|row| {
            let lease = Lease {
                partition,
                epoch: row.get(0),
            };
            (lease, row.get(1))
        }))
    }

    /// Extends the leases `worker` still holds to `ttl` from now; returns those (a lease
    /// missing from the answer was lost: another worker took the partition).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn renew(
        &self,
        worker: &str,
        leases: &[Lease],
        ttl: Duration,
    ) -> Result<Vec<Lease>, Error> {
        let (ids, epochs) = fence_arrays(leases)?;
        let sql = format!(
            "UPDATE {} SET expires_at = now() + make_interval(secs => $4)
             WHERE owner = $1 AND (id, epoch) IN (SELECT * FROM unnest($2::smallint[], $3::bigint[]))
             RETURNING id, epoch",
            self.partitions
        );
        let writer = self.control()?;
        let writer = writer.as_ref().ok_or_else(lost)?;
        let rows = self
            .block_on(async {
                writer
                    .query(&sql, &[&worker, &ids, &epochs, &ttl.as_secs_f64()])
                    .await
            })
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| Lease {
                partition: u16::try_from(row.get::<_, i16>(0)).unwrap_or_default(),
                epoch: row.get(1),
            })
            .collect())
    }

    /// Gives `lease` up at once (a graceful hand-over): another worker may acquire it now.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn release(&self, worker: &str, lease: Lease) -> Result<(), Error> {
        let sql = format!(
            "UPDATE {} SET expires_at = '-infinity' WHERE id = $1 AND epoch = $2 AND owner = $3",
            self.partitions
        );
        let id = partition_id(lease.partition)?;
        let writer = self.control()?;
        let writer = writer.as_ref().ok_or_else(lost)?;
        self.block_on(writer.execute(&sql, &[&id, &lease.epoch, &worker]))
            .map_err(unavailable)?;
        Ok(())
    }

    /// Applies `ops` as [`KvEngine::write`] does, if and only if `worker` still holds every
    /// lease in `fence` at its epoch; checked inside the same transaction, so a takeover
    /// either waits for this commit or makes it apply nothing.
    ///
    /// # Errors
    /// [`Error::Fenced`] naming the partitions lost (nothing was applied);
    /// [`Error::Unavailable`].
    pub fn write_fenced(&self, worker: &str, fence: &[Lease], ops: Vec<KvOp>) -> Result<(), Error> {
        self.write_fenced_with_messages(worker, fence, ops, &[], &[])
    }

    /// [`PostgresEngine::write_fenced`], which also sends `send` (to other partitions'
    /// instances) and consumes the polled messages `consume` (`(partition, seq)`), all in
    /// the one transaction: a message is consumed exactly once, with the turn it feeds.
    ///
    /// # Errors
    /// As [`PostgresEngine::write_fenced`].
    pub fn write_fenced_with_messages(
        &self,
        worker: &str,
        fence: &[Lease],
        ops: Vec<KvOp>,
        send: &[Outgoing],
        consume: &[(u16, i64)],
    ) -> Result<(), Error> {
        self.commit_fenced(Commit {
            worker,
            fence,
            ops,
            send,
            consume,
            replies: &[],
            token: 0,
        })
    }

    /// Applies a [`Commit`]: its changes, messages sent and consumed and replies, in one
    /// transaction, if and only if its worker still holds every lease of its fence.
    ///
    /// # Errors
    /// As [`PostgresEngine::write_fenced`]. After [`Error::Unavailable`] the outcome is
    /// unknown until [`PostgresEngine::committed`] tells it.
    pub fn commit_fenced(&self, commit: Commit<'_>) -> Result<(), Error> {
        let (ids, epochs) = fence_arrays(commit.fence)?;
        let messages = Messages::of(commit.send, commit.consume, commit.replies)?;
        let outcome = self.transact(
            commit.ops,
            Some(Fence {
                worker: commit.worker,
                ids,
                epochs,
                token: commit.token,
            }),
            Some(messages),
        )?;
        match outcome {
            lost if lost.is_empty() => Ok(()),
            lost => Err(Error::Fenced {
                partitions: lost
                    .into_iter()
                    .map(|id| u16::try_from(id).unwrap_or_default())
                    .collect(),
            }),
        }
    }

    /// Blocks this thread on `future`, run by the engine's runtime.
    fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        match &self.runtime {
            Some(runtime) => runtime.block_on(future),
            None => unreachable!("the runtime is taken only when the engine is dropped"),
        }
    }
}

impl Drop for PostgresEngine {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        // Give the schema back before returning, so that a store opened next finds it free
        // (closing the connection frees it too, but later, when the server notices). The
        // last handle may be dropped inside an async task, where blocking on a runtime
        // panics: a thread of its own may.
        let writer = self
            .writer
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(writer) = writer.as_ref().filter(|writer| !writer.client.is_closed()) {
            std::thread::scope(|scope| {
                scope.spawn(|| {
                    let _ = runtime.block_on(
                        writer
                            .client
                            .batch_execute("SELECT pg_advisory_unlock_all()"),
                    );
                });
            });
        }
        runtime.shutdown_background();
    }
}

impl KvEngine for PostgresEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn durability(&self) -> Durability {
        Durability::Fsync
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let sql = format!(
            "SELECT value FROM {} WHERE space = $1 AND key = $2",
            self.table
        );
        let rows = self.read(&sql, &[&space_id(space), &key])?;
        Ok(rows.first().map(|row| row.get(0)))
    }

    fn get_many(&self, space: Space, keys: &[&[u8]]) -> Result<Vec<Option<Vec<u8>>>, Error> {
        let sql = format!(
            "SELECT wanted.at, kv.value
             FROM unnest($2::bytea[]) WITH ORDINALITY AS wanted (key, at)
             JOIN {} kv ON kv.space = $1 AND kv.key = wanted.key",
            self.table
        );
        let mut values = vec![None; keys.len()];
        for row in self.read(&sql, &[&space_id(space), &keys])? {
            let at: i64 = row.get(0);
            if let Some(value) = usize::try_from(at - 1)
                .ok()
                .and_then(|at| values.get_mut(at))
            {
                *value = Some(row.get(1));
            }
        }
        Ok(values)
    }

    fn scan(
        &self,
        space: Space,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), Error> {
        self.scan_rows(space, None, lower, upper, visit)
    }

    fn scan_partition(
        &self,
        space: Space,
        partition: u16,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), Error> {
        self.scan_rows(space, Some(partition_id(partition)?), lower, upper, visit)
    }

    fn write(&self, ops: Vec<KvOp>) -> Result<(), Error> {
        self.transact(ops, None, None).map(|_| ())
    }
}

impl PostgresEngine {
    /// The rows of `space` within the bounds, in key order, of one partition if `part`
    /// says which (its own index: the rows of other partitions are not read).
    fn scan_rows(
        &self,
        space: Space,
        part: Option<i16>,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), Error> {
        let mut lower: Bound<Vec<u8>> = lower.map(<[u8]>::to_vec);
        let upper: Bound<Vec<u8>> = upper.map(<[u8]>::to_vec);
        loop {
            let (from, from_value) = match &lower {
                Bound::Included(key) => ("key >= $2", key.clone()),
                Bound::Excluded(key) => ("key > $2", key.clone()),
                Bound::Unbounded => ("key >= $2", Vec::new()),
            };
            let (to, to_value) = match &upper {
                Bound::Included(key) => ("key <= $3", Some(key.clone())),
                Bound::Excluded(key) => ("key < $3", Some(key.clone())),
                Bound::Unbounded => ("$3::bytea IS NULL", None),
            };
            let of_part = match part {
                Some(_) => "part = $5",
                None => "$5::smallint IS NULL",
            };
            let sql = format!(
                "SELECT key, value FROM {} WHERE space = $1 AND {of_part} AND {from} AND {to}
                 ORDER BY key LIMIT $4",
                self.table
            );
            let rows = self.read(
                &sql,
                &[&space_id(space), &from_value, &to_value, &SCAN_PAGE, &part],
            )?;
            let full = rows.len() as i64 == SCAN_PAGE;
            for row in &rows {
                let key: &[u8] = row.get(0);
                let value: &[u8] = row.get(1);
                if let Scan::Stop = visit(key, value)? {
                    return Ok(());
                }
            }
            match rows.last() {
                Some(last) if full => lower = Bound::Excluded(last.get::<_, Vec<u8>>(0)),
                _ => return Ok(()),
            }
        }
    }
}

/// The leases a fenced write must still hold: the worker, and the partitions with their
/// epochs.
struct Fence<'a> {
    worker: &'a str,
    ids: Vec<i16>,
    epochs: Vec<i64>,
    /// Recorded in every fenced partition's row, so that a commit whose outcome was lost
    /// with its connection can be looked up ([`PostgresEngine::committed`]).
    token: i64,
}

impl PostgresEngine {
    /// Applies `ops` in one transaction, first checking `fence` in it; rolls back,
    /// applying nothing, when the fence finds partitions lost, and returns them.
    fn transact(
        &self,
        ops: Vec<KvOp>,
        fence: Option<Fence<'_>>,
        messages: Option<Messages>,
    ) -> Result<Vec<i16>, Error> {
        // Of two operations on one key the later wins; PostgreSQL would refuse one
        // statement that changes a row twice.
        let mut last: HashMap<(i16, Vec<u8>), Option<Vec<u8>>> = HashMap::new();
        for op in ops {
            match op {
                KvOp::Put(space, key, value) => last.insert((space_id(space), key), Some(value)),
                KvOp::Delete(space, key) => last.insert((space_id(space), key), None),
            };
        }
        let (mut put_spaces, mut put_keys, mut put_values) = (Vec::new(), Vec::new(), Vec::new());
        let mut put_parts: Vec<Option<i16>> = Vec::new();
        let (mut delete_spaces, mut delete_keys) = (Vec::new(), Vec::new());
        for ((space, key), value) in last {
            match value {
                Some(value) => {
                    put_parts.push(
                        space_of(space)
                            .and_then(|space| crate::codec::key_partition(space, &key))
                            .and_then(|part| i16::try_from(part).ok()),
                    );
                    put_spaces.push(space);
                    put_keys.push(key);
                    put_values.push(value);
                }
                None => {
                    delete_spaces.push(space);
                    delete_keys.push(key);
                }
            }
        }
        let fence = fence.unwrap_or(Fence {
            worker: "",
            ids: Vec::new(),
            epochs: Vec::new(),
            token: 0,
        });
        let messages = messages.unwrap_or_default();
        let mut writer = self.writer()?;
        let writer = writer.as_mut().ok_or_else(lost)?;
        let row = self
            .block_on(writer.client.query_one(
                &writer.commit,
                &[
                    &fence.worker,
                    &fence.ids,
                    &fence.epochs,
                    &fence.token,
                    &delete_spaces,
                    &delete_keys,
                    &put_spaces,
                    &put_keys,
                    &put_values,
                    &messages.send_partitions,
                    &messages.send_targets,
                    &messages.send_bodies,
                    &messages.consume_partitions,
                    &messages.consume_seqs,
                    &messages.reply_requests,
                    &messages.reply_bodies,
                    &self.channel,
                    &put_parts,
                ],
            ))
            .map_err(unavailable)?;
        let held: Vec<i16> = row.get(0);
        Ok(fence
            .ids
            .iter()
            .filter(|id| !held.contains(id))
            .copied()
            .collect())
    }

    /// The one statement of every write, prepared once per connection: no `BEGIN` and
    /// `COMMIT`, it is a transaction of its own, so a commit is one round trip, and a
    /// process paused or cut off in the middle of it holds no lock (the server runs the
    /// statement to its end alone).
    ///
    /// `held` takes a key-share lock on the fence's partitions' rows at their epochs (a
    /// takeover, which writes a new epoch, waits for the commit; a renewal does not) and
    /// `bumped` records the commit in their `fences` rows. Every change after that is
    /// conditional on `fenced.ok`: all of the fence held, so a commit that lost a partition
    /// changes nothing but returns which it still holds. An empty fence (the store of one
    /// process) always holds. The scalar subqueries on `fenced` are evaluated once, before
    /// the rows they guard.
    fn commit_statement(&self) -> String {
        format!(
            "WITH held AS (
                 SELECT id FROM {partitions}
                 WHERE owner = $1
                   AND (id, epoch) IN (SELECT * FROM unnest($2::smallint[], $3::bigint[]))
                 FOR KEY SHARE),
             bumped AS (
                 UPDATE {fences} SET commit_seq = commit_seq + 1, last_commit = $4::bigint
                 WHERE id IN (SELECT id FROM held) RETURNING id),
             fenced AS (
                 SELECT count(*) = (SELECT count(DISTINCT id) FROM unnest($2::smallint[]) id) AS ok
                 FROM bumped),
             deleted AS (
                 DELETE FROM {table}
                 WHERE (space, key) IN (SELECT * FROM unnest($5::smallint[], $6::bytea[]))
                   AND (SELECT ok FROM fenced)),
             put AS (
                 INSERT INTO {table} (space, key, value, part)
                 SELECT * FROM unnest($7::smallint[], $8::bytea[], $9::bytea[], $18::smallint[])
                 WHERE (SELECT ok FROM fenced)
                 ON CONFLICT (space, key) DO UPDATE SET value = excluded.value),
             sent AS (
                 INSERT INTO {messages} (partition, target, body)
                 SELECT * FROM unnest($10::smallint[], $11::text[], $12::bytea[])
                 WHERE (SELECT ok FROM fenced)),
             consumed AS (
                 DELETE FROM {messages}
                 WHERE (partition, seq) IN (SELECT * FROM unnest($13::smallint[], $14::bigint[]))
                   AND (SELECT ok FROM fenced)),
             replied AS (
                 INSERT INTO {replies} (request, body)
                 SELECT * FROM unnest($15::bigint[], $16::bytea[])
                 WHERE (SELECT ok FROM fenced)
                 ON CONFLICT (request) DO UPDATE SET body = excluded.body)
             SELECT array(SELECT id FROM bumped),
                    (SELECT count(*) FROM (
                         SELECT pg_notify($17::text, '')
                         WHERE (cardinality($11::text[]) > 0 OR cardinality($15::bigint[]) > 0)
                           AND (SELECT ok FROM fenced)) notified)",
            partitions = self.partitions,
            fences = self.fences,
            table = self.table,
            messages = self.messages,
            replies = self.replies,
        )
    }
}

/// The readers' connection and the statements prepared on it, by their text.
struct Reader {
    client: Client,
    statements: Mutex<HashMap<String, Statement>>,
}

impl Reader {
    /// `sql` prepared on this connection: once, then from the cache (a statement sent as
    /// text is prepared again at every call, a round trip of its own).
    async fn statement(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        let cached = self
            .statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(sql)
            .cloned();
        if let Some(statement) = cached {
            return Ok(statement);
        }
        let statement = self.client.prepare(sql).await?;
        self.statements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }
}

impl std::ops::Deref for Reader {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

/// The writer's connection and its prepared statements.
struct Writer {
    client: Client,
    commit: Statement,
}

/// The messages a fenced write sends and consumes, as query parameters.
#[derive(Default)]
struct Messages {
    send_partitions: Vec<i16>,
    send_targets: Vec<String>,
    send_bodies: Vec<Vec<u8>>,
    consume_partitions: Vec<i16>,
    consume_seqs: Vec<i64>,
    reply_requests: Vec<i64>,
    reply_bodies: Vec<Vec<u8>>,
}

impl Messages {
    fn of(
        send: &[Outgoing],
        consume: &[(u16, i64)],
        replies: &[(i64, Vec<u8>)],
    ) -> Result<Messages, Error> {
        Ok(Messages {
            send_partitions: send
                .iter()
                .map(|message| partition_id(message.partition))
                .collect::<Result<_, _>>()?,
            send_targets: send.iter().map(|message| message.target.clone()).collect(),
            send_bodies: send.iter().map(|message| message.body.clone()).collect(),
            consume_partitions: consume
                .iter()
                .map(|(partition, _)| partition_id(*partition))
                .collect::<Result<_, _>>()?,
            consume_seqs: consume.iter().map(|(_, seq)| *seq).collect(),
            reply_requests: replies.iter().map(|(request, _)| *request).collect(),
            reply_bodies: replies.iter().map(|(_, body)| body.clone()).collect(),
        })
    }
}

impl PostgresEngine {
    /// The messages to `partitions` past `horizon`, oldest transaction first, at most
    /// `limit`; moves the horizon (see [`Horizon`]). A message stays until a write
    /// consumes it, so a poller that restarts from a fresh horizon finds the unconsumed
    /// ones again.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn poll_messages(
        &self,
        partitions: &[u16],
        horizon: &mut Horizon,
        limit: usize,
    ) -> Result<Vec<Polled>, Error> {
        let ids = partitions
            .iter()
            .map(|partition| partition_id(*partition))
            .collect::<Result<Vec<_>, _>>()?;
        let sql = format!(
            "SELECT partition, seq, xid::text, target, body,
                    pg_snapshot_xmin(pg_current_snapshot())::text
             FROM {} WHERE partition = ANY($1) AND (xid, seq) > ($2::text::xid8, $3)
             ORDER BY xid, seq LIMIT $4",
            self.messages
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self.read(
            &sql,
            &[&ids, &horizon.xid.to_string(), &horizon.seq, &limit],
        )?;
        let number = |text: &str| text.parse::<u64>().unwrap_or(0);
        let mut polled = Vec::new();
        let mut settled = true;
        for row in &rows {
            let xid = number(row.get::<_, &str>(2));
            let stable = number(row.get::<_, &str>(5));
            let seq: i64 = row.get(1);
            // Below the oldest running transaction nothing can commit any more: that
            // prefix is final, and the horizon moves past it.
            settled &= xid < stable;
            if settled {
                horizon.xid = xid;
                horizon.seq = seq;
                if horizon.delivered.remove(&(xid, seq)) {
                    continue; // delivered while it was still above the horizon
                }
            } else if !horizon.delivered.insert((xid, seq)) {
                continue;
            }
            polled.push(Polled {
                partition: u16::try_from(row.get::<_, i16>(0)).unwrap_or_default(),
                seq,
                target: row.get(3),
                body: row.get(4),
            });
        }
        let (xid, seq) = (horizon.xid, horizon.seq);
        horizon
            .delivered
            .retain(|delivered| *delivered > (xid, seq));
        Ok(polled)
    }
}

/// A partition number as stored.
fn partition_id(partition: u16) -> Result<i16, Error> {
    if partition >= PARTITIONS {
        return Err(Error::Backend(format!(
            "partition {partition} does not exist: a schema has {PARTITIONS}"
        )));
    }
    Ok(i16::try_from(partition).unwrap_or(i16::MAX))
}

/// The partitions and epochs of `leases`, as query parameters.
fn fence_arrays(leases: &[Lease]) -> Result<(Vec<i16>, Vec<i64>), Error> {
    let ids = leases
        .iter()
        .map(|lease| partition_id(lease.partition))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((ids, leases.iter().map(|lease| lease.epoch).collect()))
}

/// The number a keyspace is stored under. Stored data depends on it: never renumber.
fn space_id(space: Space) -> i16 {
    match space {
        Space::Meta => 0,
        Space::Instances => 1,
        Space::History => 2,
        Space::Inbox => 3,
        Space::Activities => 4,
        Space::Timers => 5,
        Space::Entities => 6,
    }
}

/// The keyspace stored as `id`.
fn space_of(id: i16) -> Option<Space> {
    Space::ALL.into_iter().find(|space| space_id(*space) == id)
}

/// A connection slot found empty right after it was filled: cannot happen, but is an
/// error rather than a panic.
fn lost() -> Error {
    Error::Unavailable("the connection to PostgreSQL was lost".into())
}

fn unavailable(error: tokio_postgres::Error) -> Error {
    // The server's own message says more than the client's "db error".
    match error.as_db_error() {
        Some(db) => Error::Unavailable(format!(
            "{} {}: {}",
            db.severity(),
            db.code().code(),
            db.message()
        )),
        None => Error::Unavailable(error.to_string()),
    }
}

/// A schema name goes into SQL quoted: letters, digits and `_` only, so quoting is enough.
fn check_schema_name(schema: &str) -> Result<(), Error> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if valid {
        Ok(())
    } else {
        Err(Error::InvalidSchema(schema.to_owned()))
    }
}
