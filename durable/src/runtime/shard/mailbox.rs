//! [`Mailbox`]: how messages reach a shard. It is bounded for everything but the writer:
//! clients, activities, the timer service and start-up wait for room
//! ([`Mailbox::post`]); the writer never waits ([`Mailbox::post_now`]) — what it sends
//! (deliveries, commit acknowledgements) stems from commits, which the writer's own
//! bounded queue already limits — so a shard that waits for the writer and the writer can
//! never wait for each other.

use super::ShardMsg;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use tokio::sync::Notify;

/// A message in a shard's mailbox, holding its place until the shard takes it.
pub(crate) struct Envelope {
    pub(crate) message: ShardMsg,
    /// `None` for what the writer (or a stop) sent: it takes no room.
    _place: Option<Place>,
}

/// The room of a mailbox: how many places are taken, out of how many. Taking a place is
/// one compare-and-swap and giving it back one subtraction; only a producer that finds the
/// mailbox full waits, woken when a place frees.
struct Room {
    taken: AtomicUsize,
    capacity: usize,
    freed: Notify,
    closed: AtomicBool,
}

impl Room {
    fn try_take(&self) -> bool {
        let mut taken = self.taken.load(Ordering::Acquire);
        while taken < self.capacity {
            match self.taken.compare_exchange_weak(
                taken,
                taken + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => taken = now,
            }
        }
        false
    }

    /// Takes a place, waiting for one while the mailbox is full; `false` once closed.
    async fn take(&self) -> bool {
        loop {
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.try_take() {
                return true;
            }
            let mut freed = pin!(self.freed.notified());
            freed.as_mut().enable();
            // A place freed (or the room closed) between the check and the registration
            // woke nobody: look again before waiting.
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.try_take() {
                return true;
            }
            freed.await;
        }
    }
}

/// A place taken in a mailbox, given back when the shard drops the envelope.
struct Place(Arc<Room>);

impl Drop for Place {
    fn drop(&mut self) {
        // Only the step from full frees a place someone may be waiting for.
        if self.0.taken.fetch_sub(1, Ordering::AcqRel) == self.0.capacity {
            self.0.freed.notify_waiters();
        }
    }
}

/// The sending side of a shard's mailbox. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Mailbox {
    sender: Sender<Envelope>,
    room: Arc<Room>,
}

impl Mailbox {
    /// A mailbox with room for `capacity` messages from producers that wait.
    pub(crate) fn new(capacity: usize) -> (Mailbox, Receiver<Envelope>) {
        let (sender, receiver) = mpsc::channel();
        let room = Arc::new(Room {
            taken: AtomicUsize::new(0),
            capacity,
            freed: Notify::new(),
            closed: AtomicBool::new(false),
        });
        (Mailbox { sender, room }, receiver)
    }

    /// Sends `message`, waiting for room first. Once the runtime has stopped, the message
    /// is dropped: what it carries is durable, or was never acknowledged.
    pub(crate) async fn post(&self, message: ShardMsg) {
        if !self.room.take().await {
            return;
        }
        let envelope = Envelope {
            message,
            _place: Some(Place(Arc::clone(&self.room))),
        };
        // A closed shard means the runtime stopped; durable inputs come back at restart.
        let _ = self.sender.send(envelope);
    }

    /// Sends `message` at once, without room: for the writer, and to stop the shard.
    pub(crate) fn post_now(&self, message: ShardMsg) {
        let envelope = Envelope {
            message,
            _place: None,
        };
        let _ = self.sender.send(envelope);
    }

    /// Releases every producer waiting for room, for good: the shard has stopped.
    pub(crate) fn close(&self) {
        self.room.closed.store(true, Ordering::Release);
        self.room.freed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    fn stop() -> ShardMsg {
        ShardMsg::Stop
    }

    /// Polls once: whether the future finished.
    fn ready(future: &mut std::pin::Pin<&mut impl Future<Output = ()>>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        future.as_mut().poll(&mut cx) == Poll::Ready(())
    }

    #[test]
    fn producers_wait_for_room_and_the_writer_never_does() {
        let (mailbox, inbox) = Mailbox::new(2);
        for _ in 0..2 {
            assert!(ready(&mut pin!(mailbox.post(stop()))));
        }
        let mut third = pin!(mailbox.post(stop()));
        assert!(!ready(&mut third), "a full mailbox makes the producer wait");
        for _ in 0..100 {
            mailbox.post_now(stop()); // the writer's messages take no room
        }
        drop(inbox.recv().unwrap()); // the shard takes one: room for one more
        assert!(ready(&mut third));
        assert_eq!(inbox.try_iter().count(), 1 + 100 + 1);
        for _ in 0..2 {
            assert!(ready(&mut pin!(mailbox.post(stop()))));
        }
        let mut waiting = pin!(mailbox.post(stop()));
        assert!(!ready(&mut waiting));
        mailbox.close();
        assert!(
            ready(&mut waiting),
            "a stopped shard releases waiting producers"
        );
        assert_eq!(
            inbox.try_iter().count(),
            2,
            "what came after the stop is dropped"
        );
    }

    /// Many producers on many threads against a small mailbox: every message arrives, the
    /// mailbox never holds more than its room, and nobody waits forever.
    #[test]
    fn producers_under_contention_lose_nothing_and_stay_within_room() {
        const PRODUCERS: usize = 8;
        const EACH: usize = 2_000;
        const ROOM: usize = 4;
        let (mailbox, inbox) = Mailbox::new(ROOM);
        let room = Arc::clone(&mailbox.room);
        let consumer = std::thread::spawn(move || {
            let mut received = 0;
            let mut most_taken = 0;
            while received < PRODUCERS * EACH {
                let envelope = inbox.recv().unwrap();
                most_taken = most_taken.max(room.taken.load(Ordering::Acquire));
                drop(envelope);
                received += 1;
            }
            (received, most_taken)
        });
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime.block_on(async {
            let producers: Vec<_> = (0..PRODUCERS)
                .map(|_| {
                    let mailbox = mailbox.clone();
                    tokio::spawn(async move {
                        for _ in 0..EACH {
                            mailbox.post(stop()).await;
                        }
                    })
                })
                .collect();
            for producer in producers {
                producer.await.unwrap();
            }
        });
        let (received, most_taken) = consumer.join().unwrap();
        assert_eq!(received, PRODUCERS * EACH);
        assert!(most_taken <= ROOM, "{most_taken} places taken of {ROOM}");
        assert_eq!(mailbox.room.taken.load(Ordering::Acquire), 0);
    }
}
