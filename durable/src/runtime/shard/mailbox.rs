//! [`Mailbox`]: how messages reach a shard. It is bounded (a [`Room`]) for everything but
//! the writer:
//! clients, activities, the timer service and start-up wait for room
//! ([`Mailbox::post`]); the writer never waits ([`Mailbox::post_now`]) — what it sends
//! (deliveries, commit acknowledgements) stems from commits, which the writer's own
//! bounded queue already limits — so a shard that waits for the writer and the writer can
//! never wait for each other.

use super::ShardMsg;
use crate::runtime::room::{Place, Room};
use std::sync::Arc;
use std::sync::mpsc::{self, Receiver, Sender};

/// A message in a shard's mailbox, holding its place until the shard takes it.
pub(crate) struct Envelope {
    pub(crate) message: ShardMsg,
    /// `None` for what the writer (or a stop) sent: it takes no room.
    _place: Option<Place>,
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
        let room = Room::new(capacity);
        (Mailbox { sender, room }, receiver)
    }

    /// Sends `message`, waiting for room first. Once the runtime has stopped, the message
    /// is dropped: what it carries is durable, or was never acknowledged.
    pub(crate) async fn post(&self, message: ShardMsg) {
        let Some(place) = self.room.take().await else {
            return;
        };
        let envelope = Envelope {
            message,
            _place: Some(place),
        };
        // A closed shard means the runtime stopped; durable inputs come back at restart.
        let _ = self.sender.send(envelope);
    }

    /// [`Mailbox::post`], from a thread outside tokio (a worker's lease and message
    /// threads).
    #[cfg(feature = "postgres")]
    pub(crate) fn post_blocking(&self, message: ShardMsg) {
        let Some(place) = self.room.take_blocking() else {
            return;
        };
        let envelope = Envelope {
            message,
            _place: Some(place),
        };
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
        self.room.close();
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
                most_taken = most_taken.max(room.taken());
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
        assert_eq!(mailbox.room.taken(), 0);
    }
}
