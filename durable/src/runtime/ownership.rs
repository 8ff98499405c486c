//! [`Ownership`]: which instances this runtime may run. A runtime over a store of its
//! own runs all of them; a worker sharing a PostgreSQL schema runs the instances of the
//! partitions it holds leases on, and the set changes as workers come and go. Every part
//! that takes work up (shards, the timer service, start-up) asks here first, so that a
//! partition given up is not worked on: its work is stored, for its next owner.
//!
//! The *generation* counts the times the runtime dropped everything it held in memory
//! after a commit was fenced (see `writer.rs`): a commit request made before the last
//! reset is discarded, since it was computed from state that never became durable.

use durable_store::{PARTITIONS, PartitionSet, partition_of};
use durable_types::InstanceId;
use std::sync::atomic::{AtomicU64, Ordering};

/// The partitions this runtime runs, and its generation.
#[derive(Debug)]
pub(crate) struct Ownership {
    owned: AtomicU64,
    generation: AtomicU64,
    /// How many times each partition was acquired: what was taken up of a partition in
    /// an earlier tenure is not this one's.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    tenures: [AtomicU64; PARTITIONS as usize],
}

impl Ownership {
    /// Every partition, for good: a store of one runtime.
    pub(crate) fn all() -> Ownership {
        Ownership {
            owned: AtomicU64::new(PartitionSet::ALL.0),
            generation: AtomicU64::new(0),
            tenures: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// No partition yet: a worker that has still to acquire its share.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn none() -> Ownership {
        Ownership {
            owned: AtomicU64::new(0),
            generation: AtomicU64::new(0),
            tenures: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Whether this runtime runs `instance` now.
    pub(crate) fn owns(&self, instance: &InstanceId) -> bool {
        let owned = self.owned.load(Ordering::Acquire);
        // One process's store: no hash on the hot path.
        owned == PartitionSet::ALL.0
            || PartitionSet(owned).contains(partition_of(instance.as_str()))
    }

    /// The partitions run now.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn owned(&self) -> PartitionSet {
        PartitionSet(self.owned.load(Ordering::Acquire))
    }

    /// Runs `partitions` from now on.
    #[cfg(feature = "postgres")]
    pub(crate) fn set(&self, partitions: PartitionSet) {
        self.owned.store(partitions.0, Ordering::Release);
    }

    /// Runs `partitions` too, from now on, each in a new tenure.
    #[cfg(feature = "postgres")]
    pub(crate) fn add(&self, partitions: PartitionSet) {
        for partition in partitions.iter() {
            self.tenures[usize::from(partition)].fetch_add(1, Ordering::AcqRel);
        }
        self.owned.fetch_or(partitions.0, Ordering::AcqRel);
    }

    /// The current tenure of `partition` (see [`Ownership::add`]).
    #[cfg(feature = "postgres")]
    pub(crate) fn tenure(&self, partition: u16) -> u64 {
        self.tenures
            .get(usize::from(partition))
            .map_or(0, |tenure| tenure.load(Ordering::Acquire))
    }

    /// The current generation.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Starts a new generation and returns it.
    #[cfg(feature = "postgres")]
    pub(crate) fn next_generation(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }
}
