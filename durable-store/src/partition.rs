//! Partitions: how the instances of a store shared by several worker processes are split
//! between them. Every instance (an orchestration, or an entity's `@name@key`) belongs to
//! one of [`PARTITIONS`] partitions, by a hash of its id that is part of the stored format;
//! a worker processes the instances of the partitions it holds a lease on. A store that one
//! process owns alone has the same partitions, all of them that process's.

/// How many partitions a store has.
pub const PARTITIONS: u16 = 64;

/// The partition of an instance: FNV-1a (64 bits) of its id's bytes, modulo
/// [`PARTITIONS`]. Part of the stored format: never change it for existing data.
pub fn partition_of(instance: &str) -> u16 {
    partition_of_bytes(instance.as_bytes())
}

/// [`partition_of`] of an id's bytes (as a key holds them).
pub(crate) fn partition_of_bytes(instance: &[u8]) -> u16 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in instance {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u16::try_from(hash % u64::from(PARTITIONS)).unwrap_or_default()
}

/// A set of partitions, one bit each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PartitionSet(pub u64);

impl PartitionSet {
    /// Every partition.
    pub const ALL: PartitionSet = PartitionSet(u64::MAX);

    /// Whether `partition` is in the set.
    pub fn contains(self, partition: u16) -> bool {
        partition < PARTITIONS && self.0 & (1 << partition) != 0
    }

    /// The set with `partition` added.
    #[must_use]
    pub fn with(self, partition: u16) -> PartitionSet {
        PartitionSet(self.0 | (1 << (partition % PARTITIONS)))
    }

    /// The partitions in this set or `other`.
    #[must_use]
    pub fn union(self, other: PartitionSet) -> PartitionSet {
        PartitionSet(self.0 | other.0)
    }

    /// The partitions in both this set and `other`.
    #[must_use]
    pub fn intersection(self, other: PartitionSet) -> PartitionSet {
        PartitionSet(self.0 & other.0)
    }

    /// The partitions of this set not in `other`.
    #[must_use]
    pub fn without(self, other: PartitionSet) -> PartitionSet {
        PartitionSet(self.0 & !other.0)
    }

    /// How many partitions the set holds.
    pub fn len(self) -> usize {
        self.0.count_ones() as usize
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The partitions, in increasing order.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = u16> {
        (0..PARTITIONS).filter(move |partition| self.contains(*partition))
    }
}

impl FromIterator<u16> for PartitionSet {
    fn from_iter<I: IntoIterator<Item = u16>>(iter: I) -> PartitionSet {
        iter.into_iter()
            .fold(PartitionSet::default(), PartitionSet::with)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_holds_what_was_added() {
        let set: PartitionSet = [0, 5, 63].into_iter().collect();
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 5, 63]);
        assert_eq!(set.len(), 3);
        assert!(!set.contains(64));
        assert_eq!(set.without([5].into_iter().collect()).len(), 2);
        assert_eq!(PartitionSet::ALL.len(), usize::from(PARTITIONS));
    }
}
