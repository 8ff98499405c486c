//! What worker processes sharing a schema need of the database besides fenced writes:
//! membership (a heartbeat row per live worker, so each knows its fair share of the
//! partitions), blocks of numbers for ids, the outcome of a commit whose connection was
//! lost, messages and replies for requests from other processes, and the `LISTEN` that
//! wakes a poller when a message is sent.

use super::{Outgoing, PostgresEngine, lost, partition_id, unavailable};
use crate::Error;
use crate::partition::{PARTITIONS, PartitionSet};
use std::sync::PoisonError;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};

/// How many numbers one [`PostgresEngine::id_block`] hands out.
const ID_BLOCK: u64 = 1 << 32;

impl PostgresEngine {
    /// Records that `worker` is alive until `ttl` from now (database time) and returns how
    /// many workers are alive, itself included; forgets workers long gone.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn heartbeat(&self, worker: &str, ttl: Duration) -> Result<usize, Error> {
        let upsert = format!(
            "INSERT INTO {} (id, expires_at) VALUES ($1, now() + make_interval(secs => $2))
             ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at",
            self.workers
        );
        let count = format!(
            "SELECT count(*) FROM {} WHERE expires_at > now()",
            self.workers
        );
        let forget = format!(
            "DELETE FROM {} WHERE expires_at < now() - interval '10 minutes'",
            self.workers
        );
        let control = self.control()?;
        let control = control.as_ref().ok_or_else(lost)?;
        let live: i64 = self
            .block_on(async {
                control
                    .execute(&upsert, &[&worker, &ttl.as_secs_f64()])
                    .await?;
                control.execute(&forget, &[]).await?;
                Ok::<_, tokio_postgres::Error>(control.query_one(&count, &[]).await?.get(0))
            })
            .map_err(unavailable)?;
        Ok(usize::try_from(live).unwrap_or(1).max(1))
    }

    /// Takes `worker` out of the live workers at once (a graceful stop).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn leave(&self, worker: &str) -> Result<(), Error> {
        let sql = format!("DELETE FROM {} WHERE id = $1", self.workers);
        let control = self.control()?;
        let control = control.as_ref().ok_or_else(lost)?;
        self.block_on(control.execute(&sql, &[&worker]))
            .map_err(unavailable)?;
        Ok(())
    }

    /// The partitions no worker holds now: never held, released, or expired.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn free_partitions(&self) -> Result<PartitionSet, Error> {
        let sql = format!(
            "SELECT id FROM {} WHERE expires_at < now() ORDER BY id",
            self.partitions
        );
        let control = self.control()?;
        let control = control.as_ref().ok_or_else(lost)?;
        let rows = self
            .block_on(control.query(&sql, &[]))
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .filter_map(|row| u16::try_from(row.get::<_, i16>(0)).ok())
            .filter(|partition| *partition < PARTITIONS)
            .collect())
    }

    /// Who holds each partition now (an unexpired lease), as `(partition, worker, epoch)`.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn owners(&self) -> Result<Vec<(u16, String, i64)>, Error> {
        let sql = format!(
            "SELECT id, owner, epoch FROM {} WHERE expires_at >= now() ORDER BY id",
            self.partitions
        );
        let rows = self
            .block_on(self.reader()?.query(&sql, &[]))
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|row| {
                (
                    u16::try_from(row.get::<_, i16>(0)).unwrap_or_default(),
                    row.get::<_, Option<String>>(1).unwrap_or_default(),
                    row.get(2),
                )
            })
            .collect())
    }

    /// The first of 2³² numbers no one has had: each block is above every block
    /// handed out before it, whoever took it.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn id_block(&self) -> Result<u64, Error> {
        let sql = format!("SELECT nextval('{}')", self.id_blocks.replace('\'', ""));
        let control = self.control()?;
        let control = control.as_ref().ok_or_else(lost)?;
        let block: i64 = self
            .block_on(control.query_one(&sql, &[]))
            .map_err(unavailable)?
            .get(0);
        // The first block starts at 0: the first worker of a schema numbers as a runtime of
        // its own store does (execution 1, 2, ...).
        Ok(u64::try_from(block - 1).unwrap_or(0) * ID_BLOCK)
    }

    /// Whether the fenced commit with `token` that fenced `partition` landed: asked after
    /// its connection failed around `COMMIT`. Meaningful while the asker still holds the
    /// partition (no one else commits there); a lease lost meanwhile answers `false`
    /// whatever happened, and the asker's next commit is fenced.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn committed(&self, partition: u16, token: i64) -> Result<bool, Error> {
        let sql = format!("SELECT last_commit = $2 FROM {} WHERE id = $1", self.fences);
        let id = partition_id(partition)?;
        let row = self
            .block_on(self.reader()?.query_opt(&sql, &[&id, &token]))
            .map_err(unavailable)?;
        Ok(row.is_some_and(|row| row.get(0)))
    }

    /// Sends messages outside any fenced write: a client's request to the partition that
    /// owns its instance.
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn send_messages(&self, send: &[Outgoing]) -> Result<(), Error> {
        let partitions = send
            .iter()
            .map(|message| partition_id(message.partition))
            .collect::<Result<Vec<_>, _>>()?;
        let targets: Vec<&str> = send.iter().map(|m| m.target.as_str()).collect();
        let bodies: Vec<&[u8]> = send.iter().map(|m| m.body.as_slice()).collect();
        let sql = format!(
            "WITH sent AS (INSERT INTO {} (partition, target, body)
                 SELECT * FROM unnest($1::smallint[], $2::text[], $3::bytea[]) RETURNING 1)
             SELECT pg_notify($4, '') FROM (SELECT 1) one WHERE EXISTS (SELECT 1 FROM sent)",
            self.messages
        );
        self.block_on(
            self.reader()?
                .execute(&sql, &[&partitions, &targets, &bodies, &self.channel]),
        )
        .map_err(unavailable)?;
        Ok(())
    }

    /// Takes the reply to `request`, if it has come (it is deleted: a reply is read once).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn take_reply(&self, request: i64) -> Result<Option<Vec<u8>>, Error> {
        let sql = format!(
            "DELETE FROM {} WHERE request = $1 RETURNING body",
            self.replies
        );
        let row = self
            .block_on(self.reader()?.query_opt(&sql, &[&request]))
            .map_err(unavailable)?;
        Ok(row.map(|row| row.get(0)))
    }

    /// Deletes replies no one took within `age` (their requester went away).
    ///
    /// # Errors
    /// [`Error::Unavailable`].
    pub fn forget_replies(&self, age: Duration) -> Result<(), Error> {
        let sql = format!(
            "DELETE FROM {} WHERE created_at < now() - make_interval(secs => $1)",
            self.replies
        );
        self.block_on(self.reader()?.execute(&sql, &[&age.as_secs_f64()]))
            .map_err(unavailable)?;
        Ok(())
    }

    /// Waits until a message or reply is sent to this schema (by any process), or
    /// `timeout` passes. Listens from the first call on; a lost listening connection is
    /// connected again at the next call, and meanwhile this only waits out `timeout`.
    pub fn wait_for_messages(&self, timeout: Duration) {
        self.listen();
        let notified = std::sync::Arc::clone(&self.notified);
        self.block_on(async move {
            let _ = tokio::time::timeout(timeout, notified.notified()).await;
        });
    }

    /// Starts listening on the schema's channel, unless a connection already does.
    fn listen(&self) {
        let mut listener = self.listener.lock().unwrap_or_else(PoisonError::into_inner);
        if listener.as_ref().is_some_and(|client| !client.is_closed()) {
            return;
        }
        *listener = None;
        let url = self.url.clone();
        let notified = std::sync::Arc::clone(&self.notified);
        let channel = self.channel.clone();
        let connected = self.block_on(async move {
            let (client, mut connection) = tokio_postgres::connect(&url, NoTls).await?;
            tokio::spawn(async move {
                while let Some(message) =
                    std::future::poll_fn(|cx| connection.poll_message(cx)).await
                {
                    match message {
                        Ok(AsyncMessage::Notification(_)) => notified.notify_one(),
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
                // Whoever waits hears it, and listens again on a new connection.
                notified.notify_one();
            });
            client
                .batch_execute(&format!("LISTEN \"{channel}\""))
                .await?;
            Ok::<_, tokio_postgres::Error>(client)
        });
        match connected {
            Ok(client) => *listener = Some(client),
            Err(error) => tracing::debug!(%error, "cannot listen for messages; polling instead"),
        }
    }
}
