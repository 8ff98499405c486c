//! [`Room`]: the bound of a queue whose channel itself is unbounded. A producer takes a
//! [`Place`] before it sends and the consumer gives it back by dropping it when it takes
//! the message. Taking a place is one compare-and-swap and giving it back one subtraction;
//! only a producer that finds the queue full waits — asynchronously ([`Room::take`], for
//! tokio tasks) or blocking its thread ([`Room::take_blocking`], for the shard threads) —
//! and is woken when a place frees or the room closes.

use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;

/// How long a blocked producer sleeps before it looks again, should a wake-up be lost.
const RECHECK: Duration = Duration::from_millis(50);

/// The places of a queue.
#[derive(Debug)]
pub(crate) struct Room {
    taken: AtomicUsize,
    capacity: usize,
    closed: AtomicBool,
    /// Wakes tasks waiting for a place.
    freed: Notify,
    /// Wakes threads waiting for a place.
    freed_for_threads: Condvar,
    lock: Mutex<()>,
}

/// A place taken in a room, given back when dropped.
#[derive(Debug)]
pub(crate) struct Place(Arc<Room>);

impl Drop for Place {
    fn drop(&mut self) {
        // Only the step from full frees a place someone may be waiting for.
        if self.0.taken.fetch_sub(1, Ordering::AcqRel) == self.0.capacity {
            self.0.wake_all();
        }
    }
}

impl Room {
    /// A room of `capacity` places (at least one).
    pub(crate) fn new(capacity: usize) -> Arc<Room> {
        Arc::new(Room {
            taken: AtomicUsize::new(0),
            capacity: capacity.max(1),
            closed: AtomicBool::new(false),
            freed: Notify::new(),
            freed_for_threads: Condvar::new(),
            lock: Mutex::new(()),
        })
    }

    fn try_take(self: &Arc<Self>) -> Option<Place> {
        let mut taken = self.taken.load(Ordering::Acquire);
        while taken < self.capacity {
            match self.taken.compare_exchange_weak(
                taken,
                taken + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Place(Arc::clone(self))),
                Err(now) => taken = now,
            }
        }
        None
    }

    fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Takes a place, waiting for one while the room is full; `None` once it is closed.
    pub(crate) async fn take(self: &Arc<Self>) -> Option<Place> {
        loop {
            if self.is_closed() {
                return None;
            }
            if let Some(place) = self.try_take() {
                return Some(place);
            }
            let mut freed = pin!(self.freed.notified());
            freed.as_mut().enable();
            // A place freed (or the room closed) between the look and the registration
            // woke nobody: look again before waiting.
            if self.is_closed() {
                return None;
            }
            if let Some(place) = self.try_take() {
                return Some(place);
            }
            freed.await;
        }
    }

    /// Takes a place, blocking the thread while the room is full; `None` once it is closed.
    pub(crate) fn take_blocking(self: &Arc<Self>) -> Option<Place> {
        loop {
            if self.is_closed() {
                return None;
            }
            if let Some(place) = self.try_take() {
                return Some(place);
            }
            let guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            if self.is_closed() {
                return None;
            }
            if let Some(place) = self.try_take() {
                return Some(place);
            }
            let _ = self
                .freed_for_threads
                .wait_timeout(guard, RECHECK)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Releases every waiting producer, for good: nothing takes from the queue any more.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.wake_all();
    }

    fn wake_all(&self) {
        self.freed.notify_waiters();
        // Under the lock, so a thread between its look and its wait does not miss it.
        drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
        self.freed_for_threads.notify_all();
    }

    /// How many places are taken.
    #[cfg(test)]
    pub(crate) fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn a_thread_waits_for_a_place_and_is_released_by_a_give_back_or_the_close() {
        let room = Room::new(1);
        let first = room.take_blocking().unwrap();
        let (took, taken) = mpsc::channel();
        let waiter = {
            let room = Arc::clone(&room);
            std::thread::spawn(move || {
                let place = room.take_blocking();
                took.send(()).unwrap();
                place.is_some()
            })
        };
        assert!(
            taken.recv_timeout(Duration::from_millis(200)).is_err(),
            "a full room makes the thread wait"
        );
        drop(first);
        taken.recv().unwrap();
        assert!(
            waiter.join().unwrap(),
            "the place given back went to the waiter"
        );
        assert_eq!(room.taken(), 0, "and came back when the waiter dropped it");

        let _held = room.take_blocking().unwrap();
        let waiter = {
            let room = Arc::clone(&room);
            std::thread::spawn(move || room.take_blocking().is_none())
        };
        room.close();
        assert!(
            waiter.join().unwrap(),
            "closing releases a waiting thread empty-handed"
        );
    }
}
