//! The timer service: one tokio task that fires durable timers when they come due.
//!
//! Timers live in the store's `timers` keyspace, ordered by due time. The service keeps
//! in memory only the earliest of them, at most `capacity`: every pending timer with a key
//! up to its *horizon* is in memory, later ones stay on disk until memory runs empty and
//! the service reads the next page. So a million timers due next month cost disk space,
//! not memory or tasks. A timer that came due while the process was down is the first one
//! read at start-up and fires at once.
//!
//! Firing sends the instance's shard a `TimerFired` message in memory; the firing becomes
//! durable with the turn that consumes it, which also deletes the timer. If a timer fires
//! twice (a page read races with a firing not yet committed), the engine discards the
//! second firing: a task completes once.

use super::Shared;
use super::metrics::Metrics;
use super::scan::scan_tolerant;
use super::shard::ShardMsg;
use durable_store::{RecordKey, TimerKey, TimerRecord};
use std::collections::BTreeSet;
use std::sync::Arc;
use tokio::sync::mpsc;

/// What the rest of the runtime tells the timer service.
pub(crate) enum TimerCommand {
    /// A timer was committed.
    Arm(TimerKey),
    /// A timer was deleted (cancelled, or its execution ended).
    Disarm(TimerKey),
    /// Forget what is in memory and read the store again (the partitions owned changed).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    Reset,
}

/// The handle other parts of the runtime use to arm and disarm timers.
pub(crate) struct TimerHandle {
    sender: mpsc::UnboundedSender<TimerCommand>,
}

impl TimerHandle {
    pub(crate) fn new() -> (TimerHandle, mpsc::UnboundedReceiver<TimerCommand>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (TimerHandle { sender }, receiver)
    }

    /// Arms a committed timer.
    pub(crate) fn arm(&self, timer: TimerRecord) {
        // A closed channel means the runtime stopped; the timer is on disk.
        let _ = self.sender.send(TimerCommand::Arm(timer.key()));
    }

    /// Reads every timer of the partitions owned again.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn reset(&self) {
        let _ = self.sender.send(TimerCommand::Reset);
    }

    /// Forgets a deleted timer, so it does not wake its instance for nothing.
    pub(crate) fn disarm(&self, key: TimerKey) {
        let _ = self.sender.send(TimerCommand::Disarm(key));
    }
}

/// Which pending timers are in memory.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Horizon {
    /// Nothing has been read yet.
    Unread,
    /// Every pending timer with a key up to and including this one is in memory.
    Through(TimerKey),
    /// Every pending timer is in memory.
    All,
}

struct TimerService {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<TimerCommand>,
    in_memory: BTreeSet<TimerKey>,
    horizon: Horizon,
    capacity: usize,
}

/// Runs the timer service until the runtime stops.
pub(crate) async fn run(shared: Arc<Shared>, commands: mpsc::UnboundedReceiver<TimerCommand>) {
    let capacity = shared.config.timers_in_memory.max(2);
    let mut service = TimerService {
        shared,
        commands,
        in_memory: BTreeSet::new(),
        horizon: Horizon::Unread,
        capacity,
    };
    service.run().await;
}

impl TimerService {
    async fn run(&mut self) {
        loop {
            if self.in_memory.is_empty()
                && self.horizon != Horizon::All
                && let Err(error) = self.read_page().await
            {
                tracing::error!(%error, "cannot read timers from the store; retrying in 1 s");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            let next_due = self.in_memory.first().map(|key| key.fire_at);
            let clock = self.shared.clock.clone();
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(TimerCommand::Arm(key)) => self.add(key),
                    Some(TimerCommand::Disarm(key)) => {
                        self.in_memory.remove(&key);
                    }
                    Some(TimerCommand::Reset) => {
                        self.in_memory.clear();
                        self.horizon = Horizon::Unread;
                    }
                    None => return,
                },
                () = async {
                    match next_due {
                        Some(due) => clock.sleep_until(due).await,
                        None => std::future::pending().await,
                    }
                } => self.fire_due().await,
            }
        }
    }

    /// Keeps `key` in memory if it is within the horizon, evicting the latest timer when
    /// memory is full.
    fn add(&mut self, key: TimerKey) {
        if !self.shared.ownership.owns(&key.instance) {
            return;
        }
        let within = match &self.horizon {
            Horizon::Unread => false, // the first page read will find it on disk
            Horizon::Through(last) => key <= *last,
            Horizon::All => true,
        };
        if !within {
            return;
        }
        self.in_memory.insert(key);
        if self.in_memory.len() > self.capacity {
            self.in_memory.pop_last();
            if let Some(last) = self.in_memory.last() {
                self.horizon = Horizon::Through(last.clone());
            }
        }
    }

    async fn fire_due(&mut self) {
        let now = self.shared.clock.timestamp();
        while let Some(first) = self.in_memory.first() {
            if first.fire_at > now {
                break;
            }
            let Some(key) = self.in_memory.pop_first() else {
                break;
            };
            if !self.shared.ownership.owns(&key.instance) {
                continue; // another worker runs it now, and fires it
            }
            Metrics::add(&self.shared.metrics.timers_fired, 1);
            let mailbox = self.shared.mailbox(&key.instance);
            mailbox.post(ShardMsg::TimerFired { key }).await;
        }
    }

    async fn read_page(&mut self) -> Result<(), durable_store::Error> {
        let after = match &self.horizon {
            Horizon::Through(last) => Some(last.clone()),
            Horizon::Unread | Horizon::All => None,
        };
        let limit = self.capacity / 2;
        let store = Arc::clone(&self.shared.store);
        let page = tokio::task::spawn_blocking(move || {
            scan_tolerant(
                after,
                limit,
                |after, limit| store.scan_timers(after, limit),
                TimerRecord::key,
                |error| match error {
                    durable_store::Error::Corrupt {
                        key: Some(RecordKey::Timer(key)),
                        ..
                    } => Some(key.clone()),
                    _ => None,
                },
            )
        })
        .await
        .unwrap_or_else(|join| Err(durable_store::Error::Backend(join.to_string())))?;
        self.horizon = match &page.last {
            Some(last) if page.is_full(limit) => Horizon::Through(last.clone()),
            _ => Horizon::All,
        };
        let ownership = &self.shared.ownership;
        self.in_memory.extend(
            page.records
                .iter()
                .map(TimerRecord::key)
                .filter(|key| ownership.owns(&key.instance)),
        );
        // A timer's key is all there is to it: a damaged value still fires on time.
        for (key, error) in page.damaged {
            tracing::warn!(
                instance = %key.instance, %error,
                "a stored timer's value is damaged; its key holds all it needs, so it fires as scheduled"
            );
            if ownership.owns(&key.instance) {
                self.in_memory.insert(key);
            }
        }
        Ok(())
    }
}
