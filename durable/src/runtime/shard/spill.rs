//! Reading spilled messages back: an entity whose queue overflowed kept only the inbox
//! sequence numbers of the messages beyond it. Once the entity is free, the oldest page of
//! them is read from the inbox and put at the front of its queue: they arrived before
//! anything newer.
//!
//! Sequence numbers are handed out before commits, which can land in another order, so a
//! spilled message may not be readable yet: the read-back stops there while the entity has
//! commits in flight (the shard queues it again when they land). With nothing in flight, a
//! spilled message missing from the store is gone (never expected): it is logged and
//! forgotten rather than waited for forever.

use super::input::{Content, Input, Source, StartTerms};
use super::slot::HotEntity;
use super::writes::Env;
use durable_types::{InboxKey, InboxMessage, InstanceId};
use std::collections::VecDeque;

/// How a read-back went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReadBack {
    /// What could be read is at the front of the queue (perhaps nothing was spilled).
    Done,
    /// The oldest spilled message is not stored yet: its commit is in flight.
    NotYetStored,
    /// The store could not be read; the spilled messages stay where they are.
    Failed,
}

/// Puts the oldest page (up to `max_entity_queue`) of the entity's spilled messages at the
/// front of `queue`. `inflight`: the entity has commits in flight.
pub(crate) fn read_back(
    hot: &mut HotEntity,
    inflight: bool,
    instance: &InstanceId,
    queue: &mut VecDeque<Input>,
    env: &Env,
) -> ReadBack {
    let Some(first) = hot.spilled.front().copied() else {
        return ReadBack::Done;
    };
    let bound = env.config.max_entity_queue;
    let limit = bound * 2;
    let mut after = first.checked_sub(1);
    let mut loaded = Vec::new();
    loop {
        let page = match env.store.inbox_page(instance, after, limit) {
            Ok(page) => page,
            Err(error) => {
                tracing::warn!(%instance, %error, "cannot read spilled messages; retrying");
                return ReadBack::Failed;
            }
        };
        let full = page.len() == limit;
        after = page.last().map(|(key, _)| key.seq);
        if take_page(hot, page, bound, inflight, &mut loaded) == Page::Gap {
            // The oldest is not stored yet: what was read runs, the rest waits for it.
            return push_front(queue, loaded);
        }
        if !loaded.is_empty() || hot.spilled.is_empty() {
            break;
        }
        if !full {
            if inflight {
                return ReadBack::NotYetStored;
            }
            tracing::error!(%instance, count = hot.spilled.len(), "spilled messages are missing from the store");
            hot.spilled.clear();
            return ReadBack::Done;
        }
        // A page of messages that are not spilled ones: read on.
    }
    if loaded.is_empty() {
        return ReadBack::Done; // the last spilled ones were gone
    }
    push_front(queue, loaded)
}

/// How a page went.
#[derive(PartialEq, Eq)]
enum Page {
    /// Read through (or up to the bound).
    Read,
    /// Stopped at a spilled message that is not stored yet.
    Gap,
}

/// Takes the entity's spilled messages out of one page of its inbox, oldest first, up to
/// `bound` loaded in all.
fn take_page(
    hot: &mut HotEntity,
    page: Vec<(InboxKey, InboxMessage)>,
    bound: usize,
    inflight: bool,
    loaded: &mut Vec<Input>,
) -> Page {
    for (key, message) in page {
        if loaded.len() >= bound {
            break;
        }
        // Not one of ours: a message kept in memory, or consumed by a commit in flight.
        if hot.spilled.binary_search(&key.seq).is_err() {
            continue;
        }
        if hot.spilled.front().is_some_and(|oldest| *oldest < key.seq) {
            if inflight {
                // The oldest is not stored yet (sequence numbers are handed out before
                // commits, which may land in another order): wait for it.
                return Page::Gap;
            }
            // Nothing of this entity is in flight, so it is gone; never expected.
            while hot.spilled.front().is_some_and(|oldest| *oldest < key.seq) {
                if let Some(missing) = hot.spilled.pop_front() {
                    tracing::error!(instance = %key.instance, seq = missing, "a spilled message is missing from the store");
                }
            }
        }
        hot.spilled.pop_front();
        loaded.push(Input {
            content: Content::of(message.body),
            source: Source::Inbox(key),
            terms: StartTerms::default(),
        });
    }
    Page::Read
}

/// Puts `loaded` at the front of `queue`, in order: done if there were any, else the
/// oldest is not readable yet.
fn push_front(queue: &mut VecDeque<Input>, loaded: Vec<Input>) -> ReadBack {
    if loaded.is_empty() {
        return ReadBack::NotYetStored;
    }
    for input in loaded.into_iter().rev() {
        queue.push_front(input);
    }
    ReadBack::Done
}
