//! [`PostgresEngine`]: the key-value engine of the store over PostgreSQL (feature
//! `postgres`), so that [`PostgresStore`] is the same [`KvStore`] as the embedded stores —
//! one codec, one conformance suite — with its data in a PostgreSQL schema.
//!
//! One table per schema, `kv (space smallint, key bytea, value bytea, PRIMARY KEY (space,
//! key))`. `bytea` compares byte by byte, shorter first on a tie, exactly as the codec's keys
//! must order, so a scan is a range of the primary key. A write is one transaction: the
//! deletes (`unnest` of arrays) and the puts (`INSERT … ON CONFLICT DO UPDATE`), each a
//! single statement whatever the batch's size; with PostgreSQL's default
//! `synchronous_commit = on` it returns once the commit is flushed to the WAL.
//!
//! The [`Store`](crate::Store) contract is blocking, so the engine runs tokio-postgres on
//! a runtime of its own (one worker thread, which drives both connections) and blocks the
//! calling thread on it: callers are the runtime's writer thread and tokio's blocking pool,
//! never an async task. Writes take one connection in turn; reads share another (its
//! queries are pipelined).
//!
//! This is the single-process store: the partitions, leases and fenced commits that let
//! several worker processes share one database build on it.

use crate::Error;
use crate::codec::Space;
use crate::kv::{KvEngine, KvOp, KvStore, Scan, Visitor};
use crate::store::Durability;
use std::collections::HashMap;
use std::future::Future;
use std::ops::Bound;
use std::sync::{Mutex, PoisonError};
use tokio_postgres::{Client, NoTls};

/// A [`KvStore`] in a PostgreSQL schema.
pub type PostgresStore = KvStore<PostgresEngine>;

/// How many rows one scan query reads at a time.
const SCAN_PAGE: i64 = 512;

/// The key-value engine over one schema of a PostgreSQL database.
pub struct PostgresEngine {
    /// Runs the connections; taken only on drop.
    runtime: Option<tokio::runtime::Runtime>,
    writer: Mutex<Client>,
    reader: Client,
    /// The quoted, schema-qualified table name.
    table: String,
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
    /// Connects, and creates the schema and its table if they do not exist.
    ///
    /// # Errors
    /// As [`PostgresStore::connect`].
    pub fn connect(url: &str, schema: &str) -> Result<PostgresEngine, Error> {
        check_schema_name(schema)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("durable-postgres")
            .enable_all()
            .build()
            .map_err(Error::Io)?;
        let connect = |url: String| async move {
            let (client, connection) = tokio_postgres::connect(&url, NoTls)
                .await
                .map_err(unavailable)?;
            tokio::spawn(async move {
                if let Err(error) = connection.await {
                    tracing::warn!(%error, "a connection to PostgreSQL ended");
                }
            });
            Ok::<_, Error>(client)
        };
        let writer = runtime.block_on(connect(url.to_owned()))?;
        let reader = runtime.block_on(connect(url.to_owned()))?;
        let table = format!("\"{schema}\".kv");
        let create = format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
             CREATE TABLE IF NOT EXISTS {table} (
                 space smallint NOT NULL,
                 key bytea NOT NULL,
                 value bytea NOT NULL,
                 PRIMARY KEY (space, key)
             )"
        );
        runtime
            .block_on(writer.batch_execute(&create))
            .map_err(unavailable)?;
        // One runtime per schema, as fjall's lock file allows one process per directory:
        // a session lock, held by the writer's connection, so it goes when the process does.
        let locked: bool = runtime
            .block_on(writer.query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&format!("durable schema {schema}")],
            ))
            .map_err(unavailable)?
            .get(0);
        if !locked {
            return Err(Error::SchemaInUse(schema.to_owned()));
        }
        Ok(PostgresEngine {
            runtime: Some(runtime),
            writer: Mutex::new(writer),
            reader,
            table,
        })
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
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let _ = runtime.block_on(writer.batch_execute("SELECT pg_advisory_unlock_all()"));
            });
        });
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
        let row = self
            .block_on(self.reader.query_opt(&sql, &[&space_id(space), &key]))
            .map_err(unavailable)?;
        Ok(row.map(|row| row.get(0)))
    }

    fn scan(
        &self,
        space: Space,
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
            let sql = format!(
                "SELECT key, value FROM {} WHERE space = $1 AND {from} AND {to} ORDER BY key LIMIT $4",
                self.table
            );
            let rows = self
                .block_on(self.reader.query(
                    &sql,
                    &[&space_id(space), &from_value, &to_value, &SCAN_PAGE],
                ))
                .map_err(unavailable)?;
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

    fn write(&self, ops: Vec<KvOp>) -> Result<(), Error> {
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
        let (mut delete_spaces, mut delete_keys) = (Vec::new(), Vec::new());
        for ((space, key), value) in last {
            match value {
                Some(value) => {
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
        let delete = format!(
            "DELETE FROM {table} WHERE (space, key) IN (SELECT * FROM unnest($1::smallint[], $2::bytea[]))",
            table = self.table
        );
        let put = format!(
            "INSERT INTO {table} (space, key, value)
             SELECT * FROM unnest($1::smallint[], $2::bytea[], $3::bytea[])
             ON CONFLICT (space, key) DO UPDATE SET value = excluded.value",
            table = self.table
        );
        let mut writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        self.block_on(async {
            let transaction = writer.transaction().await?;
            if !delete_keys.is_empty() {
                transaction
                    .execute(&delete, &[&delete_spaces, &delete_keys])
                    .await?;
            }
            if !put_keys.is_empty() {
                transaction
                    .execute(&put, &[&put_spaces, &put_keys, &put_values])
                    .await?;
            }
            transaction.commit().await
        })
        .map_err(unavailable)
    }
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

fn unavailable(error: tokio_postgres::Error) -> Error {
    Error::Unavailable(error.to_string())
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
