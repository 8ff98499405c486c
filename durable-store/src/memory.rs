//! The in-memory engine: ordered maps behind a mutex, for fast tests. Its records go
//! through the same codec as fjall's, so tests exercise the real encoding.

use crate::codec::Space;
use crate::error::Error;
use crate::kv::{KvEngine, KvOp, KvStore, Scan, Visitor};
use crate::store::Durability;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard, PoisonError};

type Map = BTreeMap<Vec<u8>, Vec<u8>>;

/// The in-memory [`KvEngine`]. Nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryEngine {
    spaces: Mutex<[Map; Space::ALL.len()]>,
}

/// A [`crate::Store`] that lives in memory: for tests and examples that need no disk.
///
/// ```
/// use durable_store::{MemoryStore, Store};
/// let store = MemoryStore::new();
/// assert_eq!(store.name(), "memory");
/// ```
pub type MemoryStore = KvStore<MemoryEngine>;

impl KvStore<MemoryEngine> {
    /// An empty in-memory store.
    pub fn new() -> MemoryStore {
        // An empty engine always accepts the format version.
        match KvStore::with_engine(MemoryEngine::default(), std::path::Path::new(":memory:")) {
            Ok(store) => store,
            Err(error) => unreachable!("an empty memory engine rejected its format: {error}"),
        }
    }
}

impl Default for KvStore<MemoryEngine> {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryEngine {
    fn lock(&self) -> MutexGuard<'_, [Map; Space::ALL.len()]> {
        // A panic while holding the lock cannot leave a map half-updated: every write
        // applies fully validated operations, so the data is still consistent.
        self.spaces.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KvEngine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn durability(&self) -> Durability {
        Durability::Buffered
    }

    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        Ok(self.lock()[space.index()].get(key).cloned())
    }

    fn scan(
        &self,
        space: Space,
        lower: Bound<&[u8]>,
        upper: Bound<&[u8]>,
        visit: &mut Visitor<'_>,
    ) -> Result<(), Error> {
        if is_empty_range(lower, upper) {
            // `BTreeMap::range` panics on a range whose start is after its end.
            return Ok(());
        }
        let spaces = self.lock();
        for (key, value) in spaces[space.index()].range::<[u8], _>((lower, upper)) {
            if visit(key, value)? == Scan::Stop {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, ops: Vec<KvOp>) -> Result<(), Error> {
        let mut spaces = self.lock();
        for op in ops {
            match op {
                KvOp::Put(space, key, value) => {
                    spaces[space.index()].insert(key, value);
                }
                KvOp::Delete(space, key) => {
                    spaces[space.index()].remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// Whether no key can lie between `lower` and `upper`.
fn is_empty_range(lower: Bound<&[u8]>, upper: Bound<&[u8]>) -> bool {
    match (lower, upper) {
        (Bound::Included(start), Bound::Included(end)) => start > end,
        (Bound::Included(start) | Bound::Excluded(start), Bound::Excluded(end))
        | (Bound::Excluded(start), Bound::Included(end)) => start >= end,
        _ => false,
    }
}
